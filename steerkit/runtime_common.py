"""What both executors of a Plan share: vectors moved per device, gate values, one write.

The nnsight executor (``runtime_nnsight``) and the plain-hook executor (``runtime_hooks``) differ only
in how they reach an activation; everything computed from it is here, so the two cannot drift apart.
Nothing here refers to a model, a module or the local process: the nnsight executor ships these
functions to a remote backend by value.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from .ops import apply_op, cosine_gate, linear_gate, prototype_gate_for
from .plan import Plan, WriteOp
from .positions import union


class Vectors:
    """Plan vectors moved once per (name, device, dtype): each write fetches its vector on the device and
    in the dtype of the activation it edits, so a sharded model needs no placement of its own."""

    def __init__(self, tensors):
        self.tensors = tensors
        self.moved: dict[tuple[Any, Any, Any], torch.Tensor] = {}  # (name or names, device, dtype)
        self.parts: dict[int, Vectors] = {}  # a PlanStack's per-part tables

    def get(self, name: str, like: torch.Tensor) -> torch.Tensor:
        key = (name, like.device, like.dtype)
        if key not in self.moved:
            self.moved[key] = self.tensors[name].to(device=like.device, dtype=like.dtype)
        return self.moved[key]

    def part(self, j: int) -> Vectors:
        """A PlanStack's tables (``tensors`` is then a tuple, one per part): part j's Vectors, made once."""
        if j not in self.parts:
            self.parts[j] = Vectors(self.tensors[j])
        return self.parts[j]

    def stack(self, names: Sequence[str], like: torch.Tensor) -> Optional[torch.Tensor]:
        """The named tensors stacked (prototypes, whitening matrices), built once per device and dtype."""
        if not names:
            return None
        key = (tuple(names), like.device, like.dtype)
        if key not in self.moved:
            self.moved[key] = torch.stack([self.tensors[n] for n in names]).to(device=like.device, dtype=like.dtype)
        return self.moved[key]


def gate_value(plan: Plan, vectors: Vectors, h: torch.Tensor, masks: dict, vector: Optional[str], bias: float,
               direction: Optional[str]) -> torch.Tensor:
    """Per-row gate value c in [0, 1] (or unclipped for linear gates without clip) for activation h."""
    g = plan.gate
    mask = masks[g.positions].to(h.device)
    if g.rule == "always_on":
        return torch.ones(h.shape[0], dtype=h.dtype, device=h.device)
    if g.rule == "cosine":
        assert direction is not None and g.threshold is not None  # compile sets both for a cosine gate
        return cosine_gate(h, mask, vectors.get(direction, h), g.threshold, g.pool)
    if g.rule == "prototype":
        return prototype_gate_for(g, h, mask, masks["image_tokens"].to(h.device).any(dim=1),
                                  lambda keys: vectors.stack(keys, h))
    assert vector is not None  # compile names a gate vector for every linear gate
    return linear_gate(h, mask, vectors.get(vector, h), bias, g.pool, g.clip)


def shared_gate(plan: Plan, vectors: Vectors, h: torch.Tensor, masks: dict, gates: dict) -> None:
    """Read the plan's shared gate (``gate.read``) from h, once: later steps reuse the prefill value."""
    if "shared" not in gates:
        gates["shared"] = gate_value(plan, vectors, h, masks, plan.gate.vector, plan.gate.bias, None)


def apply_write(plan: Plan, vectors: Vectors, masks: dict, gates: dict, w: WriteOp, h: torch.Tensor) -> torch.Tensor:
    """h after write ``w``. ``gates`` keeps per-row gate values across decode steps: a gate reads the
    prompt once, at prefill, and every later step reuses it."""
    if plan.gate.read is not None:
        key: Any = "shared"
        shared_gate(plan, vectors, h, masks, gates)  # a no-op unless the gate reads this very site
    else:
        key = w.at.layer
        if key not in gates:
            gates[key] = gate_value(plan, vectors, h, masks, w.gate_vector, w.gate_bias, w.vector)
    mask = union(masks, w.positions).to(h.device)
    return apply_op(h, w.op, vectors.get(w.vector, h), gates[key], mask, w.strength, w.clamp_value)
