"""Hostile bundles and ``--bundle`` paths, second round (issues #18 and #14). No model is loaded.

A 2 KB bundle must not make the loader allocate what its manifest claims (10**9 prototypes), a manifest
value of the wrong type must fail at load naming the field (not as a traceback in ``compile``), a
header may not name a tensor twice, and an explicit ``--bundle`` that cannot be read is an error, not
"missing, so compile a plan without tensors". Each case: exit 2 (or a BundleError), no traceback, and
an answer within ``conftest.SECONDS``.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
import safetensors
import safetensors.torch
import torch
from click.testing import CliRunner, Result

from steerkit.bundle import Bundle
from steerkit.cli.main import cli
from steerkit.errors import BundleError

HERE = Path(__file__).resolve().parent
RECIPE = HERE / "recipes" / "00_valid_base.yaml"  # embedded:llava dims from the config alone; no weights


def prototype_bundle(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A valid 1-prototype bundle's tensors and metadata (hidden 8, 4 layers), to be forged."""
    g = torch.Generator().manual_seed(0)
    tensors = {f"direction.resid_pre.{i}": torch.randn(8, generator=g) for i in (1, 2, 3)}
    tensors |= {f"gate_{kind}.resid_pre.1.0": torch.randn(8, generator=g) for kind in ("proto", "center", "scale")}
    path = Bundle.create(tensors, model_id="m", architecture="LlavaForConditionalGeneration",
                         adapter={"name": "llava", "sha256": "a" * 64}, hidden_size=8, num_layers=4,
                         direction={"method": "mean_diff"},
                         gate={"rule": "prototype", "layer": 1, "prototypes": 1, "prototype_image": [True],
                               "prototype_scale": [1.0], "prototype_bias": [0.0]}).save(folder / "good.safetensors")
    with safetensors.safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def forged(tmp_path: Path, **gate_changes) -> Path:
    """The prototype bundle with its manifest's gate fields replaced (the tensors and their hash stay)."""
    tensors, meta = prototype_bundle(tmp_path)
    gate = {**json.loads(meta["gate"]), **gate_changes}
    path = tmp_path / "forged.safetensors"
    path.write_bytes(safetensors.torch.save(tensors, metadata={**meta, "gate": json.dumps(gate)}))
    assert path.stat().st_size < 4096  # a small file: whatever it claims must cost nothing
    return path


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def refused(r: Result, *needles: str) -> None:
    text = r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), f"crashed: {r.exception!r}\n{text}"
    assert "Traceback" not in text and r.exit_code == 2, f"exit {r.exit_code}\n{text}"
    for needle in needles:
        assert needle in text, f"{needle!r} not in\n{text}"


# ------------------------------------------------------------------ absurd counts (allocate nothing)
@pytest.mark.parametrize("field, value", [
    ("prototypes", 10**9), ("prototypes", 1e9), ("prototypes", -1), ("prototypes", True), ("prototypes", 2),
    ("whitening_matrices", 10**9), ("whitening_matrices", 1e9), ("whitening_matrices", "2"),
])
def test_absurd_counts_are_refused_before_anything_is_built(tmp_path: Path, deadline, field: str, value) -> None:
    path = forged(tmp_path, **{field: value})
    with deadline():
        with pytest.raises(BundleError, match=rf"gate\.{field}") as e:
            Bundle.load(path)
        assert "SK406" in str(e.value)
        refused(run("inspect", str(path)), f"gate.{field}", "SK406")
        refused(run("compile", str(RECIPE), "--bundle", str(path)), f"gate.{field}")


def test_sites_claiming_more_layers_than_tensors(tmp_path: Path, deadline) -> None:
    tensors, meta = prototype_bundle(tmp_path)
    path = tmp_path / "sites.safetensors"
    meta = {**meta, "num_layers": str(10**9), "sites": json.dumps({"resid_pre": list(range(200_000))})}
    path.write_bytes(safetensors.torch.save(tensors, metadata=meta))
    with deadline():
        refused(run("inspect", str(path)), "manifest sites list 200000 steered layers", "only 6 tensors")


# ------------------------------------------------------------------ wrong-typed manifest values
@pytest.mark.parametrize("changes, key", [
    ({"bias": "abc"}, "gate.bias"), ({"bias": 5}, "gate.bias"), ({"bias": {"1": "abc"}}, "gate.bias"),
    ({"bias": {"1": True}}, "gate.bias"), ({"bias": {"9": 0.5}}, "gate.bias"), ({"bias": {"x": 0.5}}, "gate.bias"),
    ({"scale": "abc"}, "gate.scale"), ({"scale": None}, "gate.scale"),
    ({"prototype_scale": ["abc"]}, "gate.prototype_scale"), ({"prototype_image": [1]}, "gate.prototype_image"),
    ({"prototype_bias": [True]}, "gate.prototype_bias"), ({"prototype_whiten": [5]}, "gate.prototype_whiten"),
])
def test_wrong_typed_manifest_values_fail_at_load_naming_the_field(tmp_path: Path, deadline, changes, key) -> None:
    path = forged(tmp_path, **changes)
    with deadline():
        refused(run("inspect", str(path)), key, "SK406")
        refused(run("compile", str(RECIPE), "--bundle", str(path)), key, "SK406")  # was a ValueError traceback


def test_linear_gate_bias_of_the_wrong_type(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(1)
    tensors = {f"{k}.resid_pre.{i}": torch.randn(8, generator=g) for k in ("direction", "gate") for i in (1, 2)}
    for bias in ("abc", 5, [1.0], {"1": "x"}):
        with pytest.raises(BundleError, match="gate.bias"):
            Bundle.create(tensors, model_id="m", architecture="A", adapter={"name": "llava", "sha256": "a" * 64},
                          hidden_size=8, num_layers=4, direction={"method": "mean_diff"},
                          gate={"rule": "ridge_linear", "bias": bias})


def test_zero_layers_must_be_layers(tmp_path: Path) -> None:
    tensors, meta = prototype_bundle(tmp_path)
    path = tmp_path / "z.safetensors"
    direction = {**json.loads(meta["direction"]), "zero_layers": "all"}
    path.write_bytes(safetensors.torch.save(tensors, metadata={**meta, "direction": json.dumps(direction)}))
    refused(run("inspect", str(path)), "direction.zero_layers")


# ------------------------------------------------------------------ header tricks and special files
def test_a_tensor_named_twice_in_the_header_is_refused(tmp_path: Path) -> None:
    prototype_bundle(tmp_path)
    blob = (tmp_path / "good.safetensors").read_bytes()
    n = struct.unpack("<Q", blob[:8])[0]
    head = blob[8:8 + n].decode().rstrip()
    shadow = json.dumps(json.loads(head)["direction.resid_pre.2"])  # JSON would keep this one, silently
    head = head[:-1] + f', "direction.resid_pre.1": {shadow}}}'
    path = tmp_path / "dup.safetensors"
    path.write_bytes(struct.pack("<Q", len(head)) + head.encode() + blob[8 + n:])
    refused(run("inspect", str(path)), "names 'direction.resid_pre.1' twice", "SK402")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_and_device_bundles_do_not_hang(tmp_path: Path, deadline) -> None:
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    with deadline():
        refused(run("inspect", str(fifo)), "not a regular file (a FIFO")
        refused(run("compile", str(RECIPE), "--bundle", str(fifo)), "FIFO")
        if Path("/dev/zero").exists():
            refused(run("inspect", "/dev/zero"), "character device")


# ------------------------------------------------------------------ explicit --bundle that cannot be read
def _loop(tmp_path: Path) -> Path:
    a, b = tmp_path / "loop_a", tmp_path / "loop_b"
    a.symlink_to(b)
    b.symlink_to(a)
    return a


def _empty(tmp_path: Path) -> Path:
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty"


def _dangling(tmp_path: Path) -> Path:
    (tmp_path / "dangling").symlink_to(tmp_path / "gone.safetensors")
    return tmp_path / "dangling"


@pytest.mark.parametrize("make, needle", [
    (lambda t: t / "nope.safetensors", "no such file or folder"),
    (_loop, "symlink loop"),
    (_empty, "holds no bundle"),
    (_dangling, "symlink to nothing"),
])
def test_unreadable_explicit_bundle_is_an_error(tmp_path: Path, deadline, make, needle: str) -> None:
    path = make(tmp_path)
    with deadline():  # was: a plan with no tensors and exit 0 (compile), a 53 s extraction (apply)
        refused(run("compile", str(RECIPE), "--bundle", str(path)), needle, "SK431")


@pytest.mark.parametrize("spec, needle", [
    ("b" * 5000 + ".safetensors", "5012 bytes long"),
    ("runs/" + "n" * 300 + "/b.safetensors", "300-byte name"),
    ("runs/a\0b.safetensors", "NUL byte"),
])
def test_paths_no_file_system_takes(tmp_path: Path, deadline, spec: str, needle: str) -> None:
    """Issue #14: a 5,000-character bundle path was an OSError traceback; a NUL byte passed as missing."""
    with deadline():
        refused(run("compile", str(RECIPE), "--bundle", spec), needle, "SK430")
        refused(run("validate", str(RECIPE), "--set", f"bundle.path={spec}"), needle, "bundle.path")
        refused(run("compile", str(RECIPE), "--set", f"bundle.path={spec}"), needle, "bundle.path")


def test_recipe_bundle_symlink_loop_is_an_error_not_missing(tmp_path: Path) -> None:
    loop = _loop(tmp_path)  # the recipe's own bundle.path may be missing (extract writes it), not broken
    refused(run("validate", str(RECIPE), "--set", f"bundle.path={loop}"), "symlink loop")
