"""Direction methods: sign convention, order invariance, precision, registry and per-layer errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from steerkit.directions import (
    DIRECTION_METHODS,
    compute_directions,
    get_direction_method,
    mean_diff,
    mean_diff_normalized,
    mean_diff_unit,
)
from steerkit.errors import DataError, RecipeError


@st.composite
def contrast(draw):
    """Two activation matrices of one hidden size, plus a seed for permutations."""
    d = draw(st.integers(1, 12))
    n1, n2 = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    return torch.randn(n1, d, generator=gen) * scale, torch.randn(n2, d, generator=gen) * scale, gen


@settings(max_examples=60, deadline=None)
@given(contrast())
def test_mean_diff_flips_sign_and_ignores_row_order(data):
    recall, erasure, gen = data
    r = mean_diff(recall, erasure)
    assert r.dtype == torch.float32 and r.shape == (recall.shape[1],)
    assert torch.equal(mean_diff(erasure, recall), -r)  # exact: float64 subtraction is antisymmetric
    p1, p2 = torch.randperm(len(recall), generator=gen), torch.randperm(len(erasure), generator=gen)
    assert torch.allclose(mean_diff(recall[p1], erasure[p2]), r, rtol=1e-6, atol=1e-6 * r.abs().max().item())


@settings(max_examples=30, deadline=None)
@given(contrast())
def test_registry_methods_agree_on_direction(data):
    recall, erasure, _ = data
    r = mean_diff(recall, erasure).double()
    if r.norm() < 1e-6 * recall.abs().max():
        return  # direction undefined up to rounding
    unit = mean_diff_unit(recall, erasure).double()
    scaled = mean_diff_normalized(recall, erasure).double()
    assert torch.allclose(unit.norm(), torch.tensor(1.0, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(unit, r / r.norm(), atol=1e-5)
    mean_norm = torch.cat([recall, erasure]).double().norm(dim=1).mean()
    assert torch.allclose(scaled, unit * mean_norm, rtol=1e-5, atol=1e-6 * mean_norm.item())
    assert set(DIRECTION_METHODS) == {"mean_diff", "mean_diff_unit", "mean_diff_normalized"}


def test_mean_diff_accumulates_in_float64():
    # A large common offset cancels in the difference; float32 accumulation would leave ~1e-3 errors.
    gen = torch.Generator().manual_seed(1)
    recall = 1e4 + torch.randn(20000, 4, generator=gen)
    erasure = 1e4 + 0.5 + torch.randn(30000, 4, generator=gen)
    ref = recall.double().mean(0) - erasure.double().mean(0)
    assert torch.allclose(mean_diff(recall, erasure).double(), ref, rtol=0, atol=1e-6)
    half = mean_diff(torch.full((10000, 2), 0.1, dtype=torch.float16), torch.zeros(5, 2, dtype=torch.float16))
    assert torch.equal(half, torch.full((2,), 0.0999755859375))  # fp16(0.1) exactly


def test_hand_computed_value():
    recall = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    erasure = torch.tensor([[0.0, 1.0]])
    assert torch.equal(mean_diff(recall, erasure), torch.tensor([2.0, 2.0]))


@pytest.mark.parametrize(
    "recall, erasure",
    [
        (torch.zeros(0, 3), torch.zeros(2, 3)),  # empty side
        (torch.zeros(2, 3), torch.zeros(2, 4)),  # hidden size mismatch
        (torch.zeros(3), torch.zeros(2, 3)),  # not 2-D
        (torch.tensor([[float("nan"), 0.0]]), torch.zeros(1, 2)),  # non-finite
        (torch.zeros(2, 3, dtype=torch.int64), torch.zeros(2, 3)),  # not floating
    ],
)
def test_bad_inputs_raise_data_error(recall, erasure):
    with pytest.raises(DataError):
        mean_diff(recall, erasure)


def test_unit_direction_of_identical_means_raises():
    x = torch.randn(3, 4)
    with pytest.raises(DataError):
        mean_diff_unit(x, x)


def test_unknown_method_suggests_close_name():
    with pytest.raises(RecipeError) as err:
        get_direction_method("mean_dif")
    assert "did you mean 'mean_diff'" in str(err.value)


def test_compute_directions_per_layer():
    gen = torch.Generator().manual_seed(0)
    recall = {layer: torch.randn(5, 6, generator=gen) for layer in (3, 1, 2)}
    erasure = {layer: torch.randn(4, 6, generator=gen) for layer in (1, 2, 3)}
    out = compute_directions("mean_diff", recall, erasure)
    assert list(out) == [1, 2, 3]
    for layer, r in out.items():
        assert torch.equal(r, mean_diff(recall[layer], erasure[layer]))
    del erasure[2]
    with pytest.raises(DataError, match="different layers"):
        compute_directions("mean_diff", recall, erasure)
