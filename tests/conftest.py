"""Shared test setup: offline, quiet, two threads (CI has two cores)."""

from __future__ import annotations

import os

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.pop("STEERKIT_ADAPTERS", None)  # a developer's own adapter folders must not change the results
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
