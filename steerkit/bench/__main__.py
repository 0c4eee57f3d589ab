"""``python -m steerkit.bench OUT [--seed N] [--profiles N]``: write a synthetic world and say what.

A thin command for the other tools' engineers and for CI; the API is
:func:`steerkit.bench.world.generate_world`.
"""

from __future__ import annotations

import argparse
import sys

from steerkit.bench.world import generate_world
from steerkit.errors import SteerkitError


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, generate, print a one-screen summary; exit 2 on invalid input."""
    ap = argparse.ArgumentParser(prog="python -m steerkit.bench", description=__doc__)
    ap.add_argument("out", help="destination folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profiles", type=int, default=100)
    ap.add_argument("--celebrities", type=int, default=20)
    ap.add_argument("--train-variants", type=int, default=2)
    ap.add_argument("--nested", action="store_true", help="nest forget_5 < forget_10 < forget_15")
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    try:
        info = generate_world(args.out, seed=args.seed, n_profiles=args.profiles,
                              n_celebrities=args.celebrities, train_variants=args.train_variants,
                              nested=args.nested, overwrite=args.overwrite)  # fmt: skip
    except SteerkitError as exc:
        print(exc.render(), file=sys.stderr)
        return exc.exit_code
    print(f"wrote {info.root} in {info.seconds:.1f} s")
    print("rows: " + ", ".join(f"{k}={v}" for k, v in info.rows.items()))
    print("train pairs: " + ", ".join(f"{k}={v}" for k, v in info.train_pairs.items()))
    print("contrast: " + ", ".join(f"{k}={v}" for k, v in info.contrast.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
