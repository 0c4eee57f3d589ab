"""Every shipped recipe validates and compiles against its adapter (no weights loaded)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from steerkit.cli.main import cli
from steerkit.pipeline import dry_plan
from steerkit.resources import builtin_dir

RECIPES = sorted(builtin_dir("recipes").rglob("*.yaml"))


def test_recipes_exist():
    assert len(RECIPES) >= 8


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(Path(p).relative_to(builtin_dir("recipes"))))
def test_recipe_compiles(path):
    plan, _ = dry_plan(path, check_data=False)
    assert plan.writes and plan.written_layers[0] >= 0
    assert plan.sha256() == dry_plan(path, check_data=False)[0].sha256()  # compiling is deterministic


def test_validate_cli_all_recipes():
    r = CliRunner().invoke(cli, ["validate", "--skip-data", *map(str, RECIPES)])
    assert r.exit_code == 0, r.output
    assert r.output.count("ok ") == len(RECIPES)


def test_recipes_list_and_cp(tmp_path):
    runner = CliRunner()
    r = runner.invoke(cli, ["recipes", "list"])
    assert r.exit_code == 0 and "unlearning/mllmeraser_embedded_llava" in r.output
    r = runner.invoke(cli, ["recipes", "cp", "unlearning/mllmeraser_embedded_llava", str(tmp_path)])
    assert r.exit_code == 0 and (tmp_path / "mllmeraser_embedded_llava.yaml").exists()
    r = runner.invoke(cli, ["recipes", "cp", "unlearning/mllmeraser_embeded_llava", str(tmp_path / "x.yaml")])
    assert r.exit_code == 2 and "did you mean 'unlearning/mllmeraser_embedded_llava'" in r.output


def test_published_recipes_need_their_data():
    """The 7B recipes point at the real MLLMU-Bench; validate says exactly what is missing."""
    r = CliRunner().invoke(cli, ["validate", str(builtin_dir("recipes") / "unlearning/mllmeraser_llava15_7b.yaml")])
    assert r.exit_code == 2 and "data/contrast/recall.jsonl" in r.output and "Traceback" not in r.output
