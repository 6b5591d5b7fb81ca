"""A proposed cheaper design of nsjax's finite check, timed next to the real one.

NOT part of nsjax: the benchmark measures it so that the suggested change to
``nsjax/_nullspace.py::_project_flat`` comes with numbers.  It differs in two ways:

1. The check reads the ``(B, r)`` coefficients ``x R`` instead of the ``(B, n)`` input.  IEEE
   arithmetic makes that equivalent: a NaN or inf anywhere in row ``b`` of ``x`` makes every
   entry of row ``b`` of ``x R`` NaN or inf (``inf * 0 = NaN``, NaN propagates, ``inf + x =
   inf``, ``inf - inf = NaN``), so ``all(isfinite(x R))`` is false exactly when ``x`` holds
   a NaN/inf -- or when finite inputs are so large that ``x R`` overflows, which is worth
   flagging too.  Rank 0 (no coefficients) falls back to checking ``x``.
2. ``check`` is a static argument: ``check_finite=False`` compiles a function without the
   reduction instead of computing it and ignoring it.

The current design reduces ``isfinite(x)`` over all ``B n`` entries, which XLA's CPU backend
lowers to a materialised ``(B, n)`` boolean array plus a chain of reduce-windows.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

HIGHEST = lax.Precision.HIGHEST


@functools.partial(jax.jit, static_argnames=("part", "check"))
def project_flat(row_basis: jax.Array, x: jax.Array, part: str = "null", check: bool = True):
    """Like ``nsjax._nullspace._project_flat``, with the finite check on ``x R``."""
    coef = jnp.matmul(x, row_basis, precision=HIGHEST)  # (..., r)
    perp = jnp.matmul(coef, row_basis.T, precision=HIGHEST)  # (..., n)
    out = perp if part == "perp" else x - perp
    if not check:
        return out, jnp.asarray(True)
    src = coef if row_basis.shape[1] else x
    return out, jnp.all(jnp.isfinite(src))


def project(ns, x: jax.Array, check_finite: bool = True) -> jax.Array:
    """``ns.project(x)`` for plain ``(B, n)`` inputs with the proposed check."""
    out, finite = project_flat(ns.row_basis.astype(x.dtype), x, "null", check_finite)
    if check_finite and not bool(finite):
        raise ValueError("x holds NaN or inf")
    return out
