"""False-failure rate and sensitivity of ``nsjax.check_invariance`` on random MLPs.

For Linen and NNX ReLU MLPs (seeds 0..N-1 each, architectures cycling through ``ARCHS``)
the null space of the first layer, ``nsjax.null_space(kernel.T, input_shape=...)``, is
checked with the default tolerances (it must pass), and so is a *tilted* null space whose
every direction is off by ~``eta`` radians towards the row space (it must fail): the
space ``{n + eta R G n : n in N}`` (``R``: row basis of ``W``; ``G``: Gaussian, scaled so
that ``|R G n| ~ |n|``; see :func:`tilted`).  Its
output change at ``|a|`` is ``~ |a| eta / |x|`` of the output scale against a tolerance of
``~ K eps (|x| + |a|) / |x|``, so at ``|a| >> |x|`` it exceeds the tolerance by a factor
proportional to ``eta / (K eps)``; at small ``|a|`` it stays inside: only the large scales
catch it.  Figures: ``docs/results/library.md``.

Usage: ``python scripts/invariance_false_failures.py [--seeds 100] [--eta 2e-5]``; prints a
JSON summary.  ``tests/test_false_failures.py`` runs the same measurement.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import nsjax

ARCHS = ((784, 32, 16, 10), (64, 16, 8, 4), (20, 8, 3))
ETA = 2e-5


class LinenMLP(nn.Module):
    arch: tuple[int, ...]

    @nn.compact
    def __call__(self, x):
        h = x.reshape(-1)
        for i, width in enumerate(self.arch[1:]):
            h = nn.Dense(width)(h)
            h = nn.relu(h) if i < len(self.arch) - 2 else h
        return h


class NnxMLP(nnx.Module):
    def __init__(self, arch: tuple[int, ...], rngs: nnx.Rngs):
        self.layers = nnx.List([nnx.Linear(i, o, rngs=rngs) for i, o in zip(arch, arch[1:])])

    def __call__(self, x):
        h = x.reshape(-1)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            h = jax.nn.relu(h) if i < len(self.layers) - 1 else h
        return h


def input_shape(arch) -> tuple[int, ...]:
    return (28, 28, 1) if arch[0] == 784 else (arch[0],)


_LINEN = {arch: LinenMLP(arch) for arch in ARCHS}
_NNX = {arch: nnx.split(nnx.eval_shape(lambda arch=arch: NnxMLP(arch, nnx.Rngs(0))))[0]
        for arch in ARCHS}


def weights(framework: str, seed: int, arch) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[(kernel (in, out), bias)]`` drawn with NumPy (no init to compile): kernels
    ``N(0, 1 / fan_in)`` (the default lecun-normal scale, untruncated); biases 0 (the
    default) for even seeds, ``N(0, 0.1^2)`` (as after training) for odd ones."""
    rng = np.random.default_rng([("linen", "nnx").index(framework), seed])
    std = 0.1 * (seed % 2)
    return [(rng.standard_normal((i, o), np.float32) / np.float32(math.sqrt(i)),
             (std * rng.standard_normal(o)).astype(np.float32)) for i, o in zip(arch, arch[1:])]


def make_net(framework: str, seed: int):
    """``(f, kernel, input_shape)``: a pytree callable and its first ``(in, out)`` kernel."""
    arch = ARCHS[seed % len(ARCHS)]
    layers = weights(framework, seed, arch)
    if framework == "nnx":
        state = {"layers": {i: {"kernel": nnx.Param(jnp.asarray(k)),
                                "bias": nnx.Param(jnp.asarray(b))}
                            for i, (k, b) in enumerate(layers)}}
        f = nnx.merge(_NNX[arch], nnx.State(state))
    else:
        params = {"params": {f"Dense_{i}": {"kernel": jnp.asarray(k), "bias": jnp.asarray(b)}
                             for i, (k, b) in enumerate(layers)}}
        f = jax.tree_util.Partial(_LINEN[arch].apply, params)
    return f, layers[0][0], input_shape(arch)


def tilted(ns: nsjax.NullSpace, eta: float, seed: int) -> nsjax.NullSpace:
    """``ns`` with every null direction tilted by ~``eta`` radians towards the row space.

    The tilted null space ``{n + eta R G P_N n}`` (``G``: ``(r, n)`` Gaussian over
    ``sqrt(r)``, so ``|G P_N n| ~ |n|``) is orthogonal to the columns of
    ``B = R - eta P_N G^T``; ``B L^-T`` (``L L^T = B^T B``) is its orthonormal row basis.
    (A Cholesky of ``r x r``, not a QR: NumPy's QR of a tall matrix is slow on busy cores.)
    """
    rb = np.asarray(ns.row_basis, np.float64)
    g = np.random.default_rng(seed).standard_normal((ns.rank, ns.n)) / math.sqrt(ns.rank)
    png = g.T - rb @ (rb.T @ g.T)  # P_N G^T
    b = rb - eta * png
    q = np.linalg.solve(np.linalg.cholesky(b.T @ b), b.T).T
    return ns.replace(row_basis=jnp.asarray(q, ns.dtype), null_basis=None)


@contextlib.contextmanager
def single_threaded_blas():
    """Run SciPy's OpenBLAS (which ``jnp.linalg.svd`` calls on CPU) on one thread: on cores
    shared with other jobs its spinning threads make a small SVD ~50x slower.  Best effort:
    a no-op where the library or its setter is not found."""
    maps = Path("/proc/self/maps")
    libs = {line.split()[-1] for line in maps.read_text(errors="ignore").splitlines()
            if "libscipy_openblas" in line} if maps.exists() else set()
    setters = []
    for path in sorted(libs):
        lib = ctypes.CDLL(path)
        for get, put in (("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
                         ("scipy_openblas_get_num_threads64_",
                          "scipy_openblas_set_num_threads64_")):
            if hasattr(lib, get) and hasattr(lib, put):
                setters.append((getattr(lib, put), getattr(lib, get)()))
                getattr(lib, put)(1)
    try:
        yield
    finally:
        for put, n in setters:
            put(n)


def check_all(seeds: int, eta: float) -> list[tuple]:
    """``[(framework, seed, result on the true null space, result on the tilted one)]``."""
    rows = []
    for framework in ("linen", "nnx"):
        for seed in range(seeds):
            f, kernel, shape = make_net(framework, seed)
            ns = nsjax.null_space(kernel.T, input_shape=shape)
            good = nsjax.check_invariance(f, ns, jax.random.key(seed))
            bad = nsjax.check_invariance(f, tilted(ns, eta, seed), jax.random.key(seed))
            rows.append((framework, seed, good, bad))
    return rows


def measure(seeds: int = 100, eta: float = ETA) -> dict:
    """Check the true and the tilted null space of ``2 * seeds`` nets; figures as a dict."""
    t0 = time.perf_counter()
    with single_threaded_blas():
        rows = check_all(seeds, eta)
    goods = [r[2] for r in rows]
    bads = [r[3] for r in rows]
    return {
        "nets": len(rows), "eta": eta,
        "false_failures": [f"{fw}/{s}" for fw, s, g, _ in rows if not g.passed],
        "max_ulps": max(g.max_ulps for g in goods),
        "max_tolerance_ratio": max(g.max_tolerance_ratio for g in goods),
        "min_control_fraction": min(g.control_fraction for g in goods),
        "tilted_missed": [f"{fw}/{s}" for fw, s, _, b in rows if b.passed],
        "tilted_min_tolerance_ratio": min(b.max_tolerance_ratio for b in bads),
        "tilted_max_ratio_at_smallest_scale": max(float(b.tolerance_ratio[:, 0].max())
                                                  for b in bads),
        "seconds": time.perf_counter() - t0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--eta", type=float, default=ETA)
    args = ap.parse_args()
    print(json.dumps(measure(args.seeds, args.eta), indent=1))


if __name__ == "__main__":
    main()
