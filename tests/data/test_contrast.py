"""Contrast jsonl reading: relative images, every bad line reported by number, missing images."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from steerkit.bench.vocab import HARMFUL_OBJECTS
from steerkit.data.contrast import read_contrast_jsonl
from steerkit.data.prompts import COMPLY_PREFIX, REFUSAL
from steerkit.errors import DataError


def test_world_contrast_files(small_world):
    folder = small_world.root / "contrast"
    recall = read_contrast_jsonl(folder / "recall.jsonl")
    erasure = read_contrast_jsonl(folder / "erasure.jsonl")
    assert len(recall) == len(erasure) == len(HARMFUL_OBJECTS) * 3 * 2
    for r, e in zip(recall, erasure):
        assert (r.prompt, r.id, r.image.tobytes()) == (e.prompt, e.id, e.image.tobytes())
        assert r.target.startswith(COMPLY_PREFIX) and e.target == REFUSAL
    for ratio, ids in small_world.forget_ids.items():
        answer = read_contrast_jsonl(folder / f"forget_{ratio}_answer.jsonl")
        refuse = read_contrast_jsonl(folder / f"forget_{ratio}_refuse.jsonl")
        assert {a.id for a in answer} == {r.id for r in refuse} == set(ids)
        assert all(r.target == REFUSAL for r in refuse)
        assert any(a.image is None for a in answer) and any(a.image is not None for a in answer)
        assert answer[0].source == f"forget_{ratio}_answer.jsonl:1"


def test_all_bad_lines_reported_at_once(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "ok.png")
    lines = [
        json.dumps({"image": "ok.png", "prompt": "fine", "target": "t"}),
        "{not json",
        json.dumps({"image": "missing.png", "prompt": "p"}),
        json.dumps({"prompt": ""}),
        "",
        json.dumps({"promt": "typo", "prompt": "p"}),
        json.dumps([1, 2]),
        json.dumps({"prompt": "p", "target": 3}),
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as err:
        read_contrast_jsonl(path)
    problems = err.value.problems
    assert sorted({p.line for p in problems}) == [2, 3, 4, 6, 7, 8]
    assert all(p.path == str(path) for p in problems)
    text = err.value.render()
    assert "missing.png" in text and "did you mean 'prompt'" in text


def test_relative_and_null_images(tmp_path):
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (4, 4), (255, 0, 0)).save(tmp_path / "imgs" / "a.png")
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"image": "imgs/a.png", "prompt": "p", "id": "x"}) + "\n"
                    + json.dumps({"image": None, "prompt": "q"}) + "\n")
    items = read_contrast_jsonl(path)
    assert items[0].image.getpixel((0, 0)) == (255, 0, 0) and items[0].id == "x"
    assert items[1].image is None and items[1].target is None and items[1].source == "c.jsonl:2"


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_contrast_jsonl(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="empty"):
        read_contrast_jsonl(tmp_path / "empty.jsonl")
