"""An independent plain-torch-hook executor for Plans: the ground truth the nnsight runtime is tested against.

It shares only the op arithmetic (``steerkit.ops``) and the position masks with the runtime; module
resolution, activation access, gating order and decode-step handling are written separately with
``register_forward_pre_hook`` / ``register_forward_hook``, so a bug in the nnsight plumbing shows up
as a mismatch. Also the "plain hook" baseline of benchmarks/overhead.py.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional

import torch

from ..ops import apply_op, cosine_gate, linear_gate, prototype_gate_for
from ..plan import Plan, SiteRef
from ..positions import decode_masks, prompt_masks, union


class HookSteerer:
    def __init__(self, model: torch.nn.Module, plan: Plan, image_token_id: Optional[int]):
        self.model, self.plan, self.image_token_id = model, plan, image_token_id
        self.masks: dict = {}
        self.gates: dict = {}
        self.calls: dict = {}

    def _gate(self, h, vector, bias, direction):
        g = self.plan.gate
        mask = self.masks[g.positions]
        if g.rule == "always_on":
            return torch.ones(h.shape[0], dtype=h.dtype)
        if g.rule == "cosine":
            return cosine_gate(h, mask, self.plan.tensors[direction], g.threshold, g.pool)
        if g.rule == "prototype":
            return prototype_gate_for(g, h, mask, self.masks["image_tokens"].to(h.device).any(dim=1),
                                      lambda keys: torch.stack([self.plan.tensors[k] for k in keys]) if keys else None)
        return linear_gate(h, mask, self.plan.tensors[vector], bias, g.pool, g.clip)

    def _transform(self, ref: SiteRef, h: torch.Tensor) -> torch.Tensor:
        decode = self.calls.setdefault(ref, 0) > 0
        self.calls[ref] += 1
        if decode and self.plan.phase == "prefill":
            return h
        masks = decode_masks(h.shape[0]) if decode else self.masks
        self.masks_now = masks
        plan = self.plan
        shared = plan.gate.read
        if shared is not None and shared == ref and "shared" not in self.gates:
            self.gates["shared"] = self._gate(h, plan.gate.vector, plan.gate.bias, None)
        for w in plan.writes:
            if w.at != ref:
                continue
            key: Any = "shared" if shared is not None else w.at.layer
            if key not in self.gates:
                self.gates[key] = self._gate(h, w.gate_vector, w.gate_bias, w.vector)
            h = apply_op(h, w.op, plan.tensors[w.vector], self.gates[key], union(masks, w.positions),
                         w.strength, w.clamp_value)
        return h

    def _pre_hook(self, ref):
        def hook(module, args, kwargs):
            if args:
                return (self._transform(ref, args[0]), *args[1:]), kwargs
            kwargs = dict(kwargs)
            kwargs["hidden_states"] = self._transform(ref, kwargs["hidden_states"])
            return args, kwargs
        return hook

    def _post_hook(self, ref):
        def hook(module, args, output):
            if ref.output_index is not None:
                out = list(output)
                out[ref.output_index] = self._transform(ref, out[ref.output_index])
                return tuple(out)
            return self._transform(ref, output)
        return hook

    @contextlib.contextmanager
    def active(self, inputs: dict) -> Iterator[None]:
        self.masks = prompt_masks(inputs["input_ids"], inputs.get("attention_mask"), self.image_token_id)
        self.gates, self.calls = {}, {}
        refs = {w.at for w in self.plan.writes}
        if self.plan.gate.read is not None:
            refs.add(self.plan.gate.read)
        handles = []
        for ref in refs:
            module = self.model.get_submodule(ref.module)
            if ref.io == "input":
                handles.append(module.register_forward_pre_hook(self._pre_hook(ref), with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(self._post_hook(ref)))
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def forward(self, inputs: dict) -> torch.Tensor:
        with torch.no_grad(), self.active(inputs):
            return self.model(**inputs).logits

    def generate(self, inputs: dict, max_new_tokens: int, **kw) -> torch.Tensor:
        with torch.no_grad(), self.active(inputs):
            return self.model.generate(**inputs, max_new_tokens=max_new_tokens,  # type: ignore[operator]
                                       do_sample=False, **kw)
