"""Which prototype score separates the forget people? Per modality and layer.

Scores: per-dimension-whitened cosine, cosine after whitening by the within-person covariance, and a
Fisher discriminant (total covariance), the last two at several shrinkage values.
On an embedded model (default: LLaVA, world seed 0, forget 10 %), the prompts of every split are read
once at resid_pre of layers 1-3, pooled as the prototype gate pools them (image tokens of image prompts,
the whole text of text prompts). Prototypes are fitted on the forget people and the retain people not
held out (the same 20 % person-level hold-out as `steerkit extract`); negatives are the held-out retain
people plus the utility set. For each score it reports the AUC and the share of forget / test prompts
above the negatives' 99th percentile (the 1 % false-open operating point the recipes calibrate to).
Image prompts are also scored with prototypes fitted on 4 transformed copies of each forget portrait
(the test split's transforms), with transformed held-out retain portraits added to the negatives.

  python benchmarks/gate_scores.py [--model llava] [--out benchmarks/results/gate_scores.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from steerkit.activations import collect  # noqa: E402
from steerkit.bench.portraits import transform  # noqa: E402
from steerkit.compile import site_ref  # noqa: E402
from steerkit.data.items import ContrastItem  # noqa: E402
from steerkit.evaluate.report import atomic_write_text  # noqa: E402
from steerkit.extraction import _holdout_split, _within_person  # noqa: E402
from steerkit.gates import gate_auc  # noqa: E402
from steerkit.recipe import ModelSpec, WorldSource  # noqa: E402
from steerkit.session import load_session  # noqa: E402
from steerkit.sources import load_source  # noqa: E402

LAYERS = (1, 2, 3)
SHRINKAGE = (0.003, 0.01, 0.1, 1.0)


def open_share(pos: torch.Tensor, neg: torch.Tensor, fpr: float = 0.01) -> float:
    return float((pos > torch.quantile(neg, 1 - fpr)).double().mean())


def fit(F: torch.Tensor, fid: list[str], R: torch.Tensor, rid: list[str], kind: str, shrinkage: float = 0.01):
    """The prototype scores of steerkit.extraction._fit_prototypes, max over people (before calibration)."""
    mu = R.mean(0)
    ids = sorted(set(fid))
    means = torch.stack([F[[i for i, x in enumerate(fid) if x == k]].mean(0) for k in ids])
    if kind == "cosine":
        w = 1.0 / (R.std(0) + 1e-6 * R.std(0).mean() + 1e-12)
        P = (means - mu) * w

        def score(X):
            z = (X - mu) * w
            return ((z @ P.T) / (z.norm(dim=1, keepdim=True) * P.norm(dim=1)[None]).clamp(min=1e-12)).max(1).values
        return score
    base = _within_person(R, rid) if kind == "whitened_cosine" else R - mu
    cov = base.T @ base / (base.shape[0] - 1)
    cov = cov + shrinkage * cov.diagonal().mean() * torch.eye(R.shape[1], dtype=R.dtype)
    if kind == "whitened_cosine":
        evals, evecs = torch.linalg.eigh(cov)
        W = (evecs * evals.rsqrt()) @ evecs.T
        P = (means - mu) @ W

        def wscore(X):
            z = (X - mu) @ W
            return ((z @ P.T) / (z.norm(dim=1, keepdim=True) * P.norm(dim=1)[None]).clamp(min=1e-12)).max(1).values
        return wscore
    inv = torch.linalg.inv(cov)
    G = (means - mu) @ inv
    G = G / ((R - mu) @ G.T).std(0)[:, None]
    return lambda X: ((X - mu) @ G.T).max(1).values


def row(F, T, neg):
    return {"auc_forget": round(gate_auc(F, neg), 4), "auc_test": round(gate_auc(T, neg), 4),
            "open_at_1pct_forget": round(open_share(F, neg), 3), "open_at_1pct_test": round(open_share(T, neg), 3)}


def open_embedded(doc: str, out_name: str):
    """Parse --model --ratio --seed --out and load that embedded model (two threads): (args, spec, session)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="llava")
    ap.add_argument("--ratio", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results" / out_name))
    args = ap.parse_args()
    torch.set_num_threads(2)
    spec = ModelSpec(id=f"embedded:{args.model}", world={"seed": args.seed})
    return args, spec, load_session(spec)


def main() -> None:
    t0 = time.perf_counter()
    args, spec, session = open_embedded(__doc__, "gate_scores.json")
    refs = [site_ref(session.adapter, "resid_pre", layer) for layer in LAYERS]

    def items(split: str) -> list[ContrastItem]:
        return load_source(WorldSource(kind="world", split=split, forget_ratio=args.ratio), Path, spec.world)

    data = {s: items(s) for s in ("forget", "retain", "utility", "test")}
    held = _holdout_split([it.id for it in data["retain"]], 0.2, 0)
    rng = np.random.default_rng(7)

    def augmented(rows: list[ContrastItem], k: int) -> list[ContrastItem]:
        return [dataclasses.replace(it, image=transform(it.image, rng)) for it in rows for _ in range(k)]

    acts = {}
    for image in (False, True):
        for split, rows in data.items():
            rows = [it for it in rows if (it.image is not None) == image]
            parts = {"fit": [it for it in rows if it.id not in held], "held": [it for it in rows if it.id in held]} \
                if split == "retain" else {"all": rows}
            if image and split == "forget":
                parts["aug"] = augmented(rows, 4)
            if image and split == "retain":
                parts["held_aug"] = augmented(parts["held"], 1)
            for part, sub in parts.items():
                acts[(image, split, part)] = ({k: v.double() for k, v in collect(
                    session, sub, refs, positions="image_or_prompt", progress=False).items()}, [it.id for it in sub])
    results = {"setting": {"model": args.model, "forget_ratio": args.ratio, "world_seed": args.seed,
                           "site": "resid_pre", "pool": "image_or_prompt mean"}, "text": {}, "image": {}}
    for layer in LAYERS:
        get = lambda image, split, part="all": acts[(image, split, part)][0][layer]  # noqa: E731
        fid = acts[(False, "forget", "all")][1]
        neg_rows = lambda image: [get(image, "retain", "held"), get(image, "utility")]  # noqa: E731
        for image, mod in ((False, "text"), (True, "image")):
            F, T, R = get(image, "forget"), get(image, "test"), get(image, "retain", "fit")
            fid, rid = acts[(image, "forget", "all")][1], acts[(image, "retain", "fit")][1]
            table = {}
            for kind, shrink in [("cosine", None)] + [(k, s) for k in ("whitened_cosine", "discriminant")
                                                       for s in SHRINKAGE]:
                score = fit(F, fid, R, rid, kind, shrink or 0.0)
                negs = neg_rows(image) + ([get(image, "retain", "held_aug")] if image else [])
                neg = torch.cat([score(x) for x in negs])
                name = kind if shrink is None else f"{kind}_{shrink}"
                table[name] = row(score(F), score(T), neg)
                if image and kind == "cosine":
                    aug_id = acts[(True, "forget", "aug")][1]
                    s_aug = fit(torch.cat([F, get(True, "forget", "aug")]), fid + aug_id, R, rid, kind)
                    neg = torch.cat([s_aug(x) for x in negs])
                    table["cosine_fit_on_transformed_copies"] = row(s_aug(F), s_aug(T), neg)
            results[mod][str(layer)] = table
            print(f"layer {layer} {mod}: " + "; ".join(f"{k} AUC {v['auc_forget']}/{v['auc_test']} open "
                                                        f"{v['open_at_1pct_forget']}/{v['open_at_1pct_test']}"
                                                        for k, v in table.items()), file=sys.stderr, flush=True)
    results["seconds"] = round(time.perf_counter() - t0, 1)
    results["date"] = time.strftime("%Y-%m-%d")
    from benchmarks.provenance import provenance

    results["provenance"] = provenance()
    out = atomic_write_text(args.out, json.dumps(results, indent=1))
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
