"""extract: recipe + model -> direction bundle (directions per layer, gate vectors, provenance).

Steps (method.md): (1) read recall and erasure prompts (PGD-perturbing recall images when asked) at the
last real prompt token of every steered layer, all layers in one pass per batch; (2) mean difference
per layer; (3) fit the gate on forget vs retain activations at the gate's read positions, holding out
whole retain people to score leakage honestly; (4) write a bundle whose manifest records the recipe,
the data hashes and fit statistics; (5) with ``steer.strength.search``, calibrate lambda on
validation questions and store the choice and its table in the manifest (steerkit.strength). Same recipe and
seed -> identical tensors.
"""

from __future__ import annotations

import hashlib
import random
import sys
from typing import Any, Optional

import torch

from .activation_store import ActivationStore
from .activations import collect
from .bundle import Bundle
from .compile import compile_recipe, resolve_layers, site_ref
from .directions import compute_directions
from .errors import CompileError, DataError, Problem
from .fingerprint import fitted_on, mark_checked
from .gate_report import open_rate
from .gates import calibrate_threshold, fit_nullspace_gate, fit_ridge_gate, gate_auc
from .recipe import CosineGate, LinearGateBase, LoadedRecipe, NullspaceGate, PrototypeGate
from .session import ModelSession
from .retain_cache import retain_activations
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


def _sides(loaded: LoadedRecipe, sources, key: str) -> list:
    """Items of every source; a source that fails is reported at its recipe line (``key``: the key path
    of the source, or of the list of sources, whose entries are then ``key.0``, ``key.1``, ...)."""
    r = loaded.recipe
    items = []
    for i, s in enumerate(sources):
        try:
            items += load_source(s, loaded.resolve, r.model.world, seed=r.seed,
                                 key=f"{key}.{i}" if key.startswith("gate.") else key)
        except DataError as exc:
            raise DataError(exc.summary, loaded.locate(exc.problems)) from None
    return items


def extract(loaded: LoadedRecipe, session: ModelSession, *, progress: bool = True, activations: str = "auto",
            spill_dir: Optional[str] = None, retain_cache: Optional[str] = None) -> Bundle:
    """Run the recipe's extraction on a loaded model session and return the bundle (not yet saved).

    ``activations``: where pooled activations wait for the fits, ``memory``, ``disk`` (one float32 file
    per layer in a temporary folder under ``spill_dir``, removed afterwards) or ``auto`` (disk for a
    collection over 1 GiB). The bundle is the same either way. ``retain_cache``: a file keeping the gate's
    retain activations between forget requests (steerkit.retain_cache); the bundle is the same either way.
    """
    log = (lambda m: print(m, file=sys.stderr, flush=True)) if progress else None  # noqa: E731
    questions = None
    if loaded.recipe.steer.strength.search is not None:  # read first: bad calibration data fails before the fit
        from .strength import calibration_questions

        questions = calibration_questions(loaded)
    with ActivationStore(activations, spill_dir=spill_dir, log=log) as store:
        bundle = _extract(loaded, session, progress, store, retain_cache)
    if questions is not None:  # after the store is freed: the search needs only the bundle
        from .strength import calibrate

        bundle = calibrate(loaded, session, bundle, questions, progress=progress)
    mark_checked(bundle, loaded, session)  # fitted on exactly this recipe and model
    return bundle


def _extract(loaded: LoadedRecipe, session: ModelSession, progress: bool, store: ActivationStore,
             retain_cache: Optional[str] = None) -> Bundle:
    recipe = loaded.recipe
    torch.manual_seed(recipe.seed)
    hidden, num_layers = session.dims
    # every check the plan will need, before any forward pass: a recipe that cannot compile against this
    # model would otherwise be found out only after the (possibly hours-long) extraction
    try:
        compile_recipe(recipe, session.adapter, None, dims=session.dims, architecture=session.architecture)
    except CompileError as exc:
        raise CompileError(f"{loaded.path}: {exc.summary}", loaded.locate(exc.problems)) from None
    layers = resolve_layers(recipe.steer.layers, num_layers, [])  # the compile above reported bad ranges
    site = recipe.steer.site
    refs = [site_ref(session.adapter, site, layer) for layer in layers]
    data: dict[str, dict] = {}
    tensors: dict[str, torch.Tensor] = {}

    direction_meta: dict[str, Any] = {"method": "none"}
    if recipe.direction is not None:
        d = recipe.direction
        recall = _sides(loaded, [d.recall.source], "direction.recall.source")
        erasure = _sides(loaded, [d.erasure.source], "direction.erasure.source")
        override, pgd_report = None, None
        if d.recall.image_perturbation is not None:
            from .adversarial import attack

            override, pgd_report = attack(session, recall, d.recall.image_perturbation, seed=recipe.seed,
                                          progress=progress)
        h_rec = collect(session, recall, refs, pixel_override=override, desc="recall", progress=progress,
                        store=store)
        h_era = collect(session, erasure, refs, desc="erasure", progress=progress, store=store)
        dirs = compute_directions("mean_diff", h_rec, h_era)
        del h_rec, h_era, override  # not needed by the gate fit: free them before it collects its own
        zero = [layer for layer, v in dirs.items() if float(v.norm()) <= 1e-8]
        if zero and len(zero) == len(dirs):
            raise DataError("the erasure direction is zero at every layer", [Problem(
                "recall and erasure prompts give identical activations at the read position, so there is "
                "nothing to steer with", str(loaded.path), None, None, "direction",
                "make the two sides differ in the prompt or image (e.g. direction.recall.image_perturbation, "
                "or erasure prompts that ask for a refusal): the answers are not read", "SK630")])
        for layer, v in dirs.items():
            if d.normalize:
                v = v / v.norm().clamp(min=1e-12)
            tensors[f"direction.{site}.{layer}"] = v.float()
        direction_meta = {"method": d.method, "normalize": d.normalize, "recall": {"n": len(recall)},
                          "erasure": {"n": len(erasure)}, "pgd": pgd_report,
                          "norms": {str(k): round(float(v.norm()), 6) for k, v in dirs.items()},
                          "zero_layers": zero}
        data["recall"] = _data_hash(source_path(d.recall.source, loaded.resolve, recipe.model.world))
        data["erasure"] = _data_hash(source_path(d.erasure.source, loaded.resolve, recipe.model.world))

    gate_meta = _fit_gate(loaded, session, site, layers, tensors, data, progress, store, retain_cache)
    return Bundle.create(
        tensors, model_id=session.model_id or "unknown", model_revision=session.revision,
        architecture=session.architecture,
        adapter={"name": session.adapter.name, "schema_version": 1,
                 "sha256": hashlib.sha256(session.adapter.model_dump_json().encode()).hexdigest()},
        hidden_size=hidden, num_layers=num_layers, direction=direction_meta, gate=gate_meta,
        data={k: v for k, v in data.items()}, recipe=recipe.dump(), recipe_sha256=recipe.sha256(),
        fitted_on=fitted_on(loaded, session, data))


def _fit_gate(loaded: LoadedRecipe, session: ModelSession, site: str, layers: list[int], tensors: dict, data: dict,
              progress: bool, store: ActivationStore, retain_cache: Optional[str] = None) -> dict:
    recipe = loaded.recipe
    g = recipe.gate
    if not isinstance(g, LinearGateBase):  # always_on and cosine_threshold: nothing to fit
        return {"rule": g.rule, **({"threshold": g.threshold} if isinstance(g, CosineGate) else {})}
    forget = _sides(loaded, g.forget, "gate.forget")
    retain = _sides(loaded, g.retain, "gate.retain")
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
    h_f = collect(session, forget, refs, positions=pos, desc="gate forget", progress=progress, store=store)
    log = (lambda m: print(m, file=sys.stderr, flush=True)) if progress else None  # noqa: E731
    h_r = retain_activations(session, retain, refs, pos, retain_cache, collect, log, desc="gate retain",
                             progress=progress, store=store)
    if isinstance(g, PrototypeGate):
        return _fit_prototypes(loaded, site, gate_layers[0], forget, retain, h_f[gate_layers[0]],
                               h_r[gate_layers[0]], probe_idx, calib_idx, held_idx, fit_idx, tensors, data)
    biases, stats = {}, {}
    for layer in gate_layers:
        F, R = h_f[layer], h_r[layer]
        R_fit, R_held = R[fit_idx], R[held_idx] if held_idx else R[:0]
        if isinstance(g, NullspaceGate):
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
            "retain_open_heldout": None if vh is None else open_rate(vh),
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


def _quantile(x: torch.Tensor, q: float) -> float:
    return float(torch.quantile(x.double(), q)) if x.numel() else 0.0


def _within_person(X: torch.Tensor, ids: list[str]) -> torch.Tensor:
    """Rows minus their person's mean (people with one row carry no within-person spread and are left
    out); falls back to rows minus the overall mean when fewer than two people have several rows."""
    groups: dict[str, list[int]] = {}
    for i, pid in enumerate(ids):
        groups.setdefault(pid, []).append(i)
    parts = [X[rows] - X[rows].mean(0) for rows in groups.values() if len(rows) > 1]
    return torch.cat(parts) if len(parts) >= 2 else X - X.mean(0)


def _fit_prototypes(loaded: LoadedRecipe, site: str, layer: int, forget, retain_items, F: torch.Tensor,
                    R: torch.Tensor, probe_idx, calib_idx, held_idx, fit_idx, tensors: dict, data: dict) -> dict:
    """Prototype gate: one prototype per forget identity and modality, centred on the retain mean of that
    modality and scored as gate.image_score / gate.text_score say; scale/bias map the calibration-retain
    quantile to c = 0 and the forget quantile to c = 1."""
    from .ops import prototype_gate

    g = loaded.recipe.gate
    assert isinstance(g, PrototypeGate)
    image_rows = torch.tensor([it.image is not None for it in forget])
    retain_image = torch.tensor([r.image is not None for r in retain_items])
    # per modality (image prompts are pooled over image tokens, text prompts over the text: two regions
    # of the space): the retain mean and either the per-dimension spread (cosine), the within-person
    # covariance as a whitening matrix (whitened_cosine: template variation shared by every person is
    # divided out, what tells people apart is kept), or the total covariance (discriminant)
    kind_of = {True: g.image_score, False: g.text_score}
    retain_ids = [r.id or str(i) for i, r in enumerate(retain_items)]
    stats_by_mod, whitening = {}, []
    for mod in (True, False):
        rows = [i for i in probe_idx if bool(retain_image[i]) == mod] or list(probe_idx)
        X = R[rows].double()
        mu = X.mean(0)
        if kind_of[mod] == "cosine":
            stats_by_mod[mod] = (mu, 1.0 / (X.std(0) + 1e-6 * X.std(0).mean() + 1e-12), X, -1)
            continue
        base = _within_person(X, [retain_ids[i] for i in rows]) if kind_of[mod] == "whitened_cosine" else X - mu
        cov = base.T @ base / max(1, base.shape[0] - 1)
        cov = cov + g.shrinkage * float(cov.diagonal().mean().clamp(min=1e-12)) * torch.eye(X.shape[1],
                                                                                           dtype=X.dtype)
        if kind_of[mod] == "discriminant":
            stats_by_mod[mod] = (mu, torch.linalg.inv(cov), X, -1)
        else:
            evals, evecs = torch.linalg.eigh(cov)
            whitening.append((evecs * evals.rsqrt()) @ evecs.T)  # cov^(-1/2), symmetric
            stats_by_mod[mod] = (mu, whitening[-1], X, len(whitening) - 1)
    groups: dict = {}
    for i, item in enumerate(forget):
        key = {"id": (item.id or str(i),), "id_modality": (item.id or str(i), bool(image_rows[i])),
               "id_modality_task": (item.id or str(i), bool(image_rows[i]), item.source.rsplit(":", 1)[-1])
               }[g.group_by]
        groups.setdefault(key, []).append(i)
    protos, centers, inv_stds, proto_image, proto_linear, proto_whiten = [], [], [], [], [], []
    for key in sorted(groups):
        mod = bool(image_rows[groups[key][0]])
        mu, mat, X, w_idx = stats_by_mod[mod]
        offset = F[groups[key]].double().mean(0) - mu
        if kind_of[mod] == "discriminant":
            v = mat @ offset
            v = v / ((X - mu) @ v).std().clamp(min=1e-12)  # retain scores have unit spread
        elif kind_of[mod] == "whitened_cosine":
            v = mat @ offset
            v = v / v.norm().clamp(min=1e-12)
        else:
            v = offset * mat
            v = v / v.norm().clamp(min=1e-12)
        inv_stds.append((mat if kind_of[mod] == "cosine" else torch.ones_like(mu)).float())
        protos.append(v.float())
        centers.append(mu.float())
        proto_image.append(mod)
        proto_linear.append(kind_of[mod] == "discriminant")
        proto_whiten.append(w_idx)
    P, C, S = torch.stack(protos), torch.stack(centers), torch.stack(inv_stds)
    PI, PL, PW = torch.tensor(proto_image), torch.tensor(proto_linear), torch.tensor(proto_whiten)
    WM = torch.stack(whitening) if whitening else None

    def score_subset(X: torch.Tensor, row_image: torch.Tensor, only: torch.Tensor) -> torch.Tensor:
        """Best raw score over the prototypes in ``only`` (others pushed out of the max)."""
        k = len(protos)
        bias = torch.where(only, 0.0, -1e9).double()
        return prototype_gate(X[:, None, :].double(), torch.ones(X.shape[0], 1, dtype=torch.bool), row_image,
                              C.double(), S.double(), P.double(), PI, torch.ones(k, dtype=torch.float64), bias,
                              None, PL, WM, PW)

    def score(X: torch.Tensor, row_image: torch.Tensor, sc=None, bi=None) -> torch.Tensor:
        ones = torch.ones(X.shape[0], 1, dtype=torch.bool)
        k = len(protos)
        sc = torch.ones(k, dtype=torch.float64) if sc is None else sc
        bi = torch.zeros(k, dtype=torch.float64) if bi is None else bi
        return prototype_gate(X[:, None, :].double(), ones, row_image, C.double(), S.double(), P.double(), PI,
                              sc, bi, None, PL, WM, PW)

    # calibrate per prototype group (modality, or modality x question type with id_modality_task): the
    # calibration-retain quantile of the group's best score maps to c = 0, its own forget rows' quantile
    # to c = 1. Groups are calibrated apart because their scores live on different scales (image cosines
    # crowd near 1; a multiple-choice prompt pools a name over many option tokens and scores lower).
    cal = calib_idx or list(probe_idx)
    # a row's calibration group is its grouping key without the person (group_by "id": its modality); a
    # prototype's is that of its first row
    row_group = {i: key[1:] if g.group_by != "id" else (bool(image_rows[i]),)
                 for key, rows in groups.items() for i in rows}
    group_of = [row_group[groups[key][0]] for key in sorted(groups)]
    thresholds = {}
    for grp in sorted(set(group_of), key=str):
        only = torch.tensor([gk == grp for gk in group_of])
        mod = grp[0]
        f_rows = sorted(i for i, gk in row_group.items() if gk == grp)
        c_rows = [i for i in cal if bool(retain_image[i]) == mod]
        lo = _quantile(score_subset(R[c_rows], retain_image[c_rows], only), 1.0 - g.retain_open_rate)
        hi = _quantile(score_subset(F[f_rows], image_rows[f_rows], only), 1.0 - g.forget_open_quantile)
        if hi <= lo + 1e-6:
            hi = lo + 1e-3  # inseparable at these quantiles: a steep gate, reported through the AUCs below
        thresholds[grp] = (lo, hi)
    scale_k = torch.tensor([1.0 / (thresholds[gk][1] - thresholds[gk][0]) for gk in group_of], dtype=torch.float64)
    bias_k = torch.tensor([-thresholds[gk][0] / (thresholds[gk][1] - thresholds[gk][0]) for gk in group_of],
                          dtype=torch.float64)
    for i in range(len(protos)):
        tensors[f"gate_proto.{site}.{layer}.{i}"] = protos[i]
        tensors[f"gate_center.{site}.{layer}.{i}"] = centers[i]
        tensors[f"gate_scale.{site}.{layer}.{i}"] = inv_stds[i]
    for i, mat in enumerate(whitening):
        tensors[f"gate_whiten.{site}.{layer}.{i}"] = mat.float()
    clip = tuple(g.clip) if g.clip else None
    c = lambda x, m: score(x, m, scale_k, bias_k).clamp(*clip) if clip else score(x, m, scale_k, bias_k)  # noqa
    # AUCs on the calibrated, unclipped score: the value the gate thresholds, comparable across groups
    s_f = score(F, image_rows, scale_k, bias_k)
    s_held = score(R[held_idx], retain_image[held_idx], scale_k, bias_k) if held_idx else None
    s_fit = score(R[fit_idx], retain_image[fit_idx], scale_k, bias_k)
    stats = {"auc_in_sample": round(gate_auc(s_f, s_fit), 4),
             "auc_heldout_retain": None if s_held is None else round(gate_auc(s_f, s_held), 4),
             "forget_mean": round(float(c(F, image_rows).mean()), 4),
             "retain_heldout_mean": None if s_held is None else round(float(c(R[held_idx],
                                                                              retain_image[held_idx]).mean()), 4),
             # the calibration's promise (retain_open_rate) checked on retain people it never saw
             "retain_open_heldout": None if s_held is None else open_rate(c(R[held_idx], retain_image[held_idx])),
             "thresholds": {"/".join(["image" if gk[0] else "text", *map(str, gk[1:])]): [round(v, 6) for v in t]
                            for gk, t in thresholds.items()}}
    for mod, name in ((True, "image"), (False, "text")):
        fm = image_rows == mod
        if s_held is not None and fm.any() and (hm := retain_image[held_idx] == mod).any():
            stats[f"auc_heldout_retain_{name}"] = round(gate_auc(s_f[fm], s_held[hm]), 4)
    params = {k: v for k, v in g.model_dump(mode="json").items() if k not in ("forget", "retain")}
    for i, src in enumerate(g.forget):
        data[f"gate_forget_{i}"] = _data_hash(source_path(src, loaded.resolve, loaded.recipe.model.world))
    for i, src in enumerate(g.retain):
        data[f"gate_retain_{i}"] = _data_hash(source_path(src, loaded.resolve, loaded.recipe.model.world))
    return {**params, "rule": "prototype", "layer": layer, "prototypes": len(protos),
            "prototype_image": proto_image, "prototype_linear": proto_linear,
            "prototype_whiten": proto_whiten, "whitening_matrices": len(whitening),
            "prototype_scale": scale_k.tolist(), "prototype_bias": bias_k.tolist(),
            "fit": {str(layer): stats}, "n_forget": len(forget),
            "n_retain_fit": len(fit_idx), "n_retain_heldout": len(held_idx)}
