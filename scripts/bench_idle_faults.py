"""``ns.project(x)`` after the process sat idle: the kernel's huge-page advice, probed or not.

    python scripts/bench_idle_faults.py [--batch 60000] [--gaps 0 4] [--calls 5]

A plain process (nothing set in the environment).  Before each timed call the process
sleeps ``gap`` seconds, as a script does between the steps that call nsjax.  Every call
writes a fresh output (XLA allocates it; the previous one has been freed).  Three settings
of the kernel's huge-page advice, interleaved call by call:

* ``probed`` (the default): the first touch of each 2 MiB region is timed as the kernel
  reaches it, and once those faults have cost more than 4 KiB pages would (1 ms a region,
  plus a slack of 20), the rest of the output goes without huge pages;
* ``every region``: every region advised, whatever its faults cost (what NumPy does for its
  own arrays, and what nsjax did before the probe);
* ``none``: 4 KiB pages throughout.

NumPy's ``x.copy()`` of the same array (which asks for huge pages on its output) is timed
beside them for reference.  Prints the median, fastest and slowest call per setting and
gap, minor page faults per call, and the probe counts of the kernel's last call; every
result is checked bit-equal to the first one.
"""

from __future__ import annotations

import argparse
import math
import resource
import statistics
import time

import jax
import numpy as np

import nsjax
from nsjax import _cpu_kernel

SETTINGS = {"probed (default)": (True, 1.0), "every region": (True, math.inf),
            "none (4 KiB pages)": (False, 1.0)}


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=60_000)
    ap.add_argument("--gaps", type=float, nargs="+", default=[0.0, 4.0],
                    help="seconds idle before each call (default: 0 and 4)")
    ap.add_argument("--calls", type=int, default=5, help="timed calls per setting and gap")
    args = ap.parse_args(argv)
    if not _cpu_kernel.available():
        print(f"nothing to measure: {nsjax.cpu_kernel_info()}")
        return 0
    w = jax.random.normal(jax.random.key(0), (32, 784))
    ns = nsjax.null_space(w)
    x = jax.random.normal(jax.random.key(1), (args.batch, 784)).block_until_ready()
    xn = np.asarray(x)
    ref = np.asarray(ns.project(x))
    names = [*SETTINGS, "NumPy x.copy()"]
    print(f"({args.batch}, 784) float32, rank 32; {nsjax.cpu_kernel_info()}")
    print(f"{'gap s':>6} {'setting':<22}{'median ms':>10}{'min':>8}{'max':>8}"
          f"{'faults':>9}  last call's probes")
    previous = (_cpu_kernel.set_hugepages(True), _cpu_kernel.set_fault_allowance_ms(1.0))
    try:
        for gap in args.gaps:
            times: dict[str, list[float]] = {k: [] for k in names}
            faults: dict[str, list[int]] = {k: [] for k in names}
            stats: dict[str, dict] = {}
            for _ in range(args.calls):
                for name in names:
                    kernel = name in SETTINGS
                    if kernel:
                        on, ms = SETTINGS[name]
                        _cpu_kernel.set_hugepages(on)
                        _cpu_kernel.set_fault_allowance_ms(ms)
                    time.sleep(gap)
                    f0, t0 = _faults(), time.perf_counter()
                    y = ns.project(x).block_until_ready() if kernel else xn.copy()
                    dt, df = time.perf_counter() - t0, _faults() - f0
                    if kernel:
                        stats[name] = _cpu_kernel.advice_stats() if on else {}
                        if not np.array_equal(np.asarray(y), ref):
                            raise AssertionError(f"{name}: result differs from the first call")
                    del y
                    times[name].append(dt)
                    faults[name].append(df)
            for name in names:
                t = [1e3 * v for v in times[name]]
                st = stats.get(name)
                probes = (f"{st['probed']}/{st['regions']} regions probed"
                          + (", then stopped" if st["stopped"] else "") if st else "-")
                print(f"{gap:>6.1f} {name:<22}{statistics.median(t):>10.1f}{min(t):>8.1f}"
                      f"{max(t):>8.1f}{statistics.median(faults[name]):>9.0f}  {probes}")
    finally:
        _cpu_kernel.set_hugepages(previous[0])
        _cpu_kernel.set_fault_allowance_ms(previous[1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
