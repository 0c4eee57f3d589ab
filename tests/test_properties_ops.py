"""Property tests of the pure tensor code: the intervention arithmetic (``ops``) and the position masks.

Everything here is a pure function of tensors, so hypothesis can search shapes, values, gates and
masks freely and cheaply. "Bit-identical" means identical bit patterns (``_bits``), which is stricter
than ``torch.equal``: it also tells ``-0.0`` from ``+0.0``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from steerkit.ops import apply_op, linear_gate
from steerkit.positions import POSITION_NAMES, decode_masks, last_real_index, prompt_masks, union

FAST = settings(max_examples=100, deadline=None)
OPS = ("add", "ablate", "clamp")
VALUE = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=32)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _bits(x: torch.Tensor) -> torch.Tensor:
    """The raw bit pattern of a float tensor (so -0.0 != +0.0 and NaN payloads count)."""
    return x.contiguous().view({4: torch.int32, 2: torch.int16}[x.element_size()])


def assert_bit_identical(out: torch.Tensor, h: torch.Tensor) -> None:
    """Two separate asserts, so hypothesis reports a value change (e.g. NaN) and a mere sign-of-zero flip
    as two distinct bugs, each with its own minimal example."""
    assert out.dtype == h.dtype and out.shape == h.shape
    assert torch.equal(out, h), f"values changed: {out} != {h}"
    assert torch.equal(_bits(out), _bits(h)), f"same values but different bits (signed zero?): {out} vs {h}"


@st.composite
def op_case(draw, *, c_values=VALUE, dtypes=("float32",)):
    """(h [B,T,D], r [D], c [B], mask [B,T], strength, clamp_value), in one of ``dtypes``."""
    b, t, d = draw(st.integers(1, 3)), draw(st.integers(1, 5)), draw(st.integers(1, 8))
    dtype = DTYPES[draw(st.sampled_from(dtypes))]
    h = torch.from_numpy(draw(arrays(np.float32, (b, t, d), elements=VALUE))).to(dtype)
    r = torch.from_numpy(draw(arrays(np.float32, (d,), elements=VALUE)))
    c = torch.from_numpy(draw(arrays(np.float32, (b,), elements=c_values)))
    mask = torch.from_numpy(draw(arrays(np.bool_, (b, t))))
    strength = draw(st.floats(-10, 10, allow_nan=False, width=32))
    clamp_value = draw(st.floats(-100, 100, allow_nan=False, width=32))
    return h, r, c, mask, strength, clamp_value


# ------------------------------------------------------------------------------------------ ops
@FAST
@given(case=op_case(dtypes=tuple(DTYPES)))
def test_add_with_lambda_zero_is_bit_identical(case):
    h, r, c, mask, _, _ = case
    assert_bit_identical(apply_op(h, "add", r, c, mask, 0.0), h)


@FAST
@given(case=op_case(dtypes=tuple(DTYPES)), op=st.sampled_from(OPS), data=st.data())
def test_closed_gate_leaves_its_row_bit_identical(case, op, data):
    h, r, c, mask, strength, clamp_value = case
    closed = data.draw(st.integers(0, h.shape[0] - 1), label="closed row")
    c = c.clone()
    c[closed] = 0.0
    out = apply_op(h, op, r, c, mask, strength, clamp_value)
    assert_bit_identical(out[closed], h[closed])


@FAST
@given(case=op_case(dtypes=tuple(DTYPES)), op=st.sampled_from(OPS))
def test_only_masked_positions_change(case, op):
    h, r, c, mask, strength, clamp_value = case
    out = apply_op(h, op, r, c, mask, strength, clamp_value)
    assert_bit_identical(out[~mask], h[~mask])


@pytest.mark.parametrize("op", ["ablate", "clamp"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_zero_direction_leaves_closed_rows_and_unmasked_positions_alone(op, dtype):
    """A direction whose norm is 0 in the activation dtype (an all-zero vector, or a tiny one that underflows
    when cast to float16) must not turn untouched positions into NaN. Row 0 is open, row 1 closed."""
    h = torch.tensor([[[1.0, -2.0], [0.5, 0.0]], [[3.0, 4.0], [-1.0, 2.0]]], dtype=DTYPES[dtype])
    r = torch.zeros(2)
    mask = torch.tensor([[True, False], [True, True]])
    out = apply_op(h, op, r, torch.tensor([1.0, 0.0]), mask, 1.0, 0.5)
    assert_bit_identical(out[1], h[1])  # closed row
    assert_bit_identical(out[0, 1], h[0, 1])  # unmasked position of the open row


def _unit_case():
    """A float32 case whose direction is not degenerate (ablate/clamp divide by |r|)."""
    return op_case(c_values=st.just(1.0)).filter(lambda x: x[1].norm().item() > 1e-2)


@FAST
@given(case=_unit_case())
def test_ablate_twice_equals_ablate_once(case):
    h, r, c, mask, _, _ = case
    once = apply_op(h, "ablate", r, c, mask, 1.0)
    twice = apply_op(once, "ablate", r, c, mask, 1.0)
    # the second pass removes only the rounding residue of the first: |residue| <~ eps * |h|
    tol = 1e-5 * (1.0 + h.abs().amax(dim=-1, keepdim=True)) * max(1.0, h.shape[-1] ** 0.5)
    assert ((twice - once).abs() <= tol).all()
    unit = r / r.norm()
    assert ((once @ unit)[mask].abs() <= tol[..., 0][mask]).all(), "ablation leaves no component along r"


@FAST
@given(case=_unit_case())
def test_clamp_sets_the_component_along_r(case):
    h, r, c, mask, _, value = case
    out = apply_op(h, "clamp", r, c, mask, 1.0, value)
    unit = r / r.norm()
    comp = out @ unit
    tol = 1e-5 * (1.0 + abs(value) + h.abs().amax(dim=-1)) * max(1.0, h.shape[-1] ** 0.5)
    assert ((comp - value).abs() <= tol)[mask].all()
    # and nothing orthogonal to r moved (at masked positions; unmasked ones are bit-identical, see above)
    ortho_in = h - (h @ unit)[..., None] * unit
    ortho_out = out - comp[..., None] * unit
    assert ((ortho_out - ortho_in).abs() <= tol[..., None])[mask].all()


@FAST
@given(case=op_case(c_values=st.floats(0, 1, width=32)))
def test_add_is_exactly_linear_in_the_gate_and_mask(case):
    """h' - h == lambda * c * r at masked positions (up to one rounding), 0 elsewhere."""
    h, r, c, mask, strength, _ = case
    out = apply_op(h, "add", r, c, mask, strength)
    expected = h + strength * (c[:, None, None] * mask[:, :, None].float()) * r
    assert torch.equal(out, expected)


@FAST
@given(b=st.integers(1, 3), t=st.integers(1, 5), d=st.integers(1, 6), bias=st.floats(-1e9, -1e6), data=st.data())
def test_linear_gate_with_huge_negative_bias_is_exactly_closed(b, t, d, bias, data):
    h = torch.from_numpy(data.draw(arrays(np.float32, (b, t, d), elements=VALUE)))
    g = torch.from_numpy(data.draw(arrays(np.float32, (d,), elements=st.floats(-1, 1, width=32))))
    mask = torch.from_numpy(data.draw(arrays(np.bool_, (b, t))))
    pool = data.draw(st.sampled_from(["last", "mean", "max"]))
    c = linear_gate(h, mask, g, bias, pool, (0.0, 1.0))
    assert torch.equal(c, torch.zeros(b))


# ------------------------------------------------------------------------------------------ positions
PAD, IMAGE = 0, 7


@st.composite
def padded_batch(draw):
    """(input_ids, attention_mask, lengths, side): rows of 1..T real tokens, the rest padding."""
    b, t = draw(st.integers(1, 4)), draw(st.integers(1, 12))
    side = draw(st.sampled_from(["left", "right"]))
    lengths = draw(st.lists(st.integers(1, t), min_size=b, max_size=b))
    ids = torch.full((b, t), PAD, dtype=torch.long)
    am = torch.zeros((b, t), dtype=torch.long)
    for i, n in enumerate(lengths):
        real = torch.tensor(draw(st.lists(st.sampled_from([1, 2, 3, IMAGE, IMAGE, 9]), min_size=n, max_size=n)))
        sl = slice(t - n, t) if side == "left" else slice(0, n)
        ids[i, sl], am[i, sl] = real, 1
    return ids, am, lengths, side


@FAST
@given(batch=padded_batch())
def test_last_prompt_token_is_exactly_one_real_position_per_row(batch):
    ids, am, lengths, side = batch
    last = prompt_masks(ids, am, IMAGE)["last_prompt_token"]
    assert last.sum(dim=1).tolist() == [1] * ids.shape[0]
    assert (am.bool() | ~last).all(), "the last prompt token must never be a pad position"
    t = ids.shape[1]
    expected = [t - 1 if side == "left" else n - 1 for n in lengths]
    assert last.int().argmax(dim=1).tolist() == expected == last_real_index(am).tolist()


@FAST
@given(batch=padded_batch())
def test_image_tokens_count_equals_image_ids(batch):
    ids, am, _, _ = batch
    masks = prompt_masks(ids, am, IMAGE)
    assert masks["image_tokens"].sum().item() == (ids == IMAGE).sum().item()
    assert masks["image_tokens"].sum(dim=1).tolist() == (ids == IMAGE).sum(dim=1).tolist()
    assert not prompt_masks(ids, am, None)["image_tokens"].any()


@FAST
@given(batch=padded_batch(), image_id=st.sampled_from([IMAGE, None, 12345]))
def test_text_and_image_partition_all_prompt(batch, image_id):
    ids, am, _, _ = batch
    m = prompt_masks(ids, am, image_id)
    assert torch.equal(m["text_tokens"] | m["image_tokens"], m["all_prompt"])
    assert not (m["text_tokens"] & m["image_tokens"]).any()
    assert torch.equal(m["all_prompt"], am.bool())
    assert not m["generated"].any()
    assert torch.equal(union(m, ["text_tokens", "image_tokens"]), m["all_prompt"])
    assert set(m) == set(POSITION_NAMES)


@FAST
@given(batch=padded_batch())
def test_no_attention_mask_means_every_position_is_real(batch):
    ids, _, _, _ = batch
    m = prompt_masks(ids, None, IMAGE)
    assert m["all_prompt"].all()
    assert m["last_prompt_token"][:, -1].all() and m["last_prompt_token"].sum().item() == ids.shape[0]


@pytest.mark.parametrize("batch", [1, 3])
def test_decode_masks_select_only_generated(batch):
    m = decode_masks(batch)
    assert m["generated"].all() and m["generated"].shape == (batch, 1)
    assert not any(m[k].any() for k in POSITION_NAMES if k != "generated")
