"""Head to head: vanilla, GA, GA_Diff, KL_Min, NPO and MLLMEraser (paper settings, steerkit's recipe,
ablations) on the same embedded model, data and metrics. Each method runs in its own subprocess so
wall time and peak memory (max RSS of that process) are measured per method.

Writes benchmarks/results/unlearning.json (one entry per method x model x forget ratio, the metrics in
the nesting of vanilla.json), benchmarks/results/unlearning.md and benchmarks/results/unlearning.png
(forgetting vs utility, one point per method).

  python benchmarks/unlearning.py                                   # LLaVA, forget 10 %, every method
  python benchmarks/unlearning.py --models llava,qwen2_5_vl --ratios 5,10,15 --methods ga,npo,steerkit

steerkit's recipe and the paper configuration are read from results/eraser.json when that file has the
cell (run benchmarks/eraser.py first); a rerun replaces only the cells it measures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BASELINES = ("ga", "ga_diff", "kl_min", "npo")
STEERING = ("paper", "steerkit", "no_gate", "no_pgd", "last_token_gate", "text_only_gate", "linear_gate",
            "cosine_text_gate", "all_steps", "layer1", "modality_prototypes")


def run_baseline(method: str, model: str, ratio: int) -> dict:
    from steerkit.unlearn.trainer import run_unlearning
    from steerkit.unlearn.config import load_unlearn_config

    cfg = load_unlearn_config(ROOT / "baselines" / f"{method}.yaml",
                              [f"model.id=embedded:{model}", f"data.forget_ratio={ratio}", "save=false"])
    with tempfile.TemporaryDirectory() as tmp:
        rep = run_unlearning(cfg, progress=False, out_dir=tmp)
    t = rep.train
    return {"metrics": rep.metrics, "vanilla": rep.vanilla_metrics, "seconds": round(t.train_seconds, 2),
            "eval_seconds": round(rep.eval_seconds, 2), "params_changed": t.changed_params,
            "trainable_params": t.trainable_params, "total_params": t.total_params,
            "passes": {"forward": t.forward_passes, "backward": t.backward_passes,
                       "reference_forward": t.reference_forward_passes},
            "selection": f"lr and steps from the validation sweep recorded in baselines/{method}.yaml (swept on "
                         f"embedded llava at forget 10 %; reused as is for {model} at forget {ratio} %)"}


def run_steering(variant_name: str, model: str, ratio: int) -> dict:

    from mllmeraser import run_one  # benchmarks/ is on sys.path when run as a script
    from steerkit.recipe import ModelSpec
    from steerkit.session import load_session

    session = load_session(ModelSpec(id=f"embedded:{model}"))
    n_params = sum(p.numel() for p in session.model.parameters())
    before = {k: v.clone() for k, v in session.model.state_dict().items()}
    row, (van, st) = run_one(variant_name, model, ratio, 0, session, {}, lambda m: print(m, file=sys.stderr))
    changed = sum(int((v != before[k]).sum()) for k, v in session.model.state_dict().items())
    s = row["seconds"]
    return {"metrics": st.metrics, "vanilla": van.metrics, "seconds": round(s["extract"], 2),
            "selection_seconds": round(s["strength_search"], 2), "lambda": row["lambda"],
            "params_changed": changed, "trainable_params": 0, "total_params": n_params,
            "passes": row.get("passes", {}), "gate": row["gate"], "strength_search": row["strength_search"],
            "selection": "lambda from the validation grid (steerkit.strength.search_strength)"}


def from_eraser(method: str, model: str, ratio: int) -> dict | None:
    """steerkit's recipe and the paper configuration as measured by benchmarks/eraser.py (same model, data,
    metrics and subprocess accounting), so they are not extracted twice."""
    path = ROOT / "benchmarks/results/eraser.json"
    if method not in ("steerkit", "paper") or not path.exists():
        return None
    cell = json.loads(path.read_text()).get(model, {}).get(f"forget_{ratio}")
    run = cell if method == "steerkit" else (cell or {}).get("paper")
    if not run or "steered" not in run:
        return None
    sec = run["pipeline_seconds"]
    return {"metrics": run["steered"], "vanilla": cell["vanilla"], "seconds": sec["extract"],
            "selection_seconds": sec["strength_search"], "lambda": run["lambda"], "params_changed": 0,
            "trainable_params": 0, "peak_rss_mb": run["peak_memory_mb"], "passes": cell.get("passes", {})
            if method == "steerkit" else {}, "source": "benchmarks/results/eraser.json",
            "selection": "lambda from the validation grid (steerkit.strength.search_strength)"}


def one(method: str, model: str, ratio: int, out: str) -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("STEERKIT_BENCH_THREADS", "2")))
    t0 = time.perf_counter()
    result = run_baseline(method, model, ratio) if method in BASELINES else run_steering(method, model, ratio)
    result["wall_seconds"] = round(time.perf_counter() - t0, 2)
    Path(out).write_text(json.dumps(result))


def child(method: str, model: str, ratio: int) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        path = f.name
    proc = subprocess.Popen([sys.executable, __file__, "--one", method, model, str(ratio), path],
                            cwd=str(ROOT / "benchmarks"))
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        return {"error": f"exit status {status}"}
    result = json.loads(Path(path).read_text())
    os.unlink(path)
    result["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)  # Linux: KiB
    return result


def pooled_acc(metrics: dict, split: str, modality: str) -> float | None:
    cell = metrics.get(split, {}).get("classification", {}).get(modality)
    return None if cell is None else cell.get("accuracy")


def render(entries: list[dict]) -> str:
    head = ("| method | model | forget % | forget VQA/QA | test VQA/QA | retain VQA/QA | utility VQA/QA | "
            "train/fit s | peak RSS MB | params changed |\n|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for e in entries:
        if "error" in e:
            rows.append(f"| {e['method']} | {e['model']} | {e['forget_ratio']} | failed: {e['error']} |||||||")
            continue
        m = e["metrics"]
        cell = lambda s: "/".join("-" if pooled_acc(m, s, mod) is None else f"{pooled_acc(m, s, mod):.0f}"  # noqa: E731
                                  for mod in ("vqa", "qa"))
        rows.append(f"| {e['method']} | {e['model']} | {e['forget_ratio']} | {cell('forget')} | {cell('test')} | "
                    f"{cell('retain')} | {cell('utility')} | {e['seconds']} | {e['peak_rss_mb']} | "
                    f"{e['params_changed']:,} |")
    return "Classification accuracy (%), greedy, zero-shot.\n\n" + head + "\n" + "\n".join(rows) + "\n"


def plot(entries: list[dict], path: Path) -> None:
    """Forgetting vs utility at forget 10 %, one panel per model; the x axis is zoomed on the region where
    the methods differ, and a method off the left edge (e.g. no gate: 0 % kept) is drawn at the edge."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [e for e in entries if "error" not in e and e["forget_ratio"] == 10]
    models = sorted({e["model"] for e in rows})
    fig = Figure(figsize=(6.5 * max(1, len(models)), 5.5))
    FigureCanvasAgg(fig)
    lo = 80.0
    for i, model in enumerate(models):
        ax = fig.add_subplot(1, len(models), i + 1)
        points: dict = {}  # methods at the same spot share one marker and one label
        for e in (e for e in rows if e["model"] == model):
            m = e["metrics"]
            util = [pooled_acc(m, s, mod) for s in ("retain", "utility") for mod in ("vqa", "qa")]
            forg = [pooled_acc(m, "forget", mod) for mod in ("vqa", "qa")]
            x = sum(v for v in util if v is not None) / max(1, sum(v is not None for v in util))
            y = sum(v for v in forg if v is not None) / max(1, sum(v is not None for v in forg))
            key = (round(x, 1), round(y, 1), e.get("params_changed", 0) > 0)
            points.setdefault(key, []).append(e["method"])
        for (x, y, trained), names in points.items():
            shown = max(x, lo + 0.3)
            ax.scatter(shown, y, s=70, marker="<" if x < lo else ("s" if trained else "o"),
                       color="tab:red" if trained else "tab:blue")
            label = ", ".join(names) + ("" if x >= lo else f" (kept {x:.0f} %)")
            ax.annotate(label, (shown, y), textcoords="offset points", xytext=(6, -3), fontsize=8)
        ax.axhline(25, ls=":", c="grey", lw=1)
        ax.set_xlim(lo, 100.5)
        ax.set_ylim(-3, 103)
        ax.set_xlabel("kept: retain + utility classification accuracy (%)  ->  better")
        ax.set_ylabel("forget classification accuracy (%)  (lower: more forgotten; chance 25)")
        ax.set_title(f"embedded {model}, forget 10 %  (squares: weights changed; dots: steering)", fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", nargs=4, metavar=("METHOD", "MODEL", "RATIO", "OUT"))
    ap.add_argument("--models", default="llava")
    ap.add_argument("--ratios", default="10")
    ap.add_argument("--methods", default=",".join(BASELINES + STEERING))
    ap.add_argument("--render", action="store_true", help="only redraw unlearning.md/png from unlearning.json")
    args = ap.parse_args()
    if args.render:
        results = ROOT / "benchmarks/results"
        entries = json.loads((results / "unlearning.json").read_text())["entries"]
        (results / "unlearning.md").write_text(render(entries))
        plot(entries, results / "unlearning.png")
        return
    if args.one:
        method, model, ratio, out = args.one
        one(method, model, int(ratio), out)
        return
    results = ROOT / "benchmarks/results"
    results.mkdir(parents=True, exist_ok=True)
    previous = results / "unlearning.json"
    # a rerun replaces the cells it measures and keeps the others
    entries = json.loads(previous.read_text()).get("entries", []) if previous.exists() else []
    for model in args.models.split(","):
        for ratio in map(int, args.ratios.split(",")):
            for method in args.methods.split(","):
                print(f"== {method} {model} forget {ratio}", file=sys.stderr, flush=True)
                entries = [e for e in entries if (e["method"], e["model"], e["forget_ratio"]) != (method, model, ratio)]
                entries.append({"method": method, "model": model, "forget_ratio": ratio,
                                **(from_eraser(method, model, ratio) or child(method, model, ratio))})
                vanilla = next((e["vanilla"] for e in entries if e.get("vanilla")), None)
                from benchmarks.provenance import provenance

                data = {"entries": entries, "date": time.strftime("%Y-%m-%d"),
                        "vanilla": vanilla, "provenance": provenance()}
                tmp = results / "unlearning.json.tmp"
                tmp.write_text(json.dumps(data, indent=1))
                os.replace(tmp, results / "unlearning.json")
                (results / "unlearning.md").write_text(render(entries))
    plot(entries, results / "unlearning.png")
    print(render(entries))


if __name__ == "__main__":
    main()
