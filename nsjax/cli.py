"""The ``nsjax`` command line: a thin shell over the library.

Each subcommand parses its flags, calls library functions, prints a short report and
(where it makes files) where they are.
"""

from __future__ import annotations

import argparse
import json
import sys

from nsjax import _cli_beyond, _cli_conv, _cli_train

__all__ = ["main"]


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(t) for t in text.split(",") if t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected positive sizes, got {text!r}")
    return shape


def _cmd_nullspace(args: argparse.Namespace) -> int:
    import jax

    import nsjax

    arch = nsjax.parse_arch(args.arch)
    model = nsjax.FCNN(arch, activation=args.activation)
    input_shape = args.input_shape or (arch[0],)
    params = nsjax.init_params(model, jax.random.key(args.seed), input_shape)
    ns = nsjax.null_space_of(model, params, input_shape, rtol=args.rtol)
    res = None
    if ns.dim:
        res = nsjax.check_invariance(lambda x: model.apply(params, x), ns,
                                     jax.random.key(args.seed + 1), n_probes=args.probes)
    report = {
        "arch": list(arch),
        "activation": args.activation,
        "seed": args.seed,
        "input_shape": list(input_shape),
        "rank": ns.rank,
        "null_space_dim": ns.dim,
        "rank_tolerance": float(ns.tol),
        "invariance_max_rel_error": None if res is None else res.max_rel_error,
        "invariance_by_scale": None if res is None else res.by_scale(),
        "non_null_control_fraction": None if res is None else res.control_fraction,
        "invariance_passed": None if res is None else res.passed,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"FCNN {arch} ({args.activation}), seed {args.seed}, input {input_shape}")
        print(f"  first layer W1: {arch[1]} x {arch[0]}, rank {ns.rank} "
              f"(tolerance {float(ns.tol):.3e})")
        print(f"  null space dim: {ns.dim}   (paper: n0 - n1 = {arch[0] - arch[1]} "
              "for full-rank W1)")
        if res is not None:
            print(f"  invariance f(x + a v) = f(x): {res.summary()}")
    return 0 if res is None or res.passed else 1


def _cmd_demo(args: argparse.Namespace) -> int:
    from nsjax._demo import run_demo

    report = run_demo(args.out, data_dir=args.data_dir, source=args.source, n_pairs=args.pairs,
                      epochs=args.epochs, seed=args.seed, alpha1=args.alpha1, quiet=args.quiet)
    s = report["stego"]
    print(f"null space dim {report['null_space_dim']}, train accuracy "
          f"{100 * report['accuracy']:.2f}% (rescaled {100 * report['accuracy_rescaled']:.2f}%), "
          f"stego success {100 * s['success_rate']:.2f}% over {s['n_pairs']} pairs")
    print(f"report: {args.out}/report.md  {args.out}/report.json  figures: {args.out}/figures/")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nsjax",
        description="Null spaces of neural networks and null-space image steganography (JAX).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("nullspace", help="null space of a randomly initialised FCNN",
                       description="Build an FCNN from a spec, initialise it from a seed, and "
                       "print the rank of W1, the null-space dimension and the invariance error.")
    p.add_argument("--arch", default="784,32,16,10", help="layer sizes n0,n1,...,n_out "
                   "(default: %(default)s)")
    p.add_argument("--activation", default="relu", choices=["relu", "sigmoid"])
    p.add_argument("--seed", type=int, default=0, help="PRNG seed for init and probes")
    p.add_argument("--input-shape", type=_shape, default=None,
                   help="shape of one input, e.g. 28,28,1 (default: n0)")
    p.add_argument("--rtol", type=float, default=None,
                   help="relative rank tolerance (default max(m, n) * eps)")
    p.add_argument("--probes", type=int, default=64, help="random probes for the invariance check")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.set_defaults(func=_cmd_nullspace)

    p = sub.add_parser("demo", help="the main job: null-space steganography on real MNIST",
                       description="Train (or reuse) the paper's (784, 32, 16, 10) ReLU net, "
                       "compute its null space, check the invariant, hide images in >= 1,000 "
                       "cover/hidden pairs and write report.json, report.md and figures.")
    p.add_argument("--out", default="results/demo", help="output folder (default: %(default)s)")
    p.add_argument("--data-dir", default=None,
                   help="folder with MNIST files (default: the sample embedded in nsjax)")
    p.add_argument("--source", default="embedded",
                   help="data source: embedded, files, system, tfds, auto (default: %(default)s"
                   "; files when --data-dir is given)")
    p.add_argument("--pairs", type=int, default=1000, help="cover/hidden pairs (default 1000)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: recipe)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--alpha1", type=float, default=0.2, help="hidden weight (paper: 0.2)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_cmd_demo)

    _cli_train.add_parser(sub)
    _cli_conv.add_parser(sub)
    _cli_beyond.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"nsjax {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
