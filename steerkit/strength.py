"""Choose one steering strength (lambda) per model on a validation split, never on the test set.

A deployed system cannot know which task a prompt belongs to, so one lambda serves every task
(the authors tuned one per task). The search evaluates classification on ``val_forget`` (forget
people, unseen wordings and image transforms) and ``val_retain`` (other people), and picks the
strength that forgets most while keeping val_retain within ``max_retain_drop`` points of vanilla
(default 3, the retain tolerance the benchmark is judged by: with 20 val_retain people, 0.5 point is one
answer, so a tighter rule decides on a handful of answers). Every candidate's figures are returned, so
the choice is reported, not hand-picked.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Sequence

from .data.mllmu import eval_items
from .evaluate import evaluate
from .evaluate.metrics import pooled
from .runtime_nnsight import steer

if TYPE_CHECKING:
    from .plan import Plan
    from .session import ModelSession

DEFAULT_GRID = (-0.5, -1.0, -2.0, -4.0)


def _val_items(root, forget_ratio: int, seed: int, limit_retain_people: int = 20):
    forget = eval_items(root, "val_forget", forget_ratio, ["classification"], seed=seed)
    retain = eval_items(root, "val_retain", forget_ratio, ["classification"], seed=seed)
    people = sorted({i.id for i in retain})[:limit_retain_people]  # bound the cost; people, not rows
    return forget + [i for i in retain if i.id in set(people)]


def _acc(result, split: str) -> float:
    value = pooled(result.metrics[split]["classification"], "accuracy")
    assert value is not None, f"no {split} classification items were scored"
    return value


def search_strength(session: ModelSession, plan: Plan, root, *, forget_ratio: int = 10, seed: int = 0,
                    grid: Sequence[float] = DEFAULT_GRID, max_retain_drop: float = 3.0,
                    batch_size: int = 64, progress: bool = False) -> dict:
    """Evaluate each strength on the validation split; return the table and the chosen strength."""
    items = _val_items(root, forget_ratio, seed)

    def gen_with(steerer):
        return lambda batch, n: session.generate([i.prompt for i in batch], [i.image for i in batch], n,
                                                 steerer=steerer)

    vanilla = evaluate(items, gen_with(None), batch_size=batch_size, progress=progress)
    base_f, base_r = _acc(vanilla, "val_forget"), _acc(vanilla, "val_retain")
    rows = []
    for lam in grid:
        writes = tuple(dataclasses.replace(w, strength=float(lam)) for w in plan.writes)
        with steer(session.model, dataclasses.replace(plan, writes=writes), session.image_token_id) as st:
            res = evaluate(items, gen_with(st), batch_size=batch_size, progress=progress)
        rows.append({"lambda": lam, "val_forget_acc": _acc(res, "val_forget"),
                     "val_retain_acc": _acc(res, "val_retain")})
    ok = [r for r in rows if r["val_retain_acc"] >= base_r - max_retain_drop]
    best = min(ok, key=lambda r: (r["val_forget_acc"], abs(r["lambda"]))) if ok else min(
        rows, key=lambda r: abs(r["lambda"]))
    return {"vanilla": {"val_forget_acc": base_f, "val_retain_acc": base_r}, "grid": rows,
            "chosen": best["lambda"], "criterion": f"lowest val_forget accuracy with val_retain >= "
                                                   f"vanilla - {max_retain_drop} points",
            "n_items": len(items)}
