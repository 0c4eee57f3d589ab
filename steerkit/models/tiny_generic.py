"""Tiny random models built from an adapter file alone: the generic half of the tiny-model zoo.

Why: adding a family must need no Python, also for its tests. An adapter's optional ``tiny:`` section
says, as data, what the family needs beyond a generic shrink: the special tokens its processor and
chat template use, the config keys holding their ids, any config values the shrink cannot guess
(e.g. Qwen's mRoPE split) and the image processor's size. Everything else comes from the real
transformers config class of the architecture: its defaults, shrunk to a 2-layer decoder of hidden 64
and a 2-layer vision tower of hidden 32 on 32x32 images, then built with random weights. The processor
is the adapter's own ``processor:`` recipe, so the test also proves that recipe.
"""

from __future__ import annotations

import copy
from typing import Any

# Generic shrink: applied to the keys a config actually has (decoder under text_config, tower under
# vision_config). Per-layer lists sized for the full model (layer_types) are dropped so the config
# class rebuilds them for 2 layers.
TEXT_SHRINK = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
               "num_key_value_heads": 2, "head_dim": 16, "max_window_layers": 2}
VISION_SHRINK = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                 "depth": 2, "num_heads": 2, "image_size": 32, "patch_size": 8, "head_dim": 16, "embed_dim": 32,
                 "projection_dim": 32, "out_hidden_size": 64}
DROPPED = ("layer_types",)


class TinyUnavailable(Exception):
    """This adapter's family cannot be built as a tiny model from data; the message says why."""


def architecture_class_and_config(architecture: str) -> tuple[type, type]:
    """The transformers model class and its config class for ``config.architectures[0]``."""
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
    )

    model_type = next((t for mapping in (MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES, MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
                       for t, a in mapping.items() if a == architecture), None)
    if model_type is None:
        raise TinyUnavailable(f"transformers has no image-text-to-text or causal-LM model named {architecture}")
    try:
        return getattr(transformers, architecture), CONFIG_MAPPING[model_type]
    except ImportError as exc:  # a model transformers declares for a missing backend (timm, torchvision)
        raise TinyUnavailable(f"{architecture} cannot be built here: {str(exc).strip().splitlines()[0]}") from None


def _shrink(section: dict, table: dict, tokenizer: Any = None) -> dict:
    out = {k: v for k, v in section.items() if k not in DROPPED}
    for key, value in table.items():
        if key in out:
            old = out[key]
            out[key] = [value] * len(old) if isinstance(old, (list, tuple)) else value
    if tokenizer is not None:
        for key, value in (("vocab_size", len(tokenizer)), ("bos_token_id", tokenizer.bos_token_id),
                           ("eos_token_id", tokenizer.eos_token_id), ("pad_token_id", tokenizer.pad_token_id)):
            if key in out:
                out[key] = value
    return out


def _set(doc: dict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = doc
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def tiny_config(architecture: str, tiny: Any, tokenizer: Any) -> Any:
    """The architecture's default config, shrunk, with the adapter's ``tiny.config`` and token ids applied."""
    _, config_cls = architecture_class_and_config(architecture)
    doc = config_cls().to_dict()
    doc.pop("transformers_version", None)
    if isinstance(doc.get("text_config"), dict):
        doc["text_config"] = _shrink(doc["text_config"], TEXT_SHRINK, tokenizer)
        doc = _shrink(doc, {}, tokenizer) if "vocab_size" in doc else doc
    else:  # a text-only config: the decoder keys sit at the top
        doc = _shrink(doc, TEXT_SHRINK, tokenizer)
    if isinstance(doc.get("vision_config"), dict):
        doc["vision_config"] = _shrink(doc["vision_config"], VISION_SHRINK)
    for key, value in tiny.config.items():
        _set(doc, key, copy.deepcopy(value))
    for key, name in tiny.token_ids.items():
        _set(doc, key, int(getattr(tokenizer, f"{name}_id")))
    doc["architectures"] = [architecture]
    return config_cls(**doc)


def build_from_adapter(adapter: Any, architecture: str) -> tuple[Any, Any, Any]:
    """``(model, processor, tokenizer)`` of a tiny random model of ``architecture``, from ``adapter`` alone."""
    from .processors import as_recipe, build_processor, image_processor_class
    from .zoo import chat_template, make_tokenizer

    tiny = adapter.tiny
    if tiny is None:
        raise TinyUnavailable(f"adapter '{adapter.name}' has no tiny: section (see docs/adapters.md)")
    model_cls, _ = architecture_class_and_config(architecture)
    template = chat_template(**tiny.chat_template.model_dump()) if tiny.chat_template else None
    specials = tuple(dict.fromkeys([*tiny.tokens.values(), *tiny.special_tokens]))
    tok = make_tokenizer(specials, dict(tiny.tokens), add_bos=tiny.add_bos, eos=tiny.eos or "</s>", template=template)
    processor = None
    if adapter.multimodal:
        recipe = as_recipe(adapter.processor)
        if recipe.kind in ("auto", "tokenizer") or not recipe.image_processor:
            raise TinyUnavailable(f"adapter '{adapter.name}' does not name its processor class and image processor "
                                  "(processor: {class: ..., image_processor: ...}), so no tiny processor can be built")
        image_processor = image_processor_class(recipe.image_processor)(**tiny.image_processor)
        processor = build_processor(recipe, None, tok, image_processor, chat_template=template, **tiny.processor)
        tok = processor.tokenizer  # a processor may add tokens; the vocab is sized after it
    config = tiny_config(architecture, tiny, tok)
    return model_cls(config), processor, tok
