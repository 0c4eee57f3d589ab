"""Two probes of the image gate's open problems (issue #4 findings), on the embedded LLaVA.

1. **Where would a gate find identity in transformed portraits?** Image prompts of every split are read
   with two poolings (the mean over image tokens, as the shipped gate reads them, and the last prompt
   token) at resid_pre of layers 1-3 and at the output of the last layer. Prototype scores (cosine,
   within-person whitened cosine, Fisher discriminant, as in ``benchmarks/gate_scores.py``) are fitted on
   the forget people and the retain people not held out; negatives are the held-out retain people, their
   transformed portraits and the utility set. Reported: AUC and the share above the negatives' 1 %
   false-open threshold, for forget and test (transformed) portraits.
2. **Which utility people open the image gate, and are their portraits near a forget portrait?** With
   the shipped pooling (image-token mean, layer 2, cosine), the utility people scoring above the held-out
   retain people's 99th percentile, their raw scores, and the pixel L2 distance from each utility
   portrait to the nearest forget and nearest held-out retain portrait.

    python benchmarks/gate_probe.py        # ~3 min on 2 cores; writes benchmarks/results/gate_probe.json
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from gate_scores import fit, open_embedded, row  # noqa: E402

from steerkit.activations import collect  # noqa: E402
from steerkit.bench.portraits import transform  # noqa: E402
from steerkit.compile import site_ref  # noqa: E402
from steerkit.evaluate.report import atomic_write_text  # noqa: E402
from steerkit.extraction import _holdout_split  # noqa: E402
from steerkit.recipe import WorldSource  # noqa: E402
from steerkit.sources import load_source  # noqa: E402

KINDS = ("cosine", "whitened_cosine", "discriminant")


def main() -> None:
    t0 = time.perf_counter()
    args, spec, session = open_embedded(__doc__, "gate_probe.json")
    last = session.dims[1] - 1
    refs = [site_ref(session.adapter, "resid_pre", layer) for layer in (1, 2, 3)]
    out_ref = site_ref(session.adapter, "resid_post", last)

    def images(split: str):
        rows = load_source(WorldSource(kind="world", split=split, forget_ratio=args.ratio), Path, spec.world)
        return [it for it in rows if it.image is not None]

    data = {s: images(s) for s in ("forget", "retain", "utility", "test")}
    held = _holdout_split([it.id for it in data["retain"]], 0.2, 0)
    rng = np.random.default_rng(7)
    parts = {"forget": data["forget"], "test": data["test"], "utility": data["utility"],
             "fit": [it for it in data["retain"] if it.id not in held],
             "held": [it for it in data["retain"] if it.id in held]}
    parts["held_aug"] = [dataclasses.replace(it, image=transform(it.image, rng)) for it in parts["held"]]
    ids = {name: [it.id for it in rows] for name, rows in parts.items()}

    results: dict = {"setting": {"model": args.model, "forget_ratio": args.ratio, "world_seed": args.seed,
                                 "layers": [1, 2, 3, f"output of {last}"]}, "identity": {}}
    acts_by_pool = {}
    for pool in ("image_or_prompt", "last_prompt_token"):
        acts = {}
        for name, rows in parts.items():
            a = collect(session, rows, refs, positions=pool, progress=False)
            b = collect(session, rows, [out_ref], positions=pool, progress=False)
            acts[name] = {**{str(k): v.double() for k, v in a.items()}, "output": b[last].double()}
        acts_by_pool[pool] = acts
        table = {}
        for layer in ("1", "2", "3", "output"):
            def get(name, layer=layer):
                return acts[name][layer]

            for kind in KINDS:
                score = fit(get("forget"), ids["forget"], get("fit"), ids["fit"], kind, 0.01)
                neg = torch.cat([score(get(n)) for n in ("held", "held_aug", "utility")])
                table[f"{layer}/{kind}"] = row(score(get("forget")), score(get("test")), neg)
                print(pool, layer, kind, table[f"{layer}/{kind}"], file=sys.stderr, flush=True)
        results["identity"][pool] = table

    # 2. the utility people the shipped image gate opens on
    acts = acts_by_pool["image_or_prompt"]
    score = fit(acts["forget"]["2"], ids["forget"], acts["fit"]["2"], ids["fit"], "cosine")
    held_scores = score(acts["held"]["2"])
    cut = float(torch.quantile(held_scores, 0.99))
    s_util = score(acts["utility"]["2"])

    def pixels(item) -> np.ndarray:
        return np.asarray(item.image.convert("RGB"), dtype=np.float32).ravel() / 255

    forget_px = {it.id: pixels(it) for it in parts["forget"]}
    held_px = {it.id: pixels(it) for it in parts["held"]}
    people = {}
    for pid in sorted(set(ids["utility"])):
        rows = [i for i, x in enumerate(ids["utility"]) if x == pid]
        x = pixels(parts["utility"][rows[0]])
        people[pid] = {"max_score": round(float(s_util[rows].max()), 6), "opens": bool(s_util[rows].max() > cut),
                       "pixel_l2_nearest_forget": round(float(min(np.linalg.norm(x - v) for v in forget_px.values())), 2),
                       "pixel_l2_nearest_held_retain": round(float(min(np.linalg.norm(x - v)
                                                                         for v in held_px.values())), 2)}
    s_forget = score(acts["forget"]["2"])
    results["utility_collisions"] = {
        "held_retain_q99": round(cut, 6), "held_retain_max": round(float(held_scores.max()), 6),
        "forget_min": round(float(s_forget.min()), 6),
        "utility_people_opening": sorted(p for p, v in people.items() if v["opens"]), "people": people}
    results["seconds"] = round(time.perf_counter() - t0, 1)
    results["date"] = time.strftime("%Y-%m-%d")
    from benchmarks.provenance import provenance

    results["provenance"] = provenance()
    out = atomic_write_text(args.out, json.dumps(results, indent=1))
    print(json.dumps({k: v for k, v in results["utility_collisions"].items() if k != "people"}), file=sys.stderr)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
