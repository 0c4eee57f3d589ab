"""compile_recipe: recipe + adapter + bundle -> Plan, with every feasibility check that needs no weights.

Checks here need the adapter or the model's dimensions (the recipe schema already checked the rest):
layers in range, image positions only on multimodal adapters, ``generated`` positions only when every
decode step is steered, a shared gate read no later than the first written site, and a bundle that
holds every vector the plan needs with the right width.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from .adapter import Adapter
from .errors import CompileError, Problem
from .plan import SITE_ORDER, GateOp, Plan, SiteRef, TensorTable, WriteOp
from .recipe import AlwaysOnGate, CosineGate, LayerRange, PrototypeGate, Recipe, StrengthSpec


def resolve_layers(spec: LayerRange | list[int], num_layers: int, problems: list[Problem]) -> list[int]:
    def norm(i: int) -> int:
        return i + num_layers if i < 0 else i

    fix = f"use layers between 0 and {num_layers - 1} (negative indices count from the end)"
    if isinstance(spec, list):
        bad = [i for i in spec if not 0 <= norm(i) < num_layers]
        if bad:
            problems.append(Problem(f"layers {bad} are outside the model's 0..{num_layers - 1}", None, None, None,
                                    "steer.layers", fix, "SK301"))
        layers = [norm(i) for i in spec]
        same = sorted({i for i in layers if 0 <= i < num_layers and layers.count(i) > 1})
        if same:  # e.g. [3, -1] on 4 layers: the direction would be added twice at layer 3
            problems.append(Problem(f"layers {[i for i in spec if norm(i) in same]} name layer "
                                    f"{', '.join(map(str, same))} more than once (negative indices count "
                                    f"from the end of {num_layers})", None, None, None, "steer.layers",
                                    "list each layer once", "SK301"))
    else:
        start = norm(spec.start)
        stop = num_layers if spec.stop is None else norm(spec.stop)
        if not 0 <= start < num_layers:
            problems.append(Problem(f"start layer {spec.start} is outside the model's 0..{num_layers - 1}", None,
                                    None, None, "steer.layers.start", fix, "SK301"))
        if spec.stop is not None and not 0 < stop <= num_layers:
            problems.append(Problem(f"stop layer {spec.stop} is outside 1..{num_layers} (stop is exclusive)", None,
                                    None, None, "steer.layers.stop", fix, "SK301"))
        if problems:
            return []
        skip = {norm(i) for i in spec.skip}
        layers = [i for i in range(start, stop) if i not in skip]
    bad = [i for i in layers if not 0 <= i < num_layers]
    if not layers and not bad:
        problems.append(Problem("the layer selection is empty", None, None, None, "steer.layers",
                                "check start/stop/skip", "SK301"))
    return sorted(set(i for i in layers if 0 <= i < num_layers))


def site_ref(adapter: Adapter, site: str, layer: int) -> SiteRef:
    spec = adapter.sites[site]
    return SiteRef(site, layer, adapter.module_path(site, layer), spec.io, spec.output_index)


def resolve_strength(spec: StrengthSpec, bundle: Any = None, problems: Optional[list[Problem]] = None
                     ) -> tuple[float, str]:
    """The lambda to steer with and where it comes from: ``recipe`` (steer.strength.lambda, which overrides
    a calibration), ``bundle`` (chosen by steer.strength.search at extract), or ``pending`` (a dry run
    before extraction: 0.0 stands in). A missing calibration is appended to ``problems``."""
    if spec.lambda_ is not None:
        return float(spec.lambda_), "recipe"
    if bundle is None:
        return 0.0, "pending"
    calibrated = getattr(bundle.manifest, "strength", None)
    if not calibrated:
        if problems is not None:
            problems.append(Problem("the recipe calibrates lambda (steer.strength.search) but the bundle holds no "
                                    "calibrated strength", None, None, None, "steer.strength",
                                    "re-extract the bundle with this recipe (steerkit extract RECIPE), or set "
                                    "steer.strength.lambda", "SK322"))
        return 0.0, "pending"
    return float(calibrated["lambda"]), "bundle"


def compile_recipe(recipe: Recipe, adapter: Adapter, bundle: Any = None, *,
                   dims: Optional[tuple[int, int]] = None, architecture: Optional[str] = None) -> Plan:
    """Compile a validated recipe. ``bundle`` supplies vectors and dims; without it ``dims`` must be given
    and the plan carries no vectors (a dry run: printable and checkable, not runnable)."""
    problems: list[Problem] = []
    if bundle is not None:
        m = bundle.manifest
        hidden, num_layers = int(m.hidden_size), int(m.num_layers)
        architecture = architecture or m.architecture
        if dims is not None and tuple(dims) != (hidden, num_layers):
            problems.append(Problem(f"bundle is for hidden {hidden} x {num_layers} layers but the model has "
                                    f"hidden {dims[0]} x {dims[1]} layers", None, None, None, "bundle.path",
                                    "extract a bundle for this model (steerkit extract RECIPE)", "SK320"))
    elif dims is not None:
        hidden, num_layers = dims
    else:
        raise CompileError("cannot compile without model dimensions", [Problem(
            "no bundle and no model dimensions given", None, None, None, "bundle", "pass --bundle or extract first",
            "SK300")])
    architecture = architecture or adapter.match.architectures[0]
    steer = recipe.steer
    layers = resolve_layers(steer.layers, num_layers, problems)

    if "image_tokens" in steer.positions and not adapter.multimodal:
        problems.append(Problem(f"positions 'image_tokens' need a multimodal model; adapter '{adapter.name}' "
                                "is text-only", None, None, None, "steer.positions",
                                "use all_prompt, text_tokens or last_prompt_token", "SK302"))
    if "generated" in steer.positions and steer.phase != "all_steps":
        problems.append(Problem("positions 'generated' only exist when every decode step is steered", None, None,
                                None, "steer.positions", "set steer.phase: all_steps", "SK303"))
    gate_spec = recipe.gate
    read_pos = getattr(getattr(gate_spec, "read", None), "positions", "last_prompt_token")
    if read_pos == "image_tokens" and not adapter.multimodal:
        problems.append(Problem("the gate reads image tokens but the adapter is text-only", None, None, None,
                                "gate.read.positions", "read last_prompt_token instead", "SK302"))
    if read_pos == "generated":
        problems.append(Problem("the gate must read prompt tokens (it is computed once, at prefill)", None, None,
                                None, "gate.read.positions", "use last_prompt_token, all_prompt or image_tokens",
                                "SK304"))

    shared_read: Optional[SiteRef] = None
    gate_layer = getattr(gate_spec, "layer", None)
    if gate_layer is not None:
        gl = gate_layer + num_layers if gate_layer < 0 else gate_layer
        if not 0 <= gl < num_layers:
            problems.append(Problem(f"gate layer {gate_layer} is outside 0..{num_layers - 1}", None, None, None,
                                    "gate.layer", None, "SK310"))
        elif layers and (gl, SITE_ORDER[steer.site]) > (layers[0], SITE_ORDER[steer.site]):
            problems.append(Problem(
                f"gate reads layer {gl} but steering writes from layer {layers[0]}; in one forward pass the "
                "gate can only see layers up to the first steered layer", None, None, None, "gate.layer",
                f"set gate.layer to {layers[0]} or lower", "SK310"))
        else:
            shared_read = site_ref(adapter, steer.site, gl)

    tensors: dict[str, torch.Tensor] = {}
    gate_biases: dict[str, float] = {}
    if bundle is not None:
        gate_biases = {str(k): float(v) for k, v in (bundle.manifest.gate or {}).get("bias", {}).items()}

    def need(name: str, key_path: str, matrix: bool = False) -> str:
        if bundle is None:
            return name
        t = bundle.tensors.get(name)
        shape = (hidden, hidden) if matrix else (hidden,)
        if t is None:
            problems.append(Problem(f"bundle has no tensor '{name}'", None, None, None, key_path,
                                    "re-extract the bundle with this recipe's layers and site", "SK321"))
        elif tuple(t.shape) != shape:
            problems.append(Problem(f"tensor '{name}' has shape {tuple(t.shape)}, expected {shape}", None,
                                    None, None, key_path, "re-extract the bundle", "SK321"))
        else:
            tensors[name] = t
        return name

    if isinstance(gate_spec, AlwaysOnGate):
        gate = GateOp("always_on")
    elif isinstance(gate_spec, CosineGate):
        gate = GateOp("cosine", positions=read_pos, pool=gate_spec.read.pool, threshold=gate_spec.threshold)
    elif isinstance(gate_spec, PrototypeGate):
        if shared_read is None:
            raise CompileError(f"recipe '{recipe.name}' cannot be compiled", problems or [Problem(
                "a prototype gate needs gate.layer", None, None, None, "gate.layer", None, "SK310")])
        layer = shared_read.layer
        k = int((bundle.manifest.gate or {}).get("prototypes", 0)) if bundle is not None else 0
        gm = (bundle.manifest.gate or {}) if bundle is not None else {}
        gate = GateOp("prototype", positions=read_pos, pool="mean", read=shared_read,
                      centers=tuple(need(f"gate_center.{steer.site}.{layer}.{i}", "gate") for i in range(k)),
                      inv_stds=tuple(need(f"gate_scale.{steer.site}.{layer}.{i}", "gate") for i in range(k)),
                      proto_image=tuple(bool(x) for x in gm.get("prototype_image", [])),
                      proto_linear=tuple(bool(x) for x in gm.get("prototype_linear", [])),
                      proto_whiten=tuple(int(x) for x in gm.get("prototype_whiten", [])),
                      whiten=tuple(need(f"gate_whiten.{steer.site}.{layer}.{m}", "gate", matrix=True)
                                   for m in range(int(gm.get("whitening_matrices", 0)))),
                      proto_scale=tuple(float(x) for x in gm.get("prototype_scale", [])),
                      proto_bias=tuple(float(x) for x in gm.get("prototype_bias", [])),
                      prototypes=tuple(need(f"gate_proto.{steer.site}.{layer}.{i}", "gate") for i in range(k)),
                      bias=float(gm.get("bias", {}).get(str(layer), 0.0)), scale=float(gm.get("scale", 1.0)),
                      clip=gate_spec.clip)
    else:
        vec = bias = None
        if shared_read is not None:
            vec = need(f"gate.{steer.site}.{shared_read.layer}", "gate.layer")
            bias = gate_biases.get(str(shared_read.layer), 0.0)
        gate = GateOp("linear", positions=read_pos, pool=gate_spec.read.pool, read=shared_read, vector=vec,
                      bias=bias or 0.0, clip=gate_spec.clip)

    strength, _ = resolve_strength(steer.strength, bundle, problems)
    writes = []
    for layer in layers:
        direction = need(f"direction.{steer.site}.{layer}", "steer.layers")
        gvec, gbias = None, 0.0
        if gate.rule == "linear" and gate.read is None:  # (prototype gates are always shared)
            gvec = need(f"gate.{steer.site}.{layer}", "gate")
            gbias = gate_biases.get(str(layer), 0.0)
        writes.append(WriteOp(site_ref(adapter, steer.site, layer), steer.op, direction,
                              strength, float(steer.clamp_value), tuple(steer.positions),
                              gvec, gbias))
    if problems:
        raise CompileError(f"recipe '{recipe.name}' cannot be compiled for adapter '{adapter.name}'", problems)
    return Plan(architecture=architecture, adapter=adapter.name, hidden_size=hidden, num_layers=num_layers,
                phase=steer.phase, gate=gate, writes=tuple(writes), tensors=TensorTable(tensors),
                image_token_config=adapter.image_token.config if adapter.image_token else None,
                recipe_sha256=recipe.sha256(),
                bundle_sha256=getattr(getattr(bundle, "manifest", None), "tensors_sha256", "") or "")
