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
from typing import Sequence

from .data.mllmu import eval_items
from .evaluate import evaluate
from .evaluate.metrics import pooled
from .runtime_nnsight import steer

DEFAULT_GRID = (-0.5, -1.0, -2.0, -3.0, -4.0, -6.0)


def letter_token_ids(tokenizer, letters: str = "ABCDEFGH") -> dict[str, list[int]]:
    """Token ids that start an answer ``X`` (with and without a leading space), per option letter."""
    out: dict[str, list[int]] = {}
    for letter in letters:
        ids = {enc[0] for enc in (tokenizer.encode(t, add_special_tokens=False) for t in (letter, " " + letter))
               if len(enc) == 1}
        out[letter] = sorted(ids)
    return out


def choose_strength(table: Sequence[dict], max_retain_drop: float = 3.0) -> float:
    """The calibration rule: among strengths keeping val_retain accuracy within ``max_retain_drop`` points
    of vanilla (the row with lambda 0), the one with the lowest mean probability of the correct option on
    val_forget (a continuous proxy: accuracy ties between strengths are common on a few hundred items);
    remaining ties go to the smaller |lambda|. If none keeps retain, the smallest |lambda|."""
    base = next(r for r in table if r["lambda"] == 0.0)
    rows = [r for r in table if r["lambda"] != 0.0]
    ok = [r for r in rows if r["val_retain_acc"] >= base["val_retain_acc"] - max_retain_drop]
    if not ok:
        return float(min(rows, key=lambda r: abs(r["lambda"]))["lambda"])
    return float(min(ok, key=lambda r: (round(r["val_forget_p"], 6), abs(r["lambda"])))["lambda"])


def val_items(root, forget_ratio: int, seed: int, limit_retain_people: int = 20):
    """Val_Set classification items: every val_forget item and those of the first 20 val_retain people."""
    return _val_items(root, forget_ratio, seed, limit_retain_people)


def _val_items(root, forget_ratio: int, seed: int, limit_retain_people: int = 20):
    forget = eval_items(root, "val_forget", forget_ratio, ["classification"], seed=seed)
    retain = eval_items(root, "val_retain", forget_ratio, ["classification"], seed=seed)
    people = sorted({i.id for i in retain})[:limit_retain_people]  # bound the cost; people, not rows
    return forget + [i for i in retain if i.id in set(people)]


def _acc(result, split: str) -> float:
    return pooled(result.metrics[split]["classification"], "accuracy")


def search_strength(session, plan, root, *, forget_ratio: int = 10, seed: int = 0,
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
