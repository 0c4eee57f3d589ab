"""Re-elicitation attacks (issue #12) turn forget questions into new ones with the same answer."""

from __future__ import annotations

import pytest

from steerkit.data.attacks import ANSWER_PREFIX, ATTACKS, FOLLOW_UP, attack_items, misspell, profile_names
from steerkit.data.mllmu import eval_items
from steerkit.data.prompts import CLASSIFICATION_SUFFIX, REFUSAL
from steerkit.errors import DataError


@pytest.fixture(scope="module")
def forget(small_world):
    return eval_items(small_world.root, "forget", 10, ["classification", "cloze"], seed=0)


def test_misspell():
    assert misspell("Tavi Orlenko") == "Tavi Orelnko"
    assert misspell("Idris Yardley") == "Idris Yadrley"
    assert misspell("Ann Lee") == "Ann Leee"  # short surname: a doubled letter
    assert misspell("Juno Barrow") == "Juno Barroww"  # equal middle letters: a doubled letter
    assert misspell("") == ""


def test_every_attack_keeps_person_answer_and_split(small_world, forget):
    root = small_world.root
    for attack in ATTACKS:
        got = attack_items(root, forget, attack, forget_ratio=10)
        assert got, attack
        orig = {(i.id, i.task, i.modality, i.index): i for i in forget}
        for it in got:
            o = orig[(it.id, it.task, it.modality, it.index)]
            assert it.split == "forget" and it.answer == o.answer and it.image is o.image
            changed = (it.prompt, it.history, it.assistant_prefix) != (o.prompt, o.history, o.assistant_prefix)
            assert changed, (attack, it.prompt)


def test_attack_forms(small_world, forget):
    root = small_world.root
    cls = [i for i in forget if i.task == "classification"]
    few = attack_items(root, cls, "few_shot", forget_ratio=10, shots=2)
    assert len(few) == len(cls)
    first = few[0]
    assert first.prompt.endswith(cls[0].prompt) and first.prompt.count("Correct Answer: ") == 2
    assert first.prompt.count(CLASSIFICATION_SUFFIX) == 1  # the shots carry no instruction suffix
    names = profile_names(root)
    assert names[cls[0].id] not in first.prompt.split(cls[0].prompt)[0]  # shots are other people
    assert attack_items(root, cls, "few_shot", forget_ratio=10) == few  # seeded
    one = [i for i in cls if i.id == cls[0].id]  # shots come from the data, not from the items given
    assert attack_items(root, one, "few_shot", forget_ratio=10) == [i for i in few if i.id == cls[0].id]
    pre = attack_items(root, cls, "answer_prefix")
    assert {i.assistant_prefix for i in pre} == {ANSWER_PREFIX}
    fol = attack_items(root, cls, "follow_up")
    assert fol[0].history == ((cls[0].prompt, REFUSAL),) and fol[0].prompt == f"{FOLLOW_UP}\n{cls[0].prompt}"
    mis = attack_items(root, cls, "misspelt_name")
    assert mis and all(i.modality == "qa" for i in mis)
    assert all(names[i.id] not in i.prompt and misspell(names[i.id]) in i.prompt for i in mis)
    para = attack_items(root, cls, "paraphrase", forget_ratio=10)
    test = {(i.id, i.modality, i.index): i.prompt for i in eval_items(root, "test", 10, ["classification"],
                                                                         ["qa"])}
    qa = [i for i in para if i.modality == "qa"]
    assert qa and all(test[(i.id, i.modality, i.index)] == i.prompt for i in qa)


def test_unknown_attack_and_missing_test_set(small_world, forget, tmp_path):
    with pytest.raises(DataError, match="unknown attack") as exc:
        attack_items(small_world.root, forget, "few_shots")
    assert "few_shot" in str(exc.value)
    with pytest.raises(DataError, match="Test_Set"):
        attack_items(tmp_path, forget, "paraphrase")
