"""Plan and model builders shared by the test suite and the benchmarks."""

from __future__ import annotations

import dataclasses
from functools import lru_cache

import torch


@lru_cache(maxsize=None)
def tiny(name: str, std: float = 0.1):
    from steerkit.models.zoo import build_tiny

    return build_tiny(name, seed=0, std=std)


# A recipe head for a tiny saved LLaVA next to a generated world (``tiny_workdir``): a mean-difference
# direction from six contrast rows, PGD-perturbed so recall and erasure read differently.
TINY_WORKDIR_RECIPE = """schema_version: 1
name: {name}
model: {{id: model}}
direction:
  method: mean_diff
  recall:
    source: {{kind: jsonl, path: world/contrast/recall.jsonl, limit: 6}}
    image_perturbation: {{kind: pgd_linf, epsilon: 0.0627, step: 0.0078, steps: 2}}
  erasure: {{source: {{kind: jsonl, path: world/contrast/erasure.jsonl, limit: 6}}}}
"""


def tiny_workdir(root):
    """Write a 20-profile world (``root/world``) and the tiny LLaVA checkpoint (``root/model``)."""
    from pathlib import Path

    from steerkit.bench.world import generate_world
    from steerkit.models.zoo import save_tiny

    root = Path(root)
    generate_world(root / "world", seed=0, n_profiles=20)
    save_tiny(tiny("llava"), root / "model")
    return root


def make_plan(adapter_name: str, dims: tuple[int, int], recipe_yaml: str, seed: int = 0, gate_scale: float = 0.3,
              biases: dict | None = None):
    """Compile a recipe against random vectors of the right shape (a stand-in for an extracted bundle)."""
    from steerkit.adapter import get_adapter
    from steerkit.compile import compile_recipe
    from steerkit.plan import TensorTable
    from steerkit.recipe import parse_recipe_text

    recipe = parse_recipe_text(recipe_yaml).recipe
    plan = compile_recipe(recipe, get_adapter(adapter_name), None, dims=dims)
    gen = torch.Generator().manual_seed(seed)
    names = {w.vector for w in plan.writes} | {w.gate_vector for w in plan.writes if w.gate_vector}
    if plan.gate.vector:
        names.add(plan.gate.vector)
    tensors = {n: torch.randn(dims[0], generator=gen) * (gate_scale if n.startswith("gate") else 1.0)
               for n in sorted(names)}
    if plan.gate.rule == "prototype" and not plan.gate.prototypes:
        plan, extra = _random_prototypes(plan, dims[0], gen)
        tensors.update(extra)
    plan = dataclasses.replace(plan, tensors=TensorTable(tensors))
    if biases:
        plan = dataclasses.replace(plan, writes=tuple(dataclasses.replace(w, gate_bias=biases.get(w.at.layer, 0.0))
                                                      for w in plan.writes))
    return plan


def _random_prototypes(plan, hidden: int, gen: torch.Generator, k: int = 4):
    """Four prototypes (image/text x cosine/discriminant, two of them fully whitened) with affine maps that
    leave some rows open."""
    keys: dict[str, list[str]] = {"prototypes": [], "centers": [], "inv_stds": []}
    g, tensors = plan.gate, {}
    for i in range(k):
        for field, kind in (("prototypes", "proto"), ("centers", "center"), ("inv_stds", "scale")):
            name = f"gate_{kind}.test.{i}"
            t = torch.randn(hidden, generator=gen)
            tensors[name] = t.abs() + 0.5 if kind == "scale" else t * (0.1 if kind == "proto" else 0.05)
            keys[field].append(name)
    linear = tuple(i % 2 == 1 for i in range(k))
    a = torch.randn(hidden, hidden, generator=gen) / hidden ** 0.5
    tensors["gate_whiten.test.0"] = a @ a.T + torch.eye(hidden)  # a symmetric positive whitening matrix
    gate = dataclasses.replace(g, prototypes=tuple(keys["prototypes"]), centers=tuple(keys["centers"]),
                               inv_stds=tuple(keys["inv_stds"]), proto_image=tuple(i < k // 2 for i in range(k)),
                               proto_linear=linear, proto_scale=tuple(0.5 if lin else 2.0 for lin in linear),
                               proto_bias=(0.5,) * k, whiten=("gate_whiten.test.0",),
                               proto_whiten=tuple(0 if i in (0, 2) else -1 for i in range(k)))
    return dataclasses.replace(plan, gate=gate), tensors


RECIPE_HEAD = """
name: t
model: {id: tiny}
bundle: {path: unused.safetensors}
"""


def tiny_recipe(root, gate: str = "ridge_linear"):
    """A runnable recipe on the tiny LLaVA (``tiny_workdir`` under ``root``) plus a portrait: what the
    Python API page runs, in seconds. Returns (recipe path, image path)."""
    import shutil
    from pathlib import Path

    root = Path(root)
    tiny_workdir(root)
    gate_yaml = "gate: {rule: always_on}\n" if gate == "always_on" else f"""gate:
  rule: {gate}
  forget: [{{kind: mllmu, path: world, split: forget, tasks: [classification]}}]
  retain: [{{kind: mllmu, path: world, split: retain, tasks: [classification]}}]
  holdout: 0.25
"""
    recipe = root / "recipe.yaml"
    recipe.write_text(TINY_WORKDIR_RECIPE.format(name="tiny-notebook") + gate_yaml
                      + "steer: {layers: {start: 0}, strength: {lambda: -4.0}}\n"
                      + "bundle: {path: out/bundle.safetensors}\n")
    image = root / "face.png"
    shutil.copy(sorted((root / "world/contrast/images").iterdir())[0], image)
    return recipe, image
