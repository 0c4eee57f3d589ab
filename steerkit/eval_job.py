"""Evaluate a recipe: vanilla vs steered on the benchmark splits, with gate diagnostics and plots.

Items come from the recipe's ``eval.data`` folder (MLLMU-Bench layout) or the embedded world; the
same items go through the unsteered and the steered model, so the two runs line up row by row.
The refusal split (privacy refusals) is always evaluated when the data has it: steering must not
lower it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from .recipe import LoadedRecipe


def eval_items_for(loaded: LoadedRecipe, splits=None) -> list:
    from .data.mllmu import eval_items
    from .sources import world_root

    spec = loaded.recipe.eval
    root = loaded.resolve(spec.data) if spec.data else world_root(loaded.recipe.model.world)
    items = []
    for split in splits or spec.splits:
        tasks = None if split == "refusal" else spec.tasks  # refusal items have their own task
        got = eval_items(root, split, spec.forget_ratio, tasks, spec.modalities, seed=loaded.recipe.seed)
        if spec.limit:
            cells: dict = {}
            kept = []
            for it in got:
                key = (it.task, it.modality)
                cells[key] = cells.get(key, 0) + 1
                if cells[key] <= spec.limit:
                    kept.append(it)
            got = kept
        items += got
    return items


def make_fns(session, steerer=None):
    """generate_fn and gate_fn over EvalItems for the evaluator."""

    def conversation(batch):  # earlier turns and a forced answer start (re-elicitation attacks), when any
        if not any(getattr(i, "history", ()) or getattr(i, "assistant_prefix", "") for i in batch):
            return {}
        return {"histories": [i.history for i in batch], "prefixes": [i.assistant_prefix for i in batch]}

    def generate_fn(batch, max_new_tokens):
        return session.generate([i.prompt for i in batch], [i.image for i in batch], max_new_tokens, steerer=steerer,
                                **conversation(batch))

    def gate_fn(batch):
        gates = steerer.gate_values(session.encode([i.prompt for i in batch], [i.image for i in batch],
                                                   **conversation(batch)).inputs)
        return [float(x) for x in next(iter(gates.values()))]

    return generate_fn, (gate_fn if steerer is not None else None)


def run_eval(loaded: LoadedRecipe, session, bundle, *, out_dir: Optional[Path] = None, vanilla: Any = None,
             progress: bool = True, title: Optional[str] = None) -> dict:
    """Evaluate vanilla (or reuse a given EvalResult) and steered; write JSON, markdown and PNGs.
    ``bundle``: one Bundle, or a list of them applied together (steerkit.compose)."""
    from .evaluate import evaluate, write_report
    from .compose_pipeline import plan_for_bundles
    from .runtime_nnsight import steer

    spec = loaded.recipe.eval
    splits = list(dict.fromkeys(list(spec.splits) + ["refusal"]))
    items = eval_items_for(loaded, splits)
    gen_v, _ = make_fns(session)
    if vanilla is None:
        vanilla = evaluate(items, gen_v, batch_size=spec.batch_size, progress=progress)
    plan = plan_for_bundles(loaded, session, bundle if isinstance(bundle, (list, tuple)) else [bundle])
    with steer(session.model, plan, session.image_token_id, remote=session.remote) as steerer:
        gen_s, gate_fn = make_fns(session, steerer)
        steered = evaluate(items, gen_s, batch_size=spec.batch_size, progress=progress, gate_fn=gate_fn)
    if steered.has_gate:  # the calibration's retain_open_rate promise, measured on this evaluation
        from .gate_report import retain_open_report

        steered.meta["retain_open"] = retain_open_report(steered, loaded.recipe, bundle)
    results = {"vanilla": vanilla, "steered": steered}
    out = Path(out_dir) if out_dir else loaded.resolve(spec.out)
    paths = write_report(out, results, title=title or f"{loaded.recipe.name}: vanilla vs steered")
    return {"results": results, "paths": paths, "plan": plan}
