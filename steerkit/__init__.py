"""steerkit: declarative activation steering and test-time unlearning for multimodal LLMs.

The public surface is six names; everything else lives in its module. Imports are lazy so that
`import steerkit` (and commands like `steerkit adapters list`) do not pay for torch/nnsight.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Recipe", "load_recipe", "extract", "Bundle", "compile_recipe", "steer"]

_LAZY = {
    "Recipe": ("steerkit.recipe", "Recipe"),
    "load_recipe": ("steerkit.recipe", "load_recipe"),
    "extract": ("steerkit.extract", "extract"),
    "Bundle": ("steerkit.bundle", "Bundle"),
    "compile_recipe": ("steerkit.compile", "compile_recipe"),
    "steer": ("steerkit.runtime_nnsight", "steer"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'steerkit' has no attribute {name!r}")
