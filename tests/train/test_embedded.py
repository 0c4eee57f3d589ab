"""The embedded cache: built once into STEERKIT_HOME, reused, loadable by load_pretrained."""

from __future__ import annotations

import time

import pytest
import torch

from steerkit.models import embedded
from steerkit.train.vanilla import TrainConfig

TINY_TRAIN = TrainConfig(epochs=1, batch_size=16, max_steps=2)


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("STEERKIT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_home_default(monkeypatch):
    monkeypatch.delenv("STEERKIT_HOME", raising=False)
    assert str(embedded.steerkit_home()).endswith(".cache/steerkit")


@pytest.mark.parametrize("arch", ["llava", "qwen2_5_vl"])
def test_ensure_embedded_builds_once_and_loads(arch, home, monkeypatch):
    import steerkit.train.vanilla as vanilla
    from steerkit.data.mllmu import train_pairs
    from steerkit.models.loading import load_pretrained
    from steerkit.session import ModelSession

    trained = []
    real = vanilla.train_vanilla

    def spy(session, pairs, config, progress=True, **kw):
        trained.append(session)
        return real(session, pairs, config, progress, **kw)

    monkeypatch.setattr(vanilla, "train_vanilla", spy)
    kw = dict(world_seed=0, n_profiles=20, progress=False, size="tiny", train=TINY_TRAIN)
    path = embedded.ensure_embedded(arch, **kw)
    assert len(trained) == 1
    assert path.parent == home / "models" and path.name.startswith(f"{arch}-w0-n20-")
    assert (path / "config.json").is_file() and (path / embedded.META_FILE).is_file()
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp folder left
    meta = embedded.read_meta(path)
    assert meta["key"]["size"]["text_hidden"] == 32 and meta["train_report"]["steps"] == 2

    t0 = time.perf_counter()
    again = embedded.ensure_embedded(arch, **kw)
    assert again == path and len(trained) == 1 and time.perf_counter() - t0 < 2.0

    # a different training recipe is a different checkpoint
    assert embedded.embedded_dir(arch, 0, 20, size="tiny", train=TrainConfig(epochs=2)) != path

    model, processor, tok = load_pretrained(path, loader=None)
    loaded = ModelSession.from_objects(model, processor, tok)
    original = trained[0]
    pairs = train_pairs(embedded.ensure_world(0, 20))
    batch = [next(p for p in pairs if p.image is None), next(p for p in pairs if p.image is not None)]
    a = original.encode([p.prompt for p in batch], [p.image for p in batch])
    b = loaded.encode([p.prompt for p in batch], [p.image for p in batch])
    assert a.inputs.keys() == b.inputs.keys()
    assert all(torch.equal(a.inputs[k], b.inputs[k]) for k in a.inputs)
    with torch.no_grad():
        assert torch.equal(original.model(**a.inputs).logits, loaded.model(**b.inputs).logits)


def test_stale_temp_folder_is_cleared(home):
    final = embedded.embedded_dir("llava", 0, 20, size="tiny", train=TINY_TRAIN)
    stale = final.parent / f".{final.name}.tmp-999999"
    stale.mkdir(parents=True)
    (stale / "half.bin").write_bytes(b"x")
    path = embedded.ensure_embedded("llava", 0, 20, progress=False, size="tiny", train=TINY_TRAIN)
    assert path == final and not stale.exists()


def test_unknown_name_is_a_clean_error(home):
    from steerkit.errors import SteerkitError

    with pytest.raises(SteerkitError, match="no embedded model"):
        embedded.ensure_embedded("llama9", progress=False)


def test_world_is_cached(home):
    root = embedded.ensure_world(0, 20)
    stamp = (root / "world.json").stat().st_mtime_ns
    assert embedded.ensure_world(0, 20) == root
    assert (root / "world.json").stat().st_mtime_ns == stamp


def test_recipe_model_id_embedded_loads_through_load_session(home, monkeypatch):
    """``model.id: embedded:llava`` -> ensure_embedded -> load_pretrained (tiny size for speed)."""
    import functools

    from steerkit.recipe import ModelSpec, WorldSpec
    from steerkit.session import load_session

    real = embedded.ensure_embedded
    monkeypatch.setattr(embedded, "ensure_embedded",
                        functools.partial(real, size="tiny", train=TINY_TRAIN, progress=False))
    session = load_session(ModelSpec(id="embedded:llava", world=WorldSpec(seed=0, n_profiles=20)))
    assert session.architecture == "LlavaForConditionalGeneration"
    assert session.dims == (32, 2)
    out = session.generate(["Who is the person in the image?"], [None], max_new_tokens=3)
    assert len(out) == 1
