"""Property-based tests (hypothesis) of the core invariants over random shapes, ranks and
dtypes, each against an independent float64 NumPy calculation.

Examples are derandomized (the same ones on every run, so CI is reproducible) and few
(each new shape compiles new XLA code).  Matrices are planted with singular values in
[0.5, 2] and exact zeros, so the rank decision itself is never borderline.
"""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import nsjax

SETTINGS = settings(max_examples=10, deadline=None, derandomize=True)
EPS = {np.float32: float(np.finfo(np.float32).eps), np.float64: float(np.finfo(np.float64).eps)}


@st.composite
def planted(draw):
    """``(A (m, n), rank, dtype)`` with ``rank`` singular values in [0.5, 2], the rest 0."""
    m = draw(st.integers(1, 24))
    n = draw(st.integers(1, 40))
    rank = draw(st.integers(0, min(m, n)))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    u = np.linalg.qr(rng.standard_normal((m, m)))[0][:, :rank]
    v = np.linalg.qr(rng.standard_normal((n, n)))[0][:, :rank]
    s = rng.uniform(0.5, 2.0, rank)
    return (u * s) @ v.T, rank, dtype


def _tol(dtype, n):
    # dtype: the null space's own (float64 input is float32 unless jax_enable_x64 is on)
    dtype = np.dtype(dtype).type
    # a basis rounded to dtype errs by ~eps per entry; a length-n dot product with entries
    # of size <= 2 (sigma_max) then errs by <= 2 sqrt(n) eps; 8x margin for the SVD itself
    return 16 * np.sqrt(max(n, 1)) * EPS[dtype]


@SETTINGS
@given(planted())
def test_rank_nullity_and_the_null_basis(case):
    a, rank, dtype = case
    m, n = a.shape
    ns = nsjax.null_space(a.astype(dtype))
    assert ns.rank == rank and ns.rank + ns.dim == n  # rank + nullity = n
    basis = np.asarray(ns.basis(), np.float64)  # (n, dim)
    assert basis.shape == (n, n - rank)
    np.testing.assert_allclose(basis.T @ basis, np.eye(n - rank), atol=_tol(ns.dtype, n))
    assert np.abs(a @ basis).max(initial=0.0) <= _tol(ns.dtype, n)  # A N = 0


@SETTINGS
@given(planted(), st.integers(1, 5), st.integers(0, 2**31 - 1))
def test_projector_is_the_orthogonal_projection(case, batch, seed):
    a, rank, dtype = case
    n = a.shape[1]
    ns = nsjax.null_space(a.astype(dtype))
    x = np.random.default_rng(seed).uniform(-1, 1, (batch, n)).astype(ns.dtype)
    p, q = np.asarray(ns.project(x), np.float64), np.asarray(ns.complement(x), np.float64)
    x = x.astype(np.float64)
    tol = _tol(ns.dtype, n)
    # independent reference: the projection onto Null(A) from NumPy's float64 SVD
    _, s, vt = np.linalg.svd(a)
    null = vt[rank:].T
    np.testing.assert_allclose(p, x @ null @ null.T, atol=tol)
    np.testing.assert_allclose(p + q, x, atol=tol)  # project + complement = x
    p2 = np.asarray(ns.project(p.astype(ns.dtype)), np.float64)
    np.testing.assert_allclose(p2, p, atol=tol)  # P^2 = P


@SETTINGS
@given(st.integers(8, 48), st.integers(1, 6), st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_stego_stays_in_the_domain_with_the_largest_alpha2(n, rank, batch, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((rank, n))
    ns = nsjax.null_space(a.astype(np.float32))
    c = rng.uniform(-1, 1, (batch, n)).astype(np.float32)
    h = rng.uniform(-1, 1, (batch, n)).astype(np.float32)
    r = nsjax.stego(c, h, ns, alpha1=0.2)
    s, a2 = np.asarray(r.image, np.float64), np.asarray(r.alpha2, np.float64)
    assert np.abs(s).max() <= 1.0  # in the domain
    # independent float64 maximum: alpha2 <= (sign(c_i) - h_i) / c_i over pixels with c != 0
    q = np.linalg.qr(a.T)[0]  # (n, rank) row-space basis
    hp = 0.2 * (h @ q @ q.T)
    chat = c - (c @ q) @ q.T
    bound = np.where(chat > 0, (1 - hp) / np.where(chat > 0, chat, 1),
                     np.where(chat < 0, (-1 - hp) / np.where(chat < 0, chat, 1), np.inf))
    max64 = bound.min(axis=1)
    # maximal: nsjax shrinks by (1 - 8 eps32) against rounding; float32 bases add ~1e-6
    assert np.all(a2 >= (1 - 1e-5) * max64) and np.all(a2 <= max64 * (1 + 1e-5))
    over = hp + (1 + 1e-4) * max64[:, None] * chat
    assert np.all(np.abs(over).max(axis=1) > 1.0)  # any larger alpha2 leaves the domain


@SETTINGS
@given(st.integers(3, 9), st.integers(3, 9), st.integers(1, 3), st.integers(1, 2),
       st.sampled_from(["VALID", "SAME"]), st.integers(0, 2**31 - 1))
def test_conv_null_space_is_the_dense_null_space(h, w, k, cout, padding, seed):
    kernel = jax.random.normal(jax.random.key(seed % 2**16), (k, k, 1, cout), jnp.float64
                               if jax.config.jax_enable_x64 else jnp.float32)
    kernel = np.asarray(kernel, np.float32).astype(np.float64)  # exact float32 values
    dense = nsjax.conv_matrix(kernel, (h, w, 1), padding=padding)  # (m, n) float64
    ns = nsjax.conv_null_space(kernel.astype(np.float32), (h, w, 1), padding=padding,
                               rank="exact")
    # the exact rank (GF(p)) against NumPy's float64 SVD: singular values clearly above 0
    # (> 1e-6 sigma_max, a million times float64's floor) are nonzero, so the exact rank is
    # at least their count; where the spectrum has a clear gap the two counts are equal
    # (SAME kernels can have exact full rank and singular values down to the float64
    # floor even on tiny images: no gap, only the bound)
    sv = np.linalg.svd(dense, compute_uv=False)
    top = sv[0] if sv.size else 0.0
    clear = int(np.sum(sv > 1e-6 * top))
    assert clear <= ns.rank <= min(dense.shape)
    if not np.any((sv > 1e-13 * top) & (sv <= 1e-6 * top)):
        assert ns.rank == clear
    # same subspace: the nsjax projector annihilates the dense operator and has its rank
    p = np.asarray(ns.projector(), np.float64)
    assert np.abs(dense @ p).max(initial=0.0) <= 1e-4 * max(np.abs(dense).max(), 1e-30)
    assert round(float(np.trace(p))) == ns.dim == h * w - ns.rank
