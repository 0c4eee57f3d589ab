"""How much probability a model (steered or not) gives the correct answer: the strength search's proxy.

Accuracy on a few dozen validation questions moves in steps (one answer is several points), so two
strengths often tie and the tie then decides the strength. The probability of the correct answer moves
continuously with the strength, so it ranks strengths that accuracy cannot tell apart.

Two kinds of question, scored from one forward pass each:

- multiple choice (``options`` set, ``answer`` a letter): the probability that the first answer token
  starts with the correct letter, counted exactly as the classification scorer reads answers (the first
  alphanumeric character, upper-cased; ``steerkit.evaluate.metrics.first_letter``). Top-1 correctness of
  that first token is returned too.
- free-form (``answer`` a reference text): the per-token geometric mean probability of the reference under
  teacher forcing. Steering sees only the prompt (``Steerer.forward(prompt_mask=...)``), as in a
  prefill-steered generation of that answer.

Nothing here chooses a strength; ``steerkit.strength`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from .evaluate.metrics import first_letter


@dataclass(frozen=True)
class Question:
    """One validation question with its known answer."""

    prompt: str
    image: Any  # a PIL image or None
    answer: str  # option letter (multiple choice) or the reference answer text
    options: Optional[dict[str, str]] = None  # set for multiple choice
    id: str = ""

    @property
    def choice(self) -> bool:
        return self.options is not None


# keyed by the tokenizer's id, which the entry keeps alive so the id cannot be reused by another object
_LETTER_CACHE: dict[tuple[int, int], tuple[Any, dict[str, torch.Tensor]]] = {}


def letter_tokens(tokenizer: Any, vocab_size: int, letters: Sequence[str] = ("A", "B", "C", "D")
                  ) -> dict[str, torch.Tensor]:
    """Token ids whose decoded text starts (first alphanumeric character) with each letter."""
    key = (id(tokenizer), vocab_size)
    if key not in _LETTER_CACHE:
        n = min(vocab_size, len(tokenizer))
        texts = tokenizer.batch_decode([[i] for i in range(n)])
        firsts = [first_letter(t) for t in texts]
        _LETTER_CACHE[key] = (tokenizer, {L: torch.tensor([i for i, f in enumerate(firsts) if f == L],
                                                          dtype=torch.long) for L in letters})
    return _LETTER_CACHE[key][1]


def _logits(session: Any, steerer: Any, inputs: dict, prompt_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    if steerer is None:
        with torch.no_grad():
            return session.model(**inputs).logits
    return steerer.forward(inputs, prompt_mask=prompt_mask)


def score_choice(session: Any, steerer: Any, batch: Sequence[Question]) -> list[tuple[float, float]]:
    """(probability of the correct letter, top-1 correct 0/1) per multiple-choice question."""
    enc = session.encode([q.prompt for q in batch], [q.image for q in batch])
    logits = _logits(session, steerer, enc.inputs).float()
    rows = torch.arange(len(batch))
    last = logits[rows, enc.prompt_last.to(logits.device)]
    probs = torch.softmax(last, dim=-1).cpu()
    table = letter_tokens(session.tokenizer, probs.shape[-1])
    top = session.tokenizer.batch_decode([[int(i)] for i in probs.argmax(dim=-1)])
    out = []
    for b, q in enumerate(batch):
        ids = table.get(q.answer.strip().upper())
        p = float(probs[b, ids].sum()) if ids is not None and ids.numel() else 0.0
        out.append((p, float(first_letter(top[b]) == q.answer.strip().upper())))
    return out


def score_free(session: Any, steerer: Any, batch: Sequence[Question]) -> list[float]:
    """Per-token geometric mean probability of each reference answer (teacher forced)."""
    enc = session.encode([q.prompt for q in batch], [q.image for q in batch], answers=[q.answer for q in batch])
    inputs = enc.inputs
    prompt_mask = inputs["attention_mask"].bool() & ~enc.answer_mask.to(inputs["attention_mask"].device)
    logits = _logits(session, steerer, inputs, prompt_mask).float().cpu()
    labels = enc.labels.cpu()
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    target = labels[:, 1:]
    keep = target != -100
    picked = logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1) * keep
    mean = picked.sum(1) / keep.sum(1).clamp(min=1)
    return [float(torch.exp(m)) for m in mean]


def score_questions(session: Any, steerer: Any, questions: Sequence[Question], batch_size: int = 32
                    ) -> list[tuple[float, Optional[float]]]:
    """(answer probability, top-1 correct or None for free-form) per question, in input order.

    Batches are homogeneous in kind and in having an image, like the evaluator's, so padding and the
    gate's positions are uniform within a batch."""
    groups: dict[tuple[bool, bool], list[int]] = {}
    for i, q in enumerate(questions):
        groups.setdefault((q.choice, q.image is not None), []).append(i)
    out: list[Optional[tuple[float, Optional[float]]]] = [None] * len(questions)
    for (choice, _), idx in groups.items():
        for s in range(0, len(idx), batch_size):
            chunk = idx[s:s + batch_size]
            batch = [questions[i] for i in chunk]
            if choice:
                for i, (p, top1) in zip(chunk, score_choice(session, steerer, batch)):
                    out[i] = (p, top1)
            else:
                for i, p in zip(chunk, score_free(session, steerer, batch)):
                    out[i] = (p, None)
    return [o for o in out if o is not None]
