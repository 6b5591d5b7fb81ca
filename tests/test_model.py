"""The model protocol (nsjax/_model.py) and the traced first-layer route of null_space_of.

References are independent: the null space of the first kernel from a float64 SciPy SVD,
compared through projectors.  Projector distance tolerance: both bases come from SVDs of
the same float32 matrix (n <= 784, rank 32); their projectors agree to ~n * eps32 ~ 1e-4
in the worst entry, so 1e-4 separates "same space" from "different" (entries of O(0.1)).
"""

from __future__ import annotations

import subprocess
import sys

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from flax import nnx

import nsjax

PROJ_TOL = 1e-4


def _projector_ref(operator) -> np.ndarray:
    """``N N^T`` for the float64 SciPy null space of an ``(out, n)`` operator."""
    basis = scipy.linalg.null_space(np.asarray(operator, np.float64))
    return basis @ basis.T


def _assert_same_space(ns: nsjax.NullSpace, operator):
    ref = _projector_ref(operator)
    got = np.asarray(ns.projector(), np.float64)
    assert ns.dim == ref.shape[0] - np.linalg.matrix_rank(np.asarray(operator, np.float64))
    np.testing.assert_allclose(got, ref, atol=PROJ_TOL)


def _nnx_mlp(seed=0):
    return nnx.Sequential(nnx.Linear(64, 8, rngs=nnx.Rngs(seed)), nnx.relu,
                          nnx.Linear(8, 3, rngs=nnx.Rngs(seed + 1)))


def test_nnx_mlp_null_space_equals_kernel_null_space():
    model = _nnx_mlp()
    ns = nsjax.null_space_of(model)  # input shape from the first nnx.Linear
    assert ns.input_shape == (64,) and ns.dim == 56
    _assert_same_space(ns, model.layers[0].kernel[...].T)


def test_nnx_conv_structured_route_matches_dense_svd():
    conv = nnx.Conv(1, 2, (3, 3), padding="VALID", rngs=nnx.Rngs(0))
    ns = nsjax.null_space_of(conv, (8, 8, 1))
    dense = nsjax.conv_matrix(conv.kernel[...], (8, 8, 1))  # (out, n) operator, independent
    _assert_same_space(ns, dense)


def test_equinox_mlp_and_channels_first_conv():
    mlp = eqx.nn.MLP(64, 3, 8, 2, key=jax.random.key(0))
    ns = nsjax.null_space_of(mlp, input_shape=(64,))  # Equinox stores (out, in)
    _assert_same_space(ns, mlp.layers[0].weight)
    conv = eqx.nn.Conv2d(1, 1, 3, key=jax.random.key(1))  # NCHW: the dense route
    ns = nsjax.null_space_of(conv, input_shape=(1, 8, 8))
    assert ns.dim == 64 - 36 and ns.input_shape == (1, 8, 8)


def test_plain_function_with_params_and_explicit_layer():
    k1, k2 = jax.random.split(jax.random.key(0))
    params = {"w1": jax.random.normal(k1, (64, 8)), "w2": jax.random.normal(k2, (8, 3))}

    def predict(p, x):
        return jax.nn.relu(x @ p["w1"]) @ p["w2"]

    ns = nsjax.null_space_of(predict, params=params, input_shape=(64,))
    _assert_same_space(ns, params["w1"].T)
    explicit = nsjax.null_space_of(predict, params=params, input_shape=(64,),
                                   first_layer=nsjax.LinearMap.dense(params["w1"]))
    np.testing.assert_allclose(explicit.projector(), ns.projector(), atol=PROJ_TOL)


def test_wrong_orientation_is_an_error_not_dim_zero():
    w = jax.random.normal(jax.random.key(0), (64, 8))
    with pytest.raises(ValueError, match="layout='out_in'"):
        nsjax.null_space_of(lambda x: jnp.tanh(x @ w), input_shape=(64,),
                            first_layer=nsjax.LinearMap.dense(w.T))
    square = jax.random.normal(jax.random.key(1), (16, 16))
    with pytest.raises(ValueError, match="does not match the first linear map"):
        nsjax.null_space_of(lambda x: jnp.tanh(x @ square), input_shape=(16,),
                            first_layer=nsjax.LinearMap.dense(square, layout="out_in"))


@pytest.mark.parametrize("fn, match", [
    (lambda w: (lambda x: jnp.tanh(x @ w).sum() + x[0]), "read not only by"),
    (lambda w: (lambda x: jnp.tanh(x) @ w), "found no linear map"),
])
def test_untraceable_first_layers_say_what_was_found(fn, match):
    w = jnp.ones((16, 4))
    with pytest.raises(ValueError, match=match) as err:
        nsjax.null_space_of(fn(w), input_shape=(16,))
    assert "LinearMap" in str(err.value)  # says how to pass the first layer


def test_bad_models_and_arguments():
    with pytest.raises(TypeError, match="expected a model"):
        nsjax.as_model(3.0)
    with pytest.raises(ValueError, match="needs its variables"):
        nsjax.as_model(nsjax.FCNN((4, 2)))
    with pytest.raises(ValueError, match="input shape of this callable model is not known"):
        nsjax.null_space_of(lambda x: x @ jnp.ones((4, 2)))
    with pytest.raises(ValueError, match="dense kernel is 2-D"):
        nsjax.LinearMap.dense(jnp.ones((2, 3, 4)))


def test_model_is_a_pytree_one_compile_per_architecture():
    traces = []

    @jax.jit
    def logits(m, x):
        traces.append(1)
        return m(x)

    x = jnp.ones((2, 64))
    a, b = nsjax.as_model(_nnx_mlp(0)), nsjax.as_model(_nnx_mlp(5))
    ya, yb = logits(a, x), logits(b, x)
    assert len(traces) == 1
    np.testing.assert_array_equal(ya, _nnx_mlp(0)(x))
    np.testing.assert_array_equal(yb, _nnx_mlp(5)(x))


def test_linen_model_through_protocol_matches_linen_route():
    model = nsjax.FCNN((64, 8, 3))
    variables = model.init(jax.random.key(0), jnp.zeros((1, 64)))
    direct = nsjax.null_space_of(model, variables, (64,))
    via = nsjax.null_space_of(nsjax.as_model(model, variables))
    np.testing.assert_array_equal(direct.row_basis, via.row_basis)
    m = nsjax.as_model(model, variables)
    np.testing.assert_array_equal(m(jnp.ones((2, 64))), model.apply(variables, jnp.ones((2, 64))))


def test_public_modules_import_and_leave_matplotlib_alone():
    code = ("import matplotlib; matplotlib.use('svg'); import nsjax.data, nsjax.sharding; "
            "from nsjax.data import load; from nsjax.training import train, TrainConfig; "
            "import nsjax.checkpoint, nsjax.plots, nsjax.remedy; "
            "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend(); "
            "import importlib.resources as r; "
            "assert r.files('nsjax').joinpath('py.typed').is_file()")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_linen_module_with_unseen_conv_layout_falls_back_densely():
    class ChannelsFirst(nn.Module):
        @nn.compact
        def __call__(self, x):  # x (B, 1, 8, 8): conv in NCHW through lax directly
            k = self.param("k", nn.initializers.normal(), (1, 1, 3, 3))
            y = jax.lax.conv_general_dilated(x, k, (1, 1), "VALID",
                                             dimension_numbers=("NCHW", "OIHW", "NCHW"))
            return jnp.tanh(y).reshape(x.shape[0], -1)

    model = ChannelsFirst()
    variables = model.init(jax.random.key(0), jnp.zeros((1, 1, 8, 8)))
    ns = nsjax.null_space_of(model, variables, (1, 8, 8))  # no nn.Conv: the traced route
    assert ns.dim == 64 - 36 and ns.input_shape == (1, 8, 8)


def test_first_map_with_a_three_dimensional_kernel():
    # einsum contracting the whole input with a (n, 3, 2) kernel: one dot_general whose
    # kernel is not a matrix, so the map is materialised (not read as a dense kernel);
    # its operator is K reshaped to (n, 6), transposed
    k = jax.random.normal(jax.random.key(3), (10, 3, 2))
    ns = nsjax.null_space_of(lambda x: jnp.tanh(jnp.einsum("i,ijk->jk", x, k)),
                             input_shape=(10,))  # a callable of one example (batched=False)
    _assert_same_space(ns, np.asarray(k).reshape(10, 6).T)
    assert ns.dim == 4
