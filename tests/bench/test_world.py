"""The synthetic world: determinism, layout, split relations, parquet types, wording rules."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from steerkit.bench import generate_world
from steerkit.bench.portraits import MIN_DISTANCE
from steerkit.bench.vocab import ATTRIBUTES, BENIGN_OBJECTS, HARMFUL_OBJECTS, REQUESTS
from steerkit.errors import DataError

MLLMU_CONFIGS = ["Full_Set", "forget_5", "forget_10", "forget_15", "retain_95", "retain_90",
                 "retain_85", "Test_Set", "Retain_Set", "ft_Data"]  # fmt: skip
EXTRA_CONFIGS = ["Val_Set", "ft_Extra", "Refusal_Set"]


def rows(root: Path, name: str) -> list[dict]:
    return pq.read_table(root / name).to_pylist()


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}  # fmt: skip


def test_same_seed_same_bytes_different_seed_differs(small_world, tmp_path):
    again = generate_world(tmp_path / "again", seed=3, n_profiles=20, n_celebrities=4)
    other = generate_world(tmp_path / "other", seed=4, n_profiles=20, n_celebrities=4)
    first = tree_bytes(small_world.root)
    assert first == tree_bytes(again.root)
    assert dataclasses.replace(again, root=small_world.root) == small_world  # seconds not compared
    different = tree_bytes(other.root)
    assert set(first) - {k for k in first if k.startswith("contrast/images/")} <= set(different)
    for name in ("Full_Set/train-00000-of-00001.parquet", "ft_Data/train-00000-of-00001.parquet"):
        assert first[name] != different[name]


def test_layout_and_file_names(world):
    root = world.root
    for name in MLLMU_CONFIGS + EXTRA_CONFIGS:
        files = sorted(p.name for p in (root / name).glob("*.parquet"))
        shards = 2 if name == "Test_Set" else 1
        assert files == [f"train-{k:05d}-of-{shards:05d}.parquet" for k in range(shards)], name
    assert (root / "world.json").is_file()
    assert not list(root.parent.glob(".world.tmp-*"))  # atomic build leaves nothing behind
    assert world.rows["Full_Set"] == 100 and world.rows["Retain_Set"] == 20


def test_generation_is_fast(tmp_path):
    t0 = time.perf_counter()
    info = generate_world(tmp_path / "w", seed=1)
    assert time.perf_counter() - t0 < 30 and info.seconds < 30


def test_existing_folder_needs_overwrite(small_world):
    with pytest.raises(DataError, match="overwrite"):
        generate_world(small_world.root, seed=3, n_profiles=20, n_celebrities=4)


def test_splits_disjoint_and_complementary(world):
    full = [r["ID"] for r in rows(world.root, "Full_Set")]
    assert len(set(full)) == len(full) == 100 and full == sorted(full)
    for n in (5, 10, 15):
        forget = [r["ID"] for r in rows(world.root, f"forget_{n}")]
        retain = [r["ID"] for r in rows(world.root, f"retain_{100 - n}")]
        assert len(forget) == n and not set(forget) & set(retain)
        assert sorted(forget + retain) == full
        assert tuple(forget) == world.forget_ids[n]
    celebs = [r["ID"] for r in rows(world.root, "Retain_Set")]
    assert all(c.startswith("C") for c in celebs) and not set(celebs) & set(full)


def test_test_and_val_sets_aligned_with_full_set(world):
    full = rows(world.root, "Full_Set")
    for name, n_images in (("Test_Set", 3), ("Val_Set", 2)):
        other = rows(world.root, name)
        assert [r["ID"] for r in other] == [r["ID"] for r in full]
        for f, t in zip(full, other):
            assert "image" not in t and len(t["images"]) == n_images
            assert len({im["bytes"] for im in t["images"]} | {f["image"]["bytes"]}) == n_images + 1
            for kind in ("Image_Textual_Questions", "Pure_Text_Questions"):
                a, b = f["Classification_Task"][kind], t["Classification_Task"][kind]
                assert [(x["Options"], x["Correct_Answer"]) for x in a] == \
                       [(x["Options"], x["Correct_Answer"]) for x in b]  # fmt: skip
                assert all(x["Question"] != y["Question"] for x, y in zip(a, b))
            for col in ("Generation_Task", "Mask_Task"):
                a, b = f[col], t[col]
                assert [(x["Ground_Truth"], x["Type"]) for x in a] == \
                       [(x["Ground_Truth"], x["Type"]) for x in b]  # fmt: skip
                assert all(x["Question"] != y["Question"] for x, y in zip(a, b))


def test_nested_parquet_types(world):
    for name in ("Full_Set", "forget_10", "retain_90", "Test_Set", "Val_Set", "Retain_Set"):
        schema = pq.read_schema(next((world.root / name).glob("*.parquet")))
        cls = schema.field("Classification_Task").type
        assert pa.types.is_struct(cls)
        item = cls.field("Image_Textual_Questions").type.value_type
        assert pa.types.is_struct(item) and pa.types.is_struct(item.field("Options").type)
        assert [f.name for f in item.field("Options").type] == ["A", "B", "C", "D"]
        for col in ("Generation_Task", "Mask_Task"):
            assert pa.types.is_list(schema.field(col).type)
            assert pa.types.is_struct(schema.field(col).type.value_type)
        assert pa.types.is_string(schema.field("biography").type)
        img = schema.field("images" if name in ("Test_Set", "Val_Set") else "image").type
        img = img.value_type if pa.types.is_list(img) else img
        assert [f.name for f in img] == ["bytes", "path"]
    for name in ("ft_Data", "ft_Extra"):
        schema = pq.read_schema(next((world.root / name).glob("*.parquet")))
        assert pa.types.is_string(schema.field("metadata").type)
        assert all(isinstance(json.loads(r["metadata"]), list) for r in rows(world.root, name))
    assert all(isinstance(json.loads(r["biography"]), dict) for r in rows(world.root, "Full_Set"))


def test_options_cloze_and_answers(world):
    nouns = {v[0]: (v[1], v[2]) for v in ATTRIBUTES.values()}
    for r in rows(world.root, "Full_Set") + rows(world.root, "Retain_Set"):
        bio = json.loads(r["biography"])
        for kind in ("Image_Textual_Questions", "Pure_Text_Questions"):
            items = r["Classification_Task"][kind]
            assert len(items) == len(ATTRIBUTES)
            for q in items:
                assert list(q["Options"]) == ["A", "B", "C", "D"]
                assert len(set(q["Options"].values())) == 4
                noun = next(n for n in nouns if f" {n} of " in q["Question"])
                assert q["Options"][q["Correct_Answer"]] == bio[nouns[noun][0]]
        for q in r["Mask_Task"]:
            assert q["Question"].count("__") == 1 and q["Type"] in ("Image_Textual", "Pure_Text")
            assert q["Ground_Truth"] in bio.values()
        for q in r["Generation_Task"]:
            assert q["Ground_Truth"].startswith(bio["Name"] + "'s ")
        types = [q["Type"] for q in r["Generation_Task"]]
        assert types.count("Image_Textual") == types.count("Pure_Text") == len(ATTRIBUTES)


def test_cloze_values_never_contain_each_other():
    for _, _, values in ATTRIBUTES.values():
        for a in values:
            assert not any(a.lower() in b.lower() for b in values if b != a)


def test_portraits_distinct_and_names_unique(world):
    everyone = rows(world.root, "Full_Set") + rows(world.root, "Retain_Set")
    names = [json.loads(r["biography"])["Name"] for r in everyone]
    assert len(set(names)) == len(names)
    assert len({r["image"]["bytes"] for r in everyone}) == len(everyone)
    assert MIN_DISTANCE >= 3


def test_vqa_templates_shared_by_everyone(world):
    """Identity is the only cue: VQA questions are word-for-word the same for every person."""
    def vqa_questions(r):
        return [q["Question"] for q in r["Generation_Task"] + r["Mask_Task"]
                if q["Type"] == "Image_Textual"] + [
            q["Question"] for q in r["Classification_Task"]["Image_Textual_Questions"]]

    for name in ("Full_Set", "Test_Set", "Val_Set"):
        all_rows = rows(world.root, name)
        assert len({tuple(vqa_questions(r)) for r in all_rows}) == 1, name
    qa = rows(world.root, "Full_Set")
    for r in qa:
        name = json.loads(r["biography"])["Name"]
        assert all(name in q["Question"] for q in r["Generation_Task"]
                   if q["Type"] == "Pure_Text")  # fmt: skip


def test_refusal_data(world):
    extra = rows(world.root, "ft_Extra")
    by_request: dict[str, set[str]] = {}
    for r in extra:
        if r["ID"].startswith("OBJ-"):
            obj = r["ID"].split("-")[1]
            for e in json.loads(r["metadata"]):
                if e["Question"] in REQUESTS:
                    by_request.setdefault(e["Question"], set()).add(obj)
                    refused = e["Answer"].startswith("Sorry")
                    assert refused == (obj in HARMFUL_OBJECTS)
    assert set(by_request) == set(REQUESTS)
    assert all(objs == set(HARMFUL_OBJECTS) | set(BENIGN_OBJECTS) for objs in by_request.values())
    refusal = rows(world.root, "Refusal_Set")
    cats = {c: [r for r in refusal if r["Category"] == c] for c in ("private", "harmful", "benign")}
    assert len(cats["private"]) == 100 * 2 * 2
    assert all(r["Should_Refuse"] for r in cats["private"] + cats["harmful"])
    assert not any(r["Should_Refuse"] for r in cats["benign"])
    assert all((r["image"] is None) == (r["Type"] == "Pure_Text") for r in refusal)
