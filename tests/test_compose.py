"""Composing bundles (forget requests over time) on tiny random-weight LLaVA and Qwen2.5-VL models.

hypothesis draws the recipe (layers, positions, phase, lambda, gate read) and the parts' vectors; the
properties are the ones steerkit.compose promises for the sum of gated writes:

* a part whose gate is closed on a row leaves that row bit-identical to not composing it (either order,
  logits and greedy ids), while the row where it is open changes;
* the order of the parts does not change the logits beyond float tolerance (atol = rtol = 1e-4);
* merge then apply == apply the parts (a set saved, reloaded and compiled gives the same plans and
  bit-identical logits);
* a one-part stack runs exactly like the plain plan.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from steerkit.adapter import get_adapter
from steerkit.bundle import Bundle
from steerkit.bundle_set import load_parts, save_set
from steerkit.compile import compile_recipe
from steerkit.compose import PlanStack, stack_plans
from steerkit.recipe import parse_recipe_text
from steerkit.runtime_nnsight import steer
from steerkit.session import ModelSession
from steerkit.testing.fixtures import RECIPE_HEAD, make_plan, tiny

ARCHS = ("llava", "qwen2_5_vl")
TEXTS = ("What is in this image?", "Who is the person in the photo? Tell me everything you know.", "Hi")
NEW_TOKENS = 3
MODEL = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only add contention on shared cores
    yield
    torch.set_num_threads(before)


@lru_cache(maxsize=None)
def session(arch: str):
    t = tiny(arch)
    return t, ModelSession.from_objects(t.model, t.processor, t.tokenizer)


@lru_cache(maxsize=None)
def _encode(arch: str, n: int) -> dict:
    return session(arch)[0].inputs(list(TEXTS[:n]), seed=0)


def encode(arch: str, n: int = 2) -> dict:
    return dict(_encode(arch, n))


def recipe_text(layers, positions, phase: str, lam: float, read=("last_prompt_token", "last"), shared: bool = True):
    layer = ", layer: 0" if shared else ""
    return RECIPE_HEAD + (
        "gate: {rule: nullspace_linear, forget: [{kind: jsonl, path: f}], retain: [{kind: jsonl, path: r}], "
        f"clip: [0, 1], read: {{positions: {read[0]}, pool: {read[1]}}}{layer}}}\n"
        f"steer: {{layers: {list(layers)}, positions: [{', '.join(positions)}], phase: {phase}, "
        f"strength: {{lambda: {lam!r}}}}}\n")


def run(arch: str, plan, enc: dict):
    t, _ = session(arch)
    with steer(t.model, plan) as s:
        logits = s.forward(enc)
        ids = s.generate(enc, NEW_TOKENS, min_new_tokens=NEW_TOKENS, pad_token_id=t.tokenizer.pad_token_id)
    return logits, ids


def bits(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous().view(torch.int32)


layers_st = st.sets(st.integers(0, 1), min_size=1).map(sorted)  # the tiny decoders have 2 layers
positions_st = st.lists(st.sampled_from(["all_prompt", "image_tokens", "text_tokens", "last_prompt_token"]),
                        min_size=1, max_size=2, unique=True)
lam_st = st.sampled_from([-4.0, -1.5, 3.0])
read_st = st.sampled_from([("last_prompt_token", "last"), ("all_prompt", "mean"), ("image_tokens", "mean")])


def close_on_one_row(arch: str, plan, enc: dict):
    """``plan`` with its shared gate's bias set between the two rows' raw scores: closed (c = 0 exactly,
    clipped) on the lower row, open on the other. Returns (plan, closed row, open row) or None on a tie."""
    raw = dataclasses.replace(plan, gate=dataclasses.replace(plan.gate, bias=0.0, clip=None))
    with steer(session(arch)[0].model, raw) as s:
        scores = s.gate_values(enc)["shared"]
    lo, hi = int(scores.argmin()), int(scores.argmax())
    if float(scores[hi] - scores[lo]) < 1e-3:
        return None
    bias = -float(scores[lo] + scores[hi]) / 2
    return dataclasses.replace(plan, gate=dataclasses.replace(plan.gate, bias=bias)), lo, hi


# ------------------------------------------------------------------------------------------ properties
@settings(MODEL, max_examples=10)
@given(arch=st.sampled_from(ARCHS), layers=layers_st, positions=positions_st, lam=lam_st, read=read_st,
       phase=st.sampled_from(["prefill", "all_steps"]), seeds=st.tuples(st.integers(0, 50), st.integers(51, 99)))
def test_closed_gate_row_is_bit_identical_to_not_composing(arch, layers, positions, lam, read, phase, seeds):
    _, s = session(arch)
    text = recipe_text(layers, positions, phase, lam, read)
    enc = encode(arch)
    a = make_plan(s.adapter.name, s.dims, text, seed=seeds[0])
    found = close_on_one_row(arch, make_plan(s.adapter.name, s.dims, text, seed=seeds[1]), enc)
    assume(found is not None)
    b, closed, opened = found
    with steer(session(arch)[0].model, b) as st_b:
        gate = st_b.gate_values(enc)["shared"]
    assert float(gate[closed]) == 0.0 and float(gate[opened]) > 0.0
    alone_logits, alone_ids = run(arch, a, enc)
    for stack in (stack_plans([a, b]), stack_plans([b, a])):
        logits, ids = run(arch, stack, enc)
        assert torch.equal(bits(logits[closed]), bits(alone_logits[closed]))
        assert torch.equal(ids[closed], alone_ids[closed])
        assert not torch.equal(logits[opened], alone_logits[opened])  # b is open there: it does steer


@settings(MODEL, max_examples=8)
@given(arch=st.sampled_from(ARCHS), layers=layers_st, positions=positions_st, lam=lam_st, read=read_st,
       shared=st.booleans(), seeds=st.lists(st.integers(0, 99), min_size=3, max_size=3, unique=True),
       order=st.permutations([0, 1, 2]))
def test_order_of_composition_does_not_change_outputs(arch, layers, positions, lam, read, shared, seeds, order):
    _, s = session(arch)
    text = recipe_text(layers, positions, "prefill", lam, read, shared)
    enc = encode(arch, 3)
    plans = [make_plan(s.adapter.name, s.dims, text, seed=x, gate_scale=3.0) for x in seeds]
    first, _ = run(arch, stack_plans(plans), enc)
    other, _ = run(arch, stack_plans([plans[i] for i in order]), enc)
    torch.testing.assert_close(other, first, atol=1e-4, rtol=1e-4)


def random_bundle(arch: str, seed: int, layers=(0, 1)) -> Bundle:
    """A bundle with per-layer linear gates (random vectors and biases) for the tiny model of ``arch``."""
    _, s = session(arch)
    hidden, n = s.dims
    gen = torch.Generator().manual_seed(seed)
    tensors = {f"{kind}.resid_pre.{layer}": torch.randn(hidden, generator=gen) * (0.5 if kind == "gate" else 1.0)
               for layer in layers for kind in ("direction", "gate")}
    biases = {str(layer): float(torch.randn((), generator=gen)) for layer in layers}
    return Bundle.create(tensors, model_id=f"tiny-{arch}", architecture=s.architecture,
                         adapter={"name": s.adapter.name, "sha256": "0" * 64}, hidden_size=hidden, num_layers=n,
                         direction={"method": "mean_diff"}, gate={"rule": "nullspace_linear", "bias": biases},
                         recipe={"seed": seed})


@settings(MODEL, max_examples=6)
@given(arch=st.sampled_from(ARCHS), seeds=st.lists(st.integers(0, 999), min_size=2, max_size=4, unique=True),
       split=st.integers(1, 3), lam=lam_st)
def test_merge_then_apply_equals_apply_the_parts(tmp_path_factory, arch, seeds, split, lam):
    _, s = session(arch)
    recipe = parse_recipe_text(recipe_text([0, 1], ["all_prompt"], "prefill", lam, shared=False)).recipe
    bundles = [random_bundle(arch, x) for x in seeds]
    folder = tmp_path_factory.mktemp("sets")
    cut = min(split, len(bundles) - 1)  # merge a set of the first parts, then merge it with the rest
    save_set(bundles[:cut], folder / "first.safetensors")
    for i, b in enumerate(bundles[cut:]):
        b.save(folder / f"b{i}.safetensors")
    merged = load_parts(folder / "first.safetensors") + [
        p for i in range(len(bundles) - cut) for p in load_parts(folder / f"b{i}.safetensors")]
    save_set(merged, folder / "all.safetensors")
    parts = load_parts(folder / "all.safetensors")
    adapter = get_adapter(s.adapter.name)
    compile_all = lambda bs: stack_plans([compile_recipe(recipe, adapter, b, dims=s.dims) for b in bs])  # noqa: E731
    direct, via_set = compile_all(bundles), compile_all(parts)
    assert [p.manifest.tensors_sha256 for p in parts] == [b.manifest.tensors_sha256 for b in bundles]
    assert via_set.sha256() == direct.sha256()
    enc = encode(arch)
    a, _ = run(arch, direct, enc)
    b, _ = run(arch, via_set, enc)
    assert torch.equal(bits(a), bits(b))


@pytest.mark.parametrize("arch", ARCHS)
def test_one_part_stack_runs_exactly_like_the_plan(arch):
    _, s = session(arch)
    plan = make_plan(s.adapter.name, s.dims, recipe_text([0, 1], ["all_prompt"], "all_steps", -1.5,
                                                         shared=False), seed=3, gate_scale=3.0)
    enc = encode(arch)
    logits, ids = run(arch, plan, enc)
    s_logits, s_ids = run(arch, PlanStack((plan,)), enc)
    assert torch.equal(bits(logits), bits(s_logits)) and torch.equal(ids, s_ids)


def test_composition_refuses_ops_that_depend_on_order():
    _, s = session("llava")
    text = recipe_text([0, 1], ["all_prompt"], "prefill", 1.0).replace("steer: {", "steer: {op: ablate, ")
    plans = [make_plan(s.adapter.name, s.dims, text, seed=x) for x in (1, 2)]
    with pytest.raises(Exception) as err:
        stack_plans(plans)
    assert "SK330" in str(err.value) and "op: add" in str(err.value)


def test_stack_gate_values_lead_with_each_rows_largest_gate():
    _, s = session("llava")
    text = recipe_text([0, 1], ["all_prompt"], "prefill", 1.0)
    plans = [make_plan(s.adapter.name, s.dims, text, seed=x, gate_scale=3.0) for x in (1, 2, 3)]
    with steer(session("llava")[0].model, stack_plans(plans)) as st_:
        gates = st_.gate_values(encode("llava", 3))
    parts = torch.stack([gates[(j, "shared")] for j in range(3)])
    assert next(iter(gates)) == "any" and torch.equal(gates["any"], parts.amax(0))
    assert len(gates) == 4  # "any" and one shared gate per part
