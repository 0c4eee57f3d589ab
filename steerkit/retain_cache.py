"""Retain activations kept between forget requests, so request k costs only its own forward passes.

A gate is fitted on forget prompts (the request's people) against retain prompts (everyone else). The
retain side is the same for every request and is by far the larger one (retain_90 + utility against
two people's prompts), so ``extract --retain-cache FILE`` stores the pooled retain activations at the
gate's read layers in FILE (safetensors, no pickle) and the next request reuses them: the fits (means,
whitening, calibration quantiles) are recomputed from the cached rows, which is cheap linear algebra.

The cache is used only when its key matches: the model (id, revision, architecture, shape, dtype and a
sampled fingerprint of every weight tensor), the read sites and positions, and the content of every
retain item (prompt, person id, image pixels). Anything else recomputes it and rewrites the file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import torch

CACHE_FORMAT = "steerkit.retain_cache"
_SAMPLE = 4096  # elements hashed per weight tensor: a changed tensor changes its sample almost surely


def model_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over every parameter's name, shape, dtype and an evenly strided sample of its values."""
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        flat = p.detach().reshape(-1)
        step = max(1, flat.numel() // _SAMPLE)
        sample = flat[::step][:_SAMPLE].to(device="cpu", dtype=torch.float32).contiguous()
        h.update(f"{name}{list(p.shape)}{p.dtype}".encode())
        h.update(sample.numpy().tobytes())
    return h.hexdigest()


def items_sha256(items: Sequence) -> str:
    """sha256 over the items in order: prompt, person id and image pixels (not file names)."""
    h = hashlib.sha256()
    for it in items:
        for part in (it.prompt.encode(), (it.id or "").encode(),
                     b"" if it.image is None else f"{it.image.mode}{it.image.size}".encode() + it.image.tobytes()):
            h.update(len(part).to_bytes(8, "little") + part)
    return h.hexdigest()


def cache_key(session, items: Sequence, refs: Sequence, positions: str) -> dict:
    hidden, layers = session.dims
    return {"format": 1, "model_id": session.model_id, "revision": session.revision,
            "architecture": session.architecture, "dims": [hidden, layers],
            "dtype": str(next(session.model.parameters()).dtype), "weights": model_fingerprint(session.model),
            "refs": [[r.module, r.io, r.layer, r.output_index] for r in refs], "positions": positions,
            "items": items_sha256(items), "n": len(items)}


def _load(path: Path, key_sha: str) -> Optional[dict[int, torch.Tensor]]:
    """The cached layers, or None when the file is absent, unreadable or made for another key."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != CACHE_FORMAT or meta.get("key_sha256") != key_sha:
                return None
            return {int(n.split(".", 1)[1]): f.get_tensor(n) for n in f.keys()}
    except Exception:  # a truncated or foreign file is only a cache miss: it is recomputed and replaced
        return None


def retain_activations(session, items: Sequence, refs: Sequence, positions: str, cache: Optional[str | os.PathLike],
                       collect_fn: Callable[..., Mapping[int, torch.Tensor]], log=None, **collect_kwargs
                       ) -> Mapping[int, torch.Tensor]:
    """``collect_fn(session, items, refs, positions=..., **collect_kwargs)``, read from ``cache`` when it
    holds exactly these activations, else computed and written there (atomically)."""
    if cache is None:
        return collect_fn(session, items, refs, positions=positions, **collect_kwargs)
    path = Path(cache)
    key = cache_key(session, items, refs, positions)
    key_sha = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    hit = _load(path, key_sha) if path.is_file() else None
    if hit is not None and set(hit) == {r.layer for r in refs}:
        if log:
            log(f"retain activations: reused {path} ({key['n']} rows)")
        return hit
    if log:
        log(f"retain activations: {'recomputing (the cache is for other inputs)' if path.exists() else 'computing'};"
            f" writing {path}")
    acts = collect_fn(session, items, refs, positions=positions, **collect_kwargs)
    import safetensors.torch

    from .evaluate.report import atomic_write_bytes

    tensors = {f"retain.{layer}": acts[layer].float().contiguous() for layer in sorted(acts)}
    try:
        atomic_write_bytes(path, safetensors.torch.save(tensors, metadata={
            "format": CACHE_FORMAT, "key_sha256": key_sha, "key": json.dumps(key, sort_keys=True)}))
    except OSError as e:  # the bundle is still right; only the next request will recompute
        if log:
            log(f"warning: cannot write the retain cache {path}: {e.strerror or e}")
    return acts
