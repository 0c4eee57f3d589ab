"""Plans travel: serialised whole (for a remote worker) and run on a model whose layers are offloaded."""

from __future__ import annotations

import pytest
import torch

from steerkit.plan import Plan
from steerkit.runtime_nnsight import steer
from steerkit.testing.fixtures import RECIPE_HEAD, make_plan, tiny
from steerkit.testing.hook_reference import HookSteerer

PLANS = {
    "linear_shared": "gate: {rule: ridge_linear, forget: [{kind: jsonl, path: f}], retain: [{kind: jsonl, path: r}], "
                     "layer: 0, read: {positions: all_prompt, pool: mean}}\n"
                     "steer: {op: add, layers: {start: 0}, strength: {lambda: -1.5}}\n",
    "prototype": "gate: {rule: prototype, forget: [{kind: jsonl, path: f}], retain: [{kind: jsonl, path: r}], "
                 "layer: 0}\nsteer: {op: add, layers: {start: 0}, positions: [all_prompt, generated], "
                 "phase: all_steps, strength: {lambda: -1.5}}\n",
}


def _session(name="llava"):
    from steerkit.session import ModelSession

    t = tiny(name)
    return t, ModelSession.from_objects(t.model, t.processor, t.tokenizer)


@pytest.mark.parametrize("kind", list(PLANS))
def test_plan_round_trips_through_bytes_and_runs_the_same(kind):
    t, s = _session()
    plan = make_plan(s.adapter.name, s.dims, RECIPE_HEAD + PLANS[kind])
    again = Plan.loads(plan.dumps())
    assert again == plan and again.sha256() == plan.sha256()
    assert all(torch.equal(again.tensors[k], plan.tensors[k]) for k in plan.tensors)
    enc = t.inputs(["What is in this image?", "Describe the picture in one sentence please now."], seed=3)
    with steer(t.model, plan) as st:
        a = st.forward(enc)
    with steer(t.model, again) as st:
        b = st.forward(enc)
    assert torch.equal(a, b)


def test_loads_rejects_bytes_that_are_not_a_plan():
    import safetensors.torch

    foreign = safetensors.torch.save({"x": torch.zeros(2)})
    for data in (b"", b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ", foreign, foreign[:-3]):
        with pytest.raises(ValueError, match="not a serialised steerkit plan"):
            Plan.loads(data)


def test_offloaded_layer_gives_the_same_steered_outputs(tmp_path):
    """A device_map that offloads a decoder layer to disk (accelerate hooks move its weights in at each
    forward, as in a sharded multi-device run) steers exactly like the model held in memory."""
    from steerkit.models.loading import load_pretrained
    from steerkit.models.zoo import save_tiny

    t, s = _session()
    src = save_tiny(t, tmp_path / "m")
    device_map = {"model.vision_tower": "cpu", "model.multi_modal_projector": "cpu",
                  "model.language_model.embed_tokens": "cpu", "model.language_model.layers.0": "cpu",
                  "model.language_model.layers.1": "disk", "model.language_model.norm": "cpu",
                  "model.language_model.rotary_emb": "cpu", "lm_head": "cpu"}
    sharded, _, _ = load_pretrained(src, loader=None, device_map=device_map)
    assert sharded.hf_device_map["model.language_model.layers.1"] == "disk"
    plan = make_plan(s.adapter.name, s.dims, RECIPE_HEAD + PLANS["linear_shared"])
    enc = t.inputs(["What is in this image?", "Describe the picture in one sentence please now."], seed=3)
    with steer(t.model, plan) as st:
        ref = st.forward(enc)
    with steer(sharded, plan) as st:
        got = st.forward(enc)
    assert torch.allclose(got, ref, atol=1e-6)
    assert (got - HookSteerer(sharded, plan, s.image_token_id).forward(enc)).abs().max() <= 1e-5
