"""Merged bundle sets, composability checks, per-request sources and the retain cache (no model needed
except for the last tests, which extract on the tiny saved LLaVA)."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from click.testing import CliRunner

from steerkit.bundle import Bundle
from steerkit.bundle_set import load_parts, save_set
from steerkit.cli.main import cli
from steerkit.compose import check_composable
from steerkit.errors import BundleError, DataError, RecipeError
from steerkit.recipe import parse_recipe_text


def bundle(seed: int, *, hidden: int = 8, layers: int = 4, model_id: str = "m", arch: str = "LlamaForCausalLM",
           steered=(1, 2), rule: str = "nullspace_linear") -> Bundle:
    gen = torch.Generator().manual_seed(seed)
    tensors = {f"{kind}.resid_pre.{layer}": torch.randn(hidden, generator=gen) for layer in steered
               for kind in ("direction", "gate")}
    recipe = {"gate": {"forget": [{"kind": "world", "ids": [f"{seed:03d}", f"{seed + 1:03d}"]}]}}
    return Bundle.create(tensors, model_id=model_id, architecture=arch, adapter={"name": "llama", "sha256": "0" * 64},
                         hidden_size=hidden, num_layers=layers, direction={"method": "mean_diff"},
                         gate={"rule": rule, "bias": {}}, recipe=recipe)


def test_set_round_trip_lists_parts_and_hashes(tmp_path):
    parts = [bundle(1), bundle(2), bundle(3)]
    save_set(parts, tmp_path / "set.safetensors")
    loaded = load_parts(tmp_path / "set.safetensors")
    assert [p.manifest.tensors_sha256 for p in loaded] == [p.manifest.tensors_sha256 for p in parts]
    assert all(torch.equal(a.tensors[k], b.tensors[k]) for a, b in zip(loaded, parts) for k in a.tensors)
    n = struct.unpack("<Q", (tmp_path / "set.safetensors").read_bytes()[:8])[0]
    meta = json.loads((tmp_path / "set.safetensors").read_bytes()[8:8 + n])["__metadata__"]
    assert meta["format"] == "steerkit.bundle_set"
    assert [p["tensors_sha256"] for p in json.loads(meta["parts"])] == [p.manifest.tensors_sha256 for p in parts]
    assert (tmp_path / "set.safetensors").stat().st_mode & 0o777 == 0o644


def test_a_single_bundle_loads_as_one_part(tmp_path):
    bundle(1).save(tmp_path / "b.safetensors")
    assert len(load_parts(tmp_path / "b.safetensors")) == 1


def test_bundle_load_on_a_set_names_the_format(tmp_path):
    save_set([bundle(1), bundle(2)], tmp_path / "set.safetensors")
    with pytest.raises(BundleError) as err:
        Bundle.load(tmp_path / "set.safetensors")
    assert "SK403" in err.value.render() and "steerkit.bundle_set" in err.value.render()


@pytest.mark.parametrize("other, field", [
    (dict(model_id="other"), "model_id"), (dict(hidden=16), "hidden_size"), (dict(layers=6), "num_layers"),
    (dict(arch="MistralForCausalLM"), "architecture"), (dict(steered=(1, 3)), "sites"),
    (dict(rule="ridge_linear"), "gate.rule")])
def test_incompatible_bundles_are_refused_naming_what_differs(other, field):
    with pytest.raises(BundleError) as err:
        check_composable([bundle(1), bundle(2, **other)])
    text = err.value.render()
    assert "SK438" in text and f"{field} differs" in text


def test_the_same_request_twice_is_refused():
    with pytest.raises(BundleError) as err:
        check_composable([bundle(1), bundle(2), bundle(1)])
    assert "SK439" in err.value.render()


def test_a_set_whose_part_list_lies_is_refused(tmp_path):
    save_set([bundle(1), bundle(2)], tmp_path / "set.safetensors")
    raw = (tmp_path / "set.safetensors").read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    listed = json.loads(header["__metadata__"]["parts"])
    listed[0]["tensors_sha256"], listed[1]["tensors_sha256"] = listed[1]["tensors_sha256"], listed[0]["tensors_sha256"]
    header["__metadata__"]["parts"] = json.dumps(listed, ensure_ascii=False)
    head = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    head += b" " * (n - len(head))  # same length, so the tensor offsets stay valid
    assert len(head) == n
    (tmp_path / "bad.safetensors").write_bytes(raw[:8] + head + raw[8 + n:])
    with pytest.raises(BundleError) as err:
        load_parts(tmp_path / "bad.safetensors")
    assert "SK440" in err.value.render() and "part 0" in err.value.render()


def test_cli_merge_and_parts(tmp_path):
    for i in (1, 2, 3):
        bundle(i).save(tmp_path / f"r{i}.safetensors")
    runner = CliRunner()
    r = runner.invoke(cli, ["bundle", "merge", str(tmp_path / "r1.safetensors"), str(tmp_path / "r2.safetensors"),
                            "-o", str(tmp_path / "ab.safetensors")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["bundle", "merge", str(tmp_path / "ab.safetensors"), str(tmp_path / "r3.safetensors"),
                            "-o", str(tmp_path / "abc.safetensors")])
    assert r.exit_code == 0 and "3 parts" in r.output, r.output
    r = runner.invoke(cli, ["bundle", "parts", str(tmp_path / "abc.safetensors")])
    assert r.exit_code == 0, r.output
    assert r.output.count("part ") == 3 and "people 001,002" in r.output and "people 003,004" in r.output


def test_cli_merge_refuses_other_models_without_a_traceback(tmp_path):
    bundle(1).save(tmp_path / "a.safetensors")
    bundle(2, hidden=16).save(tmp_path / "b.safetensors")
    r = CliRunner().invoke(cli, ["bundle", "merge", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"),
                                 "-o", str(tmp_path / "c.safetensors")])
    assert r.exit_code == 2 and "SK438" in r.output and "hidden_size differs" in r.output
    assert "Traceback" not in r.output and not (tmp_path / "c.safetensors").exists()


# ------------------------------------------------------------------------------------------ recipes
HEAD = """name: t
model: {id: tiny}
bundle: {path: b.safetensors}
steer: {layers: [0]}
gate:
  rule: ridge_linear
  forget: [{kind: world, split: forget}, {kind: world, split: test}]
  retain: [{kind: world, split: retain}]
"""


def test_set_reaches_into_a_list_of_sources():
    loaded = parse_recipe_text(HEAD, overrides=['gate.forget.1.ids=["007", "012"]'])
    assert loaded.recipe.gate.forget[1].ids == ["007", "012"] and loaded.recipe.gate.forget[0].ids is None


@pytest.mark.parametrize("item, message", [
    ("gate.forget.5.ids=[a]", "is a list of 2; '5' is not the index of a mapping"),
    ("steer.layers.0=1", "'steer.layers' is not a mapping")])
def test_set_into_a_list_fails_clearly(item, message):
    with pytest.raises(RecipeError) as err:
        parse_recipe_text(HEAD, overrides=[item])
    assert message in err.value.render() and "SK110" in err.value.render()


def test_source_ids_keep_only_those_people(tmp_path):
    from steerkit.bench.world import generate_world
    from steerkit.recipe import MllmuSource
    from steerkit.sources import load_source

    generate_world(tmp_path / "w", seed=0, n_profiles=20)
    resolve = lambda p: tmp_path / p  # noqa: E731
    every = load_source(MllmuSource(path="w", split="forget", tasks=["classification"]), resolve, None)
    people = sorted({it.id for it in every})
    some = load_source(MllmuSource(path="w", split="forget", tasks=["classification"], ids=people[:1]), resolve, None)
    assert some and {it.id for it in some} == {people[0]} and len(some) < len(every)
    with pytest.raises(DataError) as err:
        load_source(MllmuSource(path="w", split="forget", ids=[people[0], "nobody"]), resolve, None)
    assert "SK606" in err.value.render() and "'nobody'" in err.value.render()
