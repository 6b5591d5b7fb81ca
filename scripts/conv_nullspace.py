"""Null spaces of convolutional first layers: nullity tables, SAME padding, patch embeddings.

Usage::

    python scripts/conv_nullspace.py --out results/conv_nullspace [--trials 200] [--quick]

Writes ``report.json`` and ``report.md`` to ``--out``; the work is
:func:`nsjax.experiments.conv_study.run_conv_study`, results in ``docs/results/conv.md``.
"""

from __future__ import annotations

import argparse

from nsjax.experiments.conv_study import run_conv_study


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output folder for report.json/.md")
    ap.add_argument("--trials", type=int, default=200, help="random kernels per statistic")
    ap.add_argument("--exact", type=int, default=None, help="of those, exact GF(p) ranks")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--blas-threads", type=int, default=1, help="OpenBLAS cap (0: leave)")
    ap.add_argument("--quick", action="store_true", help="small trial counts (smoke test)")
    ap.add_argument("--no-timings", action="store_true", help="skip patch/CIFAR timings")
    args = ap.parse_args(argv)
    run_conv_study(args.out, trials=args.trials, exact=args.exact, quick=args.quick,
                   seed=args.seed, blas_threads=args.blas_threads, timings=not args.no_timings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
