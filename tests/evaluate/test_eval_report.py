"""Report files: JSON round-trip, markdown numbers, jsonl dump, gate diagnostics and AUC."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steerkit.evaluate import evaluate, report as R


def _gate(batch):
    return [0.9 if it.split == "forget" else 0.1 for it in batch]


@pytest.fixture(scope="module")
def results(make_items, perfect, refuses):
    items = make_items(splits=("forget", "retain", "utility"))
    return {"vanilla": evaluate(items, perfect, progress=False),
            "steered": evaluate(items, refuses, progress=False, gate_fn=_gate)}


def _brute_auc(pos, neg):
    wins = sum((p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auc_known_cases():
    assert R.auc([0.9, 0.8, 0.7], [0.1, 0.2]) == 1.0
    assert R.auc([0.1, 0.2], [0.9, 0.8, 0.7]) == 0.0
    assert R.auc([0.5, 0.5], [0.5, 0.5]) == 0.5
    # overlapping: pairs won 0.8>0.3, 0.8>0.6, 0.4>0.3 and lost 0.4<0.6 -> 3/4
    assert R.auc([0.8, 0.4], [0.3, 0.6]) == 0.75
    assert R.auc([], [1.0]) is None
    assert R.auc([float("nan"), 1.0], [0.0]) == 1.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-3, 3), min_size=1, max_size=15),
       st.lists(st.integers(-3, 3), min_size=1, max_size=15))
def test_auc_matches_pairwise_count_with_ties(pos, neg):
    assert R.auc(pos, neg) == pytest.approx(_brute_auc(pos, neg))


def test_gate_stats_match_numpy():
    vals = [0.3, -0.2, 1.4, 0.9, 0.0, 0.55, 2.0]
    st_ = R.gate_stats(vals)
    assert st_["n"] == 7 and st_["mean"] == pytest.approx(np.mean(vals))
    for q in R.QUANTILES:
        assert st_[f"q{round(q * 100):02d}"] == pytest.approx(np.quantile(vals, q))
    assert st_["frac_negative"] == pytest.approx(1 / 7)
    assert R.gate_stats([]) == {"n": 0}


def test_gate_diagnostics(results):
    assert R.gate_diagnostics(results["vanilla"]) is None
    diag = R.gate_diagnostics(results["steered"])
    assert list(diag["splits"]) == ["forget", "retain", "utility"]
    assert diag["splits"]["forget"]["mean"] == pytest.approx(0.9)
    assert diag["auc"] == {"forget_vs_retain": 1.0, "forget_vs_utility": 1.0}


def test_markdown_table_has_rows_and_numbers(results):
    table = R.markdown_table(results, "classification")
    lines = table.splitlines()
    assert "vanilla acc%" in lines[0] and "steered refusal%" in lines[0]
    assert len(lines) == 2 + 3 * 2  # header, rule, split x modality
    forget_vqa = next(line for line in lines if "forget" in line and "vqa" in line)
    cells = [c.strip() for c in forget_vqa.strip("|").split("|")]
    assert cells == ["forget", "vqa", "3", "100.0", "0.0", "0.0", "100.0"]
    assert len({len(line) for line in lines}) == 1  # padded: aligned in a terminal
    gen = R.markdown_table(results, "generation")
    assert "1.000" in gen and "0.000" in gen


def test_markdown_report_sections(results):
    md = R.markdown_report(results, title="Toy")
    for heading in ["# Toy", "## classification", "## generation", "## cloze", "## gate"]:
        assert heading in md
    assert "steered AUC forget vs retain: 1.000, vqa 1.000, qa 1.000" in md


def test_json_round_trip_is_strict_and_atomic(results, tmp_path):
    path = R.write_json(tmp_path / "results.json", results, include_records=True)
    text = path.read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    back = R.load_json(path)
    assert list(back) == ["vanilla", "steered"]
    for name in results:
        assert back[name].metrics == results[name].metrics
        assert back[name].records == results[name].records
    doc = json.loads(text)
    assert doc["results"]["steered"]["gate"]["auc"]["forget_vs_retain"] == 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temp files left


def test_nan_becomes_null(tmp_path, make_items, perfect):
    res = evaluate(make_items(per_cell=1), perfect, progress=False,
                   gate_fn=lambda b: [math.nan] * len(b))
    text = R.write_json(tmp_path / "r.json", {"x": res}, include_records=True).read_text()
    assert "NaN" not in text  # strict JSON: other readers reject NaN
    records = json.loads(text)["results"]["x"]["records"]
    assert records and all(r["gate"] is None for r in records)


def test_items_jsonl(results, tmp_path):
    path = R.write_items_jsonl(tmp_path / "items.jsonl", results)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == sum(len(r.records) for r in results.values())
    assert {"method", "id", "split", "task", "modality", "prompt", "answer", "prediction",
            "score", "refusal", "gate"} <= set(rows[0])
    assert {r["method"] for r in rows} == {"vanilla", "steered"}


def test_gate_diagnostics_by_modality(make_items, perfect):
    # the gate separates on image prompts but is inverted on text-only ones: pooled AUC hides it
    def gate(batch):
        return [(1.0 if it.split == "forget" else 0.0) if it.modality == "vqa"
                else (0.0 if it.split == "forget" else 1.0) for it in batch]

    res = evaluate(make_items(), perfect, progress=False, gate_fn=gate)
    diag = R.gate_diagnostics(res)
    assert diag["auc"]["forget_vs_retain"] == 0.5
    assert diag["by_modality"]["vqa"]["auc"]["forget_vs_retain"] == 1.0
    assert diag["by_modality"]["qa"]["auc"]["forget_vs_retain"] == 0.0
    assert diag["by_modality"]["qa"]["splits"]["retain"]["mean"] == 1.0
