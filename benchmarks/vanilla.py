"""Vanilla scores of the embedded models: every split x modality x task (and the
privacy-refusal split), plus training seconds.

Evaluates each embedded model (trained and cached on first use) on forget / test / retain / utility,
greedy, zero-shot, and writes benchmarks/results/vanilla.json:
{model: {"scores": {split: {task: {modality: {metric: value, "n": n}}}}, "train_seconds": s, ...}}.

  python benchmarks/vanilla.py [--models llava,qwen2_5_vl] [--forget-ratio 10]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    import torch

    from steerkit.data.mllmu import eval_items
    from steerkit.eval_job import make_fns
    from steerkit.evaluate import evaluate
    from steerkit.evaluate.report import atomic_write_text
    from steerkit.models.embedded import ensure_embedded, ensure_world, read_meta
    from steerkit.recipe import ModelSpec
    from steerkit.session import load_session

    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="llava,qwen2_5_vl")
    ap.add_argument("--forget-ratio", type=int, default=10)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/vanilla.json"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    out_path = Path(args.out)
    results = json.loads(out_path.read_text()) if out_path.exists() else {}
    world = ensure_world(0, 100)
    for model in args.models.split(","):
        path = ensure_embedded(model, 0, 100)
        meta = read_meta(path) or {}
        session = load_session(ModelSpec(id=f"embedded:{model}"))
        items = []
        for split in ("forget", "test", "retain", "utility", "refusal"):
            items += eval_items(world, split, args.forget_ratio, seed=0)
        gen, _ = make_fns(session)
        t0 = time.perf_counter()
        res = evaluate(items, gen, batch_size=64, progress=True)
        results[model] = {"scores": res.metrics, "eval_seconds": round(time.perf_counter() - t0, 1),
                          "n_items": len(items), "forget_ratio": args.forget_ratio,
                          "train_seconds": round(meta.get("train_report", {}).get("wall_s", float("nan")), 1),
                          "train_threads": meta.get("threads"), "train_steps": meta.get("train_report", {}).get("steps"),
                          "train_threads_note": "wall time on a shared 2-core machine; see the closing note",
                          "parameters": meta.get("parameters"), "checkpoint": path.name,
                          "date": time.strftime("%Y-%m-%d")}
        from benchmarks.provenance import provenance

        results["provenance"] = provenance()  # beside the models' entries: one record for the file
        atomic_write_text(out_path, json.dumps(results, indent=1))
        print(f"{model}: {len(items)} items in {results[model]['eval_seconds']} s", file=sys.stderr)


if __name__ == "__main__":
    main()
