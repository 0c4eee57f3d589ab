"""Model loading and tiny test models.

``loading`` turns a Hub id or local folder into ``(model, processor, tokenizer)``; ``processors``
makes the processors that need torchvision work without it; ``zoo`` builds tiny random models of
every supported family for tests. Names are re-exported lazily so that importing this package (or a
sibling such as ``steerkit.models.small``) does not import transformers.
"""

from __future__ import annotations

__all__ = ["load_pretrained", "architecture_of", "load_processor", "save_processor", "build_processor",
           "build_tiny", "save_tiny", "TinyModel", "TINY_NAMES"]

_LAZY = {
    "load_pretrained": "loading", "architecture_of": "loading",
    "load_processor": "processors", "save_processor": "processors", "build_processor": "processors",
    "build_tiny": "zoo", "save_tiny": "zoo", "TinyModel": "zoo", "TINY_NAMES": "zoo",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
