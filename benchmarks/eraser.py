"""Issue #4 acceptance figures: MLLMEraser (steerkit's recipe and the published configuration) on the
embedded default models, per forget ratio and world seed, in the nesting of results/vanilla.json.

Each (variant, model, ratio, seed) runs in its own subprocess, so the pipeline's wall time (bundle
extraction: directions + activations + gate fit, then the strength search on Val_Set) and its peak
resident memory are measured alone. Evaluation (greedy, every split) is timed separately.

  python benchmarks/eraser.py                         # llava + qwen2_5_vl, forget 5/10/15, seed 0
  python benchmarks/eraser.py --models llava --seeds 0,1 --ratios 10
  python benchmarks/eraser.py --variants steerkit,paper

Runs are merged into results/eraser.json (a rerun replaces only the cells it measured); the fit
benchmark's figures (results/gate_fit.json) are folded in under "gate_fit" when present.
A world seed other than 0 trains that seed's embedded model first (tens of minutes on CPU, cached).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from steerkit.evaluate.report import atomic_write_text  # noqa: E402


def nested(flat: dict) -> dict:
    """{"forget/classification/vqa": 90.0, ".../refusal_rate": 0.0} -> split/task/modality/{metric}."""
    out: dict = {}
    for key, value in flat.items():
        parts = key.split("/")
        split, task, mod = parts[:3]
        metric = parts[3] if len(parts) > 3 else ("rougeL" if task == "generation" else
                                                    "refusal_rate" if task == "refusal" else "accuracy")
        out.setdefault(split, {}).setdefault(task, {}).setdefault(mod, {})[metric] = value
    return out


def run_one_cell(variant: str, model: str, ratio: int, seed: int) -> dict:
    """The pipeline for one cell, in this process (called in a subprocess by main)."""
    import torch

    torch.set_num_threads(int(os.environ.get("STEERKIT_BENCH_THREADS", "2")))
    from mllmeraser import run_one

    from steerkit.recipe import ModelSpec
    from steerkit.session import load_session

    t0 = time.perf_counter()
    session = load_session(ModelSpec(id=f"embedded:{model}", world={"seed": seed}))
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    row, (van, st) = run_one(variant, model, ratio, seed, session, {},
                             lambda m: print(m, file=sys.stderr, flush=True))
    t_total = time.perf_counter() - t0
    if variant == "steerkit" and ratio == 10 and seed == 0:  # the headline cell: figures for the docs
        from steerkit.evaluate.plots import plot_gate_histograms, plot_metric_bars

        results_dir = ROOT / "benchmarks/results"
        plot_metric_bars({"vanilla": van, "steered": st}, results_dir / f"eraser_metrics_{model}.png")
        plot_gate_histograms({"steered": st}, results_dir / f"eraser_gate_{model}.png")
    pipeline = row["seconds"]["extract"] + row["seconds"]["strength_search"]
    return {
        "variant": variant, "lambda": row["lambda"],
        "vanilla": nested(row["vanilla"]), "steered": nested(row["steered"]),
        "pipeline_seconds": {"total": round(pipeline, 1), "extract": row["seconds"]["extract"],
                             "strength_search": row["seconds"]["strength_search"],
                             "evaluation": round(t_total - pipeline, 1), "model_load": round(t_load, 1)},
        "peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "gate": row["gate"], "gate_fit": row["gate_fit"], "pgd": row["pgd"], "passes": row["passes"],
        "strength_search": row["strength_search"], "threads": torch.get_num_threads(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="llava,qwen2_5_vl")
    ap.add_argument("--ratios", default="5,10,15")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--variants", default="steerkit,paper", help="paper runs at forget 10 %% only")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/eraser.json"))
    ap.add_argument("--cell", help=argparse.SUPPRESS)  # variant:model:ratio:seed, run in this process
    ap.add_argument("--render", action="store_true", help="only rewrite eraser.md from eraser.json")
    args = ap.parse_args()
    if args.render:
        _finish(Path(args.out), json.loads(Path(args.out).read_text()))
        return
    if args.cell:
        v, m, r, s = args.cell.split(":")
        print(json.dumps(run_one_cell(v, m, int(r), int(s))))
        return
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    for model in args.models.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            for ratio in (int(r) for r in args.ratios.split(",")):
                for variant in args.variants.split(","):
                    if variant == "paper" and ratio != 10:
                        continue
                    cell = f"{variant}:{model}:{ratio}:{seed}"
                    print(f"== {cell}", file=sys.stderr, flush=True)
                    proc = subprocess.run([sys.executable, __file__, "--cell", cell], capture_output=True, text=True)
                    if proc.returncode != 0:
                        sys.stderr.write(proc.stderr[-3000:])
                        raise SystemExit(f"{cell} failed (exit {proc.returncode})")
                    res = json.loads(proc.stdout.strip().splitlines()[-1])
                    key = f"forget_{ratio}" if seed == 0 else f"forget_{ratio}_seed{seed}"
                    entry = results.setdefault(model, {}).setdefault(key, {})
                    if variant == "steerkit":
                        entry.update({k: v for k, v in res.items() if k != "variant"})
                    else:
                        entry[variant] = {k: res[k] for k in ("lambda", "steered", "gate", "gate_fit",
                                                                "pipeline_seconds", "peak_memory_mb")}
                        entry.setdefault("vanilla", res["vanilla"])
                    _write(out, results)
    _finish(out, results)
    print(f"wrote {out}", file=sys.stderr)


def _finish(out: Path, results: dict) -> None:
    """Fold in the fit benchmark and the seed summary, then write eraser.json and eraser.md."""
    fit = ROOT / "benchmarks/results/gate_fit.json"
    if fit.exists():
        results["gate_fit"] = json.loads(fit.read_text())
    results["seeds"] = seed_summary(results)
    _write(out, results)
    atomic_write_text(out.with_suffix(".md"), render(results))


def _acc(scores: dict, split: str, mod: str) -> float | None:
    return scores.get(split, {}).get("classification", {}).get(mod, {}).get("accuracy")


def _pair(scores: dict, split: str) -> str:
    vals = [_acc(scores, split, m) for m in ("vqa", "qa")]
    return " / ".join("-" if v is None else f"{v:.0f}" for v in vals)


def render(results: dict) -> str:
    """The acceptance table: classification accuracy VQA / QA per cell, vanilla and steered side by side."""
    lines = ["Classification accuracy (%), VQA / QA, greedy, zero-shot; lambda chosen on Val_Set per cell. "
             "steerkit = the shipped embedded recipe; paper = the published configuration.", "",
             "| model | cell | method | lambda | forget | test | retain | utility | privacy refusals | "
             "gate AUC vqa / qa | pipeline s | peak MB |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for model, cells in results.items():
        if not isinstance(cells, dict) or model in ("meta", "gate_fit", "seeds", "provenance"):
            continue
        for key, c in sorted(cells.items()):
            if "vanilla" not in c:
                continue
            ref = lambda sc: " / ".join(f"{sc['refusal']['refusal'][m]['refusal_rate']:.0f}"  # noqa: E731
                                        for m in ("vqa", "qa")) if "refusal" in sc else "-"
            lines.append(f"| {model} | {key} | vanilla | - | {_pair(c['vanilla'], 'forget')} | "
                         f"{_pair(c['vanilla'], 'test')} | {_pair(c['vanilla'], 'retain')} | "
                         f"{_pair(c['vanilla'], 'utility')} | {ref(c['vanilla'])} | - | - | - |")
            others = [(k, v) for k, v in sorted(c.items()) if isinstance(v, dict) and "steered" in v]
            for name, run in [("steerkit", c if "steered" in c else None)] + others:
                if not run:
                    continue
                auc = run.get("gate", {}).get("by_modality", {})
                auc_s = " / ".join(f"{auc.get(m, {}).get('auc', {}).get('forget_vs_retain', float('nan')):.2f}"
                                   for m in ("vqa", "qa"))
                lines.append(f"| {model} | {key} | {name} | {run['lambda']} | {_pair(run['steered'], 'forget')} | "
                             f"{_pair(run['steered'], 'test')} | {_pair(run['steered'], 'retain')} | "
                             f"{_pair(run['steered'], 'utility')} | {ref(run['steered'])} | {auc_s} | "
                             f"{run['pipeline_seconds']['total']} | {run['peak_memory_mb']} |")
    seeds = results.get("seeds")
    if seeds:
        lines += ["", "Over world seeds (forget 10 %, steerkit recipe): mean +- std of classification accuracy.", "",
                  "| model | seeds | split | vanilla VQA | steered VQA | vanilla QA | steered QA |",
                  "|---|---|---|---|---|---|---|"]
        for model, agg in seeds.items():
            for split, cell in agg["splits"].items():
                lines.append(f"| {model} | {agg['seeds']} | {split} | " + " | ".join(
                    f"{cell[k]['mean']:.1f} +- {cell[k]['std']:.1f}" for k in
                    ("vanilla_vqa", "steered_vqa", "vanilla_qa", "steered_qa")) + " |")
    fit = results.get("gate_fit")
    if fit:
        n = fit.get("projected_to_layers", fit["setting"]["layers"])
        lines += ["", f"Null-space gate fit at d = {fit['setting']['d']}, {fit['setting']['forget_rows']} forget / "
                  f"{fit['setting']['retain_rows']} retain rows (benchmarks/gate_fit.py, "
                  f"{fit['setting']['layers']} layers timed): {fit['ours_per_layer_seconds']} s per layer, "
                  f"{fit.get('ours_projected_total_seconds', fit['ours_total_seconds'])} s for {n} layers "
                  f"(target <= 60 s); the naive d x d route {fit['naive_per_layer_seconds']} s per layer "
                  f"(naive / ours {fit['naive_vs_ours_ratio_median']})."]
    return "\n".join(lines) + "\n"


def seed_summary(results: dict) -> dict:
    """Mean and spread over the world seeds measured at forget 10 % (steerkit recipe)."""
    import statistics

    out = {}
    for model, cells in results.items():
        if not isinstance(cells, dict) or model in ("meta", "gate_fit", "seeds", "provenance"):
            continue
        runs = [c for k, c in cells.items() if (k == "forget_10" or k.startswith("forget_10_seed")) and "steered" in c]
        if len(runs) < 2:
            continue
        agg = {}
        for split in ("forget", "test", "retain", "utility"):
            cell = {}
            for which in ("vanilla", "steered"):
                for mod in ("vqa", "qa"):
                    vals = [_acc(r[which], split, mod) for r in runs]
                    cell[f"{which}_{mod}"] = {"mean": statistics.mean(vals), "std": statistics.stdev(vals),
                                              "values": vals}
            agg[split] = cell
        out[model] = {"seeds": len(runs), "splits": agg}
    return out


def _write(out: Path, results: dict) -> None:
    import torch

    results["meta"] = {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
                       "note": "steered = steerkit's recipe (recipes/unlearning/mllmeraser_embedded_<model>.yaml); "
                               "paper = the published configuration; lambda chosen on Val_Set per cell"}
    from benchmarks.provenance import provenance

    results["provenance"] = provenance()
    atomic_write_text(out, json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
