"""Timing: interleaved repeats, medians and spreads, first-call (compile) times.

Every variant of a case (nsjax, the baselines, the roofline pass) is timed in the same loop,
one after the other, in a new (seeded) random order each repeat: on a shared machine the load
changes over seconds, and interleaving makes every variant see the same load, so their
*ratios* stay meaningful even when the absolute times drift.

A sample is ``inner`` back-to-back calls (each one blocked on with ``block_until_ready``)
divided by ``inner``; ``inner`` is chosen so that a sample lasts at least ``target_s``, which
keeps microsecond calls (batch size 1) above the timer's resolution.
"""

from __future__ import annotations

import math
import random
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import jax
import numpy as np

__all__ = ["Stats", "block", "first_call", "measure"]


def block(out):
    """Wait for ``out`` (any pytree of jax/numpy/torch values) to be computed."""
    return jax.block_until_ready(out)


@dataclass
class Stats:
    """Summary of the samples of one variant, in milliseconds per call."""

    median_ms: float
    q1_ms: float
    q3_ms: float
    min_ms: float
    max_ms: float
    repeats: int
    inner: int
    minor_faults_per_call: float

    @classmethod
    def from_samples(cls, samples_s: list[float], inner: int, faults: float) -> Stats:
        a = np.asarray(samples_s, np.float64) * 1e3
        q1, med, q3 = np.percentile(a, [25, 50, 75])
        return cls(float(med), float(q1), float(q3), float(a.min()), float(a.max()), len(a),
                   int(inner), float(faults))

    def to_dict(self) -> dict:
        return asdict(self)


def _minflt() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def first_call(fn: Callable[[], object]) -> tuple[float, object]:
    """Time one call that includes tracing and compilation; returns ``(ms, output)``."""
    t0 = time.perf_counter()
    out = block(fn())
    return (time.perf_counter() - t0) * 1e3, out


def measure(
    fns: dict[str, Callable[[], object]],
    repeats: int,
    *,
    target_s: float = 0.02,
    warmup: int = 1,
    slow_s: float = 1.0,
    slow_repeats: int = 3,
    max_repeats: dict[str, int] | None = None,
    settle_s: dict[str, float] | None = None,
) -> dict[str, Stats]:
    """Median and spread of each function's time per call, interleaved.

    Args:
      fns: name -> zero-argument callable returning something to block on.  They should be
        compiled already (call them once first, e.g. through :func:`first_call`).
      repeats: samples per function (functions slower than ``slow_s`` per call get
        ``min(repeats, slow_repeats)`` samples, to bound the run time).
      target_s: minimum duration of one sample; fast functions are called ``inner`` times.
      warmup: untimed calls per function before sampling (0 when the caller's first call
        already warmed it up).
      max_repeats: optional per-function cap on the number of samples.
      settle_s: optional per-function idle time after each of its samples, not timed (lets
        OpenBLAS's spinning workers go to sleep before the next variant runs).

    Returns:
      name -> :class:`Stats`.
    """
    inner: dict[str, int] = {}
    reps: dict[str, int] = {}
    samples: dict[str, list[float]] = {k: [] for k in fns}
    faults: dict[str, list[int]] = {k: [] for k in fns}
    for name, fn in fns.items():
        for _ in range(warmup):
            block(fn())
        f0 = _minflt()
        t0 = time.perf_counter()
        block(fn())
        dt = max(time.perf_counter() - t0, 1e-7)
        inner[name] = max(1, min(10_000, math.ceil(target_s / dt)))
        reps[name] = min(repeats, slow_repeats) if dt > slow_s else repeats
        reps[name] = min(reps[name], (max_repeats or {}).get(name, reps[name]))
        if dt > slow_s:  # a slow call after warm-up is a valid sample: keep it
            samples[name].append(dt)
            faults[name].append(_minflt() - f0)
    names = list(fns)
    order = random.Random(len(names))  # fixed seed: the same schedule every run
    for _ in range(max(reps.values(), default=0)):
        # A fresh random order each round: no variant always goes first, and none always
        # follows the same other one (a plain rotation keeps every variant's predecessor,
        # and so whatever that one leaves in the caches and the allocator, fixed).
        for name in order.sample(names, len(names)):
            if len(samples[name]) >= reps[name]:
                continue
            fn, n = fns[name], inner[name]
            f0 = _minflt()
            t0 = time.perf_counter()
            for _ in range(n):
                block(fn())
            samples[name].append((time.perf_counter() - t0) / n)
            faults[name].append((_minflt() - f0) / n)
            if (settle_s or {}).get(name):
                time.sleep(settle_s[name])
    return {k: Stats.from_samples(samples[k], inner[k], float(np.median(faults[k])))
            for k in fns}
