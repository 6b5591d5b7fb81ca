"""``ns.project(x)`` vs ``ns.project(x, donate=True)`` in a loop that consumes its input.

    python scripts/bench_donate.py [--batch 60000] [--repeats 9]

A plain process (nothing set in the environment).  Each timed call gets a fresh ``x`` (made
outside the timer, as a data loader would), and an unrelated 64 MB array is allocated
between calls, as in an evaluation loop.  Prints medians and minor page faults per call for
the plain call, the eager donated call, and a caller's ``jax.jit(..., donate_argnums=0)``
around ``ns.project(x)`` with and without ``donate=True``; every result is checked
bit-equal to the plain call's.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import nsjax


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=60_000)
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args(argv)
    w = jax.random.normal(jax.random.key(0), (32, 784))
    ns = nsjax.null_space(w)
    x0 = jax.random.normal(jax.random.key(1), (args.batch, 784))
    ref = ns.project(x0)
    variants = {
        "ns.project(x)": ns.project,
        "ns.project(x, donate=True)": lambda x: ns.project(x, donate=True),
        "jit(donate_argnums=0) over ns.project(x)":
            jax.jit(lambda x: ns.project(x), donate_argnums=0),
        "jit(donate_argnums=0) over ns.project(x, donate=True)":
            jax.jit(lambda x: ns.project(x, donate=True), donate_argnums=0),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    faults: dict[str, list[int]] = {k: [] for k in variants}
    for i in range(args.repeats + 2):  # interleaved; the first two rounds are warm-up
        for name, fn in variants.items():
            x = (x0 + 0.0).block_until_ready()  # a fresh input, outside the timer
            other = jnp.ones((16_000_000,)).block_until_ready()  # unrelated allocation
            f0, t0 = _faults(), time.perf_counter()
            y = fn(x).block_until_ready()
            dt, df = time.perf_counter() - t0, _faults() - f0
            if not np.array_equal(np.asarray(y), np.asarray(ref)):
                raise AssertionError(f"{name}: result differs from ns.project(x)")
            del other, y
            if i >= 2:
                times[name].append(dt)
                faults[name].append(df)
    print(f"({args.batch}, 784) float32, rank 32; {nsjax.cpu_kernel_info()}")
    base = statistics.median(times["ns.project(x)"])
    for name in variants:
        med = statistics.median(times[name])
        print(f"{name:<56}{1e3 * med:9.1f} ms{statistics.median(faults[name]):9.0f} faults"
              f"   {base / med:5.2f}x the plain call")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
