"""What steering costs at generation time: steerkit vs plain ``generate``, plain torch hooks and steering-vectors.

One process, one model; each (batch, new tokens) configuration is measured on its own, every condition
in the same run and interleaved round by round (the start of the order rotates each round), so slow
drifts of a shared machine hit every condition alike. Conditions, all greedy with ``min_new_tokens`` =
``max_new_tokens`` so every run does the same work; "every step" means the prompt pass and every decode
step, on every prompt and every generated token:

  plain              ``model.generate``; nothing steered
  sk_prefill         steerkit, add on the prompt tokens at prefill only (phase: prefill, [all_prompt])
  hook_prefill       the same plan through steerkit.testing.hook_reference.HookSteerer (plain torch hooks)
  sk_every           steerkit, add at every step (phase: all_steps, [all_prompt, generated]), always-on gate
  hook_every         the same plan through HookSteerer
  sv_every           steering-vectors ``SteeringVector.apply``: the same vectors added to the same layers'
                     outputs at every token of every step
  nn_every           steerkit forced onto its nnsight executor (executor='nnsight', the remote path), sk_every's plan
  sk_linear_every    steerkit, every step, behind a per-layer linear gate (nullspace_linear, clip [0, 1])
  hook_linear_every  the same plan through HookSteerer
  sk_proto_every     steerkit, every step, behind the prototype gate (one shared gate read at layer 0)
  hook_proto_every   the same plan through HookSteerer

steerkit runs with its default executor (plain hooks for a local model, steerkit/runtime_hooks.py).
Before timing, every steerkit run must return exactly its hook reference's tokens, nn_every and sv_every
exactly sk_every's, and the every-step tokens must differ from the prefill-only ones (decode steps are
steered). Figures are medians over rounds of PAIRED ratios (each round's ratio first, then the median).

Model: a tiny LLaVA (CLIP 2x32 vision tower, Llama decoder with hidden 512, 8 layers, ~21.7 M
parameters, random weights); left-padded prompts with one image each. Steering: add (lambda 0.5) at
``resid_post`` of layers 2-5.

steering-vectors is installed for the benchmark only, never as a steerkit dependency:

    pip install --no-deps --target .sv steering-vectors        # its pins ask for transformers < 5
    python benchmarks/overhead.py                               # writes benchmarks/results/overhead.{json,md}
    python benchmarks/overhead.py --quick                       # smoke run, written to a temp folder
    python benchmarks/overhead.py --configs 32x256 --out /tmp/o.json
    python benchmarks/overhead.py --profile                     # + cProfile: nnsight executor vs hooks vs plain
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import datetime as dt
import importlib
import io
import json
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.provenance import provenance  # noqa: E402
from steerkit.evaluate.report import atomic_write_text  # noqa: E402
from steerkit.runtime_nnsight import Steerer  # noqa: E402
from steerkit.testing.fixtures import RECIPE_HEAD, make_plan  # noqa: E402
from steerkit.testing.hook_reference import HookSteerer  # noqa: E402

HIDDEN, LAYERS, STEERED, SITE, LAMBDA = 512, 8, [2, 3, 4, 5], "resid_post", 0.5
DECODER_LAYERS = "model.language_model.layers.{num}"  # resid_post of layer L = decoder layer L's output
PROMPTS = ["What is in this image?", "Describe the picture in one sentence.",
           "Who is the person in the photo? Answer briefly.", "Where does she live? She lives in a town near the sea."]
CONFIGS = [(4, 32), (32, 32), (4, 256)]
QUICK_CONFIGS = [(4, 16), (32, 8)]
GATES = {
    "always_on": "gate: {rule: always_on}",
    "linear": ("gate: {rule: nullspace_linear, forget: [{kind: jsonl, path: f}], retain: [{kind: jsonl, path: r}], "
               "clip: [0, 1]}"),
    "prototype": "gate: {rule: prototype, forget: [{kind: jsonl, path: f}], retain: [{kind: jsonl, path: r}], layer: 0}",
}
CONDITIONS = {
    "plain": "plain model.generate, nothing steered",
    "sk_prefill": "steerkit: add on prompt tokens at prefill only (phase prefill, positions [all_prompt])",
    "hook_prefill": "plain torch hooks (HookSteerer): the sk_prefill plan",
    "sk_every": "steerkit: add on prompt + every generated token, every decode step (phase all_steps, "
                "positions [all_prompt, generated]), always-on gate",
    "hook_every": "plain torch hooks (HookSteerer): the sk_every plan",
    "sv_every": "steering-vectors SteeringVector.apply: the sk_every vectors added to the same layer outputs, "
                "every token, every step",
    "nn_every": "steerkit with executor='nnsight' (the remote path): the sk_every plan",
    "sk_linear_every": "steerkit: the sk_every add behind a per-layer linear gate (nullspace_linear, clip [0, 1])",
    "hook_linear_every": "plain torch hooks (HookSteerer): the sk_linear_every plan",
    "sk_proto_every": "steerkit: the sk_every add behind the prototype gate (shared, read at layer 0)",
    "hook_proto_every": "plain torch hooks (HookSteerer): the sk_proto_every plan",
}
# name -> (numerator, denominator)
PAIRS = {
    "every_step_vs_plain": ("sk_every", "plain"),
    "every_step_vs_steering_vectors": ("sk_every", "sv_every"),
    "every_step_vs_hook": ("sk_every", "hook_every"),
    "prefill_vs_plain": ("sk_prefill", "plain"),
    "prefill_vs_hook": ("sk_prefill", "hook_prefill"),
    "linear_every_step_vs_plain": ("sk_linear_every", "plain"),
    "linear_every_step_vs_hook": ("sk_linear_every", "hook_linear_every"),
    "prototype_every_step_vs_plain": ("sk_proto_every", "plain"),
    "prototype_every_step_vs_hook": ("sk_proto_every", "hook_proto_every"),
    "hook_every_step_vs_plain": ("hook_every", "plain"),
    "steering_vectors_vs_plain": ("sv_every", "plain"),
    "nnsight_every_step_vs_plain": ("nn_every", "plain"),
    "nnsight_every_step_vs_hooks_executor": ("nn_every", "sk_every"),
}
TARGETS = {"every_step_vs_plain": 1.05, "every_step_vs_steering_vectors": 1.02, "prototype_every_step_vs_plain": 1.10}


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


def plan_for(gate: str, every_step: bool):
    positions, phase = ("[all_prompt, generated]", "all_steps") if every_step else ("[all_prompt]", "prefill")
    recipe = RECIPE_HEAD + GATES[gate] + (f"\nsteer: {{op: add, site: {SITE}, layers: {STEERED}, "
                                          f"positions: {positions}, phase: {phase}, strength: {{lambda: {LAMBDA}}}}}\n")
    return make_plan("llava", (HIDDEN, LAYERS), recipe, seed=0)


def load_steering_vectors(folder: Path):
    """steering-vectors' ``SteeringVector`` from ``folder`` (a ``pip install --target`` folder), or (None, why).

    Its package ``__init__`` imports the training aggregators, which need scikit-learn; only
    ``steering_vector`` (and what it imports: layer matching, torch utils) is used here, so when
    scikit-learn is absent the package is entered without running its ``__init__``."""
    if not (folder / "steering_vectors").is_dir():
        return None, (f"steering-vectors not found in {folder}: pip install --no-deps --target {folder} "
                      "steering-vectors (or pass --sv-path)")
    sys.path.insert(0, str(folder))
    try:
        import steering_vectors

        return steering_vectors.SteeringVector, f"{folder} (package import), version {steering_vectors.__version__}"
    except ImportError as exc:
        for name in [m for m in sys.modules if m == "steering_vectors" or m.startswith("steering_vectors.")]:
            del sys.modules[name]
        pkg = types.ModuleType("steering_vectors")
        pkg.__path__ = [str(folder / "steering_vectors")]
        sys.modules["steering_vectors"] = pkg
        module = importlib.import_module("steering_vectors.steering_vector")
        version = (folder / "steering_vectors" / "__init__.py").read_text().split('__version__ = "')[1].split('"')[0]
        return module.SteeringVector, (f"{folder} (steering_vectors.steering_vector only; the package __init__ "
                                       f"failed: {exc}), version {version}")


def machine_state(threads: int) -> dict:
    cpu = None
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), None)
    except OSError:
        pass
    return {"threads": threads, "cpu_count": os.cpu_count(), "cpu": cpu, "platform": platform.platform(),
            "loadavg_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


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


def make_conditions(pristine, wrapped, tok, enc, n, plans, sv_class, steerers: list):
    """name -> zero-argument callable running that condition once (returns the generated ids); the
    Steerers it opens are appended to ``steerers`` for the caller to close."""
    gk = dict(min_new_tokens=n, pad_token_id=tok.pad_token_id)
    image_id = pristine.config.image_token_id

    def plain():
        with torch.no_grad():
            return pristine.generate(**enc, max_new_tokens=n, do_sample=False, **gk)

    def steerkit_run(model, plan, executor="auto"):
        steerer = Steerer(model, plan, image_id, executor=executor)  # held open: the serving pattern
        steerers.append(steerer)
        return lambda: steerer.generate(enc, n, **gk)

    def hooks_run(plan):
        h = HookSteerer(pristine, plan, image_id)
        return lambda: h.generate(enc, n, **gk)

    conds = {"plain": plain,
             "sk_prefill": steerkit_run(pristine, plans["prefill"]), "hook_prefill": hooks_run(plans["prefill"]),
             "sk_every": steerkit_run(pristine, plans["every"]), "hook_every": hooks_run(plans["every"])}
    if sv_class is not None:
        every = plans["every"]
        sv = sv_class({w.at.layer: every.tensors[w.vector] for w in every.writes}, "decoder_block")

        def sv_every():
            with torch.no_grad(), sv.apply(pristine, layer_config={"decoder_block": DECODER_LAYERS},
                                           multiplier=LAMBDA):
                return pristine.generate(**enc, max_new_tokens=n, do_sample=False, **gk)
        conds["sv_every"] = sv_every
    conds["nn_every"] = steerkit_run(wrapped, plans["every"], executor="nnsight")  # wraps its own model copy
    for gate in ("linear", "proto"):
        conds[f"sk_{gate}_every"] = steerkit_run(pristine, plans[gate])
        conds[f"hook_{gate}_every"] = hooks_run(plans[gate])
    return conds


def check_outputs(outputs: dict, batch: int, prompt_len: int, n: int) -> dict:
    """Every steerkit run equals its reference; the every-step plan really steers the decode steps."""
    for name, ids in outputs.items():
        assert ids.shape == (batch, prompt_len + n), (name, tuple(ids.shape))
    for name in outputs:
        if name.startswith("sk_"):
            assert torch.equal(outputs[name], outputs["hook_" + name[3:]]), f"{name} differs from its hook reference"
    assert torch.equal(outputs["nn_every"], outputs["sk_every"]), "the nnsight executor differs from the hook executor"
    if "sv_every" in outputs:
        assert torch.equal(outputs["sv_every"], outputs["sk_every"]), "steering-vectors generated other tokens"
    return {
        "steerkit_equals_hook_reference": True, "nnsight_executor_equals_hooks_executor": True,
        "steering_vectors_equals_steerkit": "sv_every" in outputs or None,
        "every_step_differs_from_prefill_only": not torch.equal(outputs["sk_every"], outputs["sk_prefill"]),
        "steered_differs_from_plain": {k: not torch.equal(v, outputs["plain"]) for k, v in outputs.items()
                                       if k.startswith("sk_")},
    }


def measure(conds: dict, warmup: int, min_rounds: int, max_rounds: int, budget_s: float):
    """Interleaved rounds until ``budget_s`` of timed rounds is spent (at least ``min_rounds``, at most
    ``max_rounds``). Returns wall and process-CPU milliseconds per condition, one entry per round."""
    names = list(conds)
    times: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    start, r = None, 0
    while True:
        timed = r >= warmup
        if timed and start is None:
            start = time.perf_counter()
        rounds_done = r - warmup
        if timed and (rounds_done >= max_rounds or
                      (rounds_done >= min_rounds and time.perf_counter() - start >= budget_s)):
            return times, cpu
        order = names[r % len(names):] + names[:r % len(names)]  # the start rotates each round
        for name in order:
            t0, c0 = time.perf_counter(), time.process_time()
            conds[name]()
            elapsed, used = time.perf_counter() - t0, time.process_time() - c0
            if timed:
                times[name].append(elapsed * 1e3)
                cpu[name].append(used * 1e3)
        r += 1


def paired(series: dict, a: str, b: str) -> dict:
    ratios = [x / y for x, y in zip(series[a], series[b])]
    return {"median": round(_median(ratios), 4), "p25": round(_quantile(ratios, 0.25), 4),
            "p75": round(_quantile(ratios, 0.75), 4), "of": f"{a} / {b}"}


def run_config(batch: int, n: int, pristine, wrapped, proc, tok, plans, sv_class, args) -> dict:
    enc = encode(proc, batch)
    steerers: list = []
    try:
        conds = make_conditions(pristine, wrapped, tok, enc, n, plans, sv_class, steerers)
        prompt_len = enc["input_ids"].shape[1]
        checks = check_outputs({k: fn() for k, fn in conds.items()}, batch, prompt_len, n)
        print(f"batch {batch}, {n} new tokens: outputs checked; timing {len(conds)} conditions", file=sys.stderr)
        times, cpu = measure(conds, args.warmup, args.min_rounds, args.rounds, args.budget_s)
        profile = (profile_calls({k: conds[k] for k in ("nn_every", "sk_every", "plain")}, args.profile_reps)
                   if args.profile and not args.profiled else None)
    finally:
        for steerer in steerers:
            steerer.close()
    ratios = {k: {**paired(times, a, b), "batch": batch, "new_tokens": n}
              for k, (a, b) in PAIRS.items() if a in times and b in times}
    cpu_ratios = {k: {**paired(cpu, a, b), "batch": batch, "new_tokens": n}
                  for k, (a, b) in PAIRS.items() if a in cpu and b in cpu}
    out = {
        "batch": batch, "new_tokens": n, "prompt_tokens": prompt_len, "rounds": len(times["plain"]),
        "ratios": ratios, "cpu_ratios": cpu_ratios, "checks": checks,
        "median_ms": {k: round(_median(v), 2) for k, v in times.items()},
        "cpu_median_ms": {k: round(_median(v), 2) for k, v in cpu.items()},
        # median paired wall difference to plain over the n forward passes (prefill + n - 1 decode steps)
        "per_forward_overhead_ms": {k: round(_median([x - y for x, y in zip(times[k], times["plain"])]) / n, 3)
                                    for k in times if k != "plain"},
        "times_ms": {k: [round(x, 2) for x in v] for k, v in times.items()},
        "cpu_ms": {k: [round(x, 2) for x in v] for k, v in cpu.items()},
    }
    if profile:
        args.profiled = True
        out["profile"] = profile
    return out


def parse_configs(text: str) -> list[tuple[int, int]]:
    try:
        pairs = [tuple(int(x) for x in part.lower().split("x")) for part in text.split(",") if part.strip()]
    except ValueError:
        pairs = []
    if not pairs or any(len(p) != 2 or min(p) < 1 for p in pairs):
        raise argparse.ArgumentTypeError(f"--configs wants BATCHxNEW_TOKENS[,...], e.g. 4x32,32x32; got {text!r}")
    return pairs  # type: ignore[return-value]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", type=parse_configs, default=None,
                    help="BATCHxNEW_TOKENS list (default 4x32,32x32,4x256)")
    ap.add_argument("--rounds", type=int, default=20, help="most timed rounds per configuration")
    ap.add_argument("--min-rounds", type=int, default=5, help="fewest timed rounds per configuration")
    ap.add_argument("--budget-s", type=float, default=200.0,
                    help="timed seconds per configuration after which no new round starts (past --min-rounds)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds first (after the output checks)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: steadier on shared cores)")
    ap.add_argument("--sv-path", type=Path, default=Path(os.environ.get("STEERKIT_SV_PATH", ROOT / ".sv")),
                    help="folder holding steering_vectors (pip install --no-deps --target FOLDER steering-vectors)")
    ap.add_argument("--quick", action="store_true", help="smoke run: small configurations, 3 rounds, temp output")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/overhead.json)")
    ap.add_argument("--profile", action="store_true", help="also cProfile nn_every, sk_every and plain (first config)")
    ap.add_argument("--profile-reps", type=int, default=3)
    args = ap.parse_args(argv)
    args.profiled = False
    if args.quick:
        args.configs = args.configs or QUICK_CONFIGS
        args.rounds, args.min_rounds, args.budget_s, args.warmup = 3, 3, 0.0, 0
        args.out = args.out or Path(tempfile.gettempdir()) / "steerkit-overhead-quick.json"
    configs = args.configs or CONFIGS
    out_path = args.out or ROOT / "benchmarks" / "results" / "overhead.json"
    torch.set_num_threads(args.threads)

    import nnsight
    import transformers

    prov = provenance()  # at the start: the code that is measured, before any later edit
    sv_class, sv_source = load_steering_vectors(args.sv_path)
    if sv_class is None:
        print(f"skipping the steering-vectors rows: {sv_source}", file=sys.stderr)
    pristine, proc, tok = build_model()
    wrapped = copy.deepcopy(pristine)  # identical weights; only this copy is ever wrapped by nnsight
    plans = {"prefill": plan_for("always_on", False), "every": plan_for("always_on", True),
             "linear": plan_for("linear", True), "proto": plan_for("prototype", True)}

    started = time.perf_counter()
    runs: dict = {}

    def assemble() -> dict:
        flat = {f"{k}_{c}": v for c, r in runs.items() for k, v in r["ratios"].items()}
        flat_cpu = {f"{k}_{c}": v for c, r in runs.items() for k, v in r["cpu_ratios"].items()}
        targets = {f"{k}_{c}": {"target": t, "median": flat[f"{k}_{c}"]["median"],
                                "holds": flat[f"{k}_{c}"]["median"] <= t, "cpu_median": flat_cpu[f"{k}_{c}"]["median"],
                                "holds_cpu": flat_cpu[f"{k}_{c}"]["median"] <= t}
                   for c in runs for k, t in TARGETS.items() if f"{k}_{c}" in flat}
        return {
            "benchmark": "overhead",
            "complete": len(runs) == len(configs),  # written after each configuration; false while partial
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "provenance": prov,
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                         "nnsight": getattr(nnsight, "__version__", "?"), "python": platform.python_version(),
                         "steering_vectors": sv_source if sv_class is not None else None},
            "machine": machine_state(torch.get_num_threads()),
            "setup": {"model": f"tiny LLaVA, Llama decoder hidden {HIDDEN} x {LAYERS} layers, random weights",
                      "parameters_m": round(sum(p.numel() for p in pristine.parameters()) / 1e6, 2),
                      "greedy": True, "min_new_tokens_pinned": True, "steered_layers": STEERED, "site": SITE,
                      "lambda": LAMBDA, "steerkit_executor": "auto (plain hooks for a local model)",
                      "rounds": f"interleaved, start rotated per round; up to {args.rounds} per configuration, "
                                f"at least {args.min_rounds}, none started after {args.budget_s:.0f} s",
                      "warmup_rounds": args.warmup, "configs": [f"b{b}_n{n}" for b, n in configs],
                      "plans": {k: p.sha256()[:12] for k, p in plans.items()},
                      "steering_vectors": sv_source, "wall_s": round(time.perf_counter() - started, 1)},
            "conditions": {k: v for k, v in CONDITIONS.items() if sv_class is not None or k != "sv_every"},
            "ratios": flat,
            "cpu_ratios": flat_cpu,
            "targets": targets,
            "configs": runs,
        }

    for b, n in configs:
        runs[f"b{b}_n{n}"] = run_config(b, n, pristine, wrapped, proc, tok, plans, sv_class, args)
        result = assemble()
        table = markdown(result)
        atomic_write_text(out_path, json.dumps(result, indent=2) + "\n")
        atomic_write_text(out_path.with_suffix(".md"), table)
    print(table)
    for run in runs.values():
        for name, text in run.get("profile", {}).items():
            print(f"\n===== cProfile: {name} x{args.profile_reps} (batch {run['batch']}, {run['new_tokens']} new) "
                  f"=====\n{text}")
    print(f"wrote {out_path} and {out_path.with_suffix('.md')}")
    return result


def markdown(r: dict) -> str:
    runs = r["configs"]
    s = r["setup"]
    lines = [
        "# Runtime overhead (benchmarks/overhead.py)",
        "",
        f"{s['model']} ({s['parameters_m']} M params); greedy, min_new_tokens pinned; add (lambda {s['lambda']}) at "
        f"{s['site']} of layers {s['steered_layers']}; steerkit executor: {s['steerkit_executor']}. "
        f"Rounds: {s['rounds']}. {r['machine']['threads']} thread(s), {r['machine']['cpu_count']} cores "
        f"(load average at end {', '.join(f'{x:.1f}' for x in r['machine']['loadavg_at_end'] or [])}); torch "
        f"{r['versions']['torch']}, transformers {r['versions']['transformers']}, nnsight "
        f"{r['versions']['nnsight']}; steering-vectors: {r['versions']['steering_vectors'] or 'not installed'}; "
        f"commit {str(r['provenance']['git_commit'])[:12]}{' + uncommitted changes' if r['provenance']['dirty'] else ''}; "
        f"{r['date']}.",
        "",
        "Medians of per-round paired ratios, wall clock, with [25th, 75th percentile]; CPU: the same on "
        "process CPU time.",
        "",
        "| ratio | of | " + " | ".join(f"batch {v['batch']}, {v['new_tokens']} new ({v['rounds']} rounds)"
                                     for v in runs.values()) + " | target |",
        "|---|---|" + "---|" * len(runs) + "---|",
    ]
    for key in PAIRS:
        cells = []
        for run in runs.values():
            x, c = run["ratios"].get(key), run["cpu_ratios"].get(key)
            cells.append(f"{x['median']:.3f} [{x['p25']:.3f}, {x['p75']:.3f}]; CPU {c['median']:.3f}" if x else "")
        of = next((run["ratios"][key]["of"] for run in runs.values() if key in run["ratios"]), None)
        if of is None:
            continue
        target = f"<= {TARGETS[key]}" if key in TARGETS else ""
        lines.append(f"| {key} | {of} | " + " | ".join(cells) + f" | {target} |")
    held = [f"{k}: {v['median']:.3f} {'holds' if v['holds'] else 'MISSED'} (CPU {v['cpu_median']:.3f} "
            f"{'holds' if v['holds_cpu'] else 'MISSED'})" for k, v in r["targets"].items()]
    lines += ["", "Targets (wall clock): " + "; ".join(held) + ".", "",
              "| condition | what runs | " + " | ".join(f"median ms b{v['batch']} n{v['new_tokens']}"
                                                       for v in runs.values()) + " |",
              "|---|---|" + "---|" * len(runs)]
    for name, label in r["conditions"].items():
        lines.append(f"| {name} | {label} | " + " | ".join(f"{run['median_ms'][name]:.1f}" if name in run["median_ms"]
                                                         else "" for run in runs.values()) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
