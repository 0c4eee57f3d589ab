"""Processors that work without torchvision, and a save/rebuild path for them.

Why: torchvision cannot be installed next to the CPU torch this project pins (its ABI breaks every
transformers model import), and transformers 5 builds video processors only with torchvision. The
Qwen2-VL, Qwen2.5-VL and SmolVLM processors therefore cannot be constructed, saved or loaded by
``AutoProcessor`` as shipped, although images never need the video half. The ``*NoVideoProcessor``
classes accept ``video_processor=None``; ``save_processor`` writes the same files a Hub checkpoint
holds (tokenizer, image processor, ``processor_config.json``, ``chat_template.jinja``); and
``load_processor`` falls back to rebuilding the processor from the saved tokenizer + image
processor when ``AutoProcessor.from_pretrained`` fails for lack of torchvision.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

from transformers import ProcessorMixin, Qwen2_5_VLProcessor, Qwen2VLProcessor, SmolVLMProcessor

PROCESSOR_KINDS = ("auto", "qwen2_vl_no_video", "qwen2_5_vl_no_video", "smolvlm_no_video", "tokenizer")


class _NoVideoMixin:
    """Allows ``video_processor=None`` and saves in the stock layout (loadable by the stock class)."""

    def check_argument_for_proper_class(self, name, arg):
        return None if arg is None else super().check_argument_for_proper_class(name, arg)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.pop("video_processor", None)
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
                              "smolvlm_no_video": SmolVLMNoVideoProcessor}
_KIND_OF_STOCK = {cls._stock_class().__name__: kind for kind, cls in _NO_VIDEO.items()}


def no_video_kind(processor_class: str | None) -> str | None:
    """The ``*_no_video`` kind that rebuilds a stock processor class, or None if none is needed."""
    return _KIND_OF_STOCK.get(processor_class or "")


def _save_parts(processor: Any, out: Path) -> list[str]:
    """Save tokenizer, image processor, chat template and processor_config.json one by one."""
    out.mkdir(parents=True, exist_ok=True)
    stock = processor._stock_class().__name__ if isinstance(processor, _NoVideoMixin) else type(processor).__name__
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


def build_processor(kind: str, path_or_none: str | os.PathLike | None, tokenizer: Any, image_processor: Any,
                    *, revision: str | None = None, **overrides: Any) -> Any:
    """Assemble a processor of ``kind`` from its parts, reading its settings from ``path_or_none``.

    Settings (``image_seq_len``, ``chat_template``, ...) come from the checkpoint's
    ``processor_config.json`` when a path is given, then ``overrides``. ``kind="tokenizer"`` means
    the family has no processor and returns None; ``kind="auto"`` uses the class the checkpoint names.
    """
    if kind == "tokenizer":
        return None
    settings = _processor_dict(path_or_none, revision) if path_or_none is not None else {}
    if kind in _NO_VIDEO:
        cls = _NO_VIDEO[kind]
    elif kind == "auto":
        import transformers

        name = settings.get("processor_class")
        cls = getattr(transformers, name, None) if name else None
        if cls is None:
            raise ValueError(f"cannot tell which processor class to build for {path_or_none!r}: no "
                             "processor_config.json names one; pass a *_no_video kind or a checkpoint path")
        kind_nv = no_video_kind(name)
        cls = _NO_VIDEO[kind_nv] if kind_nv else cls
    else:
        raise ValueError(f"unknown processor kind '{kind}'; choose one of: {', '.join(PROCESSOR_KINDS)}")
    params = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in {**settings, **overrides}.items()
              if k in params and k not in ("self", "tokenizer", "image_processor", "video_processor")}
    parts: dict[str, Any] = {"tokenizer": tokenizer, "image_processor": image_processor}
    if "video_processor" in params:
        parts["video_processor"] = None
    return cls(**parts, **kwargs)


def load_processor(path: str | os.PathLike, kind: str = "auto", *, revision: str | None = None,
                   trust_remote_code: bool = False) -> Any:
    """Load the processor of a local checkpoint or Hub id; None for ``kind="tokenizer"``.

    ``auto`` tries ``AutoProcessor`` and, when that fails because a video processor needs
    torchvision, rebuilds the no-video variant from the saved tokenizer and image processor.
    """
    if kind == "tokenizer":
        return None
    if kind not in PROCESSOR_KINDS:
        raise ValueError(f"unknown processor kind '{kind}'; choose one of: {', '.join(PROCESSOR_KINDS)}")
    from transformers import AutoProcessor

    if kind == "auto":
        try:
            return AutoProcessor.from_pretrained(str(path), revision=revision, trust_remote_code=trust_remote_code)
        except (ImportError, AttributeError, ValueError, OSError, TypeError) as exc:
            kind = no_video_kind(_processor_dict(path, revision).get("processor_class")) or ""
            if not kind:
                raise exc
    return _rebuild(path, kind, revision, trust_remote_code)


def _rebuild(path: str | os.PathLike, kind: str, revision: str | None, trust_remote_code: bool) -> Any:
    from transformers import AutoImageProcessor, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), revision=revision, trust_remote_code=trust_remote_code)
    image_processor = AutoImageProcessor.from_pretrained(str(path), revision=revision,
                                                         trust_remote_code=trust_remote_code)
    return build_processor(kind, path, tok, image_processor, revision=revision)
