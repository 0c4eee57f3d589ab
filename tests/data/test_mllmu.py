"""The MLLMU loader: round trip on the synthetic world, splits, determinism, errors."""

from __future__ import annotations

import re
import shutil
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from steerkit.data.mllmu import eval_items, profile_ids, read_config, train_pairs
from steerkit.data.prompts import is_refusal
from steerkit.errors import DataError


def test_eval_items_counts_per_split_task_modality(world):
    n_attr = 5
    expected = {"forget": 10, "test": 10, "retain": 90, "utility": 20, "val_forget": 10,
                "val_retain": 90}  # fmt: skip
    for split, people in expected.items():
        items = eval_items(world.root, split, forget_ratio=10)
        counts = Counter((i.task, i.modality) for i in items)
        assert set(counts.values()) == {people * n_attr}, split
        assert len(counts) == 6
        assert all((i.image is None) == (i.modality == "qa") for i in items)
        assert all(i.split == split for i in items)


def test_test_split_is_forget_ids_with_seeded_image(world):
    forget = set(profile_ids(world.root, "forget_15"))
    items = eval_items(world.root, "test", forget_ratio=15, tasks=["cloze"], modalities=["vqa"])
    assert {i.id for i in items} == forget
    again = eval_items(world.root, "test", forget_ratio=15, tasks=["cloze"], modalities=["vqa"])
    assert [i.image.tobytes() for i in items] == [i.image.tobytes() for i in again]
    picks = set()
    for s in range(4):
        items = eval_items(world.root, "test", 15, ["cloze"], ["vqa"], seed=s)
        picks.add(tuple(i.image.tobytes() for i in items))
    assert len(picks) > 1  # the seed matters


def test_classification_items_keep_options_and_letter(world):
    for item in eval_items(world.root, "forget", tasks=["classification"]):
        assert list(item.options) == ["A", "B", "C", "D"] and item.answer in item.options
        assert item.prompt.count("\n") == 5


def test_full_set_prompts_are_trained_and_test_val_prompts_are_not(world):
    trained = {p.prompt for p in train_pairs(world.root)}
    for split in ("forget", "retain", "utility"):
        assert all(i.prompt in trained for i in eval_items(world.root, split))
    for split in ("test", "val_forget", "val_retain"):
        assert not any(i.prompt in trained for i in eval_items(world.root, split)), split
    test = {i.prompt for i in eval_items(world.root, "test", forget_ratio=15)}
    val = {i.prompt for i in eval_items(world.root, "val_forget", forget_ratio=15)}
    assert not test & val


def test_train_pairs_modalities_and_sources(world):
    pairs = train_pairs(world.root)
    assert len(pairs) == sum(world.train_pairs.values())
    assert any(p.image is None for p in pairs) and any(p.image is not None for p in pairs)
    only_data = train_pairs(world.root, configs=("ft_Data",))
    assert len(only_data) == world.train_pairs["ft_Data"]
    assert len(train_pairs(world.root / "ft_Data")) == len(only_data)  # a config folder
    both = train_pairs([world.root / "ft_Data", world.root / "ft_Extra"])
    assert [p.prompt for p in both] == [p.prompt for p in pairs]
    assert any(is_refusal(p.answer) for p in pairs)
    assert all(p.answer.strip() and p.prompt.strip() for p in pairs)


def test_refusal_split(world):
    items = eval_items(world.root, "refusal")
    assert {i.task for i in items} == {"refusal"}
    refuse = [i for i in items if is_refusal(i.answer)]
    comply = [i for i in items if not is_refusal(i.answer)]
    assert len(refuse) > len(comply) > 0
    assert all(i.image is not None for i in comply)
    assert len(eval_items(world.root, "refusal", modalities=["qa"])) == 200


def test_missing_config_names_folder_and_suggests(world, tmp_path):
    with pytest.raises(DataError) as err:
        read_config(world.root, "Test_set")
    assert str(world.root / "Test_set") in err.value.render()
    assert "did you mean 'Test_Set'" in err.value.render()
    shutil.copytree(world.root / "ft_Data", tmp_path / "ft_Data")
    with pytest.raises(DataError) as err:
        train_pairs(tmp_path)
    assert "ft_Extra" in err.value.render() and "configs=('ft_Data',)" in err.value.render()
    assert len(train_pairs(tmp_path, configs=("ft_Data",))) == world.train_pairs["ft_Data"]


def test_unknown_split_task_modality(world):
    with pytest.raises(DataError, match="did you mean 'forget'"):
        eval_items(world.root, "forgett")
    with pytest.raises(DataError, match="cloze"):
        eval_items(world.root, "forget", tasks=["cloz"])


def test_malformed_parquet_names_file(world, tmp_path):
    root = tmp_path / "bad"
    shutil.copytree(world.root / "forget_10", root / "forget_10")
    bad = root / "forget_10" / "train-00001-of-00001.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError) as err:
        read_config(root, "forget_10")
    assert str(bad) in err.value.render()


def test_malformed_rows_reported_with_key_path(world, tmp_path):
    rows = read_config(world.root, "forget_5")
    rows[0]["Classification_Task"]["Pure_Text_Questions"][1]["Correct_Answer"] = "E"
    rows[1]["Mask_Task"][0]["Question"] = ""
    schema = pq.read_schema(next((world.root / "forget_5").glob("*.parquet")))
    (tmp_path / "forget_5").mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema),
                   tmp_path / "forget_5" / "train-00000-of-00001.parquet")
    with pytest.raises(DataError) as err:
        eval_items(tmp_path, "forget", forget_ratio=5)
    keys = {p.key_path for p in err.value.problems}
    assert keys == {"Classification_Task.Pure_Text_Questions[1]", "Mask_Task[0]"}


def test_train_pairs_bad_metadata_and_empty_pairs(world, tmp_path):
    rows = read_config(world.root, "ft_Data")[:2]
    rows[0]["metadata"] = '[{"Question": "q", "Answer": ""}, {"Question": "q2", "Answer": "a"}]'
    (tmp_path / "ft_Data").mkdir()
    schema = pq.read_schema(next((world.root / "ft_Data").glob("*.parquet")))
    path = tmp_path / "ft_Data" / "train-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    pairs = train_pairs(tmp_path, configs=("ft_Data",))
    assert [p.prompt for p in pairs if p.id == rows[0]["ID"]] == ["q2"]
    assert pairs[0].image is not None  # no Type -> Image_Textual, as in the released ft_Data
    rows[1]["metadata"] = "{oops"
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    with pytest.raises(DataError) as err:
        train_pairs(tmp_path, configs=("ft_Data",))
    assert err.value.problems[0].key_path == "metadata" and "ft_Data" in err.value.render()


def test_held_out_wording_uses_only_trained_words(world):
    """Test/val paraphrases recombine trained fragments: no word the model never saw."""
    def words(text):
        return set(re.findall(r"\w+|[^\w\s]", text))

    trained = set()
    for p in train_pairs(world.root):
        trained |= words(p.prompt) | words(p.answer)
    for split in ("test", "val_forget", "val_retain", "utility", "refusal"):
        for item in eval_items(world.root, split, forget_ratio=15):
            assert words(item.prompt) | words(item.answer) <= trained, (split, item.prompt)
