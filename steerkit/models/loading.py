"""The one path from a user's Hub id or local directory to ``(model, processor, tokenizer)``.

Why one path: tests make Hub-like checkpoints with ``zoo.save_tiny`` and load them here, so the code a
real model id takes is the code the tests run. User mistakes (a typo in a path, a folder without
``config.json``, a text-only model loaded as a VLM, an unreachable Hub id) become ``SteerkitError``s
that name the input and the fix, never a raw traceback. Remote code stays off unless asked for.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn, Optional, Union

import torch

from ..errors import AdapterError, DataError, Problem, RecipeError
from .processors import PROCESSOR_KINDS, ProcessorSpecError, as_recipe, load_processor

LOADERS = ("image_text_to_text", "causal_lm")
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "auto": "auto"}


def architecture_of(model_or_config: Any) -> str:
    """``config.architectures[0]``, falling back to the model's class name (a model built in code has none)."""
    config = getattr(model_or_config, "config", model_or_config)
    archs = getattr(config, "architectures", None)
    if archs:
        return str(archs[0])
    return type(model_or_config).__name__


def _fail(summary: str, message: str, hint: str, code: str, key: str = "model.id",
          cls: type = DataError) -> NoReturn:
    raise cls(summary, [Problem(message, None, None, None, key, hint, code)]) from None


def _looks_local(ref: str) -> bool:
    """A path the user meant as a folder (a Hub id is 'name' or 'org/name', never './x', '/x', 'a/b/c')."""
    return (os.path.isabs(ref) or ref.startswith((".", "~")) or ref.count("/") > 1 or "\\" in ref
            or os.path.exists(ref))


def check_source(ref: Union[str, os.PathLike]) -> str:
    """Validate a local checkpoint folder (Hub ids pass through); return the reference as a string."""
    ref = str(ref)
    if not ref.strip():
        _fail("no model given", "model id is empty", "set model.id to a Hub id or a local checkpoint folder",
              "SK701")
    if not _looks_local(ref):
        return ref
    path = Path(ref).expanduser()
    if not path.exists():
        _fail(f"model folder not found: {ref}", f"'{ref}' does not exist (looked for {path.resolve()})",
              "check the path (relative paths are taken from the current directory), or give a Hub id "
              "like 'llava-hf/llava-1.5-7b-hf'", "SK701")
    if not path.is_dir():
        _fail(f"not a model folder: {path}", f"'{path}' is a file, not a checkpoint folder",
              "point at the folder holding config.json and the weights (what save_pretrained writes)", "SK702")
    if not (path / "config.json").is_file():
        _fail(f"no config.json in {path}", f"'{path}' has no config.json, so it is not a transformers checkpoint",
              "point at the folder that save_pretrained wrote (it holds config.json and *.safetensors); "
              "download a Hub model with `huggingface-cli download ORG/NAME --local-dir DIR`", "SK702")
    return str(path)


def _dtype(dtype: Any) -> Any:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    _fail(f"unknown dtype '{dtype}'", f"dtype '{dtype}' is not supported",
          f"use one of: {', '.join(_DTYPES)}", "SK703", key="model.dtype", cls=RecipeError)


def remote_code_notice(ref: str, revision: Optional[str]) -> str:
    """What ``trust_remote_code=True`` is about to run, said before transformers imports any of it (#18)."""
    path = Path(ref)
    if path.is_dir():
        files = sorted(p.name for p in path.glob("*.py"))[:20]
        auto_map: dict = {}
        try:
            from ..bounded_io import read_bounded

            auto_map = json.loads(read_bounded(path / "config.json", 1 << 20)).get("auto_map") or {}
        except Exception:  # noqa: BLE001 - only a notice; loading reports a bad config itself
            pass
        named = ", ".join(f"{k} -> {v}" for k, v in list(auto_map.items())[:10]) if isinstance(auto_map, dict) else ""
        return (f"warning: model.trust_remote_code is true: transformers may import and run the Python files "
                f"in {path} ({', '.join(files) or 'none found'})"
                + (f"; config.json auto_map: {named}" if named else ""))
    pinned = f"revision {revision}" if revision else "its latest revision (unpinned: set model.revision)"
    return (f"warning: model.trust_remote_code is true: transformers may download and run the Python files of "
            f"the Hub repository {ref} at {pinned} that its config.json auto_map names")


def _load_config(ref: str, revision: Optional[str], trust_remote_code: bool):
    from transformers import AutoConfig

    if type(trust_remote_code) is not bool:  # a security switch: "on", 1 or "false" (truthy!) are refused
        _fail("trust_remote_code must be True or False", f"got {trust_remote_code!r}",
              "pass the boolean True only if you trust the model's code", "SK711", key="model.trust_remote_code",
              cls=RecipeError)
    if trust_remote_code:
        print(remote_code_notice(ref, revision), file=sys.stderr, flush=True)
    try:
        return AutoConfig.from_pretrained(ref, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:
        text = str(exc)
        if "trust_remote_code" in text:
            _fail(f"{ref} needs its own code to load", f"'{ref}' ships custom modelling code",
                  "set model.trust_remote_code: true only if you trust that repository's code", "SK704")
        if "model_type" in text or isinstance(exc, (KeyError, ValueError)):
            _fail(f"{ref} is not a model this transformers can load", text.splitlines()[0],
                  "check the checkpoint's config.json (model_type) or upgrade transformers", "SK705")
        reason = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        _fail(f"cannot find model '{ref}'",
              f"'{ref}' is not a local folder and could not be fetched from the Hugging Face Hub ({reason})",
              "check the spelling of the Hub id and the revision, your network and HF_HUB_OFFLINE, or "
              "download it first with `huggingface-cli download ORG/NAME --local-dir DIR` and pass DIR", "SK706")


def _pick_loader(config: Any) -> tuple[str, Any]:
    """(loader, processor recipe) for a config: from the adapter serving it, else from the Auto mappings."""
    from ..adapter import registry

    reg = registry()
    name = reg.by_arch.get(architecture_of(config))
    if name is not None:
        adapter = reg.adapters[name][0]
        return adapter.loader, adapter.processor
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    if config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        return "image_text_to_text", "auto"
    return "causal_lm", "tokenizer"


def load_pretrained(model_id_or_path: Union[str, os.PathLike], *, revision: Optional[str] = None,
                    dtype: Any = None, device_map: Any = None, trust_remote_code: bool = False,
                    processor_kind: Any = "auto", loader: Optional[str] = "image_text_to_text"):
    """Load ``(model, processor_or_None, tokenizer)``; the model is in eval mode.

    ``loader`` picks the Auto class (``None``/"auto": from the adapter serving the checkpoint's
    architecture, else from the config). ``processor_kind`` is a kind name or an adapter's ``processor``
    section; "tokenizer" (and every causal-LM load) returns no processor. The tokenizer is the processor's
    own when there is one, so both see the same special tokens.
    """
    ref = check_source(model_id_or_path)
    torch_dtype = _dtype(dtype)
    _check_kind(processor_kind)
    config = _load_config(ref, revision, trust_remote_code)
    if loader in (None, "auto"):
        loader, auto_kind = _pick_loader(config)
        processor_kind = auto_kind if _kind_name(processor_kind) == "auto" else processor_kind
    if loader not in LOADERS:
        _fail(f"unknown loader '{loader}'", f"loader '{loader}' is not known", f"use one of: {', '.join(LOADERS)}",
              "SK707", key="loader", cls=AdapterError)
    model = _load_model(ref, loader, config, revision, torch_dtype, device_map, trust_remote_code)
    processor, tokenizer = _load_preprocessors(ref, loader, processor_kind, revision, trust_remote_code)
    return model.eval(), processor, tokenizer


def load_preprocessors(model_id_or_path: Union[str, os.PathLike], *, revision: Optional[str] = None,
                       trust_remote_code: bool = False, processor_kind: Any = "auto",
                       loader: Optional[str] = "image_text_to_text") -> tuple[Any, Any]:
    """``(processor_or_None, tokenizer)`` of a checkpoint without loading its weights (for a model that
    runs elsewhere, e.g. on an NDIF server). Arguments as in ``load_pretrained``."""
    ref = check_source(model_id_or_path)
    _check_kind(processor_kind)
    config = _load_config(ref, revision, trust_remote_code)
    if loader in (None, "auto"):
        loader, auto_kind = _pick_loader(config)
        processor_kind = auto_kind if _kind_name(processor_kind) == "auto" else processor_kind
    return _load_preprocessors(ref, loader, processor_kind, revision, trust_remote_code)


def _kind_name(kind: Any) -> str:
    return kind if isinstance(kind, str) else kind.kind


def _check_kind(kind: Any) -> None:
    try:
        as_recipe(kind)
    except ProcessorSpecError as exc:
        _fail(f"unknown processor kind '{_kind_name(kind)}'", f"processor setting not usable: {exc}",
              f"use one of: {', '.join(PROCESSOR_KINDS)}",
              "SK707", key="processor.kind", cls=AdapterError)


def _first_line(exc: BaseException) -> str:
    """The first non-empty line of a message: transformers' backend errors start with a newline."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else "(no message)"


PROCESSOR_HINT = ("name the processor in the adapter as data: processor: {class: <transformers processor class>, "
                  "image_processor: <its *ImageProcessorPil class>} builds it without torchvision (see "
                  "docs/adapters.md, 'Processor settings'); the checkpoint also needs its tokenizer and image "
                  "processor files")


def _load_preprocessors(ref: str, loader: str, processor_kind: Any, revision, trust_remote_code: bool):
    processor = None
    if loader == "image_text_to_text" and _kind_name(processor_kind) != "tokenizer":
        try:
            processor = load_processor(ref, processor_kind, revision=revision, trust_remote_code=trust_remote_code)
        except Exception as exc:  # noqa: BLE001 - any failure building a processor is a wrong adapter setting
            _fail(f"cannot load the processor of {ref}", f"{type(exc).__name__}: {_first_line(exc)}",
                  PROCESSOR_HINT, "SK708", key="processor", cls=AdapterError)
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is None:
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(ref, revision=revision, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as exc:
            _fail(f"cannot load the tokenizer of {ref}", str(exc).splitlines()[0],
                  "save the tokenizer next to the model (tokenizer.save_pretrained(DIR))", "SK708")
    return processor, tokenizer


def _load_model(ref: str, loader: str, config: Any, revision, dtype, device_map, trust_remote_code: bool):
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    auto = AutoModelForImageTextToText if loader == "image_text_to_text" else AutoModelForCausalLM
    kwargs: dict[str, Any] = dict(revision=revision, trust_remote_code=trust_remote_code)
    if dtype is not None:
        kwargs["dtype"] = dtype
    if device_map is not None:
        kwargs["device_map"] = device_map
    try:
        return auto.from_pretrained(ref, **kwargs)
    except ValueError as exc:
        if "Unrecognized configuration class" not in str(exc):
            raise
        other = "causal_lm" if loader == "image_text_to_text" else "image_text_to_text"
        _fail(f"{ref} cannot be loaded with the {loader} loader",
              f"{architecture_of(config)} ({config.model_type}) is not an {auto.__name__} model",
              f"use loader '{other}' (an adapter's loader:, or load_pretrained(..., loader='{other}'))",
              "SK709", key="loader", cls=AdapterError)
