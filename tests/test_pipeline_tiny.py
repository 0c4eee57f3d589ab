"""End to end on a tiny saved checkpoint and a small generated world: extract -> bundle -> apply (CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from steerkit.bundle import Bundle
from steerkit.cli.main import cli
from steerkit.testing.fixtures import TINY_WORKDIR_RECIPE, tiny_workdir


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tiny_workdir(tmp_path_factory.mktemp("e2e"))
    recipe = TINY_WORKDIR_RECIPE.format(name="tiny-e2e") + """gate:
  rule: ridge_linear
  forget: [{kind: mllmu, path: world, split: forget, tasks: [classification]}]
  retain: [{kind: mllmu, path: world, split: retain, tasks: [classification]}]
  holdout: 0.25
steer: {layers: {start: 0}, strength: {lambda: -1.0}}
bundle: {path: out/bundle.safetensors}
"""
    (root / "recipe.yaml").write_text(recipe)
    (root / "prompts.jsonl").write_text(
        json.dumps({"prompt": "Who is this?", "image": "world/contrast/images/" +
                    sorted(p.name for p in (root / "world/contrast/images").iterdir())[0]}) + "\n"
        + "{not json\n" + json.dumps({"prompt": "Where was the person born?"}) + "\n"
        + json.dumps({"prompt": "x", "image": "missing.png"}) + "\n")
    return root


def test_extract_writes_a_deterministic_bundle(workdir):
    runner = CliRunner()
    r1 = runner.invoke(cli, ["extract", str(workdir / "recipe.yaml")])
    assert r1.exit_code == 0, r1.output
    b1 = Bundle.load(workdir / "out/bundle.safetensors")
    assert sorted(b1.manifest.sites["resid_pre"]) == [0, 1]
    assert b1.manifest.direction["pgd"]["target_nll_after"] <= b1.manifest.direction["pgd"]["target_nll_before"]
    fit = b1.manifest.gate["fit"]["0"]
    assert fit["auc_heldout_retain"] is not None
    r2 = runner.invoke(cli, ["extract", str(workdir / "recipe.yaml"), "-o", str(workdir / "out/b2.safetensors")])
    assert r2.exit_code == 0, r2.output
    b2 = Bundle.load(workdir / "out/b2.safetensors")
    assert b1.manifest.tensors_sha256 == b2.manifest.tensors_sha256


def test_apply_reports_bad_lines_and_keeps_good_ones(workdir):
    runner = CliRunner()
    out = workdir / "answers.jsonl"
    r = runner.invoke(cli, ["apply", str(workdir / "recipe.yaml"), "--input", str(workdir / "prompts.jsonl"),
                            "--out", str(out), "--compare", "--max-new-tokens", "4"])
    assert r.exit_code == 2, r.output  # two bad lines -> invalid input, but the good ones are written
    assert "Traceback" not in r.output
    assert ":2" in r.output and ":4" in r.output and "missing.png" in r.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["line"] for row in rows] == [1, 3]
    assert all("unsteered" in row and "steered" in row for row in rows)


def test_validate_and_compile_without_weights(workdir):
    runner = CliRunner()
    r = runner.invoke(cli, ["validate", str(workdir / "recipe.yaml")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["compile", str(workdir / "recipe.yaml"), "--set", "steer.layers.start=5"])
    assert r.exit_code == 2 and "steer.layers" in r.output and "Traceback" not in r.output


def _share_as_hub_folder(workdir, name: str) -> Path:
    """A folder laid out like a Hub model repository holding the extracted bundle."""
    import shutil

    repo = workdir / "hub" / name
    repo.mkdir(parents=True, exist_ok=True)
    if not (workdir / "out/bundle.safetensors").exists():
        assert CliRunner().invoke(cli, ["extract", str(workdir / "recipe.yaml")]).exit_code == 0
    shutil.copy(workdir / "out/bundle.safetensors", repo / "bundle.safetensors")
    (repo / "README.md").write_text("---\nlibrary_name: steerkit\n---\nAn erasure bundle.\n")
    return repo


def test_bundle_from_a_hub_like_folder(workdir):
    repo = _share_as_hub_folder(workdir, "org__erase")
    runner = CliRunner()
    r = runner.invoke(cli, ["apply", str(workdir / "recipe.yaml"), "--bundle", str(repo), "--prompt",
                            "Where was the person born?", "--max-new-tokens", "2"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["compile", str(workdir / "recipe.yaml"), "--set", f"bundle.path={repo}"])
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output
    (repo / "other.safetensors").write_bytes((repo / "bundle.safetensors").read_bytes())
    (repo / "bundle.safetensors").rename(repo / "third.safetensors")
    r = runner.invoke(cli, ["compile", str(workdir / "recipe.yaml"), "--set", f"bundle.path={repo}"])
    assert r.exit_code == 2 and "SK422" in r.output and "other.safetensors" in r.output, r.output


def test_bundle_from_a_hub_repository_id(workdir, monkeypatch):
    import huggingface_hub

    repo = _share_as_hub_folder(workdir, "org__erase2")
    calls = []

    def fake_download(repo_id, filename, revision=None, **kw):  # stands in for the Hub cache: no network here
        calls.append((repo_id, filename, revision))
        if repo_id != "org/erase2":
            raise huggingface_hub.errors.RepositoryNotFoundError("404 Client Error: repository not found")
        return str(repo / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    runner = CliRunner()
    r = runner.invoke(cli, ["compile", str(workdir / "recipe.yaml"), "--set", "bundle.path=hf://org/erase2@v1"])
    assert r.exit_code == 0, r.output
    assert calls[-1] == ("org/erase2", "bundle.safetensors", "v1")
    r = runner.invoke(cli, ["compile", str(workdir / "recipe.yaml"), "--set", "bundle.path=hf://org/missing"])
    assert r.exit_code == 2 and "SK421" in r.output and "Traceback" not in r.output, r.output
    r = runner.invoke(cli, ["compile", str(workdir / "recipe.yaml"), "--set", "bundle.path=hf://bad"])
    assert r.exit_code == 2 and "SK420" in r.output, r.output
    r = runner.invoke(cli, ["extract", str(workdir / "recipe.yaml"), "-o", "hf://org/erase2"])
    assert r.exit_code == 2 and "cannot write a bundle to the Hub" in r.output, r.output
