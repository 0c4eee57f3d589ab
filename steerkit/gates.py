"""Input-aware gates (method.md, Step 2): per layer, a scalar c(h) = clip(<h, g> + b) from one d-vector.

Every rule returns a ``GateFit`` holding (g, b, clip), the only thing the runtime needs: it computes
c at the gate site and adds lambda * c * r. The paper's d x d map W = g r^T is rank one, so we never
store it. Rules (``GATE_RULES``):

- ``nullspace_linear``: the paper's closed form, constrained to the null space of retain activations.
- ``ridge_linear``: an unconstrained, class-balanced ridge probe with a bias; at small scale the
  null-space restriction costs separability (toyworld: AUC 0.80-0.91 vs 0.98 for a ridge probe), so
  this is the toolkit's recommended rule.

``calibrate_threshold`` then sets (g, b) from held-out retain so that a chosen fraction stays closed.
All fitting runs in float64; stored vectors are float32. No model, no nnsight.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from steerkit.directions import as_rows64
from steerkit.errors import DataError, Problem, RecipeError, choices_hint


@dataclass(frozen=True, eq=False)
class GateFit:
    """A fitted gate: c(h) = clip(<h, g> + bias). ``params``: hyperparameters; ``stats``: fit facts."""

    rule: str
    g: Tensor  # [d] float32
    bias: float = 0.0
    clip: tuple[float, float] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)

    def values(self, H: Tensor) -> Tensor:
        """Gate values [N] (float64) of activations H [N, d]."""
        return gate_values(H, self.g, bias=self.bias, clip=self.clip)

    def metadata(self) -> dict[str, Any]:
        """JSON-ready record for the bundle's ``gate`` metadata key."""
        clip = list(self.clip) if self.clip is not None else None
        return {"rule": self.rule, **self.params, "bias": self.bias, "clip": clip, **self.stats}


def _bad_param(key: str, message: str, hint: str) -> RecipeError:
    return RecipeError("invalid gate parameter", [Problem(message, key_path=f"gate.{key}", hint=hint)])


def _check_clip(clip: Any) -> tuple[float, float] | None:
    lohi = None if clip is None else tuple(float(v) for v in clip)
    if lohi is not None and not (len(lohi) == 2 and all(map(math.isfinite, lohi)) and lohi[0] < lohi[1]):
        raise _bad_param("clip", f"clip must be [lo, hi] with lo < hi; got {clip}", "use [0.0, 1.0]")
    return lohi


def gate_values(H: Tensor, g: Tensor, *, bias: float = 0.0, clip: Any = None) -> Tensor:
    """c = clip(H g + bias) in float64, shape [N]. ``clip=None`` leaves the score unbounded (the paper)."""
    X = as_rows64("H", H, g.shape[-1], allow_empty=True)
    c = X @ g.detach().to(device=X.device, dtype=torch.float64) + float(bias)
    lohi = _check_clip(clip)
    return c if lohi is None else c.clamp(*lohi)


def gate_auc(pos: Tensor, neg: Tensor) -> float:
    """P(score_pos > score_neg) + 0.5 P(equal): the rank (Mann-Whitney) AUC with mid-ranks for ties."""
    p = torch.as_tensor(pos).detach().reshape(-1).to(torch.float64).cpu()
    n = torch.as_tensor(neg).detach().reshape(-1).to(torch.float64).cpu()
    if p.numel() == 0 or n.numel() == 0:
        raise DataError("AUC needs at least one positive and one negative score")
    if not bool(torch.isfinite(torch.cat([p, n])).all()):
        raise DataError("AUC scores contain NaN or inf")
    sorted_x, order = torch.sort(x := torch.cat([p, n]))
    _, inverse, counts = torch.unique_consecutive(sorted_x, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).to(torch.float64)
    mid = ends - (counts.to(torch.float64) - 1) / 2  # 1-based mid-rank of each tie group
    ranks = torch.empty_like(x).index_put_((order,), mid[inverse])
    n_p = p.numel()
    return (ranks[:n_p].sum().item() - n_p * (n_p + 1) / 2) / (n_p * n.numel())


@dataclass(frozen=True, eq=False)
class NullspaceProjector:
    """P in implicit form, never d x d: P = V V^T (``complement`` False) or P = I - V V^T (True).

    ``vectors`` [d, m] has orthonormal columns (float64). P is symmetric and idempotent by construction.
    """

    vectors: Tensor
    complement: bool

    @property
    def rank(self) -> int:
        d, m = self.vectors.shape
        return d - m if self.complement else m

    def apply(self, X: Tensor) -> Tensor:
        """Rows of X [N, d] projected: X P (= (P X^T)^T since P is symmetric); O(N d m)."""
        proj = (X @ self.vectors) @ self.vectors.T
        return X - proj if self.complement else proj


def retain_spectrum(H_retain: Tensor, method: str = "auto", null_tol: float = 1e-10) -> tuple[Tensor, Tensor]:
    """Eigenpairs of H_r^T H_r with eigenvalue > null_tol * largest, ascending: (V [d, r], lam [r]).

    ``svd``: thin SVD of H_r, O(N_r^2 d), no d x d matrix; ``eigh``: the d x d second moment, O(d^3);
    ``auto``: svd when N_r < d. Eigenvalues under the relative tolerance count as exactly zero, so both
    paths see the same null space (eigh reports zeros as ~1e-13 noise of either sign).
    """
    R = as_rows64("H_retain", H_retain)
    if method == "auto":
        method = "svd" if R.shape[0] < R.shape[1] else "eigh"
    if method == "svd":
        _, s, Vh = torch.linalg.svd(R, full_matrices=False)
        lam, V = (s * s).flip(0), Vh.flip(0).T
    elif method == "eigh":
        lam, V = torch.linalg.eigh(R.T @ R)
    else:
        raise _bad_param("method", f"unknown spectrum method {method!r}", choices_hint(method, ["auto", "svd", "eigh"]))
    keep = (lam > null_tol * lam.max()) & (lam > 0) if lam.numel() else lam > 0
    return V[:, keep], lam[keep]


def nullspace_projector(H_forget: Tensor, H_retain: Tensor, k: int, *, method: str = "auto",
                        null_tol: float = 1e-10) -> tuple[NullspaceProjector, dict[str, Any]]:
    """Projector onto the k eigen-directions of H_r^T H_r with the smallest eigenvalues.

    If k >= d - r (r = retain rank), P = I - V_top V_top^T with V_top the d - k largest: unique. If
    k < d - r, the k smallest tie inside the zero eigenspace and any choice is valid; we break the tie
    deterministically by forget energy (top right singular vectors of H_f projected onto the null
    space). Null directions orthogonal to every forget row cannot change g (g lies in P H_f^T), so
    they are dropped; ``effective_rank`` in the stats is the stored projector's rank.
    """
    F = as_rows64("H_forget", H_forget)
    V, lam = retain_spectrum(as_rows64("H_retain", H_retain, F.shape[1]), method, null_tol)
    d, r = F.shape[1], V.shape[1]
    if k >= d - r:
        P = NullspaceProjector(V[:, r - (d - k):], complement=True)
    else:
        F_null = F - (F @ V) @ V.T
        _, s, Wh = torch.linalg.svd(F_null, full_matrices=False)
        scale = max(float(lam.max()) if r else 0.0, float((F * F).sum(1).max()))
        f = int((s * s > null_tol * scale).sum())
        P = NullspaceProjector(Wh[: min(k, f)].T, complement=False)
    return P, {"k": k, "retain_rank": r, "null_dim": d - r, "effective_rank": P.rank}


def fit_nullspace_gate(H_forget: Tensor, H_retain: Tensor, rho: float = 0.3, gamma: float = 0.1, *,
                       target: float = 1.0, clip: Any = None, method: str = "auto",
                       null_tol: float = 1e-10) -> GateFit:
    """The paper's gate: g = P pinv(X^T X + gamma P) X^T t with X = H_f P, t = target * 1.

    Args:
        H_forget: [N_f, d] gate-site activations of forget prompts (include text-only ones).
        H_retain: [N_r, d] the same for retain prompts; P projects away their span.
        rho: fraction of d kept in the null space, k = floor(rho * d). Larger rho fits forget better
            but lets more retain variance through (authors: 0.3 LLaVA, 0.4 Qwen2.5-VL).
        gamma: ridge on u inside the null space, absolute (it depends on the activation scale).
            0 gives the minimum-norm least-squares solution.
        target: gate value forget rows are fitted to.
        clip: None (unbounded, as published) or (lo, hi); clipping to (0, 1) removes the negative
            gates that steer text-only prompts toward compliance (toyworld).
        method, null_tol: see ``retain_spectrum``.

    Computed as the equal dual form g = X^T (X X^T + gamma I)^+ t: O(N_f^2 d), no d x d on the svd path.
    """
    F = as_rows64("H_forget", H_forget)
    R = as_rows64("H_retain", H_retain, F.shape[1])
    d = F.shape[1]
    k = math.floor(rho * d) if 0 < rho <= 1 else -1
    if k < 1:
        raise _bad_param("rho", f"rho must be in (0, 1] with rho * hidden >= 1; got {rho} (hidden {d})",
                         "the authors use 0.3-0.4")
    if not gamma >= 0:
        raise _bad_param("gamma", f"gamma must be >= 0; got {gamma}", "the authors use 0.1-1.0")
    P, stats = nullspace_projector(F, R, k, method=method, null_tol=null_tol)
    X = P.apply(F)
    K = X @ X.T
    t = torch.full((F.shape[0],), float(target), dtype=torch.float64, device=F.device)
    if gamma > 0:
        w = torch.linalg.solve(K + gamma * torch.eye(K.shape[0], dtype=K.dtype, device=K.device), t)
    else:
        w = torch.linalg.pinv(K, hermitian=True) @ t
    g = X.T @ w
    if P.rank == 0 or not bool(g.any()):
        warnings.warn("null-space gate is identically zero: forget rows lie in the retain span", stacklevel=2)
    params = {"rho": rho, "gamma": gamma, "target": target, "method": method}
    return _finish("nullspace_linear", g, 0.0, clip, F, R, params, stats)


def _finish(rule: str, g: Tensor, b: float, clip: Any, F: Tensor, R: Tensor,
            params: dict[str, Any], stats: dict[str, Any]) -> GateFit:
    """Package a float64 fit as float32 and record in-sample diagnostics (unclipped scores)."""
    sf, sr = F @ g + b, R @ g + b
    stats = {**stats, "fit_auc": gate_auc(sf, sr), "forget_mean": sf.mean().item(), "retain_mean": sr.mean().item()}
    return GateFit(rule, g.to(torch.float32).cpu(), float(b), _check_clip(clip), params, stats)


def fit_ridge_gate(H_forget: Tensor, H_retain: Tensor, *, gamma: float = 1.0, balance: bool = True,
                   clip: Any = (0.0, 1.0)) -> GateFit:
    """Ridge probe with bias: minimise sum_i w_i (<h_i, g> + b - y_i)^2 + lam |g|^2; y: 1 forget, 0 retain.

    Args:
        gamma: ridge strength relative to the mean eigenvalue of the weighted centred covariance
            (lam = gamma * trace / d), so one value works at every layer whatever its activation scale.
            Tune it on held-out retain; small values interpolate the fit set.
        balance: weight both classes equally (each sums to 0.5), so a large retain set cannot drown
            a small forget set.
        clip: default (0, 1): the probe is a regression, its raw score overshoots both ends.

    Closed form in float64; the dual (N x N) system is used when N <= d, so no d x d matrix then.
    """
    F = as_rows64("H_forget", H_forget)
    R = as_rows64("H_retain", H_retain, F.shape[1])
    if not gamma > 0:
        raise _bad_param("gamma", f"gamma must be > 0; got {gamma}", "try 1.0")
    nf, nr = F.shape[0], R.shape[0]
    X, y = torch.cat([F, R]), torch.cat([F.new_ones(nf), R.new_zeros(nr)])
    w = torch.cat([F.new_full((nf,), 0.5 / nf), R.new_full((nr,), 0.5 / nr)]) if balance \
        else X.new_full((nf + nr,), 1.0 / (nf + nr))
    mu, ybar, sw = w @ X, w @ y, w.sqrt()
    Z, z = (X - mu) * sw[:, None], (y - ybar) * sw
    lam = gamma * float((Z * Z).sum()) / X.shape[1]
    if lam == 0:
        raise DataError("all forget and retain activations are identical; no gate can separate them")
    n, d = Z.shape
    if n <= d:
        g = Z.T @ torch.linalg.solve(Z @ Z.T + lam * torch.eye(n, dtype=Z.dtype, device=Z.device), z)
    else:
        g = torch.linalg.solve(Z.T @ Z + lam * torch.eye(d, dtype=Z.dtype, device=Z.device), Z.T @ z)
    b = float(ybar - mu @ g)
    return _finish("ridge_linear", g, b, clip, F, R, {"gamma": gamma, "balance": balance}, {})


def calibrate_threshold(fit: GateFit, H_retain: Tensor, *, retain_closed: float = 0.95,
                        H_forget: Tensor | None = None, forget_open: float = 0.5) -> GateFit:
    """Re-set (g, b) from held-out activations so at least ``retain_closed`` of retain rows get c <= lo.

    Only the bias moves when ``H_forget`` is None. With ``H_forget`` the score is also rescaled so at
    least ``forget_open`` of forget rows reach c >= hi (the line through both quantiles). Clip becomes
    ``fit.clip`` or (0, 1): "closed" only means "no steering" when negative gates are clipped away.
    Raising ``retain_closed`` never opens the gate wider on any input.
    """
    if not 0 < retain_closed <= 1:
        raise _bad_param("retain_closed", f"retain_closed must be in (0, 1]; got {retain_closed}", "try 0.95")
    lo, hi = fit.clip or (0.0, 1.0)
    sr = gate_values(H_retain, fit.g).cpu()  # unbiased scores <h, g>
    if sr.numel() == 0:
        raise DataError("calibration needs held-out retain activations; got none")
    m = max(1, math.ceil(retain_closed * sr.numel() - 1e-9))
    thr = float(torch.kthvalue(sr, m).values)
    g, stats = fit.g, {"retain_closed": retain_closed, "retain_threshold": thr + fit.bias}
    if H_forget is not None:
        if not 0 < forget_open <= 1:
            raise _bad_param("forget_open", f"forget_open must be in (0, 1]; got {forget_open}", "try 0.5")
        sf = gate_values(H_forget, fit.g).cpu()
        n_open = max(1, math.ceil(forget_open * sf.numel() - 1e-9))
        thr_f = float(torch.kthvalue(sf, sf.numel() - n_open + 1).values)
        if thr_f <= thr:
            raise DataError("gate cannot separate held-out forget from retain at these fractions", [Problem(
                f"forget score quantile {thr_f + fit.bias:.4g} <= retain score quantile {thr + fit.bias:.4g}",
                hint="lower retain_closed or forget_open, or use a more separable rule (ridge_linear)")])
        g = (fit.g.to(torch.float64) * ((hi - lo) / (thr_f - thr))).to(torch.float32)
        stats.update(forget_open=forget_open, forget_threshold=thr_f + fit.bias)
        thr = float(torch.kthvalue(gate_values(H_retain, g).cpu(), m).values)  # with the rounded g
    b = lo - thr
    while thr + b > lo:  # float64 rounding must not leave the threshold row a hair open
        b = math.nextafter(b, -math.inf)
    return replace(fit, g=g, bias=b, clip=(lo, hi), stats={**fit.stats, **stats})


GateRule = Callable[..., GateFit]
GATE_RULES: dict[str, GateRule] = {
    "nullspace_linear": fit_nullspace_gate,
    "ridge_linear": fit_ridge_gate,
}


def get_gate_rule(name: str) -> GateRule:
    """Look a rule up by its recipe name; unknown names raise with "did you mean" and the choices."""
    if name not in GATE_RULES:
        raise RecipeError("unknown gate rule", [Problem(f"unknown value {name!r}", key_path="gate.rule",
                                                        code="SK102", hint=choices_hint(name, GATE_RULES))])
    return GATE_RULES[name]


def fit_gates(rule: str | GateRule, forget: Mapping[int, Tensor], retain: Mapping[int, Tensor],
              **params: Any) -> dict[int, GateFit]:
    """Fit one rule per layer: {layer: H_f}, {layer: H_r} -> {layer: GateFit}; layer sets must match."""
    fn = get_gate_rule(rule) if isinstance(rule, str) else rule
    if set(forget) != set(retain):
        raise DataError("forget and retain activations cover different layers",
                        [Problem(f"forget layers {sorted(forget)} vs retain layers {sorted(retain)}")])
    return {layer: fn(forget[layer], retain[layer], **params) for layer in sorted(forget)}
