"""Gate-fit scaling: the null-space closed form at 7B scale on synthetic activations, vs the naive form.

Setting (issue #4): d = 4096, 32 layers, 500 forget rows and 5,000 retain rows, CPU. steerkit's fit
(``gates.fit_nullspace_gate``: eigendecomposition of the retain second moment, then the N_f x N_f dual
solve, never a d x d inverse) is timed over all 32 layers. The naive form, as the authors' code does it
(eigendecomposition, an explicit d x d projector, and ``pinv`` of the d x d matrix X^T X + gamma P), is
timed on ``--naive-layers`` layers in the same run (it is the slow one), and both are compared per layer.
Writes benchmarks/results/gate_fit.json.

  python benchmarks/gate_fit.py [--layers 32] [--naive-layers 2] [--project-layers 32]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from steerkit.gates import fit_nullspace_gate  # noqa: E402


def synthetic(d: int, n_f: int, n_r: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Activations with a decaying spectrum (like real residual streams) plus a forget-specific part."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(d, 512, generator=g))[0]
    scales = torch.logspace(1, -1, 512)
    R = (torch.randn(n_r, 512, generator=g) * scales) @ basis.T + 0.05 * torch.randn(n_r, d, generator=g)
    F = (torch.randn(n_f, 512, generator=g) * scales) @ basis.T + 0.05 * torch.randn(n_f, d, generator=g)
    F += torch.randn(d, generator=g) * 0.2  # the forget-specific offset the gate should find
    return F, R


def naive_fit(F: torch.Tensor, R: torch.Tensor, rho: float, gamma: float) -> torch.Tensor:
    """The d x d route: P = Q Q^T from eigh, u = pinv(X^T X + gamma P) X^T 1, g = P u."""
    F, R = F.double(), R.double()
    d = F.shape[1]
    k = math.floor(rho * d)
    _, Q = torch.linalg.eigh(R.T @ R)
    P = Q[:, :k] @ Q[:, :k].T
    X = F @ P
    u = torch.linalg.pinv(X.T @ X + gamma * P) @ (X.T @ torch.ones(F.shape[0], dtype=F.dtype))
    return P @ u


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--d", type=int, default=4096)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--forget", type=int, default=500)
    ap.add_argument("--retain", type=int, default=5000)
    ap.add_argument("--naive-layers", type=int, default=2)
    ap.add_argument("--project-layers", type=int, default=32,
                    help="layers the totals are projected to when --layers is smaller (fits are per layer)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/gate_fit.json"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    rho, gamma = 0.3, 0.1
    ours, naive, agree = [], [], []
    for layer in range(args.layers):
        F, R = synthetic(args.d, args.forget, args.retain, layer)
        t0 = time.perf_counter()
        fit = fit_nullspace_gate(F, R, rho, gamma)
        ours.append(time.perf_counter() - t0)
        if layer < args.naive_layers:
            t0 = time.perf_counter()
            g_naive = naive_fit(F, R, rho, gamma)
            naive.append(time.perf_counter() - t0)
            agree.append(float(torch.nn.functional.cosine_similarity(fit.g.double(), g_naive, dim=0)))
        print(f"layer {layer}: ours {ours[-1]:.2f} s" + (f", naive {naive[-1]:.2f} s" if layer < args.naive_layers
                                                         else ""), file=sys.stderr, flush=True)
    paired = [n / o for n, o in zip(naive, ours)]
    result = {
        "setting": {"d": args.d, "layers": args.layers, "forget_rows": args.forget, "retain_rows": args.retain,
                    "rho": rho, "gamma": gamma, "threads": torch.get_num_threads(), "torch": torch.__version__},
        "ours_total_seconds": round(sum(ours), 2), "ours_per_layer_seconds": round(sum(ours) / len(ours), 3),
        "naive_layers_timed": len(naive), "naive_per_layer_seconds": round(sum(naive) / max(1, len(naive)), 3),
        "naive_vs_ours_ratio_median": round(sorted(paired)[len(paired) // 2], 2) if paired else None,
        "naive_projected_total_seconds": round(sum(naive) / max(1, len(naive)) * args.project_layers, 1),
        "ours_projected_total_seconds": round(sum(ours) / len(ours) * args.project_layers, 1),
        "projected_to_layers": args.project_layers,
        "cosine_ours_vs_naive": [round(a, 6) for a in agree],
        "target_total_seconds": 60, "meets_target": sum(ours) / len(ours) * args.project_layers <= 60,
        "date": time.strftime("%Y-%m-%d"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    from benchmarks.provenance import provenance

    result["provenance"] = provenance()
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, out)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
