"""MLLMEraser on the embedded default: the published configuration vs steerkit's recipe, ablations,
forget 5/10/15 % and a second world seed. Writes benchmarks/results/mllmeraser.{json,md}.

Every strength is chosen on the validation split, never on test: by the recipe's steer.strength.search
(during extract) or, for recipes with a fixed lambda, by steerkit.strength.search_strength (same rule).
Usage:
  python benchmarks/mllmeraser.py                 # the full grid (tens of minutes on 2 cores)
  python benchmarks/mllmeraser.py --quick         # forget 10 %, seed 0, LLaVA only
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from steerkit.eval_job import eval_items_for, make_fns  # noqa: E402
from steerkit.evaluate import evaluate  # noqa: E402
from steerkit.evaluate.metrics import pooled  # noqa: E402
from steerkit.evaluate.report import gate_diagnostics, markdown_report  # noqa: E402
from steerkit.extraction import extract  # noqa: E402
from steerkit.pipeline import plan_for  # noqa: E402
from steerkit.recipe import LoadedRecipe, parse_recipe_text, recipe_to_yaml  # noqa: E402
from steerkit.runtime_nnsight import steer  # noqa: E402
from steerkit.session import load_session  # noqa: E402
from steerkit.sources import world_root  # noqa: E402
from steerkit.strength import search_strength  # noqa: E402
from steerkit.yamlio import read_yaml  # noqa: E402

RECIPES = ROOT / "recipes"
VARIANTS = {
    "paper": "unlearning/paper_embedded_llava.yaml",
    "steerkit": "unlearning/mllmeraser_embedded_llava.yaml",
    "no_gate": "ablations/no_gate_embedded_llava.yaml",
    "no_pgd": "ablations/no_pgd_embedded_llava.yaml",
    "last_token_gate": "ablations/last_token_gate_embedded_llava.yaml",
    "text_only_gate": "ablations/text_only_gate_embedded_llava.yaml",
    "linear_gate": "ablations/linear_gate_embedded_llava.yaml",
    "cosine_text_gate": "ablations/cosine_text_gate_embedded_llava.yaml",
    "all_steps": "ablations/all_steps_embedded_llava.yaml",
    "layer1": "ablations/layer1_embedded_llava.yaml",
    "modality_prototypes": "ablations/modality_prototypes_embedded_llava.yaml",
}


def _retarget(node, ratio: int):
    if isinstance(node, dict):
        return {k: (ratio if k == "forget_ratio" else _retarget(v, ratio)) for k, v in node.items()}
    if isinstance(node, list):
        return [_retarget(v, ratio) for v in node]
    return node


def variant(name: str, model: str, ratio: int, seed: int) -> LoadedRecipe:
    path = RECIPES / VARIANTS[name]
    data = _retarget(read_yaml(path).data, ratio)
    data["model"]["id"] = f"embedded:{model}"
    data["model"]["world"]["seed"] = seed
    data.pop("bundle", None)
    if data.get("direction") is None and data.get("bundle") is None:
        raise SystemExit(f"{name}: needs a direction")
    text = recipe_to_yaml(parse_recipe_text(__import__("yaml").safe_dump(data)).recipe)
    loaded = parse_recipe_text(text, f"{name}[{model},f{ratio},s{seed}]")
    loaded.base_dir = path.parent
    return loaded


def headline(result) -> dict:
    out = {}
    for split, tasks in result.metrics.items():
        for task, cells in tasks.items():
            for mod, cell in cells.items():
                metric = "rougeL" if task == "generation" else ("refusal_rate" if task == "refusal" else "accuracy")
                out[f"{split}/{task}/{mod}"] = cell.get(metric)
                if task != "refusal":
                    out[f"{split}/{task}/{mod}/refusal_rate"] = cell.get("refusal_rate")
    return out


def run_one(name, model, ratio, seed, session, vanilla_cache, log):
    loaded = variant(name, model, ratio, seed)
    t0 = time.perf_counter()
    bundle = extract(loaded, session, progress=False)
    t_extract = time.perf_counter() - t0
    plan = plan_for(loaded, session, bundle)
    if bundle.manifest.strength:  # the recipe calibrated itself during extract (steer.strength.search)
        s = bundle.manifest.strength
        search = {**s, "chosen": s["lambda"], "n_items": s["n_forget"] + s["n_retain"]}
        t_search = s["seconds"]
        t_extract -= t_search
    else:  # recipes with a fixed lambda: the same rule and proxy on Val_Set
        t0 = time.perf_counter()
        search = search_strength(session, plan, world_root(loaded.recipe.model.world), forget_ratio=ratio,
                                 seed=seed)
        t_search = time.perf_counter() - t0
    import dataclasses

    plan = dataclasses.replace(plan, writes=tuple(dataclasses.replace(w, strength=float(search["chosen"]))
                                                  for w in plan.writes))
    items = eval_items_for(loaded, ["forget", "test", "retain", "utility", "refusal"])
    key = (model, ratio, seed)
    if key not in vanilla_cache:
        gen, _ = make_fns(session)
        vanilla_cache[key] = evaluate(items, gen, batch_size=64, progress=False)
    with steer(session.model, plan, session.image_token_id) as st:
        gen, gate_fn = make_fns(session, st)
        steered = evaluate(items, gen, batch_size=64, progress=False, gate_fn=gate_fn)
    log(f"{name:<16} {model:<11} f{ratio:<3} s{seed}  lambda={search['chosen']:<6} "
        f"forget cls {pooled(steered.metrics['forget']['classification'], 'accuracy'):.1f}  "
        f"retain cls {pooled(steered.metrics['retain']['classification'], 'accuracy'):.1f}")
    m = bundle.manifest
    d, g = m.direction, m.gate
    pgd = d.get("pgd") or {}
    fwd = d.get("recall", {}).get("n", 0) + d.get("erasure", {}).get("n", 0) + g.get("n_forget", 0) + \
        g.get("n_retain_fit", 0) + g.get("n_retain_heldout", 0)
    passes = {"forward": fwd + pgd.get("n", 0) * (pgd.get("steps", 0) + 2),
              "backward": pgd.get("n", 0) * pgd.get("steps", 0),
              "selection_forward_prefills": search["n_items"] * (len(search["grid"]) + 1)}
    return {"variant": name, "passes": passes, "model": model, "forget_ratio": ratio, "seed": seed, "lambda": search["chosen"],
            "strength_search": search, "seconds": {"extract": round(t_extract, 2), "strength_search":
                                                   round(t_search, 2)},
            "gate_fit": bundle.manifest.gate.get("fit"), "pgd": bundle.manifest.direction.get("pgd"),
            "vanilla": headline(vanilla_cache[key]), "steered": headline(steered),
            "gate": gate_diagnostics(steered)}, (vanilla_cache[key], steered)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--variants", default="", help="comma-separated subset of the recipe variants")
    ap.add_argument("--models", default="llava,qwen2_5_vl")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/mllmeraser.json"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    models = ["llava"] if args.quick else args.models.split(",")
    grid = []
    for model in models:
        grid += [(v, model, 10, 0) for v in (args.variants.split(",") if args.variants else
                                             ["paper", "steerkit"] if args.quick else VARIANTS)]
        if not args.quick:
            grid += [("steerkit", model, r, 0) for r in (5, 15)]
            grid += [("paper", model, 10, 1), ("steerkit", model, 10, 1)]
    runs, sessions, vanilla_cache, md = [], {}, {}, []
    for name, model, ratio, seed in grid:
        if (model, seed) not in sessions:
            from steerkit.recipe import ModelSpec

            sessions[(model, seed)] = load_session(ModelSpec(id=f"embedded:{model}", world={"seed": seed}))
        row, (van, st) = run_one(name, model, ratio, seed, sessions[(model, seed)], vanilla_cache, log)
        runs.append(row)
        if ratio == 10 and seed == 0:
            md.append(markdown_report({"vanilla": van, name: st}, f"{name} on embedded {model}, forget 10 %"))
    from benchmarks.provenance import provenance

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"runs": runs, "torch": torch.__version__, "threads": torch.get_num_threads(),
                               "date": time.strftime("%Y-%m-%d"), "provenance": provenance()}, indent=1))
    os.replace(tmp, out)
    (out.with_suffix(".md")).write_text("\n\n".join(md))
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
