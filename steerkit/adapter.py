"""Per-architecture adapters: data files that say where things are inside a model family.

An adapter maps the standard site names (``resid_pre``, ``resid_post``, ``attn_out``, ``mlp_out``)
to module paths, says where the dimensions live in the HF config, how image-token positions are
found and how prompts are rendered. Adding an architecture is adding one YAML file; the live check
(``adapter_check.py``) proves it on a model. HF module paths appear only in ``adapters/*.yaml``.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Optional

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
    transformers: str = Field(">=5.0", description="transformers versions the paths hold for (PEP 440 specifier).")


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

    image: str = Field(description="What an image item renders as, e.g. \"<|vision_start|><|image_pad|><|vision_end|>\".")
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


@lru_cache(maxsize=None)
def _registry(folder: str) -> dict[str, tuple[Adapter, Path]]:
    out: dict[str, tuple[Adapter, Path]] = {}
    for path in sorted(Path(folder).glob("*.yaml")):
        adapter = load_adapter_file(path)
        out[adapter.name] = (adapter, path)
    return out


def list_adapters() -> dict[str, tuple[Adapter, Path]]:
    """Built-in adapters by name (validated)."""
    return dict(_registry(str(builtin_dir("adapters"))))


def get_adapter(name: str) -> Adapter:
    registry = list_adapters()
    if name not in registry:
        raise AdapterError(f"no adapter named '{name}'", [Problem(
            f"unknown adapter '{name}'", None, None, None, "model.adapter", choices_hint(name, registry), "SK451")])
    return registry[name][0]


def adapter_path(name: str) -> Path:
    return list_adapters()[name][1]


def adapter_for_architecture(architecture: str) -> Adapter:
    """The built-in adapter whose ``match.architectures`` lists this architecture."""
    registry = list_adapters()
    for adapter, _ in registry.values():
        if architecture in adapter.match.architectures:
            return adapter
    known = sorted(a for ad, _ in registry.values() for a in ad.match.architectures)
    raise AdapterError(f"no adapter for architecture '{architecture}'", [Problem(
        f"architecture '{architecture}' is not served by any adapter", None, None, None, "model.adapter",
        f"add adapters/<name>.yaml (see docs/adapters.md) or set model.adapter; {choices_hint(architecture, known)}",
        "SK451")])
