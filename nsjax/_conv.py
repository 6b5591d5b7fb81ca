"""Exact null spaces of convolutional first layers (paper, Sec. 2.3 and App. B).

A 2-D convolution ``C`` as computed by Flax ``nn.Conv`` (``jax.lax.conv_general_dilated``,
NHWC inputs, HWIO kernels ``(kh, kw, cin, cout)``) is a linear map ``R^n -> R^m`` with
``n = H W cin`` and ``m = Ho Wo cout``.  Its bias is an affine shift and does not change the
null space, ``Null(C) = {x : C x = 0} = intersection over kernels of Null(K_i)``.

Structure used (nothing is approximated)
----------------------------------------
Write ``T = kh kw cin`` for the number of taps of one window and ``P = Ho Wo`` for the
number of output positions.  Then ``C = (I_P kron Kmat^T) S``, where ``Kmat`` is the kernel
reshaped to ``(T, cout)`` and ``S`` is the ``(P T, n)`` 0/1 *window-selection* matrix that
reads tap ``t`` of window ``p`` (a row of zeros where the tap falls on zero padding).  ``S``
is built here as an integer index map ``idx[p, t]`` (``-1`` on padding) with exactly the
padding arithmetic of XLA/Flax (``lax.padtype_to_pads`` for ``"SAME"``/``"VALID"``,
explicit ``(lo, hi)`` pairs, ``"CIRCULAR"``/``"REFLECT"`` as ``jnp.pad`` wrap/reflect), and
:func:`conv_null_space_of_layer` checks on a random input that ``C x`` equals the layer's
output minus its bias.  Everything below is computed in float64 on the host (NumPy/SciPy
LAPACK), independent of JAX's x64 flag; a float32 kernel is represented exactly.

Pixels that no window reads are exact zero columns of ``C`` (null directions); they are split
off first.  ``Kmat`` is replaced by a ``(T, min(cout, T))`` factor with the same
``Kmat Kmat^T`` (a QR), so ``C' = (I kron K'^T) S`` (``m' = P min(cout, T)`` rows) has the
same Gram, singular values and row space as ``C``.  Three exact routes (``method="auto"``
picks ``"patch"`` when it applies, else ``"gram"``, else ``"svd"`` when the tolerance needs it):

``"patch"``  stride == kernel size, no dilation, no padding inside the used area (a ViT patch
    embedding).  ``C`` is block diagonal with ONE block ``Kmat^T`` (``cout x T``) per patch:
    one SVD of a ``cout x T`` matrix (384 x 768 for 16x16x3 patches) gives everything;
    returned as ``NullSpace(..., patch=(kh, kw))`` whose ``row_basis`` is ``(T, r_patch)``.
    Cost ``O(T^2 cout)``, memory ``O(T cout)`` -- independent of the image size.  Pixels a
    VALID patch grid never reads (``H % kh`` bottom rows, ``W % kw`` right columns) lie
    entirely in the null space: then a :class:`CroppedPatchNullSpace` (a ``NullSpace``
    subclass) projects the covered crop patch-wise and passes the remainder through.
``"gram"``   the smaller Gram of ``C'``, built sparse and kept in LAPACK band storage:
    ``G = C'^T C'`` (``n_c x n_c``) when ``m' > n_c`` (many kernels), ``H = C' C'^T``
    (``m' x m'``) otherwise.  Ordered pixel by pixel (or window by window) they are banded,
    half-bandwidth ``b = ((kh-1) dh W + (kw-1) dw + 1) cin - 1`` (200 for 3x3 on 32x32x3),
    so all eigenvalues ``sigma_i^2`` cost ``O(N^2 b)`` (``eigvals_banded``, ~1 s at
    ``N = 3072``) and ``O(N b)`` memory: neither ``C`` (57,600 x 3072 = 1.4 GB in float64 for
    64 kernels) nor a dense Gram is formed.  The row basis needs no eigenvectors when the rank
    is full: many kernels -> the unit vectors of the covered pixels (exact); few kernels ->
    ``C'^T L^-T`` with ``H = L L^T`` (banded Cholesky and triangular solve, ``O(m' n_c b)``;
    orthonormal to ``eps64 cond(C')^2``, used only when that is below ``1e-8``).  A rank
    deficient Gram falls back to a dense ``eigh`` of ``G`` (``O(n_c^3)``, 38 MB for
    ``n_c = 3072``) or the dense SVD of ``C'``.
``"svd"``    the explicit ``(m', n_c)`` float64 matrix and its SVD: no squaring, singular
    values accurate to ``~eps64 sigma_max``; memory ``8 m' n_c`` bytes, time
    ``O(m' n_c min(m', n_c))``.  For values only (``conv_singular_values(method="svd")``,
    large cases) the banded Jordan-Wielandt matrix ``[[0, C'], [C'^T, 0]]`` (eigenvalues
    ``+-sigma``, reverse Cuthill-McKee ordering) gives the same accuracy without forming it.

Measured costs and results: ``docs/results/conv.md``.

Rank tolerance (the one rule of :mod:`nsjax._nullspace`)::

    tol = max(atol, rtol * sigma_max),  rank = #{sigma_i > tol}
    rtol = max(m, n) * eps(kernel dtype)    by default, (m, n) = the full operator

so a float32 layer gets exactly the threshold the dense ``jacfwd`` route used, but the
singular values themselves are float64-accurate (the float32 SVD's own noise is gone).  The
patch route applies the rule to the matrix it factorises, the ``(cout, T)`` block
(``rtol = max(cout, T) eps``): ``max(m, n) eps32`` of the full 150,528-column operator is
0.018, which would call directions with ``||C v|| = 0.018 sigma_max ||v||`` null (measured on
a random width-768 embedding: ``|C P x| / |C x| = 4.5e-3``).  The Gram route squares:
``lambda_i = sigma_i^2`` carries an absolute error of about ``n eps64 lambda_max``, so it
resolves ``sigma`` only down to ``sqrt(n eps64) sigma_max`` (``8e-7 sigma_max`` at
``n = 3072``), 400x below the float32 default.  When the tolerance is within 10x of that
floor (e.g. the float64 rule ``max(m, n) eps64``) AND some singular value lies below 10x the
floor, the rank is not decided from the Gram: ``"auto"`` then switches to the SVD route (or
raises if ``C`` is too large to form); a well-conditioned ``C`` is still decided from the
Gram (CIFAR, 64 kernels, float64 rule: 3 s).

Exact ranks
-----------
A float kernel is an exact dyadic rational, so the rank of ``C`` for the kernel as stored is
a well-defined integer: :func:`exact_conv_rank` computes it over GF(p) (certifying full
rank), and ``conv_null_space(..., rank="exact")`` uses it as the static rank of the SVD
basis.  This matters for SAME padding: the operator is a finite section of a 2-level
Toeplitz operator, and when a partial symbol ``z -> a(z, w)`` (``|w| = 1``) winds around 0
its singular values decay like ``rho^N`` -- genuinely small, not rounding -- so a kernel
that is exactly invertible (Lemma B.1) can have many singular values below the float32
rule.  Those near-null directions are not invariant at large scales (``f(x + a v)``
changes like ``|a| sigma``).  VALID with one kernel is full row rank for EVERY nonzero
kernel (``C^T y`` is a product of two nonzero polynomials); two generic ``k x k`` VALID
kernels share ``2 (k-1)^2`` null directions ``x[i, j] = z^i w^j`` at their common zeros
(Bernstein-Kushnirenko), independent of the image size.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from fractions import Fraction

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
import scipy.linalg.lapack
import scipy.sparse
import scipy.sparse.csgraph
from flax import struct
from jax import lax

from nsjax._nullspace import (
    NonFiniteError,
    NullSpace,
    _cast,
    _check_rank,
    _check_tolerances,
    _complete,
    _flat_shape,
    check_float_array,
    default_rtol,
    null_space,
)

__all__ = [
    "conv_null_space",
    "conv_null_space_of_layer",
    "conv_matrix",
    "conv_apply",
    "conv_singular_values",
    "conv_output_shape",
    "exact_conv_rank",
    "CroppedPatchNullSpace",
    "ExactRankTooLarge",
]

_EPS64 = float(np.finfo(np.float64).eps)
_SVD_MAX_ENTRIES = 2**26  # explicit (m', n_c) float64 matrix: 512 MB
_DENSE_MAX_N = 20_000  # dense eigh fallback of the Gram: n_c^2 float64 (3.2 GB)
_SMALL_DENSE = 2**22  # values-only SVD: dense below this many entries, banded above
_METHODS = ("auto", "patch", "svd", "gram")


# --------------------------------------------------------------------------- geometry


def _pair(v, name: str) -> tuple[int, int]:
    if isinstance(v, (int, np.integer)):
        v = (int(v), int(v))
    v = tuple(int(t) for t in v)
    if len(v) != 2 or min(v) < 1:
        raise ValueError(f"{name} must be a positive int or a pair of them, got {v}")
    return v


def _canonical_padding(padding, hw, kernel_hw, strides, dilation):
    """Flax/XLA padding -> ``(mode, ((lo_h, hi_h), (lo_w, hi_w)))``, mode zero|wrap|reflect."""
    dk = [(k - 1) * d + 1 for k, d in zip(kernel_hw, dilation)]
    if isinstance(padding, str):
        p = padding.upper()
        if p in ("SAME", "VALID", "SAME_LOWER"):
            pads = lax.padtype_to_pads(hw, dk, strides, p)
            return "zero", tuple((int(a), int(b)) for a, b in pads)
        if p in ("CIRCULAR", "REFLECT"):
            # exactly flax.linen.Conv: jnp.pad(((k-1)//2, k//2)) then VALID
            return ("wrap" if p == "CIRCULAR" else "reflect"), tuple(((d - 1) // 2, d // 2)
                                                                    for d in dk)
        raise ValueError(f"padding must be 'SAME', 'VALID', 'SAME_LOWER', 'CIRCULAR', 'REFLECT', "
                         f"an int or (lo, hi) pairs, got {padding!r} (CAUSAL is 1-D only)")
    if isinstance(padding, (int, np.integer)):
        pads = [(int(padding), int(padding))] * 2
    else:
        pads = []
        for p in padding:
            if isinstance(p, (int, np.integer)):
                pads.append((int(p), int(p)))
            else:
                lo, hi = p
                pads.append((int(lo), int(hi)))
        if len(pads) != 2:
            raise ValueError(f"explicit padding needs 2 (lo, hi) pairs for a 2-D conv, got "
                             f"{padding!r}")
    return "zero", tuple(pads)


class _Geometry:
    """Index map of a 2-D convolution: which input pixel each tap of each window reads."""

    def __init__(self, input_shape, kernel_shape, strides, padding, dilation):
        if len(input_shape) != 3:
            raise ValueError(f"input_shape must be (H, W, C), got {tuple(input_shape)}")
        if len(kernel_shape) != 4:
            raise ValueError(f"kernel must have Flax layout (kh, kw, cin, cout), got shape "
                             f"{tuple(kernel_shape)}")
        self.input_shape = tuple(int(d) for d in input_shape)
        h, w, c = self.input_shape
        kh, kw, cin, cout = (int(d) for d in kernel_shape)
        if cin != c:
            raise ValueError(f"kernel has {cin} input channels but the input has {c} "
                             f"(input_shape {self.input_shape}, kernel {tuple(kernel_shape)})")
        self.kernel_hw = (kh, kw)
        self.cout = cout
        self.strides = _pair(strides, "strides")
        self.dilation = _pair(dilation, "dilation")
        self.mode, self.pads = _canonical_padding(padding, (h, w), (kh, kw), self.strides,
                                                  self.dilation)
        self.n = h * w * c
        self.taps = kh * kw * c
        idx = np.arange(self.n, dtype=np.int64).reshape(h, w, c)
        if self.mode == "zero":
            for axis, (lo, hi) in enumerate(self.pads):
                idx = _pad_axis(idx, axis, lo, hi)
        else:
            idx = np.pad(idx, (self.pads[0], self.pads[1], (0, 0)), mode=self.mode)
        hp, wp = idx.shape[:2]
        dkh, dkw = ((kh - 1) * self.dilation[0] + 1, (kw - 1) * self.dilation[1] + 1)
        ho = (hp - dkh) // self.strides[0] + 1 if hp >= dkh else 0
        wo = (wp - dkw) // self.strides[1] + 1 if wp >= dkw else 0
        self.output_hw = (ho, wo)
        rows = self.strides[0] * np.arange(ho)[:, None] + self.dilation[0] * np.arange(kh)
        cols = self.strides[1] * np.arange(wo)[:, None] + self.dilation[1] * np.arange(kw)
        win = idx[rows[:, None, :, None], cols[None, :, None, :], :]  # (ho, wo, kh, kw, c)
        self.index = win.reshape(ho * wo, self.taps)  # (P, T), -1 on zero padding
        self.m = ho * wo * cout

    @property
    def positions(self) -> int:
        return self.index.shape[0]

    def covered(self) -> np.ndarray:
        """Sorted indices of the input pixels that some window reads."""
        return np.unique(self.index[self.index >= 0])

    def is_patch(self) -> bool:
        """Non-overlapping, unpadded windows: stride == kernel size, no dilation."""
        kh, kw = self.kernel_hw
        h, w, _ = self.input_shape
        ho, wo = self.output_hw
        return (self.mode == "zero" and self.strides == (kh, kw) and self.dilation == (1, 1)
                and self.pads[0][0] == 0 and self.pads[1][0] == 0 and ho * wo > 0
                and ho * kh <= h and wo * kw <= w)

    def apply(self, kmat: np.ndarray, x: np.ndarray) -> np.ndarray:
        """``C x`` in float64 from the index map: ``x`` ``(B, n)`` -> ``(B, m)``."""
        xp = np.concatenate([x, np.zeros((x.shape[0], 1), x.dtype)], axis=1)
        win = xp[:, self.index]  # index -1 reads the appended zero
        return np.einsum("bpt,to->bpo", win, kmat).reshape(x.shape[0], -1)


def _pad_axis(a: np.ndarray, axis: int, lo: int, hi: int) -> np.ndarray:
    """Zero padding as XLA does it (pad value -1 in the index map; negative = crop)."""
    if lo < 0:
        a = np.take(a, np.arange(-lo, a.shape[axis]), axis=axis)
        lo = 0
    if hi < 0:
        a = np.take(a, np.arange(0, max(a.shape[axis] + hi, 0)), axis=axis)
        hi = 0
    widths = [(0, 0)] * a.ndim
    widths[axis] = (lo, hi)
    return np.pad(a, widths, constant_values=-1)


def conv_output_shape(input_shape, kernel_shape, *, strides=1, padding="VALID",
                      dilation=1) -> tuple[int, int, int]:
    """``(Ho, Wo, cout)`` of the convolution, with Flax's padding semantics."""
    g = _Geometry(input_shape, kernel_shape, strides, padding, dilation)
    return g.output_hw + (g.cout,)


# --------------------------------------------------------------------------- the operator


def conv_apply(kernel, x, *, strides=1, padding="VALID", dilation=1,
               precision=None) -> jax.Array:
    """The convolution exactly as ``flax.linen.Conv`` computes it (without bias).

    Args:
      kernel: ``(kh, kw, cin, cout)`` (Flax/HWIO layout).
      x: ``(..., H, W, cin)`` images.
      strides, padding, dilation: as ``nn.Conv``'s ``strides``, ``padding``,
        ``kernel_dilation``.
      precision: as ``nn.Conv`` (default ``None``); pass ``lax.Precision.HIGHEST`` for a
        residual check that TF32/bf16 passes on accelerators cannot spoil.

    Returns:
      ``(..., Ho, Wo, cout)``.
    """
    kernel = jnp.asarray(kernel)
    x = jnp.asarray(x)
    batch = x.shape[:-3]
    g = _Geometry(x.shape[-3:], kernel.shape, strides, padding, dilation)
    y = _conv_jit(kernel, x.reshape((-1,) + x.shape[-3:]), g.strides, g.mode, g.pads, g.dilation,
                  precision)
    return y.reshape(batch + y.shape[1:])


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5, 6))
def _conv_jit(kernel, x, strides, mode, pads, dilation, precision):
    if mode == "zero":
        pad = list(pads)
    else:
        x = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), mode=mode)
        pad = "VALID"
    dt = jnp.promote_types(x.dtype, kernel.dtype)  # as flax's promote_dtype
    return lax.conv_general_dilated(x.astype(dt), kernel.astype(dt), strides, pad,
                                    rhs_dilation=dilation,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    precision=precision)


def _kmat(kernel) -> tuple[np.ndarray, np.dtype]:
    """Kernel -> float64 ``(T, cout)`` (exact for float32/bf16 kernels) and its JAX dtype."""
    if not hasattr(kernel, "dtype"):
        kernel = np.asarray(kernel)
    if not jnp.issubdtype(kernel.dtype, jnp.floating):
        raise TypeError(f"kernel must be a floating array, got dtype {kernel.dtype}")
    # the dtype the layer computes in for float32 images (bf16/f16 kernels are promoted):
    # sets the default tolerance and the dtype of the returned arrays
    dtype = jnp.dtype(jax.dtypes.canonicalize_dtype(jnp.promote_types(kernel.dtype,
                                                                      jnp.float32)))
    k = np.asarray(kernel, dtype=np.float64)
    if k.ndim != 4:
        raise ValueError(f"kernel must have Flax layout (kh, kw, cin, cout), got shape {k.shape}")
    if not np.all(np.isfinite(k)):
        raise NonFiniteError("the kernel holds NaN or inf; expected finite values")
    return k.reshape(-1, k.shape[-1]), dtype


def conv_matrix(kernel, input_shape, *, strides=1, padding="VALID", dilation=1) -> np.ndarray:
    """The convolution as an explicit float64 ``(m, n)`` matrix (small cases and tests).

    Rows are ordered like the layer's output ``(Ho, Wo, cout)`` flattened, columns like the
    input ``(H, W, cin)`` flattened, so ``conv_matrix(...) @ x.ravel() ==
    conv_apply(kernel, x).ravel()``.  Memory ``8 m n`` bytes.
    """
    kmat, _ = _kmat(kernel)
    g = _Geometry(input_shape, np.shape(kernel), strides, padding, dilation)
    return _sparse_op(g, kmat).toarray()


def _sparse_op(g: _Geometry, kmat: np.ndarray, columns: np.ndarray | None = None):
    """Sparse ``(P k, n)`` matrix of ``(I_P kron kmat^T) S`` (rows ``(p, o)``, cols pixels).

    ``columns``: sorted pixel ids to keep (renumbered 0..len-1); taps on other pixels must not
    occur.  Duplicate taps on one pixel (REFLECT padding) are summed.
    """
    p, t = g.index.shape
    k = kmat.shape[1]
    idx = g.index if columns is None else _renumber(g.index, columns)
    ncol = g.n if columns is None else columns.size
    rows = np.broadcast_to(np.arange(p)[:, None, None] * k + np.arange(k), (p, t, k))
    cols = np.broadcast_to(idx[:, :, None], (p, t, k))
    vals = np.broadcast_to(kmat[None], (p, t, k))
    ok = (cols >= 0) & (vals != 0)
    coo = scipy.sparse.coo_matrix((vals[ok], (rows[ok], cols[ok])), shape=(p * k, ncol))
    return coo.tocsr()  # sums duplicates


def _renumber(index: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Map pixel ids to positions in the sorted ``columns`` (ids not in it must not occur)."""
    out = np.full(index.shape, -1, np.int64)
    ok = index >= 0
    out[ok] = np.searchsorted(columns, index[ok])
    return out


def _reduced_kmat(kmat: np.ndarray) -> np.ndarray:
    """``(T, k)`` with ``k = min(T, cout)`` and ``K K^T == kmat kmat^T`` (so same ``C^T C``).

    ``C' = (I kron K^T) S`` then has the same Gram, singular values and right singular
    vectors as ``C`` (``C = (I kron Q) C'`` with orthonormal ``Q``), with fewer rows.
    """
    t, cout = kmat.shape
    if cout <= t:
        return kmat
    r = np.linalg.qr(kmat.T, mode="r")  # kmat^T = Q R, R (T, T): kmat kmat^T = R^T R
    return r.T


def _band(sym) -> np.ndarray:
    """Lower band storage ``ab[i - j, j] = S[i, j]`` of a sparse symmetric matrix."""
    c = scipy.sparse.tril(sym, format="coo")
    nn_ = sym.shape[0]
    bw = int((c.row - c.col).max()) if c.nnz else 0
    ab = np.zeros((bw + 1, nn_))
    np.add.at(ab, (c.row - c.col, c.col), c.data)
    return ab


def _eigvalsh(sym) -> np.ndarray:
    """All eigenvalues (ascending) of a sparse symmetric matrix: banded LAPACK when narrow."""
    ab = _band(sym)
    if ab.shape[0] < max(sym.shape[0] // 4, 2):
        return scipy.linalg.eigvals_banded(ab, lower=True, check_finite=False)
    return scipy.linalg.eigh(sym.toarray(), eigvals_only=True, driver="evd", check_finite=False)


def _augmented_singular_values(a) -> np.ndarray:
    """Singular values of sparse ``a`` WITHOUT squaring, from the banded symmetric matrix
    ``[[0, a], [a^T, 0]]`` (eigenvalues ``+-sigma_i``), reordered by reverse Cuthill-McKee.
    Backward stable: absolute error ``~ eps64 sigma_max``, as a dense SVD."""
    m, n = a.shape
    b = scipy.sparse.bmat([[None, a], [a.T, None]], format="csr")
    perm = scipy.sparse.csgraph.reverse_cuthill_mckee(b, symmetric_mode=True)
    b = b[perm][:, perm]
    ab = _band(b)
    if ab.shape[0] < max((m + n) // 8, 2):
        lam = scipy.linalg.eigvals_banded(ab, lower=True, check_finite=False)
    else:
        return scipy.linalg.svd(a.toarray(), compute_uv=False, check_finite=False)
    return np.abs(lam)[np.argsort(-lam)][: min(m, n)]


# --------------------------------------------------------------------------- the spectrum


def _gram_floor(size: int) -> float:
    """Relative ``sigma`` below which a float64 Gram cannot resolve singular values."""
    return math.sqrt(max(size, 1) * _EPS64)


class _Spectrum:
    """Result of :func:`_spectrum`: float64 singular values and what the basis is."""

    def __init__(self, s, tol, rank, basis, method):
        self.s, self.tol, self.rank, self.basis, self.method = s, tol, rank, basis, method


def _spectrum(g: _Geometry, kmat, method, rtol, atol, dtype, vectors: bool) -> _Spectrum:
    """Singular values (float64, descending, length ``min(m, n)``; the patch matrix's for the
    patch route), tolerance, rank and -- if ``vectors`` -- the row basis: ``(n, rank)``
    float64, ``(T, r_patch)`` for patches, or ``"identity"`` (unit vectors of the covered
    pixels, exact when the Gram has full rank on them)."""
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if method == "patch" and not g.is_patch():
        raise ValueError("method='patch' needs stride == kernel size, no dilation and no "
                         f"padding inside the used area; got strides {g.strides}, kernel "
                         f"{g.kernel_hw}, dilation {g.dilation}, padding {g.pads}")
    m, n = g.m, g.n
    rtol_given = None if rtol is None else float(rtol)
    rtol = default_rtol((m, n), dtype) if rtol is None else float(rtol)
    k_full = min(m, n)

    def finish(s):
        s = np.sort(np.maximum(np.asarray(s, np.float64), 0.0))[::-1]
        s = np.concatenate([s, np.zeros(max(k_full - s.size, 0))])[:k_full]
        tol = max(float(atol), rtol * (s[0] if s.size else 0.0))
        return s, tol, int(np.sum(s > tol))

    covered = g.covered() if m else np.zeros((0,), np.int64)
    nc = covered.size
    if m == 0 or nc == 0 or not np.any(kmat):
        s, tol, rank = finish(np.zeros(0))
        return _Spectrum(s, tol, rank, None if not vectors else np.zeros((n, 0)), "trivial")

    if method == "patch" or (method == "auto" and g.is_patch()):
        a = kmat.T  # (cout, T): the block acting on every patch
        if vectors:
            _, s, vt = scipy.linalg.svd(a, full_matrices=False, check_finite=False)
        else:
            s, vt = scipy.linalg.svd(a, compute_uv=False, check_finite=False), None
        # the rule of the matrix actually factorised: the (cout, T) block (module docstring)
        rtol_block = default_rtol(a.shape, dtype) if rtol_given is None else rtol_given
        tol = max(float(atol), rtol_block * (s[0] if s.size else 0.0))
        r = int(np.sum(s > tol))
        return _Spectrum(s, tol, r * g.positions, None if vt is None else vt[:r].T, "patch")

    kr = _reduced_kmat(kmat)
    a = _sparse_op(g, kr, covered)  # (m', n_c): same Gram, sigmas, row space as C
    mp = a.shape[0]
    wide = mp <= nc

    if method in ("auto", "gram"):
        gram = (a @ a.T) if wide else (a.T @ a)  # the smaller Gram, banded
        lam = _eigvalsh(gram)
        s, tol, rank = finish(np.sqrt(np.maximum(lam, 0.0)))
        # sigmas above 10x the Gram's floor are accurate to a few %; below it they are not.
        # The decision is certain if tol is above that band or no sigma falls into it.
        band = 10.0 * _gram_floor(gram.shape[0]) * s[0]
        resolvable = tol > band or math.sqrt(max(float(lam.min()), 0.0)) > band
        if not resolvable and method == "gram":
            raise ValueError(
                f"rank tolerance {tol:.3e} (= {tol / s[0]:.1e} sigma_max) is within 10x of what "
                f"the Gram resolves in float64 (~{_gram_floor(gram.shape[0]):.1e} sigma_max: "
                "squaring halves the digits) and some singular values lie there; use a larger "
                "rtol or method='svd'")
        if resolvable:
            if not vectors:
                return _Spectrum(s, tol, rank, None, "gram")
            full = rank == gram.shape[0]
            if full and not wide:  # row space = all covered pixels
                return _Spectrum(s, tol, rank, "identity", "gram")
            lam = s[: gram.shape[0]] ** 2
            if full and wide and lam[0] / lam[-1] < 1e8:
                basis = _cholesky_row_basis(a, gram)
                if basis is not None:
                    out = np.zeros((n, rank))
                    out[covered] = basis
                    return _Spectrum(s, tol, rank, out, "gram")
            if not wide:  # rank deficient: dense eigh of the (n_c x n_c) Gram
                if nc > _DENSE_MAX_N:
                    raise ValueError(f"the Gram on {nc} pixels is rank deficient ({rank} < "
                                     f"{nc}); its eigenvectors need a dense {nc} x {nc} eigh, "
                                     f"above the limit {_DENSE_MAX_N}")
                lam, vec = scipy.linalg.eigh(gram.toarray(), driver="evd", check_finite=False)
                s, tol, rank = finish(np.sqrt(np.maximum(lam, 0.0)))
                out = np.zeros((n, rank))
                out[covered] = vec[:, ::-1][:, :rank]
                return _Spectrum(s, tol, rank, out, "gram")
            # wide and rank deficient (or ill-conditioned): dense SVD below

    # "svd": no squaring
    if not vectors:
        if mp * nc <= _SMALL_DENSE:
            vals = scipy.linalg.svd(a.toarray(), compute_uv=False, check_finite=False)
        else:
            vals = _augmented_singular_values(a)
        s, tol, rank = finish(vals)
        return _Spectrum(s, tol, rank, None, "svd")
    if mp * nc > _SVD_MAX_ENTRIES:
        raise ValueError(f"a dense SVD would form a {mp} x {nc} matrix (limit "
                         f"{_SVD_MAX_ENTRIES} entries); use a larger rtol so that the Gram "
                         "route applies")
    _, s, vt = scipy.linalg.svd(a.toarray(), full_matrices=False, check_finite=False)
    s, tol, rank = finish(s)
    out = np.zeros((n, rank))
    out[covered] = vt[:rank].T
    return _Spectrum(s, tol, rank, out, "svd")


def _static_tol(s: np.ndarray, rank: int) -> float:
    """A tolerance with ``#{s > tol} == rank`` for descending ``s``: the largest dropped value
    (0 when nothing is dropped)."""
    return float(s[rank]) if rank < s.size else 0.0


def _spectrum_at_rank(g: _Geometry, kmat, rank: int | str, vectors: bool) -> _Spectrum:
    """Float64 singular values (un-squared) and the row basis for a GIVEN rank.

    ``rank="exact"``: the rank over GF(p) of the exact kernel (:func:`exact_conv_rank`).  The
    basis is the top-``rank`` right singular vectors of a dense SVD, or -- when the rank is
    full on the covered pixels -- their unit vectors (exact, no SVD vectors needed).
    """
    m, n = g.m, g.n
    k_full = min(m, n)
    covered = g.covered() if m else np.zeros((0,), np.int64)
    exact = isinstance(rank, str)
    if exact and rank != "exact":
        raise ValueError(f"rank must be None, 'exact' or an int, got {rank!r}")
    if m == 0 or covered.size == 0 or not np.any(kmat):
        s = np.zeros(k_full)
        if not exact and int(rank) != 0:
            raise ValueError(f"rank={rank} but the operator is zero")
        return _Spectrum(s, 0.0, 0, None if not vectors else np.zeros((n, 0)), "trivial")
    if g.is_patch():  # one (cout, T) block per patch
        a = kmat.T
        r = (_rank_mod_p(_mod_p_kernel(a, _PRIME), _PRIME) if exact
             else int(rank) // g.positions)
        if not exact and r * g.positions != int(rank):
            raise ValueError(f"rank={rank} is not a multiple of the {g.positions} patches")
        _, s, vt = scipy.linalg.svd(a, full_matrices=False, check_finite=False)
        return _Spectrum(s, _static_tol(s, r), r * g.positions,
                         vt[:r].T if vectors else None, "patch")
    r = _exact_rank(g, kmat) if exact else int(rank)
    if not 0 <= r <= covered.size:
        raise ValueError(f"rank={r} outside [0, {covered.size}] (pixels read by the conv)")
    a = _sparse_op(g, _reduced_kmat(kmat), covered)
    full = r == covered.size
    if full or not vectors:
        vals = (scipy.linalg.svd(a.toarray(), compute_uv=False, check_finite=False)
                if a.shape[0] * a.shape[1] <= _SMALL_DENSE else _augmented_singular_values(a))
        s = np.concatenate([np.sort(vals)[::-1], np.zeros(k_full)])[:k_full]
        if not vectors:
            return _Spectrum(s, _static_tol(s, r), r, None, "svd")
        return _Spectrum(s, _static_tol(s, r), r, "identity", "svd")
    if a.shape[0] * a.shape[1] > _SVD_MAX_ENTRIES:
        raise ValueError(f"the basis at a given rank needs a dense SVD of a {a.shape[0]} x "
                         f"{a.shape[1]} matrix (limit {_SVD_MAX_ENTRIES} entries)")
    _, vals, vt = scipy.linalg.svd(a.toarray(), full_matrices=False, check_finite=False)
    s = np.concatenate([vals, np.zeros(k_full)])[:k_full]
    out = np.zeros((n, r))
    out[covered] = vt[:r].T
    return _Spectrum(s, _static_tol(s, r), r, out, "svd")


def _cholesky_row_basis(a, gram):
    """Orthonormal basis ``a^T L^-T`` of the row space of a full-row-rank sparse ``a``,
    ``a a^T = L L^T`` (banded Cholesky, banded triangular solve; ``O(m' n b)``)."""
    try:
        lb = scipy.linalg.cholesky_banded(_band(gram), lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        return None
    x, info = scipy.linalg.lapack.dtbtrs(lb, a.toarray(), uplo="L")
    if info != 0 or not np.all(np.isfinite(x)):
        return None
    return x.T  # (n_c, m'):  x x^T = L^-1 a a^T L^-T = I


def conv_singular_values(kernel, input_shape, *, strides=1, padding="VALID", dilation=1,
                         method="auto") -> np.ndarray:
    """All ``min(m, n)`` singular values of the convolution, float64, descending.

    ``method="auto"``/``"gram"``: from the banded Gram (fast; resolves ``sigma`` down to
    ``~sqrt(n eps64) sigma_max``).  ``"svd"``: without squaring, from the banded
    Jordan-Wielandt matrix ``[[0, C], [C^T, 0]]`` (or a dense SVD), accurate to
    ``~eps64 sigma_max`` -- use it to apply a float64 tolerance.  Exact structural zeros
    (pixels no window reads, ``m < n``) are included.
    """
    kmat, dtype = _kmat(kernel)
    g = _Geometry(input_shape, np.shape(kernel), strides, padding, dilation)
    sp = _spectrum(g, kmat, method, 0.0 if method == "svd" else None, 0.0, dtype,
                   vectors=False)
    s = sp.s
    if sp.method == "patch":
        s = np.concatenate([np.repeat(s, g.positions), np.zeros(min(g.m, g.n))])
        s = np.sort(s)[::-1][: min(g.m, g.n)]
    return s


# --------------------------------------------------------------------------- null spaces


@struct.dataclass
class CroppedPatchNullSpace(NullSpace):
    """Patch-embedding null space when the image is not a whole number of patches.

    A VALID patch grid reads only the top-left ``crop = (Hc, Wc)`` pixels (``Hc = ph *
    (H // ph)``); the remaining rows/columns are never read, so they lie entirely in the
    null space.  Projection applies the ``patch`` mode of :class:`NullSpace` to the crop and
    leaves the remainder unchanged (``project``) or zeroes it (``complement``).  ``rank``,
    ``dim`` and ``n`` refer to the whole image.
    """

    crop: tuple[int, int] = struct.field(pytree_node=False, default=(0, 0))

    def _inner(self) -> NullSpace:
        hc, wc = self.crop
        c = self.input_shape[2]
        return NullSpace(self.row_basis, self.singular_values, self.tol, hc * wc * c, self.rank,
                         (hc, wc, c), self.patch)

    def _split(self, x, check_finite):
        x = check_float_array(x)
        batch = _flat_shape(self, x.shape)
        if check_finite and not isinstance(x, jax.core.Tracer) and not bool(
                jnp.all(jnp.isfinite(x))):
            raise NonFiniteError(f"x holds NaN or inf (shape {x.shape}); expected finite values")
        return x, x.reshape(batch + tuple(self.input_shape))

    def project(self, x: jax.Array, *, check_finite: bool = True,
                accurate: bool = False) -> jax.Array:
        x, img = self._split(x, check_finite)
        return _cropped_apply(self, img, "null", bool(accurate)).reshape(x.shape)

    def complement(self, x: jax.Array, *, check_finite: bool = True,
                   accurate: bool = False) -> jax.Array:
        x, img = self._split(x, check_finite)
        return _cropped_apply(self, img, "perp", bool(accurate)).reshape(x.shape)

    def basis(self) -> jax.Array:
        """Dense ``(n, dim)`` orthonormal null basis (small images only)."""
        h, w, c = self.input_shape
        hc, wc = self.crop
        inner = self._inner().basis()  # (hc wc c, dim_core)
        core = jnp.zeros((h, w, c, inner.shape[1]), inner.dtype)
        core = core.at[:hc, :wc].set(inner.reshape(hc, wc, c, -1)).reshape(self.n, -1)
        mask = np.ones((h, w, c), bool)
        mask[:hc, :wc] = False
        rest = jnp.eye(self.n, dtype=inner.dtype)[:, np.flatnonzero(mask.reshape(-1))]
        return jnp.concatenate([core, rest], axis=1)

    def __repr__(self) -> str:
        return (f"CroppedPatchNullSpace(n={self.n}, rank={self.rank}, dim={self.dim}, "
                f"input_shape={self.input_shape}, patch={self.patch}, crop={self.crop}, "
                f"dtype={self.dtype})")


@functools.partial(jax.jit, static_argnums=(2, 3))
def _cropped_apply(ns: CroppedPatchNullSpace, img: jax.Array, part: str,
                   accurate: bool = False) -> jax.Array:
    """Patch-wise projection of the covered crop; the remainder is null (kept / zeroed)."""
    hc, wc = ns.crop
    inner = ns._inner()
    core = img[..., :hc, :wc, :]
    if part == "null":
        return img.at[..., :hc, :wc, :].set(
            inner.project(core, check_finite=False, accurate=accurate))
    return jnp.zeros_like(img).at[..., :hc, :wc, :].set(
        inner.complement(core, check_finite=False, accurate=accurate))


def _jax_tol(s_j, tol: float, rank_count: int, dtype):
    """``tol`` in ``dtype`` such that ``#{s_j > tol} == rank_count`` survives the cast."""
    t = np.asarray(tol, dtype=np.dtype(dtype))
    s_np = np.asarray(s_j)
    if int(np.sum(s_np > t)) != rank_count and rank_count < s_np.size:
        t = np.asarray(s_np[rank_count], dtype=np.dtype(dtype))  # largest dropped value
    return jnp.asarray(t)


def conv_null_space(
    kernel,
    input_shape: Sequence[int],
    *,
    strides=1,
    padding="VALID",
    dilation=1,
    rtol: float | None = None,
    atol: float = 0.0,
    method: str = "auto",
    rank: int | str | None = None,
) -> NullSpace:
    """Null space of the convolution ``x -> conv(x, kernel)`` as Flax ``nn.Conv`` computes it.

    Args:
      kernel: ``(kh, kw, cin, cout)`` kernel in Flax layout (all ``cout`` kernels: the result
        is the intersection of their null spaces).  Its dtype promoted with float32 (the
        layer's dtype on float32 images) sets the default tolerance and the output dtype.
      input_shape: ``(H, W, cin)`` of one input.
      strides, padding, dilation: as ``nn.Conv(strides=, padding=, kernel_dilation=)``;
        padding ``"VALID"``, ``"SAME"``, ``"SAME_LOWER"``, ``"CIRCULAR"``, ``"REFLECT"``,
        an int, or ``((lo, hi), (lo, hi))``.
      rtol, atol: rank tolerance of :func:`nsjax.null_space` applied to the full ``(m, n)``
        operator: ``tol = max(atol, rtol sigma_max)``, ``rtol = max(m, n) eps(dtype)``.
      method: ``"auto"`` (default), ``"patch"``, ``"svd"`` or ``"gram"``; see the module
        docstring.  All are exact; they differ in cost and in the smallest resolvable
        ``sigma``.
      rank: how the rank is decided.  ``None`` (default): the tolerance rule above.
        ``"exact"``: the rank of the convolution in exact arithmetic for the kernel's exact
        float values, from :func:`exact_conv_rank` (over GF(p); a float32 kernel is an exact
        dyadic rational), so e.g. a random SAME kernel -- exactly invertible, but with
        singular values down to ``1e-16 sigma_max`` -- gets nullity 0 where the float32 rule
        reports up to ~30 near-null directions.  The basis then comes from a float64 SVD
        with that static rank (unit vectors of the read pixels when the rank is full there);
        ``rtol``/``atol``/``method`` are ignored and ``tol`` is the largest dropped singular
        value (0 if none).  Raises :class:`ExactRankTooLarge` above the size limit of
        :func:`exact_conv_rank` (28x28 with 6 kernels is well inside).  An int: that static
        rank, basis from the SVD.

    Returns:
      :class:`NullSpace` with ``input_shape`` set (``patch=(kh, kw)`` for patch embeddings;
      a :class:`CroppedPatchNullSpace` if the image is not a whole number of patches).

    Example:
      >>> import jax, nsjax
      >>> from nsjax._conv import conv_null_space
      >>> k = jax.random.normal(jax.random.key(0), (3, 3, 1, 1))
      >>> conv_null_space(k, (28, 28, 1)).dim     # 784 - 26 * 26
      108
    """
    kmat, dtype = _kmat(kernel)
    input_shape = tuple(int(d) for d in input_shape)
    g = _Geometry(input_shape, np.shape(kernel), strides, padding, dilation)
    _check_tolerances(rtol, atol)
    if rank is not None and rank != "exact":
        _check_rank(rank, g.m, g.n)
    if rank is None:
        sp = _spectrum(g, kmat, method, rtol, atol, dtype, vectors=True)
    else:
        sp = _spectrum_at_rank(g, kmat, rank, vectors=True)
    s_j = _cast(sp.s, dtype)
    if sp.method == "patch":
        kh, kw = g.kernel_hw
        ho, wo = g.output_hw
        r = sp.rank // g.positions
        fields = dict(row_basis=_cast(sp.basis, dtype), singular_values=s_j,
                      tol=_jax_tol(s_j, sp.tol, r, dtype), n=g.n, rank=sp.rank,
                      input_shape=input_shape, patch=(kh, kw))
        if (ho * kh, wo * kw) == input_shape[:2]:
            return NullSpace(**fields)
        return CroppedPatchNullSpace(**fields, crop=(ho * kh, wo * kw))
    if isinstance(sp.basis, str):  # "identity": full rank on the covered pixels
        covered = g.covered()
        eye = np.eye(g.n, dtype=np.dtype(dtype))
        rb = jnp.asarray(eye if covered.size == g.n else eye[:, covered])
    else:
        rb = _cast(sp.basis, dtype)
    return NullSpace(row_basis=rb, singular_values=s_j, tol=_jax_tol(s_j, sp.tol, sp.rank, dtype),
                     n=g.n, rank=sp.rank, input_shape=input_shape,
                     null_basis=_small_null_basis(sp, g.n, dtype))


_NULL_BASIS_MAX_N = 1024  # complete QR of the row basis: 0.1 s at n = 784, 6 s at n = 3072


def _small_null_basis(sp, n: int, dtype):
    """``(n, dim)`` null basis when ``dim < rank`` (projection then costs ``min``), else None.

    Built in float64 from the row basis by a complete QR and rounded once; skipped above
    ``n = 1024`` (the row basis alone is still exact, only the projection cost differs).
    """
    dim = n - sp.rank
    if dim >= sp.rank:
        return None
    if dim == 0:
        return jnp.zeros((n, 0), np.dtype(dtype))
    if isinstance(sp.basis, str) or n > _NULL_BASIS_MAX_N:
        return None
    with jax.enable_x64(True):
        q = np.asarray(_complete(jnp.asarray(sp.basis, jnp.float64)))
    return _cast(q, dtype)


# --------------------------------------------------------------------------- Flax layers


def _layer_kernel(module: nn.Conv, variables) -> np.ndarray:
    """The layer's effective dense HWIO kernel (mask applied, groups expanded)."""
    params = variables["params"] if "params" in variables else variables
    k = np.asarray(params["kernel"])
    if module.mask is not None:
        k = k * np.asarray(module.mask, k.dtype)
    groups = int(module.feature_group_count)
    if groups != 1:
        kh, kw, cig, cout = k.shape
        cog = cout // groups
        dense = np.zeros((kh, kw, cig * groups, cout), k.dtype)
        for gi in range(groups):
            dense[:, :, gi * cig:(gi + 1) * cig, gi * cog:(gi + 1) * cog] = \
                k[:, :, :, gi * cog:(gi + 1) * cog]
        k = dense
    return k


def _supported(module) -> bool:
    ks = module.kernel_size
    ks = (ks,) if isinstance(ks, int) else tuple(ks)
    idil = module.input_dilation
    idil = 1 if idil is None else idil
    idil = (idil,) * len(ks) if isinstance(idil, int) else tuple(idil)
    return (type(module) is nn.Conv and len(ks) == 2 and all(d == 1 for d in idil)
            and module.conv_general_dilated is None and module.conv_general_dilated_cls is None
            and not (isinstance(module.padding, str) and module.padding.upper() == "CAUSAL"))


def _layer_linear_map(module: nn.Module, variables, shape):
    mod = module.clone(parent=None)
    params = dict(variables["params"] if "params" in variables else variables)
    if "bias" in params:
        params["bias"] = jnp.zeros_like(params["bias"])

    def f1(x):
        return mod.apply({"params": params}, x.reshape((1,) + tuple(shape))).reshape(-1)

    return f1


def conv_null_space_of_layer(
    module: nn.Conv,
    variables,
    input_shape: Sequence[int],
    *,
    rtol: float | None = None,
    atol: float = 0.0,
    method: str = "auto",
    check: bool = True,
    rank: int | str | None = None,
) -> NullSpace:
    """Null space of a Flax ``nn.Conv`` layer (its bias is affine and ignored).

    Args:
      module: the ``nn.Conv`` (bound or not); its ``strides``, ``padding``,
        ``kernel_dilation``, ``feature_group_count`` (expanded to a block kernel) and ``mask``
        are honoured.  Layers outside the structured path (``input_dilation != 1``, 1-D/3-D
        convs, a custom ``conv_general_dilated``) fall back to the dense ``jax.jacfwd``
        matrix and :func:`nsjax.null_space`.
      variables: ``{"params": {"kernel": ..., "bias": ...}}`` of the layer (or the inner
        dict).
      input_shape: ``(H, W, cin)`` of one input to the layer.
      rtol, atol, method, rank: see :func:`conv_null_space` (``rank="exact"``: the exact
        rank of :func:`exact_conv_rank`; not available on the dense fallback route).
      check: verify on a random input that the structured operator equals the layer's
        output minus its bias (one forward pass; raises ``RuntimeError`` on a mismatch).
    """
    input_shape = tuple(int(d) for d in input_shape)
    if not _supported(module) or len(input_shape) != 3:
        n = math.prod(input_shape)
        f1 = _layer_linear_map(module, variables, input_shape)
        matrix = jax.jit(jax.jacfwd(f1))(jnp.zeros((n,), jnp.float32))
        if isinstance(rank, str):
            raise ValueError(f"rank={rank!r} needs a 2-D nn.Conv on (H, W, C) inputs; "
                             f"{type(module).__name__} takes the dense route")
        return null_space(matrix, rtol=rtol, atol=atol, input_shape=input_shape, rank=rank)
    kernel = _layer_kernel(module, variables)
    ks = module.kernel_size
    ks = (ks,) * 2 if isinstance(ks, int) else tuple(ks)
    if tuple(kernel.shape[:2]) != ks:
        raise ValueError(f"kernel shape {kernel.shape} does not match kernel_size {ks}")
    strides = 1 if module.strides is None else module.strides
    dilation = 1 if module.kernel_dilation is None else module.kernel_dilation
    if check:
        _check_against_layer(module, variables, input_shape, kernel, strides, module.padding,
                             dilation)
    return conv_null_space(kernel, input_shape, strides=strides, padding=module.padding,
                           dilation=dilation, rtol=rtol, atol=atol, method=method, rank=rank)


def _check_against_layer(module, variables, input_shape, kernel, strides, padding, dilation):
    g = _Geometry(input_shape, kernel.shape, strides, padding, dilation)
    x = np.random.default_rng(12345).uniform(-1.0, 1.0, (1,) + input_shape).astype(np.float32)
    params = dict(variables["params"] if "params" in variables else variables)
    params.pop("bias", None)
    mod = module.clone(parent=None, use_bias=False)
    y_layer = jax.jit(mod.apply)({"params": params}, x)  # the layer minus its bias
    y = np.asarray(y_layer, np.float64).reshape(-1)
    kmat = np.asarray(kernel, np.float64).reshape(g.taps, g.cout)
    xf = np.asarray(x, np.float64).reshape(1, -1)
    ref = g.apply(kmat, xf)[0]
    bound = g.apply(np.abs(kmat), np.abs(xf))[0]  # sum |k| |x| per output
    eps = float(jnp.finfo(y_layer.dtype).eps)  # the layer's compute precision
    if y.shape != ref.shape or np.any(np.abs(y - ref) > 8 * g.taps * eps * bound + 1e-30):
        err = np.abs(y - ref).max() if y.shape == ref.shape else float("nan")
        raise RuntimeError(f"the structured convolution does not reproduce the layer "
                           f"{type(module).__name__} (shapes {y.shape} vs {ref.shape}, max "
                           f"error {err:.3e}); please report this configuration")


# --------------------------------------------------------------------------- exact rank

_PRIME = 2_147_483_647  # 2^31 - 1


def _mod_p_kernel(kmat: np.ndarray, p: int) -> np.ndarray:
    """Exact (dyadic) float kernel -> integers mod p after one common power-of-2 scaling."""
    fr = [Fraction(float(v)) for v in kmat.ravel()]
    den = max((f.denominator for f in fr), default=1)
    ints = [(f.numerator * (den // f.denominator)) % p for f in fr]
    return np.array(ints, dtype=np.int64).reshape(kmat.shape)


def _rank_mod_p(a: np.ndarray, p: int) -> int:
    """Rank of an integer matrix over GF(p) (int64, p < 2^31)."""
    return int(_echelon_rows_mod_p(a, p).shape[0])


def _echelon_rows_mod_p(a: np.ndarray, p: int) -> np.ndarray:
    """The nonzero rows of a row echelon form of integer ``a`` over GF(p) (same row space)."""
    a = np.array(a, dtype=np.int64) % p
    m, n = a.shape
    r = 0
    for c in range(n):
        if r == m:
            break
        nz = np.flatnonzero(a[r:, c])
        if nz.size == 0:
            continue
        i = r + nz[0]
        if i != r:
            a[[r, i], c:] = a[[i, r], c:]  # columns left of c are zero in both rows
        a[r, c:] = (a[r, c:] * pow(int(a[r, c]), p - 2, p)) % p
        below = r + 1 + np.flatnonzero(a[r + 1:, c])
        if below.size:
            a[below, c:] = (a[below, c:] - a[below, c:c + 1] * a[r, c:]) % p
        r += 1
    return a[:r]


class ExactRankTooLarge(ValueError):
    """The integer matrix of :func:`exact_conv_rank` would exceed its entry limit."""


_EXACT_MAX_ENTRIES = 2**23  # int64 (P min(cout, T), covered pixels) matrix: 64 MB


def _exact_rank(g: _Geometry, kmat: np.ndarray, prime: int = _PRIME,
                max_entries: int | None = _EXACT_MAX_ENTRIES) -> int:
    """Rank over GF(``prime``) of the operator of ``g`` with the exact float kernel ``kmat``.

    The kernel bank is first reduced over GF(p): ``Kmat^T = B E`` with ``E`` the
    ``(r_k, T)`` echelon rows and ``B`` injective, so ``(I kron Kmat^T) S`` and
    ``(I kron E) S`` have the same rank (``r_k <= min(cout, T)`` rows per window); pixels no
    window reads are zero columns and are dropped.
    """
    if g.m == 0:
        return 0
    kint = _mod_p_kernel(kmat, prime)  # (T, cout)
    if kint.shape[1] > kint.shape[0]:
        kint = _echelon_rows_mod_p(kint.T, prime).T  # (T, r_k)
    if kint.shape[1] == 0:
        return 0
    covered = g.covered()
    p, t = g.index.shape
    k = kint.shape[1]
    if max_entries is not None and p * k * covered.size > max_entries:
        raise ExactRankTooLarge(
            f"the exact rank needs a {p * k} x {covered.size} integer matrix "
            f"({p * k * covered.size:,} entries, limit {max_entries:,}); its elimination "
            f"costs O(m n^2) -- too large/slow for this case")
    idx = _renumber(g.index, covered)
    a = np.zeros((p * k, covered.size), np.int64)
    rows = np.broadcast_to(np.arange(p)[:, None, None] * k + np.arange(k), (p, t, k))
    cols = np.broadcast_to(idx[:, :, None], (p, t, k))
    vals = np.broadcast_to(kint[None], (p, t, k))
    ok = cols >= 0
    np.add.at(a, (rows[ok], cols[ok]), vals[ok])
    return _rank_mod_p(a, prime)


def exact_conv_rank(kernel, input_shape, *, strides=1, padding="VALID", dilation=1,
                    prime: int = _PRIME, max_entries: int | None = _EXACT_MAX_ENTRIES) -> int:
    """Rank of the convolution in EXACT arithmetic, for the kernel's exact float values.

    A float kernel is a dyadic rational; scaled by a common power of two it is an integer
    kernel with the same rank.  Its rank over GF(``prime``) is computed by elimination; it is
    a lower bound on the rank over the rationals and equals it unless ``prime`` divides every
    maximal nonzero minor (so "full rank mod p" CERTIFIES full rank).

    The elimination runs on an ``(P min(cout, T), n_c)`` int64 matrix (``P`` output
    positions, ``T`` taps, ``n_c`` pixels read by some window; the kernel bank is reduced
    mod p first); above ``max_entries`` entries (default ``2^23``, 64 MB: any 28x28x1 bank
    of 3x3 kernels fits, a 32x32x3 bank of 6 does not) it raises
    :class:`ExactRankTooLarge` instead (``None``: no limit).  Time ``O(m n_c b)`` for band
    width ``b``: see ``docs/results/conv.md`` for measured costs.
    """
    kmat, _ = _kmat(kernel)
    g = _Geometry(input_shape, np.shape(kernel), strides, padding, dilation)
    return _exact_rank(g, kmat, int(prime), max_entries)
