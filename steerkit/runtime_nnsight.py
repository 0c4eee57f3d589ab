"""Executes a Plan: the only module that imports nnsight.

``Steerer`` runs a local model through plain torch hooks at the plan's sites (``runtime_hooks``, the fast
path) and a remote run, or an nnsight model, inside nnsight traces; both share ``runtime_common`` and give
the same results bit for bit.

The traced code touches only tensors that are either in the plan (vectors, floats) or computed from the
model's own activations, so the same plan can run on a model sharded with ``device_map`` (vectors are
moved to each activation's device) or be shipped to a remote nnsight backend. ``steer(model, plan)``
never edits the model: on exit the model is exactly the original.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Iterator, Optional, Sequence

import nnsight
import torch
from nnsight import NNsight
from nnsight.intervention.envoy import Envoy

from .errors import Problem, SteeringRuntimeError
from .compose import PlanStack
from .ops import apply_op
from .plan import Plan, SiteRef
from .positions import decode_masks, prompt_masks, union
from .runtime_common import Vectors, apply_write, gate_value, shared_gate  # noqa: F401 (gate_value: API)
from .runtime_hooks import HookExecutor


@contextlib.contextmanager
def wrapped(model: torch.nn.Module) -> Iterator[NNsight]:
    """An nnsight wrapper that is removed again on exit, so the module is left exactly as it was.

    NNsight instruments every submodule (an instance ``forward`` and ``__nnsight__``); we record which
    modules were plain before and strip only those, so a wrapper opened by an outer caller survives."""
    if isinstance(model, Envoy):  # NNsight, or an nnsight model class (TransformersModel, ...)
        yield model
        return
    plain = [m for m in model.modules() if "forward" not in m.__dict__ and "__nnsight__" not in m.__dict__]
    try:
        yield NNsight(model)
    finally:
        for m in plain:
            m.__dict__.pop("forward", None)
            m.__dict__.pop("__nnsight__", None)


def resolve(envoy: Any, path: str) -> Any:
    for part in path.split("."):
        envoy = envoy[int(part)] if part.isdigit() else getattr(envoy, part)
    return envoy


def _read(envoy: Any, ref: SiteRef) -> torch.Tensor:
    value = envoy.input if ref.io == "input" else envoy.output
    return value[ref.output_index] if ref.output_index is not None else value


def _write(envoy: Any, ref: SiteRef, value: torch.Tensor) -> None:
    if ref.io == "input":
        envoy.input = value
    elif ref.output_index is not None:
        out = envoy.output
        envoy.output = (*out[:ref.output_index], value, *out[ref.output_index + 1:])
    else:
        envoy.output = value


def image_token_id_of(model: torch.nn.Module, plan: Plan | PlanStack) -> Optional[int]:
    if not plan.image_token_config:
        return None
    node: Any = getattr(model, "config", None)
    for part in plan.image_token_config.split("."):
        node = getattr(node, part, None)
    return int(node) if node is not None else None


# The traced code below is module-level functions of plan data, the nnsight envoy and the activations it
# reads: nothing refers to the Steerer or the local process, so nnsight can ship it to a remote backend
# (``remote=True``; ``remote="local"`` rehearses that serialisation with steerkit hidden).

def apply_writes(nn: Any, plan: Plan | PlanStack, vectors: Vectors, masks: dict, gates: dict, writes=None) -> None:
    """Run every write in forward order. ``gates`` keeps per-row gate values across decode steps: the
    gate reads the prompt once, at prefill, and every later step reuses it."""
    if isinstance(plan, PlanStack):
        return apply_stack(nn, plan, vectors, masks, gates, writes)
    shared = plan.gate.read
    if shared is not None and "shared" not in gates and all(w.at != shared for w in plan.writes):
        shared_gate(plan, vectors, _read(resolve(nn, shared.module), shared), masks, gates)  # compile put it first
    for w in plan.writes if writes is None else writes:
        envoy = resolve(nn, w.at.module)
        _write(envoy, w.at, apply_write(plan, vectors, masks, gates, w, _read(envoy, w.at)))


def apply_stack(nn: Any, stack: PlanStack, vectors: Vectors, masks: dict, gates: dict, writes=None) -> None:
    """Several bundles' plans at once (steerkit.compose): at each site, in forward order, every part's gate
    reads the activation before any part writes there; then the parts' writes add up in part order. A
    part whose gate is closed on a row leaves that row bit for bit as the other parts made it. Gate keys
    are (part, "shared" | layer), kept across decode steps like ``apply_writes``'."""
    chosen = None if writes is None else set(writes)
    todo = [[w for w in p.writes if chosen is None or w in chosen] for p in stack.parts]
    refs = {w.at for ws in todo for w in ws}
    refs |= {p.gate.read for j, p in enumerate(stack.parts) if p.gate.read is not None and (j, "shared") not in gates}
    for ref in sorted(refs, key=lambda r: r.order):
        envoy = resolve(nn, ref.module)
        h = _read(envoy, ref)
        for j, p in enumerate(stack.parts):
            if p.gate.read == ref and (j, "shared") not in gates:
                gates[(j, "shared")] = gate_value(p, vectors.part(j), h, masks, p.gate.vector, p.gate.bias, None)
        new, wrote = h, False
        for j, p in enumerate(stack.parts):
            for w in todo[j]:
                if w.at != ref:
                    continue
                key = (j, "shared") if p.gate.read is not None else (j, w.at.layer)
                if key not in gates:  # per-write gates read the activation before any part wrote here
                    gates[key] = gate_value(p, vectors.part(j), h, masks, w.gate_vector, w.gate_bias, w.vector)
                mask = union(masks, w.positions).to(h.device)
                new = apply_op(new, w.op, vectors.part(j).get(w.vector, h), gates[key], mask, w.strength,
                               w.clamp_value)
                wrote = True
        if wrote:
            _write(envoy, ref, new)


class Steerer:
    """A model plus a plan: steered forward passes and generation, and activation reads.

    ``remote`` is passed to every nnsight trace: ``False`` runs here; ``True`` (or a host URL) ships the
    trace to an NDIF server, which needs ``model`` to be an nnsight model class built from a Hub id
    (e.g. ``nnsight.modeling.transformers.TransformersModel``) and the server to host that model;
    ``"local"`` is nnsight's dry run of that path (serialise, deserialise with steerkit hidden, run here).

    ``executor`` picks how a local run reaches the activations: ``"hooks"`` (plain torch hooks at the
    plan's sites, ``runtime_hooks``; the fast path), ``"nnsight"`` (an nnsight trace, the path a remote
    run takes) or ``"auto"``: hooks for a plain local ``torch.nn.Module``, nnsight for a remote run or a
    model that is already an nnsight model. Both give the same results bit for bit
    (``tests/test_runtime_fast_path.py``).
    """

    def __init__(self, model: torch.nn.Module, plan: Plan | PlanStack, image_token_id: Optional[int] = None,
                 remote: bool | str = False, executor: str = "auto"):
        missing = [k for part in (plan.parts if isinstance(plan, PlanStack) else (plan,)) for k in _missing(part)]
        if missing:
            raise SteeringRuntimeError("the plan has no vectors to run (dry-run plan?)", [Problem(
                f"missing tensors: {', '.join(sorted(set(missing))[:5])}", None, None, None, "bundle",
                "compile with a bundle: steerkit extract RECIPE, then apply", "SK501")])
        self.executor = _choose_executor(executor, model, remote, isinstance(plan, PlanStack))
        self.model = model
        self._wrapper: Optional[contextlib.AbstractContextManager] = None
        self._nn: Any = None
        self.plan = plan
        self.remote = remote
        if remote:
            _ship_steerkit_by_value()
        self.image_token_id = image_token_id if image_token_id is not None else image_token_id_of(model, plan)
        self._vectors = Vectors(plan.tensors)
        # a PlanStack never gets the hook executor (_choose_executor refuses it)
        self._hooks = (HookExecutor(model, plan, self._vectors) if self.executor == "hooks" and isinstance(plan, Plan)
                       else None)

    @property
    def nn(self) -> Any:
        """The nnsight-wrapped model, wrapped on first use: the hook path never instruments the model."""
        if self._nn is None:
            self._wrapper = wrapped(self.model)
            self._nn = self._wrapper.__enter__()
        return self._nn

    def _trace_kwargs(self) -> dict:
        return _remote_kwargs(self.remote)

    def _remote_failures(self):
        return _failures_guard(self.remote)

    def _fresh_vectors(self) -> Vectors:
        # remote runs ship the vectors with every request: send the float32 table, not the moved copies
        return Vectors(self.plan.tensors) if self.remote else self._vectors

    def close(self) -> None:
        """Remove the nnsight instrumentation (if the nnsight executor wrapped the model); the model is then
        exactly the original module. The hook executor leaves nothing behind after each call."""
        self._vectors.moved.clear()
        if self._wrapper is not None:
            self._wrapper.__exit__(None, None, None)
            self._wrapper = self._nn = None

    def _masks(self, inputs: dict, prompt_mask: Optional[torch.Tensor] = None) -> dict:
        if prompt_mask is None:
            return prompt_masks(inputs["input_ids"], inputs.get("attention_mask"), self.image_token_id)
        masks = prompt_masks(inputs["input_ids"], prompt_mask, self.image_token_id)
        attended = inputs.get("attention_mask", torch.ones_like(prompt_mask)).bool()
        masks["generated"] = attended & ~prompt_mask.bool()  # the answer tokens stand where decoding would be
        return masks

    def forward(self, inputs: dict, *, return_gates: bool = False, prompt_mask: Optional[torch.Tensor] = None):
        """Steered forward pass; returns logits (and per-row gate values when asked).

        ``prompt_mask`` [B, T] marks the prompt when answer tokens are appended (teacher forcing): positions
        and gates then see only the prompt, as in a prefill-steered generation of that answer."""
        masks = self._masks(inputs, prompt_mask)
        if self._hooks is not None:
            with torch.no_grad(), self._hooks.running(masks) as hook_gates:
                logits = self.model(**inputs).logits
            return (logits, {k: v.detach() for k, v in hook_gates.items()}) if return_gates else logits
        nn, plan, vectors = self.nn, self.plan, self._fresh_vectors()
        gates: dict = {}
        with self._remote_failures(), torch.no_grad(), nn.trace(**inputs, **self._trace_kwargs()):
            apply_writes(nn, plan, vectors, masks, gates)
            logits = nnsight.save(nn.output.logits)
            gates = nnsight.save(gates)  # the dict comes back from a remote run too
        if return_gates:
            return logits, {k: v.detach() for k, v in gates.items()}
        return logits

    def generate(self, inputs: dict, max_new_tokens: int, **gen_kwargs) -> torch.Tensor:
        """Greedy (by default) steered generation; returns the full sequences [B, T + new]."""
        gk = dict(max_new_tokens=max_new_tokens, do_sample=False, **gen_kwargs)
        if self._hooks is not None:
            with torch.no_grad(), self._hooks.running(self._masks(inputs)):
                return self.model.generate(**inputs, **gk)  # type: ignore[operator]  # a transformers model
        nn, plan, vectors, masks = self.nn, self.plan, self._fresh_vectors(), self._masks(inputs)
        gates: dict = {}
        batch = inputs["input_ids"].shape[0]
        decode_writes = [w for w in plan.writes if "generated" in w.positions]
        if plan.phase == "prefill" or not decode_writes:
            # no loop: interventions apply to the first (prefill) forward only. Exact for all_steps too when
            # no write targets generated tokens: gates are read at prefill, other positions are cached.
            with self._remote_failures(), torch.no_grad(), nn.trace(**inputs, fn="generate", **gk,
                                                                     **self._trace_kwargs()) as tracer:
                apply_writes(nn, plan, vectors, masks, gates)
                out = nnsight.save(tracer.result)
            return out
        # Every decode step: an open loop (EOS may end generation early), so the result is read in its
        # own invoke; statements after an open loop in the same invoke would never run.
        with self._remote_failures(), warnings.catch_warnings(), torch.no_grad(), \
                nn.trace(fn="generate", **self._trace_kwargs()) as tracer:
            warnings.filterwarnings("ignore", message=".*was never reached.*")  # the expected end of an open loop
            with tracer.invoke(**inputs, **gk):
                step_masks = decode_masks(batch)
                for step in tracer.all():  # later steps run only the writes that touch generated tokens
                    if step == 0:
                        apply_writes(nn, plan, vectors, masks, gates)
                    else:
                        apply_writes(nn, plan, vectors, step_masks, gates, decode_writes)
            with tracer.invoke():
                out = nnsight.save(tracer.result)
        return out

    def gate_values(self, inputs: dict) -> dict:
        """Per-row gate values of one steered forward pass, keyed by layer (or 'shared'); for a PlanStack
        keyed (part, layer | 'shared'), led by "any": each row's largest gate over the parts."""
        gates = self.forward(inputs, return_gates=True)[1]
        if isinstance(self.plan, PlanStack):
            firsts = [next(v for k, v in gates.items() if k[0] == j) for j in range(len(self.plan.parts))]
            gates = {"any": torch.stack(firsts).amax(0), **gates}
        return gates


def _missing(plan: Plan) -> list[str]:
    """Tensor names the plan uses but does not hold (a dry-run plan holds none)."""
    missing = [k for w in plan.writes for k in (w.vector, w.gate_vector) if k and k not in plan.tensors]
    missing += [k for k in plan.gate.prototypes + plan.gate.centers + plan.gate.inv_stds if k not in plan.tensors]
    if plan.gate.rule == "prototype" and not plan.gate.prototypes:
        missing.append("gate_proto.*")
    if plan.gate.vector and plan.gate.vector not in plan.tensors:
        missing.append(plan.gate.vector)
    return missing


EXECUTORS = ("auto", "hooks", "nnsight")


def _choose_executor(executor: str, model: Any, remote: bool | str, stack: bool = False) -> str:
    why = None
    if executor not in EXECUTORS:
        why = f"unknown executor {executor!r}; valid choices: {', '.join(EXECUTORS)}"
    elif executor == "hooks" and remote:
        why = "executor 'hooks' runs here; a remote run goes through nnsight"
    elif executor == "hooks" and isinstance(model, Envoy):
        why = "executor 'hooks' needs a plain torch module; this model is an nnsight model"
    elif executor == "hooks" and stack:
        why = "executor 'hooks' runs one plan; composed bundles (a PlanStack) run through nnsight"
    if why:
        raise SteeringRuntimeError("the steering executor cannot run this model", [Problem(
            why, None, None, None, "executor", "use executor='auto' (hooks locally, nnsight for remote runs) "
            "or 'nnsight'", "SK520")])
    if executor == "auto":
        return "nnsight" if remote or stack or isinstance(model, Envoy) else "hooks"
    return executor


def generate_unsteered(model: Any, inputs: dict, max_new_tokens: int, remote: bool | str = False,
                       **gen_kwargs) -> torch.Tensor:
    """Plain greedy generation through an nnsight trace (so it can run remotely too)."""
    with _failures_guard(remote), wrapped(model) as nn, torch.no_grad(), \
            nn.trace(**inputs, fn="generate", max_new_tokens=max_new_tokens, do_sample=False, **gen_kwargs,
                     **_remote_kwargs(remote)) as tracer:
        out = nnsight.save(tracer.result)
    return out


def _remote_kwargs(remote: bool | str) -> dict:
    """nnsight's ``remote=`` for a trace; nothing for a local run (nnsight then picks its local backend)."""
    return {"remote": remote} if remote else {}


def _failures_guard(remote: bool | str):
    return remote_failures() if remote else contextlib.nullcontext()


@contextlib.contextmanager
def remote_failures() -> Iterator[None]:
    """A remote run that fails in transport or on the server is reported as a steerkit error, not a traceback:
    network errors (connection refused, timeouts, DNS), HTTP and websocket errors, and the server's own
    ``RemoteError``. Anything else (a bug here) propagates unchanged."""
    from nnsight.intervention.backends.remote import RemoteError

    try:
        yield
    except Exception as exc:
        transport = type(exc).__module__.split(".")[0] in ("httpx", "websocket", "httpcore")
        if not (transport or isinstance(exc, (OSError, RemoteError))):
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise SteeringRuntimeError("the remote nnsight backend failed", [Problem(
            f"{type(exc).__name__}: {first}", None, None, None, "--remote",
            "check the host and your NDIF API key (nnsight.CONFIG.set_default_api_key), and that the server "
            "hosts this model; --remote local rehearses the request offline", "SK510")]) from exc


def _ship_steerkit_by_value() -> None:
    """A remote server does not have steerkit installed: send its functions' source with the request."""
    import sys

    nnsight.register(sys.modules[__name__.split(".")[0]])


@contextlib.contextmanager
def steer(model: torch.nn.Module, plan: Plan | PlanStack, image_token_id: Optional[int] = None,
          remote: bool | str = False, executor: str = "auto") -> Iterator[Steerer]:
    """Context manager yielding a Steerer; the model itself is never modified (``remote``, ``executor``:
    see Steerer)."""
    steerer = Steerer(model, plan, image_token_id, remote, executor)
    try:
        yield steerer
    finally:
        steerer.close()


def read_sites(model: torch.nn.Module, inputs: dict, refs: Sequence[SiteRef],
               weights: torch.Tensor) -> dict[int, torch.Tensor]:
    """Weighted position pooling of clean activations at many sites in one pass.

    ``weights`` [B, T] (rows sum to 1): a one-hot at the last prompt token gives h at that token; a
    uniform weight over image tokens gives their mean. Returns {layer: [B, D] float32}.
    """
    out: dict[int, Any] = {}
    refs = sorted(refs, key=lambda r: r.order)
    with wrapped(model) as nn_model, torch.no_grad(), nn_model.trace(**inputs):
        for ref in refs:
            h = _read(resolve(nn_model, ref.module), ref)
            w = weights.to(device=h.device, dtype=h.dtype)
            out[ref.layer] = nnsight.save(torch.einsum("bt,btd->bd", w, h).float())
    return {k: v.detach().cpu() for k, v in out.items()}


def check_sites(model: torch.nn.Module, inputs: dict, refs: Sequence[SiteRef]) -> dict[str, tuple]:
    """Read every site once and report its shape: the live part of an adapter check."""
    shapes: dict[str, Any] = {}
    with wrapped(model) as nn_model, torch.no_grad(), nn_model.trace(**inputs):
        for ref in sorted(refs, key=lambda r: r.order):
            h = _read(resolve(nn_model, ref.module), ref)
            shapes[f"{ref.site}[{ref.layer}]"] = nnsight.save(torch.tensor(list(h.shape)))
    return {k: tuple(int(x) for x in v.tolist()) for k, v in shapes.items()}


def site_values(model: torch.nn.Module, inputs: dict, refs: Sequence[SiteRef]) -> dict[str, torch.Tensor]:
    """Read every site once and return its value (detached, on the CPU): the adapter check compares them."""
    values: dict[str, Any] = {}
    with wrapped(model) as nn_model, torch.no_grad(), nn_model.trace(**inputs):
        for ref in sorted(refs, key=lambda r: r.order):
            values[f"{ref.site}[{ref.layer}]"] = nnsight.save(_read(resolve(nn_model, ref.module), ref).detach().cpu())
    return dict(values)
