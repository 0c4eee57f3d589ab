"""The notebook layer (steerkit/api.py) on the tiny LLaVA: sk.load, steered generation, sk.extract,
sk.compile_recipe; and the package's lazy names staying functions after their modules are imported."""

from __future__ import annotations

import subprocess
import sys

import pytest

from steerkit.testing.fixtures import tiny_recipe


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return tiny_recipe(tmp_path_factory.mktemp("api"))


@pytest.fixture(scope="module")
def session(files):
    import steerkit as sk

    return sk.load(files[0])


def test_lazy_names_survive_submodule_imports():
    # a fresh interpreter: the bug was order-dependent (the first sk.extract imported the module, which
    # rebound the package attribute, so the second call hit the module)
    code = ("import steerkit as sk, importlib\n"
            "first = sk.extract\n"
            "for m in ('steerkit.extraction', 'steerkit.api', 'steerkit.compile', 'steerkit.recipe',"
            " 'steerkit.bundle', 'steerkit.runtime_nnsight'):\n"
            "    importlib.import_module(m)\n"
            "from steerkit.extraction import extract as lower\n"
            "assert sk.extract is first and callable(sk.extract) and sk.extract is not lower\n"
            "assert all(callable(getattr(sk, n)) for n in sk.__all__), [n for n in sk.__all__"
            " if not callable(getattr(sk, n))]\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_no_public_name_is_also_a_submodule():
    from pathlib import Path

    import steerkit

    pkg = Path(steerkit.__file__).parent
    clashes = [n for n in steerkit.__all__ if (pkg / f"{n}.py").exists() or (pkg / n).is_dir()]
    assert clashes == []


def test_extract_twice_gives_the_same_bundle(files, session):
    import steerkit as sk

    a = sk.extract(session)
    b = sk.extract(files[0])  # loads its own model
    assert a.manifest.tensors_sha256 == b.manifest.tensors_sha256
    assert sorted(a.manifest.sites["resid_pre"]) == [0, 1]


def test_steered_generation_text_in_text_out(files, session):
    recipe, face = files
    with session.steered() as m:
        one = m.generate("Who is this?", image=face, max_new_tokens=6)
        many = m.generate(["Who is this?", "Where was this person born?"], image=[face, None], max_new_tokens=6)
        rows = m.compare(["Who is this?", "Where was this person born?"], image=[face, None], max_new_tokens=6)
    assert isinstance(one, str) and many[0] == one
    assert [r["steered"] for r in rows] == many
    assert [r["unsteered"] for r in rows] == session.generate(["Who is this?", "Where was this person born?"],
                                                              image=[face, None], max_new_tokens=6)
    # lambda -4 on a random model: steering must change at least one answer, or the block steered nothing
    assert any(r["steered"] != r["unsteered"] for r in rows), rows
    assert all(0.0 <= r["gate"] <= 1.0 for r in rows)


def test_steering_is_off_after_the_block(files, session):
    recipe, face = files
    before = session.generate("Who is this?", image=face, max_new_tokens=6)
    with session.steered() as m:
        m.generate("Who is this?", image=face, max_new_tokens=6)
    assert session.generate("Who is this?", image=face, max_new_tokens=6) == before


def test_one_image_per_prompt_or_one_for_all(files, session):
    recipe, face = files
    with pytest.raises(ValueError, match="2 prompts but 3 images"):
        session.generate(["a", "b"], image=[face, face, face], max_new_tokens=2)
    assert len(session.generate(["a", "b"], image=face, max_new_tokens=2)) == 2


def test_compile_recipe_from_a_path_a_recipe_or_a_session(files, session):
    import steerkit as sk
    from steerkit.adapter import get_adapter
    from steerkit.recipe import load_recipe

    bundle = session.bundle
    from_path = sk.compile_recipe(files[0], bundle)
    assert from_path.sha256() == sk.compile_recipe(load_recipe(files[0]).recipe, bundle).sha256()
    assert from_path.sha256() == sk.compile_recipe(session, bundle).sha256() == session.plan.sha256()
    # the lower layer's argument order still works through the top-level name
    lower = sk.compile_recipe(load_recipe(files[0]).recipe, get_adapter("llava"), bundle)
    assert lower.sha256() == from_path.sha256()
    assert len(sk.compile_recipe(files[0]).tensors) == 0  # no bundle: a dry run
