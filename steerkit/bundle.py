"""The portable direction bundle: one ``.safetensors`` file of steering tensors plus a manifest.

safetensors runs no code on load (unlike pickle) and its ``__metadata__`` travels with the tensors, so a
bundle is self-describing and safe to share (house-style §4.5). ``load`` treats files as hostile: bounded
reads, and every failure a ``BundleError`` naming the file. ``save`` is atomic. Imports no model stack."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
import struct
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

import safetensors.torch
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from safetensors import SafetensorError

from steerkit import __version__
from steerkit.bounded_io import file_kind
from steerkit.errors import BundleError, Problem, choices_hint

FORMAT = "steerkit.bundle"
FORMAT_VERSION, SUPPORTED_VERSIONS = 1, frozenset({1})  # bump on any incompatible change
MAX_HEADER_BYTES = 100 * 1024 * 1024  # real headers are KBs; the cap stops a forged length allocating
GATELESS_RULES = frozenset({"always_on", "cosine_threshold"})  # rules that read no gate vectors
DTYPES = {getattr(torch, n): n for n in ("float16", "bfloat16", "float32", "float64")}
_NAME = re.compile(r"^(direction|gate)\.([a-z][a-z0-9_]*)\.(0|[1-9][0-9]*)$")
# prototype gates (rule "prototype"): K unit vectors per gate layer, beside the centre in gate.<site>.<layer>
_PROTO = re.compile(r"^gate_(?:proto|center|scale|whiten)\.([a-z][a-z0-9_]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$")
_SHA = r"^[0-9a-f]{64}$"
_Site = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]  # a tensor-name part: no dots
_UTC = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|\+00:00)$"  # UTC only
_MEM = "<in-memory bundle>"
_REEXTRACT = "re-extract the bundle (steerkit extract RECIPE -o BUNDLE); do not edit bundles by hand"
_RAW = frozenset({"format", "steerkit_version", "created_at", "model_id", "model_revision", "architecture",
                  "dtype", "recipe_sha256", "tensors_sha256"})  # stored as raw strings; other fields as JSON


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

    format: Literal["steerkit.bundle"] = "steerkit.bundle"  # FORMAT
    format_version: int = FORMAT_VERSION
    steerkit_version: str
    created_at: str = Field(pattern=_UTC)  # not in tensors_sha256, so identical re-runs hash the same
    model_id: str = Field(min_length=1)
    model_revision: str | None = None
    architecture: str = Field(min_length=1)
    adapter: AdapterRef
    hidden_size: int = Field(gt=0)
    num_layers: int = Field(gt=0)
    dtype: Literal["float16", "bfloat16", "float32", "float64"]  # of every direction/gate tensor
    sites: dict[_Site, Annotated[list[int], Field(min_length=1)]] = Field(min_length=1)  # -> steered layers
    direction: dict[str, Any]  # {"method": ..., details}
    gate: dict[str, Any]  # {"rule": ..., params, fitted stats; optional "layer": shared read layer}
    data: dict[str, DataRef] = Field(default_factory=dict)  # name -> hash of each data set used
    recipe: dict[str, Any] = Field(default_factory=dict)  # the resolved recipe
    strength: dict[str, Any] | None = None  # steer.strength.search: chosen "lambda" and the scored grid
    recipe_sha256: str = Field(pattern=_SHA)
    tensors_sha256: str = Field(pattern=_SHA)
    extra: dict[str, str] = Field(default_factory=dict)
    # model / world / data / fit-settings fingerprints (steerkit.fingerprint); None in older bundles
    fitted_on: dict[str, Any] | None = None

    @field_validator("direction", "gate", "recipe", "strength", "fitted_on")
    @classmethod
    def _json(cls, v: dict | None) -> dict | None:
        """Hold only what survives the metadata round trip (tuples -> lists), so save->load is identity."""
        if v is None:
            return None
        try:
            return json.loads(json.dumps(v, allow_nan=False, ensure_ascii=False))
        except (TypeError, RecursionError) as e:  # pydantic only reports ValueErrors (NaN, inf)
            raise ValueError(str(e)) from None

    @model_validator(mode="after")
    def _consistent(self) -> BundleManifest:
        """Cross-field rules: a named method and rule, and every layer inside the model."""
        if not isinstance(self.direction.get("method"), str) or not isinstance(self.gate.get("rule"), str):
            raise ValueError('direction needs a "method" and gate a "rule" (e.g. "always_on")')
        lam = (self.strength or {}).get("lambda")
        if self.strength is not None and not (type(lam) in (int, float) and math.isfinite(float(lam))):  # type: ignore[arg-type]
            raise ValueError(f"strength.lambda must be a finite number, got {lam!r}")
        shared, n = self.gate.get("layer"), self.num_layers
        if shared is not None and (type(shared) is not int or not 0 <= shared < n):
            raise ValueError(f"gate.layer {shared!r} is not a layer in 0..{n - 1}")
        for site, layers in self.sites.items():  # one canonical form, so equal bundles compare equal
            if layers != sorted(set(layers)) or layers[0] < 0 or layers[-1] >= n:
                raise ValueError(f"sites.{site} {layers}: want ascending distinct layers in 0..{n - 1}")
        return self

    def gate_layers(self, site: str) -> list[int]:
        """Layers of gate.<site>.<layer>: none (gateless), the shared ``gate["layer"]``, or each steered."""
        if self.gate["rule"] in GATELESS_RULES or site not in self.sites:
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
        for part in (name.encode(), f"{DTYPES.get(t.dtype, t.dtype)}{list(t.shape)}".encode(), raw):
            h.update(struct.pack("<Q", len(part)) + part)
    return h.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, streamed so large data files never sit in memory."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _problem(where: str, msg: str, code: str, key: str | None = None, hint: str = _REEXTRACT) -> Problem:
    return Problem(message=msg, path=where, key_path=key, hint=hint, code=code)


def _prototype_lists(gate: dict, where: str) -> list[Problem]:
    """Per-prototype lists in the manifest: one entry per prototype (linear is optional, older bundles)."""
    k, n_w = gate.get("prototypes", 0), gate.get("whitening_matrices", 0)  # checked by _manifest_values
    out = []
    for name, kinds in (("prototype_image", (bool,)), ("prototype_linear", (bool,)), ("prototype_whiten", (int,)),
                        ("prototype_scale", (int, float)), ("prototype_bias", (int, float))):
        v = gate.get(name)
        if v is None and name in ("prototype_linear", "prototype_whiten"):
            continue  # optional: bundles from before these existed
        if name == "prototype_whiten" and not (isinstance(v, list) and all(type(x) is int and -1 <= x < n_w
                                                                         for x in v)):
            out.append(_problem(where, f"manifest gate.prototype_whiten must list {k} integers in "
                                f"-1..{n_w - 1}", "SK406", "gate.prototype_whiten"))
            continue
        if (not isinstance(v, list) or len(v) != k
                or not all(type(x) is bool if bool in kinds else _number(x) for x in v)):
            out.append(_problem(where, f"manifest gate.{name} must list {k} "
                                f"{'booleans' if bool in kinds else 'numbers'} (one per prototype)", "SK406",
                                f"gate.{name}"))
    return out


def _number(v: Any) -> bool:
    """A JSON number that means one: an int or a finite float, never a bool (True is an int in Python)."""
    return type(v) in (int, float) and math.isfinite(v)


def _shown(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False)[:60]


def _manifest_values(m: BundleManifest, names: list[str], where: str) -> list[Problem]:
    """The free-form manifest values compile and the runtime read (gate.bias, gate.scale, counts), checked
    by type and against the tensors present before any name is built from them: a 2 KB file that claims
    10**9 prototypes must cost nothing, and a bias of "abc" must fail here, naming the field (#18)."""
    out, gate, n_layers = [], m.gate, m.num_layers
    n_dir = sum(len(layers) for layers in m.sites.values())
    if n_dir > len(names):
        out.append(_problem(where, f"manifest sites list {n_dir} steered layers but the file holds only "
                            f"{len(names)} tensors", "SK406", "sites"))
    bias = gate.get("bias", {})
    if not isinstance(bias, dict) or not all(_number(v) for v in bias.values()):
        out.append(_problem(where, f'manifest gate.bias must map layers to numbers, e.g. {{"3": -0.5}} (got '
                            f"{_shown(bias)})", "SK406", "gate.bias"))
    elif any(not re.fullmatch(r"0|[1-9][0-9]{0,8}", k) or int(k) >= n_layers for k in bias):
        out.append(_problem(where, f"manifest gate.bias keys must be layers in 0..{n_layers - 1} (got "
                            f"{_shown(sorted(bias)[:5])})", "SK406", "gate.bias"))
    if "scale" in gate and not _number(gate["scale"]):
        out.append(_problem(where, f"manifest gate.scale must be a number (got {_shown(gate['scale'])})",
                            "SK406", "gate.scale"))
    zero = m.direction.get("zero_layers", [])
    if not isinstance(zero, list) or not all(type(x) is int and 0 <= x < n_layers for x in zero):
        out.append(_problem(where, f"manifest direction.zero_layers must list layers in 0..{n_layers - 1} "
                            f"(got {_shown(zero)})", "SK406", "direction.zero_layers"))
    if gate.get("rule") == "prototype":
        k, n_w = gate.get("prototypes", 0), gate.get("whitening_matrices", 0)
        n_proto = sum(1 for n in names if n.startswith("gate_proto."))
        if type(k) is not int or not 0 <= k <= n_proto:
            out.append(_problem(where, f"manifest gate.prototypes must count the gate_proto tensors present "
                                f"(0..{n_proto}); got {_shown(k)}", "SK406", "gate.prototypes"))
        if type(n_w) is not int or not 0 <= n_w <= 2:
            out.append(_problem(where, f"manifest gate.whitening_matrices must be 0, 1 or 2; got {_shown(n_w)}",
                                "SK406", "gate.whitening_matrices"))
        if not out:
            out += _prototype_lists(gate, where)
    return out


def _check(tensors: dict[str, Any], m: BundleManifest, where: str) -> list[Problem]:
    """Every way tensors and manifest can disagree, collected so the user sees them all at once."""
    out = _manifest_values(m, list(tensors), where)
    if out:  # the names below are built from these counts: never from unchecked ones
        return out
    wanted = {f"direction.{site}.{layer}" for site, layers in m.sites.items() for layer in layers}
    if m.gate.get("rule") != "prototype":  # prototype gates keep per-prototype centres instead
        wanted |= {f"gate.{site}.{layer}" for site in m.sites for layer in m.gate_layers(site)}
    else:
        k, n_w = m.gate.get("prototypes", 0), m.gate.get("whitening_matrices", 0)
        wanted |= {f"gate_{kind}.{site}.{layer}.{i}" for site in m.sites for layer in m.gate_layers(site)
                   for i in range(k) for kind in ("proto", "center", "scale")}
        wanted |= {f"gate_whiten.{site}.{layer}.{i}" for site in m.sites for layer in m.gate_layers(site)
                   for i in range(n_w)}
    out = [_problem(where, f"tensor {n!r} is missing; manifest sites/gate call for it", "SK406", "sites")
           for n in sorted(wanted - tensors.keys())]
    for name, t in sorted(tensors.items()):
        steering = _NAME.match(name) or _PROTO.match(name)
        if steering and name not in wanted:
            out.append(_problem(where, f"unexpected tensor {name!r}: not called for by manifest sites "
                                f"{m.sites} and gate rule {m.gate['rule']!r}", "SK406", name))
        elif not steering and not name.startswith("stats."):
            out.append(_problem(where, f"unknown tensor name {name!r}; expected direction.<site>.<layer>, "
                                "gate.<site>.<layer>, gate_proto.<site>.<layer>.<k> or stats.*", "SK406", name))
        if getattr(t, "dtype", None) not in DTYPES:
            out.append(_problem(where, f"{name!r} has dtype {getattr(t, 'dtype', type(t).__name__)}; "
                                f"expected a float tensor, one of {sorted(DTYPES.values())}", "SK407", name))
        elif steering and (DTYPES[t.dtype] != m.dtype or tuple(t.shape) != (
                (m.hidden_size, m.hidden_size) if name.startswith("gate_whiten.") else (m.hidden_size,))):
            out.append(_problem(where, f"{name!r} is {DTYPES[t.dtype]}{list(t.shape)} but the manifest "
                                f"says dtype={m.dtype}, hidden_size={m.hidden_size}", "SK407", name))
        elif not bool(torch.isfinite(t).all()):
            out.append(_problem(where, f"{name!r} contains NaN or infinite values", "SK408", name))
    if not out and tensor_hash(tensors) != m.tensors_sha256:
        out.append(_problem(where, "tensors_sha256 does not match: the file is corrupt or edited", "SK409",
                            "tensors_sha256"))
    return out


def _pydantic_problems(err: ValidationError, where: str) -> list[Problem]:
    """One Problem per pydantic error, keyed by the manifest field it concerns."""
    out = []
    for e in err.errors():
        got = "" if e["type"] == "missing" else f" (got {repr(e['input'])[:80]})"
        hint = _REEXTRACT if e["type"] != "extra_forbidden" else "remove it; " + choices_hint(
            str(e["loc"][0]), BundleManifest.model_fields)
        out.append(_problem(where, e["msg"] + got, "SK405", ".".join(map(str, e["loc"])) or None, hint))
    return out


def _decode(meta: dict[str, str], where: str) -> BundleManifest:
    """Inverse of the encoding in ``Bundle.save``; every failure is a BundleError naming the key."""
    fields = {}
    for key, text in meta.items():  # unknown keys stay raw so pydantic reports them as extra_forbidden
        try:
            fields[key] = text if key in _RAW or key not in BundleManifest.model_fields else json.loads(text)
        except (ValueError, RecursionError):  # keep the raw text: pydantic then reports this key's type
            fields[key] = text
    try:
        return BundleManifest.model_validate(fields)
    except ValidationError as e:
        raise BundleError(f"{where} has an invalid manifest", _pydantic_problems(e, where)) from None


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise _DuplicateKey(k)
            seen.add(k)
    return out


def _read(path: Path, where: str, fmt: str = FORMAT,
          versions: frozenset = SUPPORTED_VERSIONS) -> tuple[bytes, dict[str, str]]:
    """Return the file's bytes and string metadata. The data is read only once the header passed, so a
    forged length or a huge non-bundle file costs nothing; O_NONBLOCK keeps a FIFO from hanging open.
    ``fmt``/``versions``: what the metadata must declare (``steerkit.bundle_set`` reads merged sets)."""
    def bad(msg: str, code: str = "SK402", hint: str = "the file is truncated or is not a safetensors "
            "file; copy it again or re-extract it") -> BundleError:
        return BundleError(f"cannot read bundle {where}", [_problem(where, msg, code, hint=hint)])
    try:
        with open(path, "rb", opener=lambda p, flags: os.open(p, flags | getattr(os, "O_NONBLOCK", 0))) as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):  # a FIFO, device or socket: never wait on it or read it
                raise bad(f"not a regular file ({file_kind(st.st_mode)})", "SK401", "pass a bundle file")
            size = st.st_size
            if size < 8:
                raise bad(f"file is {size} bytes; a safetensors file starts with an 8-byte header length")
            (n,) = struct.unpack("<Q", f.read(8))
            if n > MAX_HEADER_BYTES or 8 + n > size:
                raise bad(f"header length {n} is impossible for a {size}-byte file (cap {MAX_HEADER_BYTES})")
            head = f.read(n)
            try:
                header = json.loads(head.decode("utf-8"), object_pairs_hook=_unique_keys)
            except _DuplicateKey as e:  # JSON keeps the last of two equal keys: a shadowed tensor (#18)
                raise bad(f"header names {e.args[0]!r} twice (a tensor or metadata key may appear once)") from None
            except (UnicodeDecodeError, ValueError, RecursionError) as e:
                raise bad(f"header is not valid UTF-8 JSON ({type(e).__name__})") from None
            meta = header.get("__metadata__") or {} if isinstance(header, dict) else None
            if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
                raise bad("header is not a safetensors JSON object with string-only __metadata__")
            if meta.get("format") != fmt:
                raise bad(f"not a steerkit bundle: metadata 'format' is {meta.get('format')!r}, not "
                          f"{fmt!r}", "SK403", "pass a file written by Bundle.save or steerkit extract")
            version = meta.get("format_version", "")
            if not re.fullmatch(r"[0-9]{1,9}", version) or int(version) not in versions:
                raise bad(f"format_version {version!r} is not supported (steerkit {__version__} reads "
                          f"{sorted(versions)})", "SK404", "upgrade steerkit or re-extract")
            return struct.pack("<Q", n) + head + f.read(size - 8 - n), meta
    except OSError as e:
        raise bad(f"cannot open: {e.strerror or e}", "SK401", "check the path and its permissions") from None


@dataclass(frozen=True, eq=False)  # eq on tensor dicts would be ambiguous; compare manifests instead
class Bundle:
    """Steering tensors (``<kind>.<site>.<layer>``) plus their manifest; always valid once built."""

    tensors: dict[str, torch.Tensor] = field(repr=False)
    manifest: BundleManifest
    source: str = _MEM  # where it was loaded from, for messages

    def __post_init__(self) -> None:
        """Refuse to exist in an inconsistent state, so every holder of a Bundle can trust it."""
        problems = _check(self.tensors, self.manifest, self.source)
        if problems:
            raise BundleError(f"{self.source} is not a valid steerkit bundle", problems)

    @classmethod
    def create(cls, tensors: dict[str, torch.Tensor], *, model_id: str, architecture: str, adapter: dict,
               hidden_size: int, num_layers: int, direction: dict, gate: dict, **fields: Any) -> Bundle:
        """Build a bundle, deriving sites, dtype and hashes from the tensors; ``fields`` sets any other
        manifest field (``model_revision``, ``data``, ``recipe``, ``extra``) or overrides a derived one."""
        found = [m for m in map(_NAME.match, tensors) if m and m.group(1) == "direction"]
        sites = {s: sorted(int(m.group(3)) for m in found if m.group(2) == s)
                 for s in sorted({m.group(2) for m in found})}
        first = next((t for n, t in sorted(tensors.items()) if _NAME.match(n)), None)
        values: dict[str, Any] = dict(
            steerkit_version=__version__, created_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            sites=sites, recipe={}, dtype=DTYPES.get(getattr(first, "dtype", None), "float32"),
            tensors_sha256=tensor_hash({k: t for k, t in tensors.items() if isinstance(t, torch.Tensor)}))
        values.update(fields, model_id=model_id, architecture=architecture, adapter=adapter,
                      hidden_size=hidden_size, num_layers=num_layers, direction=direction, gate=gate)
        recipe_json = json.dumps(values["recipe"], sort_keys=True, default=repr)  # as Recipe.sha256() hashes it
        values.setdefault("recipe_sha256", hashlib.sha256(recipe_json.encode()).hexdigest())
        try:
            manifest = BundleManifest.model_validate(values)
        except ValidationError as e:
            raise BundleError("bundle manifest is invalid", _pydantic_problems(e, _MEM)) from None
        return cls(dict(tensors), manifest)

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically: readers see the old file or the whole new one, never a partial one."""
        path = Path(path)
        type(self)(self.tensors, self.manifest, f"{path} (not written)")  # tensors may have been edited
        meta = {k: v if k in _RAW else json.dumps(v, ensure_ascii=False)  # metadata is str -> str
                for k, v in self.manifest.model_dump(mode="json").items() if v is not None}
        tmp = None
        try:  # UnicodeEncodeError: a lone surrogate in a metadata string; clone: no shared storage
            blob = safetensors.torch.save(
                {k: v.detach().cpu().contiguous().clone() for k, v in self.tensors.items()}, metadata=meta)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                os.chmod(tmp, 0o644)  # mkstemp makes 0600; a bundle is meant to be shared
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            tmp = None
        except (OSError, UnicodeEncodeError) as e:
            raise BundleError(f"cannot write bundle {path}", [_problem(
                str(path), f"write failed: {getattr(e, 'strerror', None) or e}", "SK411",
                hint="check the folder is writable and has space, and manifest text is valid UTF-8")]) from None
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
        try:  # everything a hostile file can provoke inside safetensors/torch while decoding tensors
            tensors = safetensors.torch.load(blob)
        except (SafetensorError, ValueError, OSError, TypeError, KeyError, OverflowError, RuntimeError) as e:
            raise BundleError(f"cannot read bundle {where}", [_problem(
                where, f"tensor data is corrupt: {e}", "SK402")]) from None
        bundle = cls(tensors, manifest, where)
        if expect is not None:
            bundle.check_fits(expect)
        return bundle

    def check_fits(self, expect: ModelFingerprint) -> None:
        """Raise naming every field where bundle and model disagree (got vs expected)."""
        m = self.manifest
        problems = [_problem(self.source, f"bundle was made for {f} {getattr(m, f)!r} but the model has "
                             f"{getattr(expect, f)!r}", "SK410", f, "re-extract for this model (steerkit "
                             f"extract RECIPE), or load {m.model_id!r}")
                    for f in ("architecture", "hidden_size", "num_layers")
                    if getattr(m, f) != getattr(expect, f)]
        if problems:
            raise BundleError(f"{self.source} does not fit the model", problems)

    def layers(self, site: str) -> list[int]:
        """The layers this bundle steers at ``site``, ascending."""
        if site not in self.manifest.sites:
            hint = choices_hint(site, self.manifest.sites)
            raise BundleError(f"bundle has no site {site!r}", [_problem(self.source, f"unknown site {site!r}",
                                                                        "SK412", "sites", hint)])
        return list(self.manifest.sites[site])

    def _get(self, kind: str, site: str, layer: int) -> torch.Tensor:
        """Shared lookup, so both accessors resolve layers and report misses the same way."""
        valid = self.layers(site)  # raises for an unknown site
        valid = valid if kind == "direction" else self.manifest.gate_layers(site)
        name = f"{kind}.{site}.{layer + self.manifest.num_layers if layer < 0 else layer}"
        if name not in self.tensors:
            raise BundleError(f"bundle has no {name}", [_problem(
                self.source, f"no tensor {name!r} (gate rule {self.manifest.gate['rule']!r})", "SK412",
                f"sites.{site}", f"{kind} layers for {site}: {valid}")])
        return self.tensors[name]

    def direction(self, site: str, layer: int) -> torch.Tensor:
        """The steering direction r_l at ``site``/``layer`` (negative layers count from the end)."""
        return self._get("direction", site, layer)

    def gate(self, site: str, layer: int) -> torch.Tensor:
        """The gate vector g_l at ``site``/``layer``; with a shared gate, ``layer`` is its read layer."""
        return self._get("gate", site, layer)
