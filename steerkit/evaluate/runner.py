"""Run a model over EvalItems in homogeneous batches and score every answer.

Why this module exists: evaluation must be the same for every method (vanilla, steered, GA, NPO),
so it never touches a model. The caller passes ``generate_fn(items, max_new_tokens) -> answers``
wrapping whatever session it has; this module only decides batching and scoring.

Batches are homogeneous in (split, task, modality): one task means one ``max_new_tokens`` per
``generate`` call, and one modality means a batch is all image+text or all text-only, which keeps
processors simple and makes padding (and so the steering gate's "last prompt token") uniform.
Records come back in the order of the input items, so two runs over the same items line up
row for row (vanilla vs steered).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping, Optional, Sequence

from steerkit.data.items import EvalItem
from steerkit.errors import DataError, Problem, SteerkitError, SteeringRuntimeError, choices_hint
from steerkit.evaluate import metrics as M

GenerateFn = Callable[[list, int], list]
GateFn = Callable[[list], Sequence[float]]

# Budgets sized for short answers (a letter, a sentence, a phrase); MLLMU itself uses 50 everywhere.
DEFAULT_MAX_NEW_TOKENS: Mapping[str, int] = MappingProxyType(
    {"classification": 8, "generation": 32, "cloze": 16, "refusal": 32}
)


@dataclass
class ItemRecord:
    """What one item produced: enough to rescore, diff two methods, or audit by hand."""

    id: str
    split: str
    task: str
    modality: str
    index: int
    prompt: str
    answer: str  # ground truth
    prediction: str  # what the model said
    score: float  # headline per-item score: hit (0/1), ROUGE-L F1, or refused (0/1)
    refusal: bool
    metrics: dict[str, float] = field(default_factory=dict)  # per-item, 0-1
    gate: Optional[float] = None  # steering-gate value, when a gate_fn was given

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if isinstance(d["score"], float) and not math.isfinite(d["score"]):
            d["score"] = None  # keep the JSON strict
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ItemRecord":
        kw = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        if kw.get("score") is None:
            kw["score"] = math.nan
        return cls(**kw)


@dataclass
class EvalResult:
    """Per-item records, the nested metrics built from them, and run metadata."""

    records: list[ItemRecord]
    metrics: dict  # {split: {task: {modality: {metric: value, "n": count}}}}
    meta: dict = field(default_factory=dict)

    @property
    def has_gate(self) -> bool:
        return any(r.gate is not None for r in self.records)

    def gate_values(self, split: str | None = None) -> list[float]:
        """Recorded gate values, for one split or all of them (finite values only)."""
        return [r.gate for r in self.records if r.gate is not None and math.isfinite(r.gate)
                and (split is None or r.split == split)]

    def cell(self, split: str, task: str, modality: str) -> dict | None:
        """One metrics cell, or None when that combination was not evaluated."""
        return self.metrics.get(split, {}).get(task, {}).get(modality)

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "meta": self.meta,
                "records": [r.to_dict() for r in self.records]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "EvalResult":
        records = [ItemRecord.from_dict(r) for r in d.get("records", [])]
        metrics = d.get("metrics") or M.aggregate([asdict(r) for r in records])
        return cls(records=records, metrics=metrics, meta=dict(d.get("meta", {})))


def group_batches(items: Sequence[EvalItem], batch_size: int) -> list[list[int]]:
    """Indices of ``items`` cut into batches of at most ``batch_size``, homogeneous in
    (split, task, modality); groups in order of first appearance, items in input order."""
    if batch_size < 1:
        raise SteerkitError(f"batch_size must be at least 1, got {batch_size}")
    groups: dict[tuple[str, str, str], list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault((item.split, item.task, item.modality), []).append(i)
    return [idx[s:s + batch_size] for idx in groups.values() for s in range(0, len(idx), batch_size)]


def _check_tasks(items: Sequence[EvalItem], budgets: Mapping[str, int]) -> None:
    problems = []
    for i, item in enumerate(items):
        if item.task not in M.TASKS:
            problems.append(Problem(f"item {i} (id {item.id!r}) has unknown task {item.task!r}",
                                    hint=choices_hint(str(item.task), M.TASKS), code="SK601"))
        elif item.task not in budgets:
            problems.append(Problem(f"no max_new_tokens given for task {item.task!r}",
                                    hint="add it to the max_new_tokens mapping", code="SK602"))
        if len(problems) >= 20:
            break
    if problems:
        raise DataError("cannot evaluate these items", problems)


def _check_output(name: str, out: Any, batch: list[EvalItem], kind: type) -> list:
    """Insist on one value per item: a silent length mismatch would mis-attribute every answer."""
    if hasattr(out, "tolist"):  # a tensor or array of gate values
        out = out.tolist()
    if not isinstance(out, (list, tuple)) or len(out) != len(batch):
        got = f"{len(out)} values" if isinstance(out, (list, tuple)) else type(out).__name__
        raise SteeringRuntimeError(
            f"{name} returned {got} for a batch of {len(batch)} items",
            [Problem(f"{name} must return one {kind.__name__} per item, in order",
                     hint=f"first item of the batch: id {batch[0].id!r}, split {batch[0].split!r}",
                     code="SK603")])
    values = []
    for i, v in enumerate(out):
        try:
            if kind is str and not isinstance(v, str):
                raise TypeError
            values.append(v if kind is str else float(v))
        except (TypeError, ValueError):
            raise SteeringRuntimeError(
                f"{name} returned a {type(v).__name__} at position {i}, expected {kind.__name__}"
            ) from None
    return values


def evaluate(
    items: Sequence[EvalItem],
    generate_fn: GenerateFn,
    *,
    batch_size: int = 32,
    max_new_tokens: Mapping[str, int] | int | None = None,
    progress: bool = True,
    gate_fn: GateFn | None = None,
    is_refusal: Callable[[str], bool] | None = None,
) -> EvalResult:
    """Generate an answer for every item, score it, and aggregate MLLMU-style.

    Args:
        items: the questions; any mix of splits, tasks and modalities.
        generate_fn: ``generate_fn(batch, max_new_tokens) -> list[str]``, one answer per item,
            greedy; it sees homogeneous batches of at most ``batch_size`` items.
        batch_size: the largest batch handed to ``generate_fn`` (and ``gate_fn``).
        max_new_tokens: per-task budgets merged over ``DEFAULT_MAX_NEW_TOKENS``, or one int for all.
        progress: show a tqdm bar on stderr.
        gate_fn: optional ``gate_fn(batch) -> list[float]``; values are kept per item so the report
            can show gate histograms and forget-vs-retain AUC.
        is_refusal: refusal detector; defaults to ``steerkit.data.prompts.is_refusal`` (or a
            substring fallback when that module is absent).

    Returns:
        An ``EvalResult`` whose ``metrics`` nest ``{split: {task: {modality: {metric, "n"}}}}``.
    """
    if isinstance(max_new_tokens, int):
        budgets = {task: max_new_tokens for task in M.TASKS}
    else:
        budgets = {**DEFAULT_MAX_NEW_TOKENS, **(max_new_tokens or {})}
    refusal = is_refusal or M.default_is_refusal()
    _check_tasks(items, budgets)
    batches = group_batches(items, batch_size)

    from tqdm import tqdm  # the plain console bar: always stderr, never a notebook widget

    records: list[ItemRecord | None] = [None] * len(items)
    start = time.perf_counter()
    with tqdm(total=len(items), desc="eval", unit="item", file=sys.stderr,
              disable=not progress, dynamic_ncols=True) as bar:
        for idx in batches:
            batch = [items[i] for i in idx]
            head = batch[0]
            bar.set_postfix_str(f"{head.split}/{head.task}/{head.modality}", refresh=False)
            answers = _check_output("generate_fn", generate_fn(batch, budgets[head.task]), batch, str)
            gates: list = [None] * len(batch)
            if gate_fn is not None:
                gates = _check_output("gate_fn", gate_fn(batch), batch, float)
            for i, item, pred, gate in zip(idx, batch, answers, gates):
                records[i] = _record(item, pred, gate, refusal)
            bar.update(len(batch))
    done = [r for r in records if r is not None]
    meta = {"n_items": len(done), "batch_size": batch_size, "max_new_tokens": budgets,
            "n_batches": len(batches), "seconds": round(time.perf_counter() - start, 3),
            "refusal_detector": f"{getattr(refusal, '__module__', '?')}."
                                f"{getattr(refusal, '__qualname__', repr(refusal))}"}
    return EvalResult(records=done, metrics=M.aggregate([asdict(r) for r in done]), meta=meta)


def _record(item: EvalItem, prediction: str, gate: float | None,
            refusal: Callable[[str], bool]) -> ItemRecord:
    refused = bool(refusal(prediction))
    score, item_metrics = M.score_item(item.task, prediction, item.answer)
    if item.task == "refusal":
        score = float(refused)
        key = M.REFUSAL_BREAKDOWN[0] if refusal(item.answer) else M.REFUSAL_BREAKDOWN[1]
        item_metrics = {key: score}
    return ItemRecord(id=item.id, split=item.split, task=item.task, modality=item.modality,
                      index=item.index, prompt=item.prompt, answer=item.answer,
                      prediction=prediction, score=score, refusal=refused,
                      metrics=item_metrics, gate=gate)
