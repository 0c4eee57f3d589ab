"""The portable direction bundle: one ``.safetensors`` file holding steering tensors + a manifest.

Why this shape (house-style §4.5): safetensors cannot execute code on load (unlike pickle), and its
``__metadata__`` travels with the tensors, so a bundle is self-describing and safe to share. The
loader treats every file as hostile: it checks the header bounds *before* parsing anything, reads
exactly the bytes the file has, and turns every failure into a ``BundleError`` naming the file, so
a corrupt or foreign file can never produce a traceback, a hang or a huge allocation. ``save``
refuses to write anything ``load`` would refuse, and writes atomically (temp file, fsync, replace).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Optional

import safetensors.torch
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from safetensors import SafetensorError

from steerkit import __version__
from steerkit.errors import BundleError, Problem, choices_hint

FORMAT = "steerkit.bundle"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})
MAX_HEADER_BYTES = 100 * 1024 * 1024  # a real header is KBs; the cap stops a forged length from allocating
GATELESS_RULES = frozenset({"none", "always"})  # gate rules that need no gate.<site>.<layer> vectors
DTYPES = {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32", torch.float64: "float64"}
_NAME = re.compile(r"^(direction|gate)\.([a-z][a-z0-9_]*)\.(0|[1-9][0-9]*)$")
_SHA = r"^[0-9a-f]{64}$"
_REEXTRACT = "re-extract the bundle (steerkit extract RECIPE -o BUNDLE); do not edit bundles by hand"
# Failures that a hostile file can provoke inside safetensors/torch/json/pydantic during decoding.
_DECODE_ERRORS = (SafetensorError, ValueError, OSError, TypeError, KeyError, IndexError, OverflowError, RuntimeError)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class AdapterRef(_Strict):
    """Which adapter mapped site names to modules, and its exact bytes (sha256 of the YAML)."""

    name: str = Field(min_length=1)
    sha256: str = Field(pattern=_SHA)
    schema_version: int = 1


class DataRef(_Strict):
    """A data set the bundle was fitted on: recorded by hash, never embedded."""

    path: str
    sha256: str = Field(pattern=_SHA)
    n: int = Field(ge=0)


def _jsonable(value: dict) -> dict:
    """Normalise through JSON so what we hold equals what a reload gives (tuples -> lists, no NaN)."""
    return json.loads(json.dumps(value, allow_nan=False, ensure_ascii=False))


class BundleManifest(_Strict):
    """Everything needed to trust and reuse the tensors: provenance, dimensions, integrity hashes."""

    format: Literal["steerkit.bundle"] = FORMAT
    format_version: int = FORMAT_VERSION
    steerkit_version: str
    created_at: str  # UTC ISO 8601; deliberately outside tensors_sha256 so re-runs hash the same
    model_id: str = Field(min_length=1)
    model_revision: Optional[str] = None
    architecture: str = Field(min_length=1)
    adapter: AdapterRef
    hidden_size: int = Field(gt=0)
    num_layers: int = Field(gt=0)
    dtype: Literal["float16", "bfloat16", "float32", "float64"]
    sites: dict[str, list[int]] = Field(min_length=1)
    direction: dict[str, Any]
    gate: dict[str, Any]
    data: dict[str, DataRef] = Field(default_factory=dict)
    recipe: dict[str, Any] = Field(default_factory=dict)
    recipe_sha256: str = Field(pattern=_SHA)
    tensors_sha256: str = Field(pattern=_SHA)
    extra: dict[str, str] = Field(default_factory=dict)

    @field_validator("created_at")
    @classmethod
    def _utc(cls, v: str) -> str:
        try:
            when = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError("expected an ISO 8601 time such as 2026-05-01T12:00:00Z") from None
        if when.utcoffset() is None or when.utcoffset().total_seconds() != 0:
            raise ValueError("created_at must be in UTC (end with Z or +00:00)")
        return v

    @field_validator("direction", "gate", "recipe")
    @classmethod
    def _json(cls, v: dict) -> dict:
        try:
            return _jsonable(v)
        except (TypeError, ValueError) as e:
            raise ValueError(f"must be JSON-encodable with finite numbers ({e})") from None

    @field_validator("sites")
    @classmethod
    def _sites(cls, v: dict[str, list[int]]) -> dict[str, list[int]]:
        for site, layers in v.items():
            if not re.fullmatch(r"[a-z][a-z0-9_]*", site):
                raise ValueError(f"site name {site!r} must be lowercase letters, digits, underscores")
            if not layers or len(set(layers)) != len(layers) or min(layers) < 0:
                raise ValueError(f"sites.{site} must list distinct non-negative layers (at least one)")
        return {site: sorted(layers) for site, layers in v.items()}

    @model_validator(mode="after")
    def _consistent(self) -> "BundleManifest":
        if not isinstance(self.direction.get("method"), str):
            raise ValueError("direction must name its method, e.g. {\"method\": \"mean_diff\"}")
        if not isinstance(self.gate.get("rule"), str):
            raise ValueError("gate must name its rule, e.g. {\"rule\": \"none\"}")
        for site, layers in self.sites.items():
            if max(layers) >= self.num_layers:
                raise ValueError(f"sites.{site} has layer {max(layers)} but num_layers is {self.num_layers}")
        return self

    @property
    def needs_gate(self) -> bool:
        return self.gate["rule"] not in GATELESS_RULES


@dataclass(frozen=True)
class ModelFingerprint:
    """The few model facts a bundle must match; cheap to get from a config without loading weights."""

    architecture: str
    hidden_size: int
    num_layers: int


def _raw_bytes(t: torch.Tensor) -> bytes:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def tensor_hash(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over sorted names, dtypes, shapes and raw bytes; length-prefixed so fields can't blur."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        raw = _raw_bytes(t)
        for part in (name.encode("utf-8"), DTYPES.get(t.dtype, str(t.dtype)).encode(), json.dumps(list(t.shape)).encode(), raw):
            h.update(struct.pack("<Q", len(part)) + part)
    return h.hexdigest()


def recipe_hash(recipe: dict) -> str:
    """sha256 of the canonical JSON of a resolved recipe (sorted keys, no whitespace)."""
    text = json.dumps(recipe, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, streamed so big data files never sit in memory."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _problem(where: str, message: str, code: str, key_path: str | None = None, hint: str = _REEXTRACT) -> Problem:
    return Problem(message=message, path=where, key_path=key_path, hint=hint, code=code)


def _check(tensors: dict[str, torch.Tensor], m: BundleManifest, where: str) -> list[Problem]:
    """Every way tensors and manifest can disagree, collected so the user sees them all at once."""
    out: list[Problem] = []
    wanted = {f"{kind}.{site}.{layer}" for site, layers in m.sites.items() for layer in layers
              for kind in (("direction", "gate") if m.needs_gate else ("direction",))}
    for name in sorted(wanted - tensors.keys()):
        out.append(_problem(where, f"tensor {name!r} is missing but manifest.sites lists it", "SK406", "sites"))
    for name, t in sorted(tensors.items()):
        if not isinstance(t, torch.Tensor):
            out.append(_problem(where, f"{name!r} is a {type(t).__name__}, not a tensor", "SK407", name))
            continue
        steering = _NAME.match(name)
        if steering and name not in wanted:
            why = "manifest.sites does not list it" if steering.group(1) == "direction" or m.needs_gate \
                else f"gate rule {m.gate['rule']!r} uses no gate vectors"
            out.append(_problem(where, f"unexpected tensor {name!r}: {why}", "SK406", name))
        elif not steering and not name.startswith("stats."):
            out.append(_problem(where, f"unknown tensor name {name!r}; expected direction.<site>.<layer>, "
                                "gate.<site>.<layer> or stats.*", "SK406", name))
        if t.dtype not in DTYPES:
            out.append(_problem(where, f"{name!r} has dtype {t.dtype}; expected one of {sorted(DTYPES.values())}",
                                "SK407", name))
            continue
        if steering and (t.dtype is not getattr(torch, m.dtype) or tuple(t.shape) != (m.hidden_size,)):
            out.append(_problem(where, f"{name!r} is {DTYPES[t.dtype]}{list(t.shape)}; manifest says "
                                f"{m.dtype}[{m.hidden_size}] (dtype, hidden_size)", "SK407", name))
        elif not bool(torch.isfinite(t).all()):
            out.append(_problem(where, f"{name!r} contains NaN or infinite values", "SK408", name))
    if not out and tensor_hash(tensors) != m.tensors_sha256:
        out.append(_problem(where, "tensors_sha256 does not match the tensors: the file is corrupt or was "
                            "edited", "SK409", "tensors_sha256"))
    return out


def _validation_problems(err: ValidationError, where: str) -> list[Problem]:
    problems = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or None
        hint = _REEXTRACT
        if e["type"] == "extra_forbidden" and e["loc"]:
            hint = "remove it; " + choices_hint(str(e["loc"][0]), BundleManifest.model_fields)
        got = repr(e.get("input"))
        got = got if len(got) <= 80 else got[:77] + "..."
        problems.append(_problem(where, f"{e['msg']} (got {got})", "SK405", key, hint))
    return problems


def _encode(m: BundleManifest) -> dict[str, str]:
    """safetensors metadata must be str -> str: strings stay raw, everything else is JSON."""
    out = {}
    for key, value in m.model_dump(mode="json").items():
        if value is not None:
            out[key] = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, allow_nan=False)
    return out


def _decode(meta: dict[str, str], where: str) -> BundleManifest:
    fields, problems = {}, []
    raw = {k for k, f in BundleManifest.model_fields.items() if f.annotation in (str, Optional[str])} | {"format"}
    for key, text in meta.items():
        try:
            fields[key] = text if key in raw else json.loads(text)
        except ValueError:
            problems.append(_problem(where, f"metadata value is not JSON: {text[:60]!r}", "SK405", key))
    if problems:
        raise BundleError(f"{where} has a corrupt manifest", problems)
    try:
        return BundleManifest.model_validate(fields)
    except ValidationError as e:
        raise BundleError(f"{where} has an invalid manifest", _validation_problems(e, where)) from None


def _read(path: Path, where: str) -> tuple[bytes, dict[str, str]]:
    """Read the file with bounded, exact-length reads; return its bytes and its string metadata."""
    def bad(message: str, code: str = "SK402", hint: str = "the file is truncated or not a safetensors "
            "file; re-extract it or copy it again") -> BundleError:
        return BundleError(f"cannot read bundle {where}", [_problem(where, message, code, hint=hint)])

    if path.is_dir():
        raise bad("is a directory, not a bundle file", "SK401", "pass the .safetensors file inside it")
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 8:
                raise bad(f"file is {size} bytes; a safetensors file starts with an 8-byte header length")
            (n,) = struct.unpack("<Q", f.read(8))
            if n > MAX_HEADER_BYTES or 8 + n > size:
                raise bad(f"header length {n} is impossible for a {size}-byte file (cap {MAX_HEADER_BYTES})")
            head = f.read(n)
            rest = f.read(size - 8 - n)
    except OSError as e:
        raise bad(f"cannot open: {e.strerror or e}", "SK401", "check the path and its permissions") from None
    if len(head) != n or len(rest) != size - 8 - n:
        raise bad("file changed size while being read")
    try:
        header = json.loads(head.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise bad(f"header is not valid UTF-8 JSON ({e})") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(header, dict) or not isinstance(meta, (dict, type(None))):
        raise bad("header is not a safetensors JSON object")
    meta = meta or {}
    if not all(isinstance(v, str) for v in meta.values()):
        raise bad("__metadata__ values must all be strings")
    if meta.get("format") != FORMAT:
        raise bad(f"not a steerkit bundle: metadata 'format' is {meta.get('format')!r}, expected {FORMAT!r}",
                  "SK403", "pass a file written by Bundle.save / steerkit extract")
    version = meta.get("format_version", "")
    if not version.isdigit() or int(version) not in SUPPORTED_VERSIONS:
        raise bad(f"format_version {version!r} is not supported (this steerkit {__version__} reads "
                  f"{sorted(SUPPORTED_VERSIONS)})", "SK404", "upgrade steerkit or re-extract with this version")
    return struct.pack("<Q", n) + head + rest, meta


@dataclass(frozen=True)
class Bundle:
    """Steering tensors (``<kind>.<site>.<layer>``) plus their manifest; always valid once built."""

    tensors: dict[str, torch.Tensor]
    manifest: BundleManifest

    def __post_init__(self) -> None:
        problems = _check(self.tensors, self.manifest, "<in-memory bundle>")
        if problems:
            raise BundleError("bundle tensors do not match its manifest", problems)

    @classmethod
    def create(cls, tensors: dict[str, torch.Tensor], *, model_id: str, architecture: str, adapter: dict,
               hidden_size: int, num_layers: int, direction: dict, gate: dict, **fields: Any) -> "Bundle":
        """Build a bundle, deriving what can be derived (sites, dtype, hashes, time, version)."""
        sites: dict[str, list[int]] = {}
        for name in tensors:
            if (m := _NAME.match(name)) and m.group(1) == "direction":
                sites.setdefault(m.group(2), []).append(int(m.group(3)))
        first = next((t for n, t in sorted(tensors.items()) if _NAME.match(n)), None)
        recipe = fields.pop("recipe", {})
        values = dict(steerkit_version=__version__, sites=sites,
                      created_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                      dtype=DTYPES.get(first.dtype, str(first.dtype)) if first is not None else "float32",
                      recipe=recipe, recipe_sha256=recipe_hash(recipe), tensors_sha256=tensor_hash(tensors))
        values.update(fields, model_id=model_id, architecture=architecture, adapter=adapter,
                      hidden_size=hidden_size, num_layers=num_layers, direction=direction, gate=gate)
        try:
            manifest = BundleManifest.model_validate(values)
        except ValidationError as e:
            raise BundleError("bundle manifest is invalid", _validation_problems(e, "<in-memory bundle>")) from None
        return cls(dict(tensors), manifest)

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically: a reader sees the old file or the whole new one, never a partial one."""
        path = Path(path)
        problems = _check(self.tensors, self.manifest, str(path))  # tensors may be mutated in place
        if problems:
            raise BundleError(f"refusing to write {path}: bundle does not match its manifest", problems)
        blob = safetensors.torch.save({k: v.detach().cpu().contiguous() for k, v in self.tensors.items()},
                                      metadata=_encode(self.manifest))
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            tmp = None
            _fsync_dir(path.parent)
        except OSError as e:
            raise BundleError(f"cannot write bundle {path}", [_problem(
                str(path), f"write failed: {e.strerror or e}", "SK411",
                hint="check the folder exists, is writable and has free space")]) from None
        finally:  # also runs on KeyboardInterrupt: never leave temp litter
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, expect: ModelFingerprint | None = None) -> "Bundle":
        """Read and fully verify a bundle; ``expect`` also checks it fits the target model."""
        path = Path(path)
        where = str(path)
        blob, meta = _read(path, where)
        manifest = _decode(meta, where)
        try:
            tensors = safetensors.torch.load(blob)
        except _DECODE_ERRORS as e:
            raise BundleError(f"cannot read bundle {where}", [_problem(
                where, f"tensor data is corrupt: {e}", "SK402", hint=_REEXTRACT)]) from None
        problems = _check(tensors, manifest, where)
        if problems:
            raise BundleError(f"{where} is not a valid steerkit bundle", problems)
        bundle = cls(tensors, manifest)
        if expect is not None:
            bundle.check_fits(expect, where)
        return bundle

    def check_fits(self, expect: ModelFingerprint, where: str = "<in-memory bundle>") -> None:
        """Raise naming every field where the bundle and the model disagree (got vs expected)."""
        problems = [
            _problem(where, f"bundle was made for {field} {getattr(self.manifest, field)!r} but the model has "
                     f"{getattr(expect, field)!r}", "SK410", field,
                     f"re-extract for this model (steerkit extract RECIPE), or load {self.manifest.model_id!r}")
            for field in ("architecture", "hidden_size", "num_layers")
            if getattr(self.manifest, field) != getattr(expect, field)
        ]
        if problems:
            raise BundleError(f"{where} does not fit the model", problems)

    def layers(self, site: str) -> list[int]:
        """The layers this bundle steers at ``site``, ascending."""
        if site not in self.manifest.sites:
            raise BundleError(f"bundle has no site {site!r}", [_problem(
                "<bundle>", f"unknown site {site!r}", "SK412", "sites", choices_hint(site, self.manifest.sites))])
        return list(self.manifest.sites[site])

    def _get(self, kind: str, site: str, layer: int) -> torch.Tensor:
        layers = self.layers(site)
        resolved = layer + self.manifest.num_layers if layer < 0 else layer  # negative counts from the end
        name = f"{kind}.{site}.{resolved}"
        if resolved not in layers or name not in self.tensors:
            hint = f"valid layers for {site}: {layers}" if kind == "direction" or self.manifest.needs_gate \
                else f"gate rule {self.manifest.gate['rule']!r} has no gate vectors"
            raise BundleError(f"bundle has no {name}", [_problem("<bundle>", f"no tensor {name!r}", "SK412",
                                                                 f"sites.{site}", hint)])
        return self.tensors[name]

    def direction(self, site: str, layer: int) -> torch.Tensor:
        return self._get("direction", site, layer)

    def gate(self, site: str, layer: int) -> torch.Tensor:
        return self._get("gate", site, layer)


def _fsync_dir(folder: Path) -> None:
    """Persist the rename itself; best effort because not every OS/filesystem allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
