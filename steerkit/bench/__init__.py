"""A synthetic MLLMU-style world: fictitious people with procedural portraits, written in the real
MLLMU-Bench parquet layout so that one loader (``steerkit.data.mllmu``) reads both.

Small enough that a ~1-3M-parameter vision-language model learns it in minutes on CPU; see
``steerkit.bench.world`` for the layout and ``steerkit.bench.templates`` for the wording splits.
"""

from __future__ import annotations

from steerkit.bench.world import WorldInfo, generate_world

__all__ = ["WorldInfo", "generate_world"]
