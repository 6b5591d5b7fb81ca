"""The core issue in one process: project (60000, 784) float32 onto Null(W1), W1 32 x 784.

Run from the repository root::

    python -m benchmarks.projection_60k            # or: python -m benchmarks --case projection-60k
    python benchmarks/projection_60k.py --hugepages off --repeats 21

It checks every variant against a float64 NumPy reference, then times, interleaved and
after warm-up, nsjax (with and without the finite check), the paper-style pipeline
``X @ N @ N.T`` with ``N = scipy.linalg.null_space(W1)``, NumPy ``X - (X R) R.T``, PyTorch
if importable, the elementwise pass ``x + 0`` and a 2048^3 GEMM (for the flops floor), and
prints the medians and the ratios.
"""

from __future__ import annotations

import argparse
import os
import sys

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._env import reexec_if_needed, want_hugepages  # noqa: E402

LABELS = {
    "nsjax": "nsjax ns.project(x)",
    "nsjax_nocheck": "nsjax, check_finite=False",
    "nsjax_xla": "nsjax via XLA matmuls",
    "paper": "paper: X @ N @ N.T",
    "numpy": "NumPy: X - (X R) R.T",
    "torch_cpu": "PyTorch CPU",
    "torch_cuda": "PyTorch CUDA",
    "elementwise": "elementwise x + 0 (jit)",
    "gemm": "GEMM 2048^3 (rate)",
}


def run_and_print(b: int = 60_000, n: int = 784, r: int = 32, repeats: int = 11,
                  seed: int = 0, best_blas: bool = True) -> int:
    """Measure and print; returns 0 when both acceptance targets hold, else 1."""
    import jax

    from benchmarks._cases import Runner, Settings
    from benchmarks._env import describe
    from benchmarks._run import TARGET_SPEEDUP, TARGET_X_FLOOR

    env = describe(["float32"], "HIGHEST")
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
    errs = c["correct"]["max_abs_err"]
    print(f"correct vs float64 (max abs err, tol {c['correct']['tol']:.0e}): "
          + ", ".join(f"{k} {v:.1e}" for k, v in errs.items()))
    if c.get("blas_threads_used"):
        print("OpenBLAS threads used by the NumPy baselines (the faster of default and 1): "
              + ", ".join(f"{k} {v}" for k, v in c["blas_threads_used"].items()))
    t, rat, fl = c["timings"], c["ratios"], c["floor"]
    print(f"{'variant':<32}{'median ms':>10}{'IQR ms':>16}{'faults/call':>12}"
          f"{'vs paper':>10}{'x floor':>9}")
    for k, st in t.items():
        rr = rat.get(k, {})
        sp, xf = rr.get("speedup_vs_paper"), rr.get("x_floor")
        print(f"{LABELS.get(k, k):<32}{st['median_ms']:>10.1f}"
              f"{st['q1_ms']:>8.1f}-{st['q3_ms']:<7.1f}{st['minor_faults_per_call']:>12.0f}"
              f"{(f'{sp:.1f}x' if sp else '-'):>10}{(f'{xf:.2f}' if xf else '-'):>9}")
    print(f"GEMM rate {fl['gemm_gflops']:.1f} GFLOP/s -> flops floor {fl['flops_ms']:.1f} ms "
          f"({fl['flops'] / 1e9:.2f} GFLOP); elementwise floor {fl['elementwise_ms']:.1f} ms;"
          f" roofline floor {fl['ms']:.1f} ms ({fl['bound']}-bound)")
    ok = True
    for v in ("nsjax", "nsjax_nocheck"):
        sp, xf = rat[v]["speedup_vs_paper"], rat[v]["x_floor"]
        a, bb = sp is not None and sp >= TARGET_SPEEDUP, xf <= TARGET_X_FLOOR
        ok &= a and bb
        print(f"{v}: speedup vs paper {sp:.1f}x (>= {TARGET_SPEEDUP:g}: "
              f"{'PASS' if a else 'FAIL'}), {xf:.2f}x floor (<= {TARGET_X_FLOOR:g}: "
              f"{'PASS' if bb else 'FAIL'})")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m benchmarks.projection_60k",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=11)
    p.add_argument("--batch", type=int, default=60_000)
    p.add_argument("--hugepages", choices=("auto", "on", "off"), default="auto")
    p.add_argument("--blas-threads", type=int, default=None,
                   help="set NumPy's/SciPy's OpenBLAS threads (default: leave as is)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    reexec_if_needed("benchmarks.projection_60k", argv,
                     hugepages=want_hugepages(args.hugepages), devices=None)
    if args.blas_threads:
        from benchmarks._env import blas_threads

        blas_threads(args.blas_threads)
    return run_and_print(b=args.batch, repeats=args.repeats, seed=args.seed,
                         best_blas=args.blas_threads is None)


if __name__ == "__main__":
    sys.exit(main())
