"""The portable direction bundle: one ``.safetensors`` file of steering tensors plus a manifest.

Why (house-style §4.5): safetensors runs no code on load (unlike pickle) and its ``__metadata__``
travels with the tensors, so a bundle is self-describing and safe to share. ``load`` treats every
file as hostile: header bounds are checked before parsing, reads are exact-length, and every failure
is a ``BundleError`` naming the file (never a traceback, hang or huge allocation). ``save`` refuses
what ``load`` would refuse and is atomic. No model stack imports here: ``steerkit inspect`` uses it.
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
from typing import Any, Literal

import safetensors.torch
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from safetensors import SafetensorError

from steerkit import __version__
from steerkit.errors import BundleError, Problem, choices_hint

FORMAT = "steerkit.bundle"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})
MAX_HEADER_BYTES = 100 * 1024 * 1024  # real headers are KBs; the cap stops a forged length allocating
GATELESS_RULES = frozenset({"always_on", "cosine_threshold"})  # rules that read no gate vectors
DTYPES = {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32",
          torch.float64: "float64"}
_NAME = re.compile(r"^(direction|gate)\.([a-z][a-z0-9_]*)\.(0|[1-9][0-9]*)$")
_SHA = r"^[0-9a-f]{64}$"
_REEXTRACT = "re-extract the bundle (steerkit extract RECIPE -o BUNDLE); do not edit bundles by hand"
# Manifest fields stored as raw metadata strings; every other field is JSON-encoded.
_RAW = frozenset({"format", "steerkit_version", "created_at", "model_id", "model_revision", "architecture",
                  "dtype", "recipe_sha256", "tensors_sha256"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class AdapterRef(_Strict):
    """Which adapter mapped site names to modules, pinned by the sha256 of its YAML."""

    name: str = Field(min_length=1)
    sha256: str = Field(pattern=_SHA)
    schema_version: int = 1


class DataRef(_Strict):
    """A data set the bundle was fitted on: recorded by hash, never embedded."""

    path: str
    sha256: str = Field(pattern=_SHA)
    n: int = Field(ge=0)


class BundleManifest(_Strict):
    """Everything needed to trust and reuse the tensors: provenance, dimensions, integrity hashes."""

    format: Literal["steerkit.bundle"] = FORMAT
    format_version: int = FORMAT_VERSION
    steerkit_version: str
    created_at: str  # UTC ISO 8601; outside tensors_sha256 so identical re-runs hash the same
    model_id: str = Field(min_length=1)
    model_revision: str | None = None
    architecture: str = Field(min_length=1)
    adapter: AdapterRef
    hidden_size: int = Field(gt=0)
    num_layers: int = Field(gt=0)
    dtype: Literal["float16", "bfloat16", "float32", "float64"]  # of direction/gate tensors
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
        """Bundles are compared across machines; local times would be ambiguous."""
        offset = datetime.fromisoformat(v.replace("Z", "+00:00")).utcoffset()  # ValueError: not ISO 8601
        if offset is None or offset.total_seconds() != 0:
            raise ValueError("created_at must be UTC (end with Z or +00:00)")
        return v

    @field_validator("direction", "gate", "recipe")
    @classmethod
    def _json(cls, v: dict) -> dict:
        """Hold only what survives the metadata round trip (tuples -> lists), so save->load is identity."""
        return json.loads(json.dumps(v, allow_nan=False, ensure_ascii=False))  # ValueError: NaN/inf

    @field_validator("sites")
    @classmethod
    def _sites(cls, v: dict[str, list[int]]) -> dict[str, list[int]]:
        """Site names are tensor-name parts (no dots); layers are stored resolved and sorted."""
        for site, layers in v.items():
            if not re.fullmatch(r"[a-z][a-z0-9_]*", site) or not layers or len(set(layers)) != len(layers):
                raise ValueError(f"sites.{site}: want a lowercase snake_case site and distinct layers")
        return {site: sorted(layers) for site, layers in v.items()}

    @model_validator(mode="after")
    def _consistent(self) -> BundleManifest:
        """Cross-field rules: a named method and rule, and every layer inside the model."""
        if not isinstance(self.direction.get("method"), str) or not isinstance(self.gate.get("rule"), str):
            raise ValueError('direction needs a "method" and gate a "rule" (e.g. "always_on")')
        shared = self.gate.get("layer")
        if shared is not None and (type(shared) is not int or not 0 <= shared < self.num_layers):
            raise ValueError(f"gate.layer {shared!r} is not a layer in 0..{self.num_layers - 1}")
        for site, layers in self.sites.items():
            if layers[0] < 0 or layers[-1] >= self.num_layers:
                raise ValueError(f"sites.{site} {layers} is outside layers 0..{self.num_layers - 1}")
        return self

    def gate_layers(self, site: str) -> list[int]:
        """Layers holding gate.<site>.<layer>: none for gateless rules, the one shared read layer
        when ``gate["layer"]`` is set (recipe ``gate.layer``), else one per steered layer."""
        if self.gate["rule"] in GATELESS_RULES:
            return []
        return [self.gate["layer"]] if self.gate.get("layer") is not None else list(self.sites[site])


@dataclass(frozen=True)
class ModelFingerprint:
    """The model facts a bundle must match; read from a config, no weights needed."""

    architecture: str
    hidden_size: int
    num_layers: int


def tensor_hash(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over sorted names, dtypes, shapes and raw bytes, each length-prefixed so none can blur."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes()  # bfloat16 has no numpy twin: view bytes
        for part in (name.encode(), DTYPES.get(t.dtype, str(t.dtype)).encode(), str(list(t.shape)).encode(), raw):
            h.update(struct.pack("<Q", len(part)) + part)
    return h.hexdigest()


def recipe_hash(recipe: dict) -> str:
    """sha256 of the resolved recipe's sorted-key JSON: equals ``Recipe.sha256()`` for ``recipe.dump()``."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, streamed so large data files never sit in memory."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _problem(where: str, msg: str, code: str, key: str | None = None, hint: str = _REEXTRACT) -> Problem:
    """Bundle problems share a shape: the file, the field or tensor, and a default fix."""
    return Problem(message=msg, path=where, key_path=key, hint=hint, code=code)


def _check(tensors: dict[str, Any], m: BundleManifest, where: str) -> list[Problem]:
    """Every way tensors and manifest can disagree, collected so the user sees them all at once."""
    out: list[Problem] = []
    wanted = {f"direction.{site}.{layer}" for site, layers in m.sites.items() for layer in layers}
    wanted |= {f"gate.{site}.{layer}" for site in m.sites for layer in m.gate_layers(site)}
    out += [_problem(where, f"tensor {n!r} is missing but manifest.sites lists it", "SK406", "sites")
            for n in sorted(wanted - tensors.keys())]
    for name, t in sorted(tensors.items()):
        if not isinstance(t, torch.Tensor):
            out.append(_problem(where, f"{name!r} is a {type(t).__name__}, not a tensor", "SK407", name))
            continue
        steering = _NAME.match(name)
        if steering and name not in wanted:
            out.append(_problem(where, f"unexpected tensor {name!r}: manifest sites {m.sites} and gate rule "
                                f"{m.gate['rule']!r} (layer {m.gate.get('layer')}) do not call for it", "SK406", name))
        elif not steering and not name.startswith("stats."):
            out.append(_problem(where, f"unknown tensor name {name!r}; expected direction.<site>.<layer>, "
                                "gate.<site>.<layer> or stats.*", "SK406", name))
        if t.dtype not in DTYPES:
            out.append(_problem(where, f"{name!r} has dtype {t.dtype}; expected a float dtype, one of "
                                f"{sorted(DTYPES.values())}", "SK407", name))
        elif steering and (DTYPES[t.dtype] != m.dtype or tuple(t.shape) != (m.hidden_size,)):
            out.append(_problem(where, f"{name!r} is {DTYPES[t.dtype]}{list(t.shape)} but the manifest "
                                f"says dtype={m.dtype}, hidden_size={m.hidden_size}", "SK407", name))
        elif not bool(torch.isfinite(t).all()):
            out.append(_problem(where, f"{name!r} contains NaN or infinite values", "SK408", name))
    if not out and tensor_hash(tensors) != m.tensors_sha256:
        out.append(_problem(where, "tensors_sha256 does not match the tensors: the file is corrupt or "
                            "was edited", "SK409", "tensors_sha256"))
    return out


def _pydantic_problems(err: ValidationError, where: str) -> list[Problem]:
    """One Problem per pydantic error, keyed by the manifest field it concerns."""
    def hint(e: Any) -> str:
        if e["type"] == "extra_forbidden" and e["loc"]:
            return "remove it; " + choices_hint(str(e["loc"][0]), BundleManifest.model_fields)
        return _REEXTRACT

    return [_problem(where, f"{e['msg']} (got {repr(e.get('input'))[:80]})", "SK405",
                     ".".join(map(str, e["loc"])) or None, hint(e)) for e in err.errors()]


def _encode(m: BundleManifest) -> dict[str, str]:
    """safetensors metadata is str -> str: strings stay raw, None is omitted, the rest is JSON."""
    dumped = m.model_dump(mode="json").items()
    return {k: v if k in _RAW else json.dumps(v, ensure_ascii=False) for k, v in dumped if v is not None}


def _decode(meta: dict[str, str], where: str) -> BundleManifest:
    """Inverse of ``_encode``; every failure is a BundleError naming the key."""
    fields, problems = {}, []
    for key, text in meta.items():  # unknown keys stay raw so pydantic reports them as extra_forbidden
        try:
            fields[key] = text if key in _RAW or key not in BundleManifest.model_fields else json.loads(text)
        except (ValueError, RecursionError):
            problems.append(_problem(where, f"metadata value is not JSON: {text[:60]!r}", "SK405", key))
    if problems:
        raise BundleError(f"{where} has a corrupt manifest", problems)
    try:
        return BundleManifest.model_validate(fields)
    except ValidationError as e:
        raise BundleError(f"{where} has an invalid manifest", _pydantic_problems(e, where)) from None


def _read(path: Path, where: str) -> tuple[bytes, dict[str, str]]:
    """Read with bounded, exact-length reads; return the file's bytes and its string metadata."""
    def bad(msg: str, code: str = "SK402", hint: str = "the file is truncated or is not a safetensors "
            "file; copy it again or re-extract it") -> BundleError:
        return BundleError(f"cannot read bundle {where}", [_problem(where, msg, code, hint=hint)])

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
            head, rest = f.read(n), f.read(size - 8 - n)
    except OSError as e:
        raise bad(f"cannot open: {e.strerror or e}", "SK401", "check the path and its permissions") from None
    if len(head) != n or len(rest) != size - 8 - n:
        raise bad("file changed size while being read")
    try:
        header = json.loads(head.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise bad(f"header is not valid UTF-8 JSON ({type(e).__name__})") from None
    meta = header.get("__metadata__") or {} if isinstance(header, dict) else None
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise bad("header is not a safetensors JSON object with string-only __metadata__")
    if meta.get("format") != FORMAT:
        raise bad(f"not a steerkit bundle: metadata 'format' is {meta.get('format')!r}, expected {FORMAT!r}",
                  "SK403", "pass a file written by Bundle.save or steerkit extract")
    version = meta.get("format_version", "")
    if not re.fullmatch(r"[0-9]{1,9}", version) or int(version) not in SUPPORTED_VERSIONS:
        raise bad(f"format_version {version!r} is not supported (steerkit {__version__} reads "
                  f"{sorted(SUPPORTED_VERSIONS)})", "SK404", "upgrade steerkit, or re-extract with this one")
    return struct.pack("<Q", n) + head + rest, meta


@dataclass(frozen=True)
class Bundle:
    """Steering tensors (``<kind>.<site>.<layer>``) plus their manifest; always valid once built."""

    tensors: dict[str, torch.Tensor]
    manifest: BundleManifest

    def __post_init__(self) -> None:
        """Refuse to exist in an inconsistent state, so every holder of a Bundle can trust it."""
        problems = _check(self.tensors, self.manifest, "<in-memory bundle>")
        if problems:
            raise BundleError("bundle tensors do not match its manifest", problems)

    @classmethod
    def create(cls, tensors: dict[str, torch.Tensor], *, model_id: str, architecture: str, adapter: dict,
               hidden_size: int, num_layers: int, direction: dict, gate: dict, **fields: Any) -> Bundle:
        """Build a bundle, deriving sites, dtype, hashes, time and version from the tensors.

        ``fields`` sets any other manifest field (``model_revision``, ``data``, ``recipe``, ``extra``)
        or overrides a derived one. Raises ``BundleError`` listing every problem.
        """
        sites: dict[str, list[int]] = {}
        for m in filter(None, map(_NAME.match, sorted(tensors))):
            if m.group(1) == "direction":
                sites.setdefault(m.group(2), []).append(int(m.group(3)))
        first = next((t for n, t in sorted(tensors.items()) if _NAME.match(n)), None)
        ok = all(isinstance(t, torch.Tensor) for t in tensors.values())  # else __post_init__ reports it
        values: dict[str, Any] = dict(
            steerkit_version=__version__, sites=sites, recipe={},
            created_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            dtype=DTYPES.get(getattr(first, "dtype", None), "float32"),
            tensors_sha256=tensor_hash(tensors) if ok else "0" * 64)
        values.update(fields, model_id=model_id, architecture=architecture, adapter=adapter,
                      hidden_size=hidden_size, num_layers=num_layers, direction=direction, gate=gate)
        try:
            values.setdefault("recipe_sha256", recipe_hash(values["recipe"]))
            manifest = BundleManifest.model_validate(values)
        except (TypeError, ValueError) as e:  # ValidationError is a ValueError
            problems = _pydantic_problems(e, "<in-memory bundle>") if isinstance(e, ValidationError) \
                else [_problem("<in-memory bundle>", f"recipe is not JSON-encodable: {e}", "SK405", "recipe")]
            raise BundleError("bundle manifest is invalid", problems) from None
        return cls(dict(tensors), manifest)

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically: readers see the old file or the whole new one, never a partial one."""
        path = Path(path)
        problems = _check(self.tensors, self.manifest, str(path))  # tensors may have been edited in place
        if problems:
            raise BundleError(f"refusing to write {path}: bundle does not match its manifest", problems)
        # clone: safetensors refuses tensors sharing storage (e.g. rows of one stacked matrix)
        blob = safetensors.torch.save({k: v.detach().cpu().contiguous().clone() for k, v in self.tensors.items()},
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
        except OSError as e:
            raise BundleError(f"cannot write bundle {path}", [_problem(
                str(path), f"write failed: {e.strerror or e}", "SK411",
                hint="check that the folder is writable and has free space")]) from None
        finally:  # also runs on KeyboardInterrupt: never leave temp litter
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, expect: ModelFingerprint | None = None) -> Bundle:
        """Read and fully verify a bundle; with ``expect``, also check that it fits the target model."""
        where = str(path)
        blob, meta = _read(Path(path), where)
        manifest = _decode(meta, where)
        try:  # all a hostile file can provoke inside safetensors/torch while decoding tensor data
            tensors = safetensors.torch.load(blob)
        except (SafetensorError, ValueError, OSError, TypeError, KeyError, OverflowError, RuntimeError) as e:
            raise BundleError(f"cannot read bundle {where}", [_problem(
                where, f"tensor data is corrupt: {e}", "SK402")]) from None
        problems = _check(tensors, manifest, where)
        if problems:
            raise BundleError(f"{where} is not a valid steerkit bundle", problems)
        bundle = cls(tensors, manifest)
        if expect is not None:
            bundle.check_fits(expect, where)
        return bundle

    def check_fits(self, expect: ModelFingerprint, where: str = "<in-memory bundle>") -> None:
        """Raise naming every field where bundle and model disagree (got vs expected)."""
        problems = [
            _problem(where, f"bundle was made for {f} {getattr(self.manifest, f)!r} but the model has "
                     f"{getattr(expect, f)!r}", "SK410", f,
                     f"re-extract for this model (steerkit extract RECIPE), or load {self.manifest.model_id!r}")
            for f in ("architecture", "hidden_size", "num_layers")
            if getattr(self.manifest, f) != getattr(expect, f)]
        if problems:
            raise BundleError(f"{where} does not fit the model", problems)

    def layers(self, site: str) -> list[int]:
        """The layers this bundle steers at ``site``, ascending."""
        if site not in self.manifest.sites:
            raise BundleError(f"bundle has no site {site!r}", [_problem(
                "<bundle>", f"unknown site {site!r}", "SK412", "sites", choices_hint(site, self.manifest.sites))])
        return list(self.manifest.sites[site])

    def _get(self, kind: str, site: str, layer: int) -> torch.Tensor:
        """Shared lookup, so both accessors resolve layers and report misses the same way."""
        layers = self.layers(site)
        resolved = layer + self.manifest.num_layers if layer < 0 else layer  # negative counts from the end
        name = f"{kind}.{site}.{resolved}"
        if name not in self.tensors:
            raise BundleError(f"bundle has no {name}", [_problem(
                "<bundle>", f"no tensor {name!r} (gate rule {self.manifest.gate['rule']!r})", "SK412",
                f"sites.{site}", f"valid layers for {site}: {layers}")])
        return self.tensors[name]

    def direction(self, site: str, layer: int) -> torch.Tensor:
        """The steering direction r_l at ``site``/``layer`` (negative layers count from the end)."""
        return self._get("direction", site, layer)

    def gate(self, site: str, layer: int) -> torch.Tensor:
        """The gate vector g_l at ``site``/``layer``; ``BundleError`` when the gate rule has none."""
        return self._get("gate", site, layer)
