"""Token-position selectors: names -> boolean masks over a padded batch.

Pure tensor code shared by the runtime, extraction and the hook reference, so every consumer agrees on
what "the last prompt token" is. Left and right padding are both handled: the last prompt token of a
row is its last non-pad position, never a pad token.
"""

from __future__ import annotations

from typing import Optional

import torch

POSITION_NAMES = ("all_prompt", "image_tokens", "text_tokens", "last_prompt_token", "generated", "image_or_prompt")


def last_real_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last attended token in each row ([B] long), for left or right padding."""
    t = attention_mask.shape[1]
    idx = torch.arange(t, device=attention_mask.device).expand_as(attention_mask)
    return torch.where(attention_mask.bool(), idx, torch.full_like(idx, -1)).max(dim=1).values.clamp(min=0)


def prompt_masks(input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor],
                 image_token_id: Optional[int]) -> dict[str, torch.Tensor]:
    """Boolean [B, T] masks for every prefill position name."""
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    real = attention_mask.bool()
    image = (input_ids == image_token_id) & real if image_token_id is not None else torch.zeros_like(real)
    last = torch.zeros_like(real)
    last[torch.arange(real.shape[0]), last_real_index(attention_mask)] = True
    has_image = image.any(dim=1, keepdim=True)
    return {
        "image_or_prompt": torch.where(has_image, image, real),  # who the prompt is about: image, else text
        "all_prompt": real,
        "image_tokens": image,
        "text_tokens": real & ~image,
        "last_prompt_token": last,
        "generated": torch.zeros_like(real),
    }


def union(masks: dict[str, torch.Tensor], names) -> torch.Tensor:
    out: Optional[torch.Tensor] = None
    for n in names:
        out = masks[n] if out is None else out | masks[n]
    assert out is not None, "no position names"  # the recipe schema requires at least one
    return out


def decode_masks(batch: int, device=None) -> dict[str, torch.Tensor]:
    """Masks for one decode step (a single new token per row): only 'generated' is set."""
    ones = torch.ones(batch, 1, dtype=torch.bool, device=device)
    zeros = torch.zeros_like(ones)
    return {"image_or_prompt": zeros, "all_prompt": zeros, "image_tokens": zeros, "text_tokens": zeros,
            "last_prompt_token": zeros, "generated": ones}
