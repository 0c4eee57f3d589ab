"""Erasure directions from contrast activations (method.md, Step 1): pure tensor math.

A direction method maps two activation matrices read at one site and layer, ``recall`` [N1, d]
(the model recalls / complies) and ``erasure`` [N2, d] (the model withholds / refuses), to one
d-vector r. Sign convention, fixed once for the whole toolkit: **r points toward recall**, so
unlearning steers with a negative strength (method.md). Recipes select a method by its name in
``DIRECTION_METHODS``.

Why float64: per-layer means over thousands of fp16/bf16 rows lose digits in low precision, and the
difference of two close means cancels the leading ones. We accumulate in float64 and return float32,
the dtype bundles store. This module never loads a model and never imports nnsight.
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch
from torch import Tensor

from steerkit.errors import DataError, Problem, RecipeError, choices_hint

DirectionMethod = Callable[[Tensor, Tensor], Tensor]


def as_rows64(name: str, x: Tensor, d: int | None = None, *, allow_empty: bool = False) -> Tensor:
    """Validate an activation matrix [N, d] and return it as float64 on its device.

    Shared by ``directions`` and ``gates``: every failure names the offending input, so a caller
    that collected activations for the wrong layer or an empty split gets a readable error.
    """
    problems = []
    if not isinstance(x, Tensor) or x.dim() != 2:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        problems.append(Problem(f"{name} must be a 2-D tensor [rows, hidden]; got {shape}"))
    else:
        if x.shape[0] == 0 and not allow_empty:
            problems.append(Problem(f"{name} has no rows", hint="check that the split is not empty"))
        if d is not None and x.shape[1] != d:
            problems.append(Problem(f"{name} has hidden size {x.shape[1]}, expected {d}",
                                    hint="activations of both sides must come from the same site"))
        if not x.is_floating_point():
            problems.append(Problem(f"{name} has dtype {x.dtype}; expected a real floating tensor"))
        elif x.numel() and not bool(torch.isfinite(x).all()):
            problems.append(Problem(f"{name} contains NaN or inf",
                                    hint="the model overflowed; read activations in float32 or bfloat16"))
    if problems:
        raise DataError(f"invalid activations: {name}", problems)
    return x.detach().to(torch.float64)


def _means(recall: Tensor, erasure: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r = as_rows64("recall", recall)
    e = as_rows64("erasure", erasure, r.shape[1])
    return r, e, r.mean(0), e.mean(0)


def mean_diff(recall: Tensor, erasure: Tensor) -> Tensor:
    """Difference of means, recall minus erasure: the paper's r_l (no PCA, no normalisation).

    Args:
        recall: [N1, d] activations where the model recalls / complies.
        erasure: [N2, d] activations where the model withholds / refuses.

    Returns:
        [d] float32; swapping the sides flips the sign exactly, row order does not matter.
    """
    _, _, mr, me = _means(recall, erasure)
    return (mr - me).to(torch.float32)


def mean_diff_unit(recall: Tensor, erasure: Tensor) -> Tensor:
    """``mean_diff`` scaled to unit L2 norm, so the strength alone sets the step size."""
    _, _, mr, me = _means(recall, erasure)
    r = mr - me
    n = torch.linalg.vector_norm(r)
    if n == 0:
        raise DataError("recall and erasure have identical means; the direction is undefined")
    return (r / n).to(torch.float32)


def mean_diff_normalized(recall: Tensor, erasure: Tensor) -> Tensor:
    """Unit direction scaled by the mean residual norm of all contrast rows at this layer.

    Why: residual norms grow with depth, so a fixed strength means a different relative push at each
    layer; with this scaling strength 0.1 is "10 % of a typical activation" at every layer, which
    helps the one-lambda-per-model setting. (A unit vector scaled by the mean projection gap along
    itself is exactly ``mean_diff`` again, since that gap equals ||r||; so that variant is not a
    separate method.)
    """
    r64, e64, mr, me = _means(recall, erasure)
    r = mr - me
    n = torch.linalg.vector_norm(r)
    if n == 0:
        raise DataError("recall and erasure have identical means; the direction is undefined")
    scale = torch.cat([r64, e64]).norm(dim=1).mean()
    return (r / n * scale).to(torch.float32)


DIRECTION_METHODS: dict[str, DirectionMethod] = {
    "mean_diff": mean_diff,
    "mean_diff_unit": mean_diff_unit,
    "mean_diff_normalized": mean_diff_normalized,
}


def get_direction_method(name: str) -> DirectionMethod:
    """Look a method up by its recipe name; unknown names raise with "did you mean" and the choices."""
    try:
        return DIRECTION_METHODS[name]
    except KeyError:
        raise RecipeError(
            "unknown direction method",
            [Problem(f"unknown value {name!r}", key_path="direction.method", code="SK102",
                     hint=choices_hint(name, DIRECTION_METHODS))],
        ) from None


def compute_directions(
    method: str | DirectionMethod,
    recall: Mapping[int, Tensor],
    erasure: Mapping[int, Tensor],
) -> dict[int, Tensor]:
    """Apply one direction method layer by layer: {layer: [N1, d]}, {layer: [N2, d]} -> {layer: [d]}.

    Both mappings must hold the same layers; a mismatch is reported in full rather than silently
    dropping layers (a missing layer would otherwise steer nothing there without any warning).
    """
    fn = get_direction_method(method) if isinstance(method, str) else method
    missing_e = sorted(set(recall) - set(erasure))
    missing_r = sorted(set(erasure) - set(recall))
    if missing_e or missing_r:
        problems = []
        if missing_e:
            problems.append(Problem(f"layers {missing_e} have recall but no erasure activations"))
        if missing_r:
            problems.append(Problem(f"layers {missing_r} have erasure but no recall activations"))
        raise DataError("recall and erasure cover different layers", problems)
    return {layer: fn(recall[layer], erasure[layer]) for layer in sorted(recall)}
