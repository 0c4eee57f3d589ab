"""run_unlearning end to end on a tiny world and a tiny small LLaVA: load, train, merge, save, evaluate."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    """A 20-profile world and an untrained tiny-size small LLaVA saved as a local checkpoint."""
    from steerkit.bench import generate_world
    from steerkit.data.mllmu import train_pairs
    from steerkit.models.processors import save_processor
    from steerkit.models.small import build_small, train_tokenizer, world_texts

    base = tmp_path_factory.mktemp("unlearn")
    world = generate_world(base / "world", seed=1, n_profiles=20, n_celebrities=4, train_variants=1,
                           n_test_images=1, n_val_images=1, object_drawings=1).root
    tok = train_tokenizer(world_texts(train_pairs(world, configs=("ft_Data",))), 400, arch="llava")
    model, proc = build_small("llava", tok, size="tiny")
    model.save_pretrained(base / "vanilla")
    save_processor(proc, base / "vanilla")
    return base, world


def test_run_unlearning_end_to_end(tiny_setup):
    from steerkit.models.loading import load_pretrained
    from steerkit.unlearn.config import parse_unlearn_config
    from steerkit.unlearn.trainer import META_FILE, REPORT_FILE, run_unlearning

    base, world = tiny_setup
    loaded = parse_unlearn_config(f"""
name: tiny-npo
method: npo
model: {{id: {base / 'vanilla'}}}
data: {{path: {world}, forget_ratio: 10}}
lora: {{r: 4, alpha: 8}}
train: {{lr: 1.0e-2, steps: 2, batch_size: 4}}
eval: {{splits: [forget, retain], tasks: [classification], limit: 2, batch_size: 8, plots: false}}
out: {base / 'out'}
""")
    report = run_unlearning(loaded, progress=False)
    t = report.train
    assert t.forget_pairs > 0 and t.steps == 2 and t.retain_pairs == 0  # NPO needs no retain pairs
    assert t.forward_passes == 8 and t.reference_forward_passes == t.forget_pairs
    assert t.changed_tensors > 0 and t.trainable_params > 0
    assert report.eval_seconds > 0 and report.train.train_seconds > 0
    # the items a recipe's eval gets: forget, retain (+ refusal once eval_items_for yields its items)
    assert {"forget", "retain"} <= set(report.metrics) <= {"forget", "retain", "refusal"}
    assert report.vanilla_metrics.keys() == report.metrics.keys()
    assert report.accuracy("forget", modality="vqa") is not None
    ckpt = base / "out" / "checkpoint"
    meta = json.loads((ckpt / META_FILE).read_text())
    assert meta["config"]["method"] == "npo"
    model, processor, _ = load_pretrained(ckpt)
    assert processor is not None and sum(p.numel() for p in model.parameters()) == t.total_params
    saved = json.loads((base / "out" / REPORT_FILE).read_text())
    assert saved["train"]["steps"] == 2 and (base / "out" / "eval" / "results.json").is_file()
