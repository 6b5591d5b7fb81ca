"""Numerical checks of the null-space invariant ``f(x + a v) = f(x)`` (paper, Def. 2.1).

Probes: ``x`` uniform in ``[-1, 1]^n`` (the image domain) or from a user sampler, ``v`` a
random unit vector of the null space (the normalised projection of a uniform ``[-1, 1]^n``
vector), ``a = +-scale`` for scales spanning many orders of
magnitude.  Everything is evaluated in one jitted, vmapped call.

Pass criterion (``numpy.testing.assert_allclose`` / chex style), for every probe ``p``,
scale ``a`` and output element ``j``::

    |f(x + a v)_j - f(x)_j| <= atol + rtol * |f(x)_j|

Default tolerances, and why they grow with ``|a|``.  In floating point ``x + a v`` is
rounded entry by entry, and the first layer sees that rounding, ``~eps * |x + a v|``, even
for a ``v`` that lies exactly in the null space; the first layer's dot products add a
summation error of the same order.  Both enter the first-layer pre-activation as a
perturbation of size ``c * eps * (||x|| + |a| ||v||) * ||W1||`` (``c``: a few units), which
the rest of the net carries to the output through its Jacobian ``J``.  The output itself is
of order ``||J|| ||W1|| ||x||`` (a bias-free ReLU net is positively homogeneous:
``f(x) = J(x) W1 x``), so the deviation is ``c`` times::

    floor * S,    floor = eps * (||x|| + |a| ||v||) / ||x||     (the rounding floor)

where ``S`` is the *net's* output scale, not ``|f(x)_j|`` at this probe: a probe where
``f(x)`` happens to be small (units cancel, most ReLUs are dead) has a small output but not
a small Jacobian, so dividing by its own ``|f(x)|`` would report a huge relative error for a
correct null space.  Hence the defaults, with ``K = tolerance_ulps = 64``::

    rtol = K * floor                  (rounding of f's own arithmetic, e.g. adding biases)
    atol = K * floor * S,             S = RMS of f(x)_j over ALL probes and elements j

so a probe's tolerance is ``K * floor * (|f(x)_j| + S)``.  ``eps`` is that of the probes'
dtype (float32: 1.19e-7; at ``||x|| = 16``, the norm of a uniform 784-pixel image, and
``|a| = 1e3``: ``floor = 7.6e-6``, tolerance ``~5e-4 * (|f(x)_j| + S)``).  ``K = 64``: a
forward pass through a few layers of width <= 1000 loses a few tens of units (measured:
``docs/results/library.md``); a vector *outside* the null space gives errors of order
``1 / eps`` units at ``|a| >= 1``.  Explicit ``rtol=`` / ``atol=`` floats replace the
defaults by fixed values at every probe and scale.

Reported per probe and scale: ``rel_error = max_j |dy_j| / max(max_j |f(x)_j|, S)`` (the
deviation relative to the probe's output, bounded below by the net's scale) and ``ulps =
max_j |dy_j| / (floor * (|f(x)_j| + S))``, the error in units of the floor (default
criterion: ``ulps <= K``).

The null vectors are projected twice (``P(P g)``, "twice is enough"): one projection leaves
a row-space residual of ``~eps * ||g||`` that ``a = 1e3`` would amplify.

``f`` may be a plain callable (static under ``jit``: a new closure compiles anew) or a
pytree with array leaves -- ``jax.tree_util.Partial(apply, params)``, a ``flax.nnx``
module, an Equinox module: its arrays are then traced arguments and its structure is
static, so many nets of one architecture share one compilation.
"""

from __future__ import annotations

import functools
import math
import numbers
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
    """Outcome of :func:`check_invariance` (``P`` probes, ``S`` scales).

    Attributes:
      max_rel_error: float, max over probes and scales of ``rel_error`` (null directions).
      rel_error: ``(P, S)`` ``max_j |dy_j| / max(max_j |f(x)_j|, output_scale)``.
      ulps: ``(P, S)`` ``max_j |dy_j| / (floor * (|f(x)_j| + output_scale))``: the error in
        units of the rounding floor (module docstring); the default criterion is ``<= K``.
      scales: ``(S,)`` the magnitudes of ``a`` used.
      control_rel_change: ``(P,)`` ``rel_error`` of ``f`` along a random unit vector of the
        complement (outside the null space) at ``|a| = 1``.
      control_fraction: share of control probes whose change exceeds the tolerance (the
        same ``rtol``/``atol`` rule at ``|a| = 1``).  A direction outside ``N(f)`` changes
        ``f`` at *some* ``x`` (not necessarily all: a ReLU net is locally constant where its
        units are dead), so the control needs > 0.
      tolerance_ulps: the ``K`` of the default tolerances.
      passed: every null probe within tolerance at every scale AND at least one control
        probe beyond it.
      output_scale: ``S``, the RMS of ``f(x)`` over all probes and output elements.
      rtol: ``(P, S)`` the relative tolerance applied (default ``K * floor``).
      atol: ``(P, S)`` the absolute tolerance applied (default ``K * floor * S``).
      tolerance_ratio: ``(P, S)`` ``max_j |dy_j| / (atol + rtol |f(x)_j|)``; a probe
        passes when it is ``<= 1``.
      control_tolerance_ratio: ``(P,)`` the same for the control probes (``> 1``: changed).
    """

    max_rel_error: float
    rel_error: np.ndarray
    ulps: np.ndarray
    scales: np.ndarray
    control_rel_change: np.ndarray
    control_fraction: float
    tolerance_ulps: float
    passed: bool
    output_scale: float
    rtol: np.ndarray
    atol: np.ndarray
    tolerance_ratio: np.ndarray
    control_tolerance_ratio: np.ndarray

    @property
    def max_ulps(self) -> float:
        return float(np.max(self.ulps))

    @property
    def max_tolerance_ratio(self) -> float:
        """Worst null probe's error as a fraction of its tolerance (``<= 1``: within)."""
        return float(np.max(self.tolerance_ratio))

    def by_scale(self) -> dict[float, float]:
        """``{scale: max rel_error over probes}``."""
        return {float(s): float(e) for s, e in zip(self.scales, self.rel_error.max(0))}

    def summary(self) -> str:
        rows = ", ".join(f"|a|={s:g}: {e:.2e}" for s, e in self.by_scale().items())
        return (f"null directions: max rel error {self.max_rel_error:.3e} "
                f"({self.max_ulps:.1f} ulps of the rounding floor, "
                f"{self.max_tolerance_ratio:.3g} of the tolerance; K={self.tolerance_ulps:g}, "
                f"output scale {self.output_scale:.3g}) [{rows}]; non-null control: median "
                f"rel change {float(np.median(self.control_rel_change)):.3e}, "
                f"{100 * self.control_fraction:.0f}% of probes changed f; "
                f"{'PASSED' if self.passed else 'FAILED'}")


def _unit(v: jax.Array) -> jax.Array:
    return v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), _TINY)


def _check_tol(name: str, value, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {value}")


def _probes(ns: NullSpace, key, n_probes: int, x, dtype):
    """``(xf, v, u, sign)``: flat inputs, unit null vectors, unit complement vectors, signs."""
    shape = tuple(ns.input_shape)
    if x is not None:
        x = jnp.asarray(x, dtype)
        if x.shape != (n_probes,) + shape:
            raise ValueError(f"x must have shape {(n_probes,) + shape}, got {x.shape}")
    xu, v, u, sign = _draw(ns, key, n_probes, jnp.dtype(dtype))
    return (xu if x is None else x.reshape(n_probes, ns.n)), v, u, sign


@functools.partial(jax.jit, static_argnums=(2, 3))
def _draw(ns: NullSpace, key, n_probes: int, dtype):
    """Uniform ``[-1, 1]`` inputs and the random directions from ONE uniform draw (each
    random draw adds a threefry kernel to compile): a uniform ``g`` has covariance ``I / 3``,
    so ``P g`` is isotropic (in its second moments) within the null space."""
    n = ns.n
    w = jax.random.uniform(key, (n_probes, 3 * n + 1), dtype, -1.0, 1.0)
    xu, g, gc = w[:, :n], w[:, n:2 * n], w[:, 2 * n:3 * n]
    v = _unit(ns.project(ns.project(g, accurate=True), accurate=True))
    u = _unit(ns.complement(gc))
    sign = jnp.where(w[:, 3 * n:] >= 0, 1.0, -1.0).astype(dtype)
    return xu, v, u, sign


def _tolerances(floor: np.ndarray, rtol, atol, k: float):
    """``(rtol, atol_abs, atol_rel)`` per probe and scale: the tolerance on element ``j`` is
    ``atol_abs + atol_rel * S + rtol * |f(x)_j|`` (``S`` is only known inside the run)."""
    zero = np.zeros_like(floor)
    r = k * floor if rtol is None else np.full_like(floor, rtol)
    if atol is None:
        return r, zero, k * floor
    return r, np.full_like(floor, atol), zero


def check_invariance(
    f: Callable[[jax.Array], jax.Array],
    ns: NullSpace,
    key: jax.Array,
    *,
    n_probes: int = 64,
    scales: Sequence[float] = DEFAULT_SCALES,
    x: jax.Array | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    tolerance_ulps: float = 64.0,
    dtype=None,
) -> InvarianceResult:
    """Check ``f(x + a v) = f(x)`` for random ``x``, null vectors ``v`` and scales ``a``.

    Args:
      f: maps ONE input of shape ``ns.input_shape`` to an output array (it is vmapped); a
        batched function such as ``lambda x: model.apply(params, x)`` works too.  A pytree
        with array leaves (``jax.tree_util.Partial(model.apply, params)``, an ``nnx``
        module) is traced, so nets of one architecture compile once.
      ns: the null space to test.
      key: PRNG key; the result is a deterministic function of it.
      n_probes: number of random ``(x, v, sign)`` triples.
      scales: magnitudes of ``a`` (signs are random per probe).
      x: optional ``(n_probes, *ns.input_shape)`` inputs instead of uniform ``[-1, 1]``.
      rtol: relative tolerance; default ``K * floor`` (grows with ``|a|``, module docstring).
      atol: absolute tolerance; default ``K * floor * S`` (``S``: RMS output over probes).
      tolerance_ulps: ``K``, the floor multiple of the default ``rtol`` and ``atol``.
      dtype: float dtype of the probes (default: the null space's dtype).

    Returns:
      :class:`InvarianceResult`.
    """
    if n_probes < 1:
        raise ValueError(f"n_probes must be >= 1, got {n_probes}")
    scales_arr = np.asarray(scales, dtype=np.float64)
    if scales_arr.ndim != 1 or scales_arr.size == 0 or np.any(scales_arr <= 0):
        raise ValueError(f"scales must be a non-empty list of positive numbers, got {scales}")
    _check_tol("rtol", rtol)
    _check_tol("atol", atol)
    _check_tol("tolerance_ulps", tolerance_ulps, allow_none=False)
    if ns.dim == 0:
        raise ValueError("the null space is trivial (dim 0): there is no direction to check")
    dtype = jnp.dtype(dtype or ns.dtype)
    xf, v, u, sign = _probes(ns, key, n_probes, x, dtype)
    a = sign * jnp.asarray(scales_arr, dtype)[None, :]  # (P, S)
    eps = float(jnp.finfo(dtype).eps)
    xnorm = np.maximum(np.linalg.norm(np.asarray(xf, np.float64), axis=-1, keepdims=True),
                       _TINY)
    mags = np.append(scales_arr, 1.0)[None, :]  # the control column moves by |a| = 1
    floor = eps * (xnorm + mags) / xnorm  # (P, S + 1)
    tols = _tolerances(floor, rtol, atol, float(tolerance_ulps))
    out = _evaluate(f, tuple(ns.input_shape), xf, v, u, a,
                    (jnp.asarray(floor, dtype),) + tuple(jnp.asarray(t, dtype) for t in tols))
    dmax, fxmax, scale, ulps, ratio = (np.asarray(o, np.float64) for o in out)
    scale = float(scale)
    rel = dmax / np.maximum(np.maximum(fxmax, scale), _TINY)[:, None]
    atol_used = tols[1] + tols[2] * scale
    control_fraction = float(np.mean(ratio[:, -1] > 1))
    passed = bool(np.all(ratio[:, :-1] <= 1) and control_fraction > 0)
    return InvarianceResult(float(rel[:, :-1].max()), rel[:, :-1], ulps[:, :-1], scales_arr,
                            rel[:, -1], control_fraction, float(tolerance_ulps), passed,
                            scale, tols[0][:, :-1], atol_used[:, :-1], ratio[:, :-1],
                            ratio[:, -1])


def _split(f):
    """``(static, arrays)``: ``f``'s array leaves (traced under jit; ``None`` elsewhere) and
    its tree structure with the other leaves (static).  A plain callable is one static leaf."""
    leaves, treedef = jax.tree_util.tree_flatten(f)
    is_array = [isinstance(leaf, jax.Array | np.ndarray) for leaf in leaves]
    arrays = [leaf if arr else None for leaf, arr in zip(leaves, is_array)]
    static = tuple(None if arr else leaf for leaf, arr in zip(leaves, is_array))
    return (treedef, static), arrays


def _evaluate(f, shape, xf, v, u, a, tols):
    """One jitted call: ``f`` at ``x``, at ``x + a v`` for every scale, and at ``x + u``.

    Compiled once per ``(f's static part, shapes)``: the same plain ``f``, or pytree
    callables with the same structure, reuse the cache.
    """
    static, arrays = _split(f)
    try:
        hash(static)
    except TypeError:  # an unhashable static part: compile for this call only
        run = jax.jit(functools.partial(_run.__wrapped__, static, shape))
        return run(arrays, xf, v, u, a, tols)
    return _run(static, shape, arrays, xf, v, u, a, tols)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _run(static, shape, arrays, xf, v, u, a, tols):
    """Reductions over the output elements ``j`` for the ``S`` scales and the control:
    ``max_j |dy_j|`` (P, S+1), ``max_j |f(x)_j|`` (P,), ``S``, ulps and tolerance ratios."""
    treedef, leaves = static
    f = treedef.unflatten([s if t is None else t for s, t in zip(leaves, arrays)])
    floor, rtol, atol_abs, atol_rel = tols
    p, s = a.shape
    g = jax.vmap(lambda z: f(z.reshape(shape)))
    fx = g(xf).reshape(p, -1)
    moved = (xf[:, None, :] + a[:, :, None] * v[:, None, :]).reshape(p * s, -1)
    fy = jnp.concatenate([g(moved).reshape(p, s, -1), g(xf + u).reshape(p, 1, -1)], 1)
    d = jnp.abs(fy - fx[:, None, :])  # (P, S + 1, J)
    ax = jnp.abs(fx)[:, None, :]
    scale = jnp.sqrt(jnp.mean(jnp.square(fx)))
    ulps = _ratio(d, floor[..., None] * (ax + scale))
    ratio = _ratio(d, (atol_abs + atol_rel * scale)[..., None] + rtol[..., None] * ax)
    return jnp.max(d, -1), jnp.max(ax[:, 0], -1), scale, ulps, ratio


def _ratio(d, tol):
    """``max_j d_j / tol_j``, with ``0 / 0 = 0`` and ``d / 0 = inf`` for ``d > 0``."""
    safe = jnp.where(tol > 0, tol, 1)
    return jnp.max(jnp.where(tol > 0, d / safe, jnp.where(d > 0, jnp.inf, 0)), -1)


def assert_invariant(
    f: Callable[[jax.Array], jax.Array],
    ns: NullSpace,
    key: jax.Array,
    **kwargs,
) -> InvarianceResult:
    """Chex-style assertion: raise ``AssertionError`` unless :func:`check_invariance` passes.

    For property checks inside research code (keywords as in :func:`check_invariance`,
    e.g. ``rtol=``, ``atol=``)::

        nsjax.assert_invariant(lambda x: model.apply(params, x), ns, jax.random.key(0))
    """
    result = check_invariance(f, ns, key, **kwargs)
    if not result.passed:
        raise AssertionError(f"null-space invariant f(x + a v) = f(x) violated: "
                             f"{result.summary()}")
    return result
