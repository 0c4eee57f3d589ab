"""How much a (steered) model prefers each option of a multiple-choice question, read from one forward pass.

Why (issue #12): a steered model that answers a 4-option question correctly 0 % of the time still knows the
answer, it avoids it; picking the option it scores *lowest* (elimination) recovers the knowledge. Real
forgetting looks like chance, so the evaluation needs the model's score of every option, not only its
greedy answer. The score of option ``K`` is the log-probability of the first token of the answer ``K``
at the last prompt token: exactly the distribution the first generated token is drawn from (greedy
generation picks its argmax), read in the same prefill pass, with the same steering and gate.

The first answer token of each letter is taken from the session's own teacher-forcing encoding
(:func:`steerkit.inputs.encode` with ``answers``), so it is the token the model was trained to emit after
this prompt template. When every letter's answer starts with the same token (a tokenizer that writes the
space before the letter on its own), that shared start is appended to the prompt and the scores are read
one token later; letters no single token tells apart are refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import torch

from .data.items import EvalItem
from .errors import Problem, SteeringRuntimeError

__all__ = ["option_scores", "first_answer_tokens"]


def first_answer_tokens(session: Any, item: EvalItem, letters: Sequence[str]) -> tuple[list[int], list[int]]:
    """(tokens every letter's answer starts with, the first token that tells the letters apart).

    The shared start is usually empty; a tokenizer that writes the space before a letter as its own token
    (the tiny test models) shares it, and the scores are then read one token later.
    """
    n = len(letters)
    enc = session.encode([item.prompt] * n, [item.image] * n, answers=list(letters),
                         histories=[item.history] * n, prefixes=[item.assistant_prefix] * n)
    seqs = [enc.inputs["input_ids"][row][enc.labels[row] != -100].tolist() for row in range(n)]
    common = 0
    while all(len(q) > common + 1 for q in seqs) and len({q[common] for q in seqs}) == 1:
        common += 1
    ids = [q[common] for q in seqs]
    if len(set(ids)) != n:
        raise SteeringRuntimeError("option letters share their answer tokens", [Problem(
            f"letters {list(letters)} encode as {seqs} after this prompt template", None, None, None, None,
            "option scores need a tokenizer that tells each letter answer apart by one token", "SK640")])
    return seqs[0][:common], ids


def _append_tokens(inputs: dict, tokens: Sequence[int]) -> dict:
    """``tokens`` appended to every row: input_ids get them, the attention mask ones, and any other per-token
    tensor (e.g. Qwen2.5-VL's token types) zeros, the value of a text token."""
    ids = inputs["input_ids"]
    b, t, n = ids.shape[0], ids.shape[1], len(tokens)
    out = {}
    for k, v in inputs.items():
        if k == "input_ids":
            v = torch.cat([v, torch.tensor(tokens, dtype=v.dtype, device=v.device).expand(b, -1)], 1)
        elif isinstance(v, torch.Tensor) and v.dim() == 2 and tuple(v.shape) == (b, t):
            fill = torch.ones if k == "attention_mask" else torch.zeros
            v = torch.cat([v, fill(b, n, dtype=v.dtype, device=v.device)], 1)
        out[k] = v
    return out


def option_scores(session: Any, items: Sequence[EvalItem], steerer: Any = None, *, batch_size: int = 32,
                  tokens: Optional[dict] = None) -> list[dict[str, float]]:
    """Log-probability of each option letter as the first answer token, per classification item.

    ``steerer``: a :class:`~steerkit.runtime_nnsight.Steerer` (the steered model) or None (unsteered).
    Batches are homogeneous in modality and conversation shape, as in the evaluator.
    """
    if getattr(session, "remote", False):
        raise SteeringRuntimeError("option scores run locally only", [Problem(
            "the session's model runs on a remote backend", None, None, None, None,
            "load the model locally (--remote local or none) to score options", "SK641")])
    bad = [i for i, it in enumerate(items) if it.task != "classification" or not it.options]
    if bad:
        raise SteeringRuntimeError("option scores need multiple-choice items", [Problem(
            f"item {bad[0]} (id {items[bad[0]].id!r}) is a {items[bad[0]].task} item without options", None, None,
            None, None, "pass classification items only", "SK642")])
    tokens = {} if tokens is None else tokens  # (modality, conversation shape, letters) -> first tokens
    groups: dict[tuple, list[int]] = {}
    for i, it in enumerate(items):
        key = (it.image is not None, len(it.history), bool(it.assistant_prefix), tuple(it.options or ()))
        groups.setdefault(key, []).append(i)
    out: list[Optional[dict[str, float]]] = [None] * len(items)
    for key, idx in groups.items():
        letters = list(key[3])
        if key not in tokens:
            tokens[key] = first_answer_tokens(session, items[idx[0]], letters)
        shared, distinct = tokens[key]
        ids = torch.tensor(distinct)
        for s in range(0, len(idx), batch_size):
            chunk = [items[i] for i in idx[s:s + batch_size]]
            enc = session.encode([c.prompt for c in chunk], [c.image for c in chunk],
                                 histories=[c.history for c in chunk], prefixes=[c.assistant_prefix for c in chunk])
            inputs, last_pos = dict(enc.inputs), enc.prompt_last
            if shared:  # rows are left-padded: the shared answer start goes after every row's last token
                inputs = _append_tokens(inputs, shared)
                last_pos = torch.full_like(last_pos, inputs["input_ids"].shape[1] - 1)
            with torch.no_grad():
                logits = steerer.forward(inputs) if steerer is not None else session.model(**inputs).logits
            last = logits[torch.arange(len(chunk)), last_pos.to(logits.device)].float().log_softmax(-1)
            picked = last[:, ids.to(last.device)].cpu()
            for row, i in enumerate(idx[s:s + batch_size]):
                out[i] = {k: float(v) for k, v in zip(letters, picked[row])}
    return [o for o in out if o is not None]
