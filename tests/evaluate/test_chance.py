"""Chance metrics (issue #12): distance from chance, rank of the correct option, forced choice, elimination."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from steerkit.evaluate.chance import chance_cells, pick_share, rank_of, rank_weights

LETTERS = ("A", "B", "C", "D")


def rec(answer, score, split="forget", modality="qa"):
    return {"split": split, "task": "classification", "modality": modality, "answer": answer, "score": score}


def test_an_avoiding_model_is_read_back_by_elimination():
    """The issue's case: 0 % accuracy because the right option is always scored lowest."""
    recs = [rec("B", 0.0) for _ in range(8)]
    scores = [{"A": -1.0, "B": -9.0, "C": -2.0, "D": -3.0}] * 8
    cell = chance_cells(recs, scores)["forget"]["qa"]
    assert cell["accuracy"] == 0 and cell["distance_from_chance"] == -25
    assert cell["mean_rank"] == 4 and cell["rank_share"] == {"1": 0, "2": 0, "3": 0, "4": 100}
    assert cell["elimination_accuracy"] == 100 and cell["forced_choice_accuracy"] == 0


def test_a_model_that_knows_nothing_sits_at_chance():
    recs = [rec(k, 1.0 if k == "A" else 0.0, modality="vqa") for k in LETTERS]  # always answers A
    scores = [{"A": -1.0, "B": -2.0, "C": -3.0, "D": -4.0}] * 4  # same scores whatever the question
    cell = chance_cells(recs, scores)["forget"]["vqa"]
    assert cell["accuracy"] == 25 and cell["distance_from_chance"] == 0
    assert cell["mean_rank"] == 2.5 == cell["chance_mean_rank"]
    assert cell["elimination_accuracy"] == 25 == cell["forced_choice_accuracy"]
    assert cell["rank_share"] == {"1": 25, "2": 25, "3": 25, "4": 25}


def test_ties_are_split_not_won():
    flat = {k: 0.0 for k in LETTERS}
    assert rank_of(flat, "C") == 2.5
    assert rank_weights(flat, "C") == {1: 0.25, 2: 0.25, 3: 0.25, 4: 0.25}
    assert pick_share(flat, "C") == 0.25 == pick_share(flat, "C", lowest=True)
    assert pick_share({"A": 1, "B": 1, "C": 0, "D": 0}, "A") == 0.5


@given(st.lists(st.floats(-50, 50, allow_nan=False), min_size=4, max_size=4), st.sampled_from(LETTERS))
def test_rank_weights_are_a_distribution_around_the_rank(values, correct):
    scores = dict(zip(LETTERS, values))
    w = rank_weights(scores, correct)
    assert sum(w.values()) == pytest.approx(1.0)
    assert sum(r * p for r, p in w.items()) == pytest.approx(rank_of(scores, correct))
    assert sum(pick_share(scores, k) for k in LETTERS) == pytest.approx(1.0)
    assert sum(pick_share(scores, k, lowest=True) for k in LETTERS) == pytest.approx(1.0)


def test_cells_are_split_by_split_and_modality_and_checked():
    recs = [rec("A", 1.0, "forget", "qa"), rec("A", 0.0, "test", "vqa")]
    scores = [{"A": 0.0, "B": -1.0, "C": -1.0, "D": -1.0}] * 2
    cells = chance_cells(recs, scores)
    assert cells["forget"]["qa"]["accuracy"] == 100 and cells["test"]["vqa"]["accuracy"] == 0
    assert cells["test"]["vqa"]["forced_choice_accuracy"] == 100  # greedy said otherwise; the scores know
    with pytest.raises(ValueError, match="1 option scores"):
        chance_cells(recs, scores[:1])
    with pytest.raises(ValueError, match="classification"):
        chance_cells([{**recs[0], "task": "cloze"}], scores[:1])
