"""The records every data source yields and every consumer (training, eval, extraction) reads.

These are the contract between the data layer and the rest of steerkit: a source turns files into
``EvalItem``/``TrainPair``/``ContrastItem`` lists; nothing downstream reads parquet or jsonl itself.
``prompt`` is always the *user text only* (options and instruction suffix included, chat template
NOT applied): the model session renders the chat template, so one item serves every architecture.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from PIL import Image

Task = Literal["classification", "generation", "cloze", "refusal"]
Modality = Literal["vqa", "qa"]  # vqa: image + text; qa: text only (the person is named)


@dataclass(frozen=True)
class EvalItem:
    """One scored question."""

    id: str  # profile ID (opaque string)
    split: str  # forget | test | retain | utility | refusal | val_forget | val_retain ...
    task: Task
    modality: Modality
    prompt: str  # user text, fully formatted (MC options and suffix included)
    image: Optional[Image.Image]  # None for QA items
    answer: str  # ground truth: option letter (classification), sentence (generation), fill (cloze)
    index: int = 0  # position in the profile's task list (MLLMU aligns Full_Set/Test_Set by index)
    options: Optional[dict[str, str]] = None  # A-D texts, classification only
    # re-elicitation attacks (steerkit.data.attacks): earlier (user, assistant) turns of the conversation, the
    # image going with the first, and text the assistant's answer is forced to start with
    history: tuple[tuple[str, str], ...] = ()
    assistant_prefix: str = ""


@dataclass(frozen=True)
class TrainPair:
    """One supervised example: the loss is taken on ``answer`` only."""

    prompt: str
    answer: str
    image: Optional[Image.Image] = None
    id: str = ""


@dataclass(frozen=True)
class ContrastItem:
    """One prompt of a contrast set (direction extraction, gate fitting, PGD)."""

    prompt: str
    image: Optional[Image.Image] = None
    target: Optional[str] = None  # continuation to teacher-force (PGD target / answer)
    id: str = ""
    source: str = ""  # where it came from, e.g. "file.jsonl:12"
