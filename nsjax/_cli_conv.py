"""``nsjax conv-nullspace``: flags only; the work is ``run_conv_nullspace``.

:func:`nsjax.experiments.conv.run_conv_nullspace` builds the report,
:func:`nsjax.experiments.conv.summary` prints it.

Register with ``nsjax._cli_conv.add_parser(subparsers)``.
"""

from __future__ import annotations

import argparse
import json

from nsjax._cli_args import shape3

__all__ = ["add_parser"]


def _cmd(args: argparse.Namespace) -> int:
    from nsjax.experiments.conv import run_conv_nullspace, summary

    report = run_conv_nullspace(
        input_shape=tuple(args.input), kernels=args.kernels, size=args.size,
        padding=args.padding, stride=args.stride, dilation=args.dilation, seed=args.seed,
        rtol=args.rtol, probes=args.probes, lemma_trials=args.lemma_trials,
        exact_trials=args.exact_trials, blas_threads=args.blas_threads, rank=args.rank)
    print(json.dumps(report, indent=2, default=str) if args.json else summary(report))
    return 0 if report["success"] else 1


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``conv-nullspace`` on an ``argparse`` subparsers object."""
    p = subparsers.add_parser(
        "conv-nullspace", help="null space of a CNN's first convolution (and Lemma B.1)",
        description="Build a CNN whose first layer is KERNELS SIZExSIZE convolutions, print "
        "each kernel's nullity, the dimension of their intersection Null(C) (exact rank by "
        "default, with the float32-rule near-null spectrum beside it) and the invariance "
        "error, and check Lemma B.1 (single-channel H x W images, as in the paper) on random "
        "and planted degenerate kernels.  Exit code 1 only if the invariance check fails.")
    p.add_argument("--input", type=shape3, default=(28, 28, 1), help="H,W,C (default 28,28,1)")
    p.add_argument("--kernels", type=int, default=6, help="number of kernels (default 6)")
    p.add_argument("--size", type=int, default=3, help="kernel side (default 3)")
    p.add_argument("--padding", default="VALID", help="VALID, SAME, CIRCULAR or REFLECT")
    p.add_argument("--stride", type=int, default=1)
    p.add_argument("--dilation", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rank", choices=("exact", "numerical"), default="exact",
                   help="decide ranks exactly (GF(p), the float32 kernel's exact values; "
                   "default) or by the numerical rule")
    p.add_argument("--rtol", type=float, default=None,
                   help="relative tolerance of the numerical rule (default max(m, n) * eps32; "
                   "max(m, n) * 2.2e-16 is the float64 rule)")
    p.add_argument("--probes", type=int, default=64, help="invariance probes (default 64)")
    p.add_argument("--lemma-trials", type=int, default=200,
                   help="random kernels for the Lemma B.1 check (0: skip; default 200)")
    p.add_argument("--exact-trials", type=int, default=20,
                   help="of those, how many get an exact rank over GF(p) (default 20)")
    p.add_argument("--blas-threads", type=int, default=1,
                   help="cap OpenBLAS threads while running (0: leave as is; default 1, "
                   "because threaded OpenBLAS spin-waits on shared cores)")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.set_defaults(func=_cmd)
    return p
