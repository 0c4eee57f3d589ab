"""Vanilla fine-tuning, the small models and the embedded cache, on a tiny world (fast)."""

from __future__ import annotations


import pytest
import torch

from steerkit.models.small import build_small, train_tokenizer, world_texts
from steerkit.session import ModelSession
from steerkit.train.vanilla import TrainConfig, epoch_batches, lr_lambda, train_vanilla

ARCHS = ("llava", "qwen2_5_vl")


def _session(arch, pairs, seed=0):
    tok = train_tokenizer(world_texts(pairs), 400, arch=arch)
    model, proc = build_small(arch, tok, seed=seed, size="tiny")
    return ModelSession.from_objects(model, proc, tok)


def _loss(session, pairs):
    enc = session.encode([p.prompt for p in pairs], [p.image for p in pairs], [p.answer for p in pairs],
                         padding_side="right")
    with torch.no_grad():
        return float(session.model(**enc.inputs, labels=enc.labels).loss)


@pytest.mark.parametrize("arch", ARCHS)
def test_few_steps_lower_the_loss(arch, tiny_pairs):
    pairs = tiny_pairs[::11][:32]  # images and text-only pairs mixed
    assert any(p.image is None for p in pairs) and any(p.image is not None for p in pairs)
    session = _session(arch, tiny_pairs)
    before = _loss(session, pairs)
    report = train_vanilla(session, pairs, TrainConfig(epochs=12, batch_size=16, warmup_steps=4, lr=1e-2), progress=False)
    after = _loss(session, pairs)
    assert report.steps == 24 and report.pairs == 32
    assert after < 0.6 * before, (before, after)
    assert not session.model.training


def test_same_seed_same_weights(tiny_pairs):
    cfg = TrainConfig(epochs=1, batch_size=8, max_steps=3, seed=3, image_jitter=0.08)
    states = []
    for _ in range(2):
        session = _session("llava", tiny_pairs, seed=3)
        train_vanilla(session, tiny_pairs, cfg, progress=False)
        states.append(session.model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    other = _session("llava", tiny_pairs, seed=3)
    train_vanilla(other, tiny_pairs, TrainConfig(epochs=1, batch_size=8, max_steps=3, seed=4, image_jitter=0.08), progress=False)
    assert any(not torch.equal(states[0][k], v) for k, v in other.model.state_dict().items())


@pytest.mark.parametrize("arch", ARCHS)
def test_mixed_batch_rows_match_rows_alone(arch, tiny_pairs):
    """Training batches mix image and text-only rows: each row must encode as it would alone."""
    session = _session(arch, tiny_pairs)
    pairs = [next(p for p in tiny_pairs if p.image is None), next(p for p in tiny_pairs if p.image is not None)]
    enc = session.encode([p.prompt for p in pairs], [p.image for p in pairs], [p.answer for p in pairs],
                         padding_side="right")
    with torch.no_grad():
        both = session.model(**enc.inputs).logits
        for row, p in enumerate(pairs):
            one = session.encode([p.prompt], [p.image], [p.answer], padding_side="right")
            alone = session.model(**one.inputs).logits[0]
            n = alone.shape[0]
            assert torch.allclose(both[row, :n], alone, atol=1e-4, rtol=1e-4)
            assert torch.equal(enc.labels[row, :n], one.labels[0])


def test_schedule_and_batches():
    f = lr_lambda(TrainConfig(warmup_steps=10, min_lr_ratio=0.1), 100)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(99) == pytest.approx(0.1) and 0.1 < f(50) < 1.0
    lengths = [(i * 37) % 100 for i in range(100)]
    grouped = epoch_batches(100, 8, torch.Generator().manual_seed(0), lengths, window=4)
    plain = epoch_batches(100, 8, torch.Generator().manual_seed(0))
    for batches in (grouped, plain):
        assert sorted(i for b in batches for i in b) == list(range(100))  # every pair once
    spread = lambda bs: sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in bs)  # noqa: E731
    assert spread(grouped) < 0.5 * spread(plain)  # less padding
    assert grouped == epoch_batches(100, 8, torch.Generator().manual_seed(0), lengths, window=4)


def test_empty_pairs_is_a_clean_error():
    from steerkit.errors import SteerkitError

    session = object()
    with pytest.raises(SteerkitError):
        train_vanilla(session, [], TrainConfig(), progress=False)


@pytest.mark.parametrize("arch", ARCHS)
def test_answer_loss_equals_the_models_own_loss(arch, tiny_pairs):
    from steerkit.train.vanilla import answer_loss

    session = _session(arch, tiny_pairs)
    pairs = tiny_pairs[::13][:6]
    enc = session.encode([p.prompt for p in pairs], [p.image for p in pairs], [p.answer for p in pairs],
                         padding_side="right")
    with torch.no_grad():
        ours = answer_loss(session.model, enc.inputs, enc.labels)
        theirs = session.model(**enc.inputs, labels=enc.labels).loss
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_image_jitter_is_mild_and_seeded(tiny_pairs):
    import numpy as np

    from steerkit.train.vanilla import jitter_image

    img = next(p.image for p in tiny_pairs if p.image is not None)
    a = jitter_image(img, 0.08, torch.Generator().manual_seed(1))
    b = jitter_image(img, 0.08, torch.Generator().manual_seed(1))
    assert a.size == img.size and np.array_equal(np.asarray(a), np.asarray(b))
    diff = np.abs(np.asarray(a, dtype=float) - np.asarray(img, dtype=float))
    assert 0 < diff.mean() < 40


def test_focus_skips_most_learned_pairs():
    from steerkit.train.vanilla import focus_order

    last = torch.tensor([0.0] * 80 + [1.0] * 20)
    batches = focus_order(100, 8, torch.Generator().manual_seed(0), last, threshold=0.02, revisit=0.25)
    seen = [i for b in batches for i in b]
    assert len(seen) == len(set(seen))
    assert set(range(80, 100)) <= set(seen)  # every unlearned pair
    assert 5 < sum(i < 80 for i in seen) < 40  # about a quarter of the learned ones


def test_per_row_losses_average_to_the_loss(tiny_pairs):
    from steerkit.train.vanilla import answer_losses

    session = _session("llava", tiny_pairs)
    pairs = tiny_pairs[::17][:4]
    enc = session.encode([p.prompt for p in pairs], [p.image for p in pairs], [p.answer for p in pairs],
                         padding_side="right")
    with torch.no_grad():
        loss, rows = answer_losses(session.model, enc.inputs, enc.labels)
    counts = enc.answer_mask.sum(dim=1).float()
    assert torch.allclose((rows * counts).sum() / counts.sum(), loss, atol=1e-5)
