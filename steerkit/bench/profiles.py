"""Fictitious people and the MLLMU task columns / training pairs built from them.

Why one builder for both: the Full_Set questions *are* train variant 0 (see templates), so the eval
columns and the ``ft_Data`` pairs come from the same function with different wording cells, and the
training prompt of a Full_Set question is, by construction, its evaluation prompt.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from steerkit.bench import templates as T
from steerkit.bench.portraits import Code, identity_codes
from steerkit.bench.vocab import (
    ATTRIBUTE_KEYS,
    ATTRIBUTES,
    FIRST_NAMES,
    LAST_NAMES,
    PRIVATE_FIELDS,
    STREETS,
)
from steerkit.data.prompts import (
    OPTION_KEYS,
    REFUSAL,
    classification_prompt,
    cloze_prompt,
    generation_prompt,
)

VQA, QA = "Image_Textual", "Pure_Text"
CellOf = Callable[[int], T.Cell]  # attribute index -> (frame, subject)


@dataclass(frozen=True)
class Profile:
    """One person: identity (name + portrait code), facts, private fields, fixed MC options."""

    id: str
    name: str
    code: Code
    facts: dict[str, str]  # attribute key -> value
    private: dict[str, str]  # private field key -> value (never revealed)
    # (attribute key, Type) -> (A-D options, correct letter); fixed for the life of the world
    options: dict[tuple[str, str], tuple[dict[str, str], str]]


def sample_people(rng: np.random.Generator, ids: list[str]) -> list[Profile]:
    """Draw unique names, portrait codes at distance >= 3, facts and fixed options for ``ids``."""
    n = len(ids)
    pairs = [(f, s) for f in FIRST_NAMES for s in LAST_NAMES]
    if n > len(pairs):
        raise ValueError(f"at most {len(pairs)} people fit the name pools, asked for {n}")
    order = rng.permutation(len(pairs))[:n]
    codes = identity_codes(n, rng)
    people = []
    for i, pid in enumerate(ids):
        first, last = pairs[int(order[i])]
        facts = {k: ATTRIBUTES[k][2][int(rng.integers(10))] for k in ATTRIBUTE_KEYS}
        street = STREETS[int(rng.integers(len(STREETS)))]
        private = {
            "home_address": f"{int(rng.integers(2, 99))} {street}",
            "phone_number": "555-" + "".join(str(int(d)) for d in rng.integers(0, 10, size=4)),
        }
        options = {}
        for key in ATTRIBUTE_KEYS:
            values = ATTRIBUTES[key][2]
            for kind in (VQA, QA):
                others = [v for v in values if v != facts[key]]
                picks = [others[int(j)] for j in rng.choice(len(others), size=3, replace=False)]
                slot = int(rng.integers(4))
                picks.insert(slot, facts[key])
                options[(key, kind)] = (dict(zip(OPTION_KEYS, picks)), OPTION_KEYS[slot])
        people.append(Profile(pid, f"{first} {last}", codes[i], facts, private, options))
    return people


def profile_columns(p: Profile) -> dict[str, str]:
    """``biography`` (a JSON string, as in MLLMU), ``question`` and ``answer``."""
    bio = {"Name": p.name}
    bio.update({ATTRIBUTES[k][1]: p.facts[k] for k in ATTRIBUTE_KEYS})
    bio.update({"Home Address": p.private["home_address"], "Phone": p.private["phone_number"]})
    f = p.facts
    answer = (
        f"This is {p.name}, a {f['occupation']} born in {f['birthplace']} in {f['birth_year']} "
        f"who works for {f['employer']} and enjoys {f['hobby']}."
    )
    return {"biography": json.dumps(bio), "question": T.PROFILE_QUESTION, "answer": answer}


def task_columns(p: Profile, cell_of: CellOf) -> dict[str, Any]:
    """``Classification_Task``, ``Generation_Task`` and ``Mask_Task`` with raw questions.

    List order: attributes in vocabulary order, Image_Textual items first. Every wording uses the
    same order, which keeps Test_Set/Val_Set aligned with Full_Set by index.
    """
    mc: dict[str, list[dict[str, Any]]] = {VQA: [], QA: []}
    gen: list[dict[str, str]] = []
    cloze: list[dict[str, str]] = []
    for kind in (VQA, QA):
        vqa = kind == VQA
        for a, key in enumerate(ATTRIBUTE_KEYS):
            noun, value, cell = ATTRIBUTES[key][0], p.facts[key], cell_of(a)
            opts, letter = p.options[(key, kind)]
            q = T.question("classification", noun, cell, vqa, p.name)
            mc[kind].append({"Correct_Answer": letter, "Options": dict(opts), "Question": q})
            gen.append({
                "Ground_Truth": T.answer_sentence(p.name, noun, value),
                "Question": T.question("generation", noun, cell, vqa, p.name),
                "Type": kind,
            })  # fmt: skip
            cloze.append({
                "Ground_Truth": value,
                "Question": T.question("cloze", noun, cell, vqa, p.name),
                "Type": kind,
            })  # fmt: skip
    return {
        "Classification_Task": {"Image_Textual_Questions": mc[VQA], "Pure_Text_Questions": mc[QA]},
        "Generation_Task": gen,
        "Mask_Task": cloze,
    }


def formatted_pairs(columns: dict[str, Any]) -> list[dict[str, str]]:
    """Turn task columns into ``{Question, Answer, Type}`` training entries (prompts formatted)."""
    out = []
    cls = columns["Classification_Task"]
    for kind, field in ((VQA, "Image_Textual_Questions"), (QA, "Pure_Text_Questions")):
        for item in cls[field]:
            prompt = classification_prompt(item["Question"], item["Options"])
            out.append({"Question": prompt, "Answer": item["Correct_Answer"], "Type": kind})
    for item in columns["Generation_Task"]:
        prompt = generation_prompt(item["Question"], image=item["Type"] == VQA)
        out.append({"Question": prompt, "Answer": item["Ground_Truth"], "Type": item["Type"]})
    for item in columns["Mask_Task"]:
        prompt = cloze_prompt(item["Question"])
        out.append({"Question": prompt, "Answer": item["Ground_Truth"], "Type": item["Type"]})
    return out


def _train_wording(a: Any, k: int) -> Any:
    return T.Wording(a).train(k)


def train_entries(p: Profile, variants: int) -> list[dict[str, str]]:
    """The ``ft_Data`` metadata of one person: every task at train variants ``0..variants-1``,
    plus "who is the person in the image" questions (the image -> name hop)."""
    out: list[dict[str, str]] = []
    for k in range(variants):
        out += formatted_pairs(task_columns(p, functools.partial(_train_wording, k=k)))
    for k in range(variants):
        q, _ = T.name_question(k)
        out.append({"Question": generation_prompt(q, image=True), "Answer": T.name_answer(p.name),
                    "Type": VQA})  # fmt: skip
    return out


def private_entries(p: Profile, variants: int) -> list[dict[str, str]]:
    """Private-field questions (generation wording, both modalities), all answered with REFUSAL.

    They use the same frames and subjects as the fact questions, so the refusal is decided by the
    field asked for, inside the profile context, for every person alike.
    """
    out = []
    for kind in (VQA, QA):
        for f, noun in enumerate(PRIVATE_FIELDS.values()):
            for k in range(variants):
                cell = T.Wording(f).train(k)
                q = T.question("generation", noun, cell, kind == VQA, p.name)
                out.append({"Question": generation_prompt(q, image=kind == VQA), "Answer": REFUSAL,
                            "Type": kind})  # fmt: skip
    return out


def metadata_json(entries: list[dict[str, str]]) -> str:
    """``metadata`` column: a JSON string, as in MLLMU ``ft_Data``."""
    return json.dumps(entries, ensure_ascii=False)
