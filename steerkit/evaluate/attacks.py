"""Score re-elicitation attacks (:mod:`steerkit.data.attacks`) with any method's ``generate_fn``.

One function for every method (vanilla, steered, GA, NPO ...) so the attack x method table compares like
with like: the same attacked items, the same scoring as :func:`steerkit.evaluate.evaluate`. Model-free.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from steerkit.data.items import EvalItem
from steerkit.evaluate.metrics import HEADLINE, pooled
from steerkit.evaluate.runner import GenerateFn, evaluate

__all__ = ["run_attacks", "attack_table"]


def run_attacks(attack_sets: Mapping[str, Sequence[EvalItem]], generate_fn: GenerateFn, *, batch_size: int = 32,
                progress: bool = False, **kwargs: Any) -> dict[str, dict]:
    """``{attack: metrics}`` (the evaluator's nesting, ``{split: {task: {modality: cell}}}``) per attack.

    Attacks with no items (e.g. ``misspelt_name`` on image questions only) map to ``{}``.
    """
    out: dict[str, dict] = {}
    for name, items in attack_sets.items():
        out[name] = evaluate(list(items), generate_fn, batch_size=batch_size, progress=progress,
                             **kwargs).metrics if items else {}
    return out


def attack_table(results: Mapping[str, Mapping[str, Mapping]], split: str = "forget",
                 task: str = "classification") -> dict[str, dict[str, dict[str, float | None]]]:
    """``{attack: {method: {"vqa", "qa", "all": headline}}}`` from ``{method: {attack: metrics}}``."""
    table: dict[str, dict[str, dict[str, float | None]]] = {}
    metric = HEADLINE[task]
    for method, attacks in results.items():
        for attack, metrics in attacks.items():
            cells = metrics.get(split, {}).get(task, {})
            row = {mod: cells[mod].get(metric) for mod in ("vqa", "qa") if mod in cells}
            row["all"] = pooled(cells, metric) if cells else None
            table.setdefault(attack, {})[method] = row
    return table
