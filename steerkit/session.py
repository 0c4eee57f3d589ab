"""A loaded model with its processor, tokenizer and adapter: what every command works on.

``load_session`` is the single path from a recipe's ``model`` section (Hub id, local folder or an
embedded small model) to a ready model; tests build sessions from tiny in-memory models with
``ModelSession.from_objects``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from PIL import Image

from .adapter import Adapter, adapter_for_architecture, get_adapter
from .inputs import EncodedBatch, encode


@dataclass
class ModelSession:
    """A loaded model with its processor, tokenizer and adapter (the argument of every lower-layer step)."""

    model: Any  # a transformers PreTrainedModel (nn.Module), or an nnsight TransformersModel for remote runs
    processor: Any
    tokenizer: Any
    adapter: Adapter
    model_id: str = ""
    revision: Optional[str] = None
    remote: bool | str = False  # the model runs on an nnsight remote backend (steerkit.remote)

    @classmethod
    def from_objects(cls, model, processor, tokenizer, adapter: Optional[Adapter] = None, model_id: str = ""):
        adapter = adapter or adapter_for_architecture(architecture_of(model))
        return cls(model.eval(), processor, tokenizer, adapter, model_id)

    @property
    def architecture(self) -> str:
        return architecture_of(self.model)

    @property
    def dims(self) -> tuple[int, int]:
        return self.adapter.dims(self.model.config)

    @property
    def image_token_id(self) -> Optional[int]:
        return self.adapter.image_token_id(self.model.config, self.tokenizer)

    @property
    def device(self) -> torch.device:
        if self.remote:  # inputs travel with the request; the server places them
            return torch.device("cpu")
        return next(self.model.parameters()).device

    def encode(self, prompts: Sequence[str], images: Sequence[Optional[Image.Image]],
               answers: Optional[Sequence[str]] = None, padding_side: str = "left",
               histories: Optional[Sequence[Sequence[tuple[str, str]]]] = None,
               prefixes: Optional[Sequence[str]] = None) -> EncodedBatch:
        batch = encode(self.processor, self.tokenizer, self.adapter.prompt, prompts, images, answers,
                       padding_side=padding_side, histories=histories, prefixes=prefixes)
        dev = self.device
        batch.inputs = {k: v.to(dev) for k, v in batch.inputs.items()}
        if batch.inputs.get("pixel_values") is not None:
            batch.inputs["pixel_values"] = batch.inputs["pixel_values"].to(self.model.dtype)
        return batch

    def decode_new(self, sequences: torch.Tensor, prompt_len: int) -> list[str]:
        return self.tokenizer.batch_decode(sequences[:, prompt_len:], skip_special_tokens=True)

    def generate(self, prompts: Sequence[str], images: Sequence[Optional[Image.Image]], max_new_tokens: int,
                 steerer: Any = None, *, histories: Optional[Sequence[Sequence[tuple[str, str]]]] = None,
                 prefixes: Optional[Sequence[str]] = None) -> list[str]:
        """Greedy answers for a batch (steered when a Steerer is given)."""
        batch = self.encode(prompts, images, histories=histories, prefixes=prefixes)
        pad = self.tokenizer.pad_token_id
        gk = dict(pad_token_id=pad if pad is not None else self.tokenizer.eos_token_id)
        if steerer is None and self.remote:
            from .runtime_nnsight import generate_unsteered

            out = generate_unsteered(self.model, batch.inputs, max_new_tokens, self.remote, **gk)
        elif steerer is None:
            with torch.no_grad():
                out = self.model.generate(**batch.inputs, max_new_tokens=max_new_tokens, do_sample=False, **gk)
        else:
            out = steerer.generate(batch.inputs, max_new_tokens, **gk)
        return [t.strip() for t in self.decode_new(out, batch.inputs["input_ids"].shape[1])]


def architecture_of(model_or_config: Any) -> str:
    config = getattr(model_or_config, "config", model_or_config)
    archs = getattr(config, "architectures", None)
    if archs:
        return archs[0]
    return type(model_or_config).__name__


def resolve_model_ref(spec: Any, base_dir: Optional[Path] = None) -> str:
    """What to load for a recipe's model id: an embedded model's cached folder (trained on first use), a
    local folder (relative to the recipe's folder when it exists there), or the Hub id as given."""
    model_id = spec.id
    if model_id.startswith("embedded:"):
        from .models.embedded import ensure_embedded

        return str(ensure_embedded(model_id.split(":", 1)[1], world_seed=spec.world.seed,
                                   n_profiles=spec.world.n_profiles))
    local = Path(model_id).expanduser()
    if not local.is_absolute() and base_dir is not None and (base_dir / local).exists():
        local = base_dir / local
    return str(local) if local.exists() else model_id


def adapter_choice(spec: Any, base_dir: Optional[Path] = None) -> tuple[Optional[Adapter], Any, Optional[str]]:
    """The recipe's adapter (None for "auto": chosen from the loaded architecture; a name, or a YAML path
    relative to ``base_dir``), its processor section and its loader, as ``load_pretrained`` /
    ``load_preprocessors`` take them."""
    adapter = None if spec.adapter == "auto" else get_adapter(spec.adapter, base_dir)
    return adapter, adapter.processor if adapter else "auto", adapter.loader if adapter else None


def load_session(spec: Any, base_dir: Optional[Path] = None) -> ModelSession:
    """Load the model a recipe names: 'embedded:<name>', a local folder, or a Hub id."""
    from .models.loading import load_pretrained

    model_id = spec.id
    model_id_resolved = resolve_model_ref(spec, base_dir)
    adapter, kind, loader = adapter_choice(spec, base_dir)
    dtype = None if spec.dtype == "auto" else getattr(torch, spec.dtype)
    model, processor, tokenizer = load_pretrained(
        model_id_resolved, revision=spec.revision, dtype=dtype, device_map=spec.device_map,
        trust_remote_code=spec.trust_remote_code, processor_kind=kind, loader=loader)
    adapter = adapter or adapter_for_architecture(architecture_of(model))
    return ModelSession(model.eval(), processor, tokenizer, adapter, model_id, spec.revision)
