"""Runtime overhead of steerkit's nnsight runtime vs plain ``generate`` and vs plain torch hooks.

One process, one model size, every condition measured in the same run and interleaved round by round
(after warm-up), so slow drifts of a shared machine hit every condition alike. Each round times:

  plain          ``model.generate`` on a model nnsight never touched
  hook_add       ``HookSteerer`` (plain forward hooks) running the always-on add plan   (same pristine model)
  sk_add         steerkit ``Steerer`` running the always-on add plan                    (nnsight-wrapped model)
  hook_gated     ``HookSteerer`` running the gated add plan (linear gate, one per layer)
  sk_gated       steerkit ``Steerer`` running the gated add plan
  ..._pre        the same four with phase: prefill (steer the prompt pass only)
  plain_wrapped  ``model.generate`` on the nnsight-wrapped model outside any trace (what nnsight's
                 per-module forward patch costs a later unsteered call)

The reported figures are medians over rounds of PAIRED ratios (each round's ratio first, then the
median), plus absolute medians in ms. Model: a tiny LLaVA (CLIP 2x32 vision tower, Llama decoder with
hidden 512, 8 layers, ~21 M parameters, random weights), batch 4 left-padded prompts with one image each,
32 new tokens, greedy, with ``min_new_tokens`` pinned so every run does the same work. Steering: 4 middle
layers (2-5), ``resid_pre``, positions ``all_prompt``.

    python benchmarks/overhead.py                    # writes benchmarks/results/overhead.{json,md}
    python benchmarks/overhead.py --rounds 30 --threads 2
    python benchmarks/overhead.py --profile          # + cProfile of steerkit vs hook generate
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import datetime as dt
import io
import json
import os
import platform
import pstats
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from steerkit.evaluate.report import atomic_write_text  # noqa: E402
from steerkit.runtime_nnsight import Steerer  # noqa: E402
from steerkit.testing.fixtures import RECIPE_HEAD, make_plan  # noqa: E402
from steerkit.testing.hook_reference import HookSteerer  # noqa: E402

HIDDEN, LAYERS, STEERED = 512, 8, [2, 3, 4, 5]
PROMPTS = ["What is in this image?", "Describe the picture in one sentence.",
           "Who is the person in the photo? Answer briefly.", "Where does she live? She lives in a town near the sea."]
TARGETS = {"steerkit_vs_plain": 1.05, "steerkit_vs_hook": 1.03}
GATES = {
    "add": "gate: {rule: always_on}",
    "gated": ("gate: {rule: nullspace_linear, forget: [{kind: jsonl, path: f}], retain: [{kind: jsonl, path: r}], "
              "clip: [0, 1]}"),
}


def build_model():
    """A tiny LLaVA with a hidden-512, 8-layer Llama decoder (steerkit.models.zoo.build_llava: real config
    classes, in-code BPE tokenizer, a processor that needs no torchvision)."""
    from steerkit.models.zoo import build_llava

    t = build_llava(hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=LAYERS,
                    num_attention_heads=8, num_key_value_heads=8)
    return t.model, t.processor, t.tokenizer


def encode(proc, batch: int) -> dict:
    from steerkit.models.zoo import tiny_image

    texts = [PROMPTS[i % len(PROMPTS)] for i in range(batch)]
    msgs = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": t}]}] for t in texts]
    prompts = [proc.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in msgs]
    return dict(proc(images=[[tiny_image(i)] for i in range(batch)], text=prompts, return_tensors="pt", padding=True))


def plan_for(gate: str, phase: str):
    recipe = RECIPE_HEAD + GATES[gate] + (f"\nsteer: {{op: add, site: resid_pre, layers: {STEERED}, "
                                          f"positions: [all_prompt], phase: {phase}, strength: {{lambda: 0.5}}}}\n")
    return make_plan("llava", (HIDDEN, LAYERS), recipe, seed=0)


def _median(xs):
    return statistics.median(xs) if xs else None


def _quantile(xs, q):
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def profile_calls(fns: dict, reps: int, top: int = 25) -> dict[str, str]:
    """cProfile ``reps`` calls of each function; the top entries by internal time and by cumulative time."""
    out = {}
    for name, fn in fns.items():
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(reps):
            fn()
        prof.disable()
        buf = io.StringIO()
        stats = pstats.Stats(prof, stream=buf).strip_dirs()
        stats.sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top)
        out[name] = buf.getvalue()
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20, help="timed rounds (each runs every condition once)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="torch intra-op threads")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "overhead.json")
    ap.add_argument("--profile", action="store_true", help="also cProfile steerkit vs hook generate (add plan)")
    ap.add_argument("--profile-reps", type=int, default=5)
    args = ap.parse_args(argv)
    if args.rounds < 15:
        print(f"warning: {args.rounds} rounds is a smoke run; report figures from >= 15 rounds", file=sys.stderr)
    torch.set_num_threads(args.threads)

    import nnsight
    import transformers

    pristine, proc, tok = build_model()
    wrapped = copy.deepcopy(pristine)  # identical weights; only this copy is ever wrapped by nnsight
    enc = encode(proc, args.batch)
    n = args.new_tokens
    gk = dict(min_new_tokens=n, pad_token_id=tok.pad_token_id)
    plans = {(g, p): plan_for(g, p) for g in GATES for p in ("all_steps", "prefill")}
    image_id = pristine.config.image_token_id
    hooks = {k: HookSteerer(pristine, plan, image_id) for k, plan in plans.items()}
    steerers = {k: Steerer(wrapped, plan, image_id) for k, plan in plans.items()}

    def plain(model):
        def run():
            with torch.no_grad():
                return model.generate(**enc, max_new_tokens=n, do_sample=False, **gk)
        return run

    conditions = {"plain": plain(pristine), "plain_wrapped": plain(wrapped)}
    for gate in GATES:
        for phase, suffix in (("all_steps", ""), ("prefill", "_pre")):
            conditions[f"hook_{gate}{suffix}"] = (lambda h=hooks[(gate, phase)]: h.generate(enc, n, **gk))
            conditions[f"sk_{gate}{suffix}"] = (lambda s=steerers[(gate, phase)]: s.generate(enc, n, **gk))

    # correctness first: every steerkit run must produce the hook reference's tokens, and actually steer
    outputs = {name: fn() for name, fn in conditions.items()}
    prompt_len = enc["input_ids"].shape[1]
    for name, ids in outputs.items():
        assert ids.shape == (args.batch, prompt_len + n), (name, tuple(ids.shape))
        if name.startswith("sk_"):
            ref = outputs["hook_" + name[3:]]
            assert torch.equal(ids, ref), f"{name} does not match the hook reference"
    assert torch.equal(outputs["plain"], outputs["plain_wrapped"])
    steered_differs = {name[3:]: not torch.equal(outputs[name], outputs["plain"]) for name in outputs
                       if name.startswith("sk_")}

    names = list(conditions)
    # wall clock is what a user waits; process CPU time is what this process computed, which other tenants of
    # a shared machine disturb far less (with 1 thread, time spent descheduled does not count)
    times: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    for r in range(args.warmup + args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]  # interleaved; the start rotates each round
        for name in order:
            t0, c0 = time.perf_counter(), time.process_time()
            conditions[name]()
            elapsed, used = time.perf_counter() - t0, time.process_time() - c0
            if r >= args.warmup:
                times[name].append(elapsed * 1e3)
                cpu[name].append(used * 1e3)

    def paired(a: str, b: str, series: dict) -> dict:
        ratios = [x / y for x, y in zip(series[a], series[b])]
        return {"median": round(_median(ratios), 4), "p25": round(_quantile(ratios, 0.25), 4),
                "p75": round(_quantile(ratios, 0.75), 4), "of": f"{a} / {b}"}

    def all_ratios(series: dict) -> dict:
        out = {}
        for suffix, label in (("", ""), ("_pre", "_prefill")):
            out[f"steerkit_vs_plain{label}"] = paired(f"sk_add{suffix}", "plain", series)
            out[f"steerkit_vs_hook{label}"] = paired(f"sk_add{suffix}", f"hook_add{suffix}", series)
            out[f"gated_vs_plain{label}"] = paired(f"sk_gated{suffix}", "plain", series)
            out[f"gated_vs_hook{label}"] = paired(f"sk_gated{suffix}", f"hook_gated{suffix}", series)
            out[f"hook_vs_plain{label}"] = paired(f"hook_add{suffix}", "plain", series)
        out["plain_wrapped_vs_plain"] = paired("plain_wrapped", "plain", series)
        return out

    ratios, cpu_ratios = all_ratios(times), all_ratios(cpu)
    targets = {k: {"target": v, "median": ratios[k]["median"], "holds": ratios[k]["median"] <= v,
                   "cpu_median": cpu_ratios[k]["median"], "holds_cpu": cpu_ratios[k]["median"] <= v}
               for k, v in TARGETS.items()}

    result = {
        "benchmark": "overhead",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "nnsight": getattr(nnsight, "__version__", "?"), "python": platform.python_version()},
        "machine": {"threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
        "setup": {"model": f"tiny LLaVA, Llama decoder hidden {HIDDEN} x {LAYERS} layers, random weights",
                  "parameters_m": round(sum(p.numel() for p in pristine.parameters()) / 1e6, 2),
                  "batch": args.batch, "prompt_tokens": prompt_len, "new_tokens": n, "greedy": True,
                  "steered_layers": STEERED, "site": "resid_pre", "positions": ["all_prompt"],
                  "rounds": args.rounds, "warmup_rounds": args.warmup, "order": "interleaved, start rotated per round",
                  "plans": {f"{g}/{p}": plans[(g, p)].sha256()[:12] for g, p in plans}},
        "ratios": ratios,
        "cpu_ratios": cpu_ratios,
        "targets": targets,
        "median_ms": {k: round(_median(v), 2) for k, v in times.items()},
        "min_ms": {k: round(min(v), 2) for k, v in times.items()},
        "cpu_median_ms": {k: round(_median(v), 2) for k, v in cpu.items()},
        "per_forward_overhead_ms": {  # (median paired difference) / (prefill + new_tokens - 1 forward passes)
            k: round(_median([x - y for x, y in zip(cpu[k], cpu["plain"])]) / n, 3) for k in names if k != "plain"},
        "steered_output_differs_from_plain": steered_differs,
        "times_ms": {k: [round(x, 2) for x in v] for k, v in times.items()},
        "cpu_ms": {k: [round(x, 2) for x in v] for k, v in cpu.items()},
    }
    if args.profile:
        result["profile"] = profile_calls({"sk_add": conditions["sk_add"], "hook_add": conditions["hook_add"],
                                           "plain": conditions["plain"]}, args.profile_reps)

    table = markdown(result)
    from benchmarks.provenance import provenance

    result["provenance"] = provenance()
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    atomic_write_text(args.out.with_suffix(".md"), table)
    print(table)
    if args.profile:
        for name, text in result["profile"].items():
            print(f"\n===== cProfile: {name} x{args.profile_reps} =====\n{text}")
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return result


def markdown(r: dict) -> str:
    ms, ratios, cpu = r["median_ms"], r["ratios"], r["cpu_ratios"]
    lines = [
        "# Runtime overhead (benchmarks/overhead.py)",
        "",
        f"{r['setup']['model']} ({r['setup']['parameters_m']} M params), batch {r['setup']['batch']}, "
        f"{r['setup']['prompt_tokens']} prompt tokens, {r['setup']['new_tokens']} new tokens greedy; add at layers "
        f"{r['setup']['steered_layers']} ({r['setup']['site']}, all_prompt). "
        f"{r['setup']['rounds']} interleaved rounds, "
        f"{r['machine']['threads']} thread(s); torch {r['versions']['torch']}, transformers "
        f"{r['versions']['transformers']}, nnsight {r['versions']['nnsight']}; {r['date']}.",
        "",
        "| ratio (median of per-round ratios) | wall, all_steps | wall, prefill only | CPU, all_steps | "
        "CPU, prefill only | target |",
        "|---|---|---|---|---|---|",
    ]

    def fmt(x: dict) -> str:
        return f"{x['median']:.3f} [{x['p25']:.3f}, {x['p75']:.3f}]"

    for key in ("steerkit_vs_plain", "steerkit_vs_hook", "gated_vs_plain", "gated_vs_hook", "hook_vs_plain"):
        t = r["targets"].get(key)
        target = (f"<= {t['target']}: wall {'holds' if t['holds'] else 'MISSED'}, "
                  f"CPU {'holds' if t['holds_cpu'] else 'MISSED'}") if t else ""
        lines.append(f"| {key} | {fmt(ratios[key])} | {fmt(ratios[key + '_prefill'])} | {fmt(cpu[key])} | "
                     f"{fmt(cpu[key + '_prefill'])} | {target} |")
    lines += [f"| plain generate, nnsight-wrapped model vs untouched | {fmt(ratios['plain_wrapped_vs_plain'])} | | "
              f"{fmt(cpu['plain_wrapped_vs_plain'])} | | |", "",
              "Brackets: 25th and 75th percentile of the per-round ratios. CPU: process CPU time (less disturbed by "
              "other jobs on a shared machine than wall clock).", "",
              "| condition | median wall ms | min wall ms | median CPU ms | CPU overhead per forward vs plain, ms |",
              "|---|---|---|---|---|"]
    lines += [f"| {k} | {v:.1f} | {r['min_ms'][k]:.1f} | {r['cpu_median_ms'][k]:.1f} | "
              f"{r['per_forward_overhead_ms'].get(k, 0.0):.3f} |" for k, v in ms.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
