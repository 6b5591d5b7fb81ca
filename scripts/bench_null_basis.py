"""``nsjax.null_space(A).basis()`` vs ``scipy.linalg.null_space(A)``: time and accuracy.

Run as a user would, in a plain process with nothing set in the environment::

    python scripts/bench_null_basis.py            # the sizes of issue #14
    python scripts/bench_null_basis.py --sizes 32x784,256x3072 --repeats 7

``A``: a dense ``(m, n)`` float32 standard normal matrix (the benchmark's null-space sweep,
``benchmarks/_plan.py``, plus the square sizes of the issue).  Both calls are timed in the
same process, interleaved (order alternating per repeat, 0.15 s untimed pause after each
call), after one warm-up call each,
with ``jax.block_until_ready`` on nsjax's result; the table gives medians (of ``--repeats``
calls, more for calls under 0.1 s: ~0.5 s of samples).

Accuracy, in float64 arithmetic on the float32 results (``eps`` = float32 eps):

* ``rank``: nsjax's, SciPy's (``n`` minus its nullity), and ``ref`` = NumPy's rule
  (``max(m, n) eps`` relative) on a float64 SVD of ``A``;
* ``|AN|``: ``max |A N| / ||A||_2`` in units of ``eps`` (``N`` the returned null basis);
* ``orth``: ``max |N^T N - I|`` in units of ``eps``;
* ``|A(I-RR^T)|``: ``||A - A R R^T||_2 / ||A||_2`` in units of ``eps`` for nsjax's row
  basis ``R`` (the figure :func:`nsjax.null_space` documents: ``~0.25 eps``), beside its
  floor ``sigma_{rank+1} / sigma_1`` (the discarded part of ``A``; 0 at full row rank).
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import numpy as np
import scipy.linalg

import nsjax
from nsjax.blas import openblas_threads

SIZES = "32x784,64x256,128x784,256x3072,1024x1024,2048x2048"
EPS = float(np.finfo(np.float32).eps)
MAX_REPEATS = 51
SETTLE_S = 0.15


def _time(fn) -> float:
    """ms for one call, then an untimed pause: idle OpenBLAS workers spin ~0.1 s after a
    call and would slow whichever call comes next (both use OpenBLAS), which never happens
    when one of them runs alone (see benchmarks/README.md, "BLAS threads")."""
    t = time.perf_counter()
    jax.block_until_ready(fn())
    ms = (time.perf_counter() - t) * 1e3
    time.sleep(SETTLE_S)
    return ms


def _accuracy(a64: np.ndarray, nb: np.ndarray, norm: float) -> tuple[float, float]:
    """``(max |A N| / ||A||, max |N^T N - I|)`` in units of float32 eps; ``nb``: ``(n, d)``."""
    nb = np.asarray(nb, np.float64)
    if nb.shape[1] == 0:
        return 0.0, 0.0
    an = np.abs(a64 @ nb).max() / norm
    orth = np.abs(nb.T @ nb - np.eye(nb.shape[1])).max()
    return an / EPS, orth / EPS


def bench(m: int, n: int, repeats: int, seed: int = 0) -> dict:
    """Time and check both null bases of one ``(m, n)`` float32 matrix."""
    a = np.random.default_rng([seed, m, n]).standard_normal((m, n)).astype(np.float32)
    fns = {"nsjax": lambda: nsjax.null_space(a).basis(),
           "scipy": lambda: scipy.linalg.null_space(a)}
    times = {k: [] for k in fns}
    for k, fn in fns.items():  # warm-up (compilation)
        jax.block_until_ready(fn())
    # short calls: enough samples for >= ~0.5 s per variant (a 5-sample median of a
    # few-ms call is at the mercy of one scheduler hiccup), at most MAX_REPEATS
    est = max(min(_time(fn) for _ in range(2)) for fn in fns.values())
    repeats = max(repeats, min(MAX_REPEATS, int(0.5e3 / max(est, 1e-3))))
    for i in range(repeats):
        for k in (list(fns) if i % 2 == 0 else list(fns)[::-1]):
            times[k].append(_time(fns[k]))
    a64 = a.astype(np.float64)
    s64 = np.linalg.svd(a64, compute_uv=False)
    ref_rank = int(np.sum(s64 > max(m, n) * EPS * s64[0]))
    ns = nsjax.null_space(a)
    rb = np.asarray(ns.row_basis, np.float64)
    res = np.linalg.norm(a64 - (a64 @ rb) @ rb.T, 2) / s64[0] / EPS
    nxt = s64[ns.rank] / s64[0] / EPS if ns.rank < s64.size else 0.0  # its floor
    out = {"size": f"{m}x{n}", "rank": ns.rank, "ref_rank": ref_rank, "row_residual": res,
           "sigma_next": nxt,
           "ms": {k: float(np.median(v)) for k, v in times.items()},
           "scipy_dim": None}
    for k, fn in fns.items():
        nb = np.asarray(fn())
        out[k] = _accuracy(a64, nb, s64[0])
        if k == "scipy":
            out["scipy_dim"] = nb.shape[1]
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default=SIZES, help=f"comma-separated MxN (default {SIZES})")
    p.add_argument("--repeats", type=int, default=5,
                   help="timed calls per variant (3 above 1e9 units of m n min(m, n) work; "
                   f"more for calls under 0.1 s: ~0.5 s of samples, at most {MAX_REPEATS})")
    args = p.parse_args(argv)
    env = {k: v for k, v in os.environ.items() if "THREADS" in k or k == "GLIBC_TUNABLES"}
    print(f"jax {jax.__version__}, scipy {scipy.__version__}, {os.cpu_count()} CPUs, "
          f"OpenBLAS threads {openblas_threads()}, env {env or 'plain'}, "
          f"loadavg {os.getloadavg()[0]:.2f}")
    print("| size | rank nsjax / scipy (ref) | nsjax ms | scipy ms | scipy/nsjax | "
          "|AN| nsjax / scipy (eps) | orth nsjax / scipy (eps) | |A(I-RR^T)| (floor) (eps) |")
    print("|---|---|---|---|---|---|---|---|")
    for size in args.sizes.split(","):
        m, n = (int(d) for d in size.lower().split("x"))
        reps = args.repeats if m * n * min(m, n) <= 1e9 else min(args.repeats, 3)
        r = bench(m, n, reps)
        ns_ms, sp_ms = r["ms"]["nsjax"], r["ms"]["scipy"]
        print(f"| {r['size']} | {r['rank']} / {n - r['scipy_dim']} ({r['ref_rank']}) | "
              f"{ns_ms:.1f} | {sp_ms:.1f} | "
              f"{sp_ms / ns_ms:.2f} | {r['nsjax'][0]:.2f} / {r['scipy'][0]:.2f} | "
              f"{r['nsjax'][1]:.2f} / {r['scipy'][1]:.2f} | {r['row_residual']:.3f} "
              f"({r['sigma_next']:.3f}) |",
              flush=True)
    print(f"loadavg at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
