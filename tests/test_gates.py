"""Gates: null-space closed form (projector, SVD == eigh, no d x d), ridge probe, calibration, AUC."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.overrides import TorchFunctionMode

from steerkit.errors import DataError, RecipeError
from steerkit.gates import (
    GATE_RULES,
    GateFit,
    calibrate_threshold,
    fit_gates,
    fit_nullspace_gate,
    fit_ridge_gate,
    gate_auc,
    gate_values,
    get_gate_rule,
    nullspace_projector,
    retain_spectrum,
)


def low_rank(n: int, d: int, r: int, gen: torch.Generator, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """n rows of rank r in R^d, and the r x d basis they span."""
    basis = torch.randn(r, d, generator=gen, dtype=dtype)
    return torch.randn(n, r, generator=gen, dtype=dtype) @ basis, basis


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / max(b.norm(), 1e-300))


# ---------------------------------------------------------------- projector


@settings(max_examples=40, deadline=None)
@given(d=st.integers(2, 16), n_r=st.integers(1, 24), rank=st.integers(1, 16), n_f=st.integers(1, 10),
       frac=st.floats(0.01, 1.0), seed=st.integers(0, 2**31 - 1))
def test_projector_is_symmetric_idempotent_and_kills_retain_span(d, n_r, rank, n_f, frac, seed):
    gen = torch.Generator().manual_seed(seed)
    rank = min(rank, d, n_r)
    R, _ = low_rank(n_r, d, rank, gen)
    F = torch.randn(n_f, d, generator=gen, dtype=torch.float64)
    k = max(1, math.floor(frac * d))
    P, stats = nullspace_projector(F, R, k)
    dense = P.apply(torch.eye(d, dtype=torch.float64))
    assert torch.allclose(dense, dense.T, atol=1e-10)
    assert torch.allclose(dense @ dense, dense, atol=1e-10)
    assert abs(float(dense.trace()) - P.rank) < 1e-8
    assert stats["effective_rank"] == P.rank <= k
    assert stats["retain_rank"] == rank  # generic low-rank data has exactly this numerical rank
    if k <= d - rank:  # null space orthogonal to the retain span: retain rows vanish
        assert P.apply(R).abs().max() <= 1e-9 * max(1.0, R.abs().max().item())
    else:  # k covers the whole null space, so P = I - (top d - k eigenvectors)
        assert P.rank == k


def test_gate_is_zero_on_retain_span_and_one_on_forget():
    gen = torch.Generator().manual_seed(0)
    d, r = 40, 5
    R, basis = low_rank(15, d, r, gen)  # N_r < d: svd path
    F = torch.randn(8, d, generator=gen, dtype=torch.float64)  # generic: has a component outside the span
    fit = fit_nullspace_gate(F, R, rho=0.5, gamma=1e-9)  # k = 20 <= d - r = 35
    assert fit.stats["k"] == 20 and fit.stats["null_dim"] == 35 and fit.stats["effective_rank"] == 8
    held_out_span = torch.randn(30, r, generator=gen, dtype=torch.float64) @ basis  # unseen retain-like rows
    assert fit.values(R).abs().max() < 1e-5
    assert fit.values(held_out_span).abs().max() < 1e-5
    assert torch.allclose(fit.values(F), torch.ones(8, dtype=torch.float64), atol=1e-5)
    assert fit.stats["fit_auc"] == 1.0 and fit.g.dtype == torch.float32
    # more forget rows than k: the fit is a compromise, but the retain span still maps to 0
    F_many = torch.randn(30, d, generator=gen, dtype=torch.float64)
    fit2 = fit_nullspace_gate(F_many, R, rho=0.5, gamma=0.1)
    assert fit2.stats["effective_rank"] == 20 and fit2.values(held_out_span).abs().max() < 1e-5
    assert fit2.values(F_many).mean() > 0.3


def test_dual_form_equals_the_published_formula():
    """u = pinv(X^T X + gamma P) X^T 1, g = P u with a dense P from the k smallest eigenvectors."""
    gen = torch.Generator().manual_seed(3)
    d, k = 12, 5
    R = torch.randn(40, d, generator=gen, dtype=torch.float64)  # full rank: eigenvectors unique
    F = torch.randn(7, d, generator=gen, dtype=torch.float64)
    _, vecs = torch.linalg.eigh(R.T @ R)
    P = vecs[:, :k] @ vecs[:, :k].T
    X = F @ P
    for gamma in (0.0, 0.1, 10.0):
        u = torch.linalg.pinv(X.T @ X + gamma * P) @ X.T @ torch.ones(7, dtype=torch.float64)
        fit = fit_nullspace_gate(F, R, rho=k / d, gamma=gamma)
        assert rel_err(fit.g, P @ u) < 1e-6


@pytest.mark.parametrize(
    "n_r, d, rank, n_f, rho, gamma",
    [
        (30, 50, 30, 10, 0.3, 0.1),  # N_r < d, k < null dim: tie broken by forget energy
        (30, 50, 30, 10, 0.7, 0.1),  # N_r < d, k > null dim: unique P
        (20, 60, 8, 40, 0.4, 1.0),  # low rank, more forget rows than k
        (25, 40, 10, 5, 0.2, 0.0),  # gamma 0: minimum-norm least squares
        (80, 30, 30, 12, 0.4, 0.1),  # N_r >= d, full rank
        (80, 30, 12, 12, 0.4, 0.1),  # N_r >= d but rank-deficient: eigh sees ~1e-13 "zeros"
    ],
)
def test_svd_path_matches_eigh_path(n_r, d, rank, n_f, rho, gamma):
    gen = torch.Generator().manual_seed(n_r * 1000 + d)
    R, _ = low_rank(n_r, d, rank, gen)
    R = R / R.norm(dim=1, keepdim=True).mean() * 30  # activation-like scale
    F = torch.randn(n_f, d, generator=gen, dtype=torch.float64) * 30
    a = fit_nullspace_gate(F, R, rho=rho, gamma=gamma, method="svd")
    b = fit_nullspace_gate(F, R, rho=rho, gamma=gamma, method="eigh")
    assert a.stats["retain_rank"] == b.stats["retain_rank"] == rank
    assert a.stats["effective_rank"] == b.stats["effective_rank"]
    assert rel_err(a.g, b.g) < 1e-6
    H = torch.cat([F, R])
    assert (a.values(H) - b.values(H)).abs().max() < 1e-6 * max(1.0, b.values(H).abs().max().item())


class MaxNumel(TorchFunctionMode):
    """Records the largest tensor any torch function returns inside the context."""

    def __init__(self):
        super().__init__()
        self.max = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.max = max(self.max, t.numel())
        return out


@pytest.mark.parametrize("rho", [0.3, 0.999])  # basis form and complement form of P
def test_svd_path_never_forms_a_d_by_d_matrix(rho):
    gen = torch.Generator().manual_seed(0)
    d, n_r, n_f = 20000, 50, 30
    R = torch.randn(n_r, d, generator=gen)
    F = torch.randn(n_f, d, generator=gen)
    with MaxNumel() as probe:
        fit = fit_nullspace_gate(F, R, rho=rho, gamma=0.1)
    assert probe.max <= (n_r + n_f) * d  # d x d would be 4e8 elements (3.2 GB in float64)
    if fit.stats["k"] <= fit.stats["null_dim"]:  # else P keeps the 30 weakest retain directions too
        assert fit.values(R).abs().max() < 1e-4
    assert torch.allclose(fit.values(F), torch.ones(n_f, dtype=torch.float64), atol=0.05)
    with MaxNumel() as control:  # the probe does see a d x d matrix when one is formed
        fit_nullspace_gate(F[:, :300], R[:, :300], rho=rho, gamma=0.1, method="eigh")
    assert control.max >= 300 * 300


def test_spectrum_methods_and_bad_parameters():
    R = torch.randn(5, 8, dtype=torch.float64)
    V, lam = retain_spectrum(R, "svd")
    assert V.shape == (8, 5) and bool((lam[1:] >= lam[:-1]).all())
    with pytest.raises(RecipeError, match="gate parameter"):
        retain_spectrum(R, "qr")
    F = torch.randn(3, 8)
    for bad in ({"rho": 0.0}, {"rho": 1.5}, {"gamma": -1.0}, {"rho": 0.1}):  # 0.1 * 8 < 1: k = 0
        with pytest.raises(RecipeError):
            fit_nullspace_gate(F, R.float(), **bad)
    with pytest.raises(DataError, match="hidden size"):
        fit_nullspace_gate(F, torch.randn(5, 9))


def test_forget_inside_retain_span_gives_zero_gate_with_warning():
    gen = torch.Generator().manual_seed(5)
    R, basis = low_rank(10, 20, 4, gen)
    F = torch.randn(3, 4, generator=gen, dtype=torch.float64) @ basis
    with pytest.warns(UserWarning, match="identically zero"):
        fit = fit_nullspace_gate(F, R, rho=0.3, gamma=0.1)
    assert fit.g.abs().max() < 1e-6


# ---------------------------------------------------------------- ridge


@pytest.mark.parametrize("n, d", [(20, 200), (400, 16)])  # dual (N <= d) and primal solve
def test_ridge_gate_separates_separable_data(n, d):
    gen = torch.Generator().manual_seed(n + d)
    shift = torch.zeros(d)
    shift[0] = 6.0
    F = torch.randn(n // 4, d, generator=gen) + shift + 50.0  # common offset: the bias must absorb it
    R = torch.randn(n, d, generator=gen) + 50.0
    fit = fit_ridge_gate(F, R, gamma=0.1)
    assert fit.rule == "ridge_linear" and fit.clip == (0.0, 1.0)
    assert fit.stats["fit_auc"] == 1.0
    assert gate_auc(fit.values(F), fit.values(R)) == 1.0
    cf, cr = fit.values(F), fit.values(R)
    assert float(cf.mean()) > 0.6 and float(cr.mean()) < 0.2
    assert float(cf.min()) >= 0.0 and float(cf.max()) <= 1.0


def test_ridge_matches_normal_equations():
    gen = torch.Generator().manual_seed(9)
    F = torch.randn(6, 5, generator=gen, dtype=torch.float64) + 1
    R = torch.randn(9, 5, generator=gen, dtype=torch.float64)
    fit = fit_ridge_gate(F, R, gamma=0.5, clip=None)
    X = torch.cat([F, R])
    y = torch.cat([torch.ones(6), torch.zeros(9)]).double()
    w = torch.cat([torch.full((6,), 0.5 / 6), torch.full((9,), 0.5 / 9)]).double()
    mu = w @ X
    lam = 0.5 * float((w[:, None] * (X - mu) ** 2).sum()) / 5
    A = torch.cat([X, torch.ones(15, 1, dtype=torch.float64)], 1)  # unpenalised bias column
    reg = torch.diag(torch.tensor([lam] * 5 + [0.0], dtype=torch.float64))
    sol = torch.linalg.solve(A.T @ (w[:, None] * A) + reg, A.T @ (w * y))
    assert rel_err(fit.g, sol[:5]) < 1e-6 and abs(fit.bias - float(sol[5])) < 1e-6


# ---------------------------------------------------------------- values, clip, AUC


def test_gate_values_clip_and_bias():
    H = torch.tensor([[1.0, 0.0], [-3.0, 0.0], [0.2, 0.1]])
    g = torch.tensor([1.0, 2.0])
    assert torch.allclose(gate_values(H, g, bias=0.5), torch.tensor([1.5, -2.5, 0.9], dtype=torch.float64))
    c = gate_values(H, g, bias=0.5, clip=(0.0, 1.0))
    assert torch.equal(c, torch.tensor([1.0, 0.0, 0.9], dtype=torch.float64).clamp(0, 1)) or torch.allclose(
        c, torch.tensor([1.0, 0.0, 0.9], dtype=torch.float64))
    for bad in ((1.0, 0.0), (0.0, float("inf"))):
        with pytest.raises(RecipeError, match="clip"):
            gate_values(H, g, clip=bad)
    fit = GateFit("x", g, bias=-0.1, clip=(-0.5, 0.5))
    v = fit.values(torch.randn(100, 2) * 10)
    assert float(v.min()) >= -0.5 and float(v.max()) <= 0.5
    meta = fit.metadata()
    assert meta["rule"] == "x" and meta["clip"] == [-0.5, 0.5] and meta["bias"] == -0.1


def test_auc_hand_computed_with_ties():
    assert gate_auc(torch.tensor([0.9, 0.8, 0.5]), torch.tensor([0.5, 0.1])) == pytest.approx(5.5 / 6)
    assert gate_auc(torch.tensor([1.0, 1.0]), torch.tensor([1.0])) == 0.5
    assert gate_auc(torch.tensor([2.0]), torch.tensor([1.0, 3.0])) == 0.5
    assert gate_auc(torch.tensor([0.0]), torch.tensor([1.0])) == 0.0
    with pytest.raises(DataError):
        gate_auc(torch.tensor([]), torch.tensor([1.0]))


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=12), st.lists(st.integers(0, 4), min_size=1, max_size=12))
def test_auc_matches_pairwise_count(pos, neg):
    pairs = [1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg)]
    expected = sum(pairs) / len(pairs)
    assert gate_auc(torch.tensor(pos, dtype=torch.float32), torch.tensor(neg)) == pytest.approx(expected, abs=1e-12)


# ---------------------------------------------------------------- calibration


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), q1=st.floats(0.05, 1.0), q2=st.floats(0.05, 1.0), n=st.integers(1, 60))
def test_calibration_closes_retain_and_is_monotone(seed, q1, q2, n):
    gen = torch.Generator().manual_seed(seed)
    fit = GateFit("ridge_linear", torch.randn(6, generator=gen), bias=0.3, clip=(0.0, 1.0))
    H = torch.randn(n, 6, generator=gen)
    lo_q, hi_q = min(q1, q2), max(q1, q2)
    a = calibrate_threshold(fit, H, retain_closed=lo_q)
    b = calibrate_threshold(fit, H, retain_closed=hi_q)
    assert float((b.values(H) <= 0.0).double().mean()) >= hi_q - 1e-9
    probe = torch.randn(200, 6, generator=gen) * 3
    assert bool((b.values(probe) <= a.values(probe) + 1e-6).all())  # stricter never opens more


def test_calibration_with_forget_sets_both_ends():
    gen = torch.Generator().manual_seed(2)
    g = torch.tensor([1.0, 0.0])
    R = torch.randn(100, 2, generator=gen)
    F = torch.randn(50, 2, generator=gen) + torch.tensor([5.0, 0.0])
    fit = calibrate_threshold(GateFit("nullspace_linear", g), R, retain_closed=0.9, H_forget=F, forget_open=0.6)
    assert fit.clip == (0.0, 1.0)
    assert float((fit.values(R) <= 0).double().mean()) >= 0.9
    assert float((fit.values(F) >= 1 - 1e-6).double().mean()) >= 0.6
    with pytest.raises(DataError, match="cannot separate"):
        calibrate_threshold(GateFit("x", g), R, retain_closed=0.9, H_forget=R, forget_open=0.5)
    with pytest.raises(RecipeError):
        calibrate_threshold(fit, R, retain_closed=0.0)


# ---------------------------------------------------------------- registry


def test_registry_and_per_layer_fit():
    assert set(GATE_RULES) == {"nullspace_linear", "ridge_linear"}
    with pytest.raises(RecipeError) as err:
        get_gate_rule("ridge")
    assert "ridge_linear" in str(err.value)
    gen = torch.Generator().manual_seed(4)
    forget = {layer: torch.randn(6, 10, generator=gen) + 2 for layer in (2, 1)}
    retain = {layer: torch.randn(12, 10, generator=gen) for layer in (1, 2)}
    fits = fit_gates("nullspace_linear", forget, retain, rho=0.5, gamma=0.1, clip=(0, 1))
    assert list(fits) == [1, 2] and all(f.clip == (0.0, 1.0) for f in fits.values())
    assert fits[1].metadata()["rho"] == 0.5
    with pytest.raises(DataError, match="different layers"):
        fit_gates("ridge_linear", forget, {1: retain[1]})


def test_prototype_gate_scores_cosine_whitened_and_discriminant_prototypes():
    from steerkit.ops import prototype_gate

    gen = torch.Generator().manual_seed(0)
    b, t, d, k = 5, 4, 6, 3
    h, mask = torch.randn(b, t, d, generator=gen), torch.rand(b, t, generator=gen) > 0.3
    mask[:, 0] = True
    centers, inv_std = torch.randn(k, d, generator=gen), torch.rand(k, d, generator=gen) + 0.5
    protos = torch.randn(k, d, generator=gen)
    row_image, proto_image = torch.tensor([1, 0, 1, 0, 1], dtype=torch.bool), torch.tensor([1, 0, 0], dtype=torch.bool)
    linear = torch.tensor([False, True, False])
    scale, bias = torch.tensor([2.0, 0.3, 1.0]), torch.tensor([0.1, -0.2, 0.0])
    a = torch.randn(d, d, generator=gen)
    whiten, proto_whiten = (a @ a.T + torch.eye(d))[None], torch.tensor([0, -1, 0])
    got = prototype_gate(h, mask, row_image, centers, inv_std, protos, proto_image, scale, bias, None, linear,
                         whiten, proto_whiten)
    m = mask.float()[:, :, None]
    pooled = (h * m).sum(1) / m.sum(1)
    for i in range(b):
        scores = []
        for j in range(k):
            if bool(row_image[i]) != bool(proto_image[j]):
                continue
            z = (pooled[i] - centers[j]) * inv_std[j]
            if proto_whiten[j] >= 0:
                z = whiten[proto_whiten[j]] @ z
            s = z @ protos[j] if linear[j] else torch.nn.functional.cosine_similarity(z, protos[j], dim=0)
            scores.append(scale[j] * s + bias[j])
        assert torch.allclose(got[i], torch.stack(scores).max(), atol=1e-5)
    # without the flags every prototype is a plain cosine one (bundles from before these options)
    plain = prototype_gate(h, mask, row_image, centers, inv_std, protos, proto_image, scale, bias, None)
    unwhitened = prototype_gate(h, mask, row_image, centers, inv_std, protos, proto_image, scale, bias, None,
                                linear)
    assert not torch.allclose(plain[~row_image], unwhitened[~row_image])  # the discriminant prototype
    assert not torch.allclose(unwhitened[row_image], got[row_image])  # the whitened image prototype
