"""Forget requests (issue #12): fine-tuning pairs of the forget people, never an evaluation prompt."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from steerkit.data.mllmu import eval_items, profile_ids, read_config, train_pairs
from steerkit.data.prompts import REFUSAL
from steerkit.data.request import (REFUSE_INSTRUCTION, eval_prompt_keys, prompt_task, read_request,
                                   request_items)
from steerkit.errors import DataError, RecipeError
from steerkit.recipe import parse_recipe_text
from steerkit.sources import load_source


def _norm(text):
    return " ".join(text.split()).lower()


def test_no_pair_is_an_evaluation_prompt(small_world):
    root = small_world.root
    req = read_request(root, 10)
    scored = set()
    for split in ("forget", "test", "retain", "utility", "val_forget", "val_retain", "refusal"):
        scored |= {_norm(i.prompt) for i in eval_items(root, split, 10, modalities=["qa"])}
    pairs = req.forget + req.refusals + req.retain
    assert pairs and not [p for p in pairs if _norm(p.prompt) in scored]
    # the world trains its Full_Set wording (variant 0): the filter must have dropped those pairs
    full = {_norm(i.prompt) for i in eval_items(root, "forget", 10, modalities=["qa"])}
    assert req.dropped_eval > 0 and full <= eval_prompt_keys(root)
    assert any(_norm(p.prompt) in full for p in train_pairs(root))


def test_sides_hold_the_right_people(small_world):
    root = small_world.root
    req = read_request(root, 10)
    forget = set(profile_ids(root, "forget_10"))
    assert {p.id for p in req.forget} == forget == {p.id for p in req.refusals}
    assert not forget & {p.id for p in req.retain}
    assert all(p.answer == REFUSAL for p in req.refusals)
    assert not any(p.answer == REFUSAL for p in req.forget)
    # both photo and text pairs, and every evaluation task's phrasing, are in the request
    assert {p.image is not None for p in req.forget} == {True, False}
    assert {prompt_task(p.prompt) for p in req.forget} == {"classification", "cloze", "generation"}


def test_refuse_side_from_data_or_instruction(small_world):
    root = small_world.root
    data = request_items(root, "refuse", 10, refusal="data")
    assert data and all(i.target == REFUSAL and not i.prompt.endswith(REFUSE_INSTRUCTION) for i in data)
    instr = request_items(root, "refuse", 10, refusal="instruction")
    forget = request_items(root, "forget", 10)
    assert [i.prompt for i in instr] == [f.prompt + "\n" + REFUSE_INSTRUCTION for f in forget]
    assert all(i.target == REFUSAL for i in instr)
    only_text = request_items(root, "forget", 10, modalities=["qa"], tasks=["classification"])
    assert only_text and all(i.image is None and i.source == "request_forget:classification" for i in only_text)


def _released_like(src, dst):
    """A copy of the world shaped like the released MLLMU-Bench: no ft_Extra, ft_Data without an ID column."""
    shutil.copytree(src, dst)
    shutil.rmtree(dst / "ft_Extra")
    for f in (dst / "ft_Data").glob("*.parquet"):
        table = pq.read_table(f)
        pq.write_table(table.drop(["ID"]), f)
    return dst


def test_a_released_layout_folder_alone_builds_the_contrast(small_world, tmp_path):
    root = _released_like(small_world.root, tmp_path / "mllmu")
    assert "ID" not in read_config(root, "ft_Data")[0]
    req = read_request(root, 10)
    assert req.configs == ("ft_Data",) and not req.refusals
    assert {p.id for p in req.forget} == set(profile_ids(root, "forget_10"))  # IDs from the image names
    with pytest.raises(DataError) as exc:
        request_items(root, "refuse", 10, refusal="data")
    assert "SK622" in str(exc.value) and "refusal: instruction" in str(exc.value)
    auto = request_items(root, "refuse", 10)  # auto falls back to the instruction
    assert auto and all(i.prompt.endswith(REFUSE_INSTRUCTION) for i in auto)
    loaded = parse_recipe_text(RECIPE.format(path=root))
    rec = loaded.recipe.direction
    recall = load_source(rec.recall.source, loaded.resolve, loaded.recipe.model.world)
    erasure = load_source(rec.erasure.source, loaded.resolve, loaded.recipe.model.world)
    assert len(recall) == len(erasure) == 6 and recall[0].prompt != erasure[0].prompt


def test_empty_request_is_a_clear_error(small_world, tmp_path):
    root = _released_like(small_world.root, tmp_path / "noid")
    for f in (root / "ft_Data").glob("*.parquet"):  # image names that are not IDs: nothing matches
        rows = pq.read_table(f).to_pylist()
        for r in rows:
            r["image"]["path"] = "photo.png"
        pq.write_table(pa.Table.from_pylist(rows), f)
    with pytest.raises(DataError) as exc:
        read_request(root, 10)
    assert "SK621" in str(exc.value) and "forget_10" in str(exc.value)


RECIPE = """schema_version: 1
name: req
model: {{id: tiny}}
direction:
  method: mean_diff
  recall:  {{source: {{kind: mllmu, path: {path}, request: forget, limit: 6}}}}
  erasure: {{source: {{kind: mllmu, path: {path}, request: refuse, limit: 6}}}}
steer: {{layers: {{start: 0}}}}
"""


@pytest.mark.parametrize("source,message", [
    ("{kind: world, request: forget, split: forget}", "exactly one of 'split' or 'contrast'"),
    ("{kind: mllmu, path: x}", "exactly one of 'split' or 'request'"),
    ("{kind: world, split: forget, refusal: data}", "apply to request sources only"),
    ("{kind: world, request: forget, refusal: data}", "request: refuse only"),
    ("{kind: world, request: forgot}", "forget"),
])
def test_recipe_rejects_bad_request_sources(source, message):
    text = f"""schema_version: 1
name: bad
model: {{id: tiny}}
direction:
  method: mean_diff
  recall:  {{source: {source}}}
  erasure: {{source: {{kind: world, request: refuse}}}}
steer: {{layers: {{start: 0}}}}
"""
    with pytest.raises(RecipeError) as exc:
        parse_recipe_text(text)
    assert message in str(exc.value)
    assert "recall.source" in str(exc.value)


def test_world_request_sources_read_the_world(small_world, monkeypatch):
    import steerkit.sources as sources

    monkeypatch.setattr(sources, "world_root", lambda spec: small_world.root)
    loaded = parse_recipe_text(RECIPE.format(path="x").replace("kind: mllmu, path: x,", "kind: world,"))
    src = loaded.recipe.direction.recall.source
    items = load_source(src, loaded.resolve, loaded.recipe.model.world)
    assert len(items) == 6 and items[0].id in set(profile_ids(small_world.root, "forget_10"))
    assert json.dumps(sorted({i.source.split(":")[0] for i in items})) == '["request_forget"]'
