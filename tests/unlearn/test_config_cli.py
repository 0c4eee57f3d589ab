"""Baseline configs are validated like recipes: located problems, exit code 2, shipped files valid."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from steerkit.cli.unlearn_cmd import command
from steerkit.unlearn.config import UnlearnConfigError, load_unlearn_config, parse_unlearn_config

ROOT = Path(__file__).resolve().parents[2]
GOOD = """\
name: t
method: npo
model: {id: embedded:llava}
train:
  lr: 1.0e-3
  steps: 5
  beta: 0.4
"""


def _run(tmp_path, text, *args):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path, CliRunner().invoke(command, [str(path), *args])


def test_unknown_key_is_located_and_exits_2(tmp_path):
    path, res = _run(tmp_path, GOOD.replace("  steps: 5", "  steps: 5\n  lerning_rate: 2"))
    assert res.exit_code == 2
    assert f"{path}:7:3" in res.output and "unknown key 'lerning_rate'" in res.output
    assert "SK801" in res.output and "allowed keys here" in res.output


def test_bad_method_is_located_with_a_suggestion(tmp_path):
    path, res = _run(tmp_path, GOOD.replace("method: npo", "method: nop"))
    assert res.exit_code == 2
    assert f"{path}:2:1" in res.output and "unknown value 'nop'" in res.output
    assert "did you mean 'npo'?" in res.output


def test_duplicate_key_exits_2(tmp_path):
    path, res = _run(tmp_path, GOOD + "method: ga\n")
    assert res.exit_code == 2 and "duplicate key 'method'" in res.output and f"{path}:8:1" in res.output


def test_keys_that_do_nothing_for_the_method_are_errors(tmp_path):
    path, res = _run(tmp_path, GOOD.replace("method: npo", "method: ga") + "mode: full\nlora: {r: 8}\n")
    assert res.exit_code == 2
    assert f"{path}:7:3" in res.output and "'beta' applies to method npo only" in res.output
    assert "section 'lora' is unused with mode: full" in res.output


def test_steps_and_epochs_are_exclusive():
    with pytest.raises(UnlearnConfigError, match="either 'steps' or 'epochs'"):
        parse_unlearn_config(GOOD.replace("  steps: 5", "  steps: 5\n  epochs: 1"))
    with pytest.raises(UnlearnConfigError, match="set 'steps' or 'epochs'"):
        parse_unlearn_config(GOOD.replace("  steps: 5\n", ""))


def test_set_overrides_and_check(tmp_path):
    _, res = _run(tmp_path, GOOD, "--set", "train.lr=3e-4", "--set", "data.forget_ratio=5", "--check")
    assert res.exit_code == 0, res.output
    assert "lr: 0.0003" in res.output and "forget_ratio: 5" in res.output
    _, res = _run(tmp_path, GOOD, "--set", "data.forget_ratio=7", "--check")
    assert res.exit_code == 2 and "--set" in res.output


@pytest.mark.parametrize("name", ["ga", "ga_diff", "kl_min", "npo"])
def test_shipped_baselines_validate(name):
    loaded = load_unlearn_config(ROOT / "baselines" / f"{name}.yaml")
    cfg = loaded.config
    assert cfg.method == name and cfg.model.id == "embedded:llava" and cfg.data.forget_ratio == 10
    assert cfg.mode == "lora" and cfg.lora.r == 16
