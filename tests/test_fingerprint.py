"""A bundle fitted on another model, world, data or fit settings is never applied silently (issue #19)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from steerkit.bundle import Bundle
from steerkit.cli.main import cli
from steerkit.errors import DataError
from steerkit.fingerprint import fit_key, fit_settings, world_fingerprint, _sha
from steerkit.pipeline import bundle_path
from steerkit.recipe import load_recipe
from steerkit.resources import builtin_dir
from steerkit.testing.fixtures import TINY_WORKDIR_RECIPE, tiny, tiny_workdir

SHIPPED = builtin_dir("recipes") / "unlearning" / "mllmeraser_embedded_llava.yaml"
GATE = """gate:
  rule: ridge_linear
  forget: [{kind: mllmu, path: world, split: forget, tasks: [classification]}]
  retain: [{kind: mllmu, path: world, split: retain, tasks: [classification]}]
  holdout: 0.25
steer: {layers: {start: 0}, strength: {lambda: -1.0}}
bundle: {path: out/bundle.safetensors}
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A tiny checkpoint and world, a second checkpoint with other weights, and one extracted bundle."""
    from steerkit.models.zoo import save_tiny

    root = tiny_workdir(tmp_path_factory.mktemp("fingerprint"))
    save_tiny(tiny("llava", std=0.2), root / "model2")  # same architecture and sizes, other weights
    (root / "recipe.yaml").write_text(TINY_WORKDIR_RECIPE.format(name="fp") + GATE)
    r = CliRunner().invoke(cli, ["extract", str(root / "recipe.yaml")])
    assert r.exit_code == 0, r.output
    return root


def _apply(root: Path, *args: str):
    return CliRunner().invoke(cli, ["apply", str(root / "recipe.yaml"), "--prompt", "Who is this?",
                                    "--max-new-tokens", "2", *args])


def test_extract_records_what_the_bundle_was_fitted_on(workdir):
    m = Bundle.load(workdir / "out/bundle.safetensors").manifest
    f = m.fitted_on
    assert f["model"]["weights_from"] == "files" and len(f["model"]["weights_sha256"]) == 64
    assert f["world"] is None  # jsonl and mllmu sources only: the data hashes cover them
    recipe = load_recipe(workdir / "recipe.yaml").recipe
    assert f["fit_sha256"] == _sha(fit_settings(recipe))
    rate = m.gate["fit"]["1"]["retain_open_heldout"]  # the calibration's promise on unseen retain people
    assert 0.0 <= rate <= 1.0 and m.gate["retain_open_rate"] == 0.02


def test_steering_settings_may_change_but_fit_settings_may_not(workdir):
    ok = _apply(workdir, "--set", "steer.strength.lambda=-2")
    assert ok.exit_code == 0, ok.output
    r = _apply(workdir, "--set", "gate.holdout=0.3")
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "[SK436]" in r.output and "gate.holdout: 0.25 in the bundle, 0.3 in this run" in r.output
    assert "{fit}" in r.output  # the fix names the per-fit bundle path


def test_other_weights_are_refused_naming_both(workdir):
    ours = Bundle.load(workdir / "out/bundle.safetensors").manifest.fitted_on["model"]["weights_sha256"]
    r = _apply(workdir, "--set", "model.id=model2")
    assert r.exit_code == 2 and "[SK434]" in r.output and "Traceback" not in r.output
    assert f"'model' (weights sha256 {ours[:12]})" in r.output and "'model2' has weights sha256" in r.output
    assert "--allow-foreign-bundle" not in r.output  # the recipe's own bundle: the fix is to re-extract


def test_allow_foreign_bundle_needs_an_explicit_bundle_and_then_warns(workdir):
    bundle = str(workdir / "out/bundle.safetensors")
    r = _apply(workdir, "--set", "model.id=model2", "--bundle", bundle)
    assert r.exit_code == 2 and "[SK434]" in r.output and "--allow-foreign-bundle" in r.output
    r = _apply(workdir, "--set", "model.id=model2", "--allow-foreign-bundle")
    assert r.exit_code == 2 and "[SK437]" in r.output
    r = _apply(workdir, "--set", "model.id=model2", "--bundle", bundle, "--allow-foreign-bundle")
    assert r.exit_code == 0, r.output
    assert "warning: foreign bundle applied anyway (--allow-foreign-bundle)" in r.output


def test_changed_data_is_refused_by_validate(workdir, tmp_path):
    root = tmp_path / "w"
    shutil.copytree(workdir, root, ignore=shutil.ignore_patterns("model", "model2"))
    (root / "recipe.yaml").write_text((root / "recipe.yaml").read_text().replace("{id: model}",
                                                                                 f"{{id: {workdir / 'model'}}}"))
    assert CliRunner().invoke(cli, ["validate", str(root / "recipe.yaml")]).exit_code == 0
    rows = (root / "world/contrast/recall.jsonl").read_text().splitlines()
    (root / "world/contrast/recall.jsonl").write_text("\n".join(rows[:-1]) + "\n")
    r = CliRunner().invoke(cli, ["validate", str(root / "recipe.yaml")])
    assert r.exit_code == 2 and "[SK435]" in r.output and "data 'recall' differs" in r.output


def _seed0_bundle(path: Path) -> Path:
    """A bundle for the shipped embedded recipe as if fitted on world seed 0 (no model is trained)."""
    from steerkit.models.small import SIZES

    recipe = load_recipe(SHIPPED).recipe
    hidden, layers = SIZES["default"].text_hidden, SIZES["default"].text_layers
    tensors = {f"direction.resid_pre.{i}": torch.ones(hidden) for i in range(2, layers)}
    fitted = {"model": {"id": "embedded:llava", "revision": None, "weights_sha256": "0" * 64,
                        "weights_from": "files", "files": 1},
              "world": world_fingerprint(recipe), "data_sha256": "0" * 64, "fit_sha256": _sha(fit_settings(recipe))}
    Bundle.create(tensors, model_id="embedded:llava", architecture="LlavaForConditionalGeneration",
                  adapter={"name": "llava", "sha256": "0" * 64}, hidden_size=hidden, num_layers=layers,
                  direction={"method": "mean_diff"}, gate={"rule": "always_on"}, recipe=recipe.dump(),
                  fitted_on=fitted).save(path)
    return path


def test_seed5_eval_refuses_the_seed0_bundle_before_loading_the_model(tmp_path, monkeypatch):
    """The issue's command: `eval <shipped recipe> --set model.world.seed=5` reused the seed-0 bundle."""
    import steerkit.remote

    def no_model(*a, **k):
        raise AssertionError("the model was loaded (an embedded model of a new world trains for minutes)")

    monkeypatch.setattr(steerkit.remote, "open_session", no_model)
    bundle = _seed0_bundle(tmp_path / "seed0.safetensors")
    runner = CliRunner()
    for extra in (["--set", f"bundle.path={bundle}"], ["--bundle", str(bundle)]):  # recipe path / explicit
        r = runner.invoke(cli, ["eval", str(SHIPPED), "--set", "model.world.seed=5", *extra])
        assert r.exit_code == 2, r.output
        assert "[SK435]" in r.output and "Traceback" not in r.output
        assert "world seed 0, 100 profiles" in r.output and "this run uses world seed 5, 100 profiles" in r.output
    # the shipped recipe's own path is per fit: the seed-5 run looks for its own bundle, never the seed-0 one
    seed0, seed5 = (bundle_path(load_recipe(SHIPPED, [f"model.world.seed={s}"])) for s in (0, 5))
    assert seed0 != seed5 and seed0.parent == seed5.parent and "{fit}" not in str(seed0)
    # the same world and fit settings: it fits (the hand-made bundle holds no calibrated lambda: give one)
    r = runner.invoke(cli, ["validate", str(SHIPPED), "--set", f"bundle.path={bundle}",
                            "--set", "steer.strength.lambda=-2"])
    assert r.exit_code == 0, r.output


def test_a_bundle_without_fingerprints_only_warns(workdir, tmp_path):
    old = Bundle.load(workdir / "out/bundle.safetensors")
    path = tmp_path / "old.safetensors"
    Bundle(old.tensors, old.manifest.model_copy(update={"fitted_on": None})).save(path)
    r = CliRunner().invoke(cli, ["validate", str(workdir / "recipe.yaml"), "--set", f"bundle.path={path}"])
    assert r.exit_code == 0, r.output
    assert "records no fitted_on fingerprints" in r.output


def test_fit_key_changes_with_model_world_data_and_fit_settings_only():
    base = load_recipe(SHIPPED).recipe
    same = load_recipe(SHIPPED, ["steer.strength.lambda=-2", "eval.limit=3"]).recipe
    assert fit_key(base) == fit_key(same)
    for override in ("model.world.seed=5", "model.id=embedded:qwen2_5_vl", "gate.retain_open_rate=0.02", "seed=1", "direction.recall.source.forget_ratio=5"):
        assert fit_key(load_recipe(SHIPPED, [override]).recipe) != fit_key(base), override


# ----------------------------------------------------------------------------------------- data sources
def test_empty_source_is_named_at_its_recipe_line_with_the_reason(workdir, tmp_path):
    """The issue's SK602 named neither the source nor why: now file:line, key path and the filter."""
    import pyarrow.parquet as pq

    from steerkit.extraction import _sides

    shutil.copytree(workdir / "world", tmp_path / "world")
    for f in (tmp_path / "world/Refusal_Set").glob("*.parquet"):  # keep only the text-only refusal rows
        t = pq.read_table(f)
        pq.write_table(t.filter([r != "Image_Textual" for r in t.column("Type").to_pylist()]), f)
    (tmp_path / "r.yaml").write_text(TINY_WORKDIR_RECIPE.format(name="e") + GATE.replace(
        "split: retain, tasks: [classification]", "split: refusal, modalities: [vqa]"))
    loaded = load_recipe(tmp_path / "r.yaml")
    with pytest.raises(DataError) as e:
        _sides(loaded, loaded.recipe.gate.retain, "gate.retain")
    p = e.value.problems[0]
    assert p.code == "SK602" and (p.path, p.line) == (str(tmp_path / "r.yaml"), 13), p
    assert p.key_path == "gate.retain.0" and "match modalities ['vqa']" in p.message
    assert "('refusal', 'qa')" in p.message  # what the split does hold


def test_refusal_split_loads_and_a_missing_config_fails_validate(workdir, tmp_path):
    from steerkit.recipe import MllmuSource
    from steerkit.sources import load_source

    items = load_source(MllmuSource(path=str(workdir / "world"), split="refusal"), Path, None)
    assert items and all(i.source == "refusal:refusal" for i in items)
    shutil.copytree(workdir / "world", tmp_path / "world", ignore=shutil.ignore_patterns("Refusal_Set"))
    recipe = TINY_WORKDIR_RECIPE.format(name="r").replace("{id: model}", f"{{id: {workdir / 'model'}}}")
    (tmp_path / "r.yaml").write_text(recipe + GATE.replace("split: retain,", "split: refusal,"))
    r = CliRunner().invoke(cli, ["validate", str(tmp_path / "r.yaml")])
    assert r.exit_code == 2 and "[SK231]" in r.output and "Refusal_Set" in r.output
    assert "gate.retain.0.path" in r.output


def test_open_rate_report_warns_above_target():
    from steerkit.gate_report import open_rate, report_lines

    assert open_rate(torch.tensor([0.0, 1e-6, 0.3, 1.0])) == 0.5 and open_rate([]) is None
    report = {"target": 0.01, "heldout_at_fit": 0.0125, "splits": {"retain": {"n": 200, "open_rate": 0.05},
                                                                   "utility": {"n": 100, "open_rate": 0.0}}}
    lines, warnings = report_lines(report)
    assert lines[0] == ("gate open (c > 0.001) on 5.0 % of 200 retain prompts (target gate.retain_open_rate 1.0 %; "
                        "held-out retain at fit 1.2 %)")
    assert len(warnings) == 1 and "retain prompts, above its target 1.0 %" in warnings[0]
    assert json.dumps(report)  # lands in the eval JSON as is


def test_eval_prints_the_retain_open_rate_beside_its_target(workdir, tmp_path):
    r = CliRunner().invoke(cli, ["eval", str(workdir / "recipe.yaml"), "--out", str(tmp_path), "--set",
                                 "eval.data=world", "--set", "eval.splits=[retain]", "--set", "eval.limit=1",
                                 "--set", "eval.tasks=[classification]"])
    assert r.exit_code == 0, r.output
    heldout = max(s["retain_open_heldout"] for s in Bundle.load(workdir / "out/bundle.safetensors"
                                                                ).manifest.gate["fit"].values())
    report = json.loads((tmp_path / "results.json").read_text())["results"]["steered"]["meta"]["retain_open"]
    assert report["target"] == 0.02 and report["heldout_at_fit"] == heldout and report["splits"]["retain"]["n"] == 2
    rate = report["splits"]["retain"]["open_rate"]
    assert (f"gate open (c > 0.001) on {100 * rate:.1f} % of 2 retain prompts (target gate.retain_open_rate "
            f"2.0 %; held-out retain at fit {100 * heldout:.1f} %)") in r.output
    assert ("above its target 2.0 %" in r.output) == (rate > 0.02)


def test_python_api_plan_for_refuses_a_bundle_from_other_weights(workdir):
    """Not only the CLI: plan_for (behind run_eval and the benchmarks) checks a bundle it was handed."""
    from steerkit.errors import BundleError
    from steerkit.pipeline import plan_for
    from steerkit.session import load_session

    bundle = Bundle.load(workdir / "out/bundle.safetensors")
    loaded = load_recipe(workdir / "recipe.yaml", ["model.id=model2"])
    with pytest.raises(BundleError) as e:
        plan_for(loaded, load_session(loaded.recipe.model, loaded.base_dir), bundle)
    assert [p.code for p in e.value.problems] == ["SK434"]
    loaded = load_recipe(workdir / "recipe.yaml")
    assert plan_for(loaded, load_session(loaded.recipe.model, loaded.base_dir), bundle).writes


def test_a_field_added_to_the_schema_later_counts_at_its_default(workdir):
    """An older bundle's recipe lacks fields added since; at their defaults they are no difference."""
    from steerkit.fingerprint import fit_problems

    bundle = Bundle.load(workdir / "out/bundle.safetensors")
    recipe = json.loads(json.dumps(bundle.manifest.recipe))
    del recipe["gate"]["retain_open_rate"]  # as if written before the field existed (default 0.02)
    fitted = {**bundle.manifest.fitted_on, "fit_sha256": _sha({k: recipe.get(k) for k in ("direction", "gate",
                                                                                          "seed")})}
    older = Bundle(bundle.tensors, bundle.manifest.model_copy(update={"recipe": recipe, "fitted_on": fitted}))
    loaded = load_recipe(workdir / "recipe.yaml")
    assert fit_problems(older, loaded, hint="-") == ([], [])
    problems, _ = fit_problems(older, load_recipe(workdir / "recipe.yaml", ["gate.retain_open_rate=0.05"]),
                               hint="-")
    assert [(p.code, p.key_path) for p in problems] == [("SK436", "gate.retain_open_rate")]
    assert "0.02 in the bundle, 0.05 in this run" in problems[0].message
