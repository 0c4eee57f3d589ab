"""The intervention plan: the compiled, model-independent IR that the runtime executes.

A Plan is plain frozen data (sites, operations, gates, strengths) plus a table of the vectors it
uses. It prints, serialises to JSON and hashes deterministically, so the same recipe and bundle always
give the same plan hash, and it holds no Python objects that only live in this process (it can be
shipped to a remote nnsight backend).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Mapping, Optional

import torch

SITE_ORDER = {"resid_pre": 0, "attn_out": 1, "mlp_out": 2, "resid_post": 3}


class TensorTable(Mapping[str, torch.Tensor]):
    """Immutable name -> float tensor table (1-D vectors; 2-D gate whitening matrices), hashed and
    compared by content."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]):
        self._t = {k: v.detach().to(torch.float32).contiguous().clone() for k, v in sorted(tensors.items())}
        h = hashlib.sha256()
        for k, v in self._t.items():
            h.update(k.encode())
            h.update(str(tuple(v.shape)).encode())
            h.update(v.numpy().tobytes())
        self.sha256 = h.hexdigest()

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._t[key]

    def __iter__(self):
        return iter(self._t)

    def __len__(self) -> int:
        return len(self._t)

    def __hash__(self) -> int:
        return hash(self.sha256)

    def __eq__(self, other) -> bool:
        return isinstance(other, TensorTable) and other.sha256 == self.sha256

    def __repr__(self) -> str:
        return f"TensorTable({len(self)} tensors, sha256={self.sha256[:12]})"


@dataclass(frozen=True)
class SiteRef:
    """One hookable place: a standard site at a layer, resolved to a module path and side."""

    site: str
    layer: int
    module: str
    io: str  # "input" | "output"
    output_index: Optional[int] = None

    @property
    def order(self) -> tuple[int, int]:
        return (self.layer, SITE_ORDER[self.site])


@dataclass(frozen=True)
class GateOp:
    """How a row's gate value c is computed.

    rule: "always_on" (c = 1), "linear" (c = pool(<h_t, g> + bias)), "cosine" (c = 1[pool(cos(h_t, r)) > threshold]),
    "prototype" (c = clip(scale * max_k cos(mean_t h_t - centre_k, p_k) + bias)).
    ``read`` is None when each write computes its gate from the activation it writes (published
    method); otherwise one value per row is read at ``read`` and shared by every write.
    """

    rule: str
    positions: str = "last_prompt_token"
    pool: str = "last"
    read: Optional[SiteRef] = None
    vector: Optional[str] = None  # tensor key; per-write linear gates use "{site}.{layer}" substitution
    bias: float = 0.0
    clip: Optional[tuple[float, float]] = None
    threshold: Optional[float] = None
    prototypes: tuple[str, ...] = ()  # rule "prototype": tensor keys of the K prototypes
    centers: tuple[str, ...] = ()  # rule "prototype": tensor keys of their K centres
    inv_stds: tuple[str, ...] = ()  # rule "prototype": per-dimension 1/std (whitening) of each
    proto_image: tuple[bool, ...] = ()  # rule "prototype": True for image-prompt prototypes
    proto_linear: tuple[bool, ...] = ()  # rule "prototype": True for discriminant (dot-product) prototypes
    whiten: tuple[str, ...] = ()  # rule "prototype": tensor keys of [D, D] whitening matrices
    proto_whiten: tuple[int, ...] = ()  # rule "prototype": index into whiten per prototype (-1: none)
    proto_scale: tuple[float, ...] = ()  # rule "prototype": per-prototype affine map of the cosine
    proto_bias: tuple[float, ...] = ()
    scale: float = 1.0  # rule "prototype": c = clip(scale * max cos + bias)


@dataclass(frozen=True)
class WriteOp:
    at: SiteRef
    op: str  # add | ablate | clamp
    vector: str  # tensor key of r
    strength: float  # lambda (add)
    clamp_value: float
    positions: tuple[str, ...]
    gate_vector: Optional[str] = None  # per-write linear gate vector key
    gate_bias: float = 0.0


@dataclass(frozen=True)
class Plan:
    architecture: str
    adapter: str
    hidden_size: int
    num_layers: int
    phase: str  # prefill | all_steps
    gate: GateOp
    writes: tuple[WriteOp, ...]
    tensors: TensorTable = field(compare=True)
    image_token_config: Optional[str] = None  # config key of the image token id (multimodal adapters)
    recipe_sha256: str = ""
    bundle_sha256: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tensors"] = {"sha256": self.tensors.sha256,
                        "names": {k: list(v.shape) for k, v in self.tensors.items()}}
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def dumps(self) -> bytes:
        """The whole plan, tensors included, as safetensors bytes (the plan JSON in its metadata): what a
        remote worker needs to run it, and nothing that executes on load."""
        import safetensors.torch

        meta = asdict(self)
        meta.pop("tensors")
        return safetensors.torch.save(dict(self.tensors), metadata={"steerkit.plan": json.dumps(meta)})

    @classmethod
    def loads(cls, data: bytes) -> "Plan":
        """Inverse of ``dumps``; the result equals the original (same sha256)."""
        import safetensors.torch

        try:
            tensors = safetensors.torch.load(data)
            n = int.from_bytes(data[:8], "little")  # safetensors: u64 header length, then the JSON header
            d = json.loads(json.loads(data[8:8 + n])["__metadata__"]["steerkit.plan"])
            g = d["gate"]
            gate = GateOp(**{**g, "read": SiteRef(**g["read"]) if g["read"] else None,
                             **{k: tuple(v) for k, v in g.items() if isinstance(v, list)}})
            writes = tuple(WriteOp(**{**w, "at": SiteRef(**w["at"]), "positions": tuple(w["positions"])})
                           for w in d["writes"])
            return cls(**{**d, "gate": gate, "writes": writes, "tensors": TensorTable(tensors)})
        except Exception as e:  # corrupt or foreign bytes: one clear error, never a half-built plan
            raise ValueError(f"not a serialised steerkit plan: {type(e).__name__}: {e}") from None

    @property
    def written_layers(self) -> list[int]:
        return sorted({w.at.layer for w in self.writes})

    def describe(self) -> str:
        layers = self.written_layers
        g = self.gate
        gate = g.rule if g.rule == "always_on" else (
            f"{g.rule} read at {'each written site' if g.read is None else f'{g.read.site}[{g.read.layer}]'}, "
            f"positions={g.positions}, pool={g.pool}, clip={g.clip}")
        lines = [
            f"Plan {self.sha256()[:12]}  ({self.architecture} via adapter '{self.adapter}', "
            f"hidden {self.hidden_size}, {self.num_layers} layers)",
            f"  phase:     {self.phase}",
            f"  gate:      {gate}",
            f"  writes:    {len(self.writes)} ({self.writes[0].op if self.writes else '-'} at "
            f"{self.writes[0].at.site if self.writes else '-'}, layers {_ranges(layers)})",
        ]
        if self.writes:
            w = self.writes[0]
            lines.append(f"  strength:  lambda={w.strength}  positions={','.join(w.positions)}")
            lines.append(f"  module:    {w.at.module} ({w.at.io})")
        lines.append(f"  tensors:   {len(self.tensors)} (sha256 {self.tensors.sha256[:12]})")
        return "\n".join(lines)


def _ranges(layers: list[int]) -> str:
    if not layers:
        return "-"
    out, start, prev = [], layers[0], layers[0]
    for x in layers[1:] + [None]:
        if x is not None and x == prev + 1:
            prev = x
            continue
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
        if x is not None:
            start = prev = x
    return ",".join(out)
