"""Scoring rules on hand-computed cases (MLLMU-Bench semantics, docs/mllmu-layout.md section 3)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from steerkit.evaluate import metrics as M


@pytest.mark.parametrize("prediction, letter, expected", [
    ("  b) foo", "B", True),
    ("B", "B", True),
    ("(C) the painter", "C", True),
    ("**D**", "D", True),
    ("d", "D", True),
    ("I cannot answer that", "B", False),
    ("A", "B", False),
    ("", "A", False),
    ("...", "A", False),
])
def test_classification_first_alphanumeric(prediction, letter, expected):
    assert M.classification_correct(prediction, letter) is expected


@given(letter=st.sampled_from("ABCD"), prefix=st.text(alphabet=" \n\t()*[].:-", max_size=5),
       rest=st.text(max_size=10))
def test_classification_ignores_leading_punctuation(letter, prefix, rest):
    assert M.classification_correct(prefix + letter.lower() + rest, letter)


@pytest.mark.parametrize("prediction, truth, expected", [
    ("She lives in KESTREL BAY now.", "Kestrel Bay", True),
    ("kestrel bay", " Kestrel Bay ", True),
    ("Kestrel", "Kestrel Bay", False),
    ("I cannot say", "Kestrel Bay", False),
])
def test_cloze_case_insensitive_substring(prediction, truth, expected):
    assert M.cloze_correct(prediction, truth) is expected


def test_rouge_identical_is_one_and_disjoint_is_zero():
    same = M.rouge("Tavi Orlenko is a glass restorer.", "Tavi Orlenko is a glass restorer.")
    assert same == {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0}
    assert M.rouge("completely different words", "Tavi Orlenko")["rougeL"] == 0.0
    assert M.rouge("", "Tavi Orlenko")["rougeL"] == 0.0


def test_rouge_partial_overlap_hand_computed():
    # prediction tokens 3, reference 6, LCS 3: P=1, R=1/2, F=2/3; bigrams 2 of 5: F=2*0.4/1.4.
    r = M.rouge("the cat sat", "the cat sat on the mat")
    assert r["rougeL"] == pytest.approx(2 / 3)
    assert r["rouge1"] == pytest.approx(2 / 3)
    assert r["rouge2"] == pytest.approx(0.8 / 1.4)


def test_rouge_uses_stemmer():
    assert M.rouge("the cats sat", "the cat sat")["rougeL"] == 1.0


def test_fallback_refusal_markers():
    for text in ["I cannot help.", "I can\u2019t say", "I won't", "Sorry, I am unable to answer"]:
        assert M.fallback_is_refusal(text)
    for text in ["Kestrel Bay", "B", ""]:
        assert not M.fallback_is_refusal(text)
    assert callable(M.default_is_refusal())


def test_score_item_per_task():
    assert M.score_item("classification", "b", "B") == (1.0, {"accuracy": 1.0})
    assert M.score_item("cloze", "no", "Kestrel") == (0.0, {"accuracy": 0.0})
    score, extra = M.score_item("generation", "a b", "a b")
    assert score == 1.0 and set(extra) == {"rouge1", "rouge2", "rougeL"}
    with pytest.raises(ValueError):
        M.score_item("essay", "x", "y")


def test_aggregate_units_and_counts():
    recs = [{"split": "forget", "task": "classification", "modality": "vqa",
             "metrics": {"accuracy": hit}, "refusal": ref, "gate": None}
            for hit, ref in [(1.0, False), (0.0, True), (1.0, False), (0.0, False)]]
    recs.append({"split": "forget", "task": "generation", "modality": "qa",
                 "metrics": {"rougeL": 0.5, "rouge1": 0.6, "rouge2": 0.2}, "refusal": False,
                 "gate": 0.25})
    out = M.aggregate(recs)
    cell = out["forget"]["classification"]["vqa"]
    assert cell == {"accuracy": 50.0, "refusal_rate": 25.0, "n": 4}
    gen = out["forget"]["generation"]["qa"]
    assert gen["rougeL"] == 0.5 and gen["n"] == 1 and gen["gate_mean"] == 0.25


def test_pooled_weights_by_n():
    cells = {"vqa": {"accuracy": 100.0, "n": 1}, "qa": {"accuracy": 0.0, "n": 3}}
    assert M.pooled(cells, "accuracy") == 25.0
    assert M.pooled(cells, "accuracy", "vqa") == 100.0
    assert M.pooled({}, "accuracy") is None
