"""The baseline objectives on hand-computed numbers: NLL, KL, NPO (and its sign), GA, GA_Diff, KL_Min."""

from __future__ import annotations

import math

import pytest
import torch

from steerkit.unlearn import losses as L


def _logits_for(probs_per_pos):
    """Logits whose softmax is the given distribution at each position (batch of one)."""
    return torch.tensor(probs_per_pos, dtype=torch.float32).log().unsqueeze(0)


def test_answer_nll_hand_computed():
    # positions 0..2; labels on tokens 1 and 2 (the "answer"), predicted by logits at 0 and 1
    logits = _logits_for([[0.5, 0.25, 0.25], [0.1, 0.2, 0.7], [1 / 3, 1 / 3, 1 / 3]])
    labels = torch.tensor([[-100, 1, 2]])
    want = [-math.log(0.25), -math.log(0.7)]
    assert L.answer_nll(logits, labels).item() == pytest.approx(sum(want) / 2, rel=1e-6)
    assert L.answer_nll(logits, labels, "sum").item() == pytest.approx(sum(want), rel=1e-6)
    assert L.answer_token_counts(labels).tolist() == [2]


def test_answer_nll_matches_the_model_loss(session):
    enc = session.encode(["What is in this image?"], [None], ["the cat sees a blue house."], padding_side="right")
    with torch.no_grad():
        out = session.model(**enc.inputs, labels=enc.labels)
    assert L.answer_nll(out.logits, enc.labels).item() == pytest.approx(out.loss.item(), rel=1e-5)


def test_answer_nll_rejects_rows_without_answer():
    with pytest.raises(ValueError, match="no answer tokens"):
        L.answer_nll(torch.zeros(2, 3, 5), torch.tensor([[-100, 1, 2], [-100, -100, -100]]))


def test_npo_hand_computed():
    nll_theta, nll_ref, beta = torch.tensor([2.0, 1.0]), torch.tensor([1.0, 1.5]), 0.5
    # -(2/beta) * log sigmoid(beta * (theta - ref)) per row, then the mean
    rows = [-(2 / beta) * math.log(1 / (1 + math.exp(-beta * d))) for d in (1.0, -0.5)]
    assert L.npo_loss(nll_theta, nll_ref, beta).item() == pytest.approx(sum(rows) / 2, rel=1e-6)
    assert L.npo_loss(nll_theta, nll_ref, beta).item() == pytest.approx(2.600032, abs=1e-5)
    # at the reference the loss is (2/beta) log 2 whatever the NLLs
    assert L.npo_loss(nll_ref, nll_ref, 0.4).item() == pytest.approx(5 * math.log(2), rel=1e-6)


def test_npo_sign_rewards_forgetting():
    """Minimising NPO must push the forget NLL up (the paper's sign); GA-like slope -1 at the reference."""
    theta = torch.tensor([1.0, 3.0], requires_grad=True)
    L.npo_loss(theta, torch.tensor([1.0, 1.0]), 0.4).backward()
    assert (theta.grad < 0).all()  # a gradient step raises the NLL
    assert theta.grad[0].item() == pytest.approx(-1.0 / 2, rel=1e-6)  # -2 sigmoid(0) / batch of 2
    assert abs(theta.grad[1].item()) < abs(theta.grad[0].item())  # saturates once far from the reference
    higher = L.npo_loss(torch.tensor([5.0]), torch.tensor([1.0]), 0.4)
    lower = L.npo_loss(torch.tensor([1.5]), torch.tensor([1.0]), 0.4)
    assert higher < lower
    with pytest.raises(ValueError):
        L.npo_loss(theta, theta, 0.0)


def test_kl_zero_when_equal_and_hand_computed():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 7, generator=gen)
    labels = torch.tensor([[-100, 3, 1, -100], [-100, -100, 2, 5]])
    assert torch.allclose(L.answer_kl(logits, logits.clone(), labels), torch.zeros(2), atol=1e-7)
    p = [0.5, 0.5]
    q = [0.9, 0.1]  # reference
    kl = L.answer_kl(_logits_for([p, p]), _logits_for([q, q]), torch.tensor([[-100, 0]]))
    want = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    assert kl.item() == pytest.approx(want, rel=1e-5)


def test_composite_objectives():
    f, r = torch.tensor([2.0, 4.0]), torch.tensor([1.0, 0.5])
    assert L.ga_loss(f).item() == pytest.approx(-3.0)
    assert L.ga_diff_loss(f, r, 2.0).item() == pytest.approx(-3.0 + 2 * 0.75)
    assert L.kl_min_loss(f, torch.tensor([0.1, 0.3]), 0.5).item() == pytest.approx(-3.0 + 0.5 * 0.2)
