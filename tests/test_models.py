"""Model families: shapes, specs, activations."""

import jax
import jax.numpy as jnp
import pytest

import nsjax


def test_fcnn_shapes_flat_and_images():
    model = nsjax.FCNN((784, 32, 16, 10), activation="sigmoid")
    params = nsjax.init_params(model, jax.random.key(0))
    shapes = jax.tree.map(jnp.shape, params["params"])
    assert shapes["Dense_0"]["kernel"] == (784, 32) and shapes["Dense_2"]["kernel"] == (16, 10)
    x = jnp.zeros((2, 3, 28, 28, 1))
    assert model.apply(params, x).shape == (2, 3, 10)
    assert model.apply(params, x.reshape(6, 784)).shape == (6, 10)
    with pytest.raises(ValueError, match="784"):
        model.apply(params, jnp.zeros((2, 700)))


@pytest.mark.parametrize("padding,stride,pool", [("VALID", 1, 0), ("SAME", 1, 2), ("VALID", 2, 0)])
def test_cnn_shapes(padding, stride, pool):
    model = nsjax.CNN(input_shape=(32, 32, 3), kernels=4, padding=padding, stride=stride,
                      pool=pool, hidden=(8,), num_classes=5)
    params = nsjax.init_params(model, jax.random.key(0))
    assert model.apply(params, jnp.zeros((7, 32, 32, 3))).shape == (7, 5)
    assert model.apply(params, jnp.zeros((32, 32, 3))).shape == (5,)


def test_spec_round_trip():
    for model in [nsjax.FCNN((784, 32, 16, 10)), nsjax.CNN(kernels=2, hidden=(16, 8))]:
        assert nsjax.from_spec(nsjax.spec(model)) == model
    with pytest.raises(ValueError, match="unknown fields"):
        nsjax.from_spec({"family": "FCNN", "arch": [4, 2], "depth": 3})


def test_parse_arch_and_activation_errors():
    assert nsjax.parse_arch("784, 32,16,10") == (784, 32, 16, 10)
    for bad in ["784", "a,b", "784,0,10"]:
        with pytest.raises(ValueError):
            nsjax.parse_arch(bad)
    with pytest.raises(ValueError, match="activation"):
        nsjax.init_params(nsjax.FCNN((4, 2), activation="tanh"), jax.random.key(0))


@pytest.mark.parametrize("kw", [{"arch": (784, 32, 16, 10)},
                                {"input_shape": (12, 12, 3), "kernels": 4, "padding": "SAME",
                                 "pool": 2, "hidden": (8,), "num_classes": 5},
                                {"input_shape": (12, 12, 3), "kernels": 2, "stride": 2}])
def test_nnx_twins_compute_the_linen_function(kw):
    from flax import nnx

    from nsjax._models import NNXCNN, NNXFCNN

    nnx_cls, linen_cls = (NNXFCNN, nsjax.FCNN) if "arch" in kw else (NNXCNN, nsjax.CNN)
    m = nnx_cls(**kw, rngs=nnx.Rngs(0))
    params = nnx.to_pure_dict(nnx.state(m))  # the Linen parameter tree
    lin = linen_cls(**kw)
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(
        jnp.shape, nsjax.init_params(lin, jax.random.key(0))["params"])
    x = jax.random.uniform(jax.random.key(1), (3,) + nsjax.input_shape_of(m), minval=-1)
    assert jnp.array_equal(m(x), lin.apply({"params": params}, x))
    s = nsjax.spec(m)
    assert s["api"] == "nnx" and "api" not in nsjax.spec(lin)
    assert nsjax.spec(nsjax.from_spec(s)) == s


def test_spec_of_a_custom_model_names_its_class():
    import flax.linen as nn

    class Mine(nn.Module):
        width: int = 3

        @nn.compact
        def __call__(self, x):
            return nn.Dense(self.width)(x)

    s = nsjax.spec(Mine())
    assert s["family"] == "custom" and s["api"] == "linen" and s["fields"] == {"width": 3}
    assert s["class"].endswith(":test_spec_of_a_custom_model_names_its_class.<locals>.Mine")
    with pytest.raises(ValueError, match="custom linen model.*pass the model"):
        nsjax.from_spec(s)
