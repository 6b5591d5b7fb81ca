"""Numerical checks of the null-space invariant ``f(x + a v) = f(x)`` (paper, Def. 2.1).

Probes: ``x`` uniform in ``[-1, 1]^n`` (the image domain) or from a user sampler, ``v`` a
random unit vector of the null space, ``a = +-scale`` for scales spanning many orders of
magnitude.  Everything is evaluated in one jitted, vmapped call.

Error measure, per probe::

    rel_error = max_j |f(x + a v)_j - f(x)_j| / (max_j |f(x)_j| + tiny)

Tolerance (why it must grow with ``a``): in floating point, ``x + a v`` is rounded entry by
entry, and the first layer sees that rounding, ``~eps * |x + a v|``, even for a ``v`` that
lies exactly in the null space.  So the best achievable error is a small multiple ``K`` of::

    eps * (||x|| + |a| ||v||) / ||x||

We report ``rel_error`` and ``ulps = rel_error / (eps * (||x|| + |a| ||v||) / ||x||)``, the
error in units of that floor; a check passes when ``ulps <= K`` (default ``K = 64``: a
forward pass through a few layers of width <= 1000 loses up to ~20 units here; a vector
*outside* the null space gives ``ulps`` of order ``1 / eps``).  Measured errors by scale:
``docs/results/library.md``.

The null vectors are projected twice (``P(P g)``, "twice is enough"): one projection leaves
a row-space residual of ``~eps * ||g||`` that ``a = 1e3`` would amplify.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nsjax._nullspace import NullSpace

__all__ = ["check_invariance", "assert_invariant", "InvarianceResult", "DEFAULT_SCALES"]

DEFAULT_SCALES = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3)
_TINY = 1e-30


class InvarianceResult(NamedTuple):
    """Outcome of :func:`check_invariance`.

    Attributes:
      max_rel_error: float, max over probes and scales of ``rel_error`` (null directions).
      rel_error: ``(n_probes, n_scales)`` per-probe relative deviation.
      ulps: ``(n_probes, n_scales)`` the same in units of the float rounding floor.
      scales: ``(n_scales,)`` the magnitudes of ``a`` used.
      control_rel_change: ``(n_probes,)`` relative change of ``f`` along a random unit vector
        of the complement (outside the null space) at ``|a| = 1``.
      control_fraction: share of control probes whose change exceeds the tolerance.  A
        direction outside ``N(f)`` changes ``f`` at *some* ``x`` (not necessarily all: a ReLU
        net is locally constant where its units are dead), so the control needs > 0.
      tolerance_ulps: the ``K`` the check used.
      passed: null directions within ``K`` ulps at every scale AND at least one control
        probe changed ``f`` by more than ``K`` ulps.
    """

    max_rel_error: float
    rel_error: np.ndarray
    ulps: np.ndarray
    scales: np.ndarray
    control_rel_change: np.ndarray
    control_fraction: float
    tolerance_ulps: float
    passed: bool

    @property
    def max_ulps(self) -> float:
        return float(np.max(self.ulps))

    def by_scale(self) -> dict[float, float]:
        """``{scale: max rel_error over probes}``."""
        return {float(s): float(e) for s, e in zip(self.scales, self.rel_error.max(0))}

    def summary(self) -> str:
        rows = ", ".join(f"|a|={s:g}: {e:.2e}" for s, e in self.by_scale().items())
        return (f"null directions: max rel error {self.max_rel_error:.3e} "
                f"({self.max_ulps:.1f} ulps of the rounding floor; tolerance "
                f"{self.tolerance_ulps:g}) [{rows}]; non-null control: median rel change "
                f"{float(np.median(self.control_rel_change)):.3e}, "
                f"{100 * self.control_fraction:.0f}% of probes changed f; "
                f"{'PASSED' if self.passed else 'FAILED'}")


def _unit(v: jax.Array) -> jax.Array:
    return v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), _TINY)


def _rel(fx: jax.Array, fy: jax.Array) -> jax.Array:
    fx = fx.reshape(fx.shape[0], -1)
    fy = fy.reshape(fy.shape[0], -1)
    return jnp.max(jnp.abs(fy - fx), -1) / (jnp.max(jnp.abs(fx), -1) + _TINY)


def check_invariance(
    f: Callable[[jax.Array], jax.Array],
    ns: NullSpace,
    key: jax.Array,
    *,
    n_probes: int = 64,
    scales: Sequence[float] = DEFAULT_SCALES,
    x: jax.Array | None = None,
    tolerance_ulps: float = 64.0,
    dtype=None,
) -> InvarianceResult:
    """Check ``f(x + a v) = f(x)`` for random ``x``, null vectors ``v`` and scales ``a``.

    Args:
      f: maps ONE input of shape ``ns.input_shape`` to an output array (it is vmapped); a
        batched function such as ``lambda x: model.apply(params, x)`` works too.
      ns: the null space to test.
      key: PRNG key; the result is a deterministic function of it.
      n_probes: number of random ``(x, v, sign)`` triples.
      scales: magnitudes of ``a`` (signs are random per probe).
      x: optional ``(n_probes, *ns.input_shape)`` inputs instead of uniform ``[-1, 1]``.
      tolerance_ulps: ``K`` of the module docstring.
      dtype: float dtype of the probes (default: the null space's dtype).

    Returns:
      :class:`InvarianceResult`.
    """
    if n_probes < 1:
        raise ValueError(f"n_probes must be >= 1, got {n_probes}")
    scales_arr = np.asarray(scales, dtype=np.float64)
    if scales_arr.ndim != 1 or scales_arr.size == 0 or np.any(scales_arr <= 0):
        raise ValueError(f"scales must be a non-empty list of positive numbers, got {scales}")
    if ns.dim == 0:
        raise ValueError("the null space is trivial (dim 0): there is no direction to check")
    dtype = jnp.dtype(dtype or ns.dtype)
    kx, kv, ks, kc = jax.random.split(key, 4)
    shape = tuple(ns.input_shape)
    if x is None:
        x = jax.random.uniform(kx, (n_probes,) + shape, dtype, -1.0, 1.0)
    else:
        x = jnp.asarray(x, dtype)
        if x.shape != (n_probes,) + shape:
            raise ValueError(f"x must have shape {(n_probes,) + shape}, got {x.shape}")
    xf = x.reshape(n_probes, ns.n)
    v = _unit(ns.project(ns.project(jax.random.normal(kv, (n_probes, ns.n), dtype), accurate=True),
                         accurate=True))
    u = _unit(ns.complement(jax.random.normal(kc, (n_probes, ns.n), dtype)))
    sign = jnp.where(jax.random.bernoulli(ks, 0.5, (n_probes, 1)), 1.0, -1.0).astype(dtype)
    a = sign * jnp.asarray(scales_arr, dtype)[None, :]  # (P, S)
    rel, ctrl = _evaluate(f, xf, v, u, a, shape)
    eps = float(jnp.finfo(dtype).eps)
    xnorm = np.linalg.norm(np.asarray(xf, np.float64), axis=-1, keepdims=True)
    floor = eps * (xnorm + scales_arr[None, :]) / np.maximum(xnorm, _TINY)
    rel = np.asarray(rel, np.float64)
    ctrl = np.asarray(ctrl, np.float64)
    ulps = rel / floor
    ctrl_ulps = ctrl / (eps * (xnorm[:, 0] + 1.0) / np.maximum(xnorm[:, 0], _TINY))
    control_fraction = float(np.mean(ctrl_ulps > tolerance_ulps))
    passed = bool(np.all(ulps <= tolerance_ulps) and control_fraction > 0)
    return InvarianceResult(float(rel.max()), rel, ulps, scales_arr, ctrl, control_fraction,
                            float(tolerance_ulps), passed)


def _evaluate(f, xf, v, u, a, shape):
    """One jitted call: ``f`` at ``x``, at ``x + a v`` for every scale, and at ``x + u``.

    Compiled once per ``(f, shapes)``: calling again with the same ``f`` reuses the cache.
    """
    try:
        hash(f)
    except TypeError:  # an unhashable callable: compile for this call only
        return _run.__wrapped__(f, shape, xf, v, u, a)
    return _run(f, shape, xf, v, u, a)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _run(f, shape, xf, v, u, a):
    p, s = a.shape
    g = jax.vmap(lambda z: f(z.reshape(shape)))
    fx = g(xf)
    moved = (xf[:, None, :] + a[:, :, None] * v[:, None, :]).reshape(p * s, -1)
    fy = g(moved).reshape((p, s) + fx.shape[1:])
    rel = jax.vmap(_rel, in_axes=(None, 1), out_axes=1)(fx, fy)
    ctrl = _rel(fx, g(xf + u))
    return rel, ctrl


def assert_invariant(
    f: Callable[[jax.Array], jax.Array],
    ns: NullSpace,
    key: jax.Array,
    **kwargs,
) -> InvarianceResult:
    """Chex-style assertion: raise ``AssertionError`` unless :func:`check_invariance` passes.

    For property checks inside research code::

        nsjax.assert_invariant(lambda x: model.apply(params, x), ns, jax.random.key(0))
    """
    result = check_invariance(f, ns, key, **kwargs)
    if not result.passed:
        raise AssertionError(f"null-space invariant f(x + a v) = f(x) violated: "
                             f"{result.summary()}")
    return result
