"""A merged bundle set: several request bundles in one portable ``.safetensors`` file.

``steerkit bundle merge A B -o C`` writes C with every tensor of part i renamed ``part.<i>.<name>`` and
the metadata

- ``format: steerkit.bundle_set``, ``format_version``, ``steerkit_version``, ``created_at``;
- ``parts``: a JSON list naming each part (its file name, model, ``tensors_sha256``, ``recipe_sha256``);
- ``part.<i>``: part i's own bundle metadata, verbatim.

Loading rebuilds every part as a full ``Bundle`` (so each is verified against its own manifest and
hash exactly like a single file) and checks the ``parts`` list against them. Applying C is applying its
parts (``steerkit.compose``): nothing is averaged or refitted, so merge-then-apply == apply-the-parts.
Sets nest flat: merging a set with a bundle gives a set of all their parts.
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Sequence

import safetensors.torch
from safetensors import SafetensorError

from . import __version__
from .bundle import _RAW, Bundle, ModelFingerprint, _decode, _read
from .compose import check_composable
from .errors import BundleError, Problem

SET_FORMAT = "steerkit.bundle_set"
SET_VERSION, SET_VERSIONS = 1, frozenset({1})
_PART = re.compile(r"^part\.(0|[1-9][0-9]{0,5})\.(.+)$")
_FIX = "merge the parts again (steerkit bundle merge A B -o C); do not edit sets by hand"


def _bad(where: str, msg: str, code: str = "SK440", key: Optional[str] = None, hint: str = _FIX) -> BundleError:
    return BundleError(f"{where} is not a valid bundle set", [Problem(msg, where, None, None, key, hint, code)])


def part_metadata(bundle: Bundle) -> dict[str, str]:
    """A bundle's safetensors metadata, exactly as ``Bundle.save`` writes it."""
    return {k: v if k in _RAW else json.dumps(v, ensure_ascii=False)
            for k, v in bundle.manifest.model_dump(mode="json").items() if v is not None}


def set_bytes(bundles: Sequence[Bundle]) -> bytes:
    """The merged file's bytes; the parts must be composable (same model, shape, adapter, layers)."""
    check_composable(bundles)
    tensors, parts = {}, []
    meta = {"format": SET_FORMAT, "format_version": str(SET_VERSION), "steerkit_version": __version__,
            "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    for i, b in enumerate(bundles):
        m = b.manifest
        tensors.update({f"part.{i}.{name}": t.detach().cpu().contiguous().clone() for name, t in b.tensors.items()})
        parts.append({"index": i, "from": Path(b.source).name, "model_id": m.model_id,
                      "tensors_sha256": m.tensors_sha256, "recipe_sha256": m.recipe_sha256,
                      "created_at": m.created_at})
        meta[f"part.{i}"] = json.dumps(part_metadata(b), ensure_ascii=False)
    meta["parts"] = json.dumps(parts, ensure_ascii=False)
    return safetensors.torch.save(tensors, metadata=meta)


def save_set(bundles: Sequence[Bundle], path: str | os.PathLike) -> Path:
    """Write the merged set atomically (readers see the old file or the whole new one)."""
    from .evaluate.report import atomic_write_bytes

    path = Path(path)
    try:
        blob = set_bytes(bundles)
        atomic_write_bytes(path, blob)
        os.chmod(path, 0o644)  # a set is meant to be shared, like a bundle
    except (OSError, UnicodeEncodeError) as e:
        raise BundleError(f"cannot write bundle set {path}", [Problem(
            f"write failed: {getattr(e, 'strerror', None) or e}", str(path), None, None, None,
            "check the folder is writable and has space", "SK411")]) from None
    return path


def _parts_of(blob: bytes, meta: dict[str, str], where: str) -> list[Bundle]:
    try:
        listed = json.loads(meta.get("parts", ""))
    except (ValueError, RecursionError):
        raise _bad(where, "metadata 'parts' is not a JSON list", key="parts") from None
    if not isinstance(listed, list) or not listed or not all(isinstance(p, dict) for p in listed):
        raise _bad(where, "metadata 'parts' must be a non-empty list of objects", key="parts")
    try:
        tensors = safetensors.torch.load(blob)
    except (SafetensorError, ValueError, OSError, TypeError, KeyError, OverflowError, RuntimeError) as e:
        raise _bad(where, f"tensor data is corrupt: {e}", "SK402") from None
    grouped: dict[int, dict] = {i: {} for i in range(len(listed))}
    for name, t in tensors.items():
        m = _PART.match(name)
        if m is None or int(m.group(1)) not in grouped:
            raise _bad(where, f"tensor {name!r} belongs to no listed part (want part.<0..{len(listed) - 1}>.<name>)",
                       key=name)
        grouped[int(m.group(1))][m.group(2)] = t
    parts = []
    for i, entry in enumerate(listed):
        part_where = f"{where}#part{i}"
        try:
            part_meta = json.loads(meta.get(f"part.{i}", ""))
        except (ValueError, RecursionError):
            raise _bad(where, f"metadata 'part.{i}' is missing or not JSON", key=f"part.{i}") from None
        if not isinstance(part_meta, dict) or not all(isinstance(v, str) for v in part_meta.values()):
            raise _bad(where, f"metadata 'part.{i}' must be an object of strings", key=f"part.{i}")
        bundle = Bundle(grouped[i], _decode(part_meta, part_where), part_where)  # verifies tensors and hash
        if entry.get("tensors_sha256") != bundle.manifest.tensors_sha256:
            raise _bad(where, f"'parts' lists tensors_sha256 {str(entry.get('tensors_sha256'))[:12]} for part {i} "
                       f"but the part holds {bundle.manifest.tensors_sha256[:12]}", key=f"parts.{i}")
        parts.append(bundle)
    return parts


def load_parts(path: str | os.PathLike, *, expect: Optional[ModelFingerprint] = None) -> list[Bundle]:
    """The bundles a file holds: ``[bundle]`` for a single bundle, the parts of a merged set, each fully
    verified (and checked against ``expect`` when given)."""
    where = str(path)
    try:
        parts = [Bundle.load(path, expect=expect)]
    except BundleError as exc:
        if not exc.problems or exc.problems[0].code != "SK403":
            raise
        try:
            blob, meta = _read(Path(path), where, SET_FORMAT, SET_VERSIONS)
        except BundleError as set_exc:
            raise (exc if set_exc.problems and set_exc.problems[0].code == "SK403" else set_exc) from None
        parts = _parts_of(blob, meta, where)
        check_composable(parts)
        if expect is not None:
            for p in parts:
                p.check_fits(expect)
    return parts
