"""Activations spilled to disk during extraction: same bundle as in memory, nothing left behind."""

from __future__ import annotations

import os

import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from steerkit.activation_store import ActivationStore, DiskLayers, MemorySink
from steerkit.bundle import Bundle
from steerkit.cli.main import cli
from steerkit.errors import RecipeError
from steerkit.testing.fixtures import TINY_WORKDIR_RECIPE, tiny_workdir


@settings(max_examples=40, deadline=None)
@given(batches=st.lists(st.integers(1, 7), min_size=1, max_size=6), width=st.integers(1, 9),
       layers=st.lists(st.integers(0, 40), min_size=1, max_size=4, unique=True), seed=st.integers(0, 2**16))
def test_disk_rows_equal_memory_rows(tmp_path_factory, batches, width, layers, seed):
    """Any batch sizes, widths, layers and final row order: a layer read back from disk equals memory."""
    gen = torch.Generator().manual_seed(seed)
    n = sum(batches)
    arrival = torch.randperm(n, generator=gen)  # batches arrive in any order of the final rows
    data = {layer: torch.randn(n, width, generator=gen) for layer in layers}
    with ActivationStore("disk", spill_dir=tmp_path_factory.mktemp("spill")) as store:
        disk, memory = store.sink("x", n, layers, width), MemorySink(layers, n)
        start = 0
        for b in batches:
            rows_at = arrival[start:start + b]
            for layer in layers:
                disk.add(layer, data[layer][rows_at], rows_at)
                memory.add(layer, data[layer][rows_at], rows_at)
            start += b
        on_disk, in_memory = disk.finish(), memory.finish()
        assert isinstance(on_disk, DiskLayers) and sorted(on_disk) == sorted(in_memory)
        for layer in layers:
            assert torch.equal(on_disk[layer], data[layer])
            assert torch.equal(in_memory[layer], data[layer])


def test_auto_spills_only_above_the_budget(tmp_path):
    with ActivationStore("auto", spill_dir=tmp_path, budget_bytes=1000) as store:
        assert isinstance(store.sink("small", 10, [0, 1], 8), MemorySink)  # 640 bytes
        assert not isinstance(store.sink("large", 100, [0, 1], 8), MemorySink)  # 6,400 bytes
        assert store.spilled == ["large"]
        folder = store.folder
        assert folder is not None and folder.parent == tmp_path and any(folder.iterdir())
    assert not folder.exists()  # removed on close
    with ActivationStore("memory", budget_bytes=0) as store:
        assert isinstance(store.sink("any", 10**6, range(32), 4096), MemorySink)


def test_spill_folder_is_removed_when_extraction_fails(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with ActivationStore("disk", spill_dir=tmp_path) as store:
            store.sink("x", 4, [0], 2).add(0, torch.zeros(4, 2), torch.arange(4))
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_bad_mode_and_unusable_spill_dir_are_clear_errors(tmp_path):
    with pytest.raises(RecipeError) as e:
        ActivationStore("ram")
    assert e.value.problems[0].code == "SK760"
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with ActivationStore("disk", spill_dir=blocker / "sub") as store:
        with pytest.raises(RecipeError) as e:
            store.sink("x", 1, [0], 1)
    assert e.value.problems[0].code == "SK761" and str(blocker) in e.value.problems[0].message


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tiny_workdir(tmp_path_factory.mktemp("spill"))
    head = TINY_WORKDIR_RECIPE.format(name="spill") + "steer: {layers: {start: 0}, strength: {lambda: -1.0}}\n"
    gates = {  # one gate per steered layer (reads every layer), and a prototype gate at one layer
        "per_layer": "gate: {rule: ridge_linear, holdout: 0.25, forget: [{kind: mllmu, path: world, split: forget, "
                     "tasks: [classification]}], retain: [{kind: mllmu, path: world, split: retain, "
                     "tasks: [classification]}]}\n",
        "prototype": "gate: {rule: prototype, layer: 0, holdout: 0.25, text_score: whitened_cosine, "
                     "forget: [{kind: mllmu, path: world, split: forget, tasks: [classification, generation]}], "
                     "retain: [{kind: mllmu, path: world, split: retain, tasks: [classification, generation]}]}\n",
    }
    for name, gate in gates.items():
        (root / f"{name}.yaml").write_text(head + gate)
    return root


@pytest.mark.parametrize("recipe", ["per_layer", "prototype"])
def test_extract_on_disk_writes_the_same_bundle(world, recipe, tmp_path):
    runner = CliRunner()
    out = {}
    for mode in ("memory", "disk"):
        spill = tmp_path / f"spill-{mode}"
        r = runner.invoke(cli, ["extract", str(world / f"{recipe}.yaml"), "-o", str(tmp_path / f"{mode}.safetensors"),
                                "--activations", mode, "--spill-dir", str(spill)])
        assert r.exit_code == 0, r.output
        assert not spill.exists() or list(spill.iterdir()) == []  # nothing left behind
        out[mode] = Bundle.load(tmp_path / f"{mode}.safetensors")
    assert out["memory"].manifest.tensors_sha256 == out["disk"].manifest.tensors_sha256
    assert out["memory"].manifest.gate == out["disk"].manifest.gate


def test_interrupted_disk_extraction_leaves_nothing_and_reruns(world, tmp_path, monkeypatch):
    import steerkit.activations as activations

    real, calls = activations.read_sites, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    spill, bundle = tmp_path / "spill", tmp_path / "b.safetensors"
    args = ["extract", str(world / "per_layer.yaml"), "-o", str(bundle), "--activations", "disk", "--spill-dir",
            str(spill)]
    monkeypatch.setattr(activations, "read_sites", interrupted)
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 130 and "interrupted" in r.output
    assert list(spill.iterdir()) == [] and not bundle.exists()
    monkeypatch.setattr(activations, "read_sites", real)
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0 and bundle.exists() and list(spill.iterdir()) == [], r.output


def test_unusable_spill_dir_exits_2_without_traceback(world, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = CliRunner().invoke(cli, ["extract", str(world / "per_layer.yaml"), "-o", str(tmp_path / "b.safetensors"),
                                 "--activations", "disk", "--spill-dir", str(blocker)])
    assert r.exit_code == 2 and "is a file" in r.output and "Traceback" not in r.output, r.output  # click's check
    r = CliRunner().invoke(cli, ["extract", str(world / "per_layer.yaml"), "-o", str(tmp_path / "b.safetensors"),
                                 "--activations", "disk", "--spill-dir", str(blocker / "below")])
    assert r.exit_code == 2 and "SK761" in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "b.safetensors").exists()
    assert os.path.isfile(blocker)


def test_apply_extracts_a_missing_bundle_with_activations_on_disk(world, tmp_path):
    spill, bundle = tmp_path / "spill", tmp_path / "fresh.safetensors"
    r = CliRunner().invoke(cli, ["apply", str(world / "per_layer.yaml"), "--prompt", "Where was the person born?",
                                 "--max-new-tokens", "2", "--activations", "disk", "--spill-dir", str(spill),
                                 "--set", f"bundle.path={bundle}"])
    assert r.exit_code == 0, r.output
    assert bundle.exists() and list(spill.iterdir()) == []
    r = CliRunner().invoke(cli, ["extract", str(world / "per_layer.yaml"), "-o", str(tmp_path / "mem.safetensors"),
                                 "--activations", "memory"])
    assert r.exit_code == 0, r.output
    assert Bundle.load(bundle).manifest.tensors_sha256 == Bundle.load(tmp_path / "mem.safetensors").manifest.tensors_sha256


def test_a_direction_that_is_zero_everywhere_is_an_error_and_zero_layers_are_named(world, tmp_path):
    """Recall and erasure prompts that differ only in their answers read identically at the prompt's last
    token: the direction is zero and the bundle would steer nothing."""
    recipe = (world / "per_layer.yaml").read_text().split("gate:")[0]
    recipe = "\n".join(line for line in recipe.splitlines() if "image_perturbation" not in line)
    (world / "same_sides.yaml").write_text(recipe + "\ngate: {rule: always_on}\n")
    r = CliRunner().invoke(cli, ["extract", str(world / "same_sides.yaml"), "-o", str(tmp_path / "b.safetensors")])
    assert r.exit_code == 2 and "SK630" in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "b.safetensors").exists()


def test_extract_refuses_a_recipe_that_cannot_compile_before_reading_anything(world, tmp_path, monkeypatch):
    import steerkit.activations as activations

    def no_reads(*args, **kwargs):
        raise AssertionError("extract read activations for a recipe that cannot compile")

    monkeypatch.setattr(activations, "read_sites", no_reads)
    recipe = (world / "per_layer.yaml").read_text().split("gate:")[0].replace("start: 0", "start: 0, stop: 1")
    (world / "late_gate.yaml").write_text(recipe + "gate: {rule: ridge_linear, layer: 1, forget: [{kind: mllmu, "
                                          "path: world, split: forget}], retain: [{kind: mllmu, path: world, "
                                          "split: retain}]}\n")
    r = CliRunner().invoke(cli, ["extract", str(world / "late_gate.yaml"), "-o", str(tmp_path / "b.safetensors")])
    assert r.exit_code == 2 and "SK310" in r.output and "late_gate.yaml:" in r.output, r.output
    assert not (tmp_path / "b.safetensors").exists()


def test_each_collection_reports_its_size_and_where_it_waits(tmp_path):
    lines = []
    with ActivationStore("auto", spill_dir=tmp_path, budget_bytes=10_000, log=lines.append) as store:
        store.sink("gate retain", 100, [0, 1, 2], 16)  # 19,200 bytes: over the budget
        store.sink("recall", 10, [0], 16)
    assert lines == ["gate retain: 100 rows x 3 layers x 16 floats = 18.8 KiB, on disk, 6.2 KiB per layer read back",
                     "recall: 10 rows x 1 layers x 16 floats = 640 B, in memory"]
