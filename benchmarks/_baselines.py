"""The baselines every nsjax figure is compared with, measured in the same process.

* ``paper``: the paper-style NumPy/SciPy pipeline, ``N = scipy.linalg.null_space(W1)``
  (an ``(n, n - r)`` basis of the null space itself) then ``X @ N @ N.T``.  It costs
  ``4 B n (n - r)`` flops: it grows with the nullity.
* ``numpy``: NumPy with the row-space complement, ``X - (X @ R) @ R.T`` (``4 B n r`` flops),
  i.e. nsjax's algorithm without JAX.
* ``jnp``: the same under ``jax.jit``, ``x - (x @ R) @ R.T`` as a JAX user writes it by
  hand (default precision: full float32 on CPU).
* ``torch_cpu`` / ``torch_cuda``: the same in PyTorch, only when ``import torch`` works.
* the roofline floor, ``max(elementwise, flops)``: ``elementwise`` is the jitted ``x + 0``
  over the same array (XLA turns it into a copy: one read and one write of the array, which
  any out-of-place projection has to do); ``flops`` is the projection's ``4 B n r`` flops at
  the GEMM rate of a large square matmul of the same dtype, measured in the same run.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from jax import lax

HIGHEST = lax.Precision.HIGHEST

# Above this n, the paper basis N comes from a complete QR of W1^T instead of
# scipy.linalg.null_space (whose full SVD takes seconds there); N has the same (n, n - r)
# shape and orthonormal columns, so X @ N @ N.T costs exactly the same.
PAPER_SCIPY_MAX_N = 1024


def paper_basis(w1: np.ndarray) -> tuple[np.ndarray, str]:
    """``(n, n - r)`` orthonormal null basis of ``w1`` (``(r, n)``, full row rank) and how."""
    n = w1.shape[1]
    if n <= PAPER_SCIPY_MAX_N:
        return scipy.linalg.null_space(w1).astype(w1.dtype), "scipy.linalg.null_space"
    q, _ = np.linalg.qr(w1.T.astype(np.float64), mode="complete")
    return np.ascontiguousarray(q[:, w1.shape[0]:]).astype(w1.dtype), "complete QR (same shape)"


def paper_project(x: np.ndarray, null_basis: np.ndarray) -> np.ndarray:
    """The paper's projection ``x @ N @ N.T`` (evaluated left to right)."""
    return x @ null_basis @ null_basis.T


def numpy_complement(x: np.ndarray, row_basis: np.ndarray) -> np.ndarray:
    """``x - (x @ R) @ R.T``: nsjax's algorithm in NumPy."""
    return x - (x @ row_basis) @ row_basis.T


def smaller_side(x: np.ndarray, row_basis: np.ndarray, null_basis: np.ndarray | None):
    """The one-liner through the smaller side: ``x - (x R) R^T``, or ``(x N) N^T`` when
    the null basis is the narrower one (what a hand-written version would pick)."""
    if null_basis is not None and null_basis.shape[1] < row_basis.shape[1]:
        return (x @ null_basis) @ null_basis.T
    return x - (x @ row_basis) @ row_basis.T


def jnp_complement() -> Callable:
    """Jitted ``x - (x @ R) @ R.T`` (``jnp``, default precision): the hand-written JAX
    version; call as ``f(x, R)``."""
    return jax.jit(lambda x, r: x - (x @ r) @ r.T)


def jnp_smaller_side() -> Callable:
    """Jitted :func:`smaller_side`; call as ``f(x, basis, null)`` with ``null`` static."""
    return jax.jit(lambda x, b, null: (x @ b) @ b.T if null else x - (x @ b) @ b.T,
                   static_argnums=2)


def paper_flops(b: int, n: int, r: int) -> float:
    return 4.0 * b * n * (n - r)


def projection_flops(b: int, n: int, r: int) -> float:
    return 4.0 * b * n * r


def elementwise_pass() -> Callable:
    """Jitted ``x + 0`` (compiles to one copy: read ``x`` once, write the output once)."""
    return jax.jit(lambda x: x + 0)


def gemm(dtype, size: int) -> tuple[Callable[[], jax.Array], float]:
    """A jitted ``(size, size) @ (size, size)`` matmul at ``Precision.HIGHEST``; its flops."""
    key = jax.random.key(0)
    a = jax.random.normal(key, (size, size), dtype)
    b = jax.random.normal(jax.random.fold_in(key, 1), (size, size), dtype)
    mm = jax.jit(lambda a, b: jnp.matmul(a, b, precision=HIGHEST))
    return (lambda: mm(a, b)), 2.0 * size**3


def torch_variants(x: np.ndarray, row_basis: np.ndarray) -> dict[str, tuple[Callable, Callable]]:
    """``name -> (timed fn, fn returning the numpy result)`` for PyTorch, if importable.

    CPU always (when torch imports), CUDA too when ``torch.cuda.is_available()``.  The
    timed functions synchronise, so they can be timed like the others.
    """
    try:
        import torch
    except Exception:  # noqa: BLE001 - torch is optional
        return {}
    out = {}
    xt = torch.from_numpy(np.ascontiguousarray(x))
    rt = torch.from_numpy(np.ascontiguousarray(row_basis))

    def cpu():
        with torch.no_grad():
            return xt - (xt @ rt) @ rt.T

    out["torch_cpu"] = (cpu, lambda: cpu().numpy())
    if torch.cuda.is_available():
        # TF32 would change the float32 results (10-bit mantissa): keep full float32 matmuls.
        torch.backends.cuda.matmul.allow_tf32 = False
        xc, rc = xt.cuda(), rt.cuda()

        def cuda():
            with torch.no_grad():
                y = xc - (xc @ rc) @ rc.T
            torch.cuda.synchronize()
            return y

        out["torch_cuda"] = (cuda, lambda: cuda().cpu().numpy())
    return out
