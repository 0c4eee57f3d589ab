"""The one loader for MLLMU-Bench-layout folders: the released benchmark and the synthetic world.

Why here and nowhere else: everything downstream (training, evaluation, extraction) consumes
``EvalItem`` / ``TrainPair`` records, never parquet; this module owns the layout rules of
``docs mllmu-layout.md`` (config folders of ``*.parquet`` shards, nested task columns, JSON-string
``metadata``, Test_Set filtered to the forget IDs) and formats every prompt through
:mod:`steerkit.data.prompts`. Unlike the reference eval it is deterministic: the transformed test
image of a row is picked with a seeded generator.

Splits of :func:`eval_items`:
``forget`` (``forget_N``), ``test`` (``Test_Set`` rows of the forget_N IDs), ``retain``
(``retain_(100-N)``), ``utility`` (``Retain_Set``), ``val_forget`` / ``val_retain`` (``Val_Set``
rows of forget / retain IDs; steerkit extra) and ``refusal`` (``Refusal_Set``; steerkit extra:
task ``"refusal"``; the expected behaviour is ``is_refusal(item.answer)``; ``id`` is the profile ID
for private-field questions and ``OBJ-<object>-eval<k>`` for pictogram requests).
"""

from __future__ import annotations

import io
import json
import os
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from steerkit.data.items import EvalItem, TrainPair
from steerkit.data.prompts import classification_prompt, cloze_prompt, generation_prompt
from steerkit.errors import DataError, Problem, ProblemCollector, choices_hint

__all__ = ["SPLITS", "TASKS", "MODALITIES", "read_config", "eval_items", "train_pairs",
           "profile_ids"]  # fmt: skip

SPLITS = ("forget", "test", "retain", "utility", "val_forget", "val_retain", "refusal")
TASKS = ("classification", "generation", "cloze")
MODALITIES = ("vqa", "qa")
_TYPE_TO_MODALITY = {"Image_Textual": "vqa", "Pure_Text": "qa"}
_OPTION_KEYS = ("A", "B", "C", "D")

PathLike = str | os.PathLike[str]


def _config_files(root: PathLike, name: str) -> list[Path]:
    folder = Path(root) / name
    if not folder.is_dir():
        present = []
        if Path(root).is_dir():
            present = sorted(p.name for p in Path(root).iterdir() if p.is_dir())
        hint = (choices_hint(name, present) if present
                else f"check the dataset root {root!s}; it should hold MLLMU config folders")
        raise DataError(f"config {name!r} not found",
                        [Problem(f"no folder {name!r}", path=str(folder), hint=hint,
                                 code="SK601")])  # fmt: skip
    files = sorted(folder.glob("*.parquet"))
    if not files:
        raise DataError(f"config {name!r} has no parquet files",
                        [Problem("folder holds no *.parquet file", path=str(folder), code="SK601",
                                 hint="download the config again or regenerate the world")])
    return files


def read_config(root: PathLike, name: str) -> list[dict[str, Any]]:
    """All rows of config ``name`` (every ``*.parquet`` in ``root/name``, sorted by file name).

    Raises:
        DataError: the folder is missing or empty, or a file is not readable parquet.
    """
    rows: list[dict[str, Any]] = []
    problems = ProblemCollector()
    for path in _config_files(root, name):
        try:
            rows.extend(pq.read_table(path).to_pylist())
        except (pa.ArrowException, OSError) as exc:
            problems.add(Problem(f"not a readable parquet file: {exc}", path=str(path),
                                 code="SK602", hint="the file is truncated or not parquet; "
                                 "download or regenerate it"))  # fmt: skip
    problems.raise_if_any(DataError, f"cannot read config {name!r}")
    return rows


def profile_ids(root: PathLike, config: str) -> list[str]:
    """The ``ID`` column of ``config``, in row order."""
    return [str(r.get("ID")) for r in read_config(root, config)]


def _decode(img: Any, where: str, problems: ProblemCollector) -> Image.Image | None:
    data = img.get("bytes") if isinstance(img, dict) else None
    if not data:
        problems.add(Problem("image struct has no bytes", path=where, code="SK604"))
        return None
    try:
        return Image.open(io.BytesIO(data)).convert("RGB")
    except OSError as exc:
        problems.add(Problem(f"image bytes do not decode: {exc}", path=where, code="SK604"))
        return None


def _row_image(row: dict[str, Any], where: str, seed: int,
               problems: ProblemCollector) -> Image.Image | None:
    """The row's portrait; for rows with an ``images`` list, one picked with a seeded RNG."""
    if row.get("images") is not None:
        images = list(row["images"])
        if not images:
            problems.add(Problem("'images' list is empty", path=where, code="SK603"))
            return None
        pick = random.Random(f"{seed}:{row.get('ID')}").randrange(len(images))
        return _decode(images[pick], where, problems)
    if row.get("image") is None:
        problems.add(Problem("row has neither 'image' nor 'images'", path=where, code="SK603"))
        return None
    return _decode(row["image"], where, problems)


def _row_items(row: dict[str, Any], split: str, tasks: set[str], modalities: set[str], seed: int,
               where: str, problems: ProblemCollector) -> list[EvalItem]:
    pid = str(row.get("ID"))
    image: Image.Image | None = None
    if "vqa" in modalities:
        image = _row_image(row, where, seed, problems)
    out: list[EvalItem] = []

    def add(task: str, kind: str, index: int, prompt: str, answer: str,
            options: dict[str, str] | None = None) -> None:
        modality = _TYPE_TO_MODALITY.get(kind, "qa")  # reference eval: not Image_Textual -> text
        if modality in modalities:
            out.append(EvalItem(pid, split, task, modality, prompt,  # type: ignore[arg-type]
                                image if modality == "vqa" else None, answer, index, options))

    if "classification" in tasks:
        cls = row.get("Classification_Task")
        if not isinstance(cls, dict):
            problems.add(Problem("missing or malformed Classification_Task", path=where,
                                 code="SK603"))  # fmt: skip
            cls = {}
        for kind, field in (("Image_Textual", "Image_Textual_Questions"),
                            ("Pure_Text", "Pure_Text_Questions")):
            for i, q in enumerate(cls.get(field) or []):
                opts = q.get("Options") or {}
                if sorted(k for k, v in opts.items() if v is not None) != list(_OPTION_KEYS) or \
                        q.get("Correct_Answer") not in _OPTION_KEYS or not q.get("Question"):
                    problems.add(Problem("needs a Question, options exactly A-D and a "
                                         "Correct_Answer among them", path=where, code="SK603",
                                         key_path=f"Classification_Task.{field}[{i}]"))
                    continue
                opts = {k: str(opts[k]) for k in _OPTION_KEYS}
                add("classification", kind, i, classification_prompt(q["Question"], opts),
                    q["Correct_Answer"], opts)  # fmt: skip
    for task, column in (("generation", "Generation_Task"), ("cloze", "Mask_Task")):
        if task not in tasks:
            continue
        items = row.get(column)
        if items is None:
            problems.add(Problem(f"missing {column}", path=where, code="SK603"))
            continue
        for i, q in enumerate(items):
            if not q.get("Question") or q.get("Ground_Truth") is None:
                problems.add(Problem("item lacks Question or Ground_Truth", path=where,
                                     key_path=f"{column}[{i}]", code="SK603"))  # fmt: skip
                continue
            kind = q.get("Type") or "Pure_Text"
            prompt = (generation_prompt(q["Question"], image=kind == "Image_Textual")
                      if task == "generation" else cloze_prompt(q["Question"]))  # fmt: skip
            add(task, kind, i, prompt, str(q["Ground_Truth"]))
    return out


def _refusal_items(rows: list[dict[str, Any]], modalities: set[str], where: str,
                   problems: ProblemCollector) -> list[EvalItem]:
    out = []
    for r, row in enumerate(rows):
        modality = _TYPE_TO_MODALITY.get(row.get("Type") or "", "qa")
        if modality not in modalities:
            continue
        image = _decode(row["image"], f"{where} row {r}", problems) if modality == "vqa" else None
        out.append(EvalItem(str(row.get("ID")), "refusal", "refusal", modality,  # type: ignore
                            str(row.get("Prompt")), image, str(row.get("Ground_Truth")), r))
    return out


def _check(name: str, allowed: Sequence[str], values: Iterable[str] | None) -> set[str]:
    chosen = set(allowed if values is None else values)
    bad = sorted(chosen - set(allowed))
    if bad:
        raise DataError(f"unknown {name}", [Problem(f"unknown {name} {b!r}", code="SK605",
                                                    hint=choices_hint(b, allowed)) for b in bad])
    return chosen


def eval_items(root: PathLike, split: str, forget_ratio: int = 10,
               tasks: Iterable[str] | None = None, modalities: Iterable[str] | None = None,
               seed: int = 0) -> list[EvalItem]:
    """Scored questions of one split, prompts formatted, in parquet row then list order.

    Args:
        root: dataset root holding the MLLMU config folders.
        split: one of :data:`SPLITS`.
        forget_ratio: N of ``forget_N`` (``retain_(100-N)`` and the test/val ID filters follow).
        tasks: subset of :data:`TASKS` plus ``"refusal"`` (default all); the ``refusal`` split
            yields only task ``"refusal"``, the others never do.
        modalities: subset of :data:`MODALITIES` (default both).
        seed: picks the transformed image of each Test_Set/Val_Set row (same seed -> same pick).
    """
    if split not in SPLITS:
        raise DataError("unknown split", [Problem(f"unknown split {split!r}", code="SK605",
                                                  hint=choices_hint(split, SPLITS))])
    task_set = _check("task", TASKS + ("refusal",), tasks)
    mod_set = _check("modality", MODALITIES, modalities)
    problems = ProblemCollector()
    if split == "refusal":
        if "refusal" not in task_set:
            return []
        refusal = _refusal_items(read_config(root, "Refusal_Set"), mod_set,
                                 str(Path(root) / "Refusal_Set"), problems)  # fmt: skip
        problems.raise_if_any(DataError, "malformed Refusal_Set")
        return refusal
    forget_cfg, retain_cfg = f"forget_{forget_ratio}", f"retain_{100 - forget_ratio}"
    config, keep = {"forget": (forget_cfg, None), "retain": (retain_cfg, None),
                    "utility": ("Retain_Set", None), "test": ("Test_Set", forget_cfg),
                    "val_forget": ("Val_Set", forget_cfg),
                    "val_retain": ("Val_Set", retain_cfg)}[split]  # fmt: skip
    rows = read_config(root, config)
    if keep is not None:
        ids = set(profile_ids(root, keep))
        rows = [r for r in rows if str(r.get("ID")) in ids]
    items: list[EvalItem] = []
    for r, row in enumerate(rows):
        where = f"{Path(root) / config} (ID {row.get('ID')}, row {r})"
        items.extend(_row_items(row, split, task_set, mod_set, seed, where, problems))
    problems.raise_if_any(DataError, f"malformed rows in {config}")
    return items


def _train_folders(root_or_dirs: PathLike | Sequence[PathLike],
                   configs: Sequence[str]) -> list[tuple[Path, str]]:
    if isinstance(root_or_dirs, (str, os.PathLike)):
        root = Path(root_or_dirs)
        if any(root.glob("*.parquet")):  # a config folder itself
            return [(root.parent, root.name)]
        return [(root, c) for c in configs]
    return [(Path(d).parent, Path(d).name) for d in root_or_dirs]


def _row_id(row: dict[str, Any]) -> str:
    """A fine-tuning row's profile ID: its ``ID`` column, else the stem of its image name (the released
    ft_Data may have no ID column; its images are named ``<ID>.png``)."""
    if row.get("ID"):
        return str(row["ID"])
    img = row.get("image")
    name = img.get("path") if isinstance(img, dict) else None
    return Path(str(name)).stem if name else ""


def train_pairs(root_or_dirs: PathLike | Sequence[PathLike],
                configs: Sequence[str] = ("ft_Data", "ft_Extra")) -> list[TrainPair]:
    """Flattened fine-tuning pairs (mllmu-layout.md section 4), in row then metadata order.

    ``root_or_dirs`` is a dataset root (``configs`` are read under it), one config folder, or a
    list of config folders (e.g. ``baseline_train_split/forget_5``). Each ``metadata`` entry with a
    non-empty ``Question`` and ``Answer`` becomes a pair with the row's image; entries whose
    ``Type`` is ``"Pure_Text"`` (steerkit extension) are text-only. For the released benchmark,
    which has no ``ft_Extra``, pass ``configs=("ft_Data",)``.

    Raises:
        DataError: a config folder is missing, a file is not parquet, or ``metadata`` is not a JSON
            list (every bad row is reported).
    """
    folders = _train_folders(root_or_dirs, configs)
    missing = [Problem(f"no folder {name!r}", path=str(root / name), code="SK601",
                       hint="the released MLLMU-Bench has no ft_Extra (a steerkit extra): pass "
                       "configs=('ft_Data',)" if name == "ft_Extra" else None)
               for root, name in folders if not (root / name).is_dir()]  # fmt: skip
    if missing:
        raise DataError("training config not found", missing)
    pairs: list[TrainPair] = []
    problems = ProblemCollector()
    for root, name in folders:
        for r, row in enumerate(read_config(root, name)):
            where = f"{root / name} (ID {row.get('ID')}, row {r})"
            try:
                meta = json.loads(row.get("metadata") or "")
                if not isinstance(meta, list):
                    raise ValueError("metadata is not a JSON list")
            except (ValueError, TypeError) as exc:
                problems.add(Problem(f"metadata is not a JSON list of objects: {exc}",
                                     path=where, key_path="metadata", code="SK603"))
                continue
            entries = [e for e in meta if isinstance(e, dict) and e.get("Question")
                       and e.get("Answer")]  # fmt: skip
            image = None
            if any(e.get("Type") != "Pure_Text" for e in entries):
                image = _decode(row.get("image"), where, problems)
            for e in entries:
                text_only = e.get("Type") == "Pure_Text"
                pairs.append(TrainPair(str(e["Question"]), str(e["Answer"]),
                                       None if text_only else image, _row_id(row)))
    problems.raise_if_any(DataError, "malformed training data")
    return pairs
