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
    row, _ = run_one(variant, model, ratio, seed, session, {}, lambda m: print(m, file=sys.stderr, flush=True))
    t_total = time.perf_counter() - t0
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
    args = ap.parse_args()
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
    fit = ROOT / "benchmarks/results/gate_fit.json"
    if fit.exists():
        results["gate_fit"] = json.loads(fit.read_text())
    _write(out, results)
    print(f"wrote {out}", file=sys.stderr)


def _write(out: Path, results: dict) -> None:
    import torch

    results["meta"] = {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
                       "note": "steered = steerkit's recipe (recipes/unlearning/mllmeraser_embedded_<model>.yaml); "
                               "paper = the published configuration; lambda chosen on Val_Set per cell"}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1))
    os.replace(tmp, out)


if __name__ == "__main__":
    main()
