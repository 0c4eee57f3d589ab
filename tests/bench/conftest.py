"""Shared worlds for the bench tests: generated once per session (about a second each)."""

from __future__ import annotations

import pytest

from steerkit.bench import generate_world


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """The default world (100 profiles, seed 0): the one the other engineers train on."""
    return generate_world(tmp_path_factory.mktemp("bench") / "world", seed=0)


@pytest.fixture(scope="session")
def small_world(tmp_path_factory):
    """A 20-profile world for the determinism tests (built twice)."""
    return generate_world(tmp_path_factory.mktemp("bench") / "small", seed=3, n_profiles=20,
                          n_celebrities=4)
