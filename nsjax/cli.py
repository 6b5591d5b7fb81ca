"""The ``nsjax`` command line: a thin shell over :mod:`nsjax.experiments`.

Each subcommand maps its flags to one experiment function and prints one summary.  A
dataset that is not present is reported as not run (exit 0); bad arguments exit 2 with a
one-line message; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from nsjax import _cli_beyond, _cli_conv, _cli_train, _interrupt
from nsjax._cli_args import shape

__all__ = ["main", "console", "build_parser"]

_DATASETS = ("mnist", "fashion_mnist", "emnist_balanced", "cifar10")


def _cmd_nullspace(args: argparse.Namespace) -> int:
    from nsjax.experiments.nullspace import nullspace_summary, run_nullspace

    r = run_nullspace(args.arch, activation=args.activation, seed=args.seed,
                      input_shape=args.input_shape, rtol=args.rtol, probes=args.probes)
    print(json.dumps(r, indent=2) if args.json else nullspace_summary(r))
    return 0 if r["invariance_passed"] in (None, True) else 1


def _cmd_stego(args: argparse.Namespace) -> int:
    from nsjax.experiments import run_demo, run_stego

    common = dict(n_pairs=args.pairs, epochs=args.epochs, seed=args.seed, alpha1=args.alpha1,
                  alpha2_rule=args.alpha2, limit=args.limit, test_limit=args.test_limit,
                  quiet=args.quiet)
    if args.command == "demo":
        r = run_demo(args.out, data_dir=args.data_dir, source=args.source, **common)
    else:
        r = run_stego(args.dataset, args.out, data_dir=args.data_dir, source=args.source,
                      cover_dataset=args.cover_dataset, **common)
    s = r["stego"]
    print(f"{r['dataset']}: null space dim {r['null_space_dim']}, train accuracy "
          f"{100 * r['accuracy']:.2f}% (rescaled {100 * r['accuracy_rescaled']:.2f}%), "
          f"stego success {100 * s['success_rate']:.2f}% over {s['n_pairs']} pairs; "
          f"report: {args.out}/report.md")
    return 0


def _cmd_cnn_stego(args: argparse.Namespace) -> int:
    from nsjax.experiments import run_cnn_stego

    r = run_cnn_stego(args.out, data_dir=args.data_dir, source=args.source, epochs=args.epochs,
                      n_pairs=args.pairs, seed=args.seed, limit=args.limit,
                      test_limit=args.test_limit, quiet=args.quiet)
    dims = ", ".join(f"{k} {m['null_space_dim']}" for k, m in r["models"].items())
    print(f"cnn-stego: null dims {dims}; report: {args.out}/report.md")
    return 0


def _add_nullspace(sub) -> None:
    p = sub.add_parser("nullspace", help="null space of a randomly initialised FCNN",
                       description="Build an FCNN from a spec, initialise it from a seed, and "
                       "print the rank of W1, the null-space dimension and the invariance error.")
    p.add_argument("--arch", default="784,32,16,10", help="layer sizes n0,n1,...,n_out "
                   "(default: %(default)s)")
    p.add_argument("--activation", default="relu", choices=["relu", "sigmoid"])
    p.add_argument("--seed", type=int, default=0, help="PRNG seed for init and probes")
    p.add_argument("--input-shape", type=shape, default=None,
                   help="shape of one input, e.g. 28,28,1 (default: n0)")
    p.add_argument("--rtol", type=float, default=None,
                   help="relative rank tolerance (default max(m, n) * eps)")
    p.add_argument("--probes", type=int, default=64, help="random probes for the invariance check")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.set_defaults(func=_cmd_nullspace)


def _data_flags(p: argparse.ArgumentParser, *, source: str, out: str, pairs: int) -> None:
    p.add_argument("--out", default=out, help="output folder (default: %(default)s)")
    p.add_argument("--data-dir", default=None, help="dataset folder (default: NSJAX_DATA_DIR, "
                   "then the places nsjax.data.load tries)")
    p.add_argument("--source", default=source,
                   help="data source: embedded, files, system, tfds, auto (default: %(default)s)")
    p.add_argument("--pairs", type=int, default=pairs, help="cover/hidden pairs "
                   "(default %(default)s)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: recipe)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="use the first N training images")
    p.add_argument("--test-limit", type=int, default=None, help="use the first N test images")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def _alpha_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--alpha1", type=float, default=0.2, help="hidden weight (paper: 0.2)")
    p.add_argument("--alpha2", choices=("paper", "max"), default="paper",
                   help="cover weight: the largest admissible below 1 (paper: alpha2 in (0, 1))"
                   " or the largest admissible (max; can exceed 1)  (default: %(default)s)")


def _add_stego(sub) -> None:
    p = sub.add_parser("demo", help="the main job: null-space steganography on real MNIST",
                       description="Train (or reuse) the paper's (784, 32, 16, 10) ReLU net, "
                       "compute its null space, check the invariant, hide images in >= 1,000 "
                       "cover/hidden pairs and write report.json, report.md and figures.")
    _data_flags(p, source="embedded", out="results/demo", pairs=1000)
    _alpha_flags(p)
    p.set_defaults(func=_cmd_stego, experiment="demo")
    p = sub.add_parser("stego", help="the paper's steganography experiment on one dataset",
                       description="As demo, for any dataset, with the paper's numbers beside "
                       "ours; a dataset that is not present is reported as not run.")
    p.add_argument("--dataset", default="mnist", choices=_DATASETS)
    p.add_argument("--cover-dataset", default=None, choices=_DATASETS,
                   help="also hide in covers from this dataset (same image shape)")
    _data_flags(p, source="auto", out="results/stego", pairs=10000)
    _alpha_flags(p)
    p.set_defaults(func=_cmd_stego, experiment="stego")
    p = sub.add_parser("cnn-stego", help="steganography on VALID / patch / SAME CNNs",
                       description="Train three CNNs on MNIST and hide images in each null "
                       "space (SAME has none).")
    _data_flags(p, source="embedded", out="results/stego_cnn", pairs=1000)
    p.set_defaults(func=_cmd_cnn_stego, experiment="cnn_stego", epochs=20)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nsjax",
        description="Null spaces of neural networks and null-space image steganography (JAX).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_nullspace(sub)
    _add_stego(sub)
    _cli_train.add_parser(sub)
    _cli_conv.add_parser(sub)
    _cli_beyond.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``nsjax`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    Ctrl-C ends the run with one line and exit code 130, once the computations in flight
    have finished (:mod:`nsjax._interrupt`).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    with _interrupt.SigintGuard() as guard:
        try:
            try:
                return _run(args)
            except KeyboardInterrupt:
                guard.acknowledge()
        except KeyboardInterrupt:  # delivered again before the first was acknowledged
            guard.acknowledge()
    # main() may return into a caller whose interpreter then exits: that must not free the
    # runtime under a computation still running on XLA's threads
    _interrupt.settle()
    print(f"nsjax {args.command}: interrupted", file=sys.stderr)
    return 130


def _run(args: argparse.Namespace) -> int:
    """``args.func(args)``, with a missing dataset reported as not run and bad input as a
    one-line error (exit 2)."""
    from nsjax import _data
    from nsjax.experiments import not_run

    try:
        return args.func(args)
    except _data.DatasetNotFoundError as err:
        if getattr(args, "experiment", None) is None:
            print(f"nsjax {args.command}: error: {err}", file=sys.stderr)
            return 2
        not_run(args.out, args.experiment, err)
        print(f"nsjax {args.command}: not run: {str(err).splitlines()[0]} (report: "
              f"{args.out}/report.md)")
        return 0
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"nsjax {args.command}: error: {err}", file=sys.stderr)
        return 2


def console(argv: list[str] | None = None) -> None:
    """The ``nsjax`` console script (and the scripts' entry): :func:`main`, then exit.

    After Ctrl-C the process ends with ``os._exit(130)``: the interpreter's shutdown would
    free JAX's and orbax's native threads while they may still be in use (a segmentation
    fault after the "interrupted" line); every file nsjax writes is committed atomically,
    so nothing is lost by skipping it.
    """
    code = main(argv)
    if code == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    sys.exit(code)


if __name__ == "__main__":
    console()
