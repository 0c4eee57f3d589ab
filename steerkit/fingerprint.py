"""What a bundle was fitted on (model weights, world, data, fit settings), and the check against a run.

A bundle's directions and gate mean something only for the weights and data they were fitted on:
applied to another checkpoint, or to the model of another synthetic world, it steers silently wrong
(issue #19: a seed-0 bundle reused on the seed-5 world forgot nothing, gate AUC 0.5). ``extract``
records ``fitted_on`` in the manifest; ``apply``, ``eval``, ``compile``, ``validate`` and
:func:`steerkit.pipeline.get_bundle` compare it with the run and refuse a mismatch (SK434-SK436),
unless the user passed the bundle explicitly with ``--allow-foreign-bundle`` (then it warns).

What the fingerprints cover (docs/reference/bundle-format.md says the same):

- model: sha256 over the checkpoint's ``*.safetensors`` files (name and content hash of each; files
  in the Hugging Face cache are named by their sha256, so those cost nothing; other files are hashed
  once and the result is cached by path, size and mtime). A model with no such folder (built in
  memory) is hashed from its state dict in name order. The dtype it is loaded in does not count.
- world: the embedded world's seed, size and generator key (cheap; no data is read).
- data: the sha256 of each data source (``manifest.data``), recomputed for the run when present.
- fit settings: the recipe's ``direction``, ``gate`` and ``seed`` sections; the steering settings
  (``steer``: lambda, positions, layers) may change freely between runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import weakref
from pathlib import Path
from typing import Any, Callable, Optional

from .errors import BundleError, Problem

FIT_SECTIONS = ("direction", "gate", "seed")  # recipe sections that change what extract writes
FIT_PLACEHOLDER = "{fit}"  # in bundle.path: replaced by fit_key(recipe), one file per model and data
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_MODEL_CACHE: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()
_PASSED: "weakref.WeakKeyDictionary[Any, tuple]" = weakref.WeakKeyDictionary()  # bundle -> (loaded, session)


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


# ----------------------------------------------------------------------------------------- recipe side
def uses_world(recipe: Any) -> bool:
    """Whether the world seed matters: an embedded model (trained on it) or a world data source."""
    from .recipe import _sources

    return recipe.model.id.startswith("embedded:") or any(s.kind == "world" for _, s in _sources(recipe))


def world_fingerprint(recipe: Any) -> Optional[dict]:
    """The embedded world a recipe reads (seed, size, generator key), or None when it reads none."""
    if not uses_world(recipe):
        return None
    from .models.embedded import world_key

    w = recipe.model.world
    return {"seed": w.seed, "n_profiles": w.n_profiles, "key": world_key()}


def fit_settings(recipe: Any) -> dict:
    """The recipe sections a bundle's contents depend on (see FIT_SECTIONS)."""
    dump = recipe.dump()
    return {k: dump.get(k) for k in FIT_SECTIONS}


def fit_key(recipe: Any) -> str:
    """12 hex digits naming the model, world, data sources and fit settings: what ``{fit}`` expands to.

    Computed from the recipe alone (no weights, no data read), so two runs that would fit different
    bundles never share a ``{fit}`` path; content changes at the same paths are caught by the check."""
    dump = recipe.dump()
    key = {"model": {"id": recipe.model.id, "revision": recipe.model.revision},
           "world": world_fingerprint(recipe), "fit": fit_settings(recipe),
           "steer": {"site": dump["steer"]["site"], "layers": dump["steer"]["layers"]}}
    return _sha(key)[:12]


def expand_bundle_path(spec: str, recipe: Any) -> str:
    """``bundle.path`` with ``{fit}`` replaced (other text unchanged)."""
    return spec.replace(FIT_PLACEHOLDER, fit_key(recipe)) if FIT_PLACEHOLDER in spec else spec


def data_hashes(loaded: Any) -> dict[str, Optional[str]]:
    """sha256 of each of the run's file data sources (jsonl, mllmu), named as ``extract`` names them in
    ``manifest.data``; None where the data is not there (a shared recipe + bundle without the data)."""
    from .extraction import _data_hash
    from .sources import source_path

    r = loaded.recipe
    named: list[tuple[str, Any]] = []
    if r.direction is not None:
        named += [("recall", r.direction.recall.source), ("erasure", r.direction.erasure.source)]
    for side in ("forget", "retain"):
        named += [(f"gate_{side}_{i}", s) for i, s in enumerate(getattr(r.gate, side, None) or [])]
    out: dict[str, Optional[str]] = {}
    for name, source in named:
        if source.kind == "world":  # generated from its seed: world_fingerprint covers it, nothing to read
            continue
        path = source_path(source, loaded.resolve, r.model.world)
        out[name] = _data_hash(path)["sha256"] if path is not None and path.exists() else None
    return out


# ----------------------------------------------------------------------------------------- model side
def _cache_dir() -> Path:
    from .models.embedded import steerkit_home

    return steerkit_home() / "fingerprints"


def file_digest(path: Path) -> str:
    """sha256 of a weights file: the blob name for files in the Hugging Face cache (blobs are named by
    their sha256), else hashed once and cached by (real path, size, mtime)."""
    real = path.resolve()
    if path.is_symlink() and real.parent.name == "blobs" and _HEX64.match(real.name):
        return real.name
    st = real.stat()
    stamp = {"path": str(real), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    entry = _cache_dir() / f"{_sha(str(real))[:32]}.json"
    try:
        cached = json.loads(entry.read_text())
        if {k: cached.get(k) for k in stamp} == stamp and _HEX64.match(str(cached.get("sha256"))):
            return cached["sha256"]
    except (OSError, ValueError):
        pass
    from .bundle import file_sha256

    digest = file_sha256(real)
    try:  # best effort: a read-only cache only costs a re-hash next time
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = entry.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({**stamp, "sha256": digest}))
        os.replace(tmp, entry)
    except OSError:
        pass
    return digest


def _checkpoint_folder(model: Any, model_id: str, revision: Optional[str]) -> Optional[Path]:
    """The folder the weights were loaded from: a local folder, else the Hub cache's snapshot."""
    ref = str(getattr(getattr(model, "config", None), "_name_or_path", "") or model_id or "")
    if ref and Path(ref).expanduser().is_dir():
        return Path(ref).expanduser()
    if not ref or ref.startswith("embedded:"):
        return None
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(ref, revision=revision, local_files_only=True,
                                      allow_patterns=["*.safetensors", "config.json"]))
    except Exception:  # not a cached Hub id: no folder to hash
        return None


def weights_fingerprint(model: Any, model_id: str = "", revision: Optional[str] = None) -> dict:
    """{"weights_sha256", "weights_from": "files" | "state_dict" | None, "files"}; see the module doc."""
    folder = _checkpoint_folder(model, model_id, revision)
    files = sorted(folder.glob("*.safetensors")) if folder is not None else []
    if files:
        lines = "".join(f"{f.name}:{file_digest(f)}\n" for f in files)
        return {"weights_sha256": hashlib.sha256(lines.encode()).hexdigest(), "weights_from": "files",
                "files": len(files)}
    try:
        state = model.state_dict()
    except Exception:  # an nnsight remote model: no weights here
        return {"weights_sha256": None, "weights_from": None, "files": 0}
    if not state or any(getattr(t, "is_meta", False) for t in state.values()):
        return {"weights_sha256": None, "weights_from": None, "files": 0}
    from .bundle import tensor_hash

    return {"weights_sha256": tensor_hash(state), "weights_from": "state_dict", "files": 0}


def model_fingerprint(session: Any) -> dict:
    """The session's model: id, revision and weights fingerprint (computed once per loaded model)."""
    try:
        cached = _MODEL_CACHE.get(session.model)
    except TypeError:  # not weak-referenceable
        cached = None
    if cached is None:
        cached = weights_fingerprint(session.model, session.model_id, session.revision)
        try:
            _MODEL_CACHE[session.model] = cached
        except TypeError:
            pass
    return {"id": session.model_id or "unknown", "revision": session.revision, **cached}


def fitted_on(loaded: Any, session: Any, data: dict[str, dict]) -> dict:
    """The manifest's ``fitted_on`` record for a bundle ``extract`` fitted on ``session`` and ``data``."""
    # the fit settings themselves are in manifest.recipe; their hash here is what runs compare
    return {"model": model_fingerprint(session), "world": world_fingerprint(loaded.recipe),
            "data_sha256": _sha({k: v["sha256"] for k, v in sorted(data.items())}),
            "fit_sha256": _sha(fit_settings(loaded.recipe))}


# ----------------------------------------------------------------------------------------- the check
def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict) and obj:
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: obj}


def _short(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."


def _world_text(w: Optional[dict]) -> str:
    return "no embedded world" if w is None else f"world seed {w['seed']}, {w['n_profiles']} profiles " \
                                                 f"(generator {w['key']})"


def _fit_diff(bundle_recipe: dict, recipe: Any) -> tuple[list[str], dict, dict]:
    """Dotted keys where the bundle's fit settings and the run's differ. The bundle's recorded recipe is
    re-validated first, so a field added to the schema after it was written counts at its default
    (otherwise every older bundle would differ from every run)."""
    from pydantic import ValidationError

    from .recipe import Recipe

    try:
        recorded = fit_settings(Recipe.model_validate(bundle_recipe))
    except (ValidationError, TypeError, ValueError):  # a recipe this steerkit cannot read: compare raw
        recorded = {k: bundle_recipe.get(k) for k in FIT_SECTIONS}
    was, now = _flat(recorded), _flat(fit_settings(recipe))
    diff = [k for k in sorted(set(was) | set(now)) if was.get(k, "<unset>") != now.get(k, "<unset>")]
    return diff, was, now


def fit_problems(bundle: Any, loaded: Any, session: Any = None, *, hint: str, recipe_level: bool = True
                 ) -> tuple[list[Problem], list[str]]:
    """Every way ``bundle`` was fitted on other things than this run, plus notes on what could not be
    compared. ``session`` None: model-free checks only (before loading weights); ``recipe_level``
    False: the model only (the recipe-level checks already ran)."""
    m, where = bundle.manifest, bundle.source
    f = getattr(m, "fitted_on", None)
    if not f:
        note = ("the bundle records no fitted_on fingerprints (made before steerkit checked them), so "
                "nobody can tell it was fitted on this model and data; re-extract to record them")
        return [], [note] if recipe_level else []
    problems: list[Problem] = []
    notes: list[str] = []
    recipe = loaded.recipe

    def add(msg: str, code: str, key: str) -> None:
        problems.append(Problem(msg, where, None, None, key, hint, code))

    if recipe_level:
        run_world = world_fingerprint(recipe)
        if f.get("world") != run_world and (f.get("world") is not None or run_world is not None):
            add(f"the bundle was fitted on {_world_text(f.get('world'))}; this run uses "
                f"{_world_text(run_world)}", "SK435", "model.world")
        if f.get("fit_sha256") != _sha(fit_settings(recipe)):
            diff, was, now = _fit_diff(m.recipe, recipe)
            shown = "; ".join(f"{k}: {_short(was.get(k, '<unset>'))} in the bundle, {_short(now.get(k, '<unset>'))}"
                              f" in this run" for k in diff[:4]) + (f"; and {len(diff) - 4} more" if len(diff) > 4
                                                                     else "")
            if diff or not m.recipe:  # no diff: fields added to the schema since, at their defaults
                add(f"the bundle was fitted with other settings: {shown or 'the fit settings hash differs'}",
                    "SK436", diff[0] if diff else "gate")
        run = data_hashes(loaded)
        for name, ref in m.data.items():
            current = run.get(name)
            if name not in run:
                continue  # a world source (covered above) or one this run lacks (a settings difference)
            if current is None:
                notes.append(f"data '{name}' is not here, so it was not compared with the bundle's")
            elif current != ref.sha256:
                add(f"data '{name}' differs: the bundle was fitted on sha256 {ref.sha256[:12]} ({ref.path}); "
                    f"this run's has sha256 {current[:12]}", "SK435", "data")
    if session is not None:
        was, now = f.get("model") or {}, model_fingerprint(session)
        if was.get("weights_sha256") and now.get("weights_sha256") and was.get("weights_from") == now.get(
                "weights_from"):
            if was["weights_sha256"] != now["weights_sha256"]:
                add(f"the bundle was fitted on model {was.get('id')!r} (weights sha256 "
                    f"{was['weights_sha256'][:12]}); this run's model {now['id']!r} has weights sha256 "
                    f"{now['weights_sha256'][:12]}", "SK434", "model.id")
        elif (was.get("id"), was.get("revision")) != (now["id"], now["revision"]):
            add(f"the bundle was fitted on model {was.get('id')!r} (revision {was.get('revision')}); this run "
                f"loads {now['id']!r} (revision {now['revision']}) and their weights cannot be compared here",
                "SK434", "model.id")
        else:
            notes.append(f"the weights of {now['id']!r} were not compared (bundle: "
                         f"{was.get('weights_from') or 'no hash'}, this run: {now.get('weights_from') or 'no hash'})")
    return problems, notes


def check_fitted_on(bundle: Any, loaded: Any, session: Any = None, *, explicit: bool = False,
                    allow_foreign: bool = False, log: Callable[[str], None] = print,
                    recipe_level: bool = True) -> None:
    """Raise BundleError (exit 2) naming every mismatch between the bundle's ``fitted_on`` and this run;
    with ``allow_foreign`` (only for an explicitly given bundle) print them as warnings instead."""
    if explicit:
        hint = ("pass the bundle made for this model and data, or add --allow-foreign-bundle to apply it "
                "anyway (a warning)")
    else:
        hint = ("re-extract for this run (steerkit extract RECIPE, with the same --set), or put {fit} in "
                "bundle.path (e.g. runs/x/bundle-{fit}.safetensors) so each model and data get their own bundle")
    problems, notes = fit_problems(bundle, loaded, session, hint=hint, recipe_level=recipe_level)
    for note in notes:
        log(f"warning: {note}")
    if problems and not allow_foreign:
        raise BundleError(f"{bundle.source} was fitted on another model or data", problems)
    for p in problems:
        log(f"warning: foreign bundle applied anyway (--allow-foreign-bundle): {p.message}")
    if session is not None:
        mark_checked(bundle, loaded, session)


def mark_checked(bundle: Any, loaded: Any, session: Any) -> None:
    """Remember that ``bundle`` passed (or was allowed) for this recipe and model, so
    :func:`ensure_fitted_on` does not check it twice; ``extract`` marks the bundles it makes."""
    try:
        _PASSED[bundle] = (weakref.ref(loaded), weakref.ref(session))
    except TypeError:  # not weak-referenceable: it is simply checked again
        pass


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def ensure_fitted_on(bundle: Any, loaded: Any, session: Any, log: Callable[[str], None] = _stderr) -> None:
    """The Python API's guard (``plan_for``, hence ``run_eval``): check ``bundle`` against this recipe and
    model unless ``get_bundle``/``extract`` already did for the same pair; a mismatch raises."""
    seen = _PASSED.get(bundle)
    if seen is not None and seen[0]() is loaded and seen[1]() is session:
        return
    check_fitted_on(bundle, loaded, session, explicit=True, log=log)
