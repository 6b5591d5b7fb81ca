"""Null-space steganography (paper, Sec. 3).

For a network ``f`` with null space ``N``, a cover ``C`` and a hidden image ``H``::

    S = alpha1 * H_perp + alpha2 * C_hat,    C_hat = P_N C,   H_perp = (I - P_N) H

``S`` looks like (a scaled) ``C`` to a person, while ``f(S) = f(alpha1 H_perp) =
f(alpha1 H)``: the network sees only the hidden image.  (In another domain than the
paper's ``[-1, 1]`` the same construction is made about the domain's centre, below.)

The image domain.  Images live in ``[lo, hi]^n`` (``bounds=(lo, hi)``); the default is the
paper's ``(-1, 1)``.  Data in ``[0, 1]`` (Foolbox ``bounds``, ART ``clip_values``,
``uint8 / 255``) needs ``bounds=(0, 1)``; nothing is ever clipped, out-of-domain input is a
:class:`DomainError`.  Bounds are compared in the images' dtype (``bounds`` rounded to it).

Centring.  The construction is made about the domain's centre ``m = (lo + hi) / 2``::

    S = m + alpha1 (H - m)_perp + alpha2 (C - m)_hat

and the network sees ``f(S) = f(m + alpha1 (H - m))``, the hidden image with its contrast
scaled by ``alpha1`` about the centre (:func:`rescale`): ``S - (m + alpha1 (H - m))`` is a
null vector.  For the paper's ``[-1, 1]``, ``m = 0`` and this is the paper's formula,
``f(S) = f(alpha1 H)``, computed bit for bit as before.  Without the centring, ``[0, 1]``
images fail on MNIST-like data: ``alpha1 H_perp`` keeps the signs of ``H_perp`` (which has
both), and where it is negative on a pixel whose ``C_hat <= 0`` no ``alpha2`` helps.

Choosing ``alpha2`` (closed form, no search).  ``S`` must stay in the domain.  With
``h = m + alpha1 (H - m)_perp`` and ``c = (C - m)_hat``, pixel ``i`` requires
``lo <= h_i + alpha2 c_i <= hi``; with ``alpha2 >= 0`` the admissible set is the interval
``[L, U]``::

    c_i > 0:  (lo - h_i) / c_i <= alpha2 <= (hi - h_i) / c_i
    c_i < 0:  (hi - h_i) / c_i <= alpha2 <= (lo - h_i) / c_i
    c_i = 0:  lo <= h_i <= hi (no bound on alpha2)
    L = max(0, max_i lower_i),  U = min_i upper_i

The chosen ``alpha2`` is ``U (1 - 8 eps)``, the largest admissible value shrunk so that
rounding in ``h_i + alpha2 c_i`` cannot step outside the domain (the computed bound, product
and sum carry a few ``eps/2`` relative errors of ``hi - h_i`` resp. ``h_i - lo``; the final
sum rounds monotonically, and ``lo``/``hi`` are representable).  A lower bound ``L > 0``
arises only where ``h_i`` itself lies outside the domain; it gets the mirror margin
``L (1 + 8 eps)``.  The pair is rejected (:class:`DomainError`) iff that interval is empty;
``h`` shrinks towards the centre ``m`` as ``alpha1`` does, so a smaller ``alpha1`` helps.

If ``C_hat = 0`` (a trivial null space, or a cover with no component in it) no pixel bounds
``alpha2`` and nothing is hidden: :class:`TrivialNullSpaceError`, not an "unbounded"
``alpha2``.  Every stego image is finally checked against the domain as computed.

Low precision: the images and the null space are combined in their promoted dtype (a
float32 null space of a bfloat16 model gives float32 stego images; rounding ``S`` to
bfloat16 would add a row-space error of ``eps(bfloat16) |S|`` that the network sees).
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nsjax._nullspace import NullSpace, _flat_shape, check_float_array

__all__ = ["StegoResult", "stego", "reveal", "max_alpha2", "check_domain", "DomainError",
           "TrivialNullSpaceError", "PAPER_ALPHA2_CAP", "DEFAULT_BOUNDS", "rescale"]

#: The paper's image domain ``[-1, 1]`` (``uint8 v -> v / 127.5 - 1``).
DEFAULT_BOUNDS = (-1.0, 1.0)


class DomainError(ValueError):
    """An image lies outside the model's input domain ``[lo, hi]^n`` (default ``[-1, 1]``)."""


class TrivialNullSpaceError(ValueError):
    """Nothing can be hidden: the null space is ``{0}`` (``ns.dim == 0``), or a cover has no
    component in it (``C_hat = 0``), so no ``alpha2`` changes the stego image."""


class StegoResult(NamedTuple):
    """Output of :func:`stego`.

    Attributes:
      image: ``(..., *shape)`` stego images ``S``, same shape as the inputs.
      alpha2: ``(...,)`` the cover weight used for each pair.
      alpha1: the hidden-image weight (scalar).
      alpha2_max: ``(...,)`` the largest admissible cover weight of each pair (equal to
        ``alpha2`` unless a cap or an explicit ``alpha2`` chose less).
    """

    image: jax.Array
    alpha2: jax.Array
    alpha1: float
    alpha2_max: jax.Array | None = None


def _as_bounds(bounds) -> tuple[float, float]:
    """``(lo, hi)`` as floats with ``lo < hi``, both finite; ValueError otherwise."""
    try:
        if isinstance(bounds, str | bytes):
            raise TypeError
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ValueError(f"bounds must be a pair (lo, hi) of numbers, got {bounds!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"bounds must be finite with lo < hi, got ({lo:g}, {hi:g})")
    return lo, hi


def _fmt(lo: float, hi: float) -> str:
    return f"[{lo:g}, {hi:g}]"


def _in_dtype(v: float, dtype) -> float:
    """``v`` rounded to ``dtype`` (the bound as the images can represent it)."""
    return float(jnp.asarray(v, dtype))


def _domain_min(x, what: str, lo: float, hi: float) -> tuple[jax.Array, float]:
    """:func:`check_domain` that also returns the smallest value (``inf`` when empty)."""
    x = check_float_array(x, what)
    if x.size == 0:  # vacuously in the domain; callers decide whether empty is an error
        return x, math.inf
    if not bool(jnp.all(jnp.isfinite(x))):
        raise DomainError(f"{what} hold NaN or inf; expected finite values in {_fmt(lo, hi)}")
    xmin, xmax = float(jnp.min(x)), float(jnp.max(x))
    if xmin < _in_dtype(lo, x.dtype) or xmax > _in_dtype(hi, x.dtype):
        raise DomainError(
            f"{what} must lie in {_fmt(lo, hi)} (the model's input domain, bounds=({lo:g}, "
            f"{hi:g})), got values in [{xmin:.4g}, {xmax:.4g}]; pass the images' own bounds "
            f"(e.g. bounds=(0, 1)) or rescale them (uint8 v -> lo + (hi - lo) v / 255); "
            "nothing is clipped")
    return x, xmin


def check_domain(x, what: str = "images", lo: float = -1.0, hi: float = 1.0, *,
                 bounds=None) -> jax.Array:
    """Require finite floats in ``[lo, hi]``; raise :class:`DomainError` naming the bounds.

    Args:
      x: an array of any shape.
      what: how messages name ``x``.
      lo, hi: the domain (kept for compatibility; ``bounds`` is the spelling
        :func:`stego` uses).
      bounds: ``(lo, hi)``; overrides ``lo``/``hi`` (giving both, differently, is an error).

    The bounds are compared in ``x``'s dtype.  Returns ``x`` as a JAX array.
    """
    given = _as_bounds((lo, hi))
    if bounds is not None:
        bounds = _as_bounds(bounds)
        if given != DEFAULT_BOUNDS and given != bounds:
            raise ValueError(f"give the domain as bounds=(lo, hi) or lo=, hi=, not both: "
                             f"bounds={bounds}, lo={lo}, hi={hi}")
        given = bounds
    return _domain_min(x, what, *given)[0]


def _interval(h: jax.Array, c: jax.Array, lo, hi) -> tuple[jax.Array, jax.Array]:
    """Per pair the admissible ``alpha2 >= 0`` with ``h + alpha2 c`` in ``[lo, hi]``, shrunk
    by the rounding margins (module docstring): ``(..., n) x2 -> (lower, upper)``, ``(...,)``.
    Empty iff ``lower > upper``; pixels with ``c = 0`` are checked by the caller."""
    big = jnp.asarray(jnp.finfo(h.dtype).max, h.dtype)
    safe = jnp.where(c == 0, 1.0, c)
    up = jnp.where(c > 0, (hi - h) / safe, jnp.where(c < 0, (lo - h) / safe, big))
    eps = jnp.finfo(h.dtype).eps
    upper = jnp.min(up, axis=-1) * (1.0 - 8 * eps)
    # the lower bounds from separate copies: shared divisions would let the compiler change
    # how ``upper`` is computed (an ulp), and ``upper`` must not depend on them
    h, c, safe = jax.lax.optimization_barrier((h, c, safe))
    low = jnp.where(c > 0, (lo - h) / safe, jnp.where(c < 0, (hi - h) / safe, -big))
    lower = jnp.maximum(jnp.max(low, axis=-1), 0.0) * (1.0 + 8 * eps)
    return lower, upper


@functools.partial(jax.jit, static_argnames=("centred",))
def _stego_flat(ns, cover, hidden, alpha1, alpha2, cap, lo, hi, centred=False):
    """Flat ``(..., n)`` core; ``alpha2`` NaN means "pick the maximum, at most ``cap``".
    ``centred``: the construction about ``m = (lo + hi) / 2`` (static: ``m = 0`` compiles
    the paper's formula unchanged)."""
    if centred:
        m = (lo + hi) / 2
        h = m + alpha1 * ns.complement(hidden - m, accurate=True)
        c = ns.project(cover - m, accurate=True)
    else:
        h = alpha1 * ns.complement(hidden, accurate=True)
        c = ns.project(cover, accurate=True)
    lower, amax = _interval(h, c, lo, hi)
    a2 = jnp.where(jnp.isnan(alpha2), jnp.minimum(amax, cap),
                   jnp.broadcast_to(alpha2, amax.shape))
    s = h + a2[..., None] * c
    cover_ok = jnp.any(c != 0, axis=-1)  # C_hat = 0: no bound on alpha2, nothing hidden
    s_ok = jnp.all((s >= lo) & (s <= hi), axis=-1)
    h, c = jax.lax.optimization_barrier((h, c))  # diagnostics: copies, as in _interval
    outside = (h < lo) | (h > hi)
    # outside pixels that alpha2 >= 0 cannot bring back: C_hat is 0 or points further out
    stuck = jnp.sum(((h < lo) & (c <= 0)) | ((h > hi) & (c >= 0)), axis=-1)
    nonempty = (stuck == 0) & (lower <= amax)
    return s, a2, amax, lower, nonempty, cover_ok, s_ok, (stuck, jnp.sum(outside, axis=-1))


def max_alpha2(cover, hidden, ns: NullSpace, *, alpha1: float = 0.2,
               bounds=None) -> jax.Array:
    """The largest ``alpha2`` per pair keeping ``S`` in ``[lo, hi]^n``; shape ``(...,)``.

    ``bounds=(lo, hi)`` as in :func:`stego` (default the paper's ``(-1, 1)``)."""
    return stego(cover, hidden, ns, alpha1=alpha1, bounds=bounds).alpha2


# The paper's rule (Sec. 3): alpha1, alpha2 in (0, 1).  The cap is the largest float32
# below 1, so alpha2 = min(largest admissible, 1 - 2^-24) stays in the open interval.
PAPER_ALPHA2_CAP = float(np.nextafter(np.float32(1.0), np.float32(0.0)))


def _why_empty(lo: float, hi: float, nonempty, stuck, outside) -> str:
    """The DomainError message for pairs whose admissible alpha2 interval is empty;
    ``stuck``/``outside``: per pair, pixels of ``h = m + alpha1 (H - m)_perp`` outside the
    domain that ``alpha2 >= 0`` cannot / can bring back."""
    bad = np.flatnonzero(~np.asarray(nonempty).reshape(-1))
    i = int(bad[0])
    n_stuck, n_out = int(np.asarray(stuck).reshape(-1)[i]), int(np.asarray(outside).reshape(-1)[i])
    m = _centre(lo, hi)
    what = "alpha1 H_perp" if m == 0 else f"{m:g} + alpha1 (H - {m:g})_perp"
    head = (f"no alpha2 >= 0 keeps the stego image in {_fmt(lo, hi)} for {bad.size} pair(s) "
            f"(first flat index {i}): ")
    shrink = f"use a smaller alpha1 ({what} shrinks towards {m:g}, inside the domain)"
    if n_stuck == 0:
        return head + (f"{what} lies outside the domain at {n_out} pixel(s), which need a "
                       f"larger alpha2 than other pixels allow; {shrink}")
    return head + (f"at {n_stuck} pixel(s) {what} lies outside the domain and the cover's "
                   f"null-space part is 0 there or points further out; {shrink}")


def _centre(lo: float, hi: float) -> float:
    """The centre ``m`` of the domain, about which the construction is made."""
    return (lo + hi) / 2


def rescale(images, alpha1: float = 0.2, *, bounds=None) -> jax.Array:
    """What the network sees of a hidden image: ``m + alpha1 (H - m)``, ``m`` the domain's
    centre (``alpha1 H`` for the paper's ``[-1, 1]``).  Same shape as ``images``."""
    lo, hi = _as_bounds(DEFAULT_BOUNDS if bounds is None else bounds)
    images = check_float_array(images, "images")
    m = _centre(lo, hi)
    return alpha1 * images if m == 0 else m + alpha1 * (images - m)


def _explicit_alpha2(alpha2, batch: tuple[int, ...], dtype) -> jax.Array:
    """An explicit ``alpha2`` broadcast to the batch shape, or NaN ("pick") when ``None``."""
    if alpha2 is None:
        return jnp.full(batch, jnp.nan, dtype)
    a2_arr = jnp.asarray(alpha2)
    if a2_arr.shape not in ((), batch):
        raise ValueError(f"alpha2 must be a scalar or have the batch shape {batch} (one "
                         f"value per pair), got shape {a2_arr.shape}")
    a2_in = jnp.broadcast_to(a2_arr.astype(dtype), batch)
    if not bool(jnp.all(jnp.isfinite(a2_in) & (a2_in >= 0))):
        raise ValueError("alpha2 must be finite and >= 0")
    return a2_in


def _check_explicit(a2, amax, lower, dtype, lo: float, hi: float, cap) -> None:
    """``alpha2`` outside the (unshrunk) interval ``[L, U]`` -> DomainError.  ``cap``: the
    ``alpha2_cap`` when ``alpha2`` was picked (only a cap below ``L`` can fail then)."""
    eps = jnp.finfo(dtype).eps
    for side, out, limit in (("max", a2 > amax / (1 - 8 * eps), amax),
                             ("min", a2 < lower / (1 + 8 * eps), lower)):
        out = np.asarray(out).reshape(-1)
        if out.any():
            i = int(np.flatnonzero(out)[0])
            what = "alpha2" if cap is None else f"alpha2_cap {cap:.8g}"
            fix = ("pass alpha2=None to pick the maximum" if cap is None else
                   "raise the cap or pass alpha2_cap=None")
            raise DomainError(
                f"{what} takes the stego image out of {_fmt(lo, hi)} for {int(out.sum())} "
                f"pair(s); e.g. flat index {i}: alpha2 {float(a2.reshape(-1)[i]):.4g} "
                f"{'>' if side == 'max' else '<'} {side} {float(limit.reshape(-1)[i]):.4g} "
                f"({fix})")


def _warn_if_unit_range(cmin: float, hmin: float) -> None:
    if min(cmin, hmin) >= 0:
        warnings.warn(
            "every cover and hidden pixel is >= 0, as in [0, 1] images, but the default "
            "domain is the paper's [-1, 1]: the stego image may hold negative pixels; pass "
            "bounds=(0, 1) for [0, 1] images (or bounds=(-1, 1) to silence this)",
            UserWarning, stacklevel=3)


def stego(cover, hidden, ns: NullSpace, *, alpha1: float = 0.2, alpha2=None,
          alpha2_cap: float | None = None, bounds=None) -> StegoResult:
    """Stego images ``S = alpha1 H_perp + alpha2 C_hat`` for a batch of pairs, in one call.

    In a domain other than ``[-1, 1]`` the construction is centred (module docstring):
    ``S = m + alpha1 (H - m)_perp + alpha2 (C - m)_hat`` and ``f(S) = f(rescale(H))``.

    Args:
      cover: ``(..., *ns.input_shape)`` or ``(..., n)`` cover images in ``[lo, hi]``.
      hidden: same shape, the images the network should see, in ``[lo, hi]``.
      ns: null space of the network (e.g. from :func:`nsjax.null_space_of`).
      alpha1: weight of the hidden component, in ``(0, 1]`` (paper: 0.2; the network should
        be trained on ``alpha1``-rescaled copies).
      alpha2: ``None`` (default) picks the largest value per pair that keeps ``S`` in the
        domain (closed form, see module docstring); a float or an array of the batch shape
        ``(...,)`` is used as given and must be finite, ``>= 0`` and keep ``S`` in the domain.
      alpha2_cap: with ``alpha2=None``, use ``min(largest admissible, alpha2_cap)``;
        ``None``: no cap.  :data:`PAPER_ALPHA2_CAP` is the paper's rule ``alpha2 in (0, 1)``.
        A cap below the smallest admissible value is a :class:`DomainError`.
      bounds: ``(lo, hi)``, the model's input domain for ``cover``, ``hidden`` and ``S``;
        ``None``: the paper's ``(-1, 1)``, with a ``UserWarning`` when every pixel is
        ``>= 0`` (data that looks like ``[0, 1]``).  Nothing is clipped.

    Returns:
      :class:`StegoResult` with ``image`` of the inputs' shape and ``alpha2`` of shape ``(...,)``.

    Raises:
      DomainError: inputs outside ``[lo, hi]``/non-finite; an explicit ``alpha2`` that takes
        ``S`` out of the domain; or a pair for which no ``alpha2 >= 0`` keeps ``S`` in it.
      TrivialNullSpaceError: ``ns.dim == 0``, or (``alpha2=None``) a cover whose null-space
        component ``C_hat`` is 0: nothing can be hidden.
      ValueError: an empty batch, mismatched shapes, an ``alpha2`` of the wrong shape, bad
        ``bounds``.
    """
    if not 0.0 < float(alpha1) <= 1.0:
        raise ValueError(f"alpha1 must be in (0, 1], got {alpha1}")
    if alpha2_cap is not None and not (math.isfinite(alpha2_cap) and alpha2_cap > 0):
        raise ValueError(f"alpha2_cap must be finite and > 0 (or None), got {alpha2_cap}")
    lo, hi = _as_bounds(DEFAULT_BOUNDS if bounds is None else bounds)
    cover, cmin = _domain_min(cover, "cover images", lo, hi)
    hidden, hmin = _domain_min(hidden, "hidden images", lo, hi)
    if cover.shape != hidden.shape:
        raise ValueError(f"cover and hidden must have the same shape, got {cover.shape} "
                         f"and {hidden.shape}")
    batch = _flat_shape(ns, cover.shape)
    if math.prod(batch) == 0:
        raise ValueError(f"empty batch: cover and hidden have shape {cover.shape}; expected "
                         f"at least one pair of shape {tuple(ns.input_shape)} or ({ns.n},)")
    if bounds is None:
        _warn_if_unit_range(cmin, hmin)
    if ns.dim == 0:
        raise TrivialNullSpaceError(
            f"the null space is trivial (dim 0: rank {ns.rank} = n = {ns.n}): the network "
            "sees every input direction, so nothing can be hidden in a cover")
    # promoted dtype: a float32 null space keeps bfloat16/float16 images' S in float32
    dtype = jnp.result_type(cover.dtype, ns.dtype)
    cover, hidden = cover.astype(dtype), hidden.astype(dtype)
    flat = batch + (ns.n,)
    s, a2, amax, lower, nonempty, cover_ok, s_ok, diag = _stego_flat(
        ns, cover.reshape(flat), hidden.reshape(flat), jnp.asarray(alpha1, dtype),
        _explicit_alpha2(alpha2, batch, dtype),
        jnp.asarray(jnp.inf if alpha2_cap is None else alpha2_cap, dtype),
        jnp.asarray(lo, dtype), jnp.asarray(hi, dtype), centred=_centre(lo, hi) != 0.0)
    if not bool(jnp.all(nonempty)):
        raise DomainError(_why_empty(lo, hi, nonempty, *diag))
    if alpha2 is None and not bool(jnp.all(cover_ok)):
        bad = np.flatnonzero(~np.asarray(cover_ok).reshape(-1))
        raise TrivialNullSpaceError(
            f"{bad.size} cover(s) have no component in the null space (C_hat = P_N C = 0; "
            f"first flat index {bad[0]}): no alpha2 bounds or changes S, nothing is hidden; "
            "use another cover")
    _check_explicit(a2, amax, lower, dtype, lo, hi, None if alpha2 is not None else
                    (math.inf if alpha2_cap is None else alpha2_cap))
    if not bool(jnp.all(s_ok)):  # the construction's own guard: never return S outside
        raise DomainError(f"the stego image leaves {_fmt(lo, hi)} by rounding for "
                          f"{int(np.sum(~np.asarray(s_ok)))} pair(s): alpha2 sits at the edge "
                          "of a (nearly) empty admissible interval; use a smaller alpha2 or alpha1")
    return StegoResult(s.reshape(cover.shape), a2, float(alpha1), amax)


def reveal(images, ns: NullSpace, *, bounds=None) -> jax.Array:
    """What the network sees: ``m + (I - P_N)(S - m)``, ``m`` the domain's centre.

    For a stego image this is ``m + alpha1 (H - m)_perp``: for the paper's ``[-1, 1]``
    (``m = 0``) the complement component ``alpha1 H_perp``.  Same shape as input.
    """
    lo, hi = _as_bounds(DEFAULT_BOUNDS if bounds is None else bounds)
    m = _centre(lo, hi)
    if m == 0:
        return ns.complement(images, accurate=True)
    return m + ns.complement(check_float_array(images) - m, accurate=True)
