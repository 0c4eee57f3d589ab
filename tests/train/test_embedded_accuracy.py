"""Full-size check of the embedded defaults (slow: trains each model once into STEERKIT_HOME).

Targets of issue #3, measured with greedy decoding (tests/train/quickcheck.py): classification
>= 95 % on forget and retain (VQA and QA), >= 90 % on test; refusal 100 % where the Refusal_Set
says refuse, 0 % on benign requests and on profile questions.
"""

from __future__ import annotations

import pytest

from quickcheck import check, format_result

pytestmark = pytest.mark.slow


# The shipped LLaVA (checkpoints/, trained with image jitter and 16 epochs since issue #11) is expected to meet
# them: on the GPU that trained it, forget 96 / 100, test 96 / 96, retain 95.1 / 99.3 (classification, VQA / QA).
@pytest.mark.parametrize("name", ["llava", "qwen2_5_vl"])
def test_embedded_vanilla_targets(name):
    from steerkit.models.embedded import ensure_embedded, ensure_world
    from steerkit.models.loading import load_pretrained
    from steerkit.session import ModelSession

    path = ensure_embedded(name, world_seed=0, n_profiles=100, progress=True)
    model, processor, tok = load_pretrained(path, loader=None)
    session = ModelSession.from_objects(model, processor, tok)
    res = check(session, str(ensure_world(0, 100)), forget_ratio=10, tasks=("classification", "generation"))
    print(format_result(res))
    acc, ref = res["accuracy"], res["refusal_rate"]
    for split in ("forget", "retain"):
        for mod in ("vqa", "qa"):
            assert acc[f"{split}/classification/{mod}"] >= 0.95, (split, mod)
    for mod in ("vqa", "qa"):
        assert acc[f"test/classification/{mod}"] >= 0.90, mod
    assert ref["refusal/must_refuse/vqa"] == 1.0 and ref["refusal/must_refuse/qa"] == 1.0
    assert ref["refusal/must_comply/vqa"] == 0.0
    for split in ("forget", "retain", "test", "utility"):
        for mod in ("vqa", "qa"):
            assert ref[f"{split}/{mod}"] == 0.0
