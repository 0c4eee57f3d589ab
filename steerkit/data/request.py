"""A forget request: what a user asking to forget people actually holds, read from an MLLMU-layout folder.

Why this module exists (issue #12): fitting a direction or a gate on the forget split's own evaluation
prompts and then scoring those prompts makes "forget 0 %" an in-sample figure, and it is not the data the
training baselines get (they train on the forget people's fine-tuning pairs). A request holds only:

- the fine-tuning pairs and photos of the forget people (rows of ``ft_Data``, and of ``ft_Extra`` when the
  folder has it, whose ID is in ``forget_N``);
- the rest of the fine-tuning data (every other row of the same configs) as retain data.

Every pair whose question is an evaluation prompt of *any* split (Full_Set, Test_Set, Val_Set,
Retain_Set, Refusal_Set; raw question or formatted prompt, compared case- and whitespace-insensitively)
is dropped, so no fit sees a scored prompt. In the synthetic world train variant 0 *is* the Full_Set
wording, so this drops about half of ``ft_Data``; on the released MLLMU-Bench it drops nothing unless a
fine-tuning question repeats an evaluation question.

The forget-specific contrast is built from the request alone: the *answer* side is the forget people's
pairs answered with a fact, the *refuse* side their pairs answered with a refusal (the world's
private-field questions in ``ft_Extra``), or, when the data holds no refusals (the released benchmark),
the answer side's questions with :data:`REFUSE_INSTRUCTION` appended (``refusal: instruction``).

This module reads files only; it never loads a model.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from steerkit.data.items import ContrastItem, TrainPair
from steerkit.data.mllmu import profile_ids, read_config, train_pairs
from steerkit.data.prompts import (
    CLASSIFICATION_SUFFIX,
    CLOZE_SUFFIX,
    REFUSAL,
    classification_prompt,
    cloze_prompt,
    generation_prompt,
    is_refusal,
)
from steerkit.errors import DataError, Problem

__all__ = ["REQUEST_SIDES", "REFUSE_INSTRUCTION", "EVAL_CONFIGS", "RequestData", "eval_prompt_keys",
           "read_request", "request_items", "default_configs", "prompt_task"]

PathLike = str | os.PathLike[str]
Side = Literal["forget", "refuse", "retain"]
REQUEST_SIDES: tuple[str, ...] = ("forget", "refuse", "retain")

#: Configs whose questions are scored somewhere; nothing a fit reads may repeat one of them.
EVAL_CONFIGS = ("Full_Set", "Test_Set", "Val_Set", "Retain_Set", "Refusal_Set")

#: Appended to a forget question to build the refuse side when the data holds no refusal pairs.
REFUSE_INSTRUCTION = "This person asked to be forgotten. Refuse to answer."

_WS = re.compile(r"\s+")


def _key(text: str) -> str:
    return _WS.sub(" ", str(text)).strip().lower()


def _row_questions(row: dict[str, Any]) -> list[str]:
    """Every raw question and formatted prompt an evaluation row scores (no image is decoded)."""
    out: list[str] = []
    if row.get("Prompt"):  # Refusal_Set
        out.append(str(row["Prompt"]))
    cls = row.get("Classification_Task") or {}
    for field in ("Image_Textual_Questions", "Pure_Text_Questions"):
        for q in (cls.get(field) or []) if isinstance(cls, dict) else []:
            if not isinstance(q, dict) or not q.get("Question"):
                continue
            out.append(str(q["Question"]))
            opts = q.get("Options") or {}
            if isinstance(opts, dict):
                out.append(classification_prompt(str(q["Question"]), {k: str(v) for k, v in opts.items()
                                                                      if v is not None}))
    for column in ("Generation_Task", "Mask_Task"):
        for q in row.get(column) or []:
            if not isinstance(q, dict) or not q.get("Question"):
                continue
            out.append(str(q["Question"]))
            if column == "Mask_Task":
                out.append(cloze_prompt(str(q["Question"])))
            else:
                for image in (False, True):  # the wording differs by Type; drop both to be safe
                    out.append(generation_prompt(str(q["Question"]), image=image))
    return out


def eval_prompt_keys(root: PathLike) -> set[str]:
    """Normalised questions and prompts of every evaluation config present under ``root``."""
    keys: set[str] = set()
    for name in EVAL_CONFIGS:
        if not (Path(root) / name).is_dir():
            continue
        for row in read_config(root, name):
            keys.update(_key(q) for q in _row_questions(row))
    return keys


def prompt_task(prompt: str) -> str:
    """The evaluation task a fine-tuning question is phrased as (the prototype gate groups by it):
    ``classification`` (options and the one-letter suffix), ``cloze`` (a blank), else ``generation``."""
    if CLASSIFICATION_SUFFIX in prompt or re.search(r"(^|\n)A: .*\nB: ", prompt):
        return "classification"
    if CLOZE_SUFFIX in prompt or "[Blank]" in prompt or "__" in prompt:
        return "cloze"
    return "generation"


def default_configs(root: PathLike) -> tuple[str, ...]:
    """``ft_Data``, plus the steerkit extra ``ft_Extra`` when the folder has it."""
    return ("ft_Data", "ft_Extra") if (Path(root) / "ft_Extra").is_dir() else ("ft_Data",)


@dataclass(frozen=True)
class RequestData:
    """One forget request, split by who the pairs are about; counts say what the eval filter dropped."""

    forget: list[TrainPair]  # forget people's pairs answered with a fact
    refusals: list[TrainPair]  # forget people's pairs answered with a refusal
    retain: list[TrainPair]  # every other pair of the same configs
    dropped_eval: int  # pairs dropped because their question is an evaluation prompt
    forget_ids: tuple[str, ...]
    configs: tuple[str, ...]

    def summary(self) -> dict[str, Any]:
        return {"forget": len(self.forget), "refusals": len(self.refusals), "retain": len(self.retain),
                "dropped_eval": self.dropped_eval, "forget_people": len(self.forget_ids),
                "configs": list(self.configs)}


def read_request(root: PathLike, forget_ratio: int = 10, configs: Sequence[str] | None = None,
                 exclude_eval: bool = True) -> RequestData:
    """Read the forget request of ``forget_N`` from ``root`` (see the module docstring).

    Raises:
        DataError: a config is missing or malformed, or no pair belongs to a forget person (e.g. the
            fine-tuning rows carry no ID and their image names are not the profile IDs).
    """
    configs = tuple(configs) if configs else default_configs(root)
    stamp = tuple(sorted((str(f), f.stat().st_mtime_ns, f.stat().st_size) for name in configs + EVAL_CONFIGS
                         + (f"forget_{forget_ratio}",) for f in (Path(root) / name).glob("*.parquet")))
    return _read_request(str(Path(root).resolve()), forget_ratio, configs, exclude_eval, stamp)


@lru_cache(maxsize=4)
def _read_request(root: str, forget_ratio: int, configs: tuple[str, ...], exclude_eval: bool,
                  stamp: tuple) -> RequestData:
    # cached: a recipe reads the same request up to four times (two contrast sides, gate forget and retain);
    # ``stamp`` (file names, mtimes, sizes) makes a changed folder a new key
    forget_ids = tuple(profile_ids(root, f"forget_{forget_ratio}"))
    wanted = set(forget_ids)
    banned = eval_prompt_keys(root) if exclude_eval else set()
    forget: list = []
    refusals: list = []
    retain: list = []
    dropped = 0
    for pair in train_pairs(root, configs=configs):
        if _key(pair.prompt) in banned:
            dropped += 1
            continue
        if pair.id in wanted:
            (refusals if is_refusal(pair.answer) else forget).append(pair)
        else:
            retain.append(pair)
    if not forget:
        raise DataError("the forget request is empty", [Problem(
            f"no fine-tuning pair of {', '.join(configs)} belongs to a forget_{forget_ratio} person "
            f"({len(forget_ids)} IDs) once evaluation prompts are dropped ({dropped})", str(root),
            code="SK621", hint="the rows need an ID column (or images named <ID>.png) matching forget_N; "
                               "check the folder and forget_ratio")])
    return RequestData(forget, refusals, retain, dropped, forget_ids, configs)


def _contrast(pairs: Sequence[TrainPair], side: str, target: str | None = None,
              suffix: str = "") -> list[ContrastItem]:
    return [ContrastItem(prompt=p.prompt + suffix, image=p.image, target=target or p.answer, id=p.id,
                         source=f"request_{side}:{prompt_task(p.prompt)}") for p in pairs]


def request_items(root: PathLike, side: str, forget_ratio: int = 10, configs: Sequence[str] | None = None,
                  refusal: str = "auto", modalities: Sequence[str] = ("vqa", "qa"),
                  tasks: Sequence[str] = ("classification", "generation", "cloze")) -> list[ContrastItem]:
    """One side of a request as contrast items (what direction extraction and gate fitting read).

    Args:
        side: ``forget`` (the forget people's fact pairs, target = their answer), ``refuse`` (their
            refusal pairs, target = the refusal) or ``retain`` (every other pair).
        refusal: for ``refuse``: ``data`` (refusal pairs of the request; an error if there are none),
            ``instruction`` (the forget questions + :data:`REFUSE_INSTRUCTION`) or ``auto`` (data when
            the request has refusal pairs, else instruction).
        modalities: ``vqa`` keeps pairs with a photo, ``qa`` text-only pairs.
        tasks: keep pairs phrased as these evaluation tasks (:func:`prompt_task`).
    """
    if side not in REQUEST_SIDES:
        raise DataError("unknown request side", [Problem(f"unknown side {side!r}", code="SK605",
                                                         hint="use forget, refuse or retain")])
    req = read_request(root, forget_ratio, configs)
    keep, task_set = set(modalities), set(tasks)

    def chosen(pairs: Sequence[TrainPair]) -> list[TrainPair]:
        return [p for p in pairs if ("vqa" if p.image is not None else "qa") in keep
                and prompt_task(p.prompt) in task_set]

    if side == "forget":
        return _contrast(chosen(req.forget), side)
    if side == "retain":
        return _contrast(chosen(req.retain), side)
    if refusal == "data" and not req.refusals:
        raise DataError("the forget request holds no refusal pairs", [Problem(
            f"no pair of a forget_{forget_ratio} person in {', '.join(req.configs)} is answered with a refusal",
            str(root), key_path="refusal", code="SK622",
            hint="set refusal: instruction (the forget questions with a refusal instruction appended)")])
    if req.refusals and refusal in ("auto", "data"):
        return _contrast(chosen(req.refusals), side)
    return _contrast(chosen(req.forget), side, target=REFUSAL, suffix="\n" + REFUSE_INSTRUCTION)
