"""extract: recipe + model -> direction bundle (directions per layer, gate vectors, provenance).

Steps (method.md): (1) read recall and erasure prompts (PGD-perturbing recall images when asked) at the
last real prompt token of every steered layer, all layers in one pass per batch; (2) mean difference
per layer; (3) fit the gate on forget vs retain activations at the gate's read positions, holding out
whole retain people to score leakage honestly; (4) write a bundle whose manifest records the recipe,
the data hashes and fit statistics. Same recipe and seed -> identical tensors.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any, Optional

import torch

from .activations import collect
from .bundle import Bundle
from .compile import resolve_layers, site_ref
from .directions import compute_directions
from .errors import CompileError, Problem
from .gates import calibrate_threshold, fit_nullspace_gate, fit_ridge_gate, gate_auc
from .recipe import LoadedRecipe
from .sources import load_source, source_path


def _data_hash(path) -> dict:
    import os

    h = hashlib.sha256()
    if path is None or not os.path.exists(path):
        return {"path": str(path), "sha256": "0" * 64, "n": 0}
    files = [path] if os.path.isfile(path) else sorted(
        os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs if f.endswith((".parquet", ".jsonl")))
    for f in files:
        h.update(os.path.relpath(f, path).encode() if f != path else b"")
        with open(f, "rb") as fh:
            h.update(hashlib.sha256(fh.read()).digest())
    return {"path": str(path), "sha256": h.hexdigest(), "n": len(files)}


def _holdout_split(ids: list[str], fraction: float, seed: int) -> set[str]:
    """Whole people held out of the gate fit (retain leakage is scored on people the gate never saw)."""
    people = sorted(set(ids))
    random.Random(seed).shuffle(people)
    return set(people[: int(round(fraction * len(people)))])


def _sides(loaded: LoadedRecipe, sources) -> list:
    r = loaded.recipe
    items = []
    for s in sources:
        items += load_source(s, loaded.resolve, r.model.world, seed=r.seed)
    return items


def extract(loaded: LoadedRecipe, session, *, progress: bool = True) -> Bundle:
    """Run the recipe's extraction on a loaded model session and return the bundle (not yet saved)."""
    recipe = loaded.recipe
    torch.manual_seed(recipe.seed)
    hidden, num_layers = session.dims
    problems: list[Problem] = []
    layers = resolve_layers(recipe.steer.layers, num_layers, problems)
    if problems:
        raise CompileError(f"recipe '{recipe.name}' cannot be extracted", problems)
    site = recipe.steer.site
    refs = [site_ref(session.adapter, site, layer) for layer in layers]
    data: dict[str, dict] = {}
    tensors: dict[str, torch.Tensor] = {}

    direction_meta: dict[str, Any] = {"method": "none"}
    if recipe.direction is not None:
        d = recipe.direction
        recall = _sides(loaded, [d.recall.source])
        erasure = _sides(loaded, [d.erasure.source])
        override, pgd_report = None, None
        if d.recall.image_perturbation is not None:
            from .adversarial import attack

            override, pgd_report = attack(session, recall, d.recall.image_perturbation, seed=recipe.seed,
                                          progress=progress)
        h_rec = collect(session, recall, refs, pixel_override=override, desc="recall", progress=progress)
        h_era = collect(session, erasure, refs, desc="erasure", progress=progress)
        dirs = compute_directions("mean_diff", h_rec, h_era)
        for layer, v in dirs.items():
            if d.normalize:
                v = v / v.norm().clamp(min=1e-12)
            tensors[f"direction.{site}.{layer}"] = v.float()
        direction_meta = {"method": d.method, "normalize": d.normalize, "recall": {"n": len(recall)},
                          "erasure": {"n": len(erasure)}, "pgd": pgd_report,
                          "norms": {str(k): round(float(v.norm()), 6) for k, v in dirs.items()}}
        data["recall"] = _data_hash(source_path(d.recall.source, loaded.resolve, recipe.model.world))
        data["erasure"] = _data_hash(source_path(d.erasure.source, loaded.resolve, recipe.model.world))

    gate_meta = _fit_gate(loaded, session, site, layers, tensors, data, progress)
    return Bundle.create(
        tensors, model_id=session.model_id or "unknown", model_revision=session.revision,
        architecture=session.architecture,
        adapter={"name": session.adapter.name, "schema_version": 1,
                 "sha256": hashlib.sha256(session.adapter.model_dump_json().encode()).hexdigest()},
        hidden_size=hidden, num_layers=num_layers, direction=direction_meta, gate=gate_meta,
        data={k: v for k, v in data.items()}, recipe=recipe.dump(), recipe_sha256=recipe.sha256())


def _fit_gate(loaded: LoadedRecipe, session, site: str, layers: list[int], tensors: dict, data: dict,
              progress: bool) -> dict:
    recipe = loaded.recipe
    g = recipe.gate
    if g.rule in ("always_on", "cosine_threshold"):
        return {"rule": g.rule, **({"threshold": g.threshold} if g.rule == "cosine_threshold" else {})}
    forget = _sides(loaded, g.forget)
    retain = _sides(loaded, g.retain)
    held = _holdout_split([r.id or str(i) for i, r in enumerate(retain)], g.holdout, recipe.seed)
    fit_idx = [i for i, r in enumerate(retain) if (r.id or str(i)) not in held]
    held_idx = [i for i, r in enumerate(retain) if (r.id or str(i)) in held]
    calib_people = _holdout_split([retain[i].id or str(i) for i in fit_idx], 0.25, recipe.seed + 1)
    calib_idx = [i for i in fit_idx if (retain[i].id or str(i)) in calib_people]
    probe_idx = [i for i in fit_idx if (retain[i].id or str(i)) not in calib_people] or fit_idx
    gate_layers = [g.layer if g.layer is None or g.layer >= 0 else g.layer + session.dims[1]] \
        if g.layer is not None else layers
    refs = [site_ref(session.adapter, site, layer) for layer in gate_layers]
    pos = g.read.positions
    h_f = collect(session, forget, refs, positions=pos, desc="gate forget", progress=progress)
    h_r = collect(session, retain, refs, positions=pos, desc="gate retain", progress=progress)
    biases, stats = {}, {}
    for layer in gate_layers:
        F, R = h_f[layer], h_r[layer]
        R_fit, R_held = R[fit_idx], R[held_idx] if held_idx else R[:0]
        if g.rule == "nullspace_linear":
            fit = fit_nullspace_gate(F, R_fit, g.rho, g.gamma, clip=g.clip)
        else:
            # calibrate the bias on retain people the probe was not fitted on: in-sample scores are
            # optimistic, so a threshold set on them would open the gate on new people
            fit = fit_ridge_gate(F, R[probe_idx], gamma=g.gamma, clip=g.clip)
            fit = calibrate_threshold(fit, R[calib_idx] if calib_idx else R_fit,
                                      retain_closed=1.0 - g.retain_open_rate)
        tensors[f"gate.{site}.{layer}"] = fit.g.float()
        biases[str(layer)] = float(fit.bias)
        vf, vr = fit.values(F), fit.values(R_fit)
        vh = fit.values(R_held) if len(held_idx) else None
        raw = lambda H: H.double() @ fit.g.double() + fit.bias  # noqa: E731  (AUC on unclipped scores)
        stats[str(layer)] = {
            "forget_mean": round(float(vf.mean()), 4), "retain_fit_mean": round(float(vr.mean()), 4),
            "retain_heldout_mean": None if vh is None else round(float(vh.mean()), 4),
            "auc_in_sample": round(gate_auc(raw(F), raw(R_fit)), 4),
            "auc_heldout_retain": None if vh is None else round(gate_auc(raw(F), raw(R_held)), 4)}
    params = {k: v for k, v in g.model_dump(mode="json").items() if k not in ("forget", "retain")}
    for i, s in enumerate(g.forget):
        data[f"gate_forget_{i}"] = _data_hash(source_path(s, loaded.resolve, recipe.model.world))
    for i, s in enumerate(g.retain):
        data[f"gate_retain_{i}"] = _data_hash(source_path(s, loaded.resolve, recipe.model.world))
    meta = {**params, "rule": g.rule, "bias": biases, "fit": stats, "n_forget": len(forget),
            "n_retain_fit": len(fit_idx), "n_retain_heldout": len(held_idx)}
    if g.layer is not None:
        meta["layer"] = gate_layers[0]
    return meta
