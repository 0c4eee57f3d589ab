"""The local fast path: a Plan run through plain torch forward hooks at the sites it reads and writes.

Why: nnsight instruments every submodule of a model it wraps and hands each module's input and output
to the interleaver, also on decode steps that steer nothing but a few layers. Profiling
``benchmarks/overhead.py`` puts that at about 1 ms per forward pass of a hidden-512, 8-layer model on
CPU, 5% of a plain ``generate`` when every decode step is steered. Hooks run only where the plan
works, so a local run costs what a hand-written hook costs.

The arithmetic is ``runtime_common`` (shared with the nnsight executor); only the plumbing is here:
which call is the prefill (the first call of each site), and where the activation sits in a module's
arguments or output (nnsight's ``.input``: first positional, else first keyword argument).
``tests/test_runtime_equivalence.py`` proves this path equal to the nnsight path, bit for bit, for
every op, gate rule, site and phase. Remote runs always take the nnsight path.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Iterator

import torch

from .errors import Problem, SteeringRuntimeError
from .plan import Plan, SiteRef, WriteOp
from .positions import decode_masks
from .runtime_common import Vectors, apply_write, shared_gate

# Models inside a steered call. Hooks sit on the modules, so a second call overlapping the first (another
# thread, or a steered call from inside a hook) would run both plans on both calls' activations.
_BUSY: weakref.WeakSet[torch.nn.Module] = weakref.WeakSet()


class HookExecutor:
    """Registers one hook per site for the length of one steered call (a forward or a generate)."""

    def __init__(self, model: torch.nn.Module, plan: Plan, vectors: Vectors):
        self.model, self.plan, self.vectors = model, plan, vectors
        self.sites: dict[SiteRef, list[WriteOp]] = {}
        if plan.gate.read is not None:
            self.sites[plan.gate.read] = []
        for w in plan.writes:
            self.sites.setdefault(w.at, []).append(w)
        # decode steps run only the writes that touch generated tokens (the others' masks are all False)
        every = plan.phase == "all_steps"
        self.decode = {ref: [w for w in ws if every and "generated" in w.positions] for ref, ws in self.sites.items()}

    @contextlib.contextmanager
    def running(self, masks: dict) -> Iterator[dict]:
        """Hooks installed for one call with prompt ``masks``; yields the gate values it computes."""
        gates: dict = {}
        calls = dict.fromkeys(self.sites, 0)
        step_masks: dict[int, dict] = {}  # decode-step masks, built once per batch size
        plan, vectors = self.plan, self.vectors

        def transform(ref: SiteRef, h: torch.Tensor):
            first = calls[ref] == 0
            calls[ref] += 1
            writes = self.sites[ref] if first else self.decode[ref]
            if not writes and not (first and ref == plan.gate.read):
                return None
            if first:
                m = masks
            else:
                m = step_masks.get(h.shape[0]) or step_masks.setdefault(h.shape[0], decode_masks(h.shape[0]))
            if first and ref == plan.gate.read:
                shared_gate(plan, vectors, h, m, gates)  # before this site's own writes, as compile ordered
            for w in writes:
                h = apply_write(plan, vectors, m, gates, w, h)
            return h

        if self.model in _BUSY:
            raise SteeringRuntimeError("two steered calls overlap on one model", [Problem(
                "a steered forward/generate started while another one is running on the same model", None, None,
                None, "steer", "send batches to a model one call at a time (one Steerer per model copy for "
                "parallel serving)", "SK521")])
        _BUSY.add(self.model)
        handles = []
        try:
            for ref in self.sites:
                module = self.model.get_submodule(ref.module)
                if ref.io == "input":
                    handles.append(module.register_forward_pre_hook(_pre_hook(ref, transform), with_kwargs=True))
                else:
                    handles.append(module.register_forward_hook(_post_hook(ref, transform)))
            yield gates
        finally:
            for handle in handles:
                handle.remove()
            _BUSY.discard(self.model)


def _pre_hook(ref: SiteRef, transform):
    def hook(module, args, kwargs):
        h = args[0] if args else next(iter(kwargs.values()))
        new = transform(ref, h)
        if new is None:
            return None
        if args:
            return (new, *args[1:]), kwargs
        return args, {**kwargs, next(iter(kwargs)): new}
    return hook


def _post_hook(ref: SiteRef, transform):
    def hook(module, args, output):
        if ref.output_index is None:
            return transform(ref, output)
        new = transform(ref, output[ref.output_index])
        if new is None:
            return None
        return (*output[:ref.output_index], new, *output[ref.output_index + 1:])
    return hook
