"""Invariants of nsjax.null_space / NullSpace against scipy as an independent oracle.

Tolerances (one table per dtype): projector and orthonormality errors are a small multiple
of eps * n (accumulated over length-n dot products); float32 eps = 1.19e-7, n <= 784 gives
~1e-4 worst case, observed ~1e-6, so we assert 1e-5 for float32 and 1e-12 for float64.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import nsjax

TOL = {np.float32: 1e-5, np.float64: 1e-12}


def _planted(key, m, n, rank, dtype):
    k1, k2 = jax.random.split(jax.random.key(key))
    a = jax.random.normal(k1, (m, rank), jnp.float64) @ jax.random.normal(k2, (rank, n),
                                                                          jnp.float64)
    return np.asarray(a).astype(dtype)


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "m,n,rank",
    [(32, 784, 32), (32, 784, 20), (1, 2, 1), (10, 10, 10), (50, 20, 20), (300, 40, 7),
     (5, 40, 0)],
)
@pytest.mark.filterwarnings("ignore::nsjax._nullspace.TransposedKernelWarning")  # (50, 20)
def test_matches_scipy(m, n, rank, dtype):
    a = _planted(m * 1000 + n, m, n, rank, np.float64).astype(dtype)
    ns = nsjax.null_space(a)
    assert ns.rank == rank and ns.dim == n - rank
    ref = scipy.linalg.null_space(a.astype(np.float64), rcond=max(m, n) * np.finfo(dtype).eps)
    assert ref.shape[1] == ns.dim
    p = np.asarray(ns.projector(), np.float64)
    np.testing.assert_allclose(p, ref @ ref.T, atol=TOL[dtype])
    b = np.asarray(ns.basis(), np.float64)
    assert b.shape == (n, n - rank)
    np.testing.assert_allclose(b.T @ b, np.eye(n - rank), atol=TOL[dtype])
    # A N = 0 (relative to ||A||) and P^2 = P
    scale = max(np.linalg.norm(a.astype(np.float64), 2), 1.0)
    assert np.abs(a.astype(np.float64) @ b).max(initial=0.0) <= 10 * TOL[dtype] * scale
    np.testing.assert_allclose(p @ p, p, atol=TOL[dtype])


def test_zero_matrix_has_full_null_space():
    ns = nsjax.null_space(np.zeros((3, 5), np.float32))
    assert (ns.rank, ns.dim) == (0, 5)
    np.testing.assert_allclose(ns.project(np.ones((2, 5), np.float32)), np.ones((2, 5)))
    np.testing.assert_allclose(ns.basis(), np.eye(5))


def test_rtol_decides_rank():
    a = np.diag([1.0, 1e-3, 1e-9]).astype(np.float64)
    assert nsjax.null_space(a).rank == 3  # default rtol = 3 * eps64 ~ 7e-16
    assert nsjax.null_space(a, rtol=1e-6).rank == 2
    assert nsjax.null_space(a, atol=1e-2).rank == 1
    # strict ">": a singular value exactly at the tolerance does not count
    assert nsjax.null_space(np.diag([1.0, 0.5]), rtol=0.5).rank == 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_project_plus_complement_is_identity(dtype):
    a = _planted(1, 32, 784, 32, dtype)
    ns = nsjax.null_space(a, input_shape=(28, 28, 1))
    x = np.asarray(jax.random.uniform(jax.random.key(2), (3, 5, 28, 28, 1), dtype, -1, 1))
    p, c = ns.project(x), ns.complement(x)
    assert p.shape == x.shape and p.dtype == x.dtype
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(p + c, x, atol=8 * eps)
    # A project(x) = 0; complement is orthogonal to the null space
    flat = np.asarray(p, np.float64).reshape(-1, 784)
    assert np.abs(flat @ a.T.astype(np.float64)).max() <= 1e3 * eps * np.abs(a).max()
    pc = np.einsum("bi,bi->b", flat, np.asarray(c, np.float64).reshape(-1, 784))
    assert np.abs(pc).max() <= 1e3 * eps


def test_flat_and_image_inputs_agree():
    ns = nsjax.null_space(_planted(3, 16, 48, 16, np.float32), input_shape=(4, 4, 3))
    x = np.asarray(jax.random.normal(jax.random.key(0), (7, 4, 4, 3)), np.float32)
    np.testing.assert_array_equal(ns.project(x).reshape(7, 48), ns.project(x.reshape(7, 48)))


def test_projection_jits_vmaps_and_does_not_retrace():
    import chex

    ns = nsjax.null_space(_planted(4, 8, 20, 8, np.float32))
    x = jax.random.normal(jax.random.key(1), (4, 3, 20), jnp.float32)
    eager = ns.project(x)
    jitted = jax.jit(lambda ns, x: ns.project(x))(ns, x)
    np.testing.assert_allclose(jitted, eager, atol=1e-6)
    vm = jax.vmap(jax.vmap(lambda v: ns.project(v)))(x)
    np.testing.assert_allclose(vm, eager, atol=1e-6)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def f(ns, x):
        return ns.complement(x)

    for k in range(3):
        f(ns, x + k)


def test_gradient_of_projection_is_the_projector():
    ns = nsjax.null_space(_planted(5, 4, 10, 4, np.float64))
    jac = jax.jacfwd(lambda x: ns.project(x))(jnp.zeros(10))
    np.testing.assert_allclose(jac, ns.projector(), atol=1e-12)


def test_static_rank_works_inside_jit():
    a = _planted(6, 12, 30, 9, np.float32)

    @jax.jit
    def f(a):
        ns = nsjax.null_space(a, rank=9)
        return ns.numerical_rank(), ns.row_basis

    r, rb = f(a)
    assert int(r) == 9 and rb.shape == (30, 9)
    with pytest.raises(ValueError, match="inside jit"):
        jax.jit(lambda a: nsjax.null_space(a).row_basis)(a)


@pytest.mark.parametrize(
    "bad,err,msg",
    [
        (np.ones((2, 3, 4), np.float32), ValueError, "2-D"),
        (np.ones(5, np.float32), ValueError, "2-D"),
        (np.array([[1.0, np.nan]], np.float32), ValueError, "NaN or inf"),
        (np.array([[1.0, np.inf]], np.float32), ValueError, "NaN or inf"),
        (np.ones((2, 3), np.int32), TypeError, "floating"),
    ],
)
def test_bad_matrices(bad, err, msg):
    with pytest.raises(err, match=msg):
        nsjax.null_space(bad)


def test_bad_inputs_to_projection():
    ns = nsjax.null_space(_planted(7, 4, 12, 4, np.float32), input_shape=(2, 2, 3))
    with pytest.raises(ValueError, match=r"\(\.\.\., 12\) or \(\.\.\., 2, 2, 3\)"):
        ns.project(np.ones((3, 11), np.float32))
    with pytest.raises(TypeError, match="floating"):
        ns.project(np.ones((3, 2, 2, 3), np.uint8))
    with pytest.raises(nsjax.NonFiniteError, match="NaN or inf"):
        ns.complement(np.full((1, 12), np.nan, np.float32))
    with pytest.raises(ValueError, match="input_shape"):
        nsjax.null_space(np.ones((2, 12), np.float32), input_shape=(5, 5))
    # traced inputs skip the host-side finite check instead of failing
    out = jax.jit(lambda x: ns.project(x))(jnp.full((1, 12), jnp.nan))
    assert np.isnan(np.asarray(out)).all()


def test_finite_check_on_coefficients_catches_every_nonfinite_entry():
    """The check reads x R (B, r), not x: any NaN/inf in any row must still be caught."""
    rng = np.random.default_rng(1)
    w1 = rng.standard_normal((6, 40)).astype(np.float32)
    x = rng.uniform(-1, 1, (16, 40)).astype(np.float32)
    ns = nsjax.null_space(w1)
    for bad in (np.nan, np.inf, -np.inf):
        for _ in range(5):
            y = x.copy()
            y[rng.integers(16), rng.integers(40)] = bad
            with pytest.raises(nsjax.NonFiniteError, match="NaN or inf"):
                ns.project(jnp.asarray(y))
            with pytest.raises(nsjax.NonFiniteError, match="NaN or inf"):
                ns.complement(jnp.asarray(y))
            out = ns.project(jnp.asarray(y), check_finite=False)  # no check, no error
            assert not np.all(np.isfinite(np.asarray(out)))
    zero = nsjax.null_space(np.zeros((3, 40), np.float32))  # rank 0: falls back to x
    assert zero.rank == 0
    y = x.copy()
    y[0, 0] = np.nan
    with pytest.raises(nsjax.NonFiniteError):
        zero.project(jnp.asarray(y))


def _trained_like_w1(seed=0, m=32, n=784, kappa=30.0):
    """A W1 with a spread spectrum (condition number ``kappa``), like a trained first layer."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((m, m)))
    v, _ = np.linalg.qr(rng.standard_normal((n, m)))
    s = np.geomspace(kappa, 1.0, m)
    return (u * s) @ v.T


def test_accurate_coefficients_shrink_the_row_space_residual():
    """``accurate=True``: ``x R`` from an exact split matmul, so ``W1 project(x)`` shrinks.

    Float32 tolerance: the plain residual is ~eps * ||W1|| * ||x|| times a summation factor;
    the accurate one must be at least 4x smaller (we see ~10-20x) and within 2 eps of scale.
    """
    w = _trained_like_w1()
    ns = nsjax.null_space(w.astype(np.float32), input_shape=(28, 28, 1))
    x = np.random.default_rng(1).uniform(-1, 1, (256, 784)).astype(np.float32)
    x[:, :400] = -1.0  # a constant background, as in MNIST, makes the sums cancel
    rb = np.asarray(ns.row_basis, np.float64)
    exact = x.astype(np.float64) @ rb
    from nsjax._nullspace import _coefficients

    plain = np.asarray(_coefficients(jnp.asarray(x), ns.row_basis, False), np.float64)
    acc = np.asarray(_coefficients(jnp.asarray(x), ns.row_basis, True), np.float64)
    e_plain, e_acc = np.abs(plain - exact).max(), np.abs(acc - exact).max()
    assert e_acc <= e_plain / 4, (e_acc, e_plain)
    eps = np.finfo(np.float32).eps
    assert e_acc <= 2 * eps * np.abs(exact).max(), e_acc
    scale = np.linalg.norm(w, 2) * np.linalg.norm(x, axis=1).max()

    def res(p):
        return np.abs(np.asarray(p, np.float64).reshape(256, -1) @ w.T).max() / scale

    r_plain, r_acc = res(ns.project(x)), res(ns.project(x, accurate=True))
    assert r_acc < r_plain, (r_acc, r_plain)
    assert r_acc <= 8 * eps, r_acc
    np.testing.assert_allclose(np.asarray(ns.project(x, accurate=True)) +
                               np.asarray(ns.complement(x, accurate=True)), x, atol=4 * eps * 2)


@pytest.mark.parametrize("float64_svd, k", [(None, 1), (False, 4)])
def test_row_basis_is_orthonormal_and_spans_the_row_space(float64_svd, k):
    """Default: float64 SVD rounded to float32 (|W (I - R R^T)| <= 1 eps |W|, measured 0.25);
    float32 SVD + QR refinement: <= 4 eps (measured ~2; the raw float32 SVD gives ~8)."""
    w = _trained_like_w1(seed=3).astype(np.float32)
    ns = nsjax.null_space(w, float64_svd=float64_svd)
    assert ns.row_basis.dtype == jnp.float32 and ns.singular_values.dtype == jnp.float32
    rb = np.asarray(ns.row_basis, np.float64)
    eps = np.finfo(np.float32).eps
    assert np.abs(rb.T @ rb - np.eye(32)).max() <= 8 * eps
    w64 = w.astype(np.float64)
    assert np.linalg.norm(w64 - (w64 @ rb) @ rb.T, 2) <= k * eps * np.linalg.norm(w64, 2)
    u, sv, vt = np.linalg.svd(w64, full_matrices=False)
    np.testing.assert_allclose(rb @ rb.T, vt.T @ vt, atol=4 * k * eps)  # the same row space
    if float64_svd is False:  # the refined SVD's basis: the singular vectors, in order
        assert np.all(np.abs(np.sum(rb * vt.T, axis=0)) > 0.99)
    np.testing.assert_allclose(np.asarray(ns.singular_values), sv, rtol=1e-5)


def test_float64_svd_needs_a_concrete_matrix():
    w = _trained_like_w1(seed=4).astype(np.float32)
    with pytest.raises(ValueError, match="float64_svd"):
        jax.jit(lambda a: nsjax.null_space(a, rank=32, float64_svd=True).row_basis)(w)
    rb = jax.jit(lambda a: nsjax.null_space(a, rank=32).row_basis)(w)  # traced: float32 path
    assert rb.shape == (784, 32) and rb.dtype == jnp.float32


@pytest.mark.parametrize("m", [500, 676, 784])
def test_smaller_null_side_projects_through_a_null_basis(m):
    """``dim < rank``: a null basis is kept and used, so cost scales with min(rank, dim);
    results match SciPy's null space (float32 tolerance 1e-5 on [-1, 1] inputs)."""
    rng = np.random.default_rng(m)
    w = rng.standard_normal((m, 784)).astype(np.float32)
    ns = nsjax.null_space(w, input_shape=(28, 28, 1))
    assert ns.null_basis is not None and ns.null_basis.shape == (784, 784 - m)
    nb = np.asarray(ns.null_basis, np.float64)
    np.testing.assert_allclose(nb.T @ nb, np.eye(784 - m), atol=1e-6)
    x = rng.uniform(-1, 1, (6, 28, 28, 1)).astype(np.float32)
    n_ref = scipy.linalg.null_space(w.astype(np.float64))
    xf = x.reshape(6, -1).astype(np.float64)
    ref = (xf @ n_ref) @ n_ref.T
    p = np.asarray(ns.project(x)).reshape(6, -1)
    np.testing.assert_allclose(p, ref, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ns.complement(x)).reshape(6, -1), xf - ref, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ns.basis()), nb)
    if m == 784:  # trivial null space: project is exactly 0, complement exactly x
        assert not np.any(p) and np.array_equal(np.asarray(ns.complement(x)), x)
    y = x.copy()
    y[0, 3, 4, 0] = np.inf
    with pytest.raises(nsjax.NonFiniteError):
        ns.project(y)
    out = jax.jit(lambda s, v: s.project(v))(ns, x)  # a pytree with the extra leaf
    np.testing.assert_allclose(np.asarray(out).reshape(6, -1), p, atol=1e-7)


# ------------------------------------------------------------- fast null bases (issue 14)

EPS32 = float(np.finfo(np.float32).eps)


@pytest.mark.parametrize("n, r, kind", [(784, 32, "random"), (300, 299, "random"),
                                        (50, 1, "random"), (8, 3, "identity"),
                                        (8, 3, "-identity")])
def test_complete_is_an_orthonormal_complement(n, r, kind):
    """The WY route of ``_complete`` against float64 truth.  Bound: applying ``r`` float32
    Householder reflectors errs by ``O(r eps)`` in norm (Higham, Lemma 19.3; observed
    ~1.5 eps), so ``2 r eps`` per entry holds and a wrong ``T`` (an O(1) error) fails.
    ``identity`` columns make LAPACK's ``tau`` exactly 0 (H = I)."""
    from nsjax._nullspace import _complete

    if kind == "random":
        rb = np.linalg.qr(np.random.default_rng(n).standard_normal((n, r)))[0]
    else:
        rb = np.eye(n, r) * (1 if kind == "identity" else -1)
    q = np.asarray(_complete(jnp.asarray(rb, jnp.float32)), np.float64)
    rb32 = rb.astype(np.float32).astype(np.float64)
    assert q.shape == (n, n - r)
    bound = 2 * r * EPS32
    assert np.abs(q.T @ q - np.eye(n - r)).max() <= bound
    assert np.abs(rb32.T @ q).max() <= bound


@pytest.mark.filterwarnings("ignore::nsjax._nullspace.TransposedKernelWarning")
@pytest.mark.parametrize("m, n", [(40, 40), (90, 30)])
def test_full_column_rank_skips_the_singular_vectors(m, n):
    """``m >= n``, rank ``n``: the null space is {0}; ``I_n`` spans the row space; the
    singular values are the float64 SVD's rounded to float32 (relative error <= eps/2)."""
    a = np.random.default_rng(m).standard_normal((m, n)).astype(np.float32)
    ns = nsjax.null_space(a)
    assert (ns.rank, ns.dim) == (n, 0) and ns.basis().shape == (n, 0)
    np.testing.assert_array_equal(ns.row_basis, np.eye(n))
    s64 = np.linalg.svd(a.astype(np.float64), compute_uv=False)
    np.testing.assert_allclose(np.asarray(ns.singular_values, np.float64), s64,
                               rtol=EPS32, atol=0)
    x = np.random.default_rng(1).uniform(-1, 1, (3, n)).astype(np.float32)
    np.testing.assert_array_equal(ns.project(x), np.zeros_like(x))
    np.testing.assert_array_equal(ns.complement(x), x)


@pytest.mark.parametrize("m, n, rank", [(40, 40, 37), (90, 30, 28)])
def test_rank_deficient_tall_null_basis_from_the_svd(m, n, rank):
    """``m >= n``, rank < n: the null basis is the SVD's trailing right vectors, against a
    float64 NumPy SVD: ``|A N| <= 2 eps |A|`` (float32 rounding of an exact float64 null
    basis: ``|A| |dN| <= |A| sqrt(n) eps / 2``, n <= 40) and orthonormal to ``2 eps``."""
    a = _planted(m + n, m, n, rank, np.float32)
    ns = nsjax.null_space(a)
    assert ns.rank == rank
    a64 = a.astype(np.float64)
    u, s, vt = np.linalg.svd(a64)
    b = np.asarray(ns.basis(), np.float64)
    assert b.shape == (n, n - rank)
    assert np.abs(a64 @ b).max() <= 2 * EPS32 * s[0] * np.sqrt(n) / 2
    assert np.abs(b.T @ b - np.eye(n - rank)).max() <= 2 * EPS32
    ref = vt[rank:].T
    np.testing.assert_allclose(b @ b.T, ref @ ref.T, atol=4 * EPS32)


def test_free_cpus_counts_other_processes_runnable_threads():
    import threading

    from nsjax.blas import _own_running, free_cpus

    cpus = len(__import__("os").sched_getaffinity(0))
    assert free_cpus("0.5 0.4 0.3 1/200 123\n") == cpus  # only the caller runs
    assert free_cpus(f"9 9 9 {cpus + 5}/200 123\n", own_running=1) == 1  # oversubscribed
    assert free_cpus("garbage") == cpus
    # this process's own runnable threads (spinning OpenBLAS workers) are not "others"
    assert free_cpus("1 1 1 3/200 123\n", own_running=3) == cpus
    assert free_cpus("1 1 1 3/200 123\n", own_running=2) == max(1, cpus - 1)
    # the count itself: the caller, plus a thread busy in NumPy (GIL released, state R);
    # idle threads (blocked like XLA's pool or sleeping OpenBLAS workers) are not counted
    stop, seen = threading.Event(), []
    idle = [threading.Thread(target=stop.wait, daemon=True) for _ in range(4)]
    for t in idle:
        t.start()
    time.sleep(0.5)  # OpenBLAS workers of earlier calls stop spinning
    assert 1 <= _own_running() <= 2
    x = np.random.default_rng(0).standard_normal((256, 256))

    def spin():
        while not stop.is_set():
            np.linalg.eigvalsh(x)

    t = threading.Thread(target=spin, daemon=True)
    t.start()
    try:
        seen = [_own_running() for _ in range(50)]
    finally:
        stop.set()
        for thread in [t, *idle]:
            thread.join()
    assert max(seen) >= 2


def test_lapack_threads_caps_and_restores(monkeypatch):
    from nsjax import blas

    before = blas.openblas_threads()
    cores = blas.openblas_cores()  # each library found, and the kernels it runs
    assert set(cores) == set(before) and all(cores.values()), cores
    monkeypatch.setattr(blas, "free_cpus", lambda: 1)
    with blas.lapack_threads():
        assert all(v == 1 for v in blas.openblas_threads().values())
    assert blas.openblas_threads() == before
    # small work: one thread even with free cores; large work: the free cores
    monkeypatch.setattr(blas, "free_cpus", lambda: 2)
    with blas.limit_blas_threads(2):
        if set(blas.openblas_threads().values()) != {2}:
            pytest.skip("OpenBLAS here cannot run 2 threads (a 1-core machine)")
        for work, threads in ((blas.SINGLE_THREAD_WORK / 2, 1), (blas.SINGLE_THREAD_WORK, 2),
                              (None, 2)):
            with blas.lapack_threads(work):
                assert set(blas.openblas_threads().values()) == {threads}
            assert set(blas.openblas_threads().values()) == {2}
    assert blas.openblas_threads() == before


def test_small_factorisations_run_on_one_openblas_thread(monkeypatch):
    """With free cores, a small null space's LAPACK work (its factorisation and
    ``basis()``'s QR) still runs on one OpenBLAS thread: on 2 cores beside XLA's threads a
    second one costs more than it gains (``blas.SINGLE_THREAD_WORK``)."""
    from nsjax import _nullspace, blas

    monkeypatch.setattr(blas, "free_cpus", lambda: 2)
    seen = {}
    for name in ("_row_gram_factor", "_complete"):
        real = getattr(_nullspace, name)
        monkeypatch.setattr(_nullspace, name, lambda *a, _r=real, _n=name: (
            seen.setdefault(_n, set(blas.openblas_threads().values())), _r(*a))[1])
    with blas.limit_blas_threads(2):
        if set(blas.openblas_threads().values()) != {2}:
            pytest.skip("OpenBLAS here cannot run 2 threads (a 1-core machine)")
        a = np.random.default_rng(2).standard_normal((32, 784)).astype(np.float32)
        nsjax.null_space(a).basis()
        assert seen == {"_row_gram_factor": {1}, "_complete": {1}}
        assert set(blas.openblas_threads().values()) == {2}  # restored after


def test_patch_null_space_projects_and_completes_like_the_dense_operator():
    # a 4x4 stride-4 conv on 8x12x2 (a patch embedding: block-diagonal operator); reference:
    # the dense float64 operator and SciPy's null space of it.  Float32 bases: projector
    # entries to ~n eps32 (n = 192), so 1e-5.
    from nsjax._conv import conv_matrix

    k = np.random.default_rng(4).standard_normal((4, 4, 2, 5)).astype(np.float32)
    ns = nsjax.conv_null_space(k, (8, 12, 2), strides=4)
    assert ns.patch == (4, 4)
    a = conv_matrix(k, (8, 12, 2), strides=4)
    ref = scipy.linalg.null_space(a)
    assert ns.dim == ref.shape[1] == 192 - 6 * 5
    p_ref = ref @ ref.T
    x = np.random.default_rng(5).uniform(-1, 1, (3, 8, 12, 2)).astype(np.float32)
    xf = x.reshape(3, -1).astype(np.float64)
    for kernel in (None, False):  # the CPU kernel's patch entry and XLA's matmuls
        got = np.asarray(ns.project(x, kernel=kernel), np.float64).reshape(3, -1)
        np.testing.assert_allclose(got, xf @ p_ref, atol=1e-5)
        perp = np.asarray(ns.complement(x, kernel=kernel), np.float64).reshape(3, -1)
        np.testing.assert_allclose(perp, xf - xf @ p_ref, atol=1e-5)
    basis = np.asarray(ns.basis(), np.float64)  # (n, dim), built patch by patch
    assert basis.shape == (192, ns.dim)
    np.testing.assert_allclose(basis.T @ basis, np.eye(ns.dim), atol=1e-5)
    np.testing.assert_allclose(basis @ basis.T, p_ref, atol=1e-5)


def test_singular_values_and_the_kernel_decision():
    from nsjax import _cpu_kernel

    a = np.random.default_rng(6).standard_normal((32, 784)).astype(np.float32)
    s = np.asarray(nsjax.singular_values(a), np.float64)
    ref = np.linalg.svd(a.astype(np.float64), compute_uv=False)
    # a float64 SVD of the float32 matrix, rounded to float32: ~eps32 relative
    np.testing.assert_allclose(s, ref, rtol=2 * float(np.finfo(np.float32).eps))
    ns = nsjax.null_space(a)
    # the paper's first-layer shape: the fused kernel projects whenever this build has it
    assert nsjax.uses_cpu_kernel(ns) == _cpu_kernel.available()
    assert not nsjax.uses_cpu_kernel(ns, kernel=False)


@pytest.mark.filterwarnings("ignore::nsjax._nullspace.TransposedKernelWarning")
def test_tall_float32_matrices_take_the_gram_route_unless_rtol_is_below_its_resolution(
        monkeypatch):
    """``m >= n`` float32 with ``rtol >= GRAM_MIN_RTOL``: values and vectors from the
    float64 eigendecomposition of ``A^T A`` (one call), the same rank, null space and
    singular values as a float64 SVD (null projectors within ``4 eps``; values within
    ``sqrt(eps64) sigma_max``, the Gram route's resolution).  Below that ``rtol`` the SVD
    decides: an exactly repeated column has ``sigma_min ~ 1e-15 sigma_max`` in float64,
    which ``A^T A`` cannot resolve (``~1e-8``), so ``rtol=1e-12`` must still find it."""
    from nsjax import _nullspace

    calls = []
    real = _nullspace._gram_factor
    monkeypatch.setattr(_nullspace, "_gram_factor",
                        lambda a, *args: calls.append(a.shape) or real(a, *args))
    a = _planted(7, 120, 48, 45, np.float32)
    ns = nsjax.null_space(a)
    assert calls == [(120, 48)] and (ns.rank, ns.dim) == (45, 3)
    a64 = a.astype(np.float64)
    _, s, vt = np.linalg.svd(a64)
    b = np.asarray(ns.basis(), np.float64)
    np.testing.assert_allclose(b @ b.T, vt[45:].T @ vt[45:], atol=4 * EPS32)
    np.testing.assert_allclose(np.asarray(ns.singular_values, np.float64), s,
                               rtol=EPS32, atol=np.sqrt(np.finfo(np.float64).eps) * s[0])

    dup = np.random.default_rng(0).standard_normal((40, 12)).astype(np.float32)
    dup[:, 5] = dup[:, 3]
    calls.clear()
    fine = nsjax.null_space(dup, rtol=1e-12)
    assert calls == [] and fine.dim == 1
    np.testing.assert_allclose(np.abs(np.asarray(fine.basis())[[3, 5], 0]), [0.5 ** 0.5] * 2,
                               rtol=EPS32)
    assert nsjax.null_space(dup).dim == 1 and calls == [(40, 12)]
    assert nsjax.null_space(dup.astype(np.float64)).dim == 1 and len(calls) == 1  # float64


@pytest.mark.filterwarnings("ignore::nsjax._nullspace.TransposedKernelWarning")
@pytest.mark.parametrize("m, n, rank, given", [(90, 60, 52, False), (70, 60, 9, False),
                                               (60, 60, 30, True), (30, 20, 0, False)])
def test_gram_route_computes_only_the_smaller_sides_vectors(monkeypatch, m, n, rank, given):
    """The Gram route asks MRRR for ``min(dim, rank)`` eigenvectors: the null side's when
    it is the smaller (stored as ``null_basis``, the rows its completion), else the row
    side's; none at rank 0.  Either way both bases match a float64 SVD's (projectors within
    ``4 eps``; orthonormal within ``2 eps``).  A failed MRRR falls back to a full ``eigh``
    of the same Gram matrix with the same result."""
    from scipy.linalg import lapack

    asked = []
    real = lapack.dstemr

    def spy(d, e, rng, vl, vu, lo, hi, *args, **kwargs):
        asked.append(hi - lo + 1)
        return real(d, e, rng, vl, vu, lo, hi, *args, **kwargs)

    monkeypatch.setattr(lapack, "dstemr", spy)
    a = _planted(11, m, n, rank, np.float32) if rank else np.zeros((m, n), np.float32)
    _, s, vt = np.linalg.svd(a.astype(np.float64))
    ref = vt[rank:].T @ vt[rank:]
    dim = n - rank

    def check(ns):
        assert (ns.rank, ns.dim) == (rank, dim)
        assert (ns.null_basis is not None) == (dim < rank)
        b = np.asarray(ns.basis(), np.float64)
        r = np.asarray(ns.row_basis, np.float64)
        np.testing.assert_allclose(b @ b.T, ref, atol=4 * EPS32)
        np.testing.assert_allclose(np.eye(n) - r @ r.T, ref, atol=4 * EPS32)
        np.testing.assert_allclose(b.T @ b, np.eye(dim), atol=2 * EPS32)
        np.testing.assert_allclose(r.T @ r, np.eye(rank), atol=2 * EPS32)

    check(nsjax.null_space(a, rank=rank if given else None))
    assert asked == ([min(dim, rank)] if rank else [])
    monkeypatch.setattr(lapack, "dstemr", lambda d, *args: (0, d, np.zeros((d.size, 1)), 1))
    check(nsjax.null_space(a, rank=rank if given else None))


def test_wide_float32_matrices_of_full_row_rank_take_the_row_gram_route(monkeypatch):
    """``m < n`` float32, full row rank: singular values from ``eigvalsh(A A^T)`` (within
    ``sqrt(eps64) sigma_max`` of a float64 SVD's), the row basis from a CholeskyQR2 of the
    rows (projector within ``4 eps`` of the SVD's, row residual below ``eps``).  Rank deficient,
    a given ``rank < m``, or ``rtol`` below the Gram resolution: the SVD decides."""
    from nsjax import _nullspace

    calls = []
    real = _nullspace._row_gram_factor
    monkeypatch.setattr(_nullspace, "_row_gram_factor",
                        lambda a, *args: calls.append(a.shape) or real(a, *args))
    a = np.random.default_rng(3).standard_normal((24, 70)).astype(np.float32)
    a64 = a.astype(np.float64)
    _, s, vt = np.linalg.svd(a64)
    ns = nsjax.null_space(a)
    assert calls == [(24, 70)] and (ns.rank, ns.dim) == (24, 46)
    r = np.asarray(ns.row_basis, np.float64)
    np.testing.assert_allclose(r @ r.T, vt[:24].T @ vt[:24], atol=4 * EPS32)
    assert np.linalg.norm(a64 - a64 @ r @ r.T, 2) <= EPS32 * s[0]
    np.testing.assert_allclose(np.asarray(ns.singular_values, np.float64), s,
                               rtol=EPS32, atol=np.sqrt(np.finfo(np.float64).eps) * s[0])

    deficient = _planted(5, 24, 70, 23, np.float32)  # one row short of full rank
    calls.clear()
    nd = nsjax.null_space(deficient)
    assert calls == [(24, 70)] and (nd.rank, nd.dim) == (23, 47)  # tried, then the SVD
    _, _, vt = np.linalg.svd(deficient.astype(np.float64))
    b = np.asarray(nd.basis(), np.float64)
    np.testing.assert_allclose(b @ b.T, vt[23:].T @ vt[23:], atol=4 * EPS32)
    rtol = 70 * EPS32  # the default, max(m, n) eps
    assert real(a64, rtol, 0.0) is not None  # the route answers at full row rank only
    assert real(deficient.astype(np.float64), rtol, 0.0) is None
    calls.clear()
    assert nsjax.null_space(a, rank=20).rank == 20 and calls == []
    assert nsjax.null_space(a, rtol=1e-9).rank == 24 and calls == []


@pytest.mark.parametrize("cond", [1.0, 1e3, 9e5])
def test_cholesky_qr2_is_orthonormal_and_spans_the_rows(cond):
    """The wide route's row basis (float64): orthonormal to a few eps64 and spanning the
    rows (``|A - A Q Q^T| <= a few eps64 |A|``) up to ``cond(A) ~ 1 / GRAM_MIN_RTOL``, the
    route's limit; where a Cholesky factorisation fails it falls back on a Householder QR.
    One CholeskyQR step alone would leave ``~cond^2 eps64`` (8e-5 at ``cond = 9e5``)."""
    from nsjax import _nullspace

    rng = np.random.default_rng(7)
    u = np.linalg.qr(rng.standard_normal((20, 20)))[0]
    v = np.linalg.qr(rng.standard_normal((90, 20)))[0]
    a = (u * np.geomspace(1.0, 1.0 / cond, 20)) @ v.T  # (20, 90), singular values 1..1/cond
    q = _nullspace._cholesky_qr2(a, a @ a.T)
    eps64 = np.finfo(np.float64).eps
    assert q.shape == (90, 20)
    assert np.abs(q.T @ q - np.eye(20)).max() <= 20 * eps64
    assert np.linalg.norm(a - a @ q @ q.T, 2) <= 20 * eps64 * np.linalg.norm(a, 2)
    # not positive definite: the Householder QR answers (the same row space)
    q2 = _nullspace._cholesky_qr2(a, -(a @ a.T))
    np.testing.assert_allclose(q2 @ q2.T, q @ q.T, atol=1e-9)


@pytest.mark.filterwarnings("ignore::nsjax._nullspace.TransposedKernelWarning")
def test_gram_route_on_a_single_column():
    """``(m, 1)``: no tridiagonal reduction exists; rank 0 for a zero column (the whole
    line is null), else 1 with ``sigma = |a|``."""
    zero = nsjax.null_space(np.zeros((9, 1), np.float32))
    assert (zero.rank, zero.dim) == (0, 1)
    np.testing.assert_array_equal(np.abs(np.asarray(zero.basis())), [[1.0]])
    col = np.arange(1, 10, dtype=np.float32)[:, None]
    one = nsjax.null_space(col)
    assert (one.rank, one.dim) == (1, 0)
    np.testing.assert_allclose(np.asarray(one.singular_values), [np.linalg.norm(col)],
                               rtol=EPS32)


def test_patch_route_honours_accurate_and_the_input_dtype():
    """A patch null space projects patch by patch with the accurate coefficients when asked
    (bit-equal to the flat route on the patchified rows, and not the plain result), and in
    the promoted dtype of ``x`` and the basis (float64 ``x`` -> float64 under x64)."""
    from nsjax._nullspace import _patchify, _project_flat, _unpatchify

    k = np.random.default_rng(4).standard_normal((4, 4, 2, 5)).astype(np.float32)
    ns = nsjax.conv_null_space(k, (8, 12, 2), strides=4)
    x = jnp.asarray(np.random.default_rng(6).uniform(-1, 1, (16, 8, 12, 2)), jnp.float32)
    rows = _patchify(ns, x.reshape(16, -1))
    ref, _ = jax.jit(lambda r: _project_flat(ns.row_basis, r, "null", True, True, False))(rows)
    ref = np.asarray(_unpatchify(ns, ref)).reshape(x.shape)
    acc = np.asarray(ns.project(x, accurate=True))
    np.testing.assert_array_equal(acc, ref)
    assert not np.array_equal(acc, np.asarray(ns.project(x, kernel=False)))
    x64 = np.asarray(x, np.float64) + 1e-9  # not representable in float32
    out = ns.project(x64)
    assert out.dtype == jnp.float64
    p = np.asarray(ns.basis(), np.float64)
    np.testing.assert_allclose(np.asarray(out).reshape(16, -1),
                               x64.reshape(16, -1) @ p @ p.T, atol=1e-5)


def test_traced_routes_and_the_input_dtype_decide_the_kernel():
    """Inside ``jit``: ``singular_values`` matches the eager values, and a ``(0, n)``
    matrix with ``rank=0`` has the whole space as null space.  ``uses_cpu_kernel`` decides
    on the dtype ``x`` is promoted to: float16 inputs of a float32 null space run float32."""
    a = np.random.default_rng(8).standard_normal((6, 9)).astype(np.float32)
    traced = np.asarray(jax.jit(nsjax.singular_values)(jnp.asarray(a)), np.float64)
    np.testing.assert_allclose(traced, np.linalg.svd(a.astype(np.float64), compute_uv=False),
                               rtol=0, atol=20 * EPS32 * np.linalg.norm(a, 2))
    dim, tol = jax.jit(lambda m: (lambda n: (n.dim, n.tol))(nsjax.null_space(m, rank=0)))(
        jnp.zeros((0, 5), jnp.float32))
    assert dim == 5 and float(tol) == 0.0
    ns = nsjax.null_space(a)
    from nsjax import _cpu_kernel

    for dtype in (jnp.float16, jnp.bfloat16, jnp.float32):
        assert nsjax.uses_cpu_kernel(ns, dtype, kernel=True) == _cpu_kernel.available()


def test_empty_and_integer_matrices_and_the_low_precision_tolerance():
    """``(0, n)``: everything is null (rank 0, no singular values, basis ``I_n``);
    ``(m, 0)``: nothing is.  Integer matrices are refused by name.  A float16 matrix's
    default tolerance is ``max(m, n) eps`` of the SVD's precision: float64 by default,
    float32 with ``float64_svd=False``."""
    ns = nsjax.null_space(np.zeros((0, 5), np.float32))
    assert (ns.rank, ns.dim) == (0, 5) and ns.singular_values.shape == (0,)
    np.testing.assert_array_equal(ns.basis(), np.eye(5))
    assert nsjax.null_space(np.zeros((3, 0), np.float32)).dim == 0
    with pytest.raises(TypeError, match="the matrix must be a floating array"):
        nsjax.null_space(np.ones((2, 3), np.int32))
    a = np.random.default_rng(9).standard_normal((6, 20)).astype(np.float16)
    s0 = np.linalg.norm(a.astype(np.float64), 2)
    for float64_svd, eps in ((None, np.finfo(np.float64).eps), (False, EPS32)):
        tol = float(nsjax.null_space(a, float64_svd=float64_svd).tol)
        assert tol == pytest.approx(20 * eps * s0, rel=1e-3), (float64_svd, tol)


def test_kernel_choice_reaches_complement_and_an_empty_basis_keeps_the_dtype():
    """``complement(x, kernel=False)`` runs XLA's matmuls even where the fused kernel would be
    chosen (bit-equal to the XLA route, and not to the kernel's, which sums in another
    order); the ``(n, 0)`` basis of a trivial null space is in the null space's dtype, also
    with x64 on (autouse here)."""
    from nsjax._nullspace import _project_flat

    w = np.random.default_rng(12).standard_normal((32, 784)).astype(np.float32)
    ns = nsjax.null_space(w)
    x = jnp.asarray(np.random.default_rng(13).uniform(-1, 1, (512, 784)), jnp.float32)
    xla = np.asarray(jax.jit(
        lambda x: _project_flat(ns.row_basis, x, "perp", True, False, False)[0])(x))
    np.testing.assert_array_equal(np.asarray(ns.complement(x, kernel=False)), xla)
    if nsjax.uses_cpu_kernel(ns):
        assert not np.array_equal(np.asarray(ns.complement(x)), xla)
    full = nsjax.null_space(w[:, :32].copy())  # square, full rank: dim 0
    assert full.dim == 0 and full.basis().shape == (32, 0)
    assert full.basis().dtype == jnp.float32 != jnp.zeros(()).dtype  # x64 on: float64 default


def test_tolerance_and_matrix_checks_on_device_arrays_and_in_jit():
    """A JAX array with NaN is refused like a NumPy one (the check runs on the device); an
    array-valued ``rtol`` is refused by name; ``matrix_rank`` under ``jit`` says why not."""
    bad = jnp.asarray([[1.0, jnp.nan, 0.0]], jnp.float32)
    with pytest.raises(nsjax.NonFiniteError, match=r"the \(1, 3\) matrix holds NaN or inf"):
        nsjax.null_space(bad)
    a = np.eye(2, 3, dtype=np.float32)
    with pytest.raises(TypeError, match="rtol must be a real scalar"):
        nsjax.null_space(a, rtol=np.array([1e-3, 1e-3]))
    with pytest.raises(ValueError, match=r"^matrix_rank\(\) decides the rank on the host; "
                                         r"call it outside jit"):
        jax.jit(nsjax.matrix_rank)(jnp.asarray(a))
    with pytest.raises(ValueError, match=r"^null_space\(\) decides the rank on the host.*"
                                         r"Compute the null space outside jit .* or pass a "
                                         r"static rank="):
        jax.jit(nsjax.null_space)(jnp.asarray(a))


def test_singular_values_and_matrix_rank_honour_float64_svd():
    """``float64_svd=False`` runs the values-only SVD in float32 (bit-equal to
    ``jnp.linalg.svd`` of the float32 matrix, and not the rounded float64 values); ``True``
    needs a concrete matrix, as in :func:`null_space`."""
    a = np.random.default_rng(12).standard_normal((30, 50)).astype(np.float32)
    f32 = np.asarray(nsjax.singular_values(a, float64_svd=False))
    np.testing.assert_array_equal(f32, np.asarray(jnp.linalg.svd(jnp.asarray(a),
                                                                 compute_uv=False)))
    assert not np.array_equal(f32, np.asarray(nsjax.singular_values(a)))
    with pytest.raises(ValueError, match="float64_svd=True needs a concrete matrix"):
        jax.jit(lambda m: nsjax.singular_values(m, float64_svd=True))(jnp.asarray(a))
    with pytest.raises(ValueError, match="float64_svd=True needs a concrete matrix"):
        jax.jit(lambda m: nsjax.null_space(m, rank=3, float64_svd=True).row_basis)(a)


def test_large_svd_time_estimates_read_in_seconds_minutes_hours():
    from nsjax._nullspace import _duration

    assert [_duration(t) for t in (59.6, 119, 120, 7199, 7200, 9000, 3.6e6)] == [
        "60 s", "119 s", "2 min", "120 min", "2.0 h", "2.5 h", "1000.0 h"]
