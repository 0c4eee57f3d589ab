"""The intervention arithmetic, as pure functions of tensors (no nnsight, no hooks).

Both the nnsight runtime and the plain-hook reference call these, so "what an op does" is defined once
and property-tested on tensors: ``add`` h += lambda*c*r; ``ablate`` removes the component along r;
``clamp`` sets the component along r to a value. c is the per-row gate, the mask selects positions.
"""

from __future__ import annotations

from typing import Optional

import torch


def pool_scores(scores: torch.Tensor, mask: torch.Tensor, pool: str) -> torch.Tensor:
    """Pool per-token scores [B, T] over masked positions -> [B]. Rows with an empty mask give 0."""
    m = mask.to(scores.dtype)
    count = m.sum(dim=1)
    if pool == "mean":
        return (scores * m).sum(dim=1) / count.clamp(min=1)
    if pool == "max":
        neg = torch.finfo(scores.dtype).min
        out = torch.where(mask, scores, torch.full_like(scores, neg)).max(dim=1).values
        return torch.where(count > 0, out, torch.zeros_like(out))
    # "last": the last selected position of each row
    t = scores.shape[1]
    idx = torch.where(mask, torch.arange(t, device=scores.device).expand_as(mask), torch.full_like(mask, -1,
                      dtype=torch.long)).max(dim=1).values
    out = scores.gather(1, idx.clamp(min=0)[:, None])[:, 0]
    return torch.where(idx >= 0, out, torch.zeros_like(out))


def linear_gate(h: torch.Tensor, mask: torch.Tensor, g: torch.Tensor, bias: float, pool: str,
                clip: Optional[tuple[float, float]]) -> torch.Tensor:
    """c = clip(pool_t(<h_t, g> + bias)) per row."""
    scores = h @ g.to(h.dtype) + bias
    c = pool_scores(scores, mask, pool)
    return c.clamp(clip[0], clip[1]) if clip is not None else c


def cosine_gate(h: torch.Tensor, mask: torch.Tensor, r: torch.Tensor, threshold: float, pool: str) -> torch.Tensor:
    cos = torch.nn.functional.cosine_similarity(h, r.to(h.dtype)[None, None, :], dim=-1)
    return (pool_scores(cos, mask, pool) > threshold).to(h.dtype)


def prototype_gate(h: torch.Tensor, mask: torch.Tensor, row_image: torch.Tensor, centers: torch.Tensor,
                   inv_std: torch.Tensor, prototypes: torch.Tensor, proto_image: torch.Tensor,
                   scale: torch.Tensor, bias: torch.Tensor, clip: Optional[tuple[float, float]],
                   proto_linear: Optional[torch.Tensor] = None, whiten: Optional[torch.Tensor] = None,
                   proto_whiten: Optional[torch.Tensor] = None) -> torch.Tensor:
    """c = clip(max_k [scale_k * s_k + bias_k]) per row, with z_k = (mean_t h_t - centre_k) * inv_std_k,
    then z_k <- W_m z_k when prototype k has a whitening matrix (proto_whiten[k] = m >= 0), and
    s_k = cos(z_k, p_k) for cosine prototypes, <z_k, p_k> for linear (discriminant) ones.

    scale_k / bias_k are calibrated per modality (image-prompt cosines crowd near 1, text ones do not).

    centres, inv_std, prototypes: [K, D]; proto_image [K] and row_image [B] (bool) say which modality a
    prototype and a row belong to: a prototype only scores rows of its own modality (image prompts and
    text prompts sit in different regions, so cross-modality scores are meaningless). proto_linear [K]
    (bool, default all False) marks discriminant prototypes; whiten [M, D, D] holds full whitening
    matrices and proto_whiten [K] (long, -1: none) says which one each prototype uses."""
    m = mask.to(h.dtype)[:, :, None]
    pooled = (h * m).sum(1) / m.sum(1).clamp(min=1)  # [B, D]
    z = (pooled[:, None, :] - centers.to(h.dtype)[None]) * inv_std.to(h.dtype)[None]  # [B, K, D]
    if whiten is not None and proto_whiten is not None:
        for w_idx in sorted({int(i) for i in proto_whiten.tolist() if int(i) >= 0}):
            cols = (proto_whiten == w_idx).nonzero()[:, 0].to(z.device)
            z[:, cols] = z[:, cols] @ whiten[w_idx].to(h.dtype).T  # one matrix per modality, not per prototype
    p = prototypes.to(h.dtype)
    dot = (z * p[None]).sum(-1)
    score = dot / (z.norm(dim=-1) * p.norm(dim=-1)[None]).clamp(min=1e-12)
    if proto_linear is not None and bool(proto_linear.any()):
        score = torch.where(proto_linear.to(torch.bool)[None, :], dot, score)
    same = row_image.to(torch.bool)[:, None] == proto_image.to(torch.bool)[None, :]
    aff = scale.to(h.dtype)[None] * score + bias.to(h.dtype)[None]
    c = torch.where(same, aff, torch.full_like(aff, -1e9)).max(dim=-1).values
    return c.clamp(clip[0], clip[1]) if clip is not None else c


def prototype_gate_for(gate, h: torch.Tensor, mask: torch.Tensor, row_image: torch.Tensor, stack) -> torch.Tensor:
    """``prototype_gate`` with its tensors taken from a plan's GateOp; ``stack(keys)`` returns the stored
    vectors or matrices named by ``keys`` stacked on h's device, or None for no keys (the runtime caches
    the stacks; the hook reference stacks afresh)."""

    def values(xs, dtype=None):
        return torch.tensor(xs, dtype=dtype, device=h.device) if xs else None

    return prototype_gate(h, mask, row_image, stack(gate.centers), stack(gate.inv_stds), stack(gate.prototypes),
                          values(gate.proto_image), values(gate.proto_scale), values(gate.proto_bias), gate.clip,
                          values(gate.proto_linear, torch.bool), stack(gate.whiten),
                          values(gate.proto_whiten, torch.long))


def apply_op(h: torch.Tensor, op: str, r: torch.Tensor, c: torch.Tensor, mask: torch.Tensor,
             strength: float, clamp_value: float = 0.0) -> torch.Tensor:
    """Apply one write to h [B, T, D] at masked positions with per-row gate c [B].

    Untouched entries (closed gate, unselected position) are returned as they were, bit for bit
    (-0.0 stays -0.0), and the unit direction is computed in float32 so a half-precision model
    cannot underflow it to NaN.
    """
    w = c.to(h.dtype)[:, None, None] * mask.to(h.dtype)[:, :, None]  # [B, T, 1]
    if op == "add":
        w = w * strength  # a zero strength leaves every entry untouched, like a closed gate
        new = h + w * r.to(h.dtype)
    else:
        r32 = r.to(torch.float32)
        norm = r32.norm()
        unit = (r32 / norm if norm > 0 else torch.zeros_like(r32)).to(h.dtype)
        comp = (h @ unit)[..., None]  # [B, T, 1]
        if op == "ablate":
            new = h - w * comp * unit
        elif op == "clamp":
            new = h + w * (clamp_value - comp) * unit
        else:
            raise ValueError(f"unknown op {op!r}")
    return torch.where(w != 0, new, h)
