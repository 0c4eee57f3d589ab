"""Several forget requests at once: a stack of plans, one per bundle, run together.

Requests arrive over time (person A this week, B and C next month). Each request is its own bundle
(direction + gate fitted on its people); nothing old is refitted and no weight changes. The composition
rule is the **sum of gated writes**: at every steered site

    h <- h + lambda * sum_j c_j(h) * r_j

where every part's gate c_j reads the activation *before* any part writes there. Why the sum: it is
linear per request (a part whose gate is closed on a row leaves that row exactly as the other parts
made it, bit for bit), it does not depend on the order of the parts (up to float rounding), and a
merged bundle set is just its parts, so merge-then-apply equals apply-the-parts. A max over gates would
need a tie-break between parts (clipped gates tie at 1.0), which makes the result order-dependent.

Pure data and checks: no nnsight (the runtime executes a PlanStack in ``runtime_nnsight.apply_stack``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Sequence

from .bundle import Bundle
from .errors import BundleError, CompileError, Problem
from .plan import Plan

# manifest fields every part of a composition must share: the same model and the same steered layers
SHARED_FIELDS = ("model_id", "model_revision", "architecture", "hidden_size", "num_layers", "dtype", "adapter",
                 "sites")


def _shown(manifest, field: str):
    value = getattr(manifest, field)
    return value.name if field == "adapter" else value


def check_composable(bundles: Sequence[Bundle]) -> None:
    """Refuse bundles that cannot be applied together, naming every field that differs from the first
    part (model, shape, adapter, steered layers, gate rule) and the same request given twice."""
    if not bundles:
        raise BundleError("nothing to compose", [Problem("no bundle given", None, None, None, "bundle",
                                                         "pass at least one bundle", "SK438")])
    first, problems = bundles[0].manifest, []
    for b in bundles[1:]:
        m = b.manifest
        for f in SHARED_FIELDS:
            if getattr(m, f) != getattr(first, f):
                problems.append(Problem(
                    f"{f} differs: {_shown(m, f)!r} here but {_shown(first, f)!r} in {bundles[0].source}",
                    b.source, None, None, f, "compose bundles extracted for the same model with the same "
                    "recipe settings (only the forget people differ); re-extract this one", "SK438"))
        for key in ("rule", "layer"):
            if m.gate.get(key) != first.gate.get(key):
                problems.append(Problem(
                    f"gate.{key} differs: {m.gate.get(key)!r} here but {first.gate.get(key)!r} in "
                    f"{bundles[0].source}", b.source, None, None, f"gate.{key}",
                    "re-extract this request with the same gate settings as the others", "SK438"))
    seen: dict[str, str] = {}
    for b in bundles:
        h = b.manifest.tensors_sha256
        if h in seen:
            problems.append(Problem(f"the same bundle (tensors_sha256 {h[:12]}) is given twice, also as "
                                    f"{seen[h]}: its request would be steered twice as hard", b.source, None, None,
                                    "tensors_sha256", "list each request once", "SK439"))
        seen.setdefault(h, b.source)
    if problems:
        raise BundleError(f"{len(bundles)} bundles cannot be composed", problems)


@dataclass(frozen=True)
class PlanStack:
    """Plans compiled from one recipe against several bundles, executed together (sum of gated writes).

    Every part has the same sites, op, strength and phase; only vectors and gates differ. Mirrors the
    Plan attributes the runtime reads, so a stack runs wherever a plan does."""

    parts: tuple[Plan, ...]

    def __post_init__(self) -> None:
        if len(self.parts) < 1:
            raise ValueError("a PlanStack needs at least one plan")

    @property
    def architecture(self) -> str:
        return self.parts[0].architecture

    @property
    def adapter(self) -> str:
        return self.parts[0].adapter

    @property
    def hidden_size(self) -> int:
        return self.parts[0].hidden_size

    @property
    def num_layers(self) -> int:
        return self.parts[0].num_layers

    @property
    def phase(self) -> str:
        return self.parts[0].phase

    @property
    def image_token_config(self):
        return self.parts[0].image_token_config

    @property
    def writes(self):
        return tuple(w for p in self.parts for w in p.writes)

    @property
    def gate(self):
        return self.parts[0].gate

    @property
    def tensors(self) -> tuple:
        return tuple(p.tensors for p in self.parts)

    @property
    def written_layers(self) -> list[int]:
        return sorted({w.at.layer for p in self.parts for w in p.writes})

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps([p.sha256() for p in self.parts]).encode()).hexdigest()

    def to_dict(self) -> dict:
        return {"compose": "sum_of_gated_writes", "parts": [p.to_dict() for p in self.parts]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def describe(self) -> str:
        head = (f"PlanStack {self.sha256()[:12]}: {len(self.parts)} bundles composed (sum of gated writes, "
                "each gate read before any part writes)")
        return "\n".join([head] + [f"part {i}: " + p.describe().replace("\n", "\n  ")
                                   for i, p in enumerate(self.parts)])


def stack_plans(plans: Sequence[Plan]) -> Plan | PlanStack:
    """One plan stays a plain Plan (the runtime's single-bundle path); several become a PlanStack.

    Composition is defined for ``op: add`` only: ablate and clamp project onto each direction in turn,
    so their result would depend on the order of the requests."""
    plans = list(plans)
    if len(plans) == 1:
        return plans[0]
    problems = []
    if any(w.op != "add" for p in plans for w in p.writes):
        problems.append(Problem("composing bundles needs steer.op: add (ablate and clamp applied one request "
                                "after another depend on the order)", None, None, None, "steer.op",
                                "use op: add with a negative lambda", "SK330"))
    first = plans[0]
    for i, p in enumerate(plans[1:], start=1):
        for f in ("architecture", "hidden_size", "num_layers", "phase"):
            if getattr(p, f) != getattr(first, f):
                problems.append(Problem(f"part {i} has {f} {getattr(p, f)!r} but part 0 has {getattr(first, f)!r}",
                                        None, None, None, "bundle.compose", "compose bundles of one model",
                                        "SK330"))
    if problems:
        raise CompileError(f"{len(plans)} plans cannot be composed", problems)
    return PlanStack(tuple(plans))
