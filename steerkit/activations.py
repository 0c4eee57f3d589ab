"""Collect clean activations at many sites in one pass per batch, pooled over chosen positions.

The one place extraction reads the model: rows are encoded through the session (same chat template as
inference), and each row is read at its own last real prompt token (or pooled over image tokens /
the whole prompt), so padding is never read as "the last token".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Optional, Sequence

import torch
from tqdm import tqdm

from .activation_store import ActivationStore
from .data.items import ContrastItem
from .plan import SiteRef
from .positions import prompt_masks
from .runtime_nnsight import read_sites

if TYPE_CHECKING:
    from .session import ModelSession


def position_weights(inputs: dict, prompt_last: torch.Tensor, positions: str, image_token_id: Optional[int]
                     ) -> torch.Tensor:
    """[B, T] pooling weights: one-hot at the last prompt token, or uniform over a position set."""
    ids = inputs["input_ids"]
    if positions == "last_prompt_token":
        w = torch.zeros(ids.shape, dtype=torch.float32)
        w[torch.arange(ids.shape[0]), prompt_last.cpu()] = 1.0
        return w
    masks = prompt_masks(ids.cpu(), inputs["attention_mask"].cpu(), image_token_id)
    m = masks[positions].float()
    empty = m.sum(1) == 0  # e.g. image_tokens on a text-only row: fall back to the whole prompt
    m[empty] = masks["all_prompt"][empty].float()
    return m / m.sum(1, keepdim=True).clamp(min=1)


def collect(session: ModelSession, items: Sequence[ContrastItem], refs: Sequence[SiteRef], *,
            positions: str = "last_prompt_token", batch_size: int = 16,
            pixel_override: Optional[dict[int, torch.Tensor]] = None,
            desc: str = "activations", progress: bool = True, store: Optional[ActivationStore] = None
            ) -> Mapping[int, torch.Tensor]:
    """{layer: [N, D]} activations for every item (image rows and text rows batched separately).

    ``pixel_override`` maps item index -> ready ``pixel_values`` rows (e.g. PGD images) that replace
    what the processor would produce for that item's image. ``store`` decides whether the batches wait
    in memory or on disk (default: memory); on disk, each lookup of the result reads one layer back.
    """
    order = sorted(range(len(items)), key=lambda i: (items[i].image is None, i))
    sink = (store or ActivationStore("memory")).sink(desc, len(items), [r.layer for r in refs], session.dims[0])
    bar = tqdm(total=len(items), desc=desc, disable=not progress, leave=False)
    start = 0
    while start < len(order):
        has_image = items[order[start]].image is not None
        batch_idx = [i for i in order[start:start + batch_size] if (items[i].image is not None) == has_image]
        start += len(batch_idx)
        batch = session.encode([items[i].prompt for i in batch_idx], [items[i].image for i in batch_idx])
        if pixel_override is not None and has_image and all(i in pixel_override for i in batch_idx):
            batch.inputs["pixel_values"] = torch.cat([pixel_override[i] for i in batch_idx]).to(
                batch.inputs["pixel_values"].dtype)
        w = position_weights(batch.inputs, batch.prompt_last, positions, session.image_token_id)
        acts = read_sites(session.model, batch.inputs, refs, w)
        rows_at = torch.tensor(batch_idx)  # where these rows belong in the result
        for layer, a in acts.items():
            sink.add(layer, a, rows_at)
        bar.update(len(batch_idx))
    bar.close()
    return sink.finish()
