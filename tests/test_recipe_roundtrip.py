"""Recipes survive dump -> YAML -> load unchanged, and compiling a recipe is deterministic.

hypothesis builds valid ``Recipe`` objects over the schema's main fields (layers as a range or a list,
strength, op, site, positions, phase, every gate rule with its parameters and read, data sources,
model and bundle sections, free-text names and paths) and checks that ``recipe_to_yaml`` followed by
``parse_recipe_text`` gives back an equal recipe with the same sha256, and that compiling it twice (or
compiling its round-tripped copy) gives the same plan sha256.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from steerkit.adapter import get_adapter
from steerkit.compile import compile_recipe
from steerkit.errors import CompileError, RecipeError
from steerkit.recipe import Recipe, parse_recipe_text, recipe_to_yaml
from steerkit.testing.fixtures import make_plan
from steerkit.yamlio import parse_yaml

# No shrink phase: a failing recipe is a deep structure and shrinking it took minutes on 2 cores; the assertion
# diff already names the field that changed, and test_awkward_strings_roundtrip pins known cases minimally.
ROUNDTRIP = settings(max_examples=150, deadline=None,
                     phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.target))
COMPILE = settings(max_examples=80, deadline=None)

finite = st.floats(allow_nan=False, allow_infinity=False)
text = st.text(max_size=20)
path_st = text.filter(lambda p: "\x00" not in p)  # a path holding a NUL byte is refused (#14)
name_st = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,15}", fullmatch=True)
small_int = st.integers(-40, 40)
split_st = st.sampled_from(["forget", "test", "retain", "utility", "val_forget", "val_retain", "refusal"])
task_lists = st.lists(st.sampled_from(["classification", "generation", "cloze"]), min_size=1, max_size=3, unique=True)
modality_lists = st.lists(st.sampled_from(["vqa", "qa"]), min_size=1, max_size=2, unique=True)
limit_st = st.none() | st.integers(1, 10_000)
position_st = st.sampled_from(["all_prompt", "image_tokens", "text_tokens", "last_prompt_token", "generated"])


def _drop_none(d: dict) -> dict:
    """Leave some optional keys out entirely, as a hand-written recipe would."""
    return {k: v for k, v in d.items() if v is not None}


source_st = st.one_of(
    st.builds(lambda p, lim: _drop_none({"kind": "jsonl", "path": p, "limit": lim}), path_st, limit_st),
    st.builds(lambda p, sp, fr, tk, md, lim: _drop_none({"kind": "mllmu", "path": p, "split": sp, "forget_ratio": fr,
                                                         "tasks": tk, "modalities": md, "limit": lim}),
              path_st, split_st, st.sampled_from([5, 10, 15]), task_lists, modality_lists, limit_st),
    st.builds(lambda which, sp, ct, fr, lim: _drop_none({"kind": "world", "split": sp if which else None,
                                                         "contrast": None if which else ct, "forget_ratio": fr,
                                                         "limit": lim}),
              st.booleans(), split_st, st.sampled_from(["recall", "erasure", "forget_answer", "forget_refuse"]),
              st.sampled_from([5, 10, 15]), limit_st),
)
read_st = st.builds(lambda p, pool: {"positions": p, "pool": pool}, position_st,
                    st.sampled_from(["last", "mean", "max"]))
clip_st = st.none() | st.tuples(st.floats(-5, 5), st.floats(0.001, 5)).map(lambda t: [t[0], t[0] + t[1]])
_linear_common = dict(forget=st.lists(source_st, min_size=1, max_size=2),
                      retain=st.lists(source_st, min_size=1, max_size=2),
                      holdout=st.floats(0, 0.99), clip=clip_st, read=read_st, layer=st.none() | small_int)
gate_st = st.one_of(
    st.just({"rule": "always_on"}),
    st.fixed_dictionaries({"rule": st.just("nullspace_linear"), **_linear_common,
                           "rho": st.floats(0.001, 1), "gamma": st.floats(0, 1e3)}),
    st.fixed_dictionaries({"rule": st.just("ridge_linear"), **_linear_common,
                           "gamma": st.floats(0.001, 1e3), "retain_open_rate": st.floats(0, 0.99)}),
    st.fixed_dictionaries({"rule": st.just("cosine_threshold"), "threshold": st.floats(-1, 1), "read": read_st}),
)
layers_st = st.one_of(
    st.lists(small_int, min_size=1, max_size=6, unique=True),  # a repeated layer is an error (#14)
    st.builds(lambda a, b, s: _drop_none({"start": a, "stop": b, "skip": s}), small_int, st.none() | small_int,
              st.lists(small_int, max_size=3)),
)
steer_st = st.fixed_dictionaries({
    "op": st.sampled_from(["add", "ablate", "clamp"]),
    "site": st.sampled_from(["resid_pre", "resid_post", "attn_out", "mlp_out"]),
    "layers": layers_st,
    "positions": st.lists(position_st, min_size=1, max_size=4),
    "phase": st.sampled_from(["prefill", "all_steps"]),
    "strength": st.builds(lambda x: {"lambda": x}, finite),
    "clamp_value": finite,
})
pgd_st = st.none() | st.builds(lambda e, s, n, rs, tg: _drop_none({"kind": "pgd_linf", "epsilon": e, "step": s,
                                                                    "steps": n, "random_start": rs, "target": tg}),
                                 st.floats(1e-4, 1), st.floats(1e-4, 1), st.integers(1, 100), st.booleans(),
                                 st.none() | text)
side_st = st.builds(lambda src, pgd: _drop_none({"source": src, "image_perturbation": pgd}), source_st, pgd_st)
direction_st = st.none() | st.builds(
    lambda a, b, n: {"method": "mean_diff", "recall": a, "erasure": b, "normalize": n}, side_st, side_st, st.booleans())
model_st = st.builds(
    lambda i, rev, dt, dm, ad, trc, ws, wn: _drop_none({"id": i, "revision": rev, "dtype": dt, "device_map": dm,
                                                        "adapter": ad, "trust_remote_code": trc,
                                                        "world": {"seed": ws, "n_profiles": wn}}),
    path_st, st.none() | text, st.sampled_from(["auto", "float32", "float16", "bfloat16"]),
    st.none() | st.sampled_from(["auto", "cpu"]) | st.dictionaries(text, st.integers(0, 3) | text, max_size=2),
    st.sampled_from(["auto", "llava", "qwen2_5_vl"]), st.booleans(), st.integers(0, 10**6), st.integers(8, 10_000))


@st.composite
def recipes(draw) -> Recipe:
    d = {
        "name": draw(name_st),
        "description": draw(st.text(max_size=40)),
        "model": draw(model_st),
        "gate": draw(gate_st),
        "steer": draw(steer_st),
        "seed": draw(st.integers(0, 2**31)),
    }
    direction, bundle = draw(direction_st), draw(st.none() | st.builds(lambda p: {"path": p}, path_st))
    if direction is None and bundle is None and d["steer"]["op"] != "clamp":
        bundle = {"path": "bundle.safetensors"}  # the schema needs one of them unless op is clamp
    d |= _drop_none({"direction": direction, "bundle": bundle})
    if draw(st.booleans()):
        d["eval"] = {"splits": draw(st.lists(split_st, min_size=1, max_size=3)),
                     "batch_size": draw(st.integers(1, 512)),
                     "limit": draw(limit_st), "data": draw(st.none() | path_st), "out": draw(path_st)}
    return Recipe.model_validate(d)


def roundtrip(recipe: Recipe) -> Recipe:
    return parse_recipe_text(recipe_to_yaml(recipe), "<roundtrip>").recipe


@ROUNDTRIP
@given(recipe=recipes())
def test_dump_yaml_load_is_the_identity(recipe):
    yaml_text = recipe_to_yaml(recipe)
    assert parse_yaml(yaml_text).data == recipe.dump()  # the YAML holds exactly the dump
    back = roundtrip(recipe)
    assert back == recipe
    assert back.dump() == recipe.dump()
    assert back.sha256() == recipe.sha256()
    assert recipe_to_yaml(back) == yaml_text  # and dumping is a fixed point


AWKWARD = ["\x85", "a\x85b", "\u2028", "\u2029", "yes", "no", "null", "~", "1.0", "0x10", "1e3", "- a", "#x", "a: b",
           "  lead", "trail ", "\t", "'", '"', "\\", "", "{a}", "[1]", "&x", "*x", "!x", "%x", "@x", "`x", "\ufeff",
           "\x00", "\x1b", "\u00e9t\u00e9", "\U0001f600", "line\nbreak", "cr\rlf\r\n", "---", "..."]


@pytest.mark.parametrize("value", AWKWARD, ids=[repr(v) for v in AWKWARD])
def test_awkward_strings_roundtrip(value):
    """Explicit regressions for strings YAML treats specially (NEL U+0085 is a YAML line break)."""
    path = value if "\x00" not in value else "b"  # a NUL byte cannot be in a path (tests/hostile)
    recipe = Recipe.model_validate({"name": "t", "description": value, "model": {"id": path},
                                    "bundle": {"path": path}, "steer": {"layers": [0]}})
    back = roundtrip(recipe)
    assert (back.model.id, back.description, back.bundle.path) == (path, value, path)


def _compile(recipe: Recipe, adapter: str, dims: tuple[int, int]):
    """The plan sha256, or the CompileError's problems (compiling must be deterministic either way)."""
    try:
        return ("plan", compile_recipe(recipe, get_adapter(adapter), None, dims=dims).sha256())
    except CompileError as exc:
        return ("error", [(p.message, p.key_path, p.code) for p in exc.problems])


@COMPILE
@given(recipe=recipes(), adapter=st.sampled_from(["llava", "qwen2_5_vl", "llama"]),
       dims=st.tuples(st.sampled_from([8, 64]), st.integers(1, 12)))
def test_compiling_twice_gives_the_same_plan_sha(recipe, adapter, dims):
    first = _compile(recipe, adapter, dims)
    assert _compile(recipe, adapter, dims) == first
    assert _compile(roundtrip(recipe), adapter, dims) == first


@COMPILE
@given(recipe=recipes(), dims=st.tuples(st.sampled_from([8, 64]), st.integers(1, 12)), seed=st.integers(0, 3))
def test_compiling_with_vectors_twice_gives_the_same_plan_sha(recipe, dims, seed):
    """With a (seeded, random) bundle the sha also covers the tensor table."""
    text = recipe_to_yaml(recipe)
    try:
        first = make_plan("llava", dims, text, seed=seed)
    except CompileError:
        return
    again = make_plan("llava", dims, text, seed=seed)
    assert again == first and again.sha256() == first.sha256() and again.to_json() == first.to_json()


@pytest.mark.parametrize("key,value", [("steer.strength.lambda", ".nan"), ("steer.strength.lambda", ".inf"),
                                       ("steer.clamp_value", "-.inf"), ("steer.strength.lambda", "1.0e+400")])
def test_non_finite_numbers_are_rejected(key, value):
    base = ("name: t\nmodel: {id: tiny}\nbundle: {path: b.safetensors}\n"
            "steer: {layers: [0], strength: {lambda: 1.0}, clamp_value: 0.0}\n")
    with pytest.raises(RecipeError):
        parse_recipe_text(base, overrides=[f"{key}={value}"])


_SUBPROCESS = """
import json, sys
from tests.test_recipe_roundtrip import plan_with_bundle
print(json.dumps([plan_with_bundle(text).sha256() for text in json.loads(sys.stdin.read())]))
"""


def plan_with_bundle(text: str, dims: tuple[int, int] = (16, 4)):
    """Compile against a deterministic stand-in bundle: vector i (in sorted name order) is arange * (i + 1).
    (Not ``fixtures.make_plan``: it draws its random vectors in set-iteration order, which changes with
    PYTHONHASHSEED, so its bundle - not the compiler - differs between processes.)"""
    import dataclasses

    import torch

    from steerkit.plan import TensorTable

    plan = compile_recipe(parse_recipe_text(text).recipe, get_adapter("llava"), None, dims=dims)
    names = sorted({w.vector for w in plan.writes} | {w.gate_vector for w in plan.writes if w.gate_vector}
                   | ({plan.gate.vector} if plan.gate.vector else set()))
    table = {n: torch.arange(dims[0], dtype=torch.float32) * (i + 1) for i, n in enumerate(names)}
    return dataclasses.replace(plan, tensors=TensorTable(table))


def test_plan_sha_is_stable_across_processes():
    """The sha is recorded in results and compared later: it must not depend on hash randomisation
    (sets of names, dict order) in the process that compiled it."""
    texts = [
        "name: a\nmodel: {id: m}\nbundle: {path: b}\nsteer: {layers: {start: 1, stop: -1}, positions: [all_prompt]}\n",
        "name: b\nmodel: {id: m}\nbundle: {path: b}\ngate: {rule: ridge_linear, forget: [{kind: jsonl, path: f}], "
        "retain: [{kind: world, split: retain}], layer: 0}\nsteer: {op: ablate, layers: [1, 2, 3], phase: all_steps, "
        "positions: [image_tokens, generated, text_tokens]}\n",
        "name: c\nmodel: {id: m}\nbundle: {path: b}\ngate: {rule: nullspace_linear, forget: [{kind: jsonl, path: f}], "
        "retain: [{kind: jsonl, path: r}], clip: null}\nsteer: {op: add, site: mlp_out, layers: [0, 3], "
        "strength: {lambda: -0.25}}\n",
    ]
    here = [plan_with_bundle(t).sha256() for t in texts]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for hash_seed in ("12345",):  # one other seed: the parent's is random (or fixed to something else)
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", _SUBPROCESS], input=json.dumps(texts), capture_output=True,
                             text=True, env=env, cwd=root, check=True, timeout=120)
        assert json.loads(out.stdout.strip().splitlines()[-1]) == here, f"PYTHONHASHSEED={hash_seed}"
