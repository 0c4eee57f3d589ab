"""Choose a baseline's lr and steps on the validation split (never on the reported splits).

One run per learning rate, evaluated at every requested step count along the way: with the default
constant lr (``train.min_lr_ratio: 1`` and no warm-up) the first k steps of a run *are* a k-step run
(same seeded batches, same updates), so an lr x steps grid costs len(lrs) trainings. With any other
schedule the prefix is not a shorter run, and each (lr, steps) cell is trained separately.

Scored on ``val_forget`` / ``val_retain`` (Val_Set: other paraphrases and image transforms of the
same people), classification accuracy by default. Rule: the lowest mean val_forget accuracy among
cells whose mean val_retain accuracy is within ``max_retain_drop`` points of vanilla; ties go to
fewer steps, then the smaller lr. When no cell qualifies, the one with the largest
retain - forget margin is chosen and ``qualified`` is False.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional, Sequence

from ..evaluate.runner import EvalResult

SPLITS = ("val_forget", "val_retain")


@dataclass
class SweepRow:
    lr: float
    steps: int
    train_seconds: float
    accuracy: dict[str, dict[str, Optional[float]]]  # {split: {modality: accuracy %}}
    final_loss: float = float("nan")

    def mean(self, split: str) -> float:
        vals = [v for v in self.accuracy.get(split, {}).values() if v is not None]
        return sum(vals) / len(vals) if vals else float("nan")


@dataclass
class SweepResult:
    method: str
    task: str
    vanilla: dict[str, dict[str, Optional[float]]]
    rows: list[SweepRow]
    chosen: SweepRow
    qualified: bool
    max_retain_drop: float
    items: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        """A markdown table (also pasted, as comments, into the shipped baseline configs)."""
        mods = ("vqa", "qa")
        head = ["lr", "steps"] + [f"{s} {m.upper()}" for s in SPLITS for m in mods] + ["train s", "final loss"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

        def cells(acc: dict) -> list[str]:
            return [("-" if acc.get(s, {}).get(m) is None else f"{acc[s][m]:.0f}") for s in SPLITS for m in mods]

        lines.append("| vanilla | 0 | " + " | ".join(cells(self.vanilla)) + " | 0 | - |")
        for r in self.rows:
            mark = " *" if r is self.chosen else ""
            lines.append(f"| {r.lr:g}{mark} | {r.steps} | " + " | ".join(cells(r.accuracy))
                         + f" | {r.train_seconds:.1f} | {r.final_loss:.3f} |")
        rule = (f"* chosen: lowest mean {SPLITS[0]} {self.task} accuracy with mean {SPLITS[1]} within "
                f"{self.max_retain_drop:g} points of vanilla" + ("" if self.qualified else
                                                                 " (no cell qualified: largest margin)"))
        return "\n".join(lines + ["", rule])


def _accuracy(result: EvalResult, task: str) -> dict[str, dict[str, Optional[float]]]:
    out: dict[str, dict[str, Optional[float]]] = {}
    for split in SPLITS:
        for mod in ("vqa", "qa"):
            cell = result.cell(split, task, mod)
            out.setdefault(split, {})[mod] = None if cell is None else cell.get("accuracy")
    return out


def choose(rows: Sequence[SweepRow], vanilla_retain: float, max_retain_drop: float) -> tuple[SweepRow, bool]:
    ok = [r for r in rows if r.mean(SPLITS[1]) >= vanilla_retain - max_retain_drop]
    if ok:
        return min(ok, key=lambda r: (r.mean(SPLITS[0]), r.steps, r.lr)), True
    return max(rows, key=lambda r: (r.mean(SPLITS[1]) - r.mean(SPLITS[0]), -r.steps)), False


def run_sweep(config: Any, lrs: Sequence[float], steps: Sequence[int], *, task: str = "classification",
              limit: Optional[int] = None, max_retain_drop: float = 10.0, progress: bool = True,
              log: Optional[Callable[[str], None]] = None) -> SweepResult:
    """Train ``config`` at every lr, score every step count on Val_Set, pick a cell (module doc)."""
    from ..session import load_session
    from .trainer import _as_loaded, _evaluate, eval_items, split_pairs, unlearn_session

    loaded = _as_loaded(config)
    cfg = loaded.config
    say = log or ((lambda m: print(m, file=sys.stderr, flush=True)) if progress else (lambda m: None))
    steps = sorted(set(int(s) for s in steps))
    forget, retain = split_pairs(loaded)
    items = eval_items(loaded, splits=SPLITS, tasks=[task], limit=limit)
    counts = {s: sum(i.split == s for i in items) for s in SPLITS}
    session = load_session(cfg.model, loaded.base_dir)
    say(f"sweep {cfg.method}: {len(lrs)} lr x {len(steps)} step counts; {counts} {task} items")
    vanilla = _accuracy(_evaluate(session, items, cfg.eval.batch_size, False), task)
    constant = cfg.train.warmup_steps == 0 and cfg.train.min_lr_ratio == 1.0
    rows: list[SweepRow] = []
    for lr in lrs:
        for group in ([steps] if constant else [[s] for s in steps]):
            if session is None:
                session = load_session(cfg.model, loaded.base_dir)  # a fresh vanilla model
            train = cfg.train.model_copy(update={"lr": float(lr), "steps": max(group), "epochs": None})
            run_cfg = cfg.model_copy(update={"train": train})
            found: list[tuple[int, Any]] = []

            def record(step: int, sess: Any) -> None:
                found.append((step, _accuracy(_evaluate(sess, items, cfg.eval.batch_size, False), task)))

            stats = unlearn_session(session, forget, retain, run_cfg, progress, on_step=record,
                                    callback_steps=group)
            by_step = {h["step"]: h for h in stats.history}
            for step, acc in found:
                h = by_step[step]
                rows.append(SweepRow(float(lr), step, round(h["seconds"], 2), acc, h["loss"]))
                say(f"  lr {lr:g} steps {step}: forget {rows[-1].mean(SPLITS[0]):.0f}% "
                    f"retain {rows[-1].mean(SPLITS[1]):.0f}%")
            session = None  # type: ignore[assignment]  # reloaded on the next learning rate
    vanilla_retain = SweepRow(0.0, 0, 0.0, vanilla).mean(SPLITS[1])
    chosen, qualified = choose(rows, vanilla_retain, max_retain_drop)
    return SweepResult(cfg.method, task, vanilla, rows, chosen, qualified, max_retain_drop, counts)
