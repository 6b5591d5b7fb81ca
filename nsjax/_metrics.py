"""Image similarity: PSNR and SSIM, batched, for images in ``[lo, hi]``.

The data range is ``hi - lo``: 2 for the paper's ``[-1, 1]`` (the default), 1 for
``[0, 1]``.  Pass ``bounds=(lo, hi)`` (as :func:`nsjax.stego` takes it) or ``data_range``
directly, not both.

SSIM follows Wang et al. (2004): Gaussian window 11x11, sigma 1.5, ``K1 = 0.01``,
``K2 = 0.03``, statistics over the valid region, averaged over pixels and channels
(the defaults of ``skimage.metrics.structural_similarity(..., gaussian_weights=True,
sigma=1.5, use_sample_covariance=False)``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

__all__ = ["psnr", "ssim"]


def _data_range(data_range: float | None, bounds) -> float:
    """``data_range``, or ``hi - lo`` of ``bounds``, or 2 (the paper's ``[-1, 1]``)."""
    if bounds is not None:
        lo, hi = (float(b) for b in bounds)
        if not hi > lo:
            raise ValueError(f"bounds must have lo < hi, got ({lo:g}, {hi:g})")
        if data_range is not None and float(data_range) != hi - lo:
            raise ValueError(f"data_range {data_range:g} contradicts bounds ({lo:g}, {hi:g}) "
                             f"(hi - lo = {hi - lo:g}); pass one of them")
        return hi - lo
    if data_range is None:
        return 2.0
    if not float(data_range) > 0:
        raise ValueError(f"data_range must be > 0, got {data_range}")
    return float(data_range)


def psnr(x: jax.Array, y: jax.Array, data_range: float | None = None, *,
         bounds=None) -> jax.Array:
    """Peak signal-to-noise ratio in dB, ``(..., H, W, C) x2 -> (...,)``; inf if equal.

    ``data_range``: the peak, ``hi - lo`` of the images' domain; or give ``bounds=(lo, hi)``.
    Default 2 (``[-1, 1]``)."""
    return _psnr(x, y, _data_range(data_range, bounds))


@functools.partial(jax.jit, static_argnames=("data_range",))
def _psnr(x: jax.Array, y: jax.Array, data_range: float) -> jax.Array:
    mse = jnp.mean(jnp.square(x - y), axis=(-3, -2, -1))
    return 10.0 * jnp.log10(data_range**2 / mse)


def _gauss(size: int, sigma: float) -> jax.Array:
    r = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2
    g = jnp.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(x: jax.Array, y: jax.Array, data_range: float | None = None, win: int = 11,
         sigma: float = 1.5, *, bounds=None) -> jax.Array:
    """Mean structural similarity, ``(..., H, W, C) x2 -> (...,)``, a value in ``[-1, 1]``.

    ``data_range``: ``hi - lo`` of the images' domain (sets ``C1``, ``C2``); or give
    ``bounds=(lo, hi)``.  Default 2 (``[-1, 1]``).  Like scikit-image, SSIM uses the pixel
    values as they are, so the same images shifted to another domain score differently."""
    return _ssim(x, y, _data_range(data_range, bounds), win, sigma)


@functools.partial(jax.jit, static_argnames=("data_range", "win", "sigma"))
def _ssim(x: jax.Array, y: jax.Array, data_range: float, win: int,
          sigma: float) -> jax.Array:
    batch = x.shape[:-3]
    h, w, c = x.shape[-3:]
    if min(h, w) < win:
        raise ValueError(f"images of {h}x{w} are smaller than the {win}x{win} SSIM window")
    g = _gauss(win, sigma)

    def blur(z):  # (B, H, W, C) -> (B, H-win+1, W-win+1, C), separable valid filter
        z = jnp.moveaxis(z.reshape((-1, h, w, c)), -1, 1).reshape(-1, 1, h, w)
        z = jax.lax.conv_general_dilated(z, g.reshape(1, 1, win, 1).astype(z.dtype), (1, 1),
                                         "VALID", precision="highest")
        z = jax.lax.conv_general_dilated(z, g.reshape(1, 1, 1, win).astype(z.dtype), (1, 1),
                                         "VALID", precision="highest")
        return z

    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return s.reshape((-1, c) + s.shape[-2:]).mean(axis=(1, 2, 3)).reshape(batch)
