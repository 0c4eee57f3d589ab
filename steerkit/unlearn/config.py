"""Configs of the training-based baselines (GA, GA_Diff, KL_Min, NPO): YAML validated like recipes.

A config is data, read by the same machinery as a recipe: ``yamlio`` rejects duplicate keys and
keeps every key's position, every section forbids unknown keys, and pydantic errors come back as
``file:line:col`` problems with "did you mean" hints (codes ``SK8xx``; the CLI exits with 2).
The ``model`` section *is* the recipe's :class:`~steerkit.recipe.ModelSpec` (same ids, including
``embedded:llava``), so a baseline loads the vanilla model exactly the way steering does, and the
``eval`` section names the same splits/tasks/modalities, so both are scored on the same items.

Example (``baselines/npo.yaml``)::

    schema_version: 1
    name: npo-embedded-llava
    method: npo
    model: {id: embedded:llava, world: {seed: 0, n_profiles: 100}}
    data: {forget_ratio: 10}           # path: null -> the embedded world; or an MLLMU-layout folder
    mode: lora
    lora: {r: 16, alpha: 16}
    train: {lr: 1.0e-3, steps: 20, batch_size: 8, beta: 0.4}
    out: ../runs/baselines/npo
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import Field, model_validator

from ..errors import Problem, SteerkitError
from ..recipe import ModalityName, ModelSpec, SplitName, TaskName, _apply_override
from ..validation import StrictModel, validate_document
from ..yamlio import LoadedYaml, YamlProblems, dump_yaml, parse_yaml, read_yaml

Method = Literal["ga", "ga_diff", "kl_min", "npo"]
METHODS: tuple[str, ...] = ("ga", "ga_diff", "kl_min", "npo")
USES_RETAIN = ("ga_diff", "kl_min")
USES_REFERENCE = ("kl_min", "npo")
LANGUAGE_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class UnlearnConfigError(SteerkitError):
    """An unlearning config (or a --set override) is invalid (exit code 2)."""


class DataSection(StrictModel):
    path: Optional[str] = Field(None, description="MLLMU-layout folder (relative to the config); null: the "
                                                  "embedded world of model.world. Evaluation reads it too.")
    forget_ratio: Literal[5, 10, 15] = Field(10, description="N of forget_N: whose facts are unlearned.")
    train_configs: list[str] = Field(["ft_Data"], min_length=1,
                                     description="Config folders whose QA pairs are split by profile ID into "
                                                 "forget (forget_N IDs) and retain (retain_(100-N) IDs).")
    forget_dir: Optional[str] = Field(None, description="A config folder of forget pairs (e.g. MLLMU's "
                                                        "baseline_train_split/forget_10); replaces the ID split.")
    retain_dir: Optional[str] = Field(None, description="A config folder of retain pairs; replaces the ID split.")
    retain_limit: Optional[int] = Field(None, ge=1, description="Use at most this many retain pairs "
                                                                "(a seeded sample).")


class LoraSection(StrictModel):
    r: int = Field(16, ge=1, description="LoRA rank (the authors use 16).")
    alpha: float = Field(16.0, gt=0, description="LoRA alpha (scale alpha / r).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA path.")
    target_modules: Union[Literal["all_linear"], list[str]] = Field(
        list(LANGUAGE_LINEAR), description="Linear layers to adapt, by their last name (q_proj ...), or "
                                           "'all_linear'; only inside the language model's decoder layers.")


class FullSection(StrictModel):
    scope: Literal["decoder_layers", "all"] = Field(
        "decoder_layers", description="Which weights full fine-tuning updates: the language model's decoder "
                                      "layers, or every parameter (vision tower, projector, embeddings, head).")


class TrainSection(StrictModel):
    lr: float = Field(gt=0, description="AdamW learning rate.")
    steps: Optional[int] = Field(None, ge=1, description="Optimiser steps (set this or epochs).")
    epochs: Optional[float] = Field(None, gt=0, description="Passes over the forget set (set this or steps).")
    batch_size: int = Field(8, ge=1, description="Forget examples per step.")
    retain_batch_size: Optional[int] = Field(None, ge=1, description="Retain examples per step (ga_diff, "
                                                                     "kl_min); null: batch_size.")
    beta: float = Field(0.4, gt=0, description="NPO temperature (npo only).")
    npo_reduction: Literal["sum", "mean"] = Field(
        "sum", description="NPO's NLL over answer tokens: 'sum' is the paper's log-probability (npo only).")
    retain_weight: float = Field(1.0, ge=0, description="Weight of the retain term (ga_diff, kl_min only).")
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up steps.")
    min_lr_ratio: float = Field(1.0, gt=0, le=1, description="Cosine decay to lr * this at the last step; "
                                                             "1.0: constant lr (a prefix of a run = a shorter run).")
    grad_clip: Optional[float] = Field(1.0, gt=0, description="Clip the gradient norm; null: no clipping.")
    threads: Optional[int] = Field(None, ge=1, description="torch threads while training; null: unchanged.")

    @model_validator(mode="after")
    def _one_length(self) -> "TrainSection":
        if self.steps is not None and self.epochs is not None:
            raise ValueError("set either 'steps' or 'epochs', not both")
        if self.steps is None and self.epochs is None:
            raise ValueError("set 'steps' or 'epochs'")
        return self


class UnlearnEvalSection(StrictModel):
    enabled: bool = Field(True, description="Evaluate the unlearned model after training.")
    splits: list[SplitName] = Field(["forget", "test", "retain", "utility"], min_length=1,
                                    description="Same splits as steering recipes; refusal is added when the "
                                                "data has it.")
    tasks: list[TaskName] = ["classification", "generation", "cloze"]
    modalities: list[ModalityName] = ["vqa", "qa"]
    batch_size: int = Field(32, ge=1)
    limit: Optional[int] = Field(None, ge=1, description="Items per (split, task, modality) cell.")
    vanilla: bool = Field(True, description="Also evaluate the vanilla model on the same items (before training).")
    plots: bool = Field(True, description="Write the PNG plots next to the report.")


class UnlearnConfig(StrictModel):
    schema_version: Literal[1] = 1
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    method: Method = Field(description="ga | ga_diff | kl_min | npo")
    model: ModelSpec
    data: DataSection = DataSection()
    mode: Literal["lora", "full"] = Field("lora", description="LoRA on the language model (merged before "
                                                              "saving) or full fine-tuning.")
    lora: LoraSection = LoraSection()
    full: FullSection = FullSection()
    train: TrainSection
    seed: int = 0
    out: Optional[str] = Field(None, description="Output folder (checkpoint/, eval/, unlearn_report.json); "
                                                 "relative to the config; null: runs/unlearn/<name>.")
    save: bool = Field(True, description="Write the unlearned checkpoint.")
    eval: UnlearnEvalSection = UnlearnEvalSection()

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    @property
    def uses_retain(self) -> bool:
        return self.method in USES_RETAIN

    @property
    def uses_reference(self) -> bool:
        return self.method in USES_REFERENCE


class LoadedUnlearnConfig:
    """A validated config and the folder its relative paths resolve against."""

    def __init__(self, config: UnlearnConfig, path: Optional[Path]):
        self.config = config
        self.path = path
        self.base_dir = path.parent if path else Path.cwd()

    def resolve(self, rel: str) -> Path:
        p = Path(rel).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    @property
    def out_dir(self) -> Path:
        return Path(os.path.normpath(self.resolve(self.config.out or f"runs/unlearn/{self.config.name}")))


def _explicit(data: Any, *keys: str) -> bool:
    node = data
    for k in keys:
        if not isinstance(node, dict) or k not in node:
            return False
        node = node[k]
    return True


def _semantic_problems(cfg: UnlearnConfig, doc: LoadedYaml) -> list[Problem]:
    """Keys that validate on their own but do nothing for this method: located, so they get fixed."""
    problems = []

    def flag(keys: tuple[str, ...], message: str, hint: str) -> None:
        if _explicit(doc.data, *keys):
            line, col = doc.locate(keys)
            problems.append(Problem(message, doc.path, line, col, ".".join(keys), hint, "SK805"))

    if cfg.method != "npo":
        for key in ("beta", "npo_reduction"):
            flag(("train", key), f"'{key}' applies to method npo only, not {cfg.method}",
                 "remove it, or set method: npo")
    if not cfg.uses_retain:
        for key in ("retain_weight", "retain_batch_size"):
            flag(("train", key), f"'{key}' applies to ga_diff and kl_min only, not {cfg.method}",
                 "remove it, or set method: ga_diff / kl_min")
    other = "full" if cfg.mode == "lora" else "lora"
    flag((other,), f"section '{other}' is unused with mode: {cfg.mode}", f"remove it, or set mode: {other}")
    return problems


def _validate(doc: LoadedYaml, path: Optional[Path], overrides: Optional[list[str] | dict[str, Any]]):
    problems: list[Problem] = []
    if overrides and isinstance(doc.data, dict):
        items = overrides if isinstance(overrides, list) else [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
        for item in items:
            _apply_override(doc.data, doc, item, problems)
    if problems:
        raise UnlearnConfigError("invalid --set override", problems)
    cfg = validate_document(UnlearnConfig, doc, UnlearnConfigError, "unlearning config", "SK8")
    extra = _semantic_problems(cfg, doc)
    if extra:
        raise UnlearnConfigError(f"{doc.path or 'unlearning config'} is invalid", extra)
    return LoadedUnlearnConfig(cfg, path)


def load_unlearn_config(path: str | Path, overrides: Optional[list[str] | dict[str, Any]] = None
                        ) -> LoadedUnlearnConfig:
    """Read, override (``a.b=c`` strings or a dict) and validate a config; UnlearnConfigError lists every problem."""
    path = Path(path)
    try:
        doc = read_yaml(path)
    except YamlProblems as exc:
        raise UnlearnConfigError(f"{path} is invalid", exc.problems) from None
    return _validate(doc, path, overrides)


def parse_unlearn_config(text: str, name: str = "<config>", overrides=None,
                         base_dir: Optional[Path] = None) -> LoadedUnlearnConfig:
    """Validate a config given as YAML text (tests, notebooks)."""
    try:
        doc = parse_yaml(text, name)
    except YamlProblems as exc:
        raise UnlearnConfigError(f"{name} is invalid", exc.problems) from None
    loaded = _validate(doc, None, overrides)
    if base_dir is not None:
        loaded.base_dir = Path(base_dir)
    return loaded


def config_to_yaml(cfg: UnlearnConfig) -> str:
    return dump_yaml(cfg.dump())
