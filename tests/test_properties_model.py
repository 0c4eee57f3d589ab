"""Property tests of steering on tiny random-weight LLaVA and Qwen2.5-VL models (weights ~ N(0, 0.1)).

hypothesis draws the plan (op, site, layers, positions, phase, gate rule and its read) and the batch
(which prompts, which images); the models, encodings and clean activations are built once and cached,
so every example costs a few forward passes. Properties:

* lambda = 0 leaves logits and greedy ids bit-identical to the unsteered model;
* a closed gate row is bit-identical to the unsteered model while an open row changes;
* a batch equals its rows run one by one (logits at the last real token within atol = rtol = 1e-4,
  identical greedy ids), with left padding and mixed lengths;
* activations before the first steered layer are bit-identical to the unsteered ones;
* after ``steer(...)`` exits the model computes exactly what it computed before, with no hook left.
"""

from __future__ import annotations

import contextlib
import dataclasses
from functools import lru_cache

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from steerkit.ops import linear_gate
from steerkit.plan import TensorTable
from steerkit.positions import prompt_masks, union
from steerkit.runtime_nnsight import steer
from steerkit.session import ModelSession
from steerkit.testing.fixtures import RECIPE_HEAD, make_plan, tiny

ARCHS = ("llava", "qwen2_5_vl")
PROMPTS = ("What is in this image?", "Describe the picture in one sentence please now.", "Hi",
           "Who is the person in the photo? Tell me everything you know about them, please.")
PREFILL_POSITIONS = ("all_prompt", "image_tokens", "text_tokens", "last_prompt_token")
SITES = ("resid_pre", "resid_post", "attn_out", "mlp_out")
NEW_TOKENS = 3
MODEL = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models (hidden 64) gain nothing from intra-op threads, and on shared cores two spinning
    threads can make a 10 ms forward take 1 s. Every comparison below runs under the same setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------ cached setup
@lru_cache(maxsize=None)
def session(arch: str):
    t = tiny(arch)
    return t, ModelSession.from_objects(t.model, t.processor, t.tokenizer)


@lru_cache(maxsize=None)
def _encode(arch: str, texts: tuple[str, ...], seed: int) -> dict:
    t, _ = session(arch)
    enc = t.inputs(list(texts), seed=seed)  # left padding (the tiny tokenizers' default), one image per row
    assert t.tokenizer.padding_side == "left"
    return enc


def encode(arch: str, texts, seed: int = 0) -> dict:
    return dict(_encode(arch, tuple(texts), seed))


def alone(arch: str, texts, seed: int, i: int) -> dict:
    """Row i of ``encode(arch, texts, seed)`` encoded on its own: same text, same image, no padding."""
    return encode(arch, [texts[i]], seed + i)  # tiny.inputs gives row i the image tiny_image(seed + i)


@lru_cache(maxsize=None)
def _clean_logits(arch: str, texts: tuple[str, ...], seed: int) -> torch.Tensor:
    with torch.no_grad():
        return session(arch)[0].model(**encode(arch, texts, seed)).logits


@lru_cache(maxsize=None)
def _clean_ids(arch: str, texts: tuple[str, ...], seed: int) -> torch.Tensor:
    t, _ = session(arch)
    with torch.no_grad():
        return t.model.generate(**encode(arch, texts, seed), **gen_kwargs(t))


def gen_kwargs(t) -> dict:
    return dict(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                pad_token_id=t.tokenizer.pad_token_id)


def steer_kwargs(t) -> dict:
    """What Steerer.generate takes besides max_new_tokens (it pins do_sample=False itself)."""
    return dict(min_new_tokens=NEW_TOKENS, pad_token_id=t.tokenizer.pad_token_id)


def bits(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous().view(torch.int32)


def bit_identical(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.equal(bits(a), bits(b))


@contextlib.contextmanager
def capture(model, adapter, num_layers: int):
    """Record every standard site of every layer with plain torch hooks: {(site, layer): [B, T, D]}.

    Pre-hooks see a module's input before any intervention on it; forward hooks see its output after.
    """
    seen: dict = {}
    handles = []
    for layer in range(num_layers):
        for site in SITES:
            spec = adapter.sites[site]
            module = model.get_submodule(adapter.module_path(site, layer))
            key = (site, layer)
            if spec.io == "input":
                def pre(mod, args, kwargs, key=key):
                    seen[key] = (args[0] if args else kwargs["hidden_states"]).detach().clone()
                handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
            else:
                def post(mod, args, out, key=key, idx=spec.output_index):
                    seen[key] = (out[idx] if idx is not None else out).detach().clone()
                handles.append(module.register_forward_hook(post))
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


@lru_cache(maxsize=None)
def _clean_sites(arch: str, texts: tuple[str, ...], seed: int) -> dict:
    t, s = session(arch)
    with torch.no_grad(), capture(t.model, s.adapter, s.dims[1]) as seen:
        t.model(**encode(arch, texts, seed))
    return dict(seen)


# ------------------------------------------------------------------------------------------ strategies
def gate_yaml(rule: str, read_positions: str = "last_prompt_token", pool: str = "last", layer=None,
              threshold: float = 0.0) -> str:
    read = f"read: {{positions: {read_positions}, pool: {pool}}}"
    data = "forget: [{kind: jsonl, path: f}], retain: [{kind: jsonl, path: r}]"
    if rule == "always_on":
        return "gate: {rule: always_on}"
    if rule == "cosine":
        return f"gate: {{rule: cosine_threshold, threshold: {threshold}, {read}}}"
    extra = f", layer: {layer}" if layer is not None else ""
    return f"gate: {{rule: nullspace_linear, {data}, clip: [0, 1], {read}{extra}}}"


def recipe_yaml(gate: str, op: str, site: str, layers, positions, phase: str, lam: float = 1.0,
                clamp_value: float = 0.0) -> str:
    return RECIPE_HEAD + gate + (
        f"\nsteer: {{op: {op}, site: {site}, layers: {list(layers)}, positions: [{', '.join(positions)}], "
        f"phase: {phase}, strength: {{lambda: {lam!r}}}, clamp_value: {clamp_value!r}}}\n")


layers_st = st.sets(st.integers(0, 1), min_size=1).map(sorted)  # the tiny decoders have 2 layers
positions_st = st.lists(st.sampled_from(PREFILL_POSITIONS), min_size=1, max_size=3, unique=True)
texts_st = st.lists(st.sampled_from(PROMPTS), min_size=2, max_size=3).filter(lambda x: len(set(map(len, x))) > 1)
lam_st = st.sampled_from([-4.0, -1.5, 0.75, 3.0])
read_st = st.sampled_from([("last_prompt_token", "last"), ("all_prompt", "mean"), ("image_tokens", "mean"),
                           ("text_tokens", "mean")])


@st.composite
def any_gate(draw, first_layer: int):
    rule = draw(st.sampled_from(["always_on", "linear", "linear_shared", "cosine"]))
    read_positions, pool = draw(read_st)
    if rule == "linear_shared":
        return gate_yaml("linear", read_positions, pool, layer=draw(st.integers(0, first_layer)))
    return gate_yaml(rule, read_positions, pool, threshold=draw(st.sampled_from([-0.5, 0.0, 0.5])))


@st.composite
def any_plan(draw, arch: str, *, ops=("add", "ablate", "clamp"), phases=("prefill", "all_steps"), lam=lam_st):
    _, s = session(arch)
    layers = draw(layers_st)
    phase = draw(st.sampled_from(phases))
    positions = draw(positions_st)
    if phase == "all_steps" and draw(st.booleans()):
        positions = positions + ["generated"]
    yaml = recipe_yaml(draw(any_gate(layers[0])), draw(st.sampled_from(ops)), draw(st.sampled_from(SITES)), layers,
                       positions, phase, draw(lam), draw(st.sampled_from([-2.0, 0.0, 1.5])))
    return make_plan(s.adapter.name, s.dims, yaml, seed=draw(st.integers(0, 3)))


# ------------------------------------------------------------------------------------------ properties
@settings(MODEL, max_examples=15)
@given(arch=st.sampled_from(ARCHS), data=st.data())
def test_lambda_zero_is_bit_identical_to_unsteered(arch, data):
    t, _ = session(arch)
    plan = data.draw(any_plan(arch, ops=("add",), lam=st.just(0.0)), label="plan")
    texts = tuple(data.draw(texts_st, label="texts"))
    enc = encode(arch, texts)
    with steer(t.model, plan) as s:
        logits = s.forward(enc)
        ids = s.generate(enc, NEW_TOKENS, **steer_kwargs(t))
    assert bit_identical(logits, _clean_logits(arch, texts, 0))
    assert torch.equal(ids, _clean_ids(arch, texts, 0))


def _pooled(h: torch.Tensor, mask: torch.Tensor, pool: str) -> torch.Tensor:
    """The per-row feature whose dot with g the gate pools: last selected token, or mean over the mask."""
    if pool == "mean":
        m = mask.to(h.dtype)[..., None]
        return (h * m).sum(1) / m.sum(1).clamp(min=1)
    idx = torch.where(mask, torch.arange(mask.shape[1]).expand_as(mask), -1).max(dim=1).values
    return h[torch.arange(h.shape[0]), idx]


def _separating_gate(feat: torch.Tensor, open_rows: list[bool], scale: float = 1e3):
    """(g, bias) with <feat_i, g> + bias = +scale on open rows and -scale on closed ones (min-norm solve)."""
    a = torch.cat([feat.double(), torch.ones(feat.shape[0], 1, dtype=torch.float64)], dim=1)
    y = torch.tensor([1.0 if o else -1.0 for o in open_rows], dtype=torch.float64)
    sol = torch.linalg.pinv(a) @ y * scale
    return sol[:-1].float(), float(sol[-1])


@settings(MODEL, max_examples=20)
@given(arch=st.sampled_from(ARCHS), data=st.data())
def test_closed_gate_row_is_bit_identical_and_open_row_changes(arch, data):
    t, s = session(arch)
    texts = tuple(data.draw(texts_st, label="texts"))
    rows = len(texts)
    layers = data.draw(layers_st, label="layers")
    site = data.draw(st.sampled_from(SITES), label="site")
    op = data.draw(st.sampled_from(["add", "ablate", "clamp"]), label="op")
    positions = data.draw(positions_st, label="positions")
    shared = data.draw(st.booleans(), label="shared gate")
    read_positions, pool = data.draw(read_st, label="gate read")
    mode = data.draw(st.sampled_from(["huge_bias", "separating"]), label="how the gate is forced")
    if mode == "huge_bias":  # +-1e9 on a [0, 1]-clipped linear gate: exactly 0 or 1 whatever <h, g> is
        open_rows = [data.draw(st.booleans(), label="all rows open")] * rows
    else:
        open_rows = data.draw(st.lists(st.booleans(), min_size=rows, max_size=rows)
                              .filter(lambda o: any(o) and not all(o)), label="open rows")
    gate = gate_yaml("linear", read_positions, pool, layer=layers[0] if shared else None)
    plan = make_plan(s.adapter.name, s.dims, recipe_yaml(gate, op, site, layers, positions, "prefill",
                                                         lam=data.draw(lam_st, label="lambda"), clamp_value=2.0))
    enc = encode(arch, texts)
    masks = prompt_masks(enc["input_ids"], enc["attention_mask"], s.image_token_id)
    clean = _clean_sites(arch, texts, 0)

    def forced(layer: int, vector: torch.Tensor, bias: float):
        if mode == "huge_bias":
            return vector, (1e9 if open_rows[0] else -1e9)
        g, b = _separating_gate(_pooled(clean[(site, layer)], masks[read_positions], pool), open_rows)
        c = linear_gate(clean[(site, layer)], masks[read_positions], g, b, pool, (0.0, 1.0))
        assume(c.tolist() == [float(o) for o in open_rows])  # the construction, not steerkit, is checked here
        return g, b

    tensors = dict(plan.tensors)
    if shared:
        tensors[plan.gate.vector], bias = forced(plan.gate.read.layer, tensors[plan.gate.vector], 0.0)
        plan = dataclasses.replace(plan, gate=dataclasses.replace(plan.gate, bias=bias))
    else:
        writes = []
        for w in plan.writes:
            tensors[w.gate_vector], bias = forced(w.at.layer, tensors[w.gate_vector], 0.0)
            writes.append(dataclasses.replace(w, gate_bias=bias))
        plan = dataclasses.replace(plan, writes=tuple(writes))
    plan = dataclasses.replace(plan, tensors=TensorTable(tensors))

    with steer(t.model, plan) as st_:
        logits, gates = st_.forward(enc, return_gates=True)
    first_key = "shared" if shared else layers[0]
    assert gates[first_key].tolist() == [float(o) for o in open_rows]
    for key, c in gates.items():  # later per-layer gates read steered open rows; closed rows stay clean
        assert all(c[i].item() == 0.0 for i, o in enumerate(open_rows) if not o), f"gate {key}: {c.tolist()}"
    ref = _clean_logits(arch, texts, 0)
    for i, is_open in enumerate(open_rows):
        if is_open:
            assert (logits[i] - ref[i]).abs().max().item() > 0, f"open row {i} did not change"
        else:
            assert bit_identical(logits[i], ref[i]), f"closed row {i} changed"


def _last_real(logits: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    idx = torch.where(attention_mask.bool(), torch.arange(attention_mask.shape[1]), -1).max(dim=1).values
    return logits[torch.arange(logits.shape[0]), idx]


def with_positions(arch: str, enc: dict) -> dict:
    """LLaVA's forward numbers positions 0, 1, 2... whatever the mask, so a left-padded row sees its tokens
    at shifted positions; rotary encoding cancels the shift only up to rounding (stack-notes section 6).
    Passing position_ids = cumsum(mask) - 1 makes a padded row compute exactly what it computes alone.
    ``generate`` already derives position_ids this way, so only forward passes need it. Qwen2.5-VL builds
    its 3-axis mRoPE positions from the attention mask itself and must not be given them."""
    if arch != "llava":
        return enc
    am = enc["attention_mask"]
    return {**enc, "position_ids": (am.long().cumsum(-1) - 1).clamp(min=0)}


@settings(MODEL, max_examples=12)
@given(arch=st.sampled_from(ARCHS), data=st.data())
def test_batched_equals_one_by_one(arch, data):
    t, _ = session(arch)
    plan = data.draw(any_plan(arch), label="plan")
    texts = tuple(data.draw(texts_st, label="texts"))
    seed = data.draw(st.integers(0, 5), label="image seed")
    enc = encode(arch, texts, seed)
    assert not enc["attention_mask"].bool().all(), "mixed lengths must give left padding"
    gk = steer_kwargs(t)
    with steer(t.model, plan) as s:
        batched = _last_real(s.forward(with_positions(arch, enc)), enc["attention_mask"])
        ids = s.generate(enc, NEW_TOKENS, **gk)[:, enc["input_ids"].shape[1]:]
        for i in range(len(texts)):
            one = alone(arch, texts, seed, i)
            single = s.forward(one)[0, -1]
            torch.testing.assert_close(batched[i], single, atol=1e-4, rtol=1e-4)
            single_ids = s.generate(one, NEW_TOKENS, **gk)[0, one["input_ids"].shape[1]:]
            assert torch.equal(ids[i], single_ids), f"row {i}: batched {ids[i].tolist()} alone {single_ids.tolist()}"


@settings(MODEL, max_examples=15)
@given(arch=st.sampled_from(ARCHS), data=st.data())
def test_layers_before_the_first_steered_layer_are_untouched(arch, data):
    t, s = session(arch)
    plan = data.draw(any_plan(arch, phases=("prefill",)), label="plan")
    texts = tuple(data.draw(texts_st, label="texts"))
    enc = encode(arch, texts)
    clean = _clean_sites(arch, texts, 0)
    with steer(t.model, plan) as st_, capture(t.model, s.adapter, s.dims[1]) as seen:
        logits = st_.forward(enc)
    first = plan.written_layers[0]
    untouched = [k for k in clean if k[1] < first] + [("resid_pre", first)]  # resid_pre: seen before any write
    for key in untouched:
        assert bit_identical(seen[key], clean[key]), f"{key} changed but the first steered layer is {first}"
    masks = prompt_masks(enc["input_ids"], enc["attention_mask"], s.image_token_id)
    gate_may_close = plan.gate.rule != "always_on"
    if not gate_may_close and union(masks, plan.writes[0].positions).any():
        assert not bit_identical(logits, _clean_logits(arch, texts, 0)), "an always-on plan changed nothing"


def _hooks(model: torch.nn.Module) -> dict:
    """Every torch hook registered on the model, its submodules, or globally."""
    import torch.nn.modules.module as M

    found = {}
    for name, m in model.named_modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
                     "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
                     "_forward_pre_hooks_with_kwargs", "_state_dict_hooks", "_state_dict_pre_hooks",
                     "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks"):
            if getattr(m, attr, None):
                found[f"{name or '<root>'}.{attr}"] = len(getattr(m, attr))
    for attr in dir(M):
        if attr.startswith("_global_") and attr.endswith("hooks") and getattr(M, attr):
            found[f"torch.nn.modules.module.{attr}"] = len(getattr(M, attr))
    return found


@settings(MODEL, max_examples=8)
@given(arch=st.sampled_from(ARCHS), data=st.data())
def test_model_is_exactly_restored_after_steer(arch, data):
    t, _ = session(arch)
    plan = data.draw(any_plan(arch), label="plan")
    executor = data.draw(st.sampled_from(["auto", "nnsight"]), label="executor")  # auto: the hook fast path
    texts = tuple(data.draw(texts_st, label="texts"))
    enc = encode(arch, texts)
    params = {k: v.clone() for k, v in t.model.state_dict().items()}
    with torch.no_grad():
        before = t.model(**enc).logits
        ids_before = t.model.generate(**enc, **gen_kwargs(t))
    # transformers registers its own output-recording hooks (on LLaVA's CLIP layers) at the first forward:
    # those are the model's, so the property is "steer adds none", taken after a plain forward
    hooks_before = _hooks(t.model)
    with steer(t.model, plan, executor=executor) as s:
        s.forward(enc)
        s.generate(enc, NEW_TOKENS, **steer_kwargs(t))
    with torch.no_grad():
        after = t.model(**enc).logits
        ids_after = t.model.generate(**enc, **gen_kwargs(t))
    assert bit_identical(after, before)
    assert torch.equal(ids_after, ids_before)
    assert _hooks(t.model) == hooks_before
    assert all(torch.equal(v, params[k]) for k, v in t.model.state_dict().items())


@pytest.mark.parametrize("executor", ["auto", "nnsight"])
@pytest.mark.parametrize("arch", ARCHS)
def test_steer_leaves_no_instrumentation_on_the_model(arch, executor):
    """runtime_nnsight promises 'on exit the model is exactly the original': no torch hook, and no
    monkey-patched instance ``forward`` or ``__nnsight__`` state left on any module either (a patched
    forward is a hook by another name: it runs on every later plain call, survives pickling and
    deepcopy, and is what torch.compile / other hook libraries then see). Needs a never-wrapped model,
    so it builds its own instead of using the shared cached one."""
    from steerkit.models.zoo import build_tiny

    t = build_tiny(arch, seed=0, std=0.1)
    s = ModelSession.from_objects(t.model, t.processor, t.tokenizer)
    plan = make_plan(s.adapter.name, s.dims, recipe_yaml(gate_yaml("always_on"), "add", "resid_pre", [1],
                                                         ["all_prompt"], "all_steps"))

    def state(model):
        return {name: sorted(k for k in vars(m) if k in ("forward", "__nnsight__") or k.startswith("_nnsight"))
                for name, m in model.named_modules()}

    enc = t.inputs(list(PROMPTS[:2]))
    with torch.no_grad():
        t.model(**enc)  # lets transformers install its own lazy output-recording hooks first
    before, hooks_before = state(t.model), _hooks(t.model)
    with steer(t.model, plan, executor=executor) as st_:
        st_.forward(enc)
        st_.generate(enc, NEW_TOKENS, **steer_kwargs(t))
    after = state(t.model)
    assert _hooks(t.model) == hooks_before
    changed = {k: v for k, v in after.items() if v != before[k]}
    assert not changed, (f"{len(changed)} of {len(after)} modules keep nnsight instrumentation after steer() "
                         f"exits, e.g. {dict(list(changed.items())[:3])}")
