"""Processors that work without torchvision, and a save/rebuild path for them.

Why: torchvision cannot be installed next to the CPU torch this project pins (its ABI breaks every
transformers model import), and transformers 5 builds video processors only with torchvision. Most
current VLM processors (Qwen2/2.5/3-VL, LLaVA-OneVision, InternVL, SmolVLM, ...) therefore cannot be
constructed, saved or loaded by ``AutoProcessor`` as shipped, although images never need the video
half. An adapter says how to assemble its processor as data (``processor: {class: ...,
image_processor: ...Pil}``): ``compose`` builds the named transformers processor class with only a
tokenizer and the named image processor (the PIL backend needs no torchvision), every other part
(video processor, audio feature extractor) left out. Two families need code that data cannot
express, kept as hand-written kinds: ``smolvlm_no_video`` (its chat template reads the video
processor) and ``pixtral`` (transformers declares the Pixtral processor torchvision-only).
``save_processor`` writes the same files a Hub checkpoint holds (tokenizer, image processor,
``processor_config.json``, ``chat_template.jinja``); ``load_processor`` rebuilds a processor from them.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from transformers import ProcessorMixin, Qwen2_5_VLProcessor, Qwen2VLProcessor, SmolVLMProcessor

from .pixtral import PixtralNoTorchvisionProcessor

# "compose" assembles the classes an adapter names; the *_no_video kinds for Qwen2(.5)-VL are the same
# thing under their old names (kept so existing adapter files stay valid).
PROCESSOR_KINDS = ("auto", "compose", "tokenizer", "pixtral", "smolvlm_no_video", "qwen2_vl_no_video",
                   "qwen2_5_vl_no_video")
# Parts a composed processor is always built with; every other part is left out.
_KEPT_PARTS = ("tokenizer", "image_processor")


class ProcessorSpecError(ValueError):
    """A processor setting names a class that does not exist or cannot be used here."""


class _NoVideoMixin:
    """Allows the parts left out (video processor, audio feature extractor) to be None and saves in the
    stock layout (loadable by the stock class)."""

    def check_argument_for_proper_class(self, name, arg):
        return None if arg is None else super().check_argument_for_proper_class(name, arg)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        for part in type(self).get_attributes():
            if getattr(self, part, None) is None:
                out.pop(part, None)
        out["processor_class"] = self._stock_class().__name__  # so AutoProcessor resolves the real class
        return out

    @classmethod
    def _stock_class(cls) -> type:
        return next(b for b in cls.__mro__ if b.__module__.startswith("transformers."))

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        # The stock method dereferences ``video_processor._auto_class`` and crashes on None.
        if push_to_hub:
            raise NotImplementedError("push a no-video processor's folder with huggingface_hub instead")
        return _save_parts(self, Path(save_directory))


class Qwen2VLNoVideoProcessor(_NoVideoMixin, Qwen2VLProcessor):
    """Qwen2-VL processor for images (and text) only."""


class Qwen25VLNoVideoProcessor(_NoVideoMixin, Qwen2_5_VLProcessor):
    """Qwen2.5-VL processor for images (and text) only."""


class SmolVLMNoVideoProcessor(_NoVideoMixin, SmolVLMProcessor):
    """SmolVLM processor for images (and text) only."""

    def apply_chat_template(self, conversation, chat_template=None, **kwargs):
        # The stock method reads ``video_processor.num_frames`` even for image-only chats.
        return ProcessorMixin.apply_chat_template(self, conversation, chat_template, **kwargs)


_NO_VIDEO: dict[str, type] = {"qwen2_vl_no_video": Qwen2VLNoVideoProcessor,
                              "qwen2_5_vl_no_video": Qwen25VLNoVideoProcessor,
                              "smolvlm_no_video": SmolVLMNoVideoProcessor,
                              "pixtral": PixtralNoTorchvisionProcessor}
_KIND_OF_STOCK = {getattr(cls, "stock_name", None) or cls._stock_class().__name__: kind
                  for kind, cls in _NO_VIDEO.items()}
# One composed class per stock class, so that rebuilding gives the very class the first build gave.
_COMPOSED: dict[type, type] = {Qwen2VLProcessor: Qwen2VLNoVideoProcessor, Qwen2_5_VLProcessor: Qwen25VLNoVideoProcessor}


def no_video_kind(processor_class: str | None) -> str | None:
    """The hand-written kind that rebuilds a stock processor class, or None if none is needed."""
    return _KIND_OF_STOCK.get(processor_class or "")


def _transformers_class(name: str, base_name: str, what: str) -> type:
    """A class exported by transformers, by name only (adapters never carry import paths)."""
    import transformers

    if not name.isidentifier():
        raise ProcessorSpecError(f"{what} '{name}' is not a class name")
    try:
        cls = getattr(transformers, name)
    except (AttributeError, ImportError) as exc:
        raise ProcessorSpecError(f"transformers {transformers.__version__} has no {what} '{name}' "
                                 f"({_first_line(exc)})") from None
    base = getattr(transformers, base_name)
    try:  # a class transformers declares for a missing backend is a stand-in that raises on use
        ok = isinstance(cls, type) and issubclass(cls, base)
        if ok:
            cls.__mro__  # noqa: B018 - touching the class makes a torchvision-only stand-in raise
    except ImportError as exc:
        raise ProcessorSpecError(f"{what} '{name}' cannot be used: {_first_line(exc)}") from None
    if getattr(cls, "_backends", None) and "torchvision" in cls._backends:
        raise ProcessorSpecError(f"{what} '{name}' cannot be used: transformers declares it torchvision-only, "
                                 "and steerkit runs without torchvision")
    if not ok:
        raise ProcessorSpecError(f"'{name}' is not a {what} (not a subclass of transformers.{base_name})")
    return cls


def _first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception message (transformers' often start with a newline)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def processor_class(name: str) -> type:
    """The no-torchvision variant of the transformers processor class ``name``: only the tokenizer and
    the image processor are required; every other part is left out (None)."""
    stock = _transformers_class(name, "ProcessorMixin", "processor class")
    if set(stock.get_attributes()) <= set(_KEPT_PARTS):  # nothing to leave out: the stock class as is
        return stock
    if stock not in _COMPOSED:
        _COMPOSED[stock] = type(f"{stock.__name__}ImagesOnly", (_NoVideoMixin, stock),
                                {"__module__": __name__, "__doc__": f"{stock.__name__} for images and text only."})
    return _COMPOSED[stock]


def image_processor_class(name: str) -> type:
    """The transformers image processor class ``name`` (e.g. a ``*ImageProcessorPil`` backend)."""
    return _transformers_class(name, "ImageProcessingMixin", "image processor class")


def _stock_name(processor: Any) -> str:
    """The transformers class name a saved processor records (what AutoProcessor would build)."""
    named = getattr(type(processor), "stock_name", None)
    if named:
        return named
    return processor._stock_class().__name__ if isinstance(processor, _NoVideoMixin) else type(processor).__name__


def _save_parts(processor: Any, out: Path) -> list[str]:
    """Save tokenizer, image processor, chat template and processor_config.json one by one."""
    out.mkdir(parents=True, exist_ok=True)
    stock = _stock_name(processor)
    tok = getattr(processor, "tokenizer", None)
    if tok is not None:
        tok._set_processor_class(stock)
        tok.save_pretrained(out)
    image_processor = getattr(processor, "image_processor", None)
    if image_processor is not None:
        image_processor.save_pretrained(out)  # preprocessor_config.json, the layout AutoImageProcessor reads
    template = getattr(processor, "chat_template", None)
    if isinstance(template, str):
        (out / "chat_template.jinja").write_text(template, encoding="utf-8")
    processor.to_json_file(out / "processor_config.json")
    return [str(out / "processor_config.json")]


def save_processor(processor: Any, out_dir: str | os.PathLike) -> Path:
    """Save any processor (or a bare tokenizer) so that ``load_processor`` restores an equal one.

    Stock ``save_pretrained`` is tried first; when it fails (a processor missing a part it expects),
    the parts that exist are saved one by one in the same layout.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not isinstance(processor, ProcessorMixin):  # a tokenizer on its own (text-only families)
        processor.save_pretrained(out)
        return out
    try:
        processor.save_pretrained(out)
    except (AttributeError, TypeError, ValueError, NotImplementedError):
        _save_parts(processor, out)
    return out


def _processor_dict(path: str | os.PathLike, revision: str | None) -> dict[str, Any]:
    """processor_config.json plus the chat template, local or from the Hub ({} when absent)."""
    try:
        found, _ = ProcessorMixin.get_processor_dict(str(path), revision=revision)
    except (OSError, ValueError):
        return {}
    return found


@dataclass(frozen=True)
class ProcessorRecipe:
    """How to build a processor: a kind, and for ``compose`` the transformers classes to assemble.

    Mirrors an adapter's ``processor:`` section (``steerkit.adapter.ProcessorSpec``)."""

    kind: str = "auto"
    class_name: Optional[str] = None  # a transformers processor class, e.g. "Qwen3VLProcessor"
    image_processor: Optional[str] = None  # a transformers image processor class, e.g. "Qwen2VLImageProcessorPil"


def as_recipe(spec: Any) -> ProcessorRecipe:
    """A ProcessorRecipe from a kind name, an adapter's ProcessorSpec or a ProcessorRecipe."""
    if isinstance(spec, ProcessorRecipe):
        recipe = spec
    elif isinstance(spec, str):
        recipe = ProcessorRecipe(spec)
    else:
        recipe = ProcessorRecipe(spec.kind, getattr(spec, "class_", None), getattr(spec, "image_processor", None))
    if recipe.kind not in PROCESSOR_KINDS:
        raise ProcessorSpecError(f"unknown processor kind '{recipe.kind}'; choose one of: {', '.join(PROCESSOR_KINDS)}")
    if recipe.kind == "compose" and not recipe.class_name:
        raise ProcessorSpecError("processor kind 'compose' needs 'class' (a transformers processor class name)")
    return recipe


def build_processor(kind: Any, path_or_none: str | os.PathLike | None, tokenizer: Any, image_processor: Any,
                    *, revision: str | None = None, **overrides: Any) -> Any:
    """Assemble a processor of ``kind`` from its parts, reading its settings from ``path_or_none``.

    ``kind`` is a kind name or a ProcessorRecipe / adapter ProcessorSpec (for ``compose``). Settings
    (``image_seq_len``, ``chat_template``, ...) come from the checkpoint's ``processor_config.json``
    when a path is given, then ``overrides``. ``kind="tokenizer"`` means the family has no processor
    and returns None; ``kind="auto"`` uses the class the checkpoint names.
    """
    recipe = as_recipe(kind)
    if recipe.kind == "tokenizer":
        return None
    settings = _processor_dict(path_or_none, revision) if path_or_none is not None else {}
    if recipe.kind == "compose":
        cls = processor_class(recipe.class_name)
    elif recipe.kind in _NO_VIDEO:
        cls = _NO_VIDEO[recipe.kind]
    else:  # auto: the class the checkpoint names, without the parts that need torchvision
        name = settings.get("processor_class")
        if not name:
            raise ProcessorSpecError(f"cannot tell which processor class to build for {path_or_none!r}: no "
                                     "processor_config.json names one; name it in the adapter "
                                     "(processor: {class: ...}) or pass a checkpoint path")
        kind_nv = no_video_kind(name)
        cls = _NO_VIDEO[kind_nv] if kind_nv else processor_class(name)
    params = inspect.signature(cls.__init__).parameters
    parts = {p: None for p in cls.get_attributes()}  # the parts left out (video, audio) stay None
    parts.update(tokenizer=tokenizer, image_processor=image_processor)
    kwargs = {k: v for k, v in {**settings, **overrides}.items() if k in params and k != "self" and k not in parts}
    return cls(**parts, **kwargs)


def load_processor(path: str | os.PathLike, kind: Any = "auto", *, revision: str | None = None,
                   trust_remote_code: bool = False) -> Any:
    """Load the processor of a local checkpoint or Hub id; None for ``kind="tokenizer"``.

    ``auto`` tries ``AutoProcessor`` and, when that fails (typically because a video processor needs
    torchvision), rebuilds the class the checkpoint names from its saved tokenizer and image
    processor. ``compose`` (a ProcessorRecipe or an adapter's ProcessorSpec) builds the classes named.
    """
    recipe = as_recipe(kind)
    if recipe.kind == "tokenizer":
        return None
    from transformers import AutoProcessor

    if recipe.kind == "auto":
        try:
            return AutoProcessor.from_pretrained(str(path), revision=revision, trust_remote_code=trust_remote_code)
        except (ImportError, AttributeError, ValueError, OSError, TypeError) as exc:
            if not _processor_dict(path, revision).get("processor_class"):
                raise exc
    return _rebuild(path, recipe, revision, trust_remote_code)


def _rebuild(path: str | os.PathLike, recipe: ProcessorRecipe, revision: str | None, trust_remote_code: bool) -> Any:
    from transformers import AutoImageProcessor, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), revision=revision, trust_remote_code=trust_remote_code)
    if recipe.image_processor:
        image_processor = image_processor_class(recipe.image_processor).from_pretrained(str(path), revision=revision)
    else:
        image_processor = AutoImageProcessor.from_pretrained(str(path), revision=revision,
                                                             trust_remote_code=trust_remote_code)
    return build_processor(recipe, path, tok, image_processor, revision=revision)
