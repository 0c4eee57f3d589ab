"""The shipped embedded checkpoints and world: what the README's figures come from.

`embedded:llava` (world seed 0) must resolve to the checkpoint in checkpoints/ without training, through
the same local-folder loading code as any model; its recorded training config must equal the pinned
default (a changed config without a retrained, re-shipped checkpoint fails here); and the world
generator must still reproduce the shipped world (a drifted generator fails here instead of silently
pairing the shipped model with other data).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from steerkit.models import embedded
from steerkit.resources import builtin_dir

SHIPPED = sorted(p.name.split("-w")[0] for p in (builtin_dir("checkpoints") / "models").iterdir()
                 if (p / embedded.META_FILE).is_file())


def test_at_least_llava_is_shipped():
    assert "llava" in SHIPPED


@pytest.fixture
def no_training(monkeypatch, tmp_path):
    import steerkit.train.vanilla as vanilla

    monkeypatch.setenv("STEERKIT_HOME", str(tmp_path / "home"))

    def refuse(*a, **k):
        raise AssertionError("the shipped checkpoint must be used, not trained")

    monkeypatch.setattr(vanilla, "train_vanilla", refuse)


@pytest.mark.parametrize("name", SHIPPED)
def test_embedded_default_is_the_shipped_checkpoint(name, no_training):
    from steerkit.recipe import ModelSpec
    from steerkit.session import load_session

    path = embedded.ensure_embedded(name, 0, 100, progress=False)
    assert path == builtin_dir("checkpoints") / "models" / f"{name}-w0-n100"
    session = load_session(ModelSpec(id=f"embedded:{name}"))
    assert type(session.model).__name__ == embedded.read_meta(path)["architecture"]
    assert embedded.world_dir(0, 100) == builtin_dir("checkpoints") / "worlds" / "seed0-n100"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_checkpoint_records_the_pinned_config(name):
    meta = embedded.read_meta(builtin_dir("checkpoints") / "models" / f"{name}-w0-n100")
    key = meta["key"]
    assert key["train"] == embedded.default_train_config(name).to_dict()
    assert key["recipe_version"] == embedded.RECIPE_VERSION
    assert key["train"]["threads"], "the thread count changes CPU-trained weights: it must be pinned"
    assert {"torch", "transformers", "device"} <= set(meta)


def test_retrain_goes_to_the_cache_not_the_package(tmp_path, monkeypatch):
    from steerkit.train.vanilla import TrainConfig

    monkeypatch.setenv("STEERKIT_HOME", str(tmp_path / "home"))
    tiny = TrainConfig(epochs=1, batch_size=16, max_steps=1, threads=2)
    # a different config never matches the shipped checkpoint
    assert embedded.shipped_embedded("llava", 0, 100, train=tiny) is None
    path = embedded.ensure_embedded("llava", 0, 20, progress=False, size="tiny", train=tiny, shipped=False)
    assert Path(tmp_path / "home") in path.parents
    assert embedded.read_meta(path)["key"]["device"] == "cpu"


def test_generator_reproduces_the_shipped_world(tmp_path):
    import pyarrow.parquet as pq

    from steerkit.bench.world import generate_world

    shipped = builtin_dir("checkpoints") / "worlds" / "seed0-n100"
    generate_world(tmp_path / "w", seed=0, n_profiles=100, overwrite=True)
    mine = sorted(p.relative_to(tmp_path / "w") for p in (tmp_path / "w").rglob("*") if p.is_file())
    theirs = sorted(p.relative_to(shipped) for p in shipped.rglob("*") if p.is_file())
    assert mine == theirs
    for rel in mine:
        a, b = tmp_path / "w" / rel, shipped / rel
        if rel.suffix == ".parquet":  # the writer's version is in the file's metadata, not in the data
            assert pq.read_table(a).equals(pq.read_table(b)), rel
        else:
            assert a.read_bytes() == b.read_bytes(), rel
