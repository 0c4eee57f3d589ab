"""Issue #11 robustness: the shipped recipe, calibrated per model, on independently trained models.

A cell is one (architecture, world seed): its own synthetic world and its own embedded model, trained
with the shipped training config. In each cell the shipped recipe (world seed retargeted) extracts a
bundle and calibrates lambda on that model's Val_Set alone (the recipe's ``steer.strength.search``),
and the evaluation splits are scored at that lambda. Nothing of the forget / test / retain / utility
splits is seen by the fit or the choice. Forget and test cells also report the probability of the
correct option, its rank and the elimination attack (pick the option the model scores lowest).

  python benchmarks/robustness.py run --cells llava:0,qwen2_5_vl:0 --device cuda --work DIR
  python benchmarks/robustness.py cell llava:1 --device cpu --work DIR      # one cell, this process
  python benchmarks/robustness.py aggregate DIR [DIR ...]                  # -> results/robustness.{json,md}

``scripts/device_robustness.sh`` is the run that produced results/robustness.json (12 cells in
parallel on one GPU: models trained there, so their keys say ``device: cuda``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

RECIPES = {"llava": ROOT / "recipes/unlearning/mllmeraser_embedded_llava.yaml",
           "qwen2_5_vl": ROOT / "recipes/unlearning/mllmeraser_embedded_qwen2_5_vl.yaml"}
EVAL_SPLITS = ("forget", "test", "retain", "utility")
FORGET_RATIO = 10


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cell_recipe(arch: str, seed: int):
    """The shipped recipe of ``arch`` with its world seed set to ``seed`` and no bundle path."""
    import yaml

    from steerkit.recipe import parse_recipe_text
    from steerkit.yamlio import read_yaml

    data = read_yaml(RECIPES[arch]).data
    data["model"]["world"]["seed"] = seed
    data.pop("bundle", None)
    loaded = parse_recipe_text(yaml.safe_dump(data), f"{RECIPES[arch].name}[seed {seed}]")
    loaded.base_dir = RECIPES[arch].parent
    return loaded


def _letters(prompt: str) -> list[str]:
    return re.findall(r"^([A-Z]): ", prompt, flags=re.M)


def letter_scores(session, items, steerer=None, batch_size: int = 64) -> list[dict]:
    """Per classification item: the probability of each option letter at the answer's first token."""
    import torch

    from steerkit.answer_scores import letter_tokens

    ids = None
    out = []
    for modality in ("vqa", "qa"):
        group = [i for i in items if i.modality == modality]
        for k in range(0, len(group), batch_size):
            batch = group[k:k + batch_size]
            enc = session.encode([i.prompt for i in batch], [i.image for i in batch])
            with torch.no_grad():
                logits = steerer.forward(enc.inputs) if steerer else session.model(**enc.inputs).logits
            last = torch.log_softmax(logits[:, -1].float(), dim=-1).cpu()
            ids = ids or letter_tokens(session.tokenizer, last.shape[-1], tuple("ABCDEFGH"))
            for row, item in zip(last, batch):
                letters = _letters(item.prompt)
                lp = torch.stack([torch.logsumexp(row[ids[L]], 0) for L in letters])  # every token starting with L
                p = torch.softmax(lp, 0)
                order = sorted(range(len(letters)), key=lambda j: -float(p[j]))
                c = letters.index(item.answer)
                out.append({"split": item.split, "modality": modality, "p_correct": float(p[c]),
                            "rank": order.index(c) + 1, "eliminated": order[-1] == c, "n_options": len(letters)})
    return out


def letter_summary(rows: list[dict]) -> dict:
    """split -> modality -> mean p(correct), mean rank, elimination-attack accuracy (%)."""
    out: dict = {}
    for r in rows:
        out.setdefault(r["split"], {}).setdefault(r["modality"], []).append(r)
    return {s: {m: {"p_correct": sum(r["p_correct"] for r in v) / len(v),
                    "mean_rank": sum(r["rank"] for r in v) / len(v),
                    "elimination_accuracy": 100.0 * sum(r["eliminated"] for r in v) / len(v),
                    "chance": 100.0 / v[0]["n_options"], "n": len(v)}
                for m, v in mods.items()} for s, mods in out.items()}


def run_cell(arch: str, seed: int, device: str, work: Path, smoke: bool = False,
             checkpoints: Optional[Path] = None) -> dict:
    import torch

    from steerkit.data.mllmu import eval_items
    from steerkit.eval_job import make_fns
    from steerkit.evaluate import evaluate
    from steerkit.extraction import extract
    from steerkit.models.embedded import ensure_embedded, read_meta
    from steerkit.pipeline import plan_for
    from steerkit.recipe import ModelSpec
    from steerkit.runtime_nnsight import steer
    from steerkit.session import load_session
    from steerkit.sources import world_root

    torch.set_num_threads(int(os.environ.get("STEERKIT_BENCH_THREADS", "1")))
    from provenance import provenance

    result: dict = {"model": arch, "world_seed": seed, "forget_ratio": FORGET_RATIO, "provenance": provenance()}
    out = work / f"cell_{arch}_{seed}.json"

    def save():
        out.write_text(json.dumps(result, indent=1))

    t0 = time.perf_counter()
    kw = {}
    if smoke:  # the pipeline end to end on an untrained tiny model: checks the script, not the method
        from steerkit.models.embedded import default_train_config

        from steerkit.models.small import SIZES

        kw = {"size": dataclasses.replace(SIZES["tiny"], text_layers=4),
              "train": dataclasses.replace(default_train_config(arch), max_steps=3)}
    found = sorted(checkpoints.glob(f"{arch}-w{seed}-n100*")) if checkpoints else []
    path = found[0] if found else ensure_embedded(arch, seed, 100, progress=False, device=device, **kw)
    meta = read_meta(path) or {}
    result.update(checkpoint=path.name, train_device=meta.get("key", {}).get("device", "cpu"),
                  train_threads=meta.get("threads") if meta.get("key", {}).get("device", "cpu") == "cpu" else None,
                  train_seconds=round(meta.get("train_report", {}).get("wall_s", float("nan")), 1),
                  versions={"torch": meta.get("torch"), "transformers": meta.get("transformers")})
    _log(f"{arch} s{seed}: model ready ({time.perf_counter() - t0:.0f} s) at {path}")
    save()
    loaded = cell_recipe(arch, seed)
    session = load_session(ModelSpec(id=str(path), world={"seed": seed}))
    session.model.to(device)
    root = world_root(loaded.recipe.model.world)
    items = []
    for split in EVAL_SPLITS:
        items += eval_items(root, split, FORGET_RATIO, ["classification"], seed=0)
    refusal = eval_items(root, "refusal", FORGET_RATIO, None, seed=0)
    gen, _ = make_fns(session)
    vanilla = evaluate(items + refusal, gen, batch_size=64, progress=False)
    result["vanilla"] = vanilla.metrics
    result["vanilla_letters"] = letter_summary(letter_scores(session, [i for i in items if i.split in ("forget", "test")]))
    save()
    _log(f"{arch} s{seed}: vanilla scored")
    t1 = time.perf_counter()
    bundle = extract(loaded, session, progress=False)  # fits, then runs the recipe's steer.strength.search
    plan = plan_for(loaded, session, bundle)
    result["seconds_extract"] = round(time.perf_counter() - t1, 1)
    result["search"] = bundle.manifest.strength
    chosen = result["lambda"] = bundle.manifest.strength["lambda"]
    save()
    _log(f"{arch} s{seed}: lambda {chosen} chosen on Val_Set")
    with steer(session.model, plan, session.image_token_id) as st:
        g, gate_fn = make_fns(session, st)
        steered = evaluate(items + refusal, g, batch_size=64, progress=False, gate_fn=gate_fn)
        result["steered_letters"] = letter_summary(letter_scores(
            session, [i for i in items if i.split in ("forget", "test")], st))
    result["steered"] = steered.metrics
    result["seconds_total"] = round(time.perf_counter() - t0, 1)
    save()
    _log(f"{arch} s{seed}: done in {result['seconds_total']:.0f} s")
    return result


def run_many(cells: list[tuple[str, int]], device: str, work: Path, budget_s: float = 0,
             checkpoints: Optional[Path] = None) -> None:
    """One subprocess per cell, all at once; cells still running after ``budget_s`` are stopped (what they
    wrote so far stays: each cell rewrites its JSON after every stage)."""
    work.mkdir(parents=True, exist_ok=True)
    procs = []
    for arch, seed in cells:
        log = open(work / f"log_{arch}_{seed}.txt", "w")
        extra = ["--checkpoints", str(checkpoints)] if checkpoints else []
        procs.append(subprocess.Popen([sys.executable, __file__, "cell", f"{arch}:{seed}", "--device", device,
                                       "--work", str(work), *extra], stdout=log, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + budget_s if budget_s else None
    for p in procs:
        try:
            p.wait(timeout=None if deadline is None else max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _log(f"budget spent: stopping {p.args[3]}")
            p.kill()


# ---- aggregation -------------------------------------------------------------------------------------------

def _cls(scores: dict, split: str, mod: str) -> float:
    return scores[split]["classification"][mod]["accuracy"]


def check_cell(c: dict) -> dict:
    """The issue's targets for one cell: forget cls <= 35, retain/utility within 3 points, refusals kept."""
    v, s = c["vanilla"], c["steered"]
    out = {}
    for mod in ("vqa", "qa"):
        out[f"forget_{mod}<=35"] = _cls(s, "forget", mod) <= 35
        for split in ("retain", "utility"):
            out[f"{split}_{mod}_drop<=3"] = _cls(v, split, mod) - _cls(s, split, mod) <= 3
        out[f"refusal_{mod}_kept"] = (s["refusal"]["refusal"][mod]["refusal_rate"]
                                      >= v["refusal"]["refusal"][mod]["refusal_rate"])
    return out


def aggregate(dirs: list[Path], out_json: Path, out_md: Path, commit: Optional[str] = None) -> dict:
    """Cells -> robustness.json / .md. Provenance is the cells' own (the code that measured them); cells
    run before they recorded it take ``commit`` (marked as given by hand)."""
    from steerkit.evaluate.report import atomic_write_text

    cells = []
    for d in dirs:
        for f in sorted(Path(d).glob("cell_*.json")):
            c = json.loads(f.read_text())
            if "steered" not in c:
                _log(f"{f.name}: incomplete cell (kept, marked)")
            cells.append(c)
    cells.sort(key=lambda c: (c["model"], c["world_seed"]))
    for c in cells:
        if "steered" in c:
            c["targets"] = check_cell(c)
    rows = ["| model | world seed | trained on | lambda | forget VQA / QA | test VQA / QA | retain VQA / QA "
            "(vanilla) | utility VQA / QA (vanilla) | refusals VQA / QA (vanilla) | targets met |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        if "steered" not in c:
            rows.append(f"| {c['model']} | {c['world_seed']} | {c.get('train_device')} | incomplete | | | | | | |")
            continue
        v, s = c["vanilla"], c["steered"]

        def pair(sc, split):
            return f"{_cls(sc, split, 'vqa'):.0f} / {_cls(sc, split, 'qa'):.0f}"

        ref = lambda sc: "{:.0f} / {:.0f}".format(*(sc["refusal"]["refusal"][m]["refusal_rate"]  # noqa: E731
                                                   for m in ("vqa", "qa")))
        met = c["targets"]
        rows.append(f"| {c['model']} | {c['world_seed']} | {c.get('train_device')} | {c['lambda']} | "
                    f"{pair(s, 'forget')} ({pair(v, 'forget')}) | {pair(s, 'test')} ({pair(v, 'test')}) | "
                    f"{pair(s, 'retain')} ({pair(v, 'retain')}) | {pair(s, 'utility')} ({pair(v, 'utility')}) | "
                    f"{ref(s)} ({ref(v)}) | {sum(met.values())}/{len(met)}"
                    + ("" if all(met.values()) else " (missed: " + ", ".join(k for k, ok in met.items() if not ok) + ")")
                    + " |")
    summary = _summary(cells)
    md = ["# Robustness: the shipped recipe, calibrated per model", "",
          "Classification accuracy (%), steered (vanilla in brackets), forget 10 %. Each row is its own world "
          "and its own trained model; lambda chosen on that model's Val_Set. Rerun: "
          "`bash scripts/device_robustness.sh` on a GPU machine, then "
          "`python benchmarks/robustness.py aggregate DIR`.", "", *rows, "", "## Mean, std and worst case per split",
          "", *summary["md"]]
    data = {"cells": [{k: c.get(k) for k in ("model", "world_seed", "train_threads", "train_device", "lambda",
                                             "vanilla", "steered", "search", "vanilla_letters", "steered_letters",
                                             "targets", "checkpoint", "versions", "train_seconds",
                                             "seconds_total")} for c in cells],
            "summary": summary["data"],
            "provenance": next((c["provenance"] for c in cells if c.get("provenance")), None) or (
                {"git_commit": commit, "dirty": True, "given_by_hand": True} if commit else None)}
    atomic_write_text(out_json, json.dumps(data, indent=1))
    atomic_write_text(out_md, "\n".join(md) + "\n")
    return data


def _summary(cells: list[dict]) -> dict:
    import statistics as st

    data: dict = {}
    md = ["| model | split | steered VQA mean +- std (worst) | steered QA mean +- std (worst) | "
          "drop vs vanilla VQA / QA, worst |", "|---|---|---|---|---|"]
    for arch in sorted({c["model"] for c in cells}):
        done = [c for c in cells if c["model"] == arch and "steered" in c]
        if not done:
            continue
        for split in EVAL_SPLITS:
            entry = {}
            cols = []
            for mod in ("vqa", "qa"):
                vals = [_cls(c["steered"], split, mod) for c in done]
                drops = [_cls(c["vanilla"], split, mod) - _cls(c["steered"], split, mod) for c in done]
                worst = max(vals) if split in ("forget", "test") else min(vals)
                entry[mod] = {"mean": st.mean(vals), "std": st.pstdev(vals), "worst": worst,
                              "worst_drop": max(drops), "n_models": len(vals)}
                cols.append(f"{st.mean(vals):.1f} +- {st.pstdev(vals):.1f} ({worst:.0f})")
            data.setdefault(arch, {})[split] = entry
            md.append(f"| {arch} | {split} | {cols[0]} | {cols[1]} | "
                      f"{entry['vqa']['worst_drop']:.1f} / {entry['qa']['worst_drop']:.1f} |")
    return {"data": data, "md": md}


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--cells", required=True, help="arch:seed,arch:seed,...")
    r.add_argument("--device", default="cpu")
    r.add_argument("--work", required=True)
    r.add_argument("--budget", type=float, default=0, help="seconds; stop cells still running after it")
    r.add_argument("--checkpoints", type=Path, help="folder of trained models ({arch}-w{seed}-n100*) to use")
    c = sub.add_parser("cell")
    c.add_argument("cell")
    c.add_argument("--device", default="cpu")
    c.add_argument("--work", required=True)
    c.add_argument("--smoke", action="store_true", help="tiny untrained model: checks the script runs")
    c.add_argument("--checkpoints", type=Path, help="folder of trained models ({arch}-w{seed}-n100*) to use")
    a = sub.add_parser("aggregate")
    a.add_argument("dirs", nargs="+")
    a.add_argument("--out", default=str(ROOT / "benchmarks/results/robustness.json"))
    a.add_argument("--commit", help="the commit the cells ran on, for cells that did not record it")
    args = ap.parse_args()
    if args.cmd == "run":
        cells = [(x.split(":")[0], int(x.split(":")[1])) for x in args.cells.split(",")]
        run_many(cells, args.device, Path(args.work), args.budget, args.checkpoints)
    elif args.cmd == "cell":
        arch, seed = args.cell.split(":")
        Path(args.work).mkdir(parents=True, exist_ok=True)
        run_cell(arch, int(seed), args.device, Path(args.work), smoke=args.smoke, checkpoints=args.checkpoints)
    else:
        out = Path(args.out)
        aggregate([Path(d) for d in args.dirs], out, out.with_suffix(".md"), args.commit)


if __name__ == "__main__":
    main()
