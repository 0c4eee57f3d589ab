"""Chance, not below: how far a multiple-choice cell is from guessing, and what elimination recovers.

Why (issue #12): steered forget accuracy of 0 % on a 4-option question is not forgetting. The model still
ranks the right option (it avoids it), and an attacker who picks the option it scores *lowest* reads the
answer back. Forgetting looks like chance: accuracy near 100/k, the correct option's rank spread evenly
(mean rank (k + 1) / 2), and elimination no better than chance.

Given the evaluator's records and the model's option scores (:func:`steerkit.option_scores.option_scores`),
every (split, modality) cell gets:

- ``accuracy`` (of the greedy answers, as the evaluator scores them), ``chance`` (100 / k) and
  ``distance_from_chance`` (accuracy - chance: negative means the model avoids the answer);
- ``mean_rank`` of the correct option under the option scores (1 = scored highest; ties share ranks) and
  ``rank_share`` (percent of items at each rank);
- ``forced_choice_accuracy`` (the best-scored option) and ``elimination_accuracy`` (the worst-scored
  option: the elimination attack), ties split evenly, so a model that scores every option alike sits at
  chance on both.

Pure and model-free, like the rest of :mod:`steerkit.evaluate`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["rank_of", "rank_weights", "pick_share", "chance_cells"]


def rank_of(scores: Mapping[str, float], correct: str) -> float:
    """Rank of ``correct`` (1 = highest score); options tied with it share the average of their ranks."""
    mine = scores[correct]
    higher = sum(1 for k, v in scores.items() if k != correct and v > mine)
    tied = sum(1 for k, v in scores.items() if k != correct and v == mine)
    return 1.0 + higher + tied / 2.0


def rank_weights(scores: Mapping[str, float], correct: str) -> dict[int, float]:
    """The ranks ``correct`` may take, weighted: 1.0 on one rank, spread evenly over a tie."""
    mine = scores[correct]
    higher = sum(1 for k, v in scores.items() if k != correct and v > mine)
    tied = sum(1 for k, v in scores.items() if k != correct and v == mine)
    return {higher + 1 + j: 1.0 / (tied + 1) for j in range(tied + 1)}


def pick_share(scores: Mapping[str, float], correct: str, lowest: bool = False) -> float:
    """1 if ``correct`` alone has the highest (``lowest``: the lowest) score, 1/n when n options tie there."""
    best = min(scores.values()) if lowest else max(scores.values())
    at = [k for k, v in scores.items() if v == best]
    return 1.0 / len(at) if correct in at else 0.0


def chance_cells(records: Sequence[Any], scores: Sequence[Mapping[str, float]]) -> dict:
    """``{split: {modality: cell}}`` for classification records, aligned one to one with ``scores``.

    ``records``: evaluator records (:class:`~steerkit.evaluate.runner.ItemRecord` or dicts) of classification
    items; ``scores``: each item's option scores. Percentages are 0-100.
    """
    if len(records) != len(scores):
        raise ValueError(f"{len(records)} records but {len(scores)} option scores")
    groups: dict[tuple[Any, Any], list[tuple[Any, Mapping[str, float]]]] = {}
    for rec, sc in zip(records, scores):
        get = rec.get if isinstance(rec, Mapping) else lambda k, r=rec: getattr(r, k)
        if get("task") != "classification":
            raise ValueError(f"chance cells are for classification records, got a {get('task')} record")
        groups.setdefault((get("split"), get("modality")), []).append((get, sc))
    out: dict = {}
    for (split, modality), rows in groups.items():
        n = len(rows)
        k = len(rows[0][1])
        ranks = [rank_of(sc, get("answer")) for get, sc in rows]
        acc = 100.0 * sum(float(get("score")) for get, _ in rows) / n
        chance = 100.0 / k
        weights = [rank_weights(sc, get("answer")) for get, sc in rows]
        share = {str(r): 100.0 * sum(w.get(r, 0.0) for w in weights) / n for r in range(1, k + 1)}
        out.setdefault(split, {})[modality] = {
            "accuracy": acc, "chance": chance, "distance_from_chance": acc - chance,
            "mean_rank": sum(ranks) / n, "chance_mean_rank": (k + 1) / 2.0, "rank_share": share,
            "forced_choice_accuracy": 100.0 * sum(pick_share(sc, get("answer")) for get, sc in rows) / n,
            "elimination_accuracy": 100.0 * sum(pick_share(sc, get("answer"), lowest=True) for get, sc in rows) / n,
            "n": n}
    return out
