"""The nnsight runtime equals an independent plain-torch-hook executor, for every op, gate and phase."""

from __future__ import annotations

import pytest
import torch

from steerkit.runtime_nnsight import steer
from steerkit.session import ModelSession
from steerkit.testing.hook_reference import HookSteerer

from steerkit.testing.fixtures import RECIPE_HEAD, make_plan, tiny

GATES = {
    "always_on": "gate: {rule: always_on}",
    "linear_per_layer": "gate: {rule: nullspace_linear, forget: [{kind: jsonl, path: f}], retain: [{kind: jsonl, path: r}], clip: null}",
    "linear_shared_clipped": "gate: {rule: ridge_linear, forget: [{kind: jsonl, path: f}], retain: [{kind: jsonl, path: r}], layer: 0, read: {positions: all_prompt, pool: mean}}",
    "linear_image_max": "gate: {rule: ridge_linear, forget: [{kind: jsonl, path: f}], retain: [{kind: jsonl, path: r}], read: {positions: image_tokens, pool: max}, clip: [-1, 1]}",
    "cosine": "gate: {rule: cosine_threshold, threshold: 0.0}",
    # image and text prompts, cosine and discriminant prototypes (random, see fixtures._random_prototypes)
    "prototype": "gate: {rule: prototype, forget: [{kind: jsonl, path: f}], retain: [{kind: jsonl, path: r}], layer: 0}",
}
OPS = {
    "add": "op: add, strength: {lambda: -1.5}",
    "ablate": "op: ablate",
    "clamp": "op: clamp, clamp_value: 2.0",
}
SITES = ["resid_pre", "resid_post", "attn_out", "mlp_out"]


def _session(name):
    t = tiny(name)
    return t, ModelSession.from_objects(t.model, t.processor, t.tokenizer)


def _inputs(t):
    # two rows of different lengths, each with its own image: left padding, several images per batch
    return t.inputs(["What is in this image?", "Describe the picture in one sentence please now."], seed=3)


def _recipe(gate: str, op: str, site: str = "resid_pre", positions: str = "[all_prompt]", phase: str = "prefill"):
    return RECIPE_HEAD + gate + f"\nsteer: {{{op}, site: {site}, layers: {{start: 0}}, positions: {positions}, phase: {phase}}}\n"


@pytest.mark.parametrize("arch", ["llava", "qwen2_5_vl"])
@pytest.mark.parametrize("gate", list(GATES))
@pytest.mark.parametrize("op", list(OPS))
def test_forward_matches_hooks(arch, gate, op):
    t, s = _session(arch)
    plan = make_plan(s.adapter.name, s.dims, _recipe(GATES[gate], OPS[op]))
    enc = _inputs(t)
    with torch.no_grad():
        clean = t.model(**enc).logits
    with steer(t.model, plan) as st:
        ours = st.forward(enc)
    ref = HookSteerer(t.model, plan, s.image_token_id).forward(enc)
    assert (ours - ref).abs().max().item() <= 1e-5
    if gate != "cosine":  # a cosine gate may legitimately be closed on both rows
        assert (ours - clean).abs().max().item() > 1e-4, "the plan must change something"


@pytest.mark.parametrize("arch", ["llava", "qwen2_5_vl"])
@pytest.mark.parametrize("site", SITES)
def test_every_site_matches_hooks(arch, site):
    t, s = _session(arch)
    plan = make_plan(s.adapter.name, s.dims, _recipe(GATES["linear_per_layer"], OPS["add"], site=site))
    enc = _inputs(t)
    with steer(t.model, plan) as st:
        ours = st.forward(enc)
    ref = HookSteerer(t.model, plan, s.image_token_id).forward(enc)
    assert (ours - ref).abs().max().item() <= 1e-5


@pytest.mark.parametrize("arch", ["llava", "qwen2_5_vl"])
@pytest.mark.parametrize("phase,positions", [("prefill", "[all_prompt]"), ("all_steps", "[all_prompt, generated]"),
                                             ("all_steps", "[generated]"), ("prefill", "[image_tokens]"),
                                             ("prefill", "[text_tokens, last_prompt_token]")])
def test_generate_matches_hooks(arch, phase, positions):
    t, s = _session(arch)
    plan = make_plan(s.adapter.name, s.dims, _recipe(GATES["linear_shared_clipped"], OPS["add"],
                                                      positions=positions, phase=phase))
    enc = _inputs(t)
    pad = dict(pad_token_id=t.tokenizer.pad_token_id)
    with steer(t.model, plan) as st:
        ours = st.generate(enc, 6, **pad)
    ref = HookSteerer(t.model, plan, s.image_token_id).generate(enc, 6, **pad)
    assert torch.equal(ours, ref)


def test_all_steps_differs_from_prefill_only():
    """Steering generated tokens must actually reach the decode steps (the nnsight iter trap)."""
    t, s = _session("llava")
    enc = _inputs(t)
    pre = make_plan("llava", s.dims, _recipe(GATES["always_on"], "op: add, strength: {lambda: 4.0}",
                                              positions="[generated]", phase="all_steps"))
    with steer(t.model, pre) as st:
        steered = st.generate(enc, 6, pad_token_id=t.tokenizer.pad_token_id)
    with torch.no_grad():
        clean = t.model.generate(**enc, max_new_tokens=6, do_sample=False, pad_token_id=t.tokenizer.pad_token_id)
    n = enc["input_ids"].shape[1]
    assert torch.equal(steered[:, : n + 1], clean[:, : n + 1]), "first new token comes from the unsteered prompt"
    assert not torch.equal(steered, clean)
