"""Bundle round trips, helpers, atomic save and the ``steerkit inspect`` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import safetensors
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from steerkit.bundle import Bundle, ModelFingerprint, file_sha256, tensor_hash
from steerkit.cli.inspect_cmd import command as inspect_command
from steerkit.errors import BundleError

ADAPTER = {"name": "llava", "sha256": "a" * 64}
ARCH = "LlavaForConditionalGeneration"


def make_bundle(hidden: int = 8, layers=(1, 2, 3), num_layers: int = 4, dtype=torch.float32,
                rule: str = "nullspace_linear", site: str = "resid_pre", seed: int = 0, **fields) -> Bundle:
    g = torch.Generator().manual_seed(seed)
    tensors = {f"direction.{site}.{layer}": torch.randn(hidden, generator=g).to(dtype) for layer in layers}
    gate = fields.pop("gate", {"rule": rule, "rho": 0.3, "clip": (0.0, 1.0)})
    if gate.get("rule", rule) not in ("always_on", "cosine_threshold"):
        gate_layers = [gate["layer"]] if "layer" in gate else layers
        tensors |= {f"gate.{site}.{layer}": torch.randn(hidden, generator=g).to(dtype) for layer in gate_layers}
    fields.setdefault("model_id", "llava-hf/llava-1.5-7b-hf")
    return Bundle.create(tensors, architecture=ARCH, adapter=ADAPTER, hidden_size=hidden, num_layers=num_layers,
                         direction={"method": "mean_diff"}, gate=gate, **fields)


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------- properties
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


@st.composite
def bundles(draw) -> Bundle:
    num_layers = draw(st.integers(1, 12))
    hidden = draw(st.integers(1, 24))
    dtype = draw(st.sampled_from(DTYPES))
    site_names = draw(st.lists(st.sampled_from(["resid_pre", "resid_post", "attn_out", "mlp_out"]),
                               min_size=1, max_size=3, unique=True))
    rule = draw(st.sampled_from(["nullspace_linear", "ridge_linear", "always_on"]))
    shared = draw(st.none() | st.integers(0, num_layers - 1)) if rule != "always_on" else None
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    tensors, sites = {}, {}
    for site in site_names:
        layers = sorted(draw(st.sets(st.integers(0, num_layers - 1), min_size=1)))
        sites[site] = layers
        tensors |= {f"direction.{site}.{layer}": torch.randn(hidden, generator=g).to(dtype) for layer in layers}
        if rule != "always_on":
            for layer in [shared] if shared is not None else layers:
                tensors[f"gate.{site}.{layer}"] = torch.randn(hidden, generator=g).to(dtype)
    if draw(st.booleans()):
        tensors["stats.gate.forget.x"] = torch.rand(draw(st.integers(0, 5)), generator=g).to(dtype)
    gate = {"rule": rule, "note": draw(st.text(max_size=20))}
    if shared is not None:
        gate["layer"] = shared
    text = st.text(min_size=1, max_size=30)
    return Bundle.create(
        tensors, model_id=draw(text), architecture=draw(text), adapter=ADAPTER, hidden_size=hidden,
        num_layers=num_layers, direction={"method": "mean_diff", "who": draw(st.text(max_size=20))}, gate=gate,
        model_revision=draw(st.none() | st.text(max_size=40)),
        extra=draw(st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=3)),
        data={"recall": {"path": draw(st.text(max_size=20)), "sha256": "b" * 64,
                         "n": draw(st.integers(0, 10**6))}},
        recipe={"name": draw(st.text(max_size=20)), "steer": {"layers": sites}})


@settings(max_examples=60, deadline=None)
@given(bundles())
def test_save_load_is_identity(bundle: Bundle) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "b.safetensors"
        bundle.save(path)
        loaded = Bundle.load(path)
        assert loaded.manifest == bundle.manifest
        assert same_tensors(loaded.tensors, bundle.tensors)
        assert tensor_hash(loaded.tensors) == tensor_hash(bundle.tensors) == loaded.manifest.tensors_sha256
        loaded.save(path)  # a second round trip writes the same manifest
        assert Bundle.load(path).manifest == bundle.manifest
        assert os.listdir(d) == ["b.safetensors"]


@settings(max_examples=60, deadline=None)
@given(bundles(), st.data())
def test_hash_changes_when_one_element_changes(bundle: Bundle, data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(k for k, t in bundle.tensors.items() if t.numel())))
    t = bundle.tensors[name].clone()
    i = data.draw(st.integers(0, t.numel() - 1))
    t[i] = 1.0 if t[i] == 0 else 0.0
    assert tensor_hash({**bundle.tensors, name: t}) != tensor_hash(bundle.tensors)
    assert tensor_hash({k: v.clone() for k, v in bundle.tensors.items()}) == tensor_hash(bundle.tensors)


def test_hash_covers_dtype_shape_and_name() -> None:
    base = {"direction.resid_pre.0": torch.zeros(4)}
    h = tensor_hash(base)
    assert h != tensor_hash({"direction.resid_pre.0": torch.zeros(4, dtype=torch.float64)})
    assert h != tensor_hash({"direction.resid_pre.0": torch.zeros(2, 2)})
    assert h != tensor_hash({"direction.resid_pre.1": torch.zeros(4)})


# ---------------------------------------------------------------------------------------- helpers
def test_accessors_and_negative_layers() -> None:
    b = make_bundle(layers=(1, 3), num_layers=4)
    assert b.layers("resid_pre") == [1, 3]
    assert torch.equal(b.direction("resid_pre", 3), b.tensors["direction.resid_pre.3"])
    assert torch.equal(b.direction("resid_pre", -1), b.tensors["direction.resid_pre.3"])
    assert torch.equal(b.gate("resid_pre", 1), b.tensors["gate.resid_pre.1"])
    with pytest.raises(BundleError, match="did you mean 'resid_pre'"):
        b.layers("resid_pr")
    with pytest.raises(BundleError, match=r"direction layers for resid_pre: \[1, 3\]"):
        b.direction("resid_pre", 2)


def test_gateless_bundle_has_no_gate_vectors() -> None:
    b = make_bundle(rule="always_on")
    assert not any(k.startswith("gate.") for k in b.tensors)
    with pytest.raises(BundleError, match="always_on"):
        b.gate("resid_pre", 1)


def test_shared_gate_layer() -> None:
    b = make_bundle(layers=(2, 3), gate={"rule": "nullspace_linear", "layer": 1})
    assert b.manifest.gate_layers("resid_pre") == [1]
    assert b.gate("resid_pre", 1).shape == (8,)
    with pytest.raises(BundleError, match="gate.layer"):
        make_bundle(layers=(2, 3), gate={"rule": "nullspace_linear", "layer": 9})


def test_create_derives_manifest() -> None:
    b = make_bundle(layers=(10, 2, 1), num_layers=12, dtype=torch.bfloat16)
    m = b.manifest
    assert m.sites == {"resid_pre": [1, 2, 10]}  # numeric order, not string order
    assert m.dtype == "bfloat16" and m.format == "steerkit.bundle" and m.format_version == 1
    assert m.created_at.endswith("Z") and m.tensors_sha256 == tensor_hash(b.tensors)
    assert m.gate["clip"] == [0.0, 1.0]  # held as it will reload: tuples become lists


@pytest.mark.parametrize("bad, field", [
    ({"direction.resid_pre.1": torch.tensor([1.0, float("nan")] * 4)}, "NaN"),
    ({"direction.resid_pre.1": torch.arange(8)}, "dtype"),
    ({"direction.resid_pre.1": torch.zeros(9)}, "hidden_size"),
    ({"direction.resid_pre.1": torch.zeros(2, 4)}, "hidden_size"),
    ({"direction.resid_pre.1": torch.zeros(8, dtype=torch.float64)}, "dtype"),
    ({"weights.resid_pre.1": torch.zeros(8)}, "unknown tensor name"),
    ({"gate.resid_pre.1": None}, "NoneType"),
])
def test_create_refuses_bad_tensors(bad: dict, field: str) -> None:
    good = make_bundle(layers=(1,))
    with pytest.raises(BundleError, match=field):
        Bundle.create({**good.tensors, **bad}, model_id="m", architecture=ARCH, adapter=ADAPTER, hidden_size=8,
                      num_layers=4, direction={"method": "mean_diff"}, gate={"rule": "nullspace_linear"},
                      dtype="float32")


def test_create_refuses_bad_manifest_fields() -> None:
    with pytest.raises(BundleError) as e:
        make_bundle(extra={"k": 1}, created_at="2026-05-01T12:00:00+02:00", model_id="")
    text = str(e.value)
    assert "extra.k" in text and "created_at" in text and "model_id" in text
    with pytest.raises(BundleError, match="recipe"):
        make_bundle(recipe={"x": float("nan")})
    with pytest.raises(BundleError, match="recipe"):
        make_bundle(recipe={"x": object()})
    with pytest.raises(BundleError, match="gate"):
        make_bundle(gate={"rho": 0.3})


def test_expect_names_each_differing_field(tmp_path: Path) -> None:
    path = make_bundle().save(tmp_path / "b.safetensors")
    Bundle.load(path, expect=ModelFingerprint(ARCH, 8, 4))
    with pytest.raises(BundleError) as e:
        Bundle.load(path, expect=ModelFingerprint("Qwen2VLForConditionalGeneration", 16, 4))
    text = str(e.value)
    assert str(path) in text and "architecture" in text and "hidden_size" in text
    assert "num_layers" not in text and "16" in text and "re-extract" in text


def test_metadata_is_string_only_json(tmp_path: Path) -> None:
    path = make_bundle(model_revision="abc").save(tmp_path / "b.safetensors")
    with safetensors.safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert all(isinstance(v, str) for v in meta.values())
    assert meta["format"] == "steerkit.bundle" and meta["format_version"] == "1"
    assert meta["model_revision"] == "abc" and json.loads(meta["sites"]) == {"resid_pre": [1, 2, 3]}
    assert json.loads(meta["adapter"])["name"] == "llava"


def test_load_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_bundle().save(tmp_path / "b.safetensors")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load used"))
    Bundle.load(path)


def test_file_sha256(tmp_path: Path) -> None:
    p = tmp_path / "x.bin"
    p.write_bytes(b"abc")
    assert file_sha256(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


# ------------------------------------------------------------------------------------ atomic save
def test_save_creates_parent_folders(tmp_path: Path) -> None:
    path = make_bundle().save(tmp_path / "runs" / "x" / "bundle.safetensors")
    assert Bundle.load(path).manifest.model_id == "llava-hf/llava-1.5-7b-hf"


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_interrupted_save_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc) -> None:
    def boom(*args, **kwargs):
        raise exc

    monkeypatch.setattr(os, "replace", boom)
    target = tmp_path / "b.safetensors"
    with pytest.raises(BundleError if isinstance(exc, OSError) else KeyboardInterrupt) as e:
        make_bundle().save(target)
    if isinstance(exc, OSError):
        assert str(target) in str(e.value) and "No space left" in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_failed_save_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = make_bundle(seed=1).save(tmp_path / "b.safetensors")
    before = target.read_bytes()
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError(5, "I/O error")))
    with pytest.raises(BundleError):
        make_bundle(seed=2).save(target)
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["b.safetensors"]


def test_save_refuses_tensors_edited_in_place(tmp_path: Path) -> None:
    b = make_bundle()
    b.tensors["direction.resid_pre.1"][0] += 1.0
    with pytest.raises(BundleError, match="tensors_sha256"):
        b.save(tmp_path / "b.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_save_handles_views_of_one_matrix(tmp_path: Path) -> None:
    stacked = torch.randn(3, 8)
    tensors = {f"direction.resid_pre.{i}": stacked[i] for i in range(3)}
    b = Bundle.create(tensors, model_id="m", architecture=ARCH, adapter=ADAPTER, hidden_size=8, num_layers=3,
                      direction={"method": "mean_diff"}, gate={"rule": "always_on"})
    assert same_tensors(Bundle.load(b.save(tmp_path / "b.safetensors")).tensors, tensors)


def test_save_onto_a_directory_is_a_bundle_error(tmp_path: Path) -> None:
    (tmp_path / "b.safetensors").mkdir()
    with pytest.raises(BundleError, match="SK411"):
        make_bundle().save(tmp_path / "b.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["b.safetensors"]


def test_unencodable_metadata_is_a_bundle_error(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="model_id"):  # pydantic refuses lone surrogates in str fields
        make_bundle(model_id="\ud800")
    with pytest.raises(BundleError, match="surrogates"):  # free-form dicts only fail when encoded
        make_bundle(recipe={"name": "\ud800"}).save(tmp_path / "b.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_saved_file_is_readable_by_others(tmp_path: Path) -> None:
    path = make_bundle().save(tmp_path / "b.safetensors")
    assert path.stat().st_mode & 0o777 == 0o644


def test_bundle_compares_by_identity_and_repr_is_short() -> None:
    a, b = make_bundle(), make_bundle()
    assert a != b and a == a and a.manifest.tensors_sha256 == b.manifest.tensors_sha256
    assert "tensor(" not in repr(a)


# ---------------------------------------------------------------------------------------- inspect
def test_inspect_prints_manifest_and_tensors(tmp_path: Path) -> None:
    path = make_bundle(recipe={"name": "r" * 500}).save(tmp_path / "b.safetensors")
    result = CliRunner().invoke(inspect_command, [str(path)])
    assert result.exit_code == 0, result.output
    for text in ("direction.resid_pre.1", "gate.resid_pre.3", "[8]", "float32", "hidden_size",
                 "LlavaForConditionalGeneration", "nullspace_linear"):
        assert text in result.stdout
    assert "r" * 200 not in result.stdout  # long values are shortened in the table


def test_inspect_json(tmp_path: Path) -> None:
    path = make_bundle().save(tmp_path / "b.safetensors")
    result = CliRunner().invoke(inspect_command, [str(path), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["manifest"]["sites"] == {"resid_pre": [1, 2, 3]}
    assert {"name": "direction.resid_pre.1", "shape": [8], "dtype": "float32"} in doc["tensors"]


@pytest.mark.parametrize("content", [b"", b"not a bundle at all", None])
def test_inspect_bad_file_exits_2_without_traceback(tmp_path: Path, content) -> None:
    path = tmp_path / "b.safetensors"
    if content is None:
        data = make_bundle().save(path).read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(content)
    result = CliRunner().invoke(inspect_command, [str(path)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output and str(path) in result.stderr and result.stdout == ""


def test_inspect_missing_file_and_directory(tmp_path: Path) -> None:
    for arg in (tmp_path / "nope.safetensors", tmp_path):
        result = CliRunner().invoke(inspect_command, [str(arg)])
        assert result.exit_code == 2 and "Traceback" not in result.output and str(arg) in result.stderr


def test_inspect_imports_no_model_stack() -> None:
    code = ("import sys, steerkit.cli.inspect_cmd, steerkit.bundle; "
            "bad = [m for m in ('nnsight', 'transformers') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
