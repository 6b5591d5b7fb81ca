"""``python -m benchmarks``: parse the options, run the sweeps, write the results.

Thin on purpose: the cases live in ``_cases.py``, the sweeps in ``_plan.py``, the output
in ``_report.py``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
from pathlib import Path

from benchmarks._env import add_process_options, apply_process_options
from benchmarks._plan import GROUPS


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="nsjax benchmark sweeps: null-space bases, batch projection (batch size, "
        "rank, n), steganography, invariance check, 1 vs N devices; with the paper-style "
        "NumPy/SciPy pipeline, NumPy, PyTorch (if importable) and the roofline floor "
        "measured in the same run.",
    )
    p.add_argument("--out", type=Path, default=None,
                   help="results folder (default: results/bench-<timestamp>)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="tiny sizes, about a minute on 2 cores")
    mode.add_argument("--full", action="store_true",
                      help="uncapped sizes (null space up to 4096 x 16384): tens of minutes")
    p.add_argument("--x64", action="store_true",
                   help="also run every case in float64 (enables jax_enable_x64 first)")
    p.add_argument("--devices", type=int, default=None, metavar="N",
                   help="re-run with N host (CPU) devices via XLA_FLAGS and benchmark 1 vs N "
                   "devices (alone, unless --only says otherwise)")
    add_process_options(p)
    p.add_argument("--only", nargs="+", choices=GROUPS, metavar="GROUP",
                   help=f"run only these groups: {', '.join(GROUPS)}")
    p.add_argument("--case", choices=("projection-60k",),
                   help="run one focused case and print it (see projection_60k.py)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed samples per variant (default 5; 3 in --quick; 11 for the "
                   "(60000, 784) acceptance case)")
    p.add_argument("--max-call-s", type=float, default=1.5,
                   help="skip a baseline whose estimated single call takes longer "
                   "(default 1.5)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    apply_process_options("benchmarks", argv, args, devices=args.devices)
    if args.case == "projection-60k":
        from benchmarks import projection_60k

        return projection_60k.run_and_print(repeats=args.repeats or 11, seed=args.seed,
                                            best_blas=args.blas_threads is None)

    import jax

    if args.x64:
        jax.config.update("jax_enable_x64", True)
    from benchmarks._report import write_all
    from benchmarks._run import Config, run

    mode = "quick" if args.quick else "full" if args.full else "default"
    groups = args.only or (["devices"] if args.devices else list(GROUPS))
    cfg = Config(mode=mode, dtypes=["float32"] + (["float64"] if args.x64 else []),
                 groups=groups, repeats=args.repeats, max_call_s=args.max_call_s,
                 seed=args.seed, hugepages=args.hugepages, devices=args.devices,
                 blas_threads=args.blas_threads)
    out = args.out or Path("results") / (
        "bench-" + _dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
    doc = run(cfg)
    files = write_all(doc, out, plots=not args.no_plots)
    print(f"wall time {doc['wall_s']:.0f} s; wrote:")
    for f in files:
        print(f"  {f}")
    failed = [c["name"] for c in doc["cases"] if str(c.get("status", "")).startswith("failed")]
    if failed:
        print(f"FAILED cases: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
