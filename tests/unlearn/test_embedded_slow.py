"""On the embedded small LLaVA (trained once and cached): the shipped NPO baseline lowers forget accuracy."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_short_npo_run_lowers_forget_accuracy(tmp_path):
    from steerkit.unlearn.config import load_unlearn_config
    from steerkit.unlearn.trainer import run_unlearning

    loaded = load_unlearn_config(ROOT / "baselines" / "npo.yaml", [
        "eval.splits=[forget, retain]", "eval.tasks=[classification]", "eval.limit=50", "eval.plots=false",
        "save=false"])
    report = run_unlearning(loaded, progress=False, out_dir=tmp_path)

    def mean(split: str, vanilla: bool) -> float:
        return sum(report.accuracy(split, modality=m, vanilla=vanilla) for m in ("vqa", "qa")) / 2

    forget_drop = mean("forget", True) - mean("forget", False)
    retain_drop = mean("retain", True) - mean("retain", False)
    assert mean("forget", True) > 40  # the vanilla model knows the forget people (chance is 25)
    assert forget_drop >= 20 and forget_drop > retain_drop, (forget_drop, retain_drop)
    assert report.train.changed_tensors == 4 * 7  # LoRA on the 7 linear layers of 4 decoder layers, merged
