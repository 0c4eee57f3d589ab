"""Peak memory of extraction with pooled activations in memory vs streamed to disk (#6).

The worst case of docs/memory.md, scaled down to run on two cores: a gate fitted at every steered layer
(no ``gate.layer``), so every gate row is read at every layer. The model is a LLaVA built from real config
classes with a wide, shallow-MLP Llama decoder (hidden 512 x 32 layers, random weights: extraction cost
and memory do not depend on what the weights know), and the data are short text prompts about synthetic
people (jsonl, with person ids so the gate's held-out split is by person).

Each mode runs ``steerkit.extraction`` in its own fresh process on the same saved checkpoint and recipe. The
process loads the model, resets its peak-RSS counter (/proc/self/clear_refs), extracts, and reports the
peak RSS above the post-load level: what extraction itself holds. Both bundles must be bit-identical.

Each mode runs twice: with glibc's default allocator settings, and with a fixed mmap threshold
(``MALLOC_MMAP_THRESHOLD_=65536``). By default glibc raises its mmap threshold after large frees, so
the forward passes' temporaries then come from a heap that does not shrink; at this small width that
growth (hundreds of MiB, varying from run to run) is as large as the activations themselves.

A second part measures the activation store alone at LLaVA-1.5-7B's shape (the published per-layer gate
of docs/memory.md: 7,000 rows x 30 layers x d 4,096, random rows, no model): rows are added in batches of
16 and read back one layer at a time, each mode in a fresh process, peak RSS above the level before.

    python benchmarks/extract_memory.py            # writes benchmarks/results/extract_memory.{json,md}
    python benchmarks/extract_memory.py --retain 2000 --layers 16    # a quicker look
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from steerkit.evaluate.report import atomic_write_text  # noqa: E402

RESULTS = Path(__file__).parent / "results"
MiB = 2**20


def build_checkpoint(out: Path, hidden: int, layers: int) -> None:
    from steerkit.models.zoo import build_llava, save_tiny

    save_tiny(build_llava(hidden_size=hidden, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4,
                          num_key_value_heads=1), out)


QUESTIONS = ["Where was {p} born?", "What does {p} do for a living?", "Which city does {p} live in?",
             "What is the hobby of {p}?", "How old is {p}?", "What did {p} study?", "Who is {p} married to?"]


def write_data(root: Path, contrast: int, forget: int, retain: int) -> None:
    def rows(prefix: str, n: int, start: int = 0):
        return [{"id": f"{prefix}{(start + i) // len(QUESTIONS)}",
                 "prompt": QUESTIONS[i % len(QUESTIONS)].format(p=f"{prefix} {(start + i) // len(QUESTIONS)}")}
                for i in range(n)]

    refusals = [{**r, "prompt": "Refuse to share private facts. " + r["prompt"]} for r in rows("Ana Person", contrast)]
    for name, data in {"recall": rows("Ana Person", contrast), "erasure": refusals,
                       "forget": rows("Forget Person", forget), "retain": rows("Retain Person", retain)}.items():
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data))


RECIPE = """schema_version: 1
name: extract-memory
model: {{id: model}}
direction:
  method: mean_diff
  recall: {{source: {{kind: jsonl, path: recall.jsonl}}}}
  erasure: {{source: {{kind: jsonl, path: erasure.jsonl}}}}
gate:
  rule: ridge_linear
  forget: [{{kind: jsonl, path: forget.jsonl}}]
  retain: [{{kind: jsonl, path: retain.jsonl}}]
  read: {{positions: all_prompt, pool: mean}}
steer: {{layers: {{start: 0, stop: {layers}}}, strength: {{lambda: -1.0}}}}
"""


def _status(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024


def _reset_peak() -> int:
    """Set the peak-RSS counter to the current RSS (Linux) and return that RSS in bytes."""
    base = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    return base


def child(workdir: Path, mode: str, threads: int) -> dict:
    """One extraction in this (fresh) process; peak RSS above the level after loading the model."""
    torch.set_num_threads(threads)
    from steerkit.extraction import extract
    from steerkit.recipe import load_recipe
    from steerkit.session import load_session

    loaded = load_recipe(workdir / "recipe.yaml", [])
    session = load_session(loaded.recipe.model, loaded.base_dir)
    import gc

    gc.collect()
    base = _reset_peak()
    t0 = time.perf_counter()
    bundle = extract(loaded, session, progress=False, activations=mode, spill_dir=workdir / "spill")
    wall = time.perf_counter() - t0
    peak = _status("VmHWM")
    return {"mode": mode, "peak_above_loaded_mib": round((peak - base) / MiB, 1), "loaded_rss_mib": round(base / MiB, 1),
            "wall_s": round(wall, 1), "tensors_sha256": bundle.manifest.tensors_sha256,
            "spill_left_behind": sorted(p.name for p in (workdir / "spill").glob("*")) if (workdir / "spill").exists()
            else []}


def store_child(mode: str, rows: int, layers: int, d: int, spill: Path) -> dict:
    """The activation store alone at a given shape: add batches, read each layer back once."""
    from steerkit.activation_store import ActivationStore

    gen = torch.Generator().manual_seed(0)
    base = _reset_peak()
    t0 = time.perf_counter()
    checksum = 0.0
    with ActivationStore(mode, spill_dir=spill) as store:
        sink = store.sink("gate retain", rows, range(layers), d)
        for start in range(0, rows, 16):
            at = torch.arange(start, min(rows, start + 16))
            for layer in range(layers):
                sink.add(layer, torch.randn(len(at), d, generator=gen), at)
        held = sink.finish()
        for layer in range(layers):
            checksum += float(held[layer][:, 0].sum())  # one layer at a time, as the fits read them
        del held
    return {"mode": mode, "peak_above_start_mib": round((_status("VmHWM") - base) / MiB, 1),
            "wall_s": round(time.perf_counter() - t0, 1), "checksum": round(checksum, 3)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--contrast", type=int, default=300, help="recall and erasure rows each")
    ap.add_argument("--forget", type=int, default=700)
    ap.add_argument("--retain", type=int, default=4200)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("STEERKIT_BENCH_THREADS", "2")))
    ap.add_argument("--out", type=Path, default=RESULTS / "extract_memory.json")
    ap.add_argument("--scale", type=int, nargs=3, default=[7000, 30, 4096], metavar=("ROWS", "LAYERS", "D"),
                    help="shape of the store-only part (default: LLaVA-1.5-7B's per-layer gate)")
    ap.add_argument("--child", choices=["memory", "disk"], help=argparse.SUPPRESS)
    ap.add_argument("--store-child", choices=["memory", "disk"], help=argparse.SUPPRESS)
    ap.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.workdir, args.child, args.threads)))
        return {}
    if args.store_child:
        print(json.dumps(store_child(args.store_child, *args.scale, args.workdir)))
        return {}

    with tempfile.TemporaryDirectory(prefix="steerkit-extract-memory-") as tmp:
        work = Path(tmp)
        build_checkpoint(work / "model", args.hidden, args.layers)
        write_data(work, args.contrast, args.forget, args.retain)
        (work / "recipe.yaml").write_text(RECIPE.format(layers=args.layers))
        runs = {}
        for allocator, env in (("default", {}), ("fixed_mmap_threshold", {"MALLOC_MMAP_THRESHOLD_": "65536"})):
            for mode in ("memory", "disk"):
                proc = subprocess.run([sys.executable, __file__, "--child", mode, "--workdir", str(work),
                                       "--threads", str(args.threads)], capture_output=True, text=True,
                                      env={**os.environ, **env})
                if proc.returncode != 0:
                    raise SystemExit(f"{mode} run failed:\n{proc.stderr[-3000:]}")
                key = mode if allocator == "default" else f"{mode}_{allocator}"
                runs[key] = json.loads(proc.stdout.strip().splitlines()[-1])
                print(key, runs[key], flush=True)
        store_runs = {}
        for mode in ("memory", "disk"):
            proc = subprocess.run([sys.executable, __file__, "--store-child", mode, "--workdir", str(work / "spill"),
                                   "--scale", *map(str, args.scale)], capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"store {mode} run failed:\n{proc.stderr[-3000:]}")
            store_runs[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
            print("store", mode, store_runs[mode], flush=True)

    d, L = args.hidden, args.layers
    contrast_rows, gate_rows = 2 * args.contrast, args.forget + args.retain
    predicted = {  # pooled float32 rows held at once (docs/memory.md)
        "memory_gate_all_layers_mib": round(gate_rows * L * d * 4 / MiB, 1),
        "memory_contrast_all_layers_mib": round(contrast_rows * L * d * 4 / MiB, 1),
        "disk_gate_one_layer_mib": round(gate_rows * d * 4 / MiB, 1)}
    result = {
        "date": dt.date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "threads": args.threads,
        "setup": {"model": f"LLaVA, Llama decoder hidden {d} x {L} layers (MLP 128), random weights",
                  "gate": f"ridge_linear at every steered layer (all {L} read), mean over the prompt",
                  "rows": {"recall": args.contrast, "erasure": args.contrast, "forget": args.forget,
                           "retain": args.retain}},
        "runs": runs, "predicted": predicted,
        "peak_ratio_disk_over_memory": round(runs["disk"]["peak_above_loaded_mib"]
                                             / max(runs["memory"]["peak_above_loaded_mib"], 1e-9), 3),
        "wall_ratio_disk_over_memory": round(runs["disk"]["wall_s"] / runs["memory"]["wall_s"], 3),
        "peak_ratio_disk_over_memory_fixed_mmap_threshold": round(
            runs["disk_fixed_mmap_threshold"]["peak_above_loaded_mib"]
            / max(runs["memory_fixed_mmap_threshold"]["peak_above_loaded_mib"], 1e-9), 3),
        "same_bundle": len({r["tensors_sha256"] for r in runs.values()}) == 1,
        "store_only": {"shape": {"rows": args.scale[0], "layers": args.scale[1], "d": args.scale[2]},
                       "predicted_memory_mib": round(args.scale[0] * args.scale[1] * args.scale[2] * 4 / MiB, 1),
                       "predicted_one_layer_mib": round(args.scale[0] * args.scale[2] * 4 / MiB, 1),
                       "runs": store_runs,
                       "same_rows": store_runs["memory"]["checksum"] == store_runs["disk"]["checksum"]},
    }
    from benchmarks.provenance import provenance

    result["provenance"] = provenance()
    atomic_write_text(args.out, json.dumps(result, indent=1))
    atomic_write_text(args.out.with_suffix(".md"), markdown(result))
    print(markdown(result))
    return result


def markdown(r: dict) -> str:
    rows = r["setup"]["rows"]
    return "\n".join([
        f"# Extraction memory: in memory vs streamed to disk ({r['date']}, {r['machine']}, {r['threads']} threads)",
        "",
        f"{r['setup']['model']}; {r['setup']['gate']}; rows: recall {rows['recall']}, erasure {rows['erasure']}, "
        f"forget {rows['forget']}, retain {rows['retain']}. Peak RSS above the level after loading the model, "
        "each mode in a fresh process.",
        "",
        "| activations | glibc allocator | peak above loaded (MiB) | wall (s) | bundle sha256 |",
        "|---|---|---|---|---|",
        *[f"| {key.split('_')[0]} | {'fixed mmap threshold' if 'fixed' in key else 'default'} | "
          f"{v['peak_above_loaded_mib']} | {v['wall_s']} | {v['tensors_sha256'][:12]} |" for key, v in r["runs"].items()],
        "",
        f"Disk / memory: peak {r['peak_ratio_disk_over_memory']}x (default allocator), "
        f"{r.get('peak_ratio_disk_over_memory_fixed_mmap_threshold')}x (fixed mmap threshold); "
        f"wall {r['wall_ratio_disk_over_memory']}x; "
        f"same bundle: {r['same_bundle']}. Predicted pooled rows held at once: gate, all layers "
        f"{r['predicted']['memory_gate_all_layers_mib']} MiB in memory vs one layer "
        f"{r['predicted']['disk_gate_one_layer_mib']} MiB from disk.",
        "",
        *store_markdown(r.get("store_only")),
        ""])


def store_markdown(s) -> list[str]:
    if not s:
        return []
    shape, m, k = s["shape"], s["runs"]["memory"], s["runs"]["disk"]
    return [f"The activation store alone at {shape['rows']:,} rows x {shape['layers']} layers x d {shape['d']:,} "
            f"(LLaVA-1.5-7B's per-layer gate; random rows, batches of 16, each layer read back once):", "",
            "| activations | peak above start (MiB) | predicted held at once (MiB) | wall (s) |", "|---|---|---|---|",
            f"| memory | {m['peak_above_start_mib']} | {s['predicted_memory_mib']} | {m['wall_s']} |",
            f"| disk | {k['peak_above_start_mib']} | {s['predicted_one_layer_mib']} | {k['wall_s']} |", "",
            f"Same rows read back: {s['same_rows']}."]


if __name__ == "__main__":
    main()
