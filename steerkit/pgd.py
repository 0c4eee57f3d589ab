"""Targeted PGD under an L-infinity budget in pixel space [0, 1] (method.md, Step 1, recall images).

The attack is model-agnostic: the caller passes ``loss_fn(images01) -> [B]``, which normalises with
the processor's mean/std (``normalize``) and returns each row's teacher-forced NLL of its target text.
Working in [0, 1] keeps epsilon meaningful ("16/255 of the pixel range") for every processor; on
normalised pixel_values the budget would have to be divided by each channel's std.

Weights stay frozen: gradients are taken with ``torch.autograd.grad`` w.r.t. the pixel tensor only,
so no parameter's ``.grad`` is ever written. Freeze the model (``requires_grad_(False)``) anyway, or
autograd keeps activations for weight gradients nobody needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from steerkit.errors import AdapterError, DataError, Problem, RecipeError, SteeringRuntimeError

LossFn = Callable[[Tensor], Tensor]


@dataclass(frozen=True, eq=False)
class PGDInfo:
    """What one attack did, per row. ``best_step``: 0 = start point, t = after t updates."""

    loss_before: Tensor  # [B] at the clean images
    loss_after: Tensor  # [B] at the returned (lowest-loss) images
    loss_final: Tensor  # [B] at the last iterate
    best_step: Tensor  # [B] int64
    final01: Tensor  # [B, ...] the last iterate (the returned images are the best iterate)
    epsilon: float
    step: float
    steps: int


def _check_args(images01: Tensor, epsilon: float, step: float, steps: int) -> None:
    if not (isinstance(images01, Tensor) and images01.is_floating_point() and images01.dim() >= 2):
        raise DataError("PGD needs a floating image tensor [B, C, H, W] with values in [0, 1]")
    if images01.numel() and not bool(((images01 >= 0) & (images01 <= 1)).all()):
        raise DataError("PGD images must lie in [0, 1] (pixel space, before normalisation)", [Problem(
            "found values outside [0, 1]", hint="divide uint8 images by 255; denormalize pixel_values first")])
    problems = []
    if not (math.isfinite(epsilon) and 0 <= epsilon <= 1):
        problems.append(Problem(f"epsilon must be in [0, 1]; got {epsilon}", key_path="epsilon"))
    if not (math.isfinite(step) and step > 0):
        problems.append(Problem(f"step must be > 0; got {step}", key_path="step"))
    if not (isinstance(steps, int) and steps >= 0):
        problems.append(Problem(f"steps must be an integer >= 0; got {steps!r}", key_path="steps"))
    if problems:
        raise RecipeError("invalid PGD settings", problems)


def _loss(loss_fn: LossFn, x: Tensor) -> Tensor:
    loss = loss_fn(x)
    if not isinstance(loss, Tensor) or loss.shape != (x.shape[0],):
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise SteeringRuntimeError("PGD loss has the wrong shape", [Problem(
            f"loss_fn must return one loss per row, shape ({x.shape[0]},); got {shape}",
            hint="reduce over tokens only, not over the batch")])
    if not bool(torch.isfinite(loss).all()):
        raise SteeringRuntimeError("PGD loss is NaN or inf", [Problem(
            "loss_fn returned a non-finite value", hint="compute the NLL in float32")])
    return loss


def pgd_linf(images01: Tensor, loss_fn: LossFn, *, epsilon: float, step: float, steps: int,
             random_start: bool = True, generator: torch.Generator | None = None) -> tuple[Tensor, PGDInfo]:
    """Minimise ``loss_fn`` per row over the set {x : |x - x0|_inf <= epsilon, 0 <= x <= 1}.

    Update: x <- clip(x - step * sign(grad), [x0 - eps, x0 + eps] and [0, 1]), from a uniform random
    start in that set (``random_start``; seeded by ``generator`` for determinism). Exactly ``steps``
    gradient evaluations plus one loss evaluation of the last iterate (and one of the clean images
    when starting at random). Rows are independent: a row's gradient does not depend on the others'
    because the loss is summed over rows before differentiating.

    Args:
        images01: [B, C, H, W] clean images in [0, 1] at the size the model sees.
        loss_fn: images01 -> [B] loss to minimise (e.g. NLL of the target continuation).
        epsilon: L-infinity budget in pixel units (16/255 in the authors' direction images).
        step: size of each signed step (2/255 in the authors' helper).
        steps: number of updates (10 in the authors' helper).

    Returns:
        (adv01, info): adv01 is the lowest-loss iterate per row (ties keep the earlier iterate).
    """
    _check_args(images01, epsilon, step, steps)
    x0 = images01.detach()
    lo, hi = (x0 - epsilon).clamp(min=0.0), (x0 + epsilon).clamp(max=1.0)
    with torch.inference_mode(False):
        x0 = x0.clone()
        lo, hi = lo.clone(), hi.clone()
        loss_before = None
        if random_start and epsilon > 0:
            with torch.no_grad():
                loss_before = _loss(loss_fn, x0).detach()
            gen_device = generator.device if generator is not None else x0.device
            u = torch.rand(x0.shape, generator=generator, device=gen_device, dtype=x0.dtype).to(x0.device)
            x = torch.minimum(torch.maximum(x0 + (2 * u - 1) * epsilon, lo), hi)
        else:
            x = x0.clone()
        best, best_loss = x.clone(), None
        best_step = torch.zeros(x0.shape[0], dtype=torch.int64, device=x0.device)
        for t in range(steps + 1):
            if t < steps:
                with torch.enable_grad():
                    xg = x.detach().requires_grad_(True)
                    loss = _loss(loss_fn, xg)
                    (grad,) = torch.autograd.grad(loss.sum(), xg)
                if not bool(torch.isfinite(grad).all()):
                    raise SteeringRuntimeError(f"PGD gradient is NaN or inf at step {t}")
            else:
                with torch.no_grad():
                    loss = _loss(loss_fn, x)
            loss = loss.detach()
            if loss_before is None:
                loss_before = loss.clone()
            if best_loss is None:
                best_loss = loss.clone()
            else:
                better = loss < best_loss
                best[better] = x[better]
                best_loss = torch.where(better, loss, best_loss)
                best_step[better] = t
            if t < steps:
                x = torch.minimum(torch.maximum(x.detach() - step * grad.sign(), lo), hi)
    assert loss_before is not None and best_loss is not None  # the loop runs at least once
    info = PGDInfo(loss_before, best_loss, loss, best_step, x.detach(), float(epsilon), float(step), steps)
    return best, info


def _channel_stats(x: Tensor, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor) -> tuple[Tensor, Tensor]:
    """Mean/std as [C, 1, 1] tensors for images [..., C, H, W]; len 1 broadcasts."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).reshape(-1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).reshape(-1, 1, 1)
    c = x.shape[-3] if x.dim() >= 3 else -1
    if m.shape[0] not in (1, c) or s.shape[0] not in (1, c) or not bool((s > 0).all()):
        raise DataError("image mean/std do not fit the images", [Problem(
            f"images have {c} channels; got mean of length {m.shape[0]} and std of length {s.shape[0]}",
            hint="std must be positive, one value per channel")])
    return m, s


def normalize(images01: Tensor, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor) -> Tensor:
    """(x - mean) / std per channel (channel axis -3): pixel space [0, 1] -> model pixel_values."""
    m, s = _channel_stats(images01, mean, std)
    return (images01 - m) / s


def denormalize(pixel_values: Tensor, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor) -> Tensor:
    """x * std + mean per channel: the inverse of ``normalize``."""
    m, s = _channel_stats(pixel_values, mean, std)
    return pixel_values * s + m


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL's output size: sides divisible by ``factor``, area in [min_pixels, max_pixels], aspect kept.

    Same arithmetic as transformers' ``qwen2_vl`` ``smart_resize``; re-implemented because importing
    that module pulls in torchvision.
    """
    if max(height, width) / min(height, width) > 200:
        raise DataError(f"image aspect ratio {max(height, width) / min(height, width):.0f} exceeds 200")
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


@dataclass(frozen=True)
class PixelSpec:
    """What an image processor does to pixels, read once so PGD can run before the processor.

    Resize (and crop) images to ``output_hw`` yourself, attack at that size, then normalise with
    ``mean``/``std``: the processor's own resize is then the identity and cannot blur the perturbation.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    size: tuple[int, int] | None = None  # fixed (H, W) after resize + crop (CLIP / LLaVA style)
    shortest_edge: int | None = None  # resize target when no crop fixes the size
    factor: int | None = None  # Qwen2-VL: patch_size * merge_size; sides are multiples of it
    min_pixels: int | None = None
    max_pixels: int | None = None

    def output_hw(self, height: int, width: int) -> tuple[int, int]:
        """(H, W) the processor produces for an input of this size."""
        if self.factor is not None and self.min_pixels is not None and self.max_pixels is not None:
            return smart_resize(height, width, self.factor, self.min_pixels, self.max_pixels)
        if self.size is not None:
            return self.size
        if self.shortest_edge is not None:
            s = self.shortest_edge
            return (s, max(1, int(width * s / height))) if height <= width else (max(1, int(height * s / width)), s)
        return (height, width)


def _field(size: Any, key: str) -> Any:
    if size is None:
        return None
    return size.get(key) if hasattr(size, "get") else getattr(size, key, None)


def pixel_spec(processor: Any) -> PixelSpec:
    """Read mean/std and output size from a transformers processor or image processor.

    Handles CLIPImageProcessor-style (``size.shortest_edge`` + ``crop_size``, or ``size.height/width``)
    and Qwen2VLImageProcessor-style (``patch_size * merge_size`` with min/max pixels, stored in
    ``size.shortest_edge/longest_edge`` since transformers 4.5x). ``do_normalize=False`` gives mean 0, std 1.
    """
    ip = getattr(processor, "image_processor", processor)
    mean, std = getattr(ip, "image_mean", None), getattr(ip, "image_std", None)
    if mean is None or std is None:
        raise AdapterError("cannot read image normalisation", [Problem(
            f"{type(ip).__name__} has no image_mean/image_std",
            hint="pass a transformers image processor (processor.image_processor)")])
    if getattr(ip, "do_normalize", True) is False:
        mean, std = (0.0,) * len(mean), (1.0,) * len(mean)
    mean_t = tuple(float(v) for v in (mean if isinstance(mean, (list, tuple)) else [mean] * 3))
    std_t = tuple(float(v) for v in (std if isinstance(std, (list, tuple)) else [std] * 3))
    size, crop = getattr(ip, "size", None), getattr(ip, "crop_size", None)
    patch, merge = getattr(ip, "patch_size", None), getattr(ip, "merge_size", None)
    if isinstance(patch, int) and isinstance(merge, int):
        lo = getattr(ip, "min_pixels", None) or _field(size, "shortest_edge") or _field(size, "min_pixels")
        hi = getattr(ip, "max_pixels", None) or _field(size, "longest_edge") or _field(size, "max_pixels")
        return PixelSpec(mean_t, std_t, factor=patch * merge, min_pixels=lo, max_pixels=hi)
    fixed = None
    if getattr(ip, "do_center_crop", False) and _field(crop, "height"):
        fixed = (int(_field(crop, "height")), int(_field(crop, "width")))
    elif _field(size, "height") and _field(size, "width"):
        fixed = (int(_field(size, "height")), int(_field(size, "width")))
    return PixelSpec(mean_t, std_t, size=fixed, shortest_edge=_field(size, "shortest_edge"))
