"""Shared fixtures for the evaluation tests: canned items and fake generate_fns (no models)."""

from __future__ import annotations

import pytest

from steerkit.data.items import EvalItem

GROUND_TRUTH = {"classification": "B", "generation": "Tavi Orlenko is a glass restorer.",
                "cloze": "Kestrel Bay"}


def make_items(splits=("forget", "retain"), modalities=("vqa", "qa"),
               tasks=("classification", "generation", "cloze"), per_cell=3):
    items = []
    for split in splits:
        for task in tasks:
            for mod in modalities:
                for i in range(per_cell):
                    items.append(EvalItem(id=f"{split}-{i:03d}", split=split, task=task,
                                          modality=mod, prompt=f"{task} question {i}",
                                          image=None, answer=GROUND_TRUTH[task], index=i))
    return items


def perfect(batch, max_new_tokens):
    """Answers every item right, in a format the scorers must see through."""
    return [{"classification": "  b) because", "generation": GROUND_TRUTH["generation"],
             "cloze": "She lives in KESTREL BAY."}[it.task] for it in batch]


def refuses(batch, max_new_tokens):
    return ["I cannot share that." for _ in batch]


# Fixtures hand out the helpers (rather than tests importing this module) so the tests work under
# any pytest import mode and next to other conftest.py files.
@pytest.fixture(name="make_items", scope="session")
def _make_items_fixture():
    return make_items


@pytest.fixture(name="perfect", scope="session")
def _perfect_fixture():
    return perfect


@pytest.fixture(name="refuses", scope="session")
def _refuses_fixture():
    return refuses


@pytest.fixture
def items():
    return make_items()
