"""steerkit: declarative activation steering and test-time unlearning for multimodal LLMs.

The notebook path is ``sk.load(recipe)`` then ``with s.steered() as m: m.generate(...)``; the other
names are the layer below it (see docs/reference/api.md). Imports are lazy so that ``import steerkit``
(and commands like ``steerkit adapters list``) do not pay for torch/nnsight. No public name shares its
name with a submodule: importing a submodule binds it on the package, which would shadow the function.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["load", "Session", "extract", "compile_recipe", "Recipe", "load_recipe", "Bundle", "steer"]

_LAZY = {
    "load": ("steerkit.api", "load"),
    "Session": ("steerkit.api", "Session"),
    "extract": ("steerkit.api", "extract"),
    "compile_recipe": ("steerkit.api", "compile_recipe"),
    "Recipe": ("steerkit.recipe", "Recipe"),
    "load_recipe": ("steerkit.recipe", "load_recipe"),
    "Bundle": ("steerkit.bundle", "Bundle"),
    "steer": ("steerkit.runtime_nnsight", "steer"),
}

if TYPE_CHECKING:  # what type checkers and editors see; at run time __getattr__ imports on first use
    from .api import Session, compile_recipe, extract, load
    from .bundle import Bundle
    from .recipe import Recipe, load_recipe
    from .runtime_nnsight import steer


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value  # later lookups skip this hook
        return value
    raise AttributeError(f"module 'steerkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
