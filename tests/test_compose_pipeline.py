"""Forget requests over time, end to end through the CLI on the tiny saved LLaVA and a 20-profile world:
one bundle per request (the second reusing the first's retain activations), applied together with
repeated --bundle, as a merged set, and from the recipe's bundle.compose."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from steerkit.bundle import Bundle
from steerkit.cli.main import cli
from steerkit.data.mllmu import eval_items
from steerkit.testing.fixtures import TINY_WORKDIR_RECIPE, tiny_workdir

RECIPE = TINY_WORKDIR_RECIPE.format(name="tiny-requests") + """gate:
  rule: ridge_linear
  forget: [{kind: mllmu, path: world, split: forget, tasks: [classification]}]
  retain: [{kind: mllmu, path: world, split: retain, tasks: [classification], limit: 60}]
  holdout: 0.25
  layer: 1                         # layer 0's input is the token embedding: the same last token everywhere
steer: {layers: {start: 1}, strength: {lambda: -1.0}}
bundle: {path: requests/r1.safetensors}
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tiny_workdir(tmp_path_factory.mktemp("requests"))
    (root / "recipe.yaml").write_text(RECIPE)
    people = sorted({it.id for it in eval_items(root / "world", "forget", 10, ["classification"], ["qa"])})
    assert len(people) == 2  # forget_10 of 20 profiles: one person per request here
    runner = CliRunner()
    logs = []
    for i, person in enumerate(people, start=1):
        r = runner.invoke(cli, ["extract", str(root / "recipe.yaml"), "-o", str(root / f"requests/r{i}.safetensors"),
                                "--retain-cache", str(root / "retain.safetensors"),
                                "--set", f'gate.forget.0.ids=["{person}"]'])
        assert r.exit_code == 0, r.output
        logs.append(r.output)
    return root, people, logs


def test_second_request_reuses_the_retain_activations_and_matches_a_fit_from_scratch(workdir):
    root, people, logs = workdir
    assert "retain activations: computing" in logs[0] and "reused" not in logs[0]
    assert "retain activations: reused" in logs[1]
    r = CliRunner().invoke(cli, ["extract", str(root / "recipe.yaml"), "-o", str(root / "scratch.safetensors"),
                                 "--set", f'gate.forget.0.ids=["{people[1]}"]'])
    assert r.exit_code == 0, r.output
    scratch, cached = Bundle.load(root / "scratch.safetensors"), Bundle.load(root / "requests/r2.safetensors")
    assert scratch.manifest.tensors_sha256 == cached.manifest.tensors_sha256
    other = Bundle.load(root / "requests/r1.safetensors")
    assert other.manifest.tensors_sha256 != cached.manifest.tensors_sha256  # a different request's gate


def test_a_stale_retain_cache_is_recomputed(workdir, tmp_path):
    root, people, _ = workdir
    cache = tmp_path / "retain.safetensors"
    cache.write_bytes((root / "retain.safetensors").read_bytes())
    r = CliRunner().invoke(cli, ["extract", str(root / "recipe.yaml"), "-o", str(tmp_path / "x.safetensors"),
                                 "--retain-cache", str(cache), "--set", f'gate.forget.0.ids=["{people[0]}"]',
                                 "--set", "gate.retain.0.limit=40"])
    assert r.exit_code == 0, r.output
    assert "recomputing (the cache is for other inputs)" in r.output


def _apply(root, *args) -> list[dict]:
    r = CliRunner().invoke(cli, ["apply", str(root / "recipe.yaml"), "--prompt", "Who is this person?",
                                 "--max-new-tokens", "4", *args])
    assert r.exit_code == 0, r.output
    return [json.loads(line) for line in r.output.splitlines() if line.startswith("{")]


def test_two_bundles_a_merged_set_and_bundle_compose_give_the_same_answers(workdir):
    root, _, _ = workdir
    r1, r2 = str(root / "requests/r1.safetensors"), str(root / "requests/r2.safetensors")
    both = _apply(root, "--bundle", r1, "--bundle", r2)
    r = CliRunner().invoke(cli, ["bundle", "merge", r1, r2, "-o", str(root / "requests/all.safetensors")])
    assert r.exit_code == 0, r.output
    merged = _apply(root, "--bundle", str(root / "requests/all.safetensors"))
    composed = _apply(root, "--set", "bundle.compose=[requests/r2.safetensors]", "--set",
                      f"bundle.path={root / 'requests/r1.safetensors'}")
    assert both == merged == composed


def test_compose_entries_resolve_against_the_recipe_and_must_exist(workdir):
    root, _, _ = workdir
    (root / "composed.yaml").write_text(RECIPE.replace(
        "bundle: {path: requests/r1.safetensors}",
        "bundle: {path: requests/r1.safetensors, compose: [requests/r2.safetensors]}"))
    r = CliRunner().invoke(cli, ["compile", str(root / "composed.yaml")])
    assert r.exit_code == 0, r.output
    assert "2 bundles composed" in r.output
    (root / "missing.yaml").write_text(RECIPE.replace(
        "bundle: {path: requests/r1.safetensors}",
        "bundle: {path: requests/r1.safetensors, compose: [requests/nope.safetensors]}"))
    r = CliRunner().invoke(cli, ["compile", str(root / "missing.yaml")])
    assert r.exit_code == 2 and "SK773" in r.output and "Traceback" not in r.output
