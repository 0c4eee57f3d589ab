"""Choose the steering strength (lambda) per model on validation questions, never on the test set.

A recipe asks for it with ``steer.strength.search`` (docs: calibration.md); ``extract`` runs the search
after fitting and stores the choice and the whole scored grid in the bundle manifest (``strength``), so
``apply`` and ``eval`` steer with it and ``inspect`` shows how it was chosen. One lambda serves every
task: a deployed system cannot know which task a prompt belongs to (the paper tuned one per task).

Rule: every grid value is scored on the forget questions (people to forget, held out of every fit) and
the retain questions (people to keep) with a continuous proxy, the mean probability of the correct
answer in percent (``steerkit.answer_scores``). Among strengths that keep retain within
``max_retain_drop`` points of the unsteered model, choose the one that forgets most (or, with
``forget_target``, the weakest that reaches the target); equal scores go to the smaller |lambda|. When
no strength keeps retain within budget, the least harmful one is chosen and the table says so.

This module imports no model stack at import time (``inspect`` renders tables through it).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Any, Optional, Sequence

DEFAULT_GRID = (-0.5, -1.0, -2.0, -4.0)  # the benchmark's grid (search_strength)


# ----------------------------------------------------------------------------------------- questions
def questions(loaded: Any, sources: Sequence[Any], side: str) -> list:
    """Validation questions with known answers from recipe data sources.

    ``mllmu``/``world`` sources with a ``split`` give scored questions (classification ones as multiple
    choice, generation and cloze ones free-form); ``jsonl`` sources and world contrast files give
    free-form questions from each row's ``target``, which every row must then have."""
    from .answer_scores import Question
    from .errors import DataError, Problem
    from .sources import load_eval_items, load_source

    r = loaded.recipe
    out: list = []
    for i, src in enumerate(sources):
        key = f"steer.strength.search.{side}.{i}"
        if getattr(src, "split", None) is not None:
            if src.split == "refusal":
                raise DataError("refusal prompts have no correct answer to score", [Problem(
                    "split 'refusal' cannot calibrate a strength", str(loaded.path), None, None, f"{key}.split",
                    "use val_forget / val_retain (or forget / retain) questions", "SK651")])
            scored = load_eval_items(src, loaded.resolve, r.model.world, seed=r.seed)
            out += [Question(it.prompt, it.image, it.answer, it.options if it.task == "classification" else None,
                             it.id) for it in scored]
            continue
        items = load_source(src, loaded.resolve, r.model.world, seed=r.seed)
        missing = [it.source or str(n) for n, it in enumerate(items) if not (it.target or "").strip()]
        if missing:
            raise DataError("calibration questions need a known answer", [Problem(
                f"{len(missing)} of {len(items)} rows have no 'target' (first: {missing[0]})", str(loaded.path),
                None, None, key, "give every row a 'target' (the correct answer), or use a split of "
                "questions (kind: mllmu / world with split)", "SK650")])
        out += [Question(it.prompt, it.image, it.target or "", None, it.id) for it in items]
    return out


# ----------------------------------------------------------------------------------------- scoring
def _side_scores(scored: list) -> dict:
    probs = [p for p, _ in scored]
    tops = [t for _, t in scored if t is not None]
    return {"answer_prob": round(100.0 * sum(probs) / max(1, len(probs)), 4),
            "top1_accuracy": round(100.0 * sum(tops) / len(tops), 4) if tops else None}


def _score(session, steerer, forget: list, retain: list, batch_size: int) -> dict:
    from .answer_scores import score_questions

    return {"forget": _side_scores(score_questions(session, steerer, forget, batch_size)),
            "retain": _side_scores(score_questions(session, steerer, retain, batch_size))}


def _key(scores: dict, side: str, metric: str) -> tuple:
    """What is compared: the metric, with answer_prob breaking top1_accuracy's ties."""
    s = scores[side]
    if metric == "top1_accuracy" and s["top1_accuracy"] is not None:
        return (s["top1_accuracy"], s["answer_prob"])
    return (s["answer_prob"],)


def choose(vanilla: dict, rows: list[dict], metric: str, max_retain_drop: float,
           forget_target: Optional[float], plateau: float = 0.0) -> tuple[dict, bool]:
    """The chosen grid row and whether it keeps retain within budget (pure; rows as ``search`` makes).

    ``plateau``: forget scores within this many points of the lowest allowed one are equal, and the
    weakest such strength wins (measured on six independently trained LLaVA models: the forget proxy
    keeps falling by hundredths of a point up to the grid's end, so the strongest lambda won while the
    retain people the validation split does not hold paid for it; benchmarks/results/robustness.md)."""
    base = _key(vanilla, "retain", metric)[0]
    for r in rows:
        r["retain_drop"] = round(base - _key(r, "retain", metric)[0], 4)
        r["within_budget"] = r["retain_drop"] <= max_retain_drop + 1e-9
    ok = [r for r in rows if r["within_budget"]]
    if not ok:
        return min(rows, key=lambda r: (r["retain_drop"], abs(r["lambda"]))), False
    if forget_target is not None:
        reach = [r for r in ok if _key(r, "forget", metric)[0] <= forget_target]
        if reach:
            return min(reach, key=lambda r: (abs(r["lambda"]), _key(r, "forget", metric))), True
    if plateau <= 0:
        return min(ok, key=lambda r: (_key(r, "forget", metric), abs(r["lambda"]))), True
    best = min(_key(r, "forget", metric)[0] for r in ok)
    near = [r for r in ok if _key(r, "forget", metric)[0] <= best + plateau + 1e-9]
    return min(near, key=lambda r: (abs(r["lambda"]), _key(r, "forget", metric))), True


def _with_strength(plan, lam: float):
    return dataclasses.replace(plan, writes=tuple(dataclasses.replace(w, strength=float(lam)) for w in plan.writes))


def search(session, plan, forget: list, retain: list, *, grid: Sequence[float], metric: str = "answer_prob",
           max_retain_drop: float = 3.0, forget_target: Optional[float] = None, plateau: float = 0.0,
           batch_size: int = 32, log=None) -> dict:
    """Score the unsteered model and every grid strength; return the table and the choice (JSON-ready)."""
    from .runtime_nnsight import steer

    t0 = time.perf_counter()
    vanilla = _score(session, None, forget, retain, batch_size)
    rows = []
    for lam in grid:
        with steer(session.model, _with_strength(plan, lam), session.image_token_id) as st:
            rows.append({"lambda": float(lam), **_score(session, st, forget, retain, batch_size)})
        if log:
            log(f"strength search: lambda {lam:g}: forget {rows[-1]['forget'][metric]}, "
                f"retain {rows[-1]['retain'][metric]} ({metric})")
    best, within = choose(vanilla, rows, metric, max_retain_drop, forget_target, plateau)
    goal = (f"the weakest strength with forget {metric} <= {forget_target}, else the lowest forget"
            if forget_target is not None else f"the weakest strength within {plateau:g} points of the lowest "
                                              f"forget {metric}")
    return {"lambda": best["lambda"], "within_budget": within, "metric": metric,
            "criterion": f"{goal} among strengths keeping retain {metric} >= unsteered - {max_retain_drop} "
                         "points; ties to the smaller |lambda|" + ("" if within else
                                                                  "; NONE kept retain within budget: the "
                                                                  "smallest retain drop was chosen"),
            "max_retain_drop": max_retain_drop, "forget_target": forget_target, "plateau": plateau,
            "vanilla": vanilla,
            "grid": rows, "n_forget": len(forget), "n_retain": len(retain),
            "n_forget_choice": sum(q.choice for q in forget), "n_retain_choice": sum(q.choice for q in retain),
            "seconds": round(time.perf_counter() - t0, 2)}


# ----------------------------------------------------------------------------------------- recipe level
def calibration_questions(loaded: Any) -> tuple[list, list]:
    """The forget and retain questions of the recipe's ``steer.strength.search``."""
    spec = loaded.recipe.steer.strength.search
    return questions(loaded, spec.forget, "forget"), questions(loaded, spec.retain, "retain")


def calibrate(loaded: Any, session, bundle, qs: Optional[tuple[list, list]] = None, *, progress: bool = True):
    """Run the recipe's ``steer.strength.search`` on a freshly extracted bundle; return the bundle with
    ``manifest.strength`` (and the calibration data's hashes in ``manifest.data``) filled in. ``qs``: the
    questions when already read (``calibration_questions``)."""
    from .bundle import Bundle, BundleManifest
    from .compile import compile_recipe
    from .extraction import _data_hash
    from .recipe import Recipe
    from .sources import source_path

    recipe = loaded.recipe
    spec = recipe.steer.strength.search
    log = (lambda m: print(m, file=sys.stderr, flush=True)) if progress else None  # noqa: E731
    doc = recipe.dump()
    doc["steer"]["strength"] = {"lambda": 1.0}  # the grid replaces it; compile only needs some value
    plan = compile_recipe(Recipe.model_validate(doc), session.adapter, bundle, dims=session.dims,
                          architecture=session.architecture)
    forget, retain = qs if qs is not None else calibration_questions(loaded)
    if log:
        log(f"strength search: {len(spec.grid)} strengths on {len(forget)} forget and {len(retain)} retain "
            "questions")
    result = search(session, plan, forget, retain, grid=spec.grid, metric=spec.metric,
                    max_retain_drop=spec.max_retain_drop, forget_target=spec.forget_target,
                    plateau=spec.plateau, batch_size=spec.batch_size, log=log)
    data = {k: v.model_dump() for k, v in bundle.manifest.data.items()}
    for side in ("forget", "retain"):
        for i, src in enumerate(getattr(spec, side)):
            data[f"strength_{side}_{i}"] = _data_hash(source_path(src, loaded.resolve, recipe.model.world))
    manifest = BundleManifest.model_validate({**bundle.manifest.model_dump(), "strength": result, "data": data})
    if log:
        for line in render_table(result):
            log(line)
    return Bundle(bundle.tensors, manifest, bundle.source)


def strength_note(loaded: Any, bundle: Any, *, info: bool = True) -> Optional[str]:
    """One line saying which lambda runs when the recipe and the bundle could disagree (None otherwise);
    ``info=False`` leaves out the plain "steering with the calibrated lambda" line (warnings only)."""
    spec = loaded.recipe.steer.strength
    calibrated = getattr(getattr(bundle, "manifest", None), "strength", None) if bundle is not None else None
    if spec.lambda_ is not None and calibrated:
        return (f"steer.strength.lambda={spec.lambda_:g} overrides the calibrated lambda "
                f"{calibrated['lambda']:g} stored in the bundle")
    if spec.lambda_ is None and calibrated and info:
        return f"steering with the calibrated lambda {calibrated['lambda']:g} (steer.strength.search, in the bundle)"
    if spec.lambda_ is None and bundle is None:
        return ("steer.strength.lambda is calibrated at extract (steer.strength.search); until then the plan "
                "shows lambda=0")
    return None


def render_table(result: dict) -> list[str]:
    """The search table as text lines (``extract`` and ``inspect`` print it); a table that is not in the
    shape ``search`` writes (a hand-edited or hostile bundle) is named, not rendered."""
    try:
        return _table(result)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return [f"strength: lambda {result.get('lambda')!r}; the search table is unreadable "
                f"({type(exc).__name__}: {exc})"[:200]]


def _table(result: dict) -> list[str]:
    m = result.get("metric", "answer_prob")
    other = "top1_accuracy" if m == "answer_prob" else "answer_prob"

    def cells(scores: dict) -> str:
        f, r = scores["forget"], scores["retain"]
        fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        return f"{fmt(f[m]):>8} {fmt(r[m]):>8} {fmt(f.get(other)):>8} {fmt(r.get(other)):>8}"

    lines = [f"strength: lambda {result['lambda']:g}, {result['criterion']}",
             f"  {'lambda':>8} {'forget':>8} {'retain':>8} {'forget*':>8} {'retain*':>8}  (* = {other})",
             f"  {'none':>8} {cells(result['vanilla'])}"]
    for row in result["grid"]:
        mark = "  <- chosen" if row["lambda"] == result["lambda"] else (
            "" if row.get("within_budget", True) else "  (retain over budget)")
        lines.append(f"  {row['lambda']:>8g} {cells(row)}{mark}")
    lines.append(f"  on {result['n_forget']} forget and {result['n_retain']} retain questions ({m} in percent)")
    return lines


# ----------------------------------------------------------------------------------------- benchmark entry
def search_strength(session, plan, root, *, forget_ratio: int = 10, seed: int = 0,
                    grid: Sequence[float] = DEFAULT_GRID, max_retain_drop: float = 3.0,
                    batch_size: int = 64, limit_retain_people: int = 20, progress: bool = False) -> dict:
    """The search on an MLLMU-layout folder's Val_Set classification questions (val_forget / val_retain),
    for benchmarks that steer recipes without ``steer.strength.search``. Same rule and proxy as recipes."""
    from .answer_scores import Question
    from .data.mllmu import eval_items

    def qs(split: str) -> list:
        items = eval_items(root, split, forget_ratio, ["classification"], seed=seed)
        if split == "val_retain":  # bound the cost; whole people, not rows
            people = set(sorted({i.id for i in items})[:limit_retain_people])
            items = [i for i in items if i.id in people]
        return [Question(i.prompt, i.image, i.answer, i.options, i.id) for i in items]

    forget, retain = qs("val_forget"), qs("val_retain")
    log = (lambda m: print(m, file=sys.stderr, flush=True)) if progress else None  # noqa: E731
    result = search(session, plan, forget, retain, grid=grid, max_retain_drop=max_retain_drop,
                    batch_size=batch_size, log=log)
    return {**result, "chosen": result["lambda"], "n_items": len(forget) + len(retain)}
