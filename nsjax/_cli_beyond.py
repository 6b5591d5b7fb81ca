"""``nsjax certify | detect | remedy``: flags of the "beyond the paper" experiments.

Register with ``nsjax._cli_beyond.add_parser(subparsers)`` (``nsjax/cli.py`` does).  Each
subcommand parses its flags and calls one experiment function
(:func:`nsjax.experiments.certify.run_certify`, :func:`nsjax.experiments.detect.run_detect`,
:func:`nsjax.experiments.remedy.run_remedy`), which writes ``--out/report.json``,
``--out/report.md`` and ``--out/figures/``.  Data that is not present is reported as not
run (exit 0).  ``args.func(args)`` returns the exit code: 0, or for ``certify`` 1 when a
certificate does not behave as the theory says.
"""

from __future__ import annotations

import argparse

from nsjax import _cli_args
from nsjax.experiments.detect import DEFAULT_ALPHAS

__all__ = ["add_parser"]


def _shared_flags(p: argparse.ArgumentParser, out: str, epochs: int | None = 10) -> None:
    p.add_argument("--out", default=out, help="output folder (default: %(default)s)")
    p.add_argument("--data-dir", default=None, help="dataset folder (or NSJAX_DATA_DIR)")
    p.add_argument("--source", default="auto", help="data source (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=epochs,
                   help="training epochs per net (default: "
                   f"{'the recipe, 100' if epochs is None else epochs}; checkpoints in "
                   "OUT/checkpoints are reused when the config matches)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None,
                   help="use only the first LIMIT training images (quick runs)")
    p.add_argument("--test-limit", type=int, default=None,
                   help="use only the first TEST_LIMIT test images (quick runs)")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def _shared_kwargs(args) -> dict:
    return {"data_dir": args.data_dir, "source": args.source, "epochs": args.epochs,
            "seed": args.seed, "limit": args.limit, "test_limit": args.test_limit,
            "quiet": args.quiet}


def _cmd_certify(args) -> int:
    from nsjax.experiments.certify import run_certify

    r = run_certify(args.out, dataset=args.dataset, n_points=args.points,
                    n_data_points=args.data_points, bounds=args.bounds, **_shared_kwargs(args))
    print(f"certify: {sum(x['as_expected'] for x in r['rows'])}/{len(r['rows'])} as expected; "
          f"report: {args.out}/report.md")
    return 0 if r["all_as_expected"] else 1


def _cmd_detect(args) -> int:
    from nsjax.experiments.detect import run_detect

    r = run_detect(args.out, datasets=args.datasets, alphas=args.alphas,
                   statistics=args.statistics, fpr=args.fpr, **_shared_kwargs(args))
    missing = [d for d, x in r["datasets"].items() if "not_run" in x]
    print(f"detect: {len(r['rows'])} rows"
          f"{'; not run: ' + ', '.join(missing) if missing else ''}; "
          f"report: {args.out}/report.md")
    return 0


def _cmd_remedy(args) -> int:
    from nsjax.experiments.remedy import run_remedy

    r = run_remedy(args.out, dataset=args.dataset, alpha1=args.alpha1, n_pairs=args.pairs,
                   cnn=not args.no_cnn, attacks=args.attacks,
                   n_jacobian_points=args.jacobian_points, **_shared_kwargs(args))
    print(f"remedy: {len(r['rows'])} rows; report: {args.out}/report.md")
    return 0


def _certify_flags(p: argparse.ArgumentParser) -> None:
    _shared_flags(p, "results/beyond/certify")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--points", type=int, default=None,
                   help="uniform points in the domain (default 2 ceil(n / outputs))")
    p.add_argument("--bounds", type=_cli_args.bounds, default=(-1.0, 1.0), metavar="LO,HI",
                   help="image domain of the uniform points (default the paper's -1,1)")
    p.add_argument("--data-points", type=int, default=1000,
                   help="training images for the data-only certificate row")
    p.set_defaults(func=_cmd_certify, experiment="certify")


def _detect_flags(p: argparse.ArgumentParser) -> None:
    _shared_flags(p, "results/beyond/detect", epochs=None)
    p.add_argument("--datasets", type=_cli_args.names, default=("mnist", "fashion_mnist"),
                   help="comma-separated (default: mnist,fashion_mnist)")
    p.add_argument("--alphas", type=_cli_args.fractions, default=DEFAULT_ALPHAS,
                   help="alpha1 values (default: 0.1,0.2,0.5)")
    p.add_argument("--statistics", type=_cli_args.names, default=None,
                   help="subset of consistency,gauss,ratio,perp (default: all)")
    p.add_argument("--fpr", type=float, default=0.01, help="target FPR (default 0.01)")
    p.set_defaults(func=_cmd_detect, experiment="detect")


def _remedy_flags(p: argparse.ArgumentParser) -> None:
    _shared_flags(p, "results/beyond/remedy")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--alpha1", type=float, default=0.2)
    p.add_argument("--pairs", type=int, default=1000)
    p.add_argument("--attacks", type=_cli_args.names, default=("first_layer", "jacobian"),
                   help="first_layer and/or jacobian (default: both)")
    p.add_argument("--jacobian-points", type=int, default=300)
    p.add_argument("--no-cnn", action="store_true", help="leave out the SAME CNN")
    p.set_defaults(func=_cmd_remedy, experiment="remedy")


_COMMANDS = {
    "certify": (_certify_flags,
                "certificate: lower and upper bound of the null-space dimension",
                "Lower bound dim Null(first layer), upper bound from float64 Jacobians "
                "stacked over sampled points, for trained / random / planted nets."),
    "detect": (_detect_flags, "detect null-space stego images from null-space statistics",
               "Fit detectors on clean training images, calibrate at the target FPR on "
               "held-out training images, report AUC / TPR / realised FPR on whole test sets."),
    "remedy": (_remedy_flags, "nets with a trivial null space beside the paper's, one table",
               "Train the paper's FCNN, a (784, 800, 16, 10) FCNN and a SAME CNN on the same "
               "data; accuracy, null dimension and steganography success on one test set."),
}


def add_parser(subparsers) -> None:
    """Register ``certify``, ``detect`` and ``remedy`` on an argparse subparsers object."""
    for name, (flags, help_, desc) in _COMMANDS.items():
        flags(subparsers.add_parser(name, help=help_, description=desc))
