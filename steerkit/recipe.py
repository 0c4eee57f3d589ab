"""Recipes: versioned, declarative descriptions of a steering job (pydantic v2 models over YAML).

A recipe is data: it names registry entries (``mean_diff``, ``nullspace_linear``, ``last_prompt_token``),
never import paths, and cannot execute code. Every section forbids unknown keys; discriminators
(``method``, ``rule``, ``kind``) select a typed sub-model so each choice validates its own parameters.
Relative paths are resolved against the recipe file's folder, so a folder holding a recipe, its data
and its bundle can be shared and run elsewhere unchanged.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import AfterValidator, Field, StrictBool, field_validator, model_validator

from .errors import Problem, RecipeError
from .validation import StrictModel, validate_document
from .yamlio import LoadedYaml, YamlProblems, dump_yaml, parse_yaml, read_yaml

SiteName = Literal["resid_pre", "resid_post", "attn_out", "mlp_out"]
PositionName = Literal["all_prompt", "image_tokens", "text_tokens", "last_prompt_token", "generated",
                       "image_or_prompt"]
SplitName = Literal["forget", "test", "retain", "utility", "val_forget", "val_retain", "refusal"]
TaskName = Literal["classification", "generation", "cloze"]
ModalityName = Literal["vqa", "qa"]
RequestSide = Literal["forget", "refuse", "retain"]


def _path_text(v: str) -> str:
    """A path the filesystem can take: a NUL byte or a 5,000-character name is an input error here, not
    a "missing file" or an OSError traceback later (issue #14)."""
    from .bundle_source import path_text_problem

    why = path_text_problem(v)
    if why:
        raise ValueError(f"the path {why}; fix: give the path of a file or folder as the file system names it")
    return v


PathText = Annotated[str, AfterValidator(_path_text)]


# ----------------------------------------------------------------------------------------- data sources
class JsonlSource(StrictModel):
    kind: Literal["jsonl"] = "jsonl"
    path: PathText = Field(description="jsonl file; each line {image: path|null, prompt: str, target?: str}. "
                                  "Relative paths resolve against the recipe's folder. 'target' is read only by "
                                  "image_perturbation (PGD's target text); mean_diff reads the prompt and image.")
    limit: Optional[int] = Field(None, ge=1, description="Use at most this many lines.")
    ids: Optional[list[str]] = Field(None, min_length=1, description="Keep only items of these people "
                                     "(profile ids): one forget request among several (docs/forget-requests.md).")


class RequestFields(StrictModel):
    """Reading a forget request (issue #12) instead of an evaluation split: fine-tuning pairs only."""

    request: Optional[RequestSide] = Field(
        None, description="Read the forget request instead of an evaluation split: 'forget' (the forget "
                          "people's fine-tuning pairs), 'refuse' (their refusal pairs, or their questions with "
                          "a refusal instruction), 'retain' (every other fine-tuning pair). Pairs whose question "
                          "is an evaluation prompt of any split are dropped.")
    refusal: Literal["auto", "data", "instruction"] = Field(
        "auto", description="request: refuse only. 'data': the request's refusal pairs; 'instruction': the "
                            "forget questions with a refusal instruction appended; 'auto': data when there is any.")
    configs: Optional[list[str]] = Field(
        None, description="request only: fine-tuning config folders to read; null: ft_Data (+ ft_Extra when "
                          "present).")

    def _request_checks(self) -> None:
        if self.request is None and (self.refusal != "auto" or self.configs is not None):
            raise ValueError("'refusal' and 'configs' apply to request sources only")
        if self.request is not None and self.request != "refuse" and self.refusal != "auto":
            raise ValueError("'refusal' applies to request: refuse only")


class MllmuSource(RequestFields):
    kind: Literal["mllmu"] = "mllmu"
    path: PathText = Field(description="Folder in the MLLMU-Bench layout (Full_Set/, forget_10/, ...).")
    split: Optional[SplitName] = Field(None, description="Which evaluation split to read (or set 'request').")
    forget_ratio: Literal[5, 10, 15] = 10
    tasks: list[TaskName] = ["classification", "generation", "cloze"]
    modalities: list[ModalityName] = ["vqa", "qa"]
    limit: Optional[int] = Field(None, ge=1)
    ids: Optional[list[str]] = Field(None, min_length=1, description="Keep only items of these people "
                                     "(profile ids): one forget request among several (docs/forget-requests.md).")

    @model_validator(mode="after")
    def _one_of(self) -> "MllmuSource":
        if (self.split is None) == (self.request is None):
            raise ValueError("set exactly one of 'split' or 'request'")
        self._request_checks()
        return self


class WorldSource(RequestFields):
    """The embedded synthetic world (generated and cached on first use)."""

    kind: Literal["world"] = "world"
    split: Optional[SplitName] = Field(None, description="An evaluation split of the world.")
    contrast: Optional[str] = Field(None, description="A contrast file of the world, e.g. 'recall', "
                                                      "'erasure', 'forget_answer', 'forget_refuse'.")
    forget_ratio: Literal[5, 10, 15] = 10
    tasks: list[TaskName] = ["classification", "generation", "cloze"]
    modalities: list[ModalityName] = ["vqa", "qa"]
    limit: Optional[int] = Field(None, ge=1)
    ids: Optional[list[str]] = Field(None, min_length=1, description="Keep only items of these people "
                                     "(profile ids): one forget request among several (docs/forget-requests.md).")

    @model_validator(mode="after")
    def _one_of(self) -> "WorldSource":
        if sum(x is not None for x in (self.split, self.contrast, self.request)) != 1:
            raise ValueError("set exactly one of 'split' or 'contrast' (or 'request', for a forget request)")
        self._request_checks()
        return self


DataSource = Annotated[Union[JsonlSource, MllmuSource, WorldSource], Field(discriminator="kind")]


# ----------------------------------------------------------------------------------------- sections
class WorldSpec(StrictModel):
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seed of the embedded synthetic world.")
    n_profiles: int = Field(100, ge=8, le=10000, description="Number of fictitious profiles.")


class ExpectedDims(StrictModel):
    hidden_size: int = Field(gt=0)
    num_layers: int = Field(gt=0)


class ModelSpec(StrictModel):
    id: PathText = Field(description="Hub id, local directory, or 'embedded:llava' / 'embedded:qwen2_5_vl' "
                                "(the small models trained on the synthetic world).")
    revision: Optional[str] = None
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "float32"
    device_map: Optional[Union[str, dict[str, Union[int, str]]]] = None
    adapter: str = Field("auto", description="Adapter name, a path to an adapter YAML file (relative to the "
                         "recipe's folder), or 'auto' to match config.architectures[0].")
    # A security switch: strict, so only a real YAML boolean turns it on (pydantic's lax mode reads the
    # strings "on", "yes", "1" as True, which let a quoted "on" run a planted module, issue #18).
    trust_remote_code: StrictBool = Field(False, description="Run Python code shipped with the model (its "
                                          "auto_map modules). Off unless set to the YAML boolean true.")
    world: WorldSpec = WorldSpec()
    expect: Optional[ExpectedDims] = Field(
        None, description="The model's decoder dimensions; lets validate/compile check the plan offline, "
                          "and is checked against the model when it loads.")


class PgdSpec(StrictModel):
    kind: Literal["pgd_linf"] = "pgd_linf"
    epsilon: float = Field(16 / 255, gt=0, le=1, description="L-infinity budget in [0,1] pixel space.")
    step: float = Field(2 / 255, gt=0, le=1)
    steps: int = Field(10, ge=1, le=10000)
    random_start: bool = True
    target: Optional[str] = Field(None, description="Target text; default: each item's own target.")


class ContrastSide(StrictModel):
    source: DataSource
    image_perturbation: Optional[PgdSpec] = None


class ReadSpec(StrictModel):
    site: SiteName = "resid_pre"
    position: Literal["last_prompt_token"] = "last_prompt_token"


class MeanDiffDirection(StrictModel):
    method: Literal["mean_diff"] = "mean_diff"
    recall: ContrastSide = Field(description="Side A: the model recalls / complies.")
    erasure: ContrastSide = Field(description="Side B: the model withholds / refuses.")
    normalize: bool = Field(False, description="Scale each layer's direction to unit norm.")


DirectionSpec = Annotated[Union[MeanDiffDirection], Field(discriminator="method")]


class GateReadSpec(StrictModel):
    positions: PositionName = Field("last_prompt_token", description="Tokens the gate reads.")
    pool: Literal["last", "mean", "max"] = Field("last", description="How per-token scores are pooled.")


class AlwaysOnGate(StrictModel):
    rule: Literal["always_on"] = "always_on"


class LinearGateBase(StrictModel):
    forget: list[DataSource] = Field(min_length=1, description="Prompts the gate must open on.")
    retain: list[DataSource] = Field(min_length=1, description="Prompts the gate must stay closed on.")
    holdout: float = Field(0.2, ge=0, lt=1, description="Fraction of retain rows held out to score leakage.")
    clip: Optional[tuple[float, float]] = Field((0.0, 1.0), description="Clip the gate value; null: unbounded.")
    read: GateReadSpec = GateReadSpec()
    layer: Optional[LayerIndex] = Field(None, description="Read one gate at this layer for every written layer; "
                                                   "null: one gate per written layer (as published).")

    @field_validator("clip")
    @classmethod
    def _ordered(cls, v):
        if v is not None and v[0] >= v[1]:
            raise ValueError("clip must be [low, high] with low < high")
        return v


class NullspaceGate(LinearGateBase):
    rule: Literal["nullspace_linear"] = "nullspace_linear"
    rho: float = Field(0.3, gt=0, le=1, description="Fraction of dimensions kept in the retain null space.")
    gamma: float = Field(0.1, ge=0, description="Ridge term of the closed form.")


class RidgeGate(LinearGateBase):
    rule: Literal["ridge_linear"] = "ridge_linear"
    gamma: float = Field(1.0, gt=0, description="Ridge penalty.")
    retain_open_rate: float = Field(0.02, ge=0, lt=1, description="Calibrate the bias so at most this "
                                                                   "fraction of held-in retain rows open.")


class PrototypeGate(LinearGateBase):
    """One prototype per forget identity (and modality); open when a prompt is close to any of them.

    A single linear gate must separate "any of K people" from everyone else, an OR that a small model's
    residual stream does not make linear (toyworld: AUC 0.55-0.8). Prototypes make the OR explicit:
    c = clip(scale * max_k cos(h - mu, p_k) + bias), with mu the retain mean, p_k the centred mean of
    identity k's prompts, and scale/bias calibrated on retain people held out of the fit.
    """

    rule: Literal["prototype"] = "prototype"
    read: GateReadSpec = GateReadSpec(positions="image_or_prompt", pool="mean")
    group_by: Literal["id_modality", "id_modality_task", "id"] = Field(
        "id_modality", description="One prototype per identity and modality (image prompts and text "
                                   "prompts differ); id_modality_task: also per question type (a multiple-"
                                   "choice prompt pools over its options, a free question does not).")
    retain_open_rate: float = Field(0.02, ge=0, lt=1, description="At most this fraction of calibration "
                                                                   "retain prompts get a gate above 0.")
    forget_open_quantile: float = Field(0.5, gt=0, le=1, description="The forget score quantile mapped to "
                                                                     "a fully open gate (c = 1).")
    image_score: Literal["cosine", "whitened_cosine", "discriminant"] = Field(
        "cosine", description="How image-prompt prototypes score a prompt: cosine after per-dimension "
                              "whitening; cosine after full whitening by the within-person covariance of "
                              "the retain prompts (a D x D matrix in the bundle); or a Fisher discriminant.")
    text_score: Literal["cosine", "whitened_cosine", "discriminant"] = Field(
        "cosine", description="The same for text-only prompts (a name among template words: whitened_cosine "
                              "separates far better on the embedded models).")
    shrinkage: float = Field(0.01, gt=0, le=10, description="whitened_cosine and discriminant: ridge added "
                             "to the covariance, as a fraction of its mean variance.")

    @model_validator(mode="after")
    def _shared(self) -> "PrototypeGate":
        if self.layer is None:
            raise ValueError("a prototype gate is read once: set gate.layer")
        return self


class CosineGate(StrictModel):
    rule: Literal["cosine_threshold"] = "cosine_threshold"
    threshold: float = Field(ge=-1, le=1, description="Open when cos(h, direction) exceeds this.")
    read: GateReadSpec = GateReadSpec()


GateSpec = Annotated[Union[AlwaysOnGate, NullspaceGate, RidgeGate, PrototypeGate, CosineGate],
                    Field(discriminator="rule")]


# No model has anywhere near this many layers; the bound keeps a typo like 10**30 from making compile
# enumerate range(0, 10**30) (it hangs) and leaves the exact range check to compile, which knows the model.
MAX_LAYER_INDEX = 10_000
LayerIndex = Annotated[int, Field(ge=-MAX_LAYER_INDEX, le=MAX_LAYER_INDEX)]


class LayerRange(StrictModel):
    start: LayerIndex = Field(description="First layer (0-based; negative counts from the end).")
    stop: Optional[LayerIndex] = Field(None, description="One past the last layer; null: the model's last layer + 1.")
    skip: list[LayerIndex] = []


class StrengthSearchSpec(StrictModel):
    """Calibrate lambda at extract time on validation questions the recipe names (docs: calibration.md).

    Each grid value is scored with a continuous proxy, the mean probability the model gives the correct
    answer, so two strengths rarely tie (accuracy on a few dozen questions often does, and a tie then
    decides the strength). The chosen lambda and the whole table are stored in the bundle manifest.
    """

    grid: list[float] = Field(
        [-0.5, -1.0, -2.0, -4.0, -8.0], min_length=1,
        description="Candidate strengths, tried in order (negative erases).")
    max_retain_drop: float = Field(3.0, ge=0, le=100, description="Keep the retain score within this many "
                                   "points (percent) of the unsteered model's.")
    forget_target: Optional[float] = Field(
        None, ge=0, le=100, description="Optional: choose the weakest strength whose forget score is at or "
                                        "below this (percent; e.g. 25 for chance on four options). Null: the "
                                        "strongest forgetting the retain budget allows.")
    plateau: float = Field(
        2.0, ge=0, le=100, description="Forget scores within this many points (percent) of the best one count "
                                       "as equal, and the weakest such strength is chosen: past the plateau a "
                                       "stronger push buys no forgetting and only risks what is kept.")
    forget: list[DataSource] = Field(min_length=1, description="Held-out questions about the people to forget "
                                     "(not the prompts the direction or gate were fitted on).")
    retain: list[DataSource] = Field(min_length=1, description="Questions about people to keep.")
    metric: Literal["answer_prob", "top1_accuracy"] = Field(
        "answer_prob", description="answer_prob: probability of the correct option (multiple choice) or the "
                                   "per-token geometric mean probability of the reference answer (free-form "
                                   "items); top1_accuracy: first-token accuracy on multiple choice, answer_prob "
                                   "breaking ties.")
    batch_size: int = Field(32, ge=1, le=4096, description="Questions per forward pass.")


class StrengthSpec(StrictModel):
    lambda_: Optional[float] = Field(
        None, alias="lambda", description="Multiplier of the direction (negative erases). With a search, "
                                          "setting it overrides the calibrated value.")
    search: Optional[StrengthSearchSpec] = Field(
        None, description="Calibrate lambda at extract time; the bundle stores the choice and the table.")

    @model_validator(mode="after")
    def _some(self) -> "StrengthSpec":
        if self.lambda_ is None and self.search is None:
            raise ValueError("set steer.strength.lambda, or steer.strength.search to calibrate it")
        return self


class SteerSpec(StrictModel):
    op: Literal["add", "ablate", "clamp"] = "add"
    site: SiteName = "resid_pre"
    layers: Union[LayerRange, list[LayerIndex]]
    positions: list[PositionName] = Field(["all_prompt"], min_length=1)
    phase: Literal["prefill", "all_steps"] = "prefill"
    strength: StrengthSpec = StrengthSpec(**{"lambda": 1.0})
    clamp_value: float = Field(0.0, description="For op=clamp: the value of the component along r.")

    @field_validator("layers")
    @classmethod
    def _distinct(cls, v):
        if isinstance(v, list):
            twice = sorted({i for i in v if v.count(i) > 1})
            if twice:  # a repeated layer would get the direction added twice
                raise ValueError(f"layer{'s' if len(twice) > 1 else ''} {', '.join(map(str, twice))} listed "
                                 "more than once (the direction would be added twice); fix: list each layer once")
        return v


class BundleSpec(StrictModel):
    path: PathText = Field(description="Where the direction bundle is written / read (relative to the recipe). "
                                        "'{fit}' in it becomes a 12-hex key of the model, world, data sources and "
                                        "fit settings (direction, gate, seed), so each gets its own bundle.")
    compose: list[str] = Field([], description="Further bundles (or merged bundle sets) applied together with "
                               "this one, one per forget request: each keeps its own gate and direction and the "
                               "gated writes add up (docs/forget-requests.md). Extract writes only 'path'.")


class EvalSpec(StrictModel):
    splits: list[SplitName] = ["forget", "test", "retain", "utility"]
    tasks: list[TaskName] = ["classification", "generation", "cloze"]
    modalities: list[ModalityName] = ["vqa", "qa"]
    forget_ratio: Literal[5, 10, 15] = 10
    data: Optional[PathText] = Field(None, description="MLLMU-layout folder; null: the embedded world.")
    batch_size: int = Field(32, ge=1)
    limit: Optional[int] = Field(None, ge=1, description="Items per (split, task, modality) cell.")
    out: PathText = Field("runs/eval", description="Output folder for JSON, markdown and plots.")


class Recipe(StrictModel):
    schema_version: Literal[1] = 1
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    model: ModelSpec
    direction: Optional[DirectionSpec] = None
    gate: GateSpec = AlwaysOnGate()
    steer: SteerSpec
    bundle: Optional[BundleSpec] = None
    eval: EvalSpec = EvalSpec()
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seed of extraction and hold-out splits "
                                                          "(torch and numpy accept 0..2**32-1).")

    @model_validator(mode="after")
    def _consistent(self) -> "Recipe":
        if self.steer.op != "clamp" and self.direction is None and self.bundle is None:
            raise ValueError("set 'direction' (to extract one) or 'bundle' (to load one)")
        return self

    def dump(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", by_alias=True, exclude_none=False)
        if data["steer"]["strength"].get("search") is None:  # so recipes from before the search keep their hash
            del data["steer"]["strength"]["search"]
        return data

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.dump(), sort_keys=True).encode()).hexdigest()


# ----------------------------------------------------------------------------------------- loading
class LoadedRecipe:
    """A validated recipe plus where it came from (for resolving relative paths and locating problems)."""

    def __init__(self, recipe: Recipe, path: Optional[Path], doc: Optional[LoadedYaml] = None):
        self.recipe = recipe
        self.path = path
        self.base_dir = path.parent if path else Path.cwd()
        self.doc = doc  # the parsed YAML (with key positions and --set origins), when loaded from text

    def resolve(self, rel: str) -> Path:
        p = Path(rel).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    def locate(self, problems: list[Problem]) -> list[Problem]:
        """Fill in file:line:col of problems that only name a key path (compile and adapter problems do)."""
        out = []
        for p in problems:
            if p.line is None and p.key_path and p.path in (None, str(self.path)):
                loc = tuple(int(k) if k.isdigit() else k for k in p.key_path.split("."))
                line, col = self.doc.locate(loc) if self.doc is not None else (None, None)
                if self.doc is not None and any(loc[:n] in self.doc.overrides for n in range(len(loc), 0, -1)):
                    p = replace(p, path="--set")
                else:
                    p = replace(p, path=str(self.path) if self.path else None, line=line, column=col)
            out.append(p)
        return out


def _sources(recipe: Recipe) -> list[tuple[str, Any]]:
    """Every data source of a recipe with its dotted key path."""
    found: list[tuple[str, Any]] = []
    d = recipe.direction
    if d is not None:
        found += [("direction.recall.source", d.recall.source), ("direction.erasure.source", d.erasure.source)]
    for side in ("forget", "retain"):
        for i, src in enumerate(getattr(recipe.gate, side, None) or []):
            found.append((f"gate.{side}.{i}", src))
    search = recipe.steer.strength.search
    for side in ("forget", "retain"):
        for i, src in enumerate(getattr(search, side, None) or []):
            found.append((f"steer.strength.search.{side}.{i}", src))
    return found


def check_paths(loaded: LoadedRecipe) -> list[Problem]:
    """Data files a recipe names that do not exist (or are the wrong kind), as located problems.

    Checks jsonl sources (must be non-empty files) and mllmu sources (must be folders holding the
    split's config folders); the embedded world is
    generated on demand and is not checked. Filesystem checks plus a scan up to a jsonl file's first
    non-blank line, nothing parsed: safe and fast for ``validate``. The data is only read to extract a
    bundle, so callers may downgrade these to warnings
    when the recipe's bundle already exists.
    """
    problems = []
    for key, src in _sources(loaded.recipe):
        if src.kind not in ("jsonl", "mllmu"):
            continue
        full = loaded.resolve(src.path)
        want_dir = src.kind == "mllmu"
        try:
            exists, is_dir = full.exists(), full.is_dir()
        except (OSError, ValueError):  # e.g. a NUL byte or an over-long name
            exists, is_dir = False, False
        what = "folder" if want_dir else "file"
        if not exists:
            problems.append(Problem(f"{src.kind} {what} not found: {full}", key_path=f"{key}.path",
                                    hint="fix the path (relative paths resolve against the recipe's folder)",
                                    code="SK230"))
        elif is_dir != want_dir:
            problems.append(Problem(f"{src.kind} source must be a {what}, got a {'file' if want_dir else 'folder'}: "
                                    f"{full}", key_path=f"{key}.path", code="SK230",
                                    hint="use kind: mllmu for an MLLMU-Bench folder, kind: jsonl for a .jsonl file"))
        else:
            from .sources import empty_source_problem

            why = empty_source_problem(src, full)
            if why:  # extract would stop with SK602 on this source: say so now
                problems.append(Problem(f"{src.kind} source yields no items: {why}", key_path=f"{key}.path",
                                        hint="point it at data that has rows, or pick another split", code="SK231"))
    return loaded.locate(problems)


def _apply_override(data: dict, doc: LoadedYaml, item: str, problems: list[Problem]) -> None:
    if "=" not in item:
        problems.append(Problem(f"override '{item}' is not of the form key.path=value", "--set", None, None,
                                None, "write e.g. --set steer.strength.lambda=-0.3", "SK110"))
        return
    key, _, raw = item.partition("=")
    parts = [p for p in key.strip().split(".")]
    if not key.strip() or any(not p for p in parts):
        problems.append(Problem(f"override key '{key}' is empty or malformed", "--set", None, None, key or None,
                                "write e.g. --set steer.strength.lambda=-0.3", "SK110"))
        return
    try:
        value = parse_yaml(raw if raw.strip() else "null", "--set").data
    except YamlProblems:
        value = raw
    node = data
    created: list[tuple] = []
    for i, part in enumerate(parts):  # a digit part picks a mapping out of a list (gate.forget.0.ids=[...])
        if isinstance(node, list) and i < len(parts) - 1:
            if not (part.isdigit() and int(part) < len(node) and isinstance(node[int(part)], dict)):
                problems.append(Problem(f"cannot set '{key}': '{'.'.join(parts[:i])}' is a list of {len(node)}; "
                                        f"'{part}' is not the index of a mapping in it", "--set", None, None, key,
                                        f"use an index 0..{len(node) - 1}", "SK110"))
                return
            part = int(part)
        elif not isinstance(node, dict):
            problems.append(Problem(f"cannot set '{key}': '{'.'.join(parts[:i])}' is not a mapping",
                                    "--set", None, None, key, None, "SK110"))
            return
        if i == len(parts) - 1:
            node[part] = value
            break
        nxt = node[part] if isinstance(node, list) else node.get(part)
        if nxt is None:
            nxt = {}
            node[part] = nxt
            created.append(tuple(parts[:i + 1]))
        node = nxt
    node[parts[-1]] = value
    doc.positions.setdefault(tuple(parts), (None, None))  # type: ignore[arg-type]  # no file position
    for written in created + [tuple(parts)]:  # errors under these paths are located at the --set, not the file
        doc.overrides[written] = item


def load_recipe(path: str | Path, overrides: Optional[dict[str, Any] | list[str]] = None) -> LoadedRecipe:
    """Read, override (``a.b=c`` strings or a dict) and validate a recipe; raise RecipeError with all problems."""
    path = Path(path)
    try:
        doc = read_yaml(path)
    except YamlProblems as exc:
        raise RecipeError(f"{path} is invalid", exc.problems) from None
    return _validate(doc, path, overrides)


def parse_recipe_text(text: str, name: str = "<recipe>", overrides=None) -> LoadedRecipe:
    try:
        doc = parse_yaml(text, name)
    except YamlProblems as exc:
        raise RecipeError(f"{name} is invalid", exc.problems) from None
    return _validate(doc, None, overrides)


def _validate(doc: LoadedYaml, path: Optional[Path], overrides) -> LoadedRecipe:
    problems: list[Problem] = []
    if overrides and isinstance(doc.data, dict):
        items = overrides if isinstance(overrides, list) else [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
        for item in items:
            _apply_override(doc.data, doc, item, problems)
    if problems:
        raise RecipeError("invalid --set override", problems)
    recipe = validate_document(Recipe, doc, RecipeError, "recipe", "SK2")
    return LoadedRecipe(recipe, path, doc)


def recipe_to_yaml(recipe: Recipe) -> str:
    return dump_yaml(recipe.dump())
