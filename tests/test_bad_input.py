"""Nothing silently wrong: inputs that used to give a wrong answer without a word.

Each test asserts behaviour the code before this file lacked (what it did is noted on
each test): low-precision matrices got a storage-eps rank tolerance, ``null_space_of``
accepted models that read the input twice, NaN/inf/negative tolerances were taken, stego on
a trivial null space returned ``alpha2 = 3.4e38``, float16/bfloat16 ``x`` broke the fused
CPU kernel, and a long SVD started without a word.
"""

import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nsjax
from nsjax import _cpu_kernel, _nullspace
from nsjax._nullspace import LargeSVDWarning, matrix_rank, singular_values
from nsjax._stego import TrivialNullSpaceError

LOW = [jnp.float16, jnp.bfloat16]
EPS32 = float(np.finfo(np.float32).eps)


def _gaussian(key, m, n, dtype=jnp.float32):
    return jax.random.normal(jax.random.key(key), (m, n), jnp.float32).astype(dtype)


# ------------------------------------------------------------- 1. low-precision rank rule


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("float64_svd", [None, False])
def test_low_precision_matrix_gets_its_exact_rank(dtype, float64_svd):
    # before: rtol = 784 eps(dtype) = 0.77 (float16) / 6.1 (bfloat16) relative to sigma_max,
    # so rank 24 / 0 for a matrix whose sigma_min / sigma_max is ~0.65.
    a = _gaussian(0, 32, 784, dtype)
    ns = nsjax.null_space(a, float64_svd=float64_svd)
    assert (ns.rank, ns.dim) == (32, 752)
    assert ns.dtype == jnp.float32  # a bfloat16 basis would leave A P x ~ 4e-3 |A| |x|
    # A N = 0 to float32 precision: the values of a are exact in float32 and float64
    a64 = np.asarray(a.astype(jnp.float32), np.float64)
    b = np.asarray(ns.basis(), np.float64)
    assert np.abs(a64 @ b).max() <= 16 * EPS32 * np.linalg.norm(a64, 2)


def test_default_rtol_follows_the_svd_precision_for_low_precision_dtypes():
    eps64 = float(np.finfo(np.float64).eps)
    for dtype in LOW:
        assert nsjax.default_rtol((32, 784), dtype) == 784 * eps64  # float64 SVD (default)
        assert nsjax.default_rtol((32, 784), dtype, jnp.float32) == 784 * EPS32
    # float32 / float64 keep NumPy's matrix_rank rule
    assert nsjax.default_rtol((32, 784), jnp.float32) == 784 * EPS32
    assert nsjax.default_rtol((32, 784), jnp.float64) == 784 * eps64


def test_stego_on_a_bfloat16_fcnn_fools_its_own_forward_pass():
    # before: null_space_of gave dim 784 (the whole input "null") and stego succeeded ~45 %.
    model = nsjax.FCNN((784, 32, 16, 10))
    params = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16),
                                    nsjax.init_params(model, jax.random.key(0)))
    ns = nsjax.null_space_of(model, params, (28, 28, 1))
    assert (ns.rank, ns.dim) == (32, 752)
    k1, k2 = jax.random.split(jax.random.key(1))
    c = jax.random.uniform(k1, (400, 28, 28, 1), minval=-1, maxval=1)
    h = jax.random.uniform(k2, (400, 28, 28, 1), minval=-1, maxval=1)
    r = nsjax.stego(c, h, ns)
    # Flax promotes the bfloat16 kernel to the float32 input: the forward pass is float32
    f = jax.jit(lambda x: model.apply(params, x))
    same = np.asarray(f(r.image).argmax(-1) == f(0.2 * h).argmax(-1))
    assert same.mean() >= 0.95  # measured: 1.0 (1000 pairs: 1.0; bfloat16 images: 0.999)


# ----------------------------------------------- 2. the first linear map is the only reader


class _SecondHead(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(10)(nn.relu(nn.Dense(32)(x))) + nn.Dense(10)(x)


class _ConcatInput(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(10)(jnp.concatenate([nn.relu(nn.Dense(32)(x)), x], axis=-1))


class _Residual(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(6)(x) + x


@pytest.mark.parametrize("cls,what", [(_SecondHead, r"second linear map .*Dense_2"),
                                      (_ConcatInput, "concatenate"),
                                      (_Residual, "add")])
def test_a_second_reader_of_the_input_is_refused(cls, what):
    # before: a "null space" of dim 774 (40 - 32 for the concat) that the model does see
    model = cls()
    n = 6 if cls is _Residual else 40
    variables = model.init(jax.random.key(0), jnp.zeros((1, n)))
    with pytest.raises(ValueError, match=what) as e:
        nsjax.null_space_of(model, variables, (n,))
    assert "null_space(kernel.T" in str(e.value)  # says how to pass the layer explicitly


class _ScaledReshaped(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = (x * 2.0).reshape(x.shape[0], -1)
        return nn.Dense(3)(nn.relu(nn.Dense(4)(h)))


class _Quadratic(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(x * x)


def test_linear_first_models_are_still_accepted():
    cases = [
        (nn.Sequential([nn.Dense(4), nn.relu, nn.Dense(2)]), (5,), ["layers_0"]),
        (nn.Dense(3), (5,), []),
        (_ScaledReshaped(), (2, 3), ["Dense_1"]),  # Dense(3) is built first
        (nsjax.FCNN((12, 4, 3)), (12,), ["Dense_0"]),
    ]
    for model, shape, path in cases:
        variables = model.init(jax.random.key(0), jnp.zeros((1,) + shape))
        ns = nsjax.null_space_of(model, variables, shape)
        kernel = variables["params"]
        for p in path:
            kernel = kernel[p]
        ref = nsjax.null_space(kernel["kernel"].T)  # a fixed scaling keeps the null space
        assert ns.dim == ref.dim > 0
        rb, rb_ref = np.asarray(ns.row_basis), np.asarray(ref.row_basis)  # in NumPy: no jit
        np.testing.assert_allclose(rb @ rb.T, rb_ref @ rb_ref.T, atol=1e-6)
    # nsjax's CNN (a Conv first): tests/test_first_layer.py runs it through the same check
    quad = _Quadratic()
    with pytest.raises(ValueError, match="does not receive the model input"):
        nsjax.null_space_of(quad, quad.init(jax.random.key(0), jnp.zeros((1, 5))), (5,))


# ------------------------------------------------------------ 3. invalid tolerances / rank


@pytest.mark.parametrize("kw,err,msg", [
    ({"rtol": float("nan")}, ValueError, "rtol must be finite and >= 0"),
    ({"rtol": float("inf")}, ValueError, "rtol must be finite"),
    ({"rtol": -1e-3}, ValueError, "rtol must be finite and >= 0"),
    ({"atol": float("nan")}, ValueError, "atol must be finite"),
    ({"atol": float("inf")}, ValueError, "atol must be finite"),
    ({"atol": -1.0}, ValueError, "atol must be finite and >= 0"),
    ({"rtol": "1e-3"}, TypeError, "rtol must be a real"),
    ({"atol": np.ones(2)}, TypeError, "atol must be a real scalar"),
    ({"rank": 2.5}, TypeError, r"rank must be an integer in \[0, min\(m, n\)\] = \[0, 4\]"),
    ({"rank": True}, TypeError, "rank must be an integer"),
    ({"rank": -1}, ValueError, r"rank must be in \[0, min\(m, n\)\] = \[0, 4\]"),
    ({"rank": 5}, ValueError, r"= \[0, 4\], got 5"),
])
def test_invalid_tolerances_and_ranks_are_refused(kw, err, msg):
    # before: NaN/inf declared every vector null, -1e-3 was taken, 2.5 gave a raw traceback
    a = _gaussian(1, 4, 10)
    with pytest.raises(err, match=msg):
        nsjax.null_space(a, **kw)
    if "rank" not in kw:
        with pytest.raises(err, match=msg):
            matrix_rank(a, **kw)
        model = nsjax.FCNN((10, 4, 3))
        with pytest.raises(err, match=msg):
            nsjax.null_space_of(model, nsjax.init_params(model, jax.random.key(0)), (10,), **kw)


def test_valid_edge_tolerances_still_work():
    a = _gaussian(1, 4, 10)
    assert nsjax.null_space(a, rtol=0.0, atol=0.0).rank == 4
    assert nsjax.null_space(a, rtol=np.float32(0.5), rank=np.int64(2)).rank == 2


# ------------------------------------------------------------- 4. stego with nothing to hide


def test_stego_on_a_trivial_null_space_is_an_error():
    # before: S = alpha1 H and alpha2 = 3.4e38; evaluate_stego reported alpha2_mean = inf
    ns = nsjax.null_space(_gaussian(2, 12, 12) + 4 * jnp.eye(12))
    assert ns.dim == 0
    c = jax.random.uniform(jax.random.key(3), (5, 12), minval=-1, maxval=1)
    with pytest.raises(TrivialNullSpaceError, match="trivial.*nothing can be hidden"):
        nsjax.stego(c, c, ns)
    assert issubclass(TrivialNullSpaceError, ValueError)
    with pytest.raises(TrivialNullSpaceError, match="nothing can be hidden"):
        nsjax.evaluate_stego(lambda x: x[:, :3], ns, c, c, np.zeros(5, int))
    ok = nsjax.null_space(_gaussian(2, 4, 12))
    with pytest.raises(ValueError, match=r"no pairs.*\(0, 12\)"):
        nsjax.evaluate_stego(lambda x: x[:, :3], ok, c[:0], c[:0], np.zeros(0, int))


def test_stego_cover_without_null_component_empty_batch_and_alpha2_shape():
    ns = nsjax.null_space(_gaussian(4, 4, 12))
    k1, k2 = jax.random.split(jax.random.key(5))
    c = jax.random.uniform(k1, (5, 12), minval=-1, maxval=1)
    h = jax.random.uniform(k2, (5, 12), minval=-1, maxval=1)
    with pytest.raises(TrivialNullSpaceError, match="no component in the null space"):
        nsjax.stego(c.at[2].set(0.0), h, ns)  # a mid-grey cover: C_hat = 0
    with pytest.raises(ValueError, match=r"empty batch.*\(0, 12\)"):
        nsjax.stego(c[:0], h[:0], ns)
    with pytest.raises(ValueError, match=r"batch shape \(5,\).*got shape \(3,\)"):
        nsjax.stego(c, h, ns, alpha2=jnp.full((3,), 0.1))
    r = nsjax.stego(c, h, ns, alpha2=jnp.full((5,), 0.1))  # the right shape still works
    assert r.alpha2.shape == (5,)


# ------------------------------------------------- 5. float16 / bfloat16 x through the kernel


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("rank,n,shape", [(32, 784, (28, 28, 1)),
                                          (190, 200, (200,))])  # 190: via the null basis
def test_low_precision_x_projects_like_float64(dtype, rank, n, shape):
    # before: ns.project(x) raised "expected float32 x" from the fused kernel
    ns = nsjax.null_space(_gaussian(6, rank, n), input_shape=shape)
    x = jax.random.uniform(jax.random.key(7), (9,) + shape, minval=-1, maxval=1).astype(dtype)
    out = ns.project(x)
    assert out.shape == x.shape and out.dtype == jnp.float32  # promoted like XLA's matmuls
    basis = ns.null_basis if ns.null_basis is not None else ns.row_basis
    x64 = np.asarray(x.astype(jnp.float32), np.float64).reshape(9, n)
    b64 = np.asarray(basis, np.float64)
    ref = x64 @ b64 @ b64.T
    ref = ref if ns.null_basis is not None else x64 - ref
    # Tolerance: x is exact in float32 (float16/bfloat16 values are float32 values), so the
    # only error is float32 arithmetic, not eps(dtype): two dot products (length n, then
    # length c) per output, each rounding error <= eps32 |term|, random in sign, so they add
    # up like sqrt(n) eps32 max|x| (basis columns are unit vectors); allow 16x that
    # (5.3e-5 at n = 784).  Rounding the output to dtype would instead cost eps(dtype) |x|.
    tol = 16 * np.sqrt(n) * EPS32 * np.abs(x64).max()
    np.testing.assert_allclose(np.asarray(out, np.float64).reshape(9, n), ref, atol=tol)
    for other in (ns.project(x, accurate=True),
                  _nullspace._apply(ns, x, "null", True, kernel=False)):
        np.testing.assert_allclose(np.asarray(other), np.asarray(out), atol=tol)
    if _cpu_kernel.available():
        assert _nullspace.uses_cpu_kernel(ns, dtype)
        assert _cpu_kernel.TARGET in jax.jit(ns.project).lower(x).as_text()
        k_out, finite = _cpu_kernel.project_rows(x.reshape(9, n), basis,
                                                 ns.null_basis is None)
        assert k_out.dtype == jnp.float32 and bool(finite)


# ------------------------------------------------------- 6. long SVDs: cheap paths, warning


@pytest.mark.parametrize("dtype,float64_svd", [(np.float64, None), (np.float32, None),
                                               (np.float32, False), (jnp.bfloat16, None)])
def test_cheap_paths_agree_with_the_full_svd(dtype, float64_svd):
    k1, k2 = jax.random.split(jax.random.key(8))
    with jax.enable_x64(True):
        a = (jax.random.normal(k1, (30, 20), jnp.float64)
             @ jax.random.normal(k2, (20, 50), jnp.float64))
        a = np.asarray(a).astype(dtype) if dtype is not jnp.bfloat16 else a.astype(dtype)
        ns = nsjax.null_space(a, float64_svd=float64_svd)
        s = singular_values(a, float64_svd=float64_svd)
        assert s.shape == (30,) and s.dtype == ns.singular_values.dtype
        # the same SVD without vectors: values agree to the SVD's rounding, ~k eps sigma_max
        eps = float(jnp.finfo(s.dtype).eps)
        np.testing.assert_allclose(s, ns.singular_values, rtol=0, atol=64 * eps * float(s[0]))
        assert matrix_rank(a, float64_svd=float64_svd) == ns.rank
        assert matrix_rank(a, rtol=0.5, float64_svd=float64_svd) == nsjax.null_space(
            a, rtol=0.5, float64_svd=float64_svd).rank
    if dtype is np.float64:
        assert ns.rank == 20  # the planted rank
    if dtype is jnp.bfloat16:
        assert ns.rank == 30  # bfloat16 rounding of the product is a real full-rank matrix


def test_a_large_svd_warns_before_it_starts(monkeypatch):
    a = _gaussian(9, 40, 60)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LargeSVDWarning)
        nsjax.null_space(a)  # 40 * 60 * 40 = 1e5 units: far below the threshold, no warning
        monkeypatch.setattr(_nullspace, "LARGE_SVD_WORK", 1e4)
        # as an error, the warning stops the call: it is raised before the SVD runs
        with pytest.raises(LargeSVDWarning, match=r"\(40, 60\) matrix in float64") as e:
            nsjax.null_space(a)
    msg = str(e.value)
    assert "9.6e+04 units" in msg and "singular_values" in msg and "float64_svd=False" in msg
    assert " s on a CPU" in msg  # the time estimate
    with pytest.warns(LargeSVDWarning, match=r"\(40, 60\) matrix in float32") as rec:
        nsjax.null_space(a, float64_svd=False)
    assert len(rec) == 1
    with pytest.warns(LargeSVDWarning) as rec:
        singular_values(a)
    assert "cheaper" not in str(rec[0].message)  # already the cheap path


@pytest.mark.parametrize("kw", [{"rtol": float("nan")}, {"atol": -1.0}, {"rank": 2.5},
                                {"rank": 37}])
def test_conv_null_space_validates_tolerances_and_ranks(kw):
    k = jax.random.normal(jax.random.key(0), (3, 3, 1, 1))
    with pytest.raises((TypeError, ValueError), match="rtol|atol|rank"):
        nsjax.conv_null_space(k, (8, 8, 1), **kw)  # VALID: m = 36 rows, so rank <= 36


def test_null_space_of_explains_bad_variables_and_models_with_two_inputs():
    class TwoInputs(nn.Module):
        @nn.compact
        def __call__(self, x, y):
            return nn.Dense(10)(x) + nn.Dense(10)(y)

    two = TwoInputs()
    v = two.init(jax.random.key(0), jnp.zeros((1, 8)), jnp.zeros((1, 8)))
    with pytest.raises(ValueError, match="one input.*nsjax.null_space"):
        nsjax.null_space_of(two, v, (8,))
    fc = nsjax.FCNN((8, 4, 2))
    params = nsjax.init_params(fc, jax.random.key(0), (8,))
    with pytest.raises(ValueError, match=r"no 'params' collection.*\{'params': params\}"):
        nsjax.null_space_of(fc, params["params"], (8,))
    with pytest.raises(TypeError, match="variables must be the dict"):
        nsjax.null_space_of(fc, [1, 2], (8,))
