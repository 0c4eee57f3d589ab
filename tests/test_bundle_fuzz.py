"""Hostile and broken bundle files: ``Bundle.load`` must raise ``BundleError`` naming the file and
the field, never another exception type, and never hang or allocate what a forged header asks for."""

from __future__ import annotations

import json
import os
import random
import struct
from pathlib import Path

import pytest
import safetensors
import safetensors.torch
import torch

from steerkit.bundle import Bundle, ModelFingerprint, tensor_hash
from steerkit.errors import BundleError

ADAPTER = {"name": "llava", "sha256": "a" * 64}


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, dict[str, str], dict[str, torch.Tensor]]:
    """A valid bundle's bytes, string metadata and tensors, to be broken one way at a time."""
    g = torch.Generator().manual_seed(0)
    tensors = {f"{kind}.resid_pre.{layer}": torch.randn(8, generator=g) for kind in ("direction", "gate")
               for layer in (1, 2)}
    bundle = Bundle.create(tensors, model_id="m/ü", architecture="LlavaForConditionalGeneration",
                           adapter=ADAPTER, hidden_size=8, num_layers=4, direction={"method": "mean_diff"},
                           gate={"rule": "nullspace_linear", "rho": 0.3}, recipe={"name": "r"})
    path = bundle.save(tmp_path_factory.mktemp("good") / "b.safetensors")
    with safetensors.safe_open(str(path), "pt") as f:
        meta = f.metadata()
    return path.read_bytes(), meta, dict(bundle.tensors)


def load_error(path: Path, *needles: str, expect: ModelFingerprint | None = None) -> str:
    """Load ``path``; demand a BundleError whose text names the file and every needle."""
    with pytest.raises(BundleError) as e:
        Bundle.load(path, expect=expect)
    text = str(e.value)
    assert str(path) in text, text
    for needle in needles:
        assert needle in text, f"{needle!r} not in:\n{text}"
    assert "Traceback" not in text
    return text


def write(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str] | None) -> Path:
    path.write_bytes(safetensors.torch.save(tensors, metadata=meta))
    return path


def raw(header: bytes, body: bytes = b"", length: int | None = None) -> bytes:
    return struct.pack("<Q", len(header) if length is None else length) + header + body


def data_start(blob: bytes) -> int:
    return 8 + struct.unpack("<Q", blob[:8])[0]


# ------------------------------------------------------------------------------- byte-level damage
def test_truncated_at_every_cut_point(tmp_path: Path, good) -> None:
    blob = good[0]
    path = tmp_path / "cut.safetensors"
    for cut in range(len(blob)):
        path.write_bytes(blob[:cut])
        load_error(path)


def test_flipped_bits_only_raise_bundle_error(tmp_path: Path, good) -> None:
    blob, start = good[0], data_start(good[0])
    rng = random.Random(1234)
    path = tmp_path / "flip.safetensors"
    for _ in range(400):
        damaged = bytearray(blob)
        pos = rng.randrange(len(blob))
        damaged[pos] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(damaged))
        try:
            Bundle.load(path)
        except BundleError as e:
            assert str(path) in str(e)
        else:  # a flip may still leave a valid manifest (e.g. one letter of model_id): never in the tensors
            assert pos < start, f"flip at data byte {pos} went unnoticed"


def test_random_byte_runs(tmp_path: Path, good) -> None:
    blob = good[0]
    rng = random.Random(99)
    path = tmp_path / "noise.safetensors"
    rejected = 0
    for _ in range(150):
        damaged = bytearray(blob)
        at = rng.randrange(len(blob))
        damaged[at:at + rng.randrange(1, 40)] = rng.randbytes(rng.randrange(0, 40))
        path.write_bytes(bytes(damaged))
        try:
            loaded = Bundle.load(path)
        except BundleError as e:
            assert str(path) in str(e)
            rejected += 1
            continue
        # loading is only right when the damage changed nothing the bundle holds (e.g. header padding)
        assert loaded.manifest.tensors_sha256 == good[1]["tensors_sha256"]
        assert set(loaded.tensors) == set(good[2])
        assert all(torch.equal(loaded.tensors[k], v) for k, v in good[2].items())
    assert rejected >= 140, rejected


@pytest.mark.parametrize("length", [2**63, 2**64 - 1, 100 * 1024 * 1024 + 1, 10**6])
def test_forged_header_length(tmp_path: Path, good, length: int) -> None:
    path = tmp_path / "huge.safetensors"
    path.write_bytes(raw(good[0][8:], length=length))
    load_error(path, "header length")


@pytest.mark.parametrize("header, needle", [
    (b"\xff\xfe not utf-8", "UTF-8 JSON"),
    (b"{not json", "UTF-8 JSON"),
    (b"[1, 2, 3]", "JSON object"),
    (b"[" * 200_000 + b"]" * 200_000, "UTF-8 JSON"),
    (b'{"__metadata__": {"format": 1}}', "string-only"),
    (b'{"__metadata__": "x"}', "string-only"),
])
def test_header_not_a_safetensors_object(tmp_path: Path, header: bytes, needle: str) -> None:
    path = tmp_path / "h.safetensors"
    path.write_bytes(raw(header))
    load_error(path, needle)


def test_empty_file_directory_and_missing_path(tmp_path: Path) -> None:
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    load_error(empty, "0 bytes")
    load_error(tmp_path, "SK401")
    load_error(tmp_path / "missing.safetensors", "SK401")


def test_huge_non_bundle_is_refused_from_its_header(tmp_path: Path) -> None:
    path = write(tmp_path / "model.safetensors", {"w": torch.zeros(2)}, {"format": "pt"})
    with open(path, "r+b") as f:
        f.truncate(8 * 2**30)  # sparse 8 GiB: reading it all would take many seconds and gigabytes
    load_error(path, "not a steerkit bundle")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX only")
def test_fifo_does_not_hang(tmp_path: Path) -> None:
    path = tmp_path / "pipe.safetensors"
    os.mkfifo(path)
    load_error(path, "not a regular file (a FIFO", "SK401")


def test_offsets_pointing_past_the_data(tmp_path: Path, good) -> None:
    header = {"__metadata__": good[1], "direction.resid_pre.1": {
        "dtype": "F32", "shape": [2**40], "data_offsets": [0, 2**42]}}
    path = tmp_path / "off.safetensors"
    path.write_bytes(raw(json.dumps(header).encode(), b"\0" * 32))
    load_error(path, "SK402")


# ---------------------------------------------------------------------------- well-formed but wrong
def test_non_bundle_safetensors(tmp_path: Path) -> None:
    plain = write(tmp_path / "model.safetensors", {"w": torch.zeros(3)}, None)
    load_error(plain, "not a steerkit bundle", "SK403")
    other = write(tmp_path / "other.safetensors", {"w": torch.zeros(3)}, {"format": "pt"})
    load_error(other, "not a steerkit bundle", "'pt'")


@pytest.mark.parametrize("version", ["2", "0", "", "1.0", "１", "9" * 5000])
def test_unknown_format_version(tmp_path: Path, good, version: str) -> None:
    path = write(tmp_path / "v.safetensors", good[2], {**good[1], "format_version": version})
    load_error(path, "format_version", "SK404")


def test_int_tensor(tmp_path: Path, good) -> None:
    tensors = {**good[2], "direction.resid_pre.1": torch.arange(8, dtype=torch.int32)}
    meta = {**good[1], "tensors_sha256": tensor_hash(tensors)}
    load_error(write(tmp_path / "i.safetensors", tensors, meta), "direction.resid_pre.1", "dtype", "SK407")


def test_missing_tensor(tmp_path: Path, good) -> None:
    tensors = {k: v for k, v in good[2].items() if k != "gate.resid_pre.2"}
    meta = {**good[1], "tensors_sha256": tensor_hash(tensors)}
    load_error(write(tmp_path / "m.safetensors", tensors, meta), "gate.resid_pre.2", "missing", "SK406")


def test_unlisted_tensor(tmp_path: Path, good) -> None:
    tensors = {**good[2], "direction.resid_pre.3": torch.zeros(8)}
    meta = {**good[1], "tensors_sha256": tensor_hash(tensors)}
    load_error(write(tmp_path / "u.safetensors", tensors, meta), "direction.resid_pre.3", "unexpected")


def test_manifest_lies_about_hidden_size(tmp_path: Path, good) -> None:
    path = write(tmp_path / "h.safetensors", good[2], {**good[1], "hidden_size": "16"})
    load_error(path, "hidden_size", "direction.resid_pre.1")


def test_wrong_tensor_shape(tmp_path: Path, good) -> None:
    tensors = {**good[2], "gate.resid_pre.1": torch.zeros(2, 4)}
    meta = {**good[1], "tensors_sha256": tensor_hash(tensors)}
    load_error(write(tmp_path / "s.safetensors", tensors, meta), "gate.resid_pre.1", "[2, 4]", "hidden_size")


def test_manifest_lies_about_layers(tmp_path: Path, good) -> None:
    path = write(tmp_path / "l.safetensors", good[2], {**good[1], "sites": '{"resid_pre": [1, 2, 7]}'})
    load_error(path, "sites", "0..3")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_values(tmp_path: Path, good, value: float) -> None:
    tensors = {**good[2], "direction.resid_pre.2": torch.full((8,), value)}
    meta = {**good[1], "tensors_sha256": tensor_hash(tensors)}  # the hash is right: only the values are bad
    load_error(write(tmp_path / "n.safetensors", tensors, meta), "direction.resid_pre.2", "NaN", "SK408")


def test_tensor_edited_after_writing(tmp_path: Path, good) -> None:
    tensors = {**good[2], "direction.resid_pre.2": good[2]["direction.resid_pre.2"] + 1e-3}
    load_error(write(tmp_path / "e.safetensors", tensors, good[1]), "tensors_sha256", "SK409")


@pytest.mark.parametrize("key, value, needle", [
    ("hidden_size", "eight", "hidden_size"),
    ("hidden_size", "true", "hidden_size"),
    ("hidden_size", "-8", "hidden_size"),
    ("sites", "{not json", "sites"),
    ("sites", "[" * 5000 + "]" * 5000, "sites"),
    ("direction", "[" * 900 + "]" * 900, "direction"),
    ("direction", '{"method": "m", "x": ' + "[" * 990 + "]" * 990 + "}", "direction"),
    ("direction", '{"x": 1}', "method"),
    ("gate", '{"rule": "nullspace_linear", "layer": "1"}', "gate.layer"),
    ("adapter", '{"name": "llava"}', "adapter.sha256"),
    ("data", '{"recall": {"path": "p", "sha256": "zz", "n": 1}}', "data.recall.sha256"),
    ("created_at", "yesterday", "created_at"),
    ("created_at", "2026-05-01T12:00:00+02:00", "created_at"),
    ("created_at", "２０２６-05-01T12:00:00Z", "created_at"),
    ("tensors_sha256", "abc", "tensors_sha256"),
    ("extra", '{"a": 1}', "extra.a"),
    ("dtype", "float8", "dtype"),
    ("hidden_sise", "8", "did you mean 'hidden_size'"),
])
def test_bad_manifest_field(tmp_path: Path, good, key: str, value: str, needle: str) -> None:
    path = write(tmp_path / "f.safetensors", good[2], {**good[1], key: value})
    load_error(path, needle)


@pytest.mark.parametrize("key", ["model_id", "architecture", "hidden_size", "sites", "gate", "tensors_sha256"])
def test_missing_manifest_field(tmp_path: Path, good, key: str) -> None:
    meta = {k: v for k, v in good[1].items() if k != key}
    load_error(write(tmp_path / "k.safetensors", good[2], meta), key, "Field required")


def test_lone_surrogate_in_metadata(tmp_path: Path, good) -> None:
    blob = good[0]
    header = json.loads(blob[8:data_start(blob)])
    header["__metadata__"]["model_id"] = "\ud800 lone surrogate"  # valid JSON text, not valid UTF-8
    text = json.dumps(header).encode()
    path = tmp_path / "s.safetensors"
    path.write_bytes(raw(text + b" " * (-len(text) % 8), blob[data_start(blob):]))
    load_error(path)


def test_bundle_for_another_model(tmp_path: Path, good) -> None:
    path = tmp_path / "ok.safetensors"
    path.write_bytes(good[0])
    assert Bundle.load(path).manifest.model_id == "m/ü"
    text = load_error(path, "architecture", "Qwen2VL", expect=ModelFingerprint("Qwen2VL", 8, 4))
    assert "hidden_size" not in text
    text = load_error(path, "hidden_size", "num_layers", "4096", expect=ModelFingerprint(
        "LlavaForConditionalGeneration", 4096, 32))
    assert "architecture" not in text.split("\n", 1)[1]
