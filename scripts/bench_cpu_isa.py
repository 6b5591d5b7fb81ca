"""The fused CPU kernel's code paths side by side: AMX, AVX-512 and AVX2, in one process.

    python scripts/bench_cpu_isa.py [--repeats 9] [--rounds 2] [--shapes 60000x784x108 ...]

A plain process (nothing set in the environment).  For each ``ROWSxNxCOLS`` shape (a
``(ROWS, N)`` float32 batch, an ``(N, COLS)`` orthonormal basis), ``x - (x B) B^T`` through
the kernel capped to each instruction set the CPU has (``nsjax._cpu_kernel.isa_capped``),
interleaved: ``--rounds`` rounds of each path in turn, ``--repeats`` timed calls per round
after one warm-up call, medians per round (ms).  Then the NumPy one-liner once, and the
ratio of the first path to the second in each round.  Which path a shape takes also
depends on its columns (AMX from 96 padded columns, ``kAmxMinCols`` in project_cpu.cc);
a path a shape does not take runs the path below it.  Every result is checked against
float64 at 1.5 sqrt(N) eps max|x| (the tolerance of the kernel tests).  The NumPy
one-liner's figure is the median of 3 calls, for scale.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from nsjax import _cpu_kernel as K

DEFAULT_SHAPES = ["60000x784x108", "60000x784x256", "50176x768x192", "60000x784x64",
                  "200000x100x48"]


def _shape(s: str) -> tuple[int, int, int]:
    try:
        m, n, c = (int(v) for v in s.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ROWSxNxCOLS, e.g. 60000x784x108; got {s!r}")
    if not (m > 0 and n > 0 and 0 < c <= min(n, K.MAX_COLS)):
        raise argparse.ArgumentTypeError(f"{s}: need ROWS, N > 0 and 0 < COLS <= min(N, "
                                         f"{K.MAX_COLS})")
    return m, n, c


def _median_ms(fn, repeats: int) -> float:
    fn().block_until_ready()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn().block_until_ready()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--shapes", type=_shape, nargs="+",
                    default=[_shape(s) for s in DEFAULT_SHAPES])
    args = ap.parse_args(argv)
    if not K.available():
        raise SystemExit(f"bench_cpu_isa: {K.info()}")
    levels = _levels()
    paths = [isa for isa in ("amx", "avx512", "avx2") if levels[isa] == K._ISA_LEVELS[isa]]
    print(f"{K.info()} | paths: {', '.join(paths)} | {os.cpu_count()} CPUs", flush=True)
    rng = np.random.default_rng(0)
    for m, n, c in args.shapes:
        q, _ = np.linalg.qr(rng.standard_normal((n, c)))
        b = jnp.asarray(q, jnp.float32)
        x = jnp.asarray(rng.uniform(0, 1, (m, n)), jnp.float32)
        f = jax.jit(lambda x, b: K.project_rows(x, b, True)[0])
        idx = rng.choice(m, size=min(m, 256), replace=False)
        x64, b64 = np.asarray(x, np.float64)[idx], np.asarray(b, np.float64)
        ref = x64 - (x64 @ b64) @ b64.T
        tol = 1.5 * np.sqrt(n) * np.finfo(np.float32).eps * float(jnp.max(jnp.abs(x)))
        times: dict[str, list[float]] = {p: [] for p in paths}
        for _ in range(args.rounds):
            for p in paths:
                with K.isa_capped(p):
                    err = float(np.abs(np.asarray(f(x, b))[idx] - ref).max())
                    if not err <= tol:
                        raise AssertionError(f"{p} {m}x{n}x{c}: error {err:.2e} > {tol:.2e}")
                    times[p].append(_median_ms(lambda: f(x, b), args.repeats))  # noqa: B023
        xn, bn = np.asarray(x), np.asarray(b)
        ts = []
        for _ in range(3):
            t0 = time.perf_counter()
            xn - (xn @ bn) @ bn.T
            ts.append(time.perf_counter() - t0)
        numpy_ms = statistics.median(ts) * 1e3
        time.sleep(0.3)  # OpenBLAS's workers spin after a call: let them sleep
        cells = "  ".join(f"{p} " + " / ".join(f"{t:.1f}" for t in times[p]) for p in paths)
        ratio = ""
        if len(paths) > 1:
            ratio = "  " + f"{paths[1]}/{paths[0]} " + " / ".join(
                f"{b_ / a_:.2f}" for a_, b_ in zip(times[paths[0]], times[paths[1]]))
        print(f"{m}x{n}x{c}: {cells} ms{ratio}  (NumPy one-liner {numpy_ms:.0f} ms)",
              flush=True)
    return 0


def _levels() -> dict[str, int]:
    """The level each cap gives on this CPU (a cap the CPU lacks gives a lower one)."""
    out = {}
    for isa in ("amx", "avx512", "avx2"):
        with K.isa_capped(isa) as level:
            out[isa] = level
    return out


if __name__ == "__main__":
    raise SystemExit(main())
