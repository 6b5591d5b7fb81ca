"""NullSpace traced through jit/vmap (built outside or inside with a static rank), and the
guards against an untransposed Flax (in, out) kernel.  Oracle: a float64 NumPy projector."""

import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nsjax

TOL32 = 1e-5  # float32 projector error: a small multiple of eps * n (tests/test_nullspace.py)


def _projector64(a: np.ndarray, rank: int) -> np.ndarray:
    """``I - V_r V_r^T`` from a float64 NumPy SVD."""
    _, _, vt = np.linalg.svd(np.asarray(a, np.float64))
    rb = vt[:rank].T
    return np.eye(a.shape[1]) - rb @ rb.T


def _matrices(k: int, m: int, n: int, rank: int) -> np.ndarray:
    rng = np.random.default_rng([k, m, n, rank])
    a = rng.standard_normal((k, m, rank)) @ rng.standard_normal((k, rank, n))
    return a.astype(np.float32)


@pytest.mark.parametrize("m, n, rank", [(3, 8, 3), (6, 8, 6)])  # (6, 8): a null basis
def test_traced_null_space_projects_a_concrete_x(m, n, rank):
    a = _matrices(1, m, n, rank)[0]
    ns = nsjax.null_space(a)
    assert (ns.null_basis is not None) == (n - rank < rank)
    x = np.random.default_rng(0).uniform(-1, 1, (5, n)).astype(np.float32)
    ref = x.astype(np.float64) @ _projector64(a, rank)
    np.testing.assert_allclose(np.asarray(jax.jit(lambda ns: ns.project(x))(ns)), ref,
                               atol=TOL32, rtol=0)
    np.testing.assert_allclose(np.asarray(jax.jit(lambda ns: ns.complement(x))(ns)), x - ref,
                               atol=TOL32, rtol=0)
    vm = jax.vmap(lambda ns, s: s * ns.project(x), in_axes=(None, 0))(ns, jnp.arange(1.0, 3.0))
    np.testing.assert_allclose(np.asarray(vm[1]), 2 * ref, atol=2 * TOL32, rtol=0)
    assert 0 < np.abs(ref).max() < 10


def test_traced_null_space_skips_only_the_host_finite_check():
    ns = nsjax.null_space(_matrices(1, 3, 8, 3)[0])
    bad = np.full((2, 8), np.nan, np.float32)
    assert np.isnan(np.asarray(jax.jit(lambda ns: ns.project(bad))(ns))).all()
    with pytest.raises(nsjax.NonFiniteError):  # concrete null space and x: still checked
        ns.project(bad)


@pytest.mark.parametrize("m, n, rank", [(3, 8, 3), (6, 8, 6), (5, 5, 3)])
def test_vmap_of_null_space_with_static_rank(m, n, rank):
    a = _matrices(4, m, n, rank)
    p = jax.vmap(lambda a: nsjax.null_space(a, rank=rank).projector())(a)
    assert p.shape == (4, n, n)
    for pi, ai in zip(np.asarray(p, np.float64), a):
        np.testing.assert_allclose(pi, _projector64(ai, rank), atol=TOL32, rtol=0)
        assert np.abs(pi).max() > 0.1  # not trivially zero
    dims = jax.jit(jax.vmap(lambda a: nsjax.null_space(a, rank=rank).numerical_rank()))(a)
    np.testing.assert_array_equal(np.asarray(dims), rank)


def test_untransposed_kernel_with_input_shape_raises():
    kernel = np.random.default_rng(0).standard_normal((784, 32)).astype(np.float32)
    with pytest.raises(ValueError, match=r"\(in, out\) kernel.*kernel\.T"):
        nsjax.null_space(kernel, input_shape=(28, 28, 1))
    assert nsjax.null_space(kernel.T, input_shape=(28, 28, 1)).dim == 784 - 32
    with pytest.raises(ValueError, match="n=32 columns"):  # neither side matches
        nsjax.null_space(kernel, input_shape=(5, 5))


def test_tall_full_rank_matrix_without_input_shape_warns():
    from nsjax._nullspace import TransposedKernelWarning

    kernel = np.random.default_rng(0).standard_normal((40, 8)).astype(np.float32)
    with pytest.warns(TransposedKernelWarning, match=r"kernel\.T") as rec:
        ns = nsjax.null_space(kernel)
    assert ns.dim == 0 and issubclass(rec[0].category, UserWarning)
    # points at the caller, outside nsjax (a mutation-testing trampoline may sit between)
    package = os.path.dirname(os.path.abspath(nsjax.__file__))
    assert not os.path.abspath(rec[0].filename).startswith(package + os.sep)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert nsjax.null_space(kernel.T).dim == 32  # wide: fine
        assert nsjax.null_space(kernel, input_shape=(8,)).dim == 0  # shape given: deliberate
        tall_deficient = _matrices(1, 40, 8, 5)[0]
        assert nsjax.null_space(tall_deficient).dim == 3  # nontrivial null space: no hint
