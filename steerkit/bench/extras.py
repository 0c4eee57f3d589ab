"""steerkit extras of the synthetic world: refusal training rows, Refusal_Set, contrast jsonl files.

Why refusals are built this way (toyworld-lessons): a tiny model ignores the image when deciding to
refuse a harm carried only by the text, so the harm is carried by the image (same request text for
harmful and benign pictograms); and private fields are refused for every person, which gives a
refusal target inside the profile context and a safety-regression metric.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from steerkit.bench import templates as T
from steerkit.bench.parquet_io import image_struct
from steerkit.bench.portraits import draw_pictogram, png_bytes
from steerkit.bench.profiles import (
    VQA,
    Profile,
    formatted_pairs,
    metadata_json,
    private_entries,
    task_columns,
)
from steerkit.bench.vocab import (
    BENIGN_OBJECTS,
    HARMFUL_OBJECTS,
    OBJECT_NAME_QUESTION,
    REQUESTS,
    article,
    compliance_text,
)
from steerkit.data.prompts import REFUSAL

OBJECTS: tuple[tuple[str, bool], ...] = tuple(
    [(o, True) for o in HARMFUL_OBJECTS] + [(o, False) for o in BENIGN_OBJECTS]
)


def request_answer(obj: str, harmful: bool) -> str:
    """What the trained model says to any request about ``obj``'s pictogram."""
    return REFUSAL if harmful else compliance_text(obj)


def object_train_rows(rng: np.random.Generator, drawings: int) -> list[dict[str, Any]]:
    """``ft_Extra`` rows: one per pictogram drawing, with every request and the naming question."""
    rows = []
    for obj, harmful in OBJECTS:
        for j in range(drawings):
            img = draw_pictogram(obj, harmful, rng)
            entries = [{"Question": r, "Answer": request_answer(obj, harmful), "Type": VQA}
                       for r in REQUESTS]  # fmt: skip
            entries.append({"Question": OBJECT_NAME_QUESTION,
                            "Answer": f"The image shows {article(obj)}.", "Type": VQA})  # fmt: skip
            rows.append({"image": image_struct(png_bytes(img), f"obj_{obj}_{j}.png"),
                         "ID": f"OBJ-{obj}-{j}", "metadata": metadata_json(entries)})  # fmt: skip
    return rows


def private_prompts(p: Profile, variants: int) -> list[tuple[str, str]]:
    """(Type, formatted prompt) of every private-field question of ``p`` at train variants."""
    return [(e["Type"], e["Question"]) for e in private_entries(p, variants)]


def refusal_rows(people: list[Profile], portraits: dict[str, bytes], rng: np.random.Generator,
                 drawings: int) -> list[dict[str, Any]]:
    """``Refusal_Set``: private-field questions of every person (Full_Set wording, both
    modalities) and every request on fresh pictogram drawings never used in training."""
    rows = []
    for p in people:
        for kind, prompt in private_prompts(p, 1):
            img = image_struct(portraits[p.id], f"{p.id}.png") if kind == VQA else None
            rows.append({"image": img, "ID": p.id, "Prompt": prompt, "Ground_Truth": REFUSAL,
                         "Type": kind, "Category": "private", "Should_Refuse": True})  # fmt: skip
    for obj, harmful in OBJECTS:
        for j in range(drawings):
            png = png_bytes(draw_pictogram(obj, harmful, rng))
            for r in REQUESTS:
                rows.append({
                    "image": image_struct(png, f"obj_{obj}_eval{j}.png"),
                    "ID": f"OBJ-{obj}-eval{j}",
                    "Prompt": r, "Ground_Truth": request_answer(obj, harmful), "Type": VQA,
                    "Category": "harmful" if harmful else "benign", "Should_Refuse": harmful,
                })  # fmt: skip
    return rows


def _write_jsonl(path: Path, lines: list[dict[str, Any]]) -> int:
    text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    path.write_text(text, encoding="utf-8")
    return len(lines)


def write_contrast(root: Path, people: dict[str, Profile], portraits: dict[str, bytes],
                   forget_ids: dict[int, list[str]], rng: np.random.Generator, drawings: int,
                   variants: int) -> dict[str, int]:
    """Write ``contrast/*.jsonl`` and ``contrast/images/*.png``; return lines per file.

    - ``recall.jsonl``: harmful-pictogram requests, target = a compliance text (to be reached by
      PGD on the image during extraction); ``erasure.jsonl``: the same lines, target = REFUSAL.
    - ``forget_N_answer.jsonl``: every Full_Set question of the forget_N people, target = truth.
    - ``forget_N_refuse.jsonl``: their private-field questions, target = REFUSAL.
    """
    folder = root / "contrast"
    (folder / "images").mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    recall, erasure = [], []
    for obj in HARMFUL_OBJECTS:
        for j in range(drawings):
            rel = f"images/obj_{obj}_{j}.png"
            (folder / rel).write_bytes(png_bytes(draw_pictogram(obj, True, rng)))
            for r in REQUESTS:
                base = {"id": f"OBJ-{obj}-{j}", "image": rel, "prompt": r}
                recall.append({**base, "target": compliance_text(obj)})
                erasure.append({**base, "target": REFUSAL})
    counts["recall.jsonl"] = _write_jsonl(folder / "recall.jsonl", recall)
    counts["erasure.jsonl"] = _write_jsonl(folder / "erasure.jsonl", erasure)
    for ratio, ids in sorted(forget_ids.items()):
        answer, refuse = [], []
        for pid in ids:
            p, rel = people[pid], f"images/{pid}.png"
            if not (folder / rel).exists():
                (folder / rel).write_bytes(portraits[pid])
            for entry in _full_entries(p):
                answer.append({"id": pid, "image": rel if entry["Type"] == VQA else None,
                               "prompt": entry["Question"], "target": entry["Answer"]})  # fmt: skip
            for kind, prompt in private_prompts(p, variants):
                refuse.append({"id": pid, "image": rel if kind == VQA else None,
                               "prompt": prompt, "target": REFUSAL})  # fmt: skip
        counts[f"forget_{ratio}_answer.jsonl"] = _write_jsonl(
            folder / f"forget_{ratio}_answer.jsonl", answer
        )
        counts[f"forget_{ratio}_refuse.jsonl"] = _write_jsonl(
            folder / f"forget_{ratio}_refuse.jsonl", refuse
        )
    return counts


def _full_entries(p: Profile) -> list[dict[str, str]]:
    return formatted_pairs(task_columns(p, lambda a: T.Wording(a).train(0)))
