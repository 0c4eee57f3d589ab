"""Objectives of the training-based unlearning baselines, as pure functions of logits and labels.

Conventions (shared with :meth:`steerkit.session.ModelSession.encode`): ``labels`` are aligned with
``input_ids`` and hold -100 everywhere except on answer tokens; the logit at position t predicts
the token at t + 1, so every function shifts by one, as Hugging Face's own loss does. Every
"NLL" here is per row (one value per example), so a method can weight, cache or compare examples
individually; the batch objective is the mean over rows.

Methods (method.md, "Training-based baselines"; D_f forget, D_r retain, all *minimised*):

- GA:       -NLL_theta(x_f)
- GA_Diff:  -NLL_theta(x_f) + w * NLL_theta(x_r)
- KL_Min:   -NLL_theta(x_f) + w * KL(p_ref(.|x_r) || p_theta(.|x_r))   (mean over retain answer tokens)
- NPO:      -(2/beta) * log sigmoid(beta * (NLL_theta(x_f) - NLL_ref(x_f)))

NPO sign, checked against Zhang et al. 2024 ("Negative Preference Optimization", eq. 3):
``L_NPO = -(2/beta) E[log sigmoid(-beta * log(pi_theta(y|x) / pi_ref(y|x)))]``. With
``log pi(y|x) = -NLL(y|x)`` (summed over the answer tokens) the log ratio is
``NLL_ref - NLL_theta``, so ``-beta * log ratio = +beta * (NLL_theta - NLL_ref)``: the loss is
``-(2/beta) log sigmoid(+beta * (NLL_theta - NLL_ref))``, as method.md writes it. It falls as the
forget NLL rises above the reference's (that is what forgetting means). The opposite sign,
``log sigmoid(-beta * (NLL_theta - NLL_ref))``, would be minimised by *lowering* the forget NLL, i.e.
by learning the forget set harder. At NLL_theta = NLL_ref the gradient w.r.t. NLL_theta is -1 (GA
with weight 1); it decays as sigmoid(-beta * delta) once the model has moved away, which is what
keeps NPO from diverging the way GA does. The paper's log pi is a *sum* over tokens (TOFU's NPO code
sums too), so ``answer_nll(..., reduction="sum")`` is the faithful input; "mean" is offered because
it makes beta independent of answer length.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Reduction = Literal["mean", "sum"]
IGNORE = -100


def _shift(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} do not line up")
    return logits[:, :-1, :], labels[:, 1:]


def answer_token_counts(labels: torch.Tensor) -> torch.Tensor:
    """Answer tokens per row (the positions a loss is taken on), shape [B]."""
    return (labels[:, 1:] != IGNORE).sum(dim=1)


def answer_nll(logits: torch.Tensor, labels: torch.Tensor, reduction: Reduction = "mean") -> torch.Tensor:
    """Per-row NLL of the answer tokens, shape [B]: mean (default) or sum over each row's tokens.

    Computed in float32 whatever the logits' dtype. A row without answer tokens raises: it would
    silently contribute 0 (or NaN) to every objective.
    """
    lg, lb = _shift(logits, labels)
    mask = lb != IGNORE
    counts = mask.sum(dim=1)
    if bool((counts == 0).any()):
        raise ValueError("a row has no answer tokens (all labels are -100)")
    tok = F.cross_entropy(lg.float().reshape(-1, lg.shape[-1]), lb.reshape(-1), ignore_index=IGNORE,
                          reduction="none").view(lb.shape)
    total = (tok * mask).sum(dim=1)
    return total if reduction == "sum" else total / counts


def answer_kl(logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-row mean over answer tokens of KL(p_ref || p_theta) on the full vocabulary, shape [B].

    ``ref_logits`` come from the reference (vanilla) model on the same inputs; they carry no
    gradient. Zero exactly when the two models agree on every answer position.
    """
    if ref_logits.shape != logits.shape:
        raise ValueError(f"ref_logits {tuple(ref_logits.shape)} differ from logits {tuple(logits.shape)}")
    lg, lb = _shift(logits, labels)
    ref = ref_logits[:, :-1, :].detach()
    mask = lb != IGNORE
    counts = mask.sum(dim=1)
    if bool((counts == 0).any()):
        raise ValueError("a row has no answer tokens (all labels are -100)")
    log_p = F.log_softmax(lg.float(), dim=-1)
    log_q = F.log_softmax(ref.float(), dim=-1)  # q = p_ref
    kl_tok = (log_q.exp() * (log_q - log_p)).sum(dim=-1)
    return (kl_tok * mask).sum(dim=1) / counts


def ga_loss(forget_nll: torch.Tensor) -> torch.Tensor:
    """Gradient ascent: minimise -NLL(forget)."""
    return -forget_nll.mean()


def ga_diff_loss(forget_nll: torch.Tensor, retain_nll: torch.Tensor, retain_weight: float = 1.0) -> torch.Tensor:
    """Gradient difference: -NLL(forget) + w * NLL(retain) (summed, one step)."""
    return -forget_nll.mean() + retain_weight * retain_nll.mean()


def kl_min_loss(forget_nll: torch.Tensor, retain_kl: torch.Tensor, retain_weight: float = 1.0) -> torch.Tensor:
    """KL minimisation: -NLL(forget) + w * KL(p_ref || p_theta) on retain answers."""
    return -forget_nll.mean() + retain_weight * retain_kl.mean()


def npo_loss(nll_theta: torch.Tensor, nll_ref: torch.Tensor, beta: float) -> torch.Tensor:
    """NPO: mean over rows of -(2/beta) * log sigmoid(beta * (NLL_theta - NLL_ref)) (sign: see module doc)."""
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    delta = nll_theta - nll_ref.detach().to(nll_theta.dtype)
    return (-(2.0 / beta) * F.logsigmoid(beta * delta)).mean()
