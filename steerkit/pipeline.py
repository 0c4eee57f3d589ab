"""The recipe-level workflows behind the CLI: dry-run plans, bundle get-or-extract, apply and eval.

Each function takes a recipe path (or a LoadedRecipe) and returns data; the CLI modules only parse
arguments and print. Nothing here imports nnsight directly (the runtime does).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from .adapter import Adapter, adapter_for_architecture, get_adapter
from .bundle import Bundle, ModelFingerprint
from .compile import compile_recipe
from .errors import AdapterError, BundleError, CompileError, Problem, RecipeError
from .fingerprint import check_fitted_on, ensure_fitted_on, expand_bundle_path
from .plan import Plan
from .recipe import LoadedRecipe, check_paths, load_recipe
from .strength import strength_note

if TYPE_CHECKING:
    from .session import ModelSession

EMBEDDED_ADAPTERS = {"llava": "llava", "qwen2_5_vl": "qwen2_5_vl"}


def _config_json(loaded: LoadedRecipe) -> Optional[dict]:
    """The model's config.json when it is available without downloading weights."""
    spec = loaded.recipe.model
    if spec.id.startswith("embedded:"):  # the small models' sizes are fixed by steerkit.models.small
        from .models.small import SIZES

        size = SIZES["default"]
        text = {"hidden_size": size.text_hidden, "num_hidden_layers": size.text_layers}
        arch = {"llava": "LlavaForConditionalGeneration",
                "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration"}.get(spec.id.split(":", 1)[1])
        return {"architectures": [arch] if arch else [], "text_config": text, **text}
    local = loaded.resolve(spec.id)
    if (local / "config.json").is_file():
        from .bounded_io import UnreadableFile, read_bounded

        try:  # bounded: a config is KBs; a multi-GB file named config.json must not be read whole
            config = json.loads(read_bounded(local / "config.json", 16 << 20).decode("utf-8"))
        except UnreadableFile as exc:
            raise AdapterError("the model's config.json cannot be read", [Problem(
                exc.reason, str(local / "config.json"), None, None, "model.id",
                "re-save the model with save_pretrained", "SK464")]) from None
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise AdapterError("the model's config.json is not valid JSON", [Problem(
                str(exc), str(local / "config.json"), None, None, "model.id",
                "re-save the model with save_pretrained", "SK464")]) from None
        if not isinstance(config, dict):
            raise AdapterError("the model's config.json is not a JSON object", [Problem(
                f"got {type(config).__name__}", str(local / "config.json"), None, None, "model.id",
                "re-save the model with save_pretrained", "SK464")])
        return config
    try:  # a Hub id: only the small config file, and only if it is cached or reachable
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(spec.id, "config.json", revision=spec.revision)).read_text())
    except Exception:  # offline / unknown id: validation falls back to the adapter alone
        return None


def resolve_adapter(loaded: LoadedRecipe, config: Optional[dict]) -> Adapter:
    spec = loaded.recipe.model
    if spec.adapter != "auto":
        return get_adapter(spec.adapter, loaded.base_dir)
    if spec.id.startswith("embedded:"):
        name = spec.id.split(":", 1)[1]
        if name not in EMBEDDED_ADAPTERS:
            raise AdapterError("unknown embedded model", [Problem(
                f"'{spec.id}' is not an embedded model", str(loaded.path), None, None, "model.id",
                "use embedded:llava or embedded:qwen2_5_vl", "SK462")])
        return get_adapter(EMBEDDED_ADAPTERS[name])
    if config and config.get("architectures"):
        return adapter_for_architecture(config["architectures"][0])
    raise AdapterError("cannot tell which adapter fits this model without loading it", [Problem(
        f"no config.json found for '{spec.id}'", str(loaded.path), None, None, "model.adapter",
        "set model.adapter to a name from `steerkit adapters list`", "SK463")])


def bundle_path(loaded: LoadedRecipe, override: Optional[str] = None, *, for_writing: bool = False
                ) -> Optional[Path]:
    """The bundle file to read (or write): ``--bundle``/``-o`` first, else ``bundle.path``.

    Accepts a file, a Hub-like folder, or ``hf://OWNER/REPO[@REV][/FILE]`` (read-only: fetched into the
    Hub cache); see ``steerkit.bundle_source``. An explicit ``--bundle`` to read must exist: only the
    recipe's own ``bundle.path`` may be missing (then it is extracted). ``{fit}`` in ``bundle.path``
    becomes the recipe's ``steerkit.fingerprint.fit_key``."""
    from .bundle_source import check_spec, fetch_hub, is_hub, local_bundle

    spec = str(override) if override else (loaded.recipe.bundle.path if loaded.recipe.bundle else None)
    if spec is None:
        return None
    key = ("-o" if for_writing else "--bundle") if override else "bundle.path"
    check_spec(spec, key)
    if not override:  # {fit}: one bundle per model, world, data sources and fit settings (issue #19)
        spec = expand_bundle_path(spec, loaded.recipe)
    if is_hub(spec):
        if for_writing:
            raise RecipeError("cannot write a bundle to the Hub", [Problem(
                f"{spec} is a Hub reference", str(loaded.path), None, None, "bundle.path",
                "write it locally (-o runs/bundle.safetensors), then upload the file with huggingface_hub",
                "SK205")])
        return fetch_hub(spec)
    path = Path(spec) if override else loaded.resolve(spec)
    return local_bundle(path, key, must_exist=bool(override) and not for_writing, for_writing=for_writing)


def dry_plan(recipe_path: str | Path, overrides: list[str] | None = None, bundle_path_: Optional[str] = None,
             check_data: bool = True) -> tuple[Plan, list[str]]:
    """Validate + compile without loading weights: schema, data paths, adapter, dims, feasibility."""
    loaded = load_recipe(recipe_path, overrides)
    try:
        return _dry_plan(loaded, bundle_path_, check_data)
    except (AdapterError, CompileError, RecipeError) as exc:
        raise type(exc)(f"{recipe_path}: {exc.summary}", loaded.locate(exc.problems)) from None


def _dry_plan(loaded: LoadedRecipe, bundle_path_: Optional[str], check_data: bool) -> tuple[Plan, list[str]]:
    warnings: list[str] = []
    bpath = bundle_path(loaded, bundle_path_)
    if check_data:
        missing = check_paths(loaded)
        if missing and not (bpath and bpath.exists()):
            raise RecipeError("data files are missing", missing)
    config = _config_json(loaded)
    adapter = resolve_adapter(loaded, config)
    from .compose_pipeline import load_existing

    bundles = load_existing(loaded, bpath)  # bundle.path (a bundle or a merged set) and bundle.compose
    bundle = bundles[0] if bundles else None
    dims = _dims(adapter, config, loaded)
    if bundle is not None:
        # the recipe's own bundle must have been fitted on this recipe's world, data and fit settings, as
        # apply and eval will demand; a bundle given explicitly (compile --bundle) only gets warnings
        # composed requests were each fitted for their own forget people: no recipe-level comparison there
        check_fitted_on(bundle, loaded, allow_foreign=bundle_path_ is not None,
                        log=lambda m: warnings.append(m.removeprefix("warning: ")), recipe_level=len(bundles) == 1)
        warnings += stale_data_warnings(loaded, bundle) if bundle.manifest.fitted_on is None else []
    elif dims is None:
        raise AdapterError("cannot compile: model dimensions unknown", [Problem(
            "no bundle yet and no config.json to read the layer count from", str(loaded.path), None, None,
            "model.id", "set model.expect, extract a bundle first (steerkit extract RECIPE), or use a local "
            "model folder", "SK464")])
    arch = (config or {}).get("architectures", [None])[0]
    plan = compile_recipe(loaded.recipe, adapter, bundle, dims=dims, architecture=arch)
    note = strength_note(loaded, bundle, info=False)
    if note:
        warnings.append(note)
    if len(bundles) > 1:
        from .compose import stack_plans

        stacked = stack_plans([plan] + [compile_recipe(loaded.recipe, adapter, b, dims=dims, architecture=arch)
                                        for b in bundles[1:]])
        return stacked, warnings  # type: ignore[return-value]  # a PlanStack prints and runs like a Plan
    return plan, warnings


def _dims(adapter: Adapter, config: Optional[dict], loaded: LoadedRecipe) -> Optional[tuple[int, int]]:
    if config:
        try:
            return adapter.dims(config)
        except (ValueError, TypeError) as exc:
            raise AdapterError("the model's config.json does not fit the adapter", [Problem(
                f"cannot read the decoder dimensions: {exc}", str(loaded.resolve(loaded.recipe.model.id)),
                None, None, "model.id", "check the model folder's config.json", "SK464")]) from None
    expect = loaded.recipe.model.expect
    return (expect.hidden_size, expect.num_layers) if expect is not None else None


def stale_data_warnings(loaded: LoadedRecipe, bundle: Bundle) -> list[str]:
    """Warn when data the bundle was extracted from changed since (hash mismatch)."""
    from .extraction import _data_hash

    out = []
    for name, ref in bundle.manifest.data.items():
        path = Path(ref.path)
        if path.exists() and _data_hash(path)["sha256"] != ref.sha256:
            out.append(f"data '{name}' ({path}) changed since the bundle was extracted; re-extract")
    if bundle.manifest.recipe_sha256 != loaded.recipe.sha256():
        out.append("the bundle was extracted with a different recipe (steering settings may differ; "
                   "direction/gate settings too if you edited them)")
    return out


def zero_direction_warning(bundle: Bundle) -> Optional[str]:
    """The warning for layers where the extracted direction is zero (None when there are none)."""
    zero = bundle.manifest.direction.get("zero_layers")
    if not zero:
        return None
    return (f"warning: the direction is zero at layers {zero} (recall and erasure read identically there), "
            "so steering does nothing at those layers")


def check_foreign_flag(bundle_override: Optional[str], allow_foreign: bool) -> None:
    """--allow-foreign-bundle only with an explicit --bundle: the recipe's own path is never foreign."""
    if allow_foreign and not bundle_override:
        raise RecipeError("--allow-foreign-bundle needs --bundle", [Problem(
            "--allow-foreign-bundle was given without --bundle", None, None, None, "--allow-foreign-bundle",
            "name the bundle you mean to apply with --bundle PATH; the recipe's own bundle must fit the run",
            "SK437")])


def preflight_bundle(loaded: LoadedRecipe, *, bundle_override: Optional[str] = None, allow_foreign: bool = False,
                     log=print) -> Optional[Bundle]:
    """Load an existing bundle and check its world, data and fit settings against the recipe before any
    model loads (or trains: an embedded model of a new world takes minutes); None when there is none.
    Pass the result to ``get_bundle(preflight=...)``, which then checks the weights."""
    check_foreign_flag(bundle_override, allow_foreign)
    path = bundle_path(loaded, bundle_override)
    if path is None or not path.exists():
        return None
    try:
        bundle = Bundle.load(path)
    except BundleError as exc:
        if exc.problems and exc.problems[0].code == "SK403" and _is_bundle_set(path):
            return None  # a merged set of forget requests: its parts are checked one by one once the model loads
        raise
    check_fitted_on(bundle, loaded, explicit=bundle_override is not None, allow_foreign=allow_foreign, log=log)
    return bundle


def _is_bundle_set(path: Path) -> bool:
    from .bundle_set import load_parts

    try:
        return len(load_parts(path)) > 1
    except BundleError:
        return False


def get_bundle(loaded: LoadedRecipe, session: ModelSession, *, bundle_override: Optional[str] = None,
               progress: bool = True, log=print, activations: str = "auto", spill_dir: Optional[str] = None,
               extract_missing: bool = True, allow_foreign: bool = False, preflight: Optional[Bundle] = None,
               preloaded: Optional[Bundle] = None) -> Bundle:
    """Load the recipe's bundle, extracting and saving it first if missing (or, with
    ``extract_missing=False``, saying how to make it). A loaded bundle must fit the model's dimensions
    and have been fitted on this model, world, data and fit settings (``steerkit.fingerprint``): a
    mismatch raises BundleError, or only warns with ``allow_foreign`` and an explicit ``bundle_override``.
    ``preflight``: the bundle ``preflight_bundle`` already loaded and checked (only the weights remain);
    ``preloaded``: a bundle read before the model loaded (a bad file fails fast), not yet checked."""
    from .extraction import extract

    check_foreign_flag(bundle_override, allow_foreign)
    hidden, layers = session.dims
    expect = ModelFingerprint(session.architecture, hidden, layers)
    path = bundle_path(loaded, bundle_override)
    early = preflight if preflight is not None else preloaded
    if early is not None or (path is not None and path.exists()):
        bundle = early if early is not None else Bundle.load(path, expect=expect)  # type: ignore[arg-type]
        bundle.check_fits(expect)
        check_fitted_on(bundle, loaded, session, explicit=bundle_override is not None, allow_foreign=allow_foreign,
                        log=log, recipe_level=preflight is None)
        _log_strength(loaded, bundle, log)
        return bundle
    if not extract_missing:
        raise RecipeError("the bundle is missing", [Problem(
            f"no bundle at {path}" if path else "the recipe has no bundle.path", str(loaded.path), None, None,
            "bundle.path", "extract it first where the weights are (steerkit extract RECIPE), or pass --bundle",
            "SK772")])
    log(f"bundle {path} is missing: extracting it now" if path else "no bundle path: extracting in memory")
    bundle = extract(loaded, session, progress=progress, activations=activations, spill_dir=spill_dir)
    warning = zero_direction_warning(bundle)
    if warning:
        log(warning)
    if path is not None:
        bundle.save(path)
        log(f"wrote {path}")
    _log_strength(loaded, bundle, log)
    return bundle


def _log_strength(loaded: LoadedRecipe, bundle: Bundle, log) -> None:
    note = strength_note(loaded, bundle)
    if note:
        log(note)


def plan_for(loaded: LoadedRecipe, session: ModelSession, bundle: Bundle) -> Plan:
    """The runnable plan of ``bundle`` on ``session``'s model; refuses a bundle fitted on another model,
    world, data or fit settings (``steerkit.fingerprint.ensure_fitted_on``)."""
    expect = loaded.recipe.model.expect
    if expect is not None and (expect.hidden_size, expect.num_layers) != tuple(session.dims):
        raise AdapterError("the model does not have the dimensions the recipe expects", [Problem(
            f"recipe expects hidden {expect.hidden_size} x {expect.num_layers} layers, the model has "
            f"{session.dims[0]} x {session.dims[1]}", str(loaded.path), None, None, "model.expect",
            "fix model.expect or model.id", "SK465")])
    ensure_fitted_on(bundle, loaded, session)
    return compile_recipe(loaded.recipe, session.adapter, bundle, dims=session.dims,
                          architecture=session.architecture)
