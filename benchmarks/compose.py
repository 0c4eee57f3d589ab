"""Issue #13: forget requests over time, composed (sum of gated writes), on the embedded world.

Five sequential requests, two forget people each, drawn (seeded) from the forget_10 people. Request k is
extracted with the shipped recipe restricted to its people (``ids`` on the forget-side sources), reusing
the retain activations of request 1 (``--retain-cache``); nothing earlier is refitted. After adding
request k the k bundles are applied together and every split is scored:

- forget classification accuracy (VQA / QA) of every request so far, on that request's people only;
- test (transformed portraits of the forget people), retain, utility (classification) and refusals;
- gate overlap: the share of prompts on which two or more requests' gates open (> 0), where the sum
  of gated writes and a max over gates would differ;
- generate overhead, interleaved rounds, median of paired ratios: k bundles vs plain ``generate`` and
  vs one bundle;
- fit cost: request k with the retain cache vs the same request from scratch (and that the two bundles
  are bit-identical).

  python benchmarks/compose.py                    # both embedded models (needs them trained and cached)
  python benchmarks/compose.py --models llava --limit 40
  python benchmarks/compose.py --smoke            # tiny random models on the 100-profile world (~minutes);
                                                  # writes runs/compose-smoke/, never results/
Writes results/compose.{json,md} and results/compose_<model>.png.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RECIPE = ROOT / "recipes/unlearning/mllmeraser_embedded_llava.yaml"
TARGETS = {"earlier_forget_max": 35.0, "retain_utility_drop_max": 3.0, "overhead_max": 1.10}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ setup
def open_model(model: str, smoke: bool):
    """(session, recipe data): the embedded model and shipped recipe, or for --smoke a tiny random model
    (real config, weights ~ N(0, 0.1)) with the recipe's layers moved inside its two decoder layers."""
    import yaml

    from steerkit.recipe import ModelSpec
    from steerkit.session import ModelSession, load_session

    data = yaml.safe_load(RECIPE.read_text())
    data.pop("bundle", None)
    data["model"]["id"] = f"embedded:{model}"
    if not smoke:
        return load_session(ModelSpec(id=f"embedded:{model}")), data
    from steerkit.testing.fixtures import tiny

    t = tiny(model)
    data["model"] = {"id": f"tiny:{model}", "world": {"seed": 0, "n_profiles": 100}}
    data["gate"]["layer"] = 1
    data["steer"]["layers"] = {"start": 1}
    for src in data["gate"]["retain"]:  # a few hundred retain prompts: the smoke tests the pipeline
        src["limit"] = 80
    return ModelSession.from_objects(t.model, t.processor, t.tokenizer, model_id=f"tiny:{model}"), data


def request_recipe(data: dict, ids: list[str], name: str):
    """The recipe restricted to one request's people: its gate forget side and its direction contrast."""
    from steerkit.recipe import parse_recipe_text, recipe_to_yaml

    import yaml

    d = copy.deepcopy(data)
    d["name"] = name
    for src in d["gate"]["forget"]:
        src["ids"] = ids
    for side in ("recall", "erasure"):
        src = d["direction"][side]["source"]
        if src.get("contrast", "").startswith("forget_"):  # forget-specific contrast: this request's people
            src["ids"] = ids
    loaded = parse_recipe_text(recipe_to_yaml(parse_recipe_text(yaml.safe_dump(d)).recipe), name)
    loaded.base_dir = RECIPE.parent
    return loaded


def eval_set(root, ratio: int, per_person: int | None, limit: int | None) -> list:
    """Classification items of forget/test (every forget person, at most ``per_person`` each per
    modality), retain/utility (at most ``limit`` per modality) and the refusal split."""
    from steerkit.data.mllmu import eval_items

    out = []
    for split in ("forget", "test", "retain", "utility"):
        items = eval_items(root, split, ratio, ["classification"], ["vqa", "qa"])
        cap = per_person if split in ("forget", "test") else limit
        if cap:
            seen: dict = {}
            kept = []
            for it in items:
                key = (it.id, it.modality) if split in ("forget", "test") else it.modality
                seen[key] = seen.get(key, 0) + 1
                if seen[key] <= cap:
                    kept.append(it)
            items = kept
        out += items
    refusal = eval_items(root, "refusal", ratio, None, ["vqa", "qa"])
    return out + (refusal[: 2 * limit] if limit else refusal)


# ------------------------------------------------------------------------------------------ scoring
def acc(records, split: str, mod: str, ids=None) -> float | None:
    xs = [r.score for r in records if r.split == split and r.task == "classification" and r.modality == mod
          and (ids is None or r.id in ids)]
    return round(100.0 * sum(xs) / len(xs), 1) if xs else None


def pair(records, split: str, ids=None) -> dict:
    return {m: acc(records, split, m, ids) for m in ("vqa", "qa")}


def refusals(result) -> dict:
    cells = result.metrics.get("refusal", {}).get("refusal", {})
    out = {}
    for key in ("refusal_rate", "refused_must_refuse", "refused_must_comply"):
        vals = [(c.get(key), c.get("n", 0)) for c in cells.values() if c.get(key) is not None]
        n = sum(w for _, w in vals)
        out[key] = round(sum(v * w for v, w in vals) / n, 1) if n else None
    return out


def gate_overlap(session, steerer, items, n_parts: int, batch_size: int = 32) -> dict:
    """Share of forget / retain+utility prompts on which >= 1 and >= 2 requests' gates are open (> 0)."""
    import torch

    counts = {"forget": [0, 0, 0], "retain": [0, 0, 0]}
    groups: dict = {}
    for it in items:
        if it.split in ("forget", "retain", "utility"):
            groups.setdefault((it.split, it.image is not None), []).append(it)
    for (split, _), group in groups.items():
        key = "forget" if split == "forget" else "retain"
        for s in range(0, len(group), batch_size):
            batch = group[s:s + batch_size]
            gates = steerer.gate_values(session.encode([i.prompt for i in batch], [i.image for i in batch]).inputs)
            per_part = [gates[(j, "shared")] if (j, "shared") in gates else next(
                v for k, v in gates.items() if isinstance(k, tuple) and k[0] == j) for j in range(n_parts)] \
                if n_parts > 1 else [next(iter(gates.values()))]
            n_open = (torch.stack(per_part) > 0).sum(0)
            counts[key][0] += len(batch)
            counts[key][1] += int((n_open >= 1).sum())
            counts[key][2] += int((n_open >= 2).sum())
    return {k: {"n": n, "open_any": round(100.0 * a / max(n, 1), 1), "open_two_or_more": round(100.0 * b / max(n, 1), 1)}
            for k, (n, a, b) in counts.items()}


# ------------------------------------------------------------------------------------------ timing
def overhead(session, plans: list, items, rounds: int, new_tokens: int) -> dict:
    """Median paired ratios of steered generate (k bundles, one bundle) to plain generate, in rounds
    that run every condition once (order rotated), on one fixed batch of image prompts."""
    import torch

    from steerkit.compose import stack_plans
    from steerkit.runtime_nnsight import steer

    batch = [it for it in items if it.image is not None][:8]
    enc = session.encode([i.prompt for i in batch], [i.image for i in batch]).inputs
    pad = session.tokenizer.pad_token_id
    gk = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
              pad_token_id=pad if pad is not None else session.tokenizer.eos_token_id)
    one, many = plans[0], stack_plans(plans)

    def plain():
        with torch.no_grad():
            session.model.generate(**enc, **gk)

    def steered(plan):
        with steer(session.model, plan, session.image_token_id) as st:
            t0 = time.perf_counter()
            st.generate(enc, new_tokens, min_new_tokens=new_tokens, pad_token_id=gk["pad_token_id"])
            return time.perf_counter() - t0

    def timed(fn):
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    conds = {"plain": lambda: timed(plain), "one": lambda: steered(one), "k": lambda: steered(many)}
    for fn in conds.values():  # warm-up
        fn()
    times: dict = {k: [] for k in conds}
    names = list(conds)
    for r in range(rounds):
        for name in names[r % 3:] + names[:r % 3]:
            times[name].append(conds[name]())
    ratio = lambda a, b: round(statistics.median(x / y for x, y in zip(times[a], times[b])), 4)  # noqa: E731
    return {"vs_plain": ratio("k", "plain"), "vs_one": ratio("k", "one"), "one_vs_plain": ratio("one", "plain"),
            "median_ms": {k: round(1000 * statistics.median(v), 2) for k, v in times.items()}, "rounds": rounds,
            "batch": len(batch), "new_tokens": new_tokens}


# ------------------------------------------------------------------------------------------ one model
def run_model(model: str, args) -> tuple[list, dict]:
    import torch

    from steerkit.compose_pipeline import plan_for_bundles
    from steerkit.data.mllmu import eval_items
    from steerkit.eval_job import make_fns
    from steerkit.evaluate import evaluate
    from steerkit.extract import extract
    from steerkit.runtime_nnsight import steer
    from steerkit.sources import world_root

    session, data = open_model(model, args.smoke)
    base = request_recipe(data, ["x"], "base")  # only for the world root and the forget ratio
    root = world_root(base.recipe.model.world)
    ratio = base.recipe.eval.forget_ratio
    people = sorted({it.id for it in eval_items(root, "forget", ratio, ["classification"], ["vqa"])})
    random.Random(args.seed).shuffle(people)
    per = args.per_request
    requests = [sorted(people[i * per:(i + 1) * per]) for i in range(args.requests)]
    if any(len(r) < per for r in requests):
        raise SystemExit(f"forget_{ratio} has {len(people)} people; {args.requests} requests x {per} need more")
    log(f"== {model}: requests {requests}")
    items = eval_set(root, ratio, args.per_person, args.limit)
    gen, _ = make_fns(session)
    t0 = time.perf_counter()
    vanilla = evaluate(items, gen, batch_size=args.batch_size, progress=False)
    log(f"vanilla evaluated in {time.perf_counter() - t0:.0f} s ({len(items)} items)")
    cache = Path(tempfile.mkdtemp(prefix="compose-retain-")) / "retain.safetensors"
    bundles, plans, steps, fits = [], [], [], []
    for k, ids in enumerate(requests, start=1):
        loaded = request_recipe(data, ids, f"request-{k}")
        t0 = time.perf_counter()
        bundle = extract(loaded, session, progress=False, retain_cache=str(cache))
        fit_s = time.perf_counter() - t0
        fits.append({"k": k, "seconds": round(fit_s, 2), "retain_cache": "miss" if k == 1 else "hit"})
        bundles.append(bundle)
        plans.append(plan_for_bundles(loaded, session, [bundle]))
        plan = plan_for_bundles(loaded, session, bundles)
        with steer(session.model, plan, session.image_token_id) as st:
            g, gate_fn = make_fns(session, st)
            steered = evaluate(items, g, batch_size=args.batch_size, progress=False, gate_fn=gate_fn)
            overlap = gate_overlap(session, st, items, k, args.batch_size)
        step = {"model": model, "k": k, "request_ids": {f"r{j + 1}": r for j, r in enumerate(requests[:k])},
                "forgotten": {f"r{j + 1}": pair(steered.records, "forget", set(r)) for j, r in enumerate(requests[:k])},
                "test": {f"r{j + 1}": pair(steered.records, "test", set(r)) for j, r in enumerate(requests[:k])},
                "retain": pair(steered.records, "retain"), "utility": pair(steered.records, "utility"),
                "refusal": refusals(steered), "gate_overlap": overlap,
                "overhead": overhead(session, plans, items, args.rounds, args.new_tokens)}
        steps.append(step)
        log(f"k={k} fit {fit_s:.1f} s  forgotten {step['forgotten']}  retain {step['retain']}  utility "
            f"{step['utility']}  overhead x{step['overhead']['vs_plain']} (vs one x{step['overhead']['vs_one']})")
    # the k-th addition against the same request fitted from scratch (no retain cache): cost and equality,
    # alternated in rounds (cache, scratch / scratch, cache) so a busy machine slows both alike
    last = request_recipe(data, requests[-1], f"request-{len(requests)}")
    pairs, same = [], True
    for r in range(args.fit_rounds):
        secs = {}
        for mode in (("cache", "scratch") if r % 2 == 0 else ("scratch", "cache")):
            t0 = time.perf_counter()
            b = extract(last, session, progress=False, retain_cache=str(cache) if mode == "cache" else None)
            secs[mode] = time.perf_counter() - t0
            same &= b.manifest.tensors_sha256 == bundles[-1].manifest.tensors_sha256
        pairs.append(secs)
    fit = {"per_request": fits, "rounds": [{k: round(v, 2) for k, v in p.items()} for p in pairs],
           "scratch_seconds_last": round(statistics.median(p["scratch"] for p in pairs), 2),
           "incremental_seconds_last": round(statistics.median(p["cache"] for p in pairs), 2),
           "incremental_vs_scratch": round(statistics.median(p["cache"] / p["scratch"] for p in pairs), 3),
           "identical_bundle": same, "threads": torch.get_num_threads()}
    log(f"fit of request {len(requests)}: {fit['incremental_seconds_last']} s with the retain cache vs "
        f"{fit['scratch_seconds_last']} s from scratch (median paired ratio {fit['incremental_vs_scratch']}); "
        f"identical bundles: {same}")
    summary = {"vanilla": {"forgotten": {f"r{j + 1}": pair(vanilla.records, "forget", set(r))
                                         for j, r in enumerate(requests)},
                           "retain": pair(vanilla.records, "retain"), "utility": pair(vanilla.records, "utility"),
                           "refusal": refusals(vanilla)},
               "requests": requests, "fit": fit, "n_items": len(items)}
    return steps, summary


# ------------------------------------------------------------------------------------------ report
def targets(steps: list, summary: dict) -> dict:
    out = {}
    for model, s in summary.items():
        mine = [st for st in steps if st["model"] == model]
        last = mine[-1]
        earlier = [v for st in mine for req, cell in st["forgotten"].items() for v in cell.values()
                   if v is not None and int(req[1:]) < st["k"]]
        drop = [s["vanilla"][sp][m] - last[sp][m] for sp in ("retain", "utility") for m in ("vqa", "qa")
                if s["vanilla"][sp][m] is not None and last[sp][m] is not None]
        out[model] = {
            "earlier_forget_max": {"value": max(earlier) if earlier else None, "target": "<= 35",
                                   "holds": bool(earlier) and max(earlier) <= TARGETS["earlier_forget_max"]},
            "retain_utility_drop_at_k5": {"value": round(max(drop), 1) if drop else None, "target": "<= 3 points",
                                          "holds": bool(drop) and max(drop) <= TARGETS["retain_utility_drop_max"]},
            "overhead_at_k5": {"value": last["overhead"]["vs_plain"], "target": "<= 1.10x plain generate",
                               "holds": last["overhead"]["vs_plain"] <= TARGETS["overhead_max"]}}
    return out


def plot(steps: list, model: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mine = [s for s in steps if s["model"] == model]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, mod in zip(axes, ("vqa", "qa")):
        for req in mine[-1]["forgotten"]:
            xs = [s["k"] for s in mine if req in s["forgotten"]]
            ax.plot(xs, [s["forgotten"][req][mod] for s in mine if req in s["forgotten"]], "o-", label=f"forget {req}")
        for split, style in (("retain", "k--"), ("utility", "k:")):
            ax.plot([s["k"] for s in mine], [s[split][mod] for s in mine], style, label=split)
        ax.axhline(35, color="red", lw=0.8)
        ax.set_title(f"{model}: classification {mod.upper()}")
        ax.set_xlabel("requests composed (k)")
        ax.set_xticks([s["k"] for s in mine])
    axes[0].set_ylabel("accuracy (%)")
    axes[1].legend(fontsize=7, loc="center right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(result: dict, smoke: bool) -> str:
    fmt = lambda c: " / ".join("-" if c[m] is None else f"{c[m]:.0f}" for m in ("vqa", "qa"))  # noqa: E731
    lines = ["# Forget requests over time: composed bundles", "",
             ("**Smoke run**: tiny random-weight models; the figures test the pipeline, not forgetting." if smoke
              else "Embedded models, shipped recipe, one bundle per request (2 people each), composed by the "
                   "sum of gated writes."), "",
             f"Command: `{result['command']}`", ""]
    for model, s in result["summary"].items():
        mine = [st for st in result["steps"] if st["model"] == model]
        reqs = list(mine[-1]["forgotten"])
        lines += [f"## {model}", "", f"Requests (people): {', '.join(f'{r}={ids}' for r, ids in zip(reqs, s['requests']))}",
                  "", "Classification accuracy (%), VQA / QA. Forget: each request's own people.", "",
                  "| k | " + " | ".join(f"forget {r}" for r in reqs) + " | retain | utility | refusal must-refuse / "
                  "must-comply | gates >= 2 open (forget / retain %) | overhead vs plain | vs one bundle |",
                  "|" + "---|" * (len(reqs) + 7)]
        v = s["vanilla"]
        lines.append("| vanilla | " + " | ".join(fmt(v["forgotten"][r]) for r in reqs) + f" | {fmt(v['retain'])} | "
                     f"{fmt(v['utility'])} | {v['refusal']['refused_must_refuse']} / {v['refusal']['refused_must_comply']}"
                     " | - | - | - |")
        for st in mine:
            o, g = st["overhead"], st["gate_overlap"]
            lines.append(f"| {st['k']} | " + " | ".join(fmt(st["forgotten"][r]) if r in st["forgotten"] else "" for r in reqs)
                         + f" | {fmt(st['retain'])} | {fmt(st['utility'])} | {st['refusal']['refused_must_refuse']} / "
                         f"{st['refusal']['refused_must_comply']} | {g['forget']['open_two_or_more']} / "
                         f"{g['retain']['open_two_or_more']} | {o['vs_plain']}x | {o['vs_one']}x |")
        f = s["fit"]
        lines += ["", f"Fit of request {len(reqs)}: {f['incremental_seconds_last']} s reusing request 1's retain "
                  f"activations vs {f['scratch_seconds_last']} s from scratch (median of {len(f['rounds'])} paired "
                  f"ratios: {f['incremental_vs_scratch']}x); "
                  f"bit-identical bundle: {f['identical_bundle']}.", "",
                  f"![{model}](compose_{model}.png)", ""]
        t = result["targets"][model]
        lines += ["| target | value | holds |", "|---|---|---|"] + [
            f"| {name} ({x['target']}) | {x['value']} | {'yes' if x['holds'] else 'no'} |" for name, x in t.items()] + [""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="llava,qwen2_5_vl")
    ap.add_argument("--smoke", action="store_true", help="tiny random models; writes runs/compose-smoke/")
    ap.add_argument("--requests", type=int, default=5)
    ap.add_argument("--per-request", type=int, default=2)
    ap.add_argument("--per-person", type=int, default=None, help="forget/test items per person and modality")
    ap.add_argument("--limit", type=int, default=None, help="retain/utility items per modality (refusal: 2x)")
    ap.add_argument("--rounds", type=int, default=15, help="overhead rounds per k")
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--fit-rounds", type=int, default=3, help="alternated cached / scratch fits of the last request")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0, help="which forget people form which request")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(int(os.environ.get("STEERKIT_BENCH_THREADS", "2")))
    if args.smoke:
        args.per_person = args.per_person or 1
        args.limit = args.limit or 4
        args.rounds = min(args.rounds, 3)
        args.fit_rounds = min(args.fit_rounds, 2)
        args.new_tokens = min(args.new_tokens, 4)
    out = Path(args.out) if args.out else (ROOT / "runs/compose-smoke/compose.json" if args.smoke
                                           else ROOT / "benchmarks/results/compose.json")
    steps, summary = [], {}
    t0 = time.perf_counter()
    for model in args.models.split(","):
        s, summ = run_model(model, args)
        steps += s
        summary[model] = summ
        plot(steps, model, out.parent / f"compose_{model}.png")
    result = {"steps": steps, "summary": summary, "targets": targets(steps, summary), "smoke": args.smoke,
              "command": "python benchmarks/compose.py " + " ".join(sys.argv[1:]),
              "seconds": round(time.perf_counter() - t0, 1)}
    from steerkit.evaluate.report import atomic_write_text

    atomic_write_text(out, json.dumps(result, indent=1))
    atomic_write_text(out.with_suffix(".md"), render(result, args.smoke))
    log(f"wrote {out} and {out.with_suffix('.md')} in {result['seconds']} s")


if __name__ == "__main__":
    main()
