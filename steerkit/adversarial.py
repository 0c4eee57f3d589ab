"""PGD on a real model: images -> pixel_values that make the model produce a target continuation.

The attack runs in [0, 1] pixel space at the size the model sees (``pgd.pixel_spec``), and every
iterate is turned into ``pixel_values`` differentiably: CLIP-style processors just normalise; Qwen-VL
processors also cut the image into merged patches (``qwen_patchify``, checked against the processor in
the tests). Weights are frozen for the duration and restored after.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from PIL import Image

from .data.items import ContrastItem
from .pgd import normalize, pgd_linf, pixel_spec

if TYPE_CHECKING:
    from .session import ModelSession


def qwen_patchify(images_norm: torch.Tensor, patch: int, merge: int, temporal: int) -> torch.Tensor:
    """[B, C, H, W] normalised images -> Qwen2-VL ``pixel_values`` rows, in the processor's layout."""
    b, c, h, w = images_norm.shape
    gh, gw = h // patch, w // patch
    x = images_norm[:, None].expand(b, temporal, c, h, w)  # a still image is repeated along time
    x = x.reshape(b, 1, temporal, c, gh // merge, merge, patch, gw // merge, merge, patch)
    x = x.permute(0, 1, 4, 7, 5, 8, 3, 2, 6, 9)
    return x.reshape(b * gh * gw, c * temporal * patch * patch)


class PixelPipe:
    """PIL images <-> [0,1] tensors at model size, and [0,1] tensors -> pixel_values, for one processor."""

    def __init__(self, processor):
        self.spec = pixel_spec(processor)
        self.ip = getattr(processor, "image_processor", processor)

    def to01(self, images: Sequence[Image.Image]) -> torch.Tensor:
        out = []
        for im in images:
            h, w = self.spec.output_hw(im.height, im.width)
            arr = np.asarray(im.convert("RGB").resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
            out.append(torch.from_numpy(arr).permute(2, 0, 1))
        return torch.stack(out)

    def pixel_values(self, x01: torch.Tensor) -> torch.Tensor:
        norm = normalize(x01, self.spec.mean, self.spec.std)
        if self.spec.factor is not None:
            return qwen_patchify(norm, self.ip.patch_size, self.ip.merge_size, self.ip.temporal_patch_size)
        return norm

    def rows_per_image(self, x01: torch.Tensor) -> int:
        if self.spec.factor is None:
            return 1
        return (x01.shape[-2] // self.ip.patch_size) * (x01.shape[-1] // self.ip.patch_size)


@contextlib.contextmanager
def frozen(model: torch.nn.Module):
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)


def target_nll(session, items: Sequence[ContrastItem], pipe: PixelPipe, x01: torch.Tensor) -> torch.Tensor:
    """Per-row mean NLL of each item's target given its prompt and the image x01 (differentiable in x01)."""
    batch = session.encode([i.prompt for i in items], [i.image for i in items], [i.target or "" for i in items],
                           padding_side="right")
    inputs = dict(batch.inputs)
    inputs["pixel_values"] = pipe.pixel_values(x01).to(session.model.dtype)
    logits = session.model(**inputs).logits[:, :-1].float()
    labels = batch.labels[:, 1:]
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels.clamp(min=0), reduction="none")
    mask = (labels != -100).float()
    return (nll * mask).sum(1) / mask.sum(1).clamp(min=1)


def attack(session: ModelSession, items: Sequence[ContrastItem], spec, *, batch_size: int = 8, seed: int = 0,
           progress: bool = True) -> tuple[dict[int, torch.Tensor], dict]:
    """Targeted PGD on every item that has an image. Returns ({item index: pixel_values rows}, report)."""
    from tqdm import tqdm

    pipe = PixelPipe(session.processor)
    gen = torch.Generator().manual_seed(seed)
    idx = [i for i, it in enumerate(items) if it.image is not None]
    if spec.target is not None:
        items = [ContrastItem(it.prompt, it.image, spec.target, it.id, it.source) for it in items]
    override: dict[int, torch.Tensor] = {}
    before, after = [], []
    with frozen(session.model):
        for s in tqdm(range(0, len(idx), batch_size), desc="PGD", disable=not progress, leave=False):
            chunk = idx[s:s + batch_size]
            sub = [items[i] for i in chunk]
            x01 = pipe.to01([it.image for it in sub if it.image is not None])  # recall rows all have images
            adv, info = pgd_linf(x01, lambda x: target_nll(session, sub, pipe, x), epsilon=spec.epsilon,
                                 step=spec.step, steps=spec.steps, random_start=spec.random_start, generator=gen)
            rows = pipe.pixel_values(adv).detach()
            k = pipe.rows_per_image(adv)
            for j, i in enumerate(chunk):
                override[i] = rows[j * k:(j + 1) * k]
            before += info.loss_before.tolist()
            after += info.loss_after.tolist()
    report = {"n": len(idx), "epsilon": spec.epsilon, "step": spec.step, "steps": spec.steps,
              "target_nll_before": float(np.mean(before)) if before else None,
              "target_nll_after": float(np.mean(after)) if after else None}
    return override, report
