"""The plain-hook executor (the local fast path) equals the nnsight executor bit for bit.

Every op, gate rule, site, phase and position set, for forward passes (logits and gate values) and
greedy generation on tiny LLaVA and Qwen2.5-VL models. Both executors are also compared with the
independent hook reference in tests/test_runtime_equivalence.py; here the two runtime paths must agree
exactly, because a user switches between them (local vs remote) and expects the same answers.
"""

from __future__ import annotations

import pytest
import torch

from steerkit.errors import SteeringRuntimeError
from steerkit.runtime_nnsight import Steerer, steer
from steerkit.testing.fixtures import RECIPE_HEAD, make_plan
from tests.test_runtime_equivalence import GATES, OPS, SITES, _inputs, _recipe, _session


def _both(model, plan, run):
    """``run(steerer)`` under each executor, with the fast path's choice checked on the way."""
    out = {}
    for executor in ("hooks", "nnsight"):
        with steer(model, plan, executor=executor) as st:
            assert st.executor == executor
            out[executor] = run(st)
    return out["hooks"], out["nnsight"]


def _instrumented(model) -> list[str]:
    return [n for n, m in model.named_modules() if "forward" in vars(m) or "__nnsight__" in vars(m)]


@pytest.mark.parametrize("arch", ["llava", "qwen2_5_vl"])
@pytest.mark.parametrize("gate", list(GATES))
@pytest.mark.parametrize("op", list(OPS))
def test_forward_and_gates_equal(arch, gate, op):
    t, s = _session(arch)
    plan = make_plan(s.adapter.name, s.dims, _recipe(GATES[gate], OPS[op]))
    enc = _inputs(t)
    (fast, fast_gates), (slow, slow_gates) = _both(t.model, plan, lambda st: st.forward(enc, return_gates=True))
    assert torch.equal(fast, slow)
    assert fast_gates.keys() == slow_gates.keys() and fast_gates
    assert all(torch.equal(fast_gates[k], slow_gates[k]) for k in fast_gates)
    with torch.no_grad():
        clean = t.model(**enc).logits
    if gate != "cosine":  # a cosine gate may legitimately be closed on both rows
        assert not torch.equal(fast, clean), "the plan must change something"


@pytest.mark.parametrize("arch", ["llava", "qwen2_5_vl"])
@pytest.mark.parametrize("site", SITES)
def test_every_site_equal(arch, site):
    t, s = _session(arch)
    plan = make_plan(s.adapter.name, s.dims, _recipe(GATES["linear_per_layer"], OPS["add"], site=site))
    enc = _inputs(t)
    fast, slow = _both(t.model, plan, lambda st: st.forward(enc))
    assert torch.equal(fast, slow)


@pytest.mark.parametrize("arch", ["llava", "qwen2_5_vl"])
@pytest.mark.parametrize("gate", ["always_on", "linear_per_layer", "linear_shared_clipped", "prototype"])
@pytest.mark.parametrize("phase,positions", [("prefill", "[all_prompt]"), ("all_steps", "[all_prompt, generated]"),
                                             ("all_steps", "[generated]"), ("all_steps", "[image_tokens]")])
def test_generate_equal(arch, gate, phase, positions):
    t, s = _session(arch)
    plan = make_plan(s.adapter.name, s.dims, _recipe(GATES[gate], OPS["add"], positions=positions, phase=phase))
    enc = _inputs(t)
    pad = dict(pad_token_id=t.tokenizer.pad_token_id)
    fast, slow = _both(t.model, plan, lambda st: st.generate(enc, 6, **pad))
    assert torch.equal(fast, slow)


@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("site", ["resid_post", "attn_out"])
def test_generate_every_step_ops_and_output_sites_equal(op, site):
    """Decode-step writes at tuple outputs (attn_out) and plain outputs, for every op."""
    t, s = _session("llava")
    plan = make_plan(s.adapter.name, s.dims, _recipe(GATES["linear_image_max"], OPS[op], site=site,
                                                      positions="[all_prompt, generated]", phase="all_steps"))
    enc = _inputs(t)
    pad = dict(pad_token_id=t.tokenizer.pad_token_id)
    fast, slow = _both(t.model, plan, lambda st: st.generate(enc, 6, **pad))
    assert torch.equal(fast, slow)


def test_fast_path_steers_decode_steps():
    """The hook path reaches the decode steps: steering only generated tokens changes the answer after its
    first token (which the unsteered prompt decides), and equals the nnsight path."""
    t, s = _session("llava")
    enc = _inputs(t)
    plan = make_plan("llava", s.dims, _recipe(GATES["always_on"], "op: add, strength: {lambda: 4.0}",
                                              positions="[generated]", phase="all_steps"))
    pad = dict(pad_token_id=t.tokenizer.pad_token_id)
    with torch.no_grad():
        clean = t.model.generate(**enc, max_new_tokens=6, do_sample=False, **pad)
    fast, slow = _both(t.model, plan, lambda st: st.generate(enc, 6, **pad))
    n = enc["input_ids"].shape[1]
    assert torch.equal(fast[:, : n + 1], clean[:, : n + 1])
    assert not torch.equal(fast, clean)
    assert torch.equal(fast, slow)


def test_auto_takes_the_hook_path_and_never_instruments_the_model():
    """'auto' on a local torch module runs hooks only while a call runs: nnsight never wraps the model, and
    no hook is left behind, also when the call fails."""
    from steerkit.models.zoo import build_tiny

    t = build_tiny("llava", seed=0, std=0.1)  # never wrapped by nnsight, unlike the shared cached model
    plan = make_plan("llava", (t.model.config.text_config.hidden_size, t.model.config.text_config.num_hidden_layers),
                     _recipe(GATES["always_on"], OPS["add"], positions="[all_prompt, generated]", phase="all_steps"))
    enc = t.inputs(["What is in this image?", "Describe it."], seed=3)
    seen = []

    def count_hooks():
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in t.model.modules())

    with torch.no_grad():
        t.model(**enc)  # transformers installs its own lazy output-recording hooks at the first forward
    hooks_before = count_hooks()
    with steer(t.model, plan) as st:
        assert st.executor == "hooks"
        layer = t.model.get_submodule(plan.writes[0].at.module)
        layer.register_forward_hook(lambda *a: seen.append((count_hooks(), _instrumented(t.model))))
        st.generate(enc, 3, pad_token_id=t.tokenizer.pad_token_id)
        layer._forward_hooks.clear()
        with pytest.raises(RuntimeError):
            st.forward({**enc, "pixel_values": enc["pixel_values"][:, :1]})  # a broken input fails mid-forward
    assert seen and all(n > hooks_before and not wrapped for n, wrapped in seen), "hooks during the call only"
    assert count_hooks() == hooks_before
    assert not _instrumented(t.model)


def test_executor_choices_are_checked():
    t, s = _session("llava")
    plan = make_plan("llava", s.dims, RECIPE_HEAD + GATES["always_on"] + "\nsteer: {layers: {start: 0}}\n")
    for bad, why in (("fast", "unknown executor 'fast'"), ("hooks", "a remote run goes through nnsight")):
        with pytest.raises(SteeringRuntimeError) as err:
            Steerer(t.model, plan, remote="local" if bad == "hooks" else False, executor=bad)
        assert err.value.problems[0].code == "SK520" and why in str(err.value)
    assert Steerer(t.model, plan, remote="local").executor == "nnsight"


def test_overlapping_steered_calls_are_refused():
    """Hooks live on the modules: a steered call started inside another one on the same model would run
    both plans on both calls. It is refused, and the outer call's hooks are still removed."""
    t, s = _session("llava")
    plan = make_plan("llava", s.dims, RECIPE_HEAD + GATES["always_on"] + "\nsteer: {layers: {start: 0}}\n")
    enc = _inputs(t)
    layer = t.model.get_submodule(plan.writes[0].at.module)
    with steer(t.model, plan) as outer, steer(t.model, plan) as inner:
        handle = layer.register_forward_hook(lambda *a: inner.forward(enc))
        try:
            with pytest.raises(SteeringRuntimeError) as err:
                outer.forward(enc)
        finally:
            handle.remove()
        assert err.value.problems[0].code == "SK521"
        assert not layer._forward_hooks and not layer._forward_pre_hooks
        fast, slow = outer.forward(enc), inner.forward(enc)  # usable again afterwards
    assert torch.equal(fast, slow)


@pytest.mark.parametrize("positions", ["[all_prompt]", "[all_prompt, generated]"])
def test_teacher_forced_forward_equal(positions):
    """``forward(prompt_mask=...)`` (answer tokens appended, as answer scoring does): the prompt positions
    and gates see only the prompt, the ``generated`` position the answer, on both executors alike."""
    t, s = _session("llava")
    enc = _inputs(t)
    plan = make_plan("llava", s.dims, _recipe(GATES["linear_shared_clipped"], OPS["add"], positions=positions,
                                              phase="all_steps"))
    answer = torch.full((enc["input_ids"].shape[0], 3), 5, dtype=enc["input_ids"].dtype)
    inputs = {**enc, "input_ids": torch.cat([enc["input_ids"], answer], 1),
              "attention_mask": torch.cat([enc["attention_mask"], torch.ones_like(answer)], 1)}
    prompt_mask = torch.cat([enc["attention_mask"], torch.zeros_like(answer)], 1)
    (fast, fast_gates), (slow, slow_gates) = _both(
        t.model, plan, lambda st: st.forward(inputs, return_gates=True, prompt_mask=prompt_mask))
    assert torch.equal(fast, slow)
    assert all(torch.equal(fast_gates[k], slow_gates[k]) for k in slow_gates)
    (unmasked, _), _ = _both(t.model, plan, lambda st: st.forward(inputs, return_gates=True))
    assert not torch.equal(fast, unmasked), "the prompt mask must change what is steered"


def test_composed_plans_take_the_nnsight_executor():
    """The hook executor runs one Plan; a PlanStack (composed bundles) goes through nnsight under 'auto',
    and asking for hooks is refused rather than steering only part of the stack."""
    from steerkit.compose import PlanStack

    t, s = _session("llava")
    plan = make_plan("llava", s.dims, RECIPE_HEAD + GATES["always_on"] + "\nsteer: {layers: {start: 0}}\n")
    stack = PlanStack((plan, plan))
    with steer(t.model, stack) as st:
        assert st.executor == "nnsight"
    with pytest.raises(SteeringRuntimeError) as err:
        Steerer(t.model, stack, executor="hooks")
    assert err.value.problems[0].code == "SK520"
