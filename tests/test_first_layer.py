"""null_space_of: the partial null space given by a model's first linear layer."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import nsjax


def _proj(basis):
    b = np.asarray(basis, np.float64)
    return b @ b.T


def test_paper_fcnn_has_752_dim_null_space_matching_scipy():
    model = nsjax.FCNN((784, 32, 16, 10))
    params = nsjax.init_params(model, jax.random.key(0))
    ns = nsjax.null_space_of(model, params, (28, 28, 1))
    assert (ns.dim, ns.rank, ns.input_shape) == (752, 32, (28, 28, 1))
    w1 = np.asarray(params["params"]["Dense_0"]["kernel"], np.float64).T  # (32, 784)
    ref = scipy.linalg.null_space(w1)
    assert np.abs(_proj(ns.basis()) - ref @ ref.T).max() <= 1e-5
    x = jax.random.uniform(jax.random.key(1), (16, 28, 28, 1), minval=-1, maxval=1)
    np.testing.assert_allclose(ns.project(x) + ns.complement(x), x, atol=4e-7)


def test_figure1_net_has_one_dim_null_space():
    model = nsjax.FCNN((2, 1, 3, 1))
    params = nsjax.init_params(model, jax.random.key(3))
    ns = nsjax.null_space_of(model, params, (2,))
    assert ns.dim == 1
    w = np.asarray(params["params"]["Dense_0"]["kernel"])[:, 0]
    v = np.asarray(ns.basis())[:, 0]
    assert abs(v @ w) <= 1e-6 * np.linalg.norm(w)


def test_planted_rank_deficit():
    model = nsjax.FCNN((784, 32, 10))
    params = nsjax.init_params(model, jax.random.key(0))
    k1, k2 = jax.random.split(jax.random.key(5))
    low = jax.random.normal(k1, (784, 20)) @ jax.random.normal(k2, (20, 32)) / 28.0
    params = jax.tree.map(lambda a: a, params)
    params["params"]["Dense_0"]["kernel"] = low
    ns = nsjax.null_space_of(model, params, (784,))
    assert (ns.rank, ns.dim) == (20, 764)


@pytest.mark.parametrize("padding,kernels,expected", [("VALID", 1, 108), ("VALID", 6, 0)])
def test_conv_first_layer_matches_dense_construction(padding, kernels, expected):
    model = nsjax.CNN(input_shape=(28, 28, 1), kernels=kernels, padding=padding)
    params = nsjax.init_params(model, jax.random.key(2))
    ns = nsjax.null_space_of(model, params, (28, 28, 1))
    assert ns.dim == expected
    # independent dense construction: explicit sliding-window matrix, scipy null space
    k = np.asarray(params["params"]["Conv_0"]["kernel"], np.float64)  # (3, 3, 1, K)
    rows = []
    for c in range(kernels):
        for i in range(26):
            for j in range(26):
                img = np.zeros((28, 28))
                img[i:i + 3, j:j + 3] = k[:, :, 0, c]
                rows.append(img.reshape(-1))
    ref = scipy.linalg.null_space(np.array(rows), rcond=1e-6)
    assert ref.shape[1] == expected
    if expected:
        assert np.abs(_proj(ns.basis()) - ref @ ref.T).max() <= 1e-5


def test_conv_bias_does_not_change_null_space():
    with_bias = nsjax.CNN(kernels=1, use_bias=True)
    p = nsjax.init_params(with_bias, jax.random.key(0))
    p["params"]["Conv_0"]["bias"] = jnp.array([3.0])
    no_bias = nsjax.CNN(kernels=1, use_bias=False)
    q = {"params": {k: dict(v) for k, v in p["params"].items()}}
    del q["params"]["Conv_0"]["bias"]
    a = nsjax.null_space_of(with_bias, p, (28, 28, 1))
    b = nsjax.null_space_of(no_bias, q, (28, 28, 1))
    assert a.dim == b.dim == 108
    np.testing.assert_allclose(a.projector(), b.projector(), atol=1e-5)


class _TanhFirst(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = jnp.tanh(x.reshape(x.shape[0], -1))
        return nn.Dense(4)(x)


class _NormFirst(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(4)(nn.LayerNorm()(x))


@pytest.mark.parametrize("cls,msg", [(_TanhFirst, "does not receive the model input"),
                                     (_NormFirst, "LayerNorm.*not linear")])
def test_nonlinear_first_operation_is_an_error(cls, msg):
    model = cls()
    params = model.init(jax.random.key(0), jnp.zeros((1, 6)))
    with pytest.raises(ValueError, match=msg):
        nsjax.null_space_of(model, params, (6,))


def test_generic_linen_model_with_dense_first():
    class Mlp(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(nn.relu(nn.Dense(2)(x)))

    model = Mlp()
    params = model.init(jax.random.key(0), jnp.zeros((1, 5)))
    assert nsjax.null_space_of(model, params, (5,)).dim == 3


class _FlatDense(nn.Module):
    """Drops the batch axis before its first layer: the Dense sees one ``(n,)`` vector."""

    @nn.compact
    def __call__(self, x):
        return nn.Dense(2)(nn.relu(nn.Dense(5)(x.reshape(-1))))


def test_first_layer_that_sees_an_unbatched_input():
    # the layer's own input shape is (n,), not (1, n): the null space is still Null(W1) over
    # the model's input shape, against SciPy's float64 null space of the kernel (n = 12 <=
    # 784, projector entries agree to ~n * eps32, so 1e-5)
    model = _FlatDense()
    variables = model.init(jax.random.key(0), jnp.zeros((1, 3, 4)))
    ns = nsjax.null_space_of(model, variables, (3, 4))
    # Dense(2) is built first, so the layer on the input is Dense_1
    kernel = np.asarray(variables["params"]["Dense_1"]["kernel"], np.float64)  # (12, 5)
    ref = scipy.linalg.null_space(kernel.T)
    assert (ns.dim, tuple(ns.input_shape)) == (ref.shape[1], (3, 4))
    np.testing.assert_allclose(ns.projector(), ref @ ref.T, atol=1e-5)


class _SkipAdd(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(4)(nn.relu(nn.Dense(4)(x))) + x


def test_second_reader_message_names_the_model():
    model = _SkipAdd()
    variables = model.init(jax.random.key(0), jnp.zeros((1, 4)))  # Dense_1 reads x
    with pytest.raises(ValueError, match=r"the input of _SkipAdd is read not only by its "
                                         r"first linear map \(Dense_1\)"):
        nsjax.null_space_of(model, variables, (4,))


def test_linen_route_itself_gives_the_kernel_null_space():
    # the Linen route alone (null_space_of falls back to the traced route when it raises a
    # ValueError, which would hide a broken Linen route): Null(W1) against SciPy
    from nsjax._first_layer import _linen_null_space

    model = nsjax.FCNN((20, 6, 3))
    variables = nsjax.init_params(model, jax.random.key(0))
    ns = _linen_null_space(model, variables, (20,), None, 0.0)
    ref = scipy.linalg.null_space(np.asarray(variables["params"]["Dense_0"]["kernel"],
                                             np.float64).T)
    assert ns.dim == ref.shape[1] == 14
    np.testing.assert_allclose(ns.projector(), ref @ ref.T, atol=1e-5)


def test_first_layer_inside_a_custom_jvp_function_is_found():
    # custom_jvp_call keeps its body in the "call_jaxpr" parameter (pjit: "jaxpr")
    w = jax.random.normal(jax.random.key(1), (12, 4))

    @jax.custom_jvp
    def layer(x):
        return jnp.tanh(x @ w)

    @layer.defjvp
    def _layer_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        y = layer(x)
        return y, (1 - y * y) * (t @ w)

    ns = nsjax.null_space_of(layer, input_shape=(12,))
    ref = scipy.linalg.null_space(np.asarray(w, np.float64).T)
    assert ns.dim == ref.shape[1] == 8
    np.testing.assert_allclose(ns.projector(), ref @ ref.T, atol=1e-5)


def test_messages_name_where_and_how_many_other_readers():
    w = jnp.ones((10, 3))

    def squared_first(x):
        with jax.named_scope("square"):
            y = x * x
        return y @ w

    with pytest.raises(ValueError, match=r"mul \(multiplies the input by itself\) in square"):
        nsjax.null_space_of(squared_first, input_shape=(10,))
    def readers(k):  # the first layer and k more readers of the input (x[i])
        return lambda x: jnp.tanh(x @ w).sum() + sum(x[i] for i in range(k))

    with pytest.raises(ValueError, match=r"but also by: .* and 1 more"):
        nsjax.null_space_of(readers(5), input_shape=(10,))  # four listed, one counted
    with pytest.raises(ValueError, match="read not only") as err:
        nsjax.null_space_of(readers(4), input_shape=(10,))
    assert "more" not in str(err.value)
    with pytest.raises(ValueError, match=r"could not trace .* input of shape \(10,\)"):
        nsjax.null_space_of(lambda x: x.reshape(7, -1) @ w, input_shape=(10,))


def test_weights_computed_from_constants_and_input_casts():
    """Constants computed from constants are folded (a transposed or cast weight inside the
    function is still a known kernel); a float cast of the input is a relayout, an integer
    cast is a non-linear reader and an error that names it."""
    w = np.random.default_rng(3).standard_normal((4, 9)).astype(np.float32)  # (out, in)
    ref = scipy.linalg.null_space(w.astype(np.float64))
    for fn in (lambda x: x @ jnp.asarray(w).T,
               lambda x: x.astype(jnp.bfloat16) @ jnp.asarray(w).T.astype(jnp.bfloat16)):
        ns = nsjax.null_space_of(fn, input_shape=(9,))
        assert ns.dim == 5
        p = np.asarray(ns.basis(), np.float64)
        tol = 1e-5 if fn(jnp.zeros((1, 9))).dtype == jnp.float32 else 1e-2  # bfloat16 W
        np.testing.assert_allclose(p @ p.T, ref @ ref.T, atol=tol)
    with pytest.raises(ValueError, match="convert_element_type"):
        nsjax.null_space_of(lambda x: x.astype(jnp.int32).astype(jnp.float32) @ w.T,
                            input_shape=(9,))


def test_nhwc_conv_takes_the_structured_route():
    """An NHWC / HWIO conv on the batch-1 trace is read as a conv (its parameters from the
    jaxpr), not materialised as a dense matrix."""
    model = nn.Conv(3, (3, 3), padding="VALID")
    v = model.init(jax.random.key(0), jnp.zeros((1, 6, 7, 2)))
    lm = nsjax.find_first_map(nsjax.as_model(model, v), (6, 7, 2))
    assert lm.kind == "conv" and tuple(np.shape(lm.kernel)) == (3, 3, 2, 3)


def test_skip_connection_message_says_how_to_pass_the_layer():
    w = np.ones((9, 4), np.float32)
    with pytest.raises(ValueError, match=r"nsjax\.null_space\(kernel\.T, input_shape=\.\.\.\) "
                                         r"for a Flax \(in, out\) kernel"):
        nsjax.null_space_of(lambda x: jnp.concatenate([x @ w, x], -1), input_shape=(9,))
