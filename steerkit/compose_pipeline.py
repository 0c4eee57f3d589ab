"""Recipe-level composition: which bundles a run applies, loaded and compiled into one plan or a stack.

The bundles are ``--bundle`` given once or more (replacing the recipe's), else ``bundle.path`` followed by
``bundle.compose``. Each may be a single bundle or a merged set (``steerkit bundle merge``); sets expand
to their parts. Only ``bundle.path`` is extracted when missing: a composed request must exist already.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from .bundle import Bundle, ModelFingerprint
from .bundle_set import load_parts
from .compose import PlanStack, check_composable, stack_plans
from .errors import Problem, RecipeError
from .plan import Plan
from .recipe import LoadedRecipe


def _composed(loaded: LoadedRecipe) -> list[Optional[Path]]:
    """bundle.compose resolved: local paths against the recipe's folder, hf:// fetched like bundle.path."""
    from .bundle_source import is_hub
    from .pipeline import bundle_path

    spec = loaded.recipe.bundle
    # local entries are not read through bundle_path: a missing one is SK773 (a request to extract first)
    return [bundle_path(loaded, p) if is_hub(p) else loaded.resolve(p) for p in (spec.compose if spec else [])]


def _missing(loaded: LoadedRecipe, path: Optional[Path]) -> RecipeError:
    return RecipeError("a composed bundle is missing", [Problem(
        f"no bundle at {path}", str(loaded.path), None, None, "bundle.compose",
        "extract each forget request first (steerkit extract RECIPE -o FILE), then compose it", "SK773")])


def composing(loaded: LoadedRecipe, bundle_overrides: Sequence[str] = ()) -> bool:
    """Whether the run applies several forget requests (several --bundle, or bundle.compose)."""
    spec = loaded.recipe.bundle
    return len(bundle_overrides) > 1 or (not bundle_overrides and bool(spec and spec.compose))


def get_bundles(loaded: LoadedRecipe, session, bundle_overrides: Sequence[str] = (), *, log=print,
                allow_foreign: bool = False, **get_bundle_kwargs) -> list[Bundle]:
    """Every bundle of the run, each checked against the model and all of them against each other:
    ``--bundle`` values (given once or more) replace bundle.path + bundle.compose.

    A single bundle gets every ``get_bundle`` check, the recipe-level fingerprints included. When several
    are composed (several ``--bundle``, ``bundle.compose`` or a merged set), each was fitted for its own
    forget request, so only its weights fingerprint must match this model (``recipe_level=False``)."""
    from .fingerprint import check_fitted_on, mark_checked
    from .pipeline import bundle_path, get_bundle

    hidden, layers = session.dims
    expect = ModelFingerprint(session.architecture, hidden, layers)

    def other_requests(parts: list[Bundle]) -> list[Bundle]:
        for part in parts:
            check_fitted_on(part, loaded, session, explicit=True, allow_foreign=allow_foreign, log=log,
                            recipe_level=False)
            mark_checked(part, loaded, session)
        return parts

    first_ref = bundle_overrides[0] if bundle_overrides else None
    first = bundle_path(loaded, first_ref)
    parts = load_parts(first, expect=expect) if first is not None and first.exists() else []
    if len(parts) > 1 or (parts and composing(loaded, bundle_overrides)):  # each part is its own request
        out = other_requests(parts)
    else:  # a single bundle, or missing: extracted on the spot, as for a single bundle
        out = [get_bundle(loaded, session, bundle_override=first_ref, log=log, allow_foreign=allow_foreign,
                          **get_bundle_kwargs)]
    rest = [bundle_path(loaded, r) for r in bundle_overrides[1:]] if bundle_overrides else _composed(loaded)
    for path in rest:
        if path is None or not path.exists():
            raise _missing(loaded, path)
        out += other_requests(load_parts(path, expect=expect))
    check_composable(out)
    return out


def plan_for_bundles(loaded: LoadedRecipe, session, bundles: Sequence[Bundle]) -> Plan | PlanStack:
    """The recipe compiled against each bundle: one Plan, or a PlanStack when there are several."""
    from .pipeline import plan_for

    return stack_plans([plan_for(loaded, session, b) for b in bundles])


def load_existing(loaded: LoadedRecipe, first: Optional[Path]) -> list[Bundle]:
    """The bundles a dry run can see without a model: the first (when it exists) and every composed one."""
    out = load_parts(first) if first is not None and first.exists() else []
    for path in _composed(loaded):
        if path is None or not path.exists():
            raise _missing(loaded, path)
        out += load_parts(path)
    if out:
        check_composable(out)
    return out
