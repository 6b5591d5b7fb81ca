"""Null spaces of linear maps as values: factorise once, project many times.

The maths lives here and nowhere else.

For a matrix ``A`` of shape ``(m, n)`` acting as ``x -> A x``, the null space is
``Null(A) = {v : A v = 0}`` and its orthogonal complement is the row space of ``A``.
With the thin SVD ``A = U diag(s) V^T`` and the numerical rank ``r``, the first ``r``
columns of ``V`` (the *row basis* ``R``, shape ``(n, r)``) span the row space, so

* ``complement(x) = (x R) R^T``        -- the part of ``x`` the network uses,
* ``project(x)    = x - (x R) R^T``    -- the part of ``x`` the network ignores.

Both cost ``4 B n r`` flops for a batch of ``B`` vectors: they scale with the rank,
never with the nullity ``n - r``.  (When the nullity is the smaller side, ``null_space``
also keeps a null basis ``N`` and uses ``project(x) = (x N) N^T``: ``4 B n min(r, n - r)``.)
All matmuls run at ``Precision.HIGHEST`` so that TF32 / bf16 passes on accelerators cannot
break the invariant ``A project(x) = 0``.  On CPU, float32 projection in the plain mode runs
the fused kernel of :mod:`nsjax._cpu_kernel` instead (the same float32 arithmetic, one pass
over the batch instead of three; XLA's matmuls on every other platform).

Rank tolerance (one rule, used everywhere in nsjax)::

    tol  = max(atol, rtol * sigma_max)        rtol defaults to default_rtol((m, n), dtype)
    rank = #{i : sigma_i > tol}               (strict ">")

For float32/float64 the default is ``max(m, n) * eps(dtype)``, exactly
``numpy.linalg.matrix_rank`` and the rule of ``scipy.linalg.null_space`` (whose ``rcond``
is our ``rtol``); for float16/bfloat16 it is ``max(m, n) * eps`` of the precision the SVD
runs in (see :func:`default_rtol`).  Unlike SciPy we also accept an absolute floor ``atol``
(default 0).  The zero matrix has rank 0.

The SVD of a concrete float32/float16/bfloat16 matrix runs in float64 and is rounded to
float32 (float32 matrices: to float32; see :func:`null_space`'s ``float64_svd``): the basis
is then as accurate as float32 can store.  For one whose rank tolerance is at least
:data:`GRAM_MIN_RTOL` (the default's is) the float64 singular values come from the
eigenvalues of a Gram matrix instead (``A^T A`` or ``A A^T``, the smaller), the bases from
that eigendecomposition, only the smaller side's vectors (``m >= n``), or from a
CholeskyQR2 of the rows (``m < n``, full row rank): less work than the SVD, and as
accurate at that tolerance (see :func:`_gram_factor`, :func:`_row_gram_factor`).  A
float16/bfloat16 matrix gets a float32 basis: its entries are exact in float32, and a basis
rounded to 8 or 11 bits would leave ``A project(x)`` at ~``eps(bfloat16) |A| |x|``, which
flips predictions.

Cost.  The SVD costs ``~ m n min(m, n)`` flop units; above :data:`LARGE_SVD_WORK` units
:func:`null_space` warns (``LargeSVDWarning``) with an estimated time and the cheaper
paths: :func:`singular_values` (no singular vectors, ~30 % less) and :func:`matrix_rank`.

JAX has no ``null_space`` (jax issue 14350): the nullity is data dependent, so the basis
size cannot be known at trace time.  :func:`null_space` therefore decides the rank on the
host (call it *outside* ``jit``; the SVD itself runs jitted).  Inside ``jit`` pass a static
``rank=`` (a trace-time constant) and check it with :meth:`NullSpace.numerical_rank`.
"""

from __future__ import annotations

import contextlib
import functools
import math
import numbers
import warnings
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax import lax
from scipy.linalg import lapack

from nsjax import _cpu_kernel, blas

HIGHEST = lax.Precision.HIGHEST

__all__ = ["NullSpace", "null_space", "default_rtol", "NonFiniteError", "singular_values",
           "matrix_rank", "LargeSVDWarning", "LARGE_SVD_WORK", "SVD_WORK_PER_SECOND",
           "TransposedKernelWarning"]

_LOW_PRECISION = (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16))

# Above this many units of SVD work (m n min(m, n)) null_space warns before it starts.
# 1e10 units is ~40 s at SVD_WORK_PER_SECOND; monkeypatch it to test the warning.
LARGE_SVD_WORK = 1e10
# Measured rate of jnp.linalg.svd on CPU, in units of m n min(m, n) per second: a float64
# 1024 x 1024 SVD with vectors took 3.9 s on 2 shared cores (2.7e8 /s; values only 2.8 s,
# 3.8e8 /s; float32 was *slower* there: 9.1 s, 4.7 s).  A rough, documented constant: the
# estimate in the warning is an order of magnitude, not a promise (GPUs are much faster).
SVD_WORK_PER_SECOND = 2.5e8
# Smallest relative rank tolerance for which a float32 matrix gets its float64 singular
# values from the eigenvalues of a Gram matrix (A^T A or A A^T) instead of an SVD (see
# _gram_factor, _row_gram_factor): the default max(m, n) * eps32 is above it for
# max(m, n) >= 9.
GRAM_MIN_RTOL = 1e-6


class NonFiniteError(ValueError):
    """Raised when an input that must be finite holds NaN or inf."""


class LargeSVDWarning(UserWarning):
    """Emitted once per call before an SVD estimated to take long (see LARGE_SVD_WORK)."""


class TransposedKernelWarning(UserWarning):
    """Emitted by :func:`null_space` for a tall ``(m > n)`` matrix of full column rank given
    without ``input_shape``: its null space is trivial, the usual sign of a Flax ``(in, out)``
    kernel passed where the operator ``(out, in)`` (``kernel.T``) was meant."""


def default_rtol(shape: Sequence[int], dtype, svd_dtype=None) -> float:
    """Default relative rank tolerance for a ``(m, n)`` matrix stored in ``dtype``.

    ``rtol = max(m, n) * eps(p)``: an SVD in precision ``p`` returns singular values with
    absolute errors up to ~``max(m, n) * eps(p) * sigma_max`` (backward stable), so smaller
    ones cannot be told from 0.  Which ``p``:

    * float64: ``p = float64``, rtol ``max(m, n) * 2.2e-16`` (NumPy's ``matrix_rank``).
    * float32: ``p = float32``, rtol ``max(m, n) * 1.19e-7`` (NumPy's rule), although the SVD
      runs in float64 by default: float32 weights are themselves the result of float32
      arithmetic (training, products) and carry its rounding noise, and a float32 forward
      pass cannot resolve smaller directions either.
    * float16 / bfloat16: ``p = svd_dtype``, the precision the SVD runs in -- float64 by
      default (``null_space(float64_svd=None)`` on a concrete matrix; rtol
      ``max(m, n) * 2.2e-16``), float32 with ``float64_svd=False`` or under ``jit`` (rtol
      ``max(m, n) * 1.19e-7``).  NOT the storage eps: the matrix's values are exact in the
      SVD's precision, so the rounding floor is the SVD's, and the storage eps would give
      ``784 * 9.8e-4 = 0.77`` (float16) or ``784 * 7.8e-3 = 6.1`` (bfloat16) relative to
      ``sigma_max`` -- a well conditioned ``32 x 784`` Gaussian matrix (``sigma_min /
      sigma_max ~ 0.65``) would get rank 24 or 0.  Default ``svd_dtype``: float64.

    Args:
      shape: ``(..., m, n)``.
      dtype: the matrix's dtype.
      svd_dtype: the precision the SVD runs in (only used for float16/bfloat16).
    """
    dtype = jnp.dtype(dtype)
    if dtype in _LOW_PRECISION:
        dtype = jnp.dtype(jnp.float64 if svd_dtype is None else svd_dtype)
    return float(max(shape[-2:]) * jnp.finfo(dtype).eps)


def _check_tolerances(rtol, atol) -> None:
    """``rtol`` (None or a real >= 0) and ``atol`` (a real >= 0) must be finite: NaN/inf
    would compare every singular value as null, a negative one every value as rank."""
    for name, v in (("rtol", rtol), ("atol", atol)):
        if v is None and name == "rtol" or isinstance(v, jax.core.Tracer):
            continue
        if isinstance(v, bool) or not isinstance(v, numbers.Real | np.ndarray | jax.Array):
            raise TypeError(f"{name} must be a real number (finite, >= 0), got "
                            f"{type(v).__name__} {v!r}")
        if np.ndim(v) != 0 or not np.issubdtype(np.asarray(v).dtype, np.number):
            raise TypeError(f"{name} must be a real scalar (finite, >= 0), got {v!r}")
        f = float(v)
        if not math.isfinite(f) or f < 0:
            raise ValueError(f"{name} must be finite and >= 0, got {f}")


def _check_rank(rank, m: int, n: int) -> int:
    """A static ``rank`` must be an integer in ``[0, min(m, n)]``."""
    if isinstance(rank, bool) or not isinstance(rank, numbers.Integral | np.integer):
        raise TypeError(f"rank must be an integer in [0, min(m, n)] = [0, {min(m, n)}], got "
                        f"{type(rank).__name__} {rank!r}")
    if not 0 <= int(rank) <= min(m, n):
        raise ValueError(f"rank must be in [0, min(m, n)] = [0, {min(m, n)}], got {rank}")
    return int(rank)


@struct.dataclass
class NullSpace:
    """The null space ``N`` of a linear map on ``R^n`` and its orthogonal complement.

    A pytree: the arrays are leaves, the sizes are static, so a ``NullSpace`` can be passed
    through ``jax.jit``/``vmap`` and computed once, then used for any number of batches.

    Attributes:
      row_basis: ``(n, rank)`` orthonormal basis of the complement ``N^perp`` (the row
        space of the map): some orthonormal basis, not necessarily the right singular
        vectors.  Projection uses only this (unless ``null_basis`` is set), so it costs
        ``O(B n rank)``.
      singular_values: ``(k,)`` singular values of the map, descending (``k <= n``).
      tol: scalar, the rank tolerance that was applied (``sigma_i > tol`` counts).
      n: input dimension (static).
      rank: numerical rank (static); ``dim == n - rank``.
      input_shape: shape of one input, e.g. ``(28, 28, 1)``; ``(n,)`` for plain vectors.
      patch: ``None`` for a general map.  ``(ph, pw)`` for a map that acts on each
        non-overlapping ``ph x pw`` patch of an ``(H, W, C)`` input with the same matrix (a
        convolution with stride == kernel size, i.e. a ViT patch embedding): then the
        operator is block diagonal, ``row_basis`` is the ``(ph pw C, r_patch)`` basis of ONE
        patch, ``singular_values`` are the patch matrix's, and
        ``rank = r_patch * (H / ph) * (W / pw)``.  Projection never forms the
        ``n x n`` operator.
      null_basis: ``None``, or an ``(n, dim)`` orthonormal null basis that
        :func:`null_space` stores when ``dim < rank``; projection then goes through it
        (``(x N) N^T``), so its cost is ``O(B n min(rank, dim))``.
    """

    row_basis: jax.Array
    singular_values: jax.Array
    tol: jax.Array
    n: int = struct.field(pytree_node=False)
    rank: int = struct.field(pytree_node=False)
    input_shape: tuple[int, ...] = struct.field(pytree_node=False)
    patch: tuple[int, int] | None = struct.field(pytree_node=False, default=None)
    null_basis: jax.Array | None = None

    @property
    def dim(self) -> int:
        """Dimension of the null space, ``n - rank``."""
        return self.n - self.rank

    @property
    def dtype(self):
        return self.row_basis.dtype

    def basis(self) -> jax.Array:
        """Orthonormal basis of the null space, shape ``(n, dim)``.

        Built on demand (``n (n - rank)`` entries) from the Householder reflectors of the
        row basis (:func:`_complete`: a QR of the ``(n, rank)`` row basis and one matmul);
        projection never needs it.  Concrete: computed now, OpenBLAS capped as in
        :func:`nsjax.blas.lapack_threads`.
        """
        if self.dim == 0:
            return jnp.zeros((self.n, 0), self.dtype)
        if self.rank == 0:
            return jnp.eye(self.n, dtype=self.dtype)
        if self.null_basis is not None:
            return self.null_basis
        rb = self.row_basis
        if isinstance(rb, jax.core.Tracer):
            q = _complete(rb)
        else:
            with blas.lapack_threads(_work(*rb.shape)):  # LAPACK: the QR of rb
                q = jax.block_until_ready(_complete(rb))
        if self.patch is None:
            return q
        # block diagonal: one copy of the patch null basis per patch, mapped back to pixels
        npatch = self.n // rb.shape[0]
        z = jnp.einsum("ij,pk->ikjp", jnp.eye(npatch, dtype=q.dtype), q)  # z[i,k,i,:] = q_k
        z = z.reshape(npatch * q.shape[1], npatch, rb.shape[0])
        return _unpatchify(self, z).T

    def project(self, x: jax.Array, *, check_finite: bool = True,
                accurate: bool = False, kernel: bool | None = None,
                donate: bool = False) -> jax.Array:
        """Orthogonal projection onto the null space: ``x - (x R) R^T``.

        Args:
          x: ``(..., n)`` vectors or ``(..., *input_shape)`` images, floating dtype.
          check_finite: raise :class:`NonFiniteError` if ``x`` holds NaN/inf (costs one
            reduction over the ``(..., r)`` coefficients; skipped when ``x`` or the null
            space is traced, e.g. under ``jit``/``vmap``).
          accurate: compute the coefficients ``x R`` with an exact-split matmul (3x the
            flops of that step) so that ``A project(x)`` is ~20x closer to 0 in float32;
            :func:`nsjax.stego` uses it.  Default: one plain matmul (on CPU, for float32,
            the fused kernel: ``nsjax.cpu_kernel_info()``).
          kernel: ``None`` (default): the fused CPU kernel where it pays
            (:func:`nsjax.uses_cpu_kernel`); ``False``: XLA's matmuls always (for
            comparisons); ``True``: the kernel wherever it can run.
          donate: the result may take ``x``'s buffer, as ``jax.jit(..., donate_argnums=)``
            does: ``x`` must not be used afterwards.  Saves a fresh output buffer (on CPU,
            its page faults).  Inside a ``jit`` this pays when ``x`` is donated to that
            ``jit`` or is a temporary of it; otherwise XLA copies ``x`` first.

        Returns:
          Array of the same shape as ``x``, in ``x``'s dtype promoted with the basis's
          (float16/bfloat16 ``x`` and a float32 null space give float32: rounding the
          result back to 8 or 11 bits would add a row-space error of ``eps(dtype) |x|``).
        """
        return _apply(self, x, "null", check_finite, accurate, kernel=kernel, donate=donate)

    def complement(self, x: jax.Array, *, check_finite: bool = True,
                   accurate: bool = False, kernel: bool | None = None,
                   donate: bool = False) -> jax.Array:
        """Orthogonal projection onto the complement ``N^perp``: ``(x R) R^T``.

        Same shapes and checks as :meth:`project`; ``project(x) + complement(x) == x``.
        """
        return _apply(self, x, "perp", check_finite, accurate, kernel=kernel, donate=donate)

    def numerical_rank(self) -> jax.Array:
        """``#{sigma_i > tol}`` as a traced scalar, to validate a static ``rank=`` in jit."""
        return jnp.sum(self.singular_values > self.tol)

    def projector(self) -> jax.Array:
        """Dense ``(n, n)`` projector onto the null space (for tests and small n)."""
        return self.project(jnp.eye(self.n, dtype=self.dtype))

    def __repr__(self) -> str:
        return (
            f"NullSpace(n={self.n}, rank={self.rank}, dim={self.dim}, "
            f"input_shape={self.input_shape}, dtype={self.dtype})"
        )


# --------------------------------------------------------------------------- projection


def _split_hi(a: jax.Array, axis: int, bits: int) -> jax.Array:
    """``a`` rounded to ``bits`` bits below the largest magnitude along ``axis`` (Ozaki split)."""
    m = jnp.max(jnp.abs(a), axis=axis, keepdims=True)
    e = jnp.ceil(jnp.log2(jnp.where(m > 0, m, 1)))
    scale = jnp.exp2(e - bits).astype(a.dtype)
    return jnp.round(a / scale) * scale


def _coefficients(x: jax.Array, row_basis: jax.Array, accurate: bool) -> jax.Array:
    """``x R``, ``(..., n) -> (..., r)``; ``accurate`` removes most of the summation error.

    A float dot product of length ``n`` errs by up to ~``eps * sum_i |x_i R_ij|``, and that
    error lands entirely in the row space, i.e. exactly where the network looks.  The
    accurate mode splits ``x = x_hi + x_lo`` and ``R = R_hi + R_lo`` so that ``x_hi`` and
    ``R_hi`` carry ``b = (p - ceil(log2 n)) // 2`` bits (``p``: mantissa bits) on a common
    power-of-two grid per row / column.  Every partial sum of ``x_hi R_hi`` is then an integer
    multiple of one power of two below ``2^p``, so that matmul is *exact*; the correction
    ``x_hi R_lo + x_lo R`` is ``2^-b`` smaller, so its rounding error is too.  Cost: 3x the
    flops of the coefficient matmul.  (For the paper's net: coefficient error 9e-6 -> 5e-7.)
    """
    if not accurate:
        return jnp.matmul(x, row_basis, precision=HIGHEST)
    n = x.shape[-1]
    p = jnp.finfo(x.dtype).nmant + 1
    bits = max(1, (p - math.ceil(math.log2(max(n, 2)))) // 2)
    x_hi = _split_hi(x, -1, bits)
    r_hi = _split_hi(row_basis, 0, bits)
    main = jnp.matmul(x_hi, r_hi, precision=HIGHEST)  # exact
    corr = jnp.matmul(
        jnp.concatenate([x_hi, x - x_hi], axis=-1),
        jnp.concatenate([row_basis - r_hi, row_basis], axis=0),
        precision=HIGHEST,
    )
    return main + corr


@functools.partial(jax.jit, static_argnames=("part", "check", "accurate", "kernel", "inplace",
                                             "shape"))
def _project_flat(row_basis: jax.Array, x: jax.Array, part: str, check: bool = True,
                  accurate: bool = False, kernel: bool = False, inplace: bool = False,
                  shape: tuple[int, ...] | None = None):
    """``x``: ``(..., n)``.  One fused call for any batch shape: no Python loop.  The result
    has ``shape`` (default ``x.shape``; the kernel writes it in that shape, see
    :func:`nsjax._cpu_kernel.project_rows`).

    ``kernel``: use the fused CPU kernel (:mod:`nsjax._cpu_kernel`; XLA's matmuls on other
    platforms), which projects each tile of rows in cache: one pass over the batch instead
    of three.  It computes the same finite flag.  ``inplace``: the kernel's output aliases
    ``x`` (:func:`nsjax._cpu_kernel.project_rows`).

    The finite check reads the ``(..., r)`` coefficients ``x R``, not ``x``: under IEEE
    arithmetic a NaN/inf anywhere in a row of ``x`` makes every coefficient of that row
    NaN/inf (``inf * 0 = NaN``, ``inf - inf = NaN``, NaN propagates), so the test is
    equivalent -- and it also flags finite inputs so large that ``x R`` overflows.  Reducing
    ``r`` values per row instead of ``n`` saves a full pass over the batch (85 -> 69 ms for
    ``benchmarks/projection_60k.py`` on 2 CPU cores).  Rank 0 checks ``x``.
    """
    shape = x.shape if shape is None else shape
    if kernel:
        out, finite = _cpu_kernel.project_rows(x, row_basis, part == "null", inplace, shape)
        return out, (finite if check else jnp.asarray(True))
    coef = _coefficients(x, row_basis, accurate)  # (..., r)
    perp = jnp.matmul(coef, row_basis.T, precision=HIGHEST)  # (..., n)
    out = (perp if part == "perp" else x - perp).reshape(shape)
    if not check:
        return out, jnp.asarray(True)
    return out, jnp.all(jnp.isfinite(coef if row_basis.shape[1] else x))


def _project_impl(ns: NullSpace, x: jax.Array, part: str, check: bool, flat: tuple[int, ...],
                  patched: bool, accurate: bool, kernel: bool | None = None,
                  inplace: bool = False):
    """Cast, reshape, (un)patchify and project inside one compiled call.

    With a stored null basis ``N`` (``dim < rank``) the roles swap: ``project(x) = (x N) N^T``
    and ``complement(x) = x - (x N) N^T`` -- the same kernel with ``part`` flipped.
    ``inplace``: the row kernel writes into ``x``'s buffer (``x`` is donated).
    """
    dtype = jnp.result_type(x.dtype, ns.row_basis.dtype)
    # Promote first (exact: e.g. float16/bfloat16 -> float32), so that every path -- XLA's
    # matmuls, the accurate split, the fused float32 kernel -- sees one dtype.
    x = x.astype(dtype)

    def use_kernel(basis):
        return _kernel_choice(basis, dtype, accurate, kernel)

    if ns.null_basis is not None and not patched:
        flip = {"null": "perp", "perp": "null"}[part]
        nb = ns.null_basis.astype(dtype)
        return _project_flat(nb, x.reshape(flat + (ns.n,)), flip, check, accurate,
                             use_kernel(nb), inplace, x.shape)
    rb = ns.row_basis.astype(dtype)
    if not patched:
        out, finite = _project_flat(rb, x.reshape(flat + (ns.n,)), part, check, accurate,
                                    use_kernel(rb), inplace, x.shape)
    elif use_kernel(rb) and _cpu_kernel.supports_patches():
        # the kernel gathers each tile of patches from the images and scatters the result
        # back: no transposed copies of x or of the output
        out, finite = _cpu_kernel.project_patches(x.reshape((-1,) + tuple(ns.input_shape)), rb,
                                                  ns.patch, part == "null")
    else:
        out, finite = _project_flat(rb, _patchify(ns, x.reshape(-1, ns.n)), part, check,
                                    accurate, use_kernel(rb))
        out = _unpatchify(ns, out)
    return out.reshape(x.shape), finite


_STATIC = ("part", "check", "flat", "patched", "accurate", "kernel", "inplace")
_project_any = jax.jit(_project_impl, static_argnames=_STATIC)
_project_donated = jax.jit(_project_impl, static_argnames=_STATIC, donate_argnames=("x",))


def _kernel_choice(basis: jax.Array, dtype, accurate: bool, kernel: bool | None) -> bool:
    """Whether a projection through ``basis`` runs the fused CPU kernel (a trace-time
    decision from shapes and dtypes).  Never in the accurate mode or off float32, only for
    bases the kernel takes; ``kernel=None`` asks whether it pays
    (:func:`nsjax._cpu_kernel.worthwhile`), ``True`` uses it wherever it applies."""
    if kernel is False or accurate or dtype != jnp.float32 or not _cpu_kernel.supports(basis):
        return False
    return bool(kernel) or _cpu_kernel.worthwhile(basis)


def uses_cpu_kernel(ns: NullSpace, dtype=jnp.float32, *, kernel: bool | None = None) -> bool:
    """Whether ``ns.project`` of ``dtype`` inputs runs the fused CPU kernel (the plain
    mode; ``kernel=True``: whether it could).  The same decision :func:`_project_any`
    makes, on the basis it projects through."""
    basis = ns.null_basis if ns.null_basis is not None and ns.patch is None else ns.row_basis
    return _kernel_choice(basis, jnp.result_type(dtype, ns.row_basis.dtype), False, kernel)


def _flat_shape(ns: NullSpace, x_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Batch shape of ``x`` after checking its trailing dims against the null space."""
    k = len(ns.input_shape)
    if len(x_shape) >= k and tuple(x_shape[len(x_shape) - k :]) == tuple(ns.input_shape):
        return tuple(x_shape[: len(x_shape) - k])
    if len(x_shape) >= 1 and x_shape[-1] == ns.n:
        return tuple(x_shape[:-1])
    raise ValueError(
        f"expected inputs of shape (..., {ns.n}) or (..., {', '.join(map(str, ns.input_shape))})"
        f" for this null space (n={ns.n}), got shape {tuple(x_shape)}"
    )


def check_float_array(x, what: str = "x") -> jax.Array:
    """Convert to a JAX array and require a floating dtype (images must be scaled floats)."""
    if not hasattr(x, "dtype"):
        x = np.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"{what} must be a floating array (images scaled to [-1, 1]), got dtype {x.dtype}; "
            "convert integer images first, e.g. x / 127.5 - 1"
        )
    return jnp.asarray(x)


def _patchify(ns: NullSpace, x: jax.Array) -> jax.Array:
    """``(B, n)`` -> ``(B, num_patches, ph pw C)`` in the patch layout of ``ns``."""
    h, w, c = ns.input_shape
    ph, pw = ns.patch
    x = x.reshape(-1, h // ph, ph, w // pw, pw, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(x.shape[0], (h // ph) * (w // pw), ph * pw * c)


def _unpatchify(ns: NullSpace, x: jax.Array) -> jax.Array:
    """Inverse of :func:`_patchify`: ``(B, num_patches, ph pw C)`` -> ``(B, n)``."""
    h, w, c = ns.input_shape
    ph, pw = ns.patch
    x = x.reshape(-1, h // ph, w // pw, ph, pw, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(x.shape[0], ns.n)


def _apply(ns: NullSpace, x, part: str, check_finite: bool, accurate: bool = False,
           kernel: bool | None = None, donate: bool = False) -> jax.Array:
    """``kernel``: ``None`` picks the fused CPU kernel where it applies (float32, plain
    mode, at most ``_cpu_kernel.MAX_COLS`` basis columns) and pays (``worthwhile``: not for
    a wide basis too large for the caches); ``True`` wherever it applies;
    ``False`` forces XLA's matmuls (the benchmarks time both).  ``donate``: ``x``'s buffer
    is given to the result (see :meth:`NullSpace.project`)."""
    x = check_float_array(x)
    batch = _flat_shape(ns, x.shape)
    # the host check needs concrete values: x AND the null space (traced when it is an
    # argument of jit/vmap, or built from a traced matrix with a static rank)
    traced = any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves((x, ns)))
    check = bool(check_finite) and not traced
    call = _project_donated if donate and not traced else _project_any
    out, finite = call(ns, x, part, check, batch, ns.patch is not None, bool(accurate),
                       kernel, bool(donate))
    if check and not bool(finite):
        raise NonFiniteError(f"x holds NaN or inf (shape {x.shape}); expected finite values")
    return out


# --------------------------------------------------------------------------- construction


def _svd_plain(a: jax.Array, host: bool = False):
    """Singular values and the ``(k, n)`` right basis of a thin SVD.  ``host``: a concrete
    matrix goes to NumPy's LAPACK (the same ``gesdd``, without JAX's dispatch)."""
    if host:  # NumPy arrays out: the caller slices and casts them on the host
        _, s, vt = np.linalg.svd(np.asarray(a), full_matrices=False)
        return s, vt
    return _svd_plain_jit(a)


@jax.jit
def _svd_plain_jit(a: jax.Array):
    _, s, vt = jnp.linalg.svd(a, full_matrices=False)
    return s, vt


@jax.jit
def _svd(a: jax.Array):
    """Singular values and a refined ``(k, n)`` right basis, ``k = min(m, n)``.

    The right singular vectors from a float32 SVD leave ``|A (I - V V^T)| ~ 8 eps |A|``
    (the paper's trained W1).  ``A^T U diag(1/s)`` spans the same vectors but lies in the
    row space of ``A`` up to one rounding per entry, so a QR of it (signs matched to
    ``V``) gives a basis whose projector is 3x tighter: ``|A (I - Q Q^T)| ~ 3 eps |A|``.
    Column ``j`` of the QR depends only on columns ``<= j``, so the discarded small-``s``
    columns never leak into the kept ones (and ``Q`` stays orthonormal whatever they hold).
    """
    u, s, vt = jnp.linalg.svd(a, full_matrices=False)
    y = jnp.matmul(a.T, u, precision=HIGHEST) / jnp.where(s > 0, s, 1)
    q, r = jnp.linalg.qr(y)
    q = q * jnp.where(jnp.diagonal(r) < 0, -1, 1).astype(q.dtype)
    return s, q.T


def _resolve_tol(s: jax.Array, shape, dtype, rtol, atol, svd_dtype=None) -> jax.Array:
    rtol = default_rtol(shape, dtype, svd_dtype) if rtol is None else rtol
    smax = s[0] if s.shape[0] else jnp.zeros((), s.dtype)
    return jnp.maximum(jnp.asarray(atol, s.dtype), rtol * smax)


def _host_rank_tol(s: jax.Array, rtol: float, atol: float) -> tuple[int, np.floating]:
    """``(rank, tol)`` of concrete singular values ``s`` on the host: the same IEEE
    operations as :func:`_resolve_tol` (in ``s``'s dtype), in NumPy."""
    sh = np.asarray(s)
    smax = sh[0] if sh.shape[0] else sh.dtype.type(0)
    tol = np.maximum(sh.dtype.type(atol), sh.dtype.type(rtol) * smax)
    return int(np.sum(sh > tol)), tol


def _matrix(a) -> tuple[jax.Array | np.ndarray, int, int, bool]:
    """Validate ``a`` as a finite floating ``(m, n)`` matrix: ``(a, m, n, traced)``.

    A NumPy matrix whose dtype JAX keeps (float16/32, float64 under x64) stays a NumPy
    array: the factorisations run on the host, so a round trip through a device buffer
    would only cost time; anything else becomes a JAX array.
    """
    if not hasattr(a, "ndim"):
        a = np.asarray(a)
    if a.ndim != 2:
        raise ValueError(f"expected a 2-D (m, n) matrix, got shape {tuple(a.shape)}")
    host = isinstance(a, np.ndarray) and a.dtype in (np.float16, np.float32, np.float64)
    finite = bool(np.isfinite(a).all()) if host else None  # NumPy input: checked in place
    if not (host and jax.dtypes.canonicalize_dtype(a.dtype) == a.dtype):
        a = check_float_array(a, "the matrix")
    m, n = a.shape
    traced = isinstance(a, jax.core.Tracer)
    if not traced and not (finite if host else bool(jnp.all(jnp.isfinite(a)))):
        raise NonFiniteError(f"the ({m}, {n}) matrix holds NaN or inf; expected finite values")
    return a, m, n, traced


def _svd_precision(a: jax.Array, float64_svd: bool | None, traced: bool):
    """``(use_x64, svd_dtype)``: whether the SVD switches on x64 to run in float64, and the
    precision it runs in (float64 for a float64 matrix; float32 for a float32/16 one unless
    ``use_x64``; float16/bfloat16 are never the SVD's precision)."""
    wide = jnp.finfo(a.dtype).bits < 64
    if float64_svd is None:
        float64_svd = wide and not traced
    if float64_svd and traced:
        raise ValueError("float64_svd=True needs a concrete matrix (it switches on x64 for the "
                         "SVD); inside jit pass float64_svd=False or None")
    use_x64 = bool(float64_svd) and wide
    svd_dtype = jnp.float64 if use_x64 or not wide else jnp.float32
    return use_x64, jnp.dtype(svd_dtype)


def _work(m: int, n: int) -> float:
    """Size of a factorisation of an ``(m, n)`` matrix: ``m n min(m, n)``."""
    return float(m) * n * min(m, n)


def _warn_if_large(m: int, n: int, svd_dtype, values_only: bool) -> None:
    """One :class:`LargeSVDWarning` before an SVD of more than LARGE_SVD_WORK units."""
    work = _work(m, n)
    if work <= LARGE_SVD_WORK:
        return
    # values only: ~1.4x the rate measured with vectors (3.9 s -> 2.8 s at 1024 x 1024)
    secs = work / (SVD_WORK_PER_SECOND * (1.4 if values_only else 1.0))
    cheaper = ("" if values_only else
               "; cheaper: nsjax.singular_values(a) or nsjax.matrix_rank(a) (no singular "
               "vectors, ~30 % less)")
    warnings.warn(
        f"SVD of a ({m}, {n}) matrix in {jnp.dtype(svd_dtype).name}: ~{work:.1e} units of "
        f"m n min(m, n) work, roughly {_duration(secs)} on a CPU at "
        f"{SVD_WORK_PER_SECOND:.1e} units/s (nsjax._nullspace.SVD_WORK_PER_SECOND; an order "
        f"of magnitude, no progress is reported while it runs){cheaper}; float64_svd=False "
        "runs a float32 matrix's SVD in float32 (faster on GPUs, not always on CPUs, and a "
        "~10x looser basis)",
        LargeSVDWarning, stacklevel=3)


def _duration(secs: float) -> str:
    if secs < 120:
        return f"{secs:.0f} s"
    if secs < 7200:
        return f"{secs / 60:.0f} min"
    return f"{secs / 3600:.1f} h"


@jax.jit
def _svd_values(a: jax.Array) -> jax.Array:
    return jnp.linalg.svd(a, compute_uv=False)


def _values_in_svd_precision(a, float64_svd, values_only: bool = True):
    a, m, n, traced = _matrix(a)
    use_x64, svd_dtype = _svd_precision(a, float64_svd, traced)
    _warn_if_large(m, n, svd_dtype, values_only)
    return a, use_x64, svd_dtype


def singular_values(a, *, float64_svd: bool | None = None) -> jax.Array:
    """Singular values of the ``(m, n)`` matrix ``a`` only, descending, shape ``(min(m, n),)``.

    The cheap path when only the spectrum (or the rank) is wanted: ``compute_uv=False``,
    ~30 % less work than :func:`null_space`'s SVD and no ``(k, n)`` basis in memory.  The
    SVD precision is chosen as in :func:`null_space` (``float64_svd``); the values are
    returned in ``a``'s dtype promoted to at least float32.
    """
    a, use_x64, _ = _values_in_svd_precision(a, float64_svd)
    out = jnp.promote_types(a.dtype, jnp.float32)
    if min(a.shape) == 0:
        return jnp.zeros((0,), out)
    if isinstance(a, jax.core.Tracer):
        return _svd_values(a.astype(out))
    x64 = jax.enable_x64(True) if use_x64 else contextlib.nullcontext()
    with blas.lapack_threads(_work(*a.shape)), x64:
        return jax.block_until_ready(_svd_values(a.astype(jnp.float64 if use_x64 else out))
                                     ).astype(out)


def matrix_rank(a, *, rtol: float | None = None, atol: float = 0.0,
                float64_svd: bool | None = None) -> int:
    """Numerical rank of the ``(m, n)`` matrix ``a`` by :func:`null_space`'s rule, from the
    singular values alone (the cheap path of :func:`singular_values`); ``dim = n - rank``.

    Same tolerances as :func:`null_space` (``rtol``/``atol``, :func:`default_rtol`); the rank
    is decided on the singular values in the SVD's precision, as there.  Host only.
    """
    _check_tolerances(rtol, atol)
    a, use_x64, svd_dtype = _values_in_svd_precision(a, float64_svd)
    if isinstance(a, jax.core.Tracer):
        raise ValueError("matrix_rank() decides the rank on the host; call it outside jit")
    if min(a.shape) == 0:
        return 0
    x64 = jax.enable_x64(True) if use_x64 else contextlib.nullcontext()
    with blas.lapack_threads(_work(*a.shape)), x64:
        s = _svd_values(a.astype(svd_dtype))
        rtol = default_rtol(a.shape, a.dtype, svd_dtype) if rtol is None else rtol
        return _host_rank_tol(s, rtol, atol)[0]


def null_space(
    a,
    *,
    rtol: float | None = None,
    atol: float = 0.0,
    rank: int | None = None,
    input_shape: Sequence[int] | None = None,
    float64_svd: bool | None = None,
) -> NullSpace:
    """Null space of the ``(m, n)`` matrix ``a`` acting as ``x -> a @ x`` (like SciPy).

    Convention: ``a`` is in *operator* layout, as in ``scipy.linalg.null_space`` and the
    paper (``W1`` of shape ``(n1, n0)``).  A Flax ``nn.Dense`` stores its kernel as
    ``(in, out)``: pass ``kernel.T``, or use :func:`nsjax.null_space_of` on the model.  Two
    guards catch the untransposed kernel: an ``input_shape`` whose size is ``m`` (not ``n``)
    raises ``ValueError``, and without ``input_shape`` a tall (``m > n``) matrix of full
    column rank -- a trivial null space -- emits a :class:`TransposedKernelWarning` (a
    ``UserWarning``; filter it for operators that are tall on purpose, or pass
    ``input_shape``).

    Rank rule: ``rank = #{sigma_i > max(atol, rtol * sigma_max)}`` with
    ``rtol = default_rtol((m, n), dtype)`` by default: ``max(m, n) * eps(dtype)`` for
    float32/float64 (NumPy's ``matrix_rank``), ``max(m, n) * eps`` of the SVD's precision for
    float16/bfloat16.

    Cost: one SVD, ``~ m n min(m, n)`` work, or less: with a rank tolerance
    ``>= GRAM_MIN_RTOL`` a float32 matrix gets its float64 singular values from the Gram
    matrix of its columns (``m >= n``: ``A^T A``, then only the eigenvectors of the
    smaller of the two sides) or of its rows (``m < n``: ``A A^T``; at full row rank a
    CholeskyQR2 of the rows from that same Gram matrix gives the row basis, else the SVD
    with vectors follows); otherwise, for
    ``m >= n``, the singular values alone first: at full column rank the null space is
    ``{0}`` and no singular vectors are computed, else the SVD with vectors follows.  The
    LAPACK calls run with OpenBLAS capped (:func:`nsjax.blas.lapack_threads`); above
    :data:`LARGE_SVD_WORK` a
    :class:`LargeSVDWarning` gives an estimated time first.  For the spectrum or the rank
    alone use :func:`singular_values` / :func:`matrix_rank` (no singular vectors).

    Args:
      a: ``(m, n)`` finite floating matrix.
      rtol: relative tolerance, finite and ``>= 0`` (default :func:`default_rtol`).
      atol: absolute tolerance floor, finite and ``>= 0`` (default 0).
      rank: static integer rank in ``[0, min(m, n)]`` to use instead of deciding it on the
        host; makes the function traceable under ``jit`` (check it with
        ``ns.numerical_rank()``).
      input_shape: shape of one input if it is an image, e.g. ``(28, 28, 1)``; its product
        must be ``n`` (if it is ``m`` instead, ``a`` looks transposed: ``ValueError``).
        Default ``(n,)``.
      float64_svd: run ``jnp.linalg.svd`` in float64 (under ``jax.enable_x64``) and round
        the basis to ``a``'s dtype (float32 for float16/bfloat16).  Default (``None``): yes
        for a concrete float32/16 ``a``.  The rounded basis leaves
        ``|A (I - R R^T)| ~ 0.25 eps |A|``; a float32 SVD, even QR-refined, ``~ 2-3 eps
        |A|`` (8 eps unrefined), and that residual is what a stego image's prediction error
        scales with.  Cost: one float64 SVD (``32 x 784``: ~1 ms on CPU).  ``False``: the
        SVD runs in float32 (float16/bfloat16 matrices are cast up to it, exactly); on GPUs
        that is faster, on CPUs not necessarily.  A traced ``a`` uses float32 (or float64
        for a float64 ``a``).

    Returns:
      :class:`NullSpace` with ``dim = n - rank``; its bases are in ``a``'s dtype promoted
      to at least float32.

    Raises:
      ValueError / TypeError: a malformed matrix, NaN/inf entries (:class:`NonFiniteError`),
        a non-finite or negative ``rtol``/``atol``, a ``rank`` that is not an integer in
        ``[0, min(m, n)]``.

    Example:
      >>> import jax.numpy as jnp, nsjax
      >>> ns = nsjax.null_space(jnp.array([[1.0, 1.0, 0.0]]))
      >>> ns.dim, ns.rank
      (2, 1)
    """
    a, m, n, traced = _matrix(a)
    _check_tolerances(rtol, atol)
    if rank is not None:
        rank = _check_rank(rank, m, n)
    shape_given = input_shape is not None
    input_shape = _input_shape(input_shape, m, n)
    use_x64, svd_dtype = _svd_precision(a, float64_svd, traced)
    if rank is None and traced:
        raise ValueError(
            "null_space() decides the rank on the host, so it cannot run on a traced matrix "
            "inside jit (the nullity is data dependent, jax issue 14350). Compute the null "
            "space outside jit and pass it in (it is a pytree), or pass a static rank=."
        )
    out = jnp.promote_types(a.dtype, jnp.float32)  # float16/bfloat16 -> float32 bases
    _warn_if_large(m, n, svd_dtype, values_only=False)
    with contextlib.nullcontext() if traced else blas.lapack_threads(_work(m, n)):
        with jax.enable_x64(True) if use_x64 else contextlib.nullcontext():
            # a concrete float64 SVD works on the host (NumPy/SciPy LAPACK): the matrix
            # goes there once, and NumPy results come back once, cast (no per-op dispatch)
            a_svd = (np.asarray(a).astype(np.float64) if use_x64 and not traced
                     else a.astype(svd_dtype if use_x64 else out))
            s, rb, tol, rank, null_basis = _factor(
                a_svd, a.dtype, rank, rtol, atol, svd_dtype,
                refine=not use_x64, concrete=not traced)
            s, rb, tol = _cast(s, out), _cast(rb, out), _cast(tol, out)
            null_basis = None if null_basis is None else _cast(null_basis, out)
        if not traced:  # the OpenBLAS cap only holds for work finished inside the block
            jax.block_until_ready((s, rb, null_basis))
    if not shape_given and m > n > 0 and rank == n:
        warnings.warn(
            f"null_space of a tall ({m}, {n}) matrix of full column rank is trivial (dim 0); "
            f"if it is a Flax (in, out) kernel, pass kernel.T (null_space takes the operator, "
            f"(out, in))", TransposedKernelWarning, stacklevel=2)
    return NullSpace(
        row_basis=rb,
        singular_values=s,
        tol=tol,
        n=n,
        rank=int(rank),
        input_shape=input_shape,
        null_basis=null_basis,
    )


def _factor(a: jax.Array, dtype, rank: int | None, rtol, atol, svd_dtype, *, refine: bool,
            concrete: bool):
    """``(s, row_basis, tol, rank, null_basis)`` of the ``(m, n)`` matrix ``a``, given in the
    SVD's precision (``dtype``: the caller's, for the default tolerance).

    ``s``: ``(min(m, n),)``; ``row_basis``: ``(n, rank)``; ``null_basis``: ``(n, n - rank)``
    when ``n - rank < rank``, else ``None``.  A concrete ``m >= n`` float64 ``a`` that was
    float32 (``dtype``), with a relative tolerance ``>= GRAM_MIN_RTOL``, gets values and
    vectors from :func:`_gram_factor`; an ``m < n`` one of full row rank from
    :func:`_row_gram_factor`.  Otherwise a concrete matrix that may have full column
    rank (``m >= n``) first gets its singular values alone (no singular vectors: ~1/2 to
    1/3 of the work); if the rank is ``n`` the row space is all of ``R^n``, ``I_n`` is an
    exact orthonormal basis of it and the null space is ``{0}``: no vectors are computed.
    Otherwise the SVD with vectors runs (QR-refined when ``refine``, see :func:`_svd`), the
    rank is decided on its values, and a stored null basis is the SVD's own trailing right
    vectors when it has them (``m >= n``), else :func:`_complete` of the row basis.
    """
    m, n = a.shape
    s = vt = None
    rtol_eff = default_rtol(a.shape, dtype, svd_dtype) if rtol is None else rtol
    if min(m, n) == 0:
        s, vt = jnp.zeros((0,), a.dtype), jnp.zeros((0, n), a.dtype)
    elif (concrete and m >= n and a.dtype == jnp.float64 and jnp.finfo(dtype).bits < 64
          and rtol_eff >= GRAM_MIN_RTOL):
        return _gram_factor(a, rtol_eff, atol, rank)
    elif (concrete and rank in (None, m) and a.dtype == jnp.float64
          and jnp.finfo(dtype).bits < 64 and rtol_eff >= GRAM_MIN_RTOL
          and (got := _row_gram_factor(a, rtol_eff, atol)) is not None):
        return got
    elif concrete and m >= n and rank in (None, n):
        s = _svd_values(a)
        if rank is None and _host_rank_tol(s, rtol_eff, atol)[0] < n:
            s = None  # rank deficient: the SVD with vectors follows
    if s is None:
        s, vt = _svd(a) if refine else _svd_plain(a, host=concrete)
    if concrete:  # on the host: one transfer of s instead of a chain of small device ops
        rank_h, tol = _host_rank_tol(s, rtol_eff, atol)
        if rank is None:  # decided in the SVD's precision (rounding first could cross tol)
            rank = rank_h
    else:  # traced: the rank is given
        tol = _resolve_tol(s, a.shape, dtype, rtol, atol, svd_dtype)
    if vt is None or (concrete and rank == n >= 1):  # full column rank: I_n spans the rows
        return s, jnp.eye(n, dtype=a.dtype), tol, n, jnp.zeros((n, 0), a.dtype)
    rb = vt[:rank].T
    null_basis = None
    if n - rank < rank:  # the null space is the smaller side (or {0}): keep its basis too
        # m >= n: the thin SVD has all n right vectors, the rest span the null space
        null_basis = vt[rank:].T if vt.shape[0] == n else _complete(rb)
    return s, rb, tol, rank, null_basis


def _gram_factor(a: jax.Array, rtol: float, atol: float, rank: int | None):
    """:func:`_factor` of a concrete float64 ``(m, n)`` matrix ``a`` that was float32,
    ``m >= n``, relative tolerance ``rtol >= GRAM_MIN_RTOL``: same return values, from the
    eigendecomposition of ``G = a^T a`` on the host, with only the vectors the answer needs.

    Precision: the products of float32 numbers are exact in float64, and ``G``'s
    eigenvalues carry absolute errors ~``eps64 sigma_max^2``: ``sigma_i = sqrt(lambda_i)``
    is resolved down to ~``sqrt(eps64) sigma_max = 1.5e-8 sigma_max``, and relative to a
    threshold ``rtol sigma_max`` it errs by ~``eps64 / (2 rtol^2)`` -- below 1e-4 for
    ``rtol >= GRAM_MIN_RTOL``.  The eigenvectors err by ~``eps64 sigma_max^2 / gap`` of the
    squared values: ~1e-12 at a float32 rank threshold, far below the float32 rounding of
    the bases.

    Work: one ``m n^2`` product (``syrk``), the reduction of ``G`` to tridiagonal form
    (LAPACK ``dsytrd``, ``4/3 n^3``), all eigenvalues of the tridiagonal matrix
    (``dsterf``, ``O(n^2)``); the rank is decided on them.  Then only the
    ``k = min(n - rank, rank)`` eigenvectors of the smaller side (MRRR, ``dstemr``,
    ``O(n k)``) mapped back through the reflectors (``dormqr``, ``2 n^2 k``): at full
    column rank none, for a one-dimensional null space one.  The other side's basis is
    :func:`_complete` of it.  Should MRRR report a failure, all eigenvectors come from
    ``numpy.linalg.eigh`` instead (same ``G``, same accuracy).
    """
    a64 = np.asarray(a, np.float64)
    n = a64.shape[1]
    g = a64.T @ a64  # NumPy: one syrk; symmetric, so g.T is its column-major view
    if n == 1:  # rank 0 or 1: no vectors follow
        lam = g[0]
    else:
        c, d, e, tau, info = lapack.dsytrd(
            g.T, lower=1, lwork=max(n, int(lapack.dsytrd_lwork(n, lower=1)[0])))
        _check_lapack("dsytrd", info)
        lam, info = lapack.dsterf(d, e)  # ascending
        _check_lapack("dsterf", info)
    s = np.sqrt(np.maximum(lam[::-1], 0))
    rank_h, tol = _host_rank_tol(s, rtol, atol)
    rank = rank_h if rank is None else rank
    dim = n - rank
    if dim == 0:  # full column rank: I_n spans the rows, the null space is {0}
        return s, jnp.eye(n, dtype=a.dtype), tol, n, jnp.zeros((n, 0), a.dtype)
    if rank == 0:
        return s, jnp.zeros((n, 0), a.dtype), tol, 0, None
    lo, hi = (1, dim) if dim < rank else (dim + 1, n)  # 1-based, ascending eigenvalues
    count, _, z, info = lapack.dstemr(d, np.append(e, 0.0), 3, 0.0, 0.0, lo, hi)
    if info == 0 and count == hi - lo + 1:
        z = z[:, :count]
        # z <- Q z, Q = diag(1, Q'), Q' the QR-form reflectors below the subdiagonal
        z[1:], _, info = lapack.dormqr(b"L", b"N", c[1:, : n - 1], tau, z[1:],
                                       lwork=max(1, 64 * count))
        _check_lapack("dormqr", info)
    else:
        z = np.linalg.eigh(g)[1][:, lo - 1:hi]
    if dim < rank:  # the null side is the smaller one: keep it, complete it to the rows
        return s, _complete(z), tol, rank, z
    return s, z[:, ::-1], tol, rank, None


def _row_gram_factor(a: jax.Array, rtol: float, atol: float):
    """:func:`_factor` of a concrete float64 ``(m, n)`` matrix ``a`` that was float32,
    ``m < n``, relative tolerance ``>= GRAM_MIN_RTOL``, if it has full row rank; else
    ``None`` (the caller runs the SVD with vectors).

    The singular values are the square roots of the eigenvalues of ``G = a a^T``
    (``m x m``; the precision argument of :func:`_gram_factor`).  At full row rank the row
    space is spanned by the rows themselves, and :func:`_cholesky_qr2` orthonormalises
    them from the same ``G`` with BLAS-3 work only, where LAPACK's Householder QR of a
    skinny ``a^T`` runs mostly BLAS-2 (timings: ``docs/results/performance-null-basis.md``).
    """
    a64 = np.asarray(a, np.float64)
    m, n = a64.shape
    g = a64 @ a64.T
    lam = np.linalg.eigvalsh(g)  # ascending
    s = np.sqrt(np.maximum(lam[::-1], 0))
    rank, tol = _host_rank_tol(s, rtol, atol)
    if rank < m:
        return None
    rb = _cholesky_qr2(a64, g)  # (n, m)
    return s, rb, tol, m, _complete(rb) if n - m < m else None


def _cholesky_qr2(a64: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Orthonormal ``(n, m)`` basis of the row space of a float64 ``(m, n)`` matrix of full
    row rank, given ``g = a a^T``: ``Q1 = a^T L^-T`` with ``g = L L^T``, then the same step
    once more on ``Q1`` (CholeskyQR2, Fukaya et al. 2014).  One step leaves
    ``|Q1^T Q1 - I| ~ cond(a)^2 eps64``; the second takes it to ``~eps64`` for
    ``cond(a) << eps64^-1/2 ~ 7e7``, and the Gram route keeps ``cond(a) < 1 /
    GRAM_MIN_RTOL = 1e6``.  ``L^-1`` is formed (``m x m``, LAPACK ``trtri``) and applied
    with a matmul, which OpenBLAS runs faster than a triangular solve with ``n``
    right-hand sides; every row of ``L^-1 a`` is still a combination of the rows of ``a``,
    so the span is kept to rounding.  Should a Cholesky factorisation fail anyway, a
    Householder QR of ``a^T`` gives the basis."""
    q = a64
    try:
        for gram in (g, None):  # two steps
            lower = np.linalg.cholesky(q @ q.T if gram is None else gram)
            inv, info = lapack.dtrtri(lower, lower=1)
            _check_lapack("dtrtri", info)
            q = inv @ q
    except np.linalg.LinAlgError:
        return np.linalg.qr(a64.T)[0]
    return q.T


def _check_lapack(name: str, info: int) -> None:
    if info != 0:
        raise np.linalg.LinAlgError(f"LAPACK {name} failed (info={info})")


def _cast(v, dtype) -> jax.Array:
    """``v`` (a JAX or NumPy array or scalar) as a JAX array of ``dtype``: a NumPy value is
    cast on the host and transferred once."""
    if isinstance(v, np.ndarray | np.generic):
        return jnp.asarray(np.asarray(v).astype(np.dtype(dtype)))
    return v.astype(dtype)


def _input_shape(input_shape, m: int, n: int) -> tuple[int, ...]:
    """``input_shape`` as a tuple (default ``(n,)``); its product must be ``n``."""
    if input_shape is None:
        return (n,)
    shape = tuple(int(d) for d in input_shape)
    size = math.prod(shape)
    if size == n:
        return shape
    if size == m:
        raise ValueError(f"input_shape {shape} has {size} elements, the number of ROWS of the "
                         f"({m}, {n}) matrix: it looks like a Flax (in, out) kernel; "
                         f"null_space takes the operator (out, in): pass kernel.T")
    raise ValueError(f"input_shape {shape} has {size} elements, but the matrix has n={n} "
                     f"columns")


def _complete(rb: jax.Array) -> jax.Array:
    """``(n, r)`` orthonormal ``rb`` -> ``(n, n - r)`` orthonormal basis of its complement.

    A Householder QR ``rb = Q [D; 0]`` kept in compact WY form ``Q = I - V T V^T`` (``V``:
    ``(n, r)`` unit lower trapezoidal reflectors, ``T``: ``(r, r)`` upper triangular, built
    by LAPACK's ``larft`` recurrence from ``G = V^T V``), so that the complement
    ``Q[:, r:] = E - (V T) V[r:]^T`` with ``E = [0; I_{n-r}]``: one ``(n, r) x (r, n - r)``
    matmul -- half the flops of forming the complete ``(n, n)`` Q (``orgqr``) and none of
    its BLAS-2 passes.  Same backward stability as ``orgqr``: orthonormal to ~``eps`` and
    orthogonal to ``rb`` to ~``eps``.
    """
    n, r = rb.shape
    if r == 0:
        return jnp.eye(n, dtype=rb.dtype)
    if r == n:
        return jnp.zeros((n, 0), rb.dtype)
    return _complete_wy(rb)


@jax.jit
def _complete_wy(rb: jax.Array) -> jax.Array:
    n, r = rb.shape
    h, tau = jnp.linalg.qr(rb, mode="raw")  # LAPACK layout: h is (r, n)
    v = jnp.tril(h.T, -1) + jnp.eye(n, r, dtype=rb.dtype)
    g = jnp.matmul(v.T, v, precision=HIGHEST)
    idx = jnp.arange(r)

    def column(i, t):  # T[:i, i] = -tau_i T[:i, :i] G[:i, i];  T[i, i] = tau_i
        col = -tau[i] * jnp.matmul(t, jnp.where(idx < i, g[:, i], 0), precision=HIGHEST)
        return t.at[:, i].set(jnp.where(idx == i, tau[i], col))

    t = lax.fori_loop(0, r, column, jnp.zeros((r, r), rb.dtype))
    vt = jnp.matmul(v, t, precision=HIGHEST)  # (n, r)
    e = jnp.eye(n, n - r, -r, dtype=rb.dtype)  # [0; I]
    return e - jnp.matmul(vt, v[r:].T, precision=HIGHEST)
