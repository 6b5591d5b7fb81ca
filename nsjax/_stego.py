"""Null-space steganography (paper, Sec. 3).

For a network ``f`` with null space ``N``, a cover ``C`` and a hidden image ``H``::

    S = alpha1 * H_perp + alpha2 * C_hat,    C_hat = P_N C,   H_perp = (I - P_N) H

``S`` looks like (a scaled) ``C`` to a person, while ``f(S) = f(alpha1 H_perp) =
f(alpha1 H)``: the network sees only the hidden image.

Choosing ``alpha2`` (closed form, no search).  ``S`` must stay in the model's domain
``[-1, 1]^n``.  With ``h = alpha1 H_perp`` and ``c = C_hat``, pixel ``i`` requires
``-1 <= h_i + alpha2 c_i <= 1``, i.e. ``alpha2 <= (1 - h_i) / c_i`` where ``c_i > 0`` and
``alpha2 <= (-1 - h_i) / c_i`` where ``c_i < 0``.  The largest admissible value is the
minimum of these bounds over pixels, shrunk by ``(1 - 8 eps)`` so that rounding in
``h_i + alpha2 c_i`` cannot step outside the domain.  It exists (``>= 0``) iff
``|h_i| <= 1`` for every pixel; otherwise the pair is rejected.  If ``C_hat = 0`` (a
trivial null space, or a cover with no component in it) no pixel bounds ``alpha2`` and
nothing is hidden: :class:`TrivialNullSpaceError`, not an "unbounded" ``alpha2``.

Low precision: the images and the null space are combined in their promoted dtype (a
float32 null space of a bfloat16 model gives float32 stego images; rounding ``S`` to
bfloat16 would add a row-space error of ``eps(bfloat16) |S|`` that the network sees).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nsjax._nullspace import NullSpace, _flat_shape, check_float_array

__all__ = ["StegoResult", "stego", "reveal", "max_alpha2", "check_domain", "DomainError",
           "TrivialNullSpaceError", "PAPER_ALPHA2_CAP"]


class DomainError(ValueError):
    """An image lies outside the model's input domain ``[-1, 1]^n``."""


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


def check_domain(x, what: str = "images", lo: float = -1.0, hi: float = 1.0) -> jax.Array:
    """Require finite floats in ``[lo, hi]``; raise :class:`DomainError` naming the offenders."""
    x = check_float_array(x, what)
    if x.size == 0:  # vacuously in the domain; callers decide whether empty is an error
        return x
    ok_finite = bool(jnp.all(jnp.isfinite(x)))
    if not ok_finite:
        raise DomainError(f"{what} hold NaN or inf; expected finite values in [{lo}, {hi}]")
    xmin, xmax = float(jnp.min(x)), float(jnp.max(x))
    if xmin < lo or xmax > hi:
        raise DomainError(f"{what} must lie in [{lo}, {hi}] (the model's input domain), "
                          f"got values in [{xmin:.4g}, {xmax:.4g}]; rescale them "
                          "(uint8 v -> v / 127.5 - 1), nothing is clipped")
    return x


def _bounds(h: jax.Array, c: jax.Array) -> jax.Array:
    """Per-pair largest alpha2 with ``h + alpha2 c`` in ``[-1, 1]``; ``(..., n) -> (...,)``."""
    big = jnp.asarray(jnp.finfo(h.dtype).max, h.dtype)
    safe = jnp.where(c == 0, 1.0, c)
    bound = jnp.where(c > 0, (1.0 - h) / safe, jnp.where(c < 0, (-1.0 - h) / safe, big))
    eps = jnp.finfo(h.dtype).eps
    return jnp.min(bound, axis=-1) * (1.0 - 8 * eps)


@jax.jit
def _stego_flat(ns, cover, hidden, alpha1, alpha2, cap):
    """Flat ``(..., n)`` core; ``alpha2`` NaN means "pick the maximum, at most ``cap``"."""
    h = alpha1 * ns.complement(hidden, accurate=True)
    c = ns.project(cover, accurate=True)
    amax = _bounds(h, c)
    a2 = jnp.where(jnp.isnan(alpha2), jnp.minimum(amax, cap),
                   jnp.broadcast_to(alpha2, amax.shape))
    s = h + a2[..., None] * c
    hidden_ok = jnp.all(jnp.abs(h) <= 1.0, axis=-1)
    cover_ok = jnp.any(c != 0, axis=-1)  # C_hat = 0: no bound on alpha2, nothing hidden
    return s, a2, amax, hidden_ok, cover_ok


def max_alpha2(cover, hidden, ns: NullSpace, *, alpha1: float = 0.2) -> jax.Array:
    """The largest ``alpha2`` per pair keeping ``S`` in ``[-1, 1]^n``; shape ``(...,)``."""
    return stego(cover, hidden, ns, alpha1=alpha1).alpha2


# The paper's rule (Sec. 3): alpha1, alpha2 in (0, 1).  The cap is the largest float32
# below 1, so alpha2 = min(largest admissible, 1 - 2^-24) stays in the open interval.
PAPER_ALPHA2_CAP = float(np.nextafter(np.float32(1.0), np.float32(0.0)))


def stego(cover, hidden, ns: NullSpace, *, alpha1: float = 0.2, alpha2=None,
          alpha2_cap: float | None = None) -> StegoResult:
    """Stego images ``S = alpha1 H_perp + alpha2 C_hat`` for a batch of pairs, in one call.

    Args:
      cover: ``(..., *ns.input_shape)`` or ``(..., n)`` cover images in ``[-1, 1]``.
      hidden: same shape, the images the network should see.
      ns: null space of the network (e.g. from :func:`nsjax.null_space_of`).
      alpha1: weight of the hidden component, in ``(0, 1]`` (paper: 0.2; the network should
        be trained on ``alpha1``-rescaled copies).
      alpha2: ``None`` (default) picks the largest value per pair that keeps ``S`` in the
        domain (closed form, see module docstring); a float or an array of the batch shape
        ``(...,)`` is used as given and must be finite, ``>= 0`` and keep ``S`` in the domain.
      alpha2_cap: with ``alpha2=None``, use ``min(largest admissible, alpha2_cap)``;
        ``None``: no cap.  :data:`PAPER_ALPHA2_CAP` is the paper's rule ``alpha2 in (0, 1)``.

    Returns:
      :class:`StegoResult` with ``image`` of the inputs' shape and ``alpha2`` of shape ``(...,)``.

    Raises:
      DomainError: inputs outside ``[-1, 1]``/non-finite; an explicit ``alpha2`` that takes
        ``S`` out of the domain; or a hidden image whose ``alpha1 H_perp`` alone leaves it.
      TrivialNullSpaceError: ``ns.dim == 0``, or (``alpha2=None``) a cover whose null-space
        component ``C_hat`` is 0: nothing can be hidden.
      ValueError: an empty batch, mismatched shapes, an ``alpha2`` of the wrong shape.
    """
    if not 0.0 < float(alpha1) <= 1.0:
        raise ValueError(f"alpha1 must be in (0, 1], got {alpha1}")
    if alpha2_cap is not None and not (math.isfinite(alpha2_cap) and alpha2_cap > 0):
        raise ValueError(f"alpha2_cap must be finite and > 0 (or None), got {alpha2_cap}")
    cover = check_domain(cover, "cover images")
    hidden = check_domain(hidden, "hidden images")
    if cover.shape != hidden.shape:
        raise ValueError(f"cover and hidden must have the same shape, got {cover.shape} "
                         f"and {hidden.shape}")
    batch = _flat_shape(ns, cover.shape)
    if math.prod(batch) == 0:
        raise ValueError(f"empty batch: cover and hidden have shape {cover.shape}; expected "
                         f"at least one pair of shape {tuple(ns.input_shape)} or ({ns.n},)")
    if ns.dim == 0:
        raise TrivialNullSpaceError(
            f"the null space is trivial (dim 0: rank {ns.rank} = n = {ns.n}): the network "
            "sees every input direction, so nothing can be hidden in a cover")
    flat = batch + (ns.n,)
    # promoted dtype: a float32 null space keeps bfloat16/float16 images' S in float32
    dtype = jnp.result_type(cover.dtype, ns.dtype)
    cover, hidden = cover.astype(dtype), hidden.astype(dtype)
    if alpha2 is None:
        a2_in = jnp.full(batch, jnp.nan, dtype)
    else:
        a2_arr = jnp.asarray(alpha2)
        if a2_arr.shape not in ((), batch):
            raise ValueError(f"alpha2 must be a scalar or have the batch shape {batch} (one "
                             f"value per pair), got shape {a2_arr.shape}")
        a2_in = jnp.broadcast_to(a2_arr.astype(dtype), batch)
        if not bool(jnp.all(jnp.isfinite(a2_in) & (a2_in >= 0))):
            raise ValueError("alpha2 must be finite and >= 0")
    s, a2, amax, hidden_ok, cover_ok = _stego_flat(ns, cover.reshape(flat),
                                                   hidden.reshape(flat),
                                                   jnp.asarray(alpha1, dtype), a2_in,
                                                   jnp.asarray(jnp.inf if alpha2_cap is None
                                                               else alpha2_cap, dtype))
    if not bool(jnp.all(hidden_ok)):
        bad = np.flatnonzero(~np.asarray(hidden_ok).reshape(-1))
        raise DomainError(f"alpha1 * H_perp leaves [-1, 1] for {bad.size} pair(s) (first flat "
                          f"index {bad[0]}): no alpha2 >= 0 helps; use a smaller alpha1")
    if alpha2 is None and not bool(jnp.all(cover_ok)):
        bad = np.flatnonzero(~np.asarray(cover_ok).reshape(-1))
        raise TrivialNullSpaceError(
            f"{bad.size} cover(s) have no component in the null space (C_hat = P_N C = 0; "
            f"first flat index {bad[0]}): no alpha2 bounds or changes S, nothing is hidden; "
            "use another cover")
    if alpha2 is not None:
        over = np.asarray(a2 > amax / (1 - 8 * jnp.finfo(dtype).eps)).reshape(-1)
        if over.any():
            i = int(np.flatnonzero(over)[0])
            raise DomainError(
                f"alpha2 takes the stego image out of [-1, 1] for {int(over.sum())} pair(s); "
                f"e.g. flat index {i}: alpha2 {float(a2.reshape(-1)[i]):.4g} > max "
                f"{float(amax.reshape(-1)[i]):.4g} (pass alpha2=None to pick the maximum)"
            )
    return StegoResult(s.reshape(cover.shape), a2, float(alpha1), amax)


def reveal(images, ns: NullSpace) -> jax.Array:
    """What the network sees: the complement component ``(I - P_N) S``.

    For ``S = alpha1 H_perp + alpha2 C_hat`` this is ``alpha1 H_perp``.  Same shape as input.
    """
    return ns.complement(images, accurate=True)
