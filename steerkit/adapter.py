"""Per-architecture adapters: data files that say where things are inside a model family.

An adapter maps the standard site names (``resid_pre``, ``resid_post``, ``attn_out``, ``mlp_out``)
to module paths, says where the dimensions live in the HF config, how image-token positions are
found and how prompts are rendered. Adding an architecture is adding one YAML file; the live check
(``adapter_check.py``) proves it on a model. HF module paths appear only in ``adapters/*.yaml``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Optional

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from pydantic import Field, field_validator, model_validator

from .errors import AdapterError, Problem, choices_hint
from .resources import builtin_dir
from .validation import StrictModel, validate_document
from .yamlio import YamlProblems, read_yaml

STANDARD_SITES = ("resid_pre", "resid_post", "attn_out", "mlp_out")


class SiteSpec(StrictModel):
    module: str = Field(description="Module path from the model root; '{layer}' is the only placeholder.")
    io: Literal["input", "output"] = Field(description="Read/write the module's first input or its output.")
    output_index: Optional[int] = Field(
        None, description="When the module returns a tuple, the element holding the hidden states.")

    @field_validator("module")
    @classmethod
    def _one_placeholder(cls, v: str) -> str:
        stripped = v.replace("{layer}", "")
        if "{" in stripped or "}" in stripped:
            raise ValueError("only the '{layer}' placeholder is allowed")
        if not all(part.isidentifier() or part.isdigit() or part == "{layer}" for part in v.split(".")):
            raise ValueError("expected a dotted module path like 'model.language_model.layers.{layer}'")
        return v


class MatchSpec(StrictModel):
    architectures: list[str] = Field(min_length=1, description="config.architectures[0] values this adapter serves.")
    transformers: str = Field(">=5.0", description="transformers versions the paths hold for (PEP 440 specifier); "
                              "outside it, steerkit warns and names both versions.")

    @field_validator("transformers")
    @classmethod
    def _specifier(cls, v: str) -> str:
        try:
            SpecifierSet(v)
        except InvalidSpecifier:
            raise ValueError(f"'{v}' is not a PEP 440 version range (e.g. '>=5.0,<6')") from None
        return v


class ConfigKeys(StrictModel):
    hidden_size: str = Field(description="Dotted key of the decoder hidden size in the HF config.")
    num_layers: str = Field(description="Dotted key of the decoder layer count in the HF config.")
    vocab_size: Optional[str] = None


class ImageTokenSpec(StrictModel):
    config: Optional[str] = Field(None, description="Dotted config key holding the image token id.")
    tokenizer: Optional[str] = Field(None, description="Tokenizer attribute holding the image token id.")


class PromptSpec(StrictModel):
    style: Literal["chat_template", "format"] = Field(
        "chat_template", description="Render with the processor's chat template, or with 'format'.")
    format: str = Field("USER: {image}{text}\nASSISTANT:",
                        description="Fallback prompt format; {image} and {text} placeholders.")
    image_placeholder: str = Field("<image>\n", description="What {image} expands to when an image is attached.")


class ProcessorSpec(StrictModel):
    kind: Literal["auto", "compose", "tokenizer", "pixtral", "smolvlm_no_video", "qwen2_vl_no_video",
                  "qwen2_5_vl_no_video"] = Field(
        "auto", description="How to build the processor: 'auto' (AutoProcessor, else the class the checkpoint "
        "names without its video half), 'compose' (the classes named below; set by 'class'), 'tokenizer' "
        "(no processor), or a hand-written kind: 'pixtral', 'smolvlm_no_video' (qwen2_vl_no_video and "
        "qwen2_5_vl_no_video are old names of compose).")
    class_: Optional[str] = Field(
        None, alias="class", description="A transformers processor class name, e.g. Qwen3VLProcessor. It is built "
        "with only a tokenizer and an image processor; its video/audio parts are left out (no torchvision).")
    image_processor: Optional[str] = Field(
        None, description="A transformers image processor class name, e.g. Qwen2VLImageProcessorPil (the PIL "
        "backend, which needs no torchvision). Default: AutoImageProcessor.")

    @model_validator(mode="before")
    @classmethod
    def _class_means_compose(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("class") and data.get("kind", "auto") == "auto":
            data = {**data, "kind": "compose"}
        return data

    @model_validator(mode="after")
    def _compose_needs_class(self) -> "ProcessorSpec":
        if self.kind == "compose" and not self.class_:
            raise ValueError("kind 'compose' needs 'class' (a transformers processor class name)")
        if self.class_ and self.kind != "compose":
            raise ValueError(f"'class' is only read with kind 'compose', not '{self.kind}'")
        for name in (self.class_, self.image_processor):
            if name is not None and not name.isidentifier():
                raise ValueError(f"'{name}' is not a class name (a name exported by transformers, no dots)")
        return self


class TemplateSpec(StrictModel):
    """A chat template from four pieces (steerkit.models.zoo.chat_template); newlines as {{ '\\n' }}."""

    image: str = Field(description="What an image item renders as, e.g. "
                       "\"<|vision_start|><|image_pad|><|vision_end|>\".")
    start: str = "{{ m['role'] }}: "
    end: str = "{{ '\\n' }}"
    gen: str = "assistant:"


class TinySpec(StrictModel):
    """How the test suite builds a tiny random model of this family from its config class (no weights, no
    Python); read only by tests and ``steerkit.models.tiny_generic``."""

    tokens: dict[str, str] = Field({}, description="Named special tokens, e.g. {image_token: '<image>'}; each "
                                   "becomes tokenizer.<name> and tokenizer.<name>_id.")
    special_tokens: list[str] = Field([], description="Other special tokens the template or processor uses.")
    add_bos: bool = Field(True, description="Whether the tokenizer prepends a BOS token.")
    eos: Optional[str] = Field(None, description="The EOS token (default </s>).")
    token_ids: dict[str, str] = Field({}, description="Dotted config key -> a name in tokens; set to its id.")
    config: dict[str, Any] = Field({}, description="Dotted config key -> value, applied after the generic shrink.")
    chat_template: Optional[TemplateSpec] = None
    image_processor: dict[str, Any] = Field({}, description="Arguments of the image processor class.")
    processor: dict[str, Any] = Field({}, description="Arguments of the processor class (e.g. image_seq_length).")


class VerifiedRecord(StrictModel):
    model: str
    transformers: str
    nnsight: str
    checked: str
    tuple_output: bool = False


class Adapter(StrictModel):
    schema_version: Literal[1] = 1
    name: str
    description: str = ""
    match: MatchSpec
    loader: Literal["image_text_to_text", "causal_lm"] = Field(
        "image_text_to_text", description="Which Auto class loads checkpoints of this family.")
    config: ConfigKeys
    sites: dict[str, SiteSpec]
    image_token: Optional[ImageTokenSpec] = Field(
        None, description="How to find image-token positions; null for text-only families.")
    prompt: PromptSpec = PromptSpec()
    processor: ProcessorSpec = ProcessorSpec()
    tiny: Optional[TinySpec] = Field(None, description="How tests build a tiny model of this family (data only).")
    verified: list[VerifiedRecord] = []

    @field_validator("sites")
    @classmethod
    def _standard_sites(cls, v: dict[str, SiteSpec]) -> dict[str, SiteSpec]:
        missing = [s for s in STANDARD_SITES if s not in v]
        if missing:
            raise ValueError(f"missing standard sites: {', '.join(missing)}")
        return v

    @property
    def multimodal(self) -> bool:
        return self.image_token is not None

    def module_path(self, site: str, layer: int) -> str:
        return self.sites[site].module.replace("{layer}", str(layer))

    def config_value(self, config: Any, key: str) -> Any:
        node = config
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else getattr(node, part, None)
            if node is None:
                raise AdapterError(f"adapter '{self.name}' does not fit this model's config", [Problem(
                    f"config key '{key}' not found", None, None, None, "config", "fix the adapter's config keys",
                    "SK452")])
        return node

    def dims(self, config: Any) -> tuple[int, int]:
        """(hidden_size, num_layers) read from an HF config (object or dict)."""
        return int(self.config_value(config, self.config.hidden_size)), int(
            self.config_value(config, self.config.num_layers))

    def image_token_id(self, config: Any, tokenizer: Any = None) -> Optional[int]:
        if self.image_token is None:
            return None
        if self.image_token.config:
            return int(self.config_value(config, self.image_token.config))
        if self.image_token.tokenizer and tokenizer is not None:
            return int(getattr(tokenizer, self.image_token.tokenizer))
        return None


def load_adapter_file(path: str | Path) -> Adapter:
    try:
        doc = read_yaml(path)
    except YamlProblems as exc:
        raise AdapterError(f"{path} is not a valid adapter file", exc.problems) from None
    return validate_document(Adapter, doc, AdapterError, "adapter", "SK4")


def adapter_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---- the registry: user folders, then the shipped adapters ------------------------------------------
# A bad file is kept as an error, raised only when its own name or architectures are asked for, so one
# broken adapter cannot break commands about other models. Two files claiming one name or architecture,
# and an adapter whose match.transformers range excludes the installed transformers, are warnings.

ENV_VAR = "STEERKIT_ADAPTERS"
log = logging.getLogger("steerkit.adapters")
_warned: set[str] = set()


def warn_once(message: str) -> None:
    """Log a warning on stderr once per process (the CLI shows it as 'warning: ...')."""
    if message not in _warned:
        _warned.add(message)
        log.warning("warning: %s", message)


@dataclass(frozen=True)
class Registry:
    adapters: dict[str, tuple[Adapter, Path]]  # by name, the first found wins
    by_arch: dict[str, str]  # architecture -> adapter name
    broken: dict[Path, tuple[AdapterError, tuple[str, ...]]]  # bad file -> (error, names/architectures it claims)
    notes: tuple[str, ...]  # duplicate claims and missing folders, warned when the registry is used


def user_folders() -> list[Path]:
    """Folders named by $STEERKIT_ADAPTERS (os.pathsep-separated), in order."""
    return [Path(p).expanduser() for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p.strip()]


def _claims(path: Path) -> tuple[str, ...]:
    """What a file that failed validation still says it serves (its stem, name, architectures)."""
    claims = [path.stem]
    try:
        data = read_yaml(path).data
    except YamlProblems:
        return tuple(claims)
    if isinstance(data, dict):
        if isinstance(data.get("name"), str):
            claims.append(data["name"])
        match = data.get("match")
        archs = match.get("architectures") if isinstance(match, dict) else None
        if isinstance(archs, list):
            claims += [a for a in archs if isinstance(a, str)]
    return tuple(dict.fromkeys(claims))


def _files(folders: list[Path]) -> tuple[tuple[str, int, int], ...]:
    out = []
    for folder in folders:
        for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
            st = path.stat()
            out.append((str(path), st.st_mtime_ns, st.st_size))
    return tuple(out)


@lru_cache(maxsize=32)
def _scan(files: tuple[tuple[str, int, int], ...], missing: tuple[str, ...]) -> Registry:
    adapters: dict[str, tuple[Adapter, Path]] = {}
    by_arch: dict[str, str] = {}
    broken: dict[Path, tuple[AdapterError, tuple[str, ...]]] = {}
    notes = [f"$STEERKIT_ADAPTERS names {m}, which is not a folder" for m in missing]
    for name, _, _ in files:
        path = Path(name)
        try:
            adapter = load_adapter_file(path)
        except AdapterError as exc:
            broken[path] = (exc, _claims(path))
            continue
        if adapter.name in adapters:
            notes.append(f"two adapters are named '{adapter.name}': {adapters[adapter.name][1]} is used, "
                         f"{path} is ignored")
            continue
        adapters[adapter.name] = (adapter, path)
        for arch in adapter.match.architectures:
            if arch in by_arch:
                notes.append(f"two adapters claim {arch}: '{by_arch[arch]}' ({adapters[by_arch[arch]][1]}) is "
                             f"used, '{adapter.name}' ({path}) is not")
            else:
                by_arch[arch] = adapter.name
    return Registry(adapters, by_arch, broken, tuple(notes))


def registry(user: bool = True) -> Registry:
    """The adapters steerkit can use now: $STEERKIT_ADAPTERS folders first, then the shipped ones."""
    folders = (user_folders() if user else []) + [builtin_dir("adapters")]
    reg = _scan(_files(folders), tuple(str(f) for f in folders if not f.is_dir()))
    for note in reg.notes:
        warn_once(note)
    return reg


def list_adapters(user: bool = True) -> dict[str, tuple[Adapter, Path]]:
    """Valid adapters by name (``user=False``: the shipped ones only)."""
    return dict(registry(user).adapters)


def broken_adapters() -> dict[Path, AdapterError]:
    """Adapter files that failed validation, with their errors."""
    return {path: err for path, (err, _) in registry().broken.items()}


def _raise_if_broken(reg: Registry, claim: str) -> None:
    for _path, (err, claims) in reg.broken.items():
        if claim in claims:
            raise err


def transformers_version() -> Optional[str]:
    try:
        return importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError:
        return None


def check_version(adapter: Adapter, path: Optional[Path] = None) -> Optional[str]:
    """A warning when the installed transformers is outside the adapter's match.transformers range."""
    version = transformers_version()
    if version is None or SpecifierSet(adapter.match.transformers).contains(version, prereleases=True):
        return None
    where = f" ({path})" if path else ""
    message = (f"adapter '{adapter.name}'{where} is written for transformers {adapter.match.transformers}, but "
               f"{version} is installed: its module paths may not hold; run `steerkit adapters check` on the model")
    warn_once(message)
    return message


def _is_path(ref: str) -> bool:
    return ref.endswith((".yaml", ".yml")) or "/" in ref or "\\" in ref


def get_adapter(name: str, base_dir: Optional[Path] = None) -> Adapter:
    """An adapter by name, or from a YAML file (a path, relative to ``base_dir`` when it exists there)."""
    if _is_path(name):
        path = Path(name).expanduser()
        if not path.is_absolute() and base_dir is not None and (base_dir / path).exists():
            path = base_dir / path
        adapter = load_adapter_file(path)
        check_version(adapter, path)
        return adapter
    reg = registry()
    if name not in reg.adapters:
        _raise_if_broken(reg, name)
        raise AdapterError(f"no adapter named '{name}'", [Problem(
            f"unknown adapter '{name}'", None, None, None, "model.adapter",
            f"{choices_hint(name, reg.adapters)}; or give a path to an adapter file, or add a folder to "
            "$STEERKIT_ADAPTERS", "SK451")])
    adapter, path = reg.adapters[name]
    check_version(adapter, path)
    return adapter


def adapter_path(name: str) -> Path:
    return registry().adapters[name][1]


def adapter_for_architecture(architecture: str) -> Adapter:
    """The adapter whose ``match.architectures`` lists this architecture (user folders first)."""
    reg = registry()
    if architecture in reg.by_arch:
        adapter, path = reg.adapters[reg.by_arch[architecture]]
        check_version(adapter, path)
        return adapter
    _raise_if_broken(reg, architecture)
    known = sorted(reg.by_arch)
    raise AdapterError(f"no adapter for architecture '{architecture}'", [Problem(
        f"architecture '{architecture}' is not served by any adapter", None, None, None, "model.adapter",
        "write one YAML file for it (docs/adapters.md) in a folder on $STEERKIT_ADAPTERS, or set model.adapter; "
        f"{choices_hint(architecture, known)}", "SK451")])
