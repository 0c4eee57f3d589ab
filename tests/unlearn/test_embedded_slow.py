"""On the embedded small LLaVA (trained once and cached): a short GA run lowers forget accuracy."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_short_ga_run_lowers_forget_accuracy(tmp_path):
    from steerkit.unlearn.config import load_unlearn_config
    from steerkit.unlearn.trainer import run_unlearning

    loaded = load_unlearn_config(ROOT / "baselines" / "ga.yaml", [
        "eval.splits=[forget, retain]", "eval.tasks=[classification]", "eval.limit=25", "eval.plots=false",
        "save=false"])
    report = run_unlearning(loaded, progress=False, out_dir=tmp_path)
    for modality in ("vqa", "qa"):
        vanilla = report.accuracy("forget", modality=modality, vanilla=True)
        after = report.accuracy("forget", modality=modality)
        assert vanilla >= 80 and after <= vanilla - 30, (modality, vanilla, after)
    retain_v = report.accuracy("retain", modality="qa", vanilla=True)
    assert report.accuracy("retain", modality="qa") >= retain_v - 25
