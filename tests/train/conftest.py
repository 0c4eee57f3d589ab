"""Fixtures for the training tests: a tiny generated world and its training pairs."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    from steerkit.bench.world import generate_world

    root = tmp_path_factory.mktemp("world") / "w"
    generate_world(root, seed=0, n_profiles=8, n_celebrities=2, forget_ratios=(25,), object_drawings=1)
    return root


@pytest.fixture(scope="session")
def tiny_pairs(tiny_world):
    from steerkit.data.mllmu import train_pairs

    return train_pairs(tiny_world)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread, and far faster than two on a busy machine."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
