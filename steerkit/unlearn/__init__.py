"""Training-based unlearning baselines (GA, GA_Diff, KL_Min, NPO) to compare with steering.

``run_unlearning(config)`` loads the vanilla model the way a recipe does, trains LoRA (or full)
weights on the forget set, merges, saves the checkpoint atomically and scores it with the same
evaluator and items as the steering recipes. Losses are pure functions in
:mod:`steerkit.unlearn.losses`; configs are YAML validated like recipes (:mod:`.config`).
Imports are lazy: ``import steerkit.unlearn`` does not load torch or peft.
"""

from __future__ import annotations

__all__ = ["UnlearnConfig", "LoadedUnlearnConfig", "UnlearnConfigError", "load_unlearn_config",
           "parse_unlearn_config", "run_unlearning", "unlearn_session", "save_checkpoint", "UnlearnReport",
           "TrainStats", "run_sweep", "SweepResult"]

_LAZY = {
    "UnlearnConfig": "config", "LoadedUnlearnConfig": "config", "UnlearnConfigError": "config",
    "load_unlearn_config": "config", "parse_unlearn_config": "config",
    "run_unlearning": "trainer", "unlearn_session": "trainer", "save_checkpoint": "trainer",
    "UnlearnReport": "trainer", "TrainStats": "trainer",
    "run_sweep": "sweep", "SweepResult": "sweep",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"steerkit.unlearn.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'steerkit.unlearn' has no attribute {name!r}")
