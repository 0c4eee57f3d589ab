"""Issue #12: forgetting that generalises. steerkit and the four training baselines under the request-only
protocol (every fit reads only the forget request: the forget people's fine-tuning pairs and photos, the
rest of the fine-tuning data as retain; no evaluation prompt of any split) beside the paper protocol, at
equal data; with chance metrics (distance from chance, rank of the correct option, elimination attack) and
the re-elicitation attacks. Writes benchmarks/results/protocol.{json,md}.

  python benchmarks/protocol.py                    # both embedded models, forget 5/10/15 %, seeds 0-2
  python benchmarks/protocol.py --models llava --ratios 10 --seeds 0 --methods steerkit,ga
  python benchmarks/protocol.py --smoke            # tiny test world and random tiny LLaVA: plumbing only

Protocols per method: steerkit request_only = recipes/unlearning/request_only_embedded_<model>.yaml, steerkit
paper = recipes/unlearning/mllmeraser_embedded_<model>.yaml (fitted on the forget split's own prompts), both
at their recipe's fixed lambda (no Val_Set search: Val_Set prompts are evaluation prompts). Baselines
request_only train on the request's forget pairs (eval prompts dropped; refusal pairs left out: ascending on
them would unlearn refusing) and its retain pairs; baselines paper train on ft_Data split by forget_N IDs, as
`steerkit unlearn` does. Hyperparameters: baselines/<method>.yaml. A rerun replaces only the cells it measures.
--smoke numbers come from a randomly initialised model: they check that every path runs, nothing more.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from steerkit.evaluate.report import atomic_write_text  # noqa: E402

BASELINES = ("ga", "ga_diff", "kl_min", "npo")
METHODS = ("steerkit",) + BASELINES
PROTOCOLS = ("request_only", "paper")
RECIPE = {"request_only": "unlearning/request_only_embedded_{model}.yaml",
          "paper": "unlearning/mllmeraser_embedded_{model}.yaml"}
SPLITS = ["forget", "test", "retain", "utility"]


class Setup:
    """Where one (model, seed) runs: the embedded model and world, or (--smoke) a tiny model and world on disk."""

    def __init__(self, model: str, seed: int, smoke_dir: Path | None):
        self.model, self.seed, self.smoke = model, seed, smoke_dir

    @property
    def root(self) -> Path:
        from steerkit.sources import world_root
        from steerkit.recipe import WorldSpec

        return self.smoke / "world" if self.smoke else world_root(WorldSpec(seed=self.seed))

    def model_spec(self) -> dict:
        if self.smoke:
            return {"id": str(self.smoke / "model")}
        return {"id": f"embedded:{self.model}", "world": {"seed": self.seed, "n_profiles": 100}}

    def recipe(self, protocol: str, ratio: int):
        """The protocol's recipe retargeted to this model, ratio and seed (smoke: mllmu/jsonl sources on the
        tiny world, small limits, layers of the 2-layer tiny model)."""
        import yaml

        from steerkit.recipe import parse_recipe_text
        from steerkit.yamlio import read_yaml

        path = ROOT / "recipes" / RECIPE[protocol].format(model=self.model)
        data = _retarget(read_yaml(path).data, ratio)
        data["model"] = self.model_spec()
        data.pop("bundle", None)
        data["eval"] = {"forget_ratio": ratio, "splits": SPLITS, "data": str(self.root) if self.smoke else None,
                        **({"limit": 4} if self.smoke else {})}
        if self.smoke:
            data = _smoke_sources(data, self.root, ratio)
        loaded = parse_recipe_text(yaml.safe_dump(data), f"{protocol}[{self.model},f{ratio},s{self.seed}]")
        loaded.base_dir = path.parent
        return loaded


def _retarget(node, ratio: int):
    if isinstance(node, dict):
        return {k: (ratio if k == "forget_ratio" else _retarget(v, ratio)) for k, v in node.items()}
    if isinstance(node, list):
        return [_retarget(v, ratio) for v in node]
    return node


def _smoke_sources(data: dict, root: Path, ratio: int) -> dict:
    def convert(src: dict, limit: int) -> dict:
        if src.get("contrast"):
            name = src["contrast"]
            file = f"forget_{ratio}_{name.split('_')[1]}.jsonl" if name.startswith("forget_") else f"{name}.jsonl"
            return {"kind": "jsonl", "path": str(root / "contrast" / file), "limit": limit}
        return {**{k: v for k, v in src.items() if k != "kind"}, "kind": "mllmu", "path": str(root), "limit": limit}

    d = data["direction"]
    for side in ("recall", "erasure"):
        d[side]["source"] = convert(d[side]["source"], 16)
    g = data["gate"]
    g["forget"] = [convert(s, 48) for s in g["forget"]]
    g["retain"] = [convert(s, 48) for s in g["retain"]]
    g["layer"] = 0
    data["steer"]["layers"] = {"start": 0}
    return data


def _chance(session, steerer, result, items) -> dict:
    from steerkit.evaluate.chance import chance_cells
    from steerkit.option_scores import option_scores

    keep = [i for i, it in enumerate(items) if it.task == "classification" and it.split in ("forget", "test")]
    scores = option_scores(session, [items[i] for i in keep], steerer, batch_size=32)
    return chance_cells([result.records[i] for i in keep], scores)


def _attacks(setup: Setup, ratio: int, items, gen) -> dict:
    from steerkit.data.attacks import ATTACKS, attack_items
    from steerkit.evaluate.attacks import run_attacks

    forget = [it for it in items if it.split == "forget" and it.task == "classification"]
    sets = {a: attack_items(setup.root, forget, a, forget_ratio=ratio, seed=setup.seed) for a in ATTACKS}
    metrics = run_attacks(sets, gen, batch_size=32)
    out = {}
    for attack, m in metrics.items():
        cells = m.get("forget", {}).get("classification", {})
        out[attack] = {mod: {"accuracy": c["accuracy"], "n": c["n"]} for mod, c in cells.items()}
    return out


def _measure(setup, ratio, session, steerer, items) -> dict:
    from steerkit.eval_job import make_fns
    from steerkit.evaluate import evaluate

    gen, gate_fn = make_fns(session, steerer)
    result = evaluate(items, gen, batch_size=32, progress=False, gate_fn=gate_fn)
    return {"scores": result.metrics, "elimination": _chance(session, steerer, result, items),
            "attacks": _attacks(setup, ratio, items, gen)}


def run_steerkit(setup: Setup, protocol: str, ratio: int, session, items) -> dict:
    from steerkit.extraction import extract
    from steerkit.pipeline import plan_for
    from steerkit.runtime_nnsight import steer

    loaded = setup.recipe(protocol, ratio)
    t0 = time.perf_counter()
    bundle = extract(loaded, session, progress=False)
    fit_s = time.perf_counter() - t0
    plan = plan_for(loaded, session, bundle)
    with steer(session.model, plan, session.image_token_id) as st:
        got = _measure(setup, ratio, session, st, items)
    m = bundle.manifest
    return {**got, "lambda": loaded.recipe.steer.strength.lambda_, "fit_seconds": round(fit_s, 2),
            "fit_data": {"recall": m.direction.get("recall"), "erasure": m.direction.get("erasure"),
                         "gate_forget": m.gate.get("n_forget"), "gate_retain": m.gate.get("n_retain_fit"),
                         "gate_fit": m.gate.get("fit")}}


def run_baseline(setup: Setup, protocol: str, method: str, ratio: int, session, items, smoke: bool) -> dict:
    from steerkit.data.request import read_request
    from steerkit.unlearn.config import load_unlearn_config
    from steerkit.unlearn.trainer import split_pairs, unlearn_session

    sets = [f"data.forget_ratio={ratio}", f"seed={setup.seed}", "save=false"]
    if smoke:
        sets += ["train.steps=2", "train.batch_size=4", f"data.path={setup.root}"]
    else:
        sets += [f"model.id=embedded:{setup.model}", f"model.world.seed={setup.seed}"]
    cfg = load_unlearn_config(ROOT / "baselines" / f"{method}.yaml", sets)
    if protocol == "request_only":
        req = read_request(setup.root, ratio)
        forget, retain = req.forget, req.retain if cfg.config.uses_retain else []
        fit_data = req.summary()
    else:
        forget, retain = split_pairs(cfg)
        fit_data = {"forget": len(forget), "retain": len(retain), "configs": cfg.config.data.train_configs}
    stats = unlearn_session(session, forget, retain, cfg.config, progress=False)
    return {**_measure(setup, ratio, session, None, items), "fit_seconds": round(stats.train_seconds, 2),
            "fit_data": fit_data, "train": {"steps": stats.steps, "lr": cfg.config.train.lr}}


def run_group(setup: Setup, ratio: int, methods, protocols, log) -> list[dict]:
    """Every requested (protocol, method) cell of one model, ratio and seed, sharing the vanilla run."""
    from steerkit.eval_job import eval_items_for
    from steerkit.recipe import ModelSpec
    from steerkit.session import load_session

    session = load_session(ModelSpec(**setup.model_spec()))
    weights = copy.deepcopy(session.model.state_dict())
    items = eval_items_for(setup.recipe("request_only", ratio), SPLITS)
    t0 = time.perf_counter()
    vanilla = _measure(setup, ratio, session, None, items)
    log(f"vanilla {setup.model} f{ratio} s{setup.seed}: {time.perf_counter() - t0:.0f} s")
    cells = []
    for protocol in protocols:
        for method in methods:
            t0 = time.perf_counter()
            session.model.load_state_dict(weights)  # every method starts from the vanilla weights
            run = (run_steerkit(setup, protocol, ratio, session, items) if method == "steerkit" else
                   run_baseline(setup, protocol, method, ratio, session, items, setup.smoke is not None))
            cell = {"protocol": protocol, "method": method, "model": setup.model, "forget_ratio": ratio,
                    "seed": setup.seed, "vanilla": vanilla["scores"], "steered": run.pop("scores"),
                    "elimination": {"vanilla": vanilla["elimination"], "steered": run.pop("elimination")},
                    "attacks": {a: {"vanilla": vanilla["attacks"][a], "steered": v}
                                for a, v in run.pop("attacks").items()},
                    **run, "wall_seconds": round(time.perf_counter() - t0, 1)}
            cells.append(cell)
            log(f"{protocol:<12} {method:<8} {setup.model} f{ratio} s{setup.seed}: {headline(cell)}")
    session.model.load_state_dict(weights)
    return cells


def _acc(scores: dict, split: str, mod: str):
    cell = scores.get(split, {}).get("classification", {}).get(mod)
    return None if cell is None else cell.get("accuracy")


def headline(cell: dict) -> str:
    f = lambda v: "-" if v is None else f"{v:.0f}"  # noqa: E731
    s, e = cell["steered"], cell["elimination"]["steered"]
    parts = [f"{sp} {'/'.join(f(_acc(s, sp, m)) for m in ('vqa', 'qa'))}" for sp in SPLITS]
    elim = "/".join(f(e.get("forget", {}).get(m, {}).get("elimination_accuracy")) for m in ("vqa", "qa"))
    return "  ".join(parts) + f"  elimination(forget) {elim}"


def render(cells: list[dict], smoke: bool) -> str:
    """protocol.md: the head-to-head (request-only rows first), chance metrics, the attack x method table."""
    f = lambda v: "-" if v is None else f"{v:.0f}"  # noqa: E731
    order = sorted(cells, key=lambda c: (PROTOCOLS.index(c["protocol"]), c["model"], c["forget_ratio"], c["seed"],
                                         METHODS.index(c["method"])))
    out = ["# Forgetting that generalises (issue #12)", ""]
    if smoke:
        out += ["**Smoke run: a randomly initialised tiny model on a 20-person world. The numbers check the "
                "plumbing and mean nothing.**", ""]
    out += ["Classification accuracy (%), VQA/QA, greedy. `vanilla` is the same model before unlearning.", "",
            "| protocol | method | model | forget % | seed | forget | test | retain | utility | vanilla forget | "
            "vanilla test |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in order:
        cl = lambda sc, sp: "/".join(f(_acc(sc, sp, m)) for m in ("vqa", "qa"))  # noqa: E731
        out.append(f"| {c['protocol']} | {c['method']} | {c['model']} | {c['forget_ratio']} | {c['seed']} | "
                   f"{cl(c['steered'], 'forget')} | {cl(c['steered'], 'test')} | {cl(c['steered'], 'retain')} | "
                   f"{cl(c['steered'], 'utility')} | {cl(c['vanilla'], 'forget')} | {cl(c['vanilla'], 'test')} |")
    out += ["", "## Chance, not below", "",
            "Per forget/test cell after unlearning: accuracy - chance (25 on 4 options), the mean rank of the correct "
            "option under the model's option scores (2.5 at chance), and the elimination attack's accuracy (pick the "
            "option scored lowest; target <= chance + 10). VQA/QA.", "",
            "| protocol | method | model | forget % | seed | forget acc - chance | forget mean rank | forget elimination "
            "| test acc - chance | test mean rank | test elimination |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in order:
        e = c["elimination"]["steered"]
        g = lambda sp, k: "/".join(  # noqa: E731
            "-" if e.get(sp, {}).get(m) is None else (f"{e[sp][m][k]:+.0f}" if k == "distance_from_chance" else
                                                      f"{e[sp][m][k]:.2f}" if k == "mean_rank" else
                                                      f"{e[sp][m][k]:.0f}") for m in ("vqa", "qa"))
        out.append(f"| {c['protocol']} | {c['method']} | {c['model']} | {c['forget_ratio']} | {c['seed']} | "
                   + " | ".join(g(sp, k) for sp in ("forget", "test")
                                for k in ("distance_from_chance", "mean_rank", "elimination_accuracy")) + " |")
    out += ["", "## Re-elicitation attacks", "",
            "Forget classification accuracy (%) under each attack, mean over the cells measured (VQA and QA pooled "
            "by item count); `vanilla` is the model before unlearning.", ""]
    methods = [m for m in METHODS if any(c["method"] == m for c in cells)]
    for protocol in PROTOCOLS:
        sub = [c for c in cells if c["protocol"] == protocol]
        if not sub:
            continue
        out += [f"**{protocol}**", "", "| attack | vanilla | " + " | ".join(methods) + " |",
                "|---|" + "---|" * (len(methods) + 1)]
        attacks = list(sub[0]["attacks"])
        for a in attacks:
            van = _mean([_pooled(c["attacks"][a]["vanilla"]) for c in sub])
            row = [_mean([_pooled(c["attacks"][a]["steered"]) for c in sub if c["method"] == m]) for m in methods]
            out.append(f"| {a} | {f(van)} | " + " | ".join(f(v) for v in row) + " |")
        out.append("")
    return "\n".join(out) + "\n"


def _pooled(cells: dict):
    n = sum(c["n"] for c in cells.values())
    return sum(c["accuracy"] * c["n"] for c in cells.values()) / n if n else None


def _mean(values):
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="llava,qwen2_5_vl")
    ap.add_argument("--ratios", default="5,10,15")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--protocols", default=",".join(PROTOCOLS))
    ap.add_argument("--smoke", action="store_true", help="tiny test world and random tiny LLaVA (plumbing only)")
    ap.add_argument("--out", default=None, help="default: results/protocol.json (--smoke: results/smoke/protocol.json)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    out = Path(args.out or ROOT / "benchmarks/results" / ("smoke/protocol.json" if args.smoke else "protocol.json"))
    methods, protocols = args.methods.split(","), args.protocols.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        if args.smoke:
            from steerkit.testing.fixtures import tiny_workdir

            tiny_workdir(Path(tmp))
            grid = [(Setup("llava", 0, Path(tmp)), 10)]
        else:
            grid = [(Setup(m, int(s), None), int(r)) for m in args.models.split(",") for s in args.seeds.split(",")
                    for r in args.ratios.split(",")]
        old = json.loads(out.read_text()).get("cells", []) if out.exists() else []
        new = []
        for setup, ratio in grid:
            new += run_group(setup, ratio, methods, protocols, log)
    key = lambda c: (c["protocol"], c["method"], c["model"], c["forget_ratio"], c["seed"])  # noqa: E731
    measured = {key(c) for c in new}
    cells = [c for c in old if key(c) not in measured] + new
    doc = {"cells": cells, "smoke": args.smoke, "torch": torch.__version__, "threads": torch.get_num_threads(),
           "date": time.strftime("%Y-%m-%d"), "command": "python benchmarks/protocol.py " + " ".join(sys.argv[1:])}
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(doc, indent=1) + "\n")
    atomic_write_text(out.with_suffix(".md"), render(cells, args.smoke))
    log(f"wrote {out} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
