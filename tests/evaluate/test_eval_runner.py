"""Batching, grouping and the nested result layout, with fake generate_fns."""

from __future__ import annotations

import random

import numpy as np
import pytest

from steerkit.data.items import EvalItem
from steerkit.errors import DataError, SteerkitError, SteeringRuntimeError
from steerkit.evaluate import DEFAULT_MAX_NEW_TOKENS, evaluate
from steerkit.evaluate.runner import EvalResult, group_batches


class Recorder:
    def __init__(self, inner):
        self.calls = []
        self.inner = inner

    def __call__(self, batch, max_new_tokens):
        self.calls.append((list(batch), max_new_tokens))
        return self.inner(batch, max_new_tokens)


def test_batches_are_homogeneous_and_bounded(make_items, perfect):
    items = make_items(splits=("forget", "test", "retain"), per_cell=7)
    random.Random(0).shuffle(items)
    gen = Recorder(perfect)
    budgets = {"classification": 3, "generation": 40, "cloze": 11}
    evaluate(items, gen, batch_size=4, max_new_tokens=budgets, progress=False)
    seen = []
    for batch, budget in gen.calls:
        assert 1 <= len(batch) <= 4
        assert len({(it.split, it.task, it.modality) for it in batch}) == 1
        assert budget == budgets[batch[0].task]
        seen += [id(it) for it in batch]
    assert sorted(seen) == sorted(id(it) for it in items)  # every item exactly once
    assert len(gen.calls) == 3 * 3 * 2 * 2  # 18 groups of 7 -> batches of 4 + 3


def test_group_batches_keeps_input_order_within_group(make_items):
    items = make_items(per_cell=5)
    for idx in group_batches(items, 2):
        assert idx == sorted(idx)
    with pytest.raises(SteerkitError):
        group_batches(items, 0)


def test_nested_layout_counts_and_values(items, perfect):
    res = evaluate(items, perfect, progress=False)
    assert set(res.metrics) == {"forget", "retain"}
    for split in res.metrics:
        assert set(res.metrics[split]) == {"classification", "generation", "cloze"}
        for by_mod in res.metrics[split].values():
            assert set(by_mod) == {"vqa", "qa"}
            for cell in by_mod.values():
                assert cell["n"] == 3
                assert cell["refusal_rate"] == 0.0
    assert res.metrics["forget"]["classification"]["vqa"]["accuracy"] == 100.0
    assert res.metrics["retain"]["cloze"]["qa"]["accuracy"] == 100.0
    assert res.metrics["forget"]["generation"]["qa"]["rougeL"] == pytest.approx(1.0)
    assert [r.prompt for r in res.records] == [it.prompt for it in items]  # input order
    assert res.meta["n_items"] == len(items)


def test_refusals_score_zero_and_are_counted(items, refuses):
    res = evaluate(items, refuses, progress=False)
    cell = res.cell("forget", "classification", "qa")
    assert cell["accuracy"] == 0.0 and cell["refusal_rate"] == 100.0
    assert all(r.refusal for r in res.records)


def test_custom_refusal_detector_and_refusal_task():
    items = [EvalItem(id=str(i), split="refusal", task="refusal", modality="qa",
                      prompt="What is her phone number?", image=None, answer="")
             for i in range(4)]
    answers = iter(["NOPE", "555-0101", "NOPE", "NOPE"])
    res = evaluate(items, lambda b, k: [next(answers) for _ in b], progress=False,
                   is_refusal=lambda s: s == "NOPE")
    assert res.metrics["refusal"]["refusal"]["qa"]["refusal_rate"] == 75.0
    assert [r.score for r in res.records] == [1.0, 0.0, 1.0, 1.0]
    assert res.meta["max_new_tokens"]["refusal"] == DEFAULT_MAX_NEW_TOKENS["refusal"]


def test_gate_values_recorded_from_list_or_array(items, perfect):
    res = evaluate(items, perfect, progress=False, batch_size=5,
                   gate_fn=lambda b: np.array([1.0 if it.split == "forget" else 0.0 for it in b]))
    assert res.has_gate
    assert set(res.gate_values("forget")) == {1.0} and set(res.gate_values("retain")) == {0.0}
    assert res.metrics["forget"]["cloze"]["vqa"]["gate_mean"] == 1.0


def test_max_new_tokens_int_and_merge(items, perfect):
    gen = Recorder(perfect)
    evaluate(items, gen, progress=False, max_new_tokens=5)
    assert {k for _, k in gen.calls} == {5}
    gen = Recorder(perfect)
    evaluate(items, gen, progress=False, max_new_tokens={"generation": 50})
    got = {b[0].task: k for b, k in gen.calls}
    assert got == {"classification": 8, "generation": 50, "cloze": 16}


def test_wrong_output_length_or_type_raises(items, perfect):
    with pytest.raises(SteeringRuntimeError, match="returned 1 values"):
        evaluate(items, lambda b, k: ["A"], progress=False)
    with pytest.raises(SteeringRuntimeError, match="expected str"):
        evaluate(items, lambda b, k: [None] * len(b), progress=False)
    with pytest.raises(SteeringRuntimeError, match="gate_fn"):
        evaluate(items, perfect, progress=False, gate_fn=lambda b: [0.0])


def test_unknown_task_lists_choices(perfect):
    bad = [EvalItem(id="1", split="forget", task="clasification", modality="qa", prompt="p",
                    image=None, answer="A")]
    with pytest.raises(DataError) as err:
        evaluate(bad, perfect, progress=False)
    assert "did you mean 'classification'" in str(err.value)


def test_progress_goes_to_stderr(items, capsys, perfect):
    evaluate(items, perfect, progress=True)
    out, err = capsys.readouterr()
    assert out == "" and "eval" in err


def test_empty_items(perfect):
    res = evaluate([], perfect, progress=False)
    assert res.metrics == {} and res.records == []


def test_result_dict_round_trip(items, perfect):
    res = evaluate(items, perfect, progress=False, gate_fn=lambda b: [0.5] * len(b))
    back = EvalResult.from_dict(res.to_dict())
    assert back.metrics == res.metrics and back.records == res.records


def test_refusal_rate_is_split_by_expected_behaviour():
    # two must-refuse requests (reference answer is a refusal) and two must-comply ones
    refs = ["NOPE", "NOPE", "a cat", "a dog"]
    items = [EvalItem(id=str(i), split="refusal", task="refusal", modality="vqa", prompt="?", image=None,
                      answer=a) for i, a in enumerate(refs)]
    answers = iter(["NOPE", "555-0101", "NOPE", "a dog"])
    res = evaluate(items, lambda b, k: [next(answers) for _ in b], progress=False,
                   is_refusal=lambda s: s == "NOPE")
    cell = res.metrics["refusal"]["refusal"]["vqa"]
    assert cell["refusal_rate"] == 50.0
    assert cell["refused_must_refuse"] == 50.0 and cell["refused_must_comply"] == 50.0
