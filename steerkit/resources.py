"""Where the shipped data folders (recipes/, adapters/) live, in a checkout and in a wheel.

In a source checkout they are top-level folders (easy to browse and review). A wheel copies them to
``steerkit/_builtin/`` at build time (see setup.py), found here through importlib.resources, so a
non-editable ``pip install`` finds them without touching ``sys.path`` or a second top-level package.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def builtin_dir(kind: str) -> Path:
    """The folder holding shipped ``recipes``, ``adapters`` or ``checkpoints`` (embedded models, world)."""
    if kind not in ("recipes", "adapters", "checkpoints"):
        raise ValueError(kind)
    packaged = Path(str(resources.files("steerkit"))) / "_builtin" / kind
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parent.parent / kind
    return checkout
