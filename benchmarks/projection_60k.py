"""The core issue in one process: project (60000, 784) float32 onto Null(W1), W1 32 x 784.

Run from the repository root::

    python -m benchmarks.projection_60k            # or: python -m benchmarks --case projection-60k
    python -m benchmarks.projection_60k --also-tuned   # + the opt-in tuned-allocator variant

A plain process by default (nothing set in the environment, no re-execution): what a user
gets.  It checks every variant against a float64 NumPy reference, then times, interleaved
and after warm-up, nsjax (``project`` with and without the finite check, on the batch as
``(B, 28, 28, 1)`` images too, ``complement``),
the paper-style pipeline ``X @ N @ N.T`` with ``N = scipy.linalg.null_space(W1)``, the NumPy
one-liner ``X - (X R) R.T``, the same in ``jnp`` under ``jax.jit``, PyTorch if importable,
the elementwise pass ``x + 0`` and a 2048^3 GEMM (for the flops floor), and prints the
medians, the page faults per call and the ratios, and issue #14's verdicts.
"""

from __future__ import annotations

import argparse
import os
import sys

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._bandwidth import describe as describe_bandwidth  # noqa: E402
from benchmarks._env import add_process_options, apply_process_options  # noqa: E402
from benchmarks._plan import GEMM_SIZE  # noqa: E402

LABELS = {
    "nsjax": "nsjax ns.project(x)",
    "nsjax_nocheck": "nsjax, check_finite=False",
    "nsjax_complement": "nsjax ns.complement(x)",
    "nsjax_images": "nsjax, x as (B, 28, 28, 1)",
    "nsjax_xla": "nsjax via XLA matmuls",
    "paper": "paper: X @ N @ N.T",
    "numpy": "NumPy: X - (X R) R.T",
    "jnp": "jnp jit: x - (x @ R) @ R.T",
    "torch_cpu": "PyTorch CPU",
    "torch_cuda": "PyTorch CUDA",
    "elementwise": "elementwise x + 0 (jit)",
    "numpy_copy": "NumPy x.copy() (huge pages)",
    "gemm": f"GEMM {GEMM_SIZE}^3 (rate)",
}
# Issue #14's targets, in a plain process: project and complement each this much faster
# than the NumPy one-liner and the hand-written jnp version (and TARGET_SPEEDUP x the paper).
TARGET_VS_BASELINE = 1.5
TARGETED = ("nsjax", "nsjax_complement")


def _x(v, spec=".1f", suffix="x") -> str:
    """A ratio for a table cell: ``-`` when it is missing (a baseline skipped or failed)."""
    return "-" if v is None else f"{v:{spec}}{suffix}"


def verdicts(ratios: dict) -> tuple[bool, list[str]]:
    """``(all targets hold, one line per targeted variant)``; a missing baseline is a FAIL
    with ``-`` for its figure, never an exception."""
    from benchmarks._run import TARGET_SPEEDUP

    ok, lines = True, []
    for v in TARGETED:
        if v not in ratios:
            continue
        rr = ratios[v]
        parts = []
        for key, label, target in (("speedup_vs_paper", "paper", TARGET_SPEEDUP),
                                   ("speedup_vs_numpy", "NumPy", TARGET_VS_BASELINE),
                                   ("speedup_vs_jnp", "jnp", TARGET_VS_BASELINE)):
            sp = rr.get(key)
            good = sp is not None and sp >= target
            ok &= good
            parts.append(f"vs {label} {_x(sp, '.2f')} (>= {target:g}: "
                         f"{'PASS' if good else 'FAIL'})")
        lines.append(f"{v}: " + ", ".join(parts))
    return ok, lines


def format_case(c: dict) -> list[str]:
    """The table and verdicts of one projection case (``Runner.projection``); any timing,
    ratio or floor may be missing."""
    out = []
    errs = c.get("correct", {}).get("max_abs_err", {})
    if errs:
        out.append(f"correct vs float64 (max abs err, tol {c['correct'].get('tol', 0):.0e}): "
                   + ", ".join(f"{k} {v:.1e}" for k, v in errs.items()))
    if c.get("blas_threads_used"):
        out.append("OpenBLAS threads used by the NumPy baselines (the faster of default and "
                   "1): " + ", ".join(f"{k} {v}" for k, v in c["blas_threads_used"].items()))
    for k, why in (c.get("skipped") or {}).items():
        out.append(f"{LABELS.get(k, k)}: {why}")
    t, rat, fl = c.get("timings", {}), c.get("ratios", {}), c.get("floor") or {}
    out.append(f"{'variant':<32}{'median ms':>10}{'IQR ms':>16}{'faults/call':>12}"
               f"{'vs paper':>10}{'vs NumPy':>10}{'vs jnp':>8}{'x floor':>9}")
    for k, st in t.items():
        rr = rat.get(k, {})
        faults = st.get("minor_faults_per_call")
        out.append(f"{LABELS.get(k, k):<32}{st['median_ms']:>10.1f}"
                   f"{st['q1_ms']:>8.1f}-{st['q3_ms']:<7.1f}"
                   f"{('-' if faults is None else f'{faults:.0f}'):>12}"
                   f"{_x(rr.get('speedup_vs_paper')):>10}"
                   f"{_x(rr.get('speedup_vs_numpy'), '.2f'):>10}"
                   f"{_x(rr.get('speedup_vs_jnp'), '.2f'):>8}"
                   f"{_x(rr.get('x_floor'), '.2f', ''):>9}")
    if fl.get("ms") is not None:
        out.append(f"GEMM rate {fl.get('gemm_gflops', 0):.1f} GFLOP/s -> flops floor "
                   f"{fl.get('flops_ms', 0):.1f} ms ({fl.get('flops', 0) / 1e9:.2f} GFLOP); "
                   f"elementwise floor {fl.get('elementwise_ms', 0):.1f} ms; roofline floor "
                   f"{fl['ms']:.1f} ms ({fl.get('bound', '?')}-bound)")
    bw = c.get("bandwidth")
    if bw:
        out.append(f"bandwidth ({bw['bytes'] / 1e6:.0f} MB a call: x read once, the result "
                   "written once, the basis read once): "
                   + ", ".join(f"{k} {describe_bandwidth(bw, k)}" for k in bw["variants"]))
    copy_ms, paper_ms = (t.get(k, {}).get("median_ms") for k in ("numpy_copy", "paper"))
    if copy_ms and paper_ms:
        own = t.get("nsjax", {}).get("median_ms")
        vs_copy = f"; ns.project takes {own / copy_ms:.2f}x the copy" if own else ""
        out.append(f"ceiling: paper / NumPy copy = {paper_ms / copy_ms:.1f}x (x.copy() writes "
                   f"the fresh output every out-of-place projection writes, on one thread"
                   f"{vs_copy})")
    ok, lines = verdicts(rat)
    out += lines
    out.append("targets (issue #14): " + ("all PASS" if ok else "NOT all met"))
    return out


def run_and_print(b: int = 60_000, n: int = 784, r: int = 32, repeats: int = 11,
                  seed: int = 0, best_blas: bool = True) -> int:
    """Measure and print; returns 0 when the targets hold, else 1."""
    import jax

    from benchmarks._cases import Runner, Settings
    from benchmarks._env import describe

    env = describe(["float32"], "HIGHEST")
    print(f"[{env['process']}]")
    print(f"({b}, {n}) float32 onto Null(W1), W1 {r}x{n} (rank {r}, nullity {n - r}); "
          f"{env['device_kind']} x{env['device_count']}, {env['cpu_count']} cores, "
          f"jax {jax.__version__}, glibc hugetlb {'on' if env['glibc_hugetlb'] else 'off'} "
          f"(THP {env['thp_mode']}), OpenBLAS threads {sorted(set(env['blas_threads'].values()))}"
          f", load {env['load_average_at_start']}")
    print(env["cpu_kernel"])
    runner = Runner(Settings(repeats=repeats, seed=seed, best_blas=best_blas),
                    log=lambda *a: None)
    c = runner.projection("projection-60k", b, n, r, "float32", extra=True, repeats=repeats)
    if c.get("status") != "ok":
        print(c.get("status"), c.get("correct", ""))
        return 1
    lines = format_case(c)
    print("\n".join(lines))
    return 0 if lines[-1].endswith("all PASS") else 1


def _tuned_variant(argv: list[str]) -> int:
    """Run the opt-in tuned-allocator variant in a child process and print it, labelled."""
    import subprocess

    print("\n=== opt-in variant beside the headline: GLIBC_TUNABLES=glibc.malloc.hugetlb=1 "
          "(not what a user's process gets) ===", flush=True)
    args = [a for a in argv if a != "--also-tuned"]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH")) if p))
    return subprocess.call([sys.executable, "-m", "benchmarks.projection_60k", *args,
                            "--hugepages", "on"], env=env)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m benchmarks.projection_60k",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=11)
    p.add_argument("--batch", type=int, default=60_000)
    p.add_argument("--also-tuned", action="store_true",
                   help="after the plain-process run, run and print the --hugepages on "
                   "variant beside it (labelled; never the headline)")
    add_process_options(p)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    apply_process_options("benchmarks.projection_60k", argv, args)
    rc = run_and_print(b=args.batch, repeats=args.repeats, seed=args.seed,
                       best_blas=args.blas_threads is None)
    if args.also_tuned:
        _tuned_variant(argv)
    return rc


if __name__ == "__main__":
    sys.exit(main())
