"""One workflow, five kinds of model, two image domains (issue #12's acceptance test).

Null space -> invariance check -> steganography -> certificate, run the same way on a Linen
FCNN, an NNX FCNN, an NNX CNN, a plain-function MLP and an Equinox MLP, with images in the
paper's [-1, 1] and in [0, 1].  Each step is checked against something independent: the
null-space dimension against NumPy's rank of the first kernel, the stego images against the
domain and against the network's output on ``rescale(H)``, the certificate's lower bound
against the null space.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import nsjax

SHAPE = (8, 8, 1)
N = 64
BOUNDS = [(-1.0, 1.0), (0.0, 1.0)]


def _linen_fcnn():
    model = nsjax.FCNN((N, 16, 8, 3))
    variables = nsjax.init_params(model, jax.random.key(0))
    return (model, variables), np.asarray(variables["params"]["Dense_0"]["kernel"]).T


def _nnx_fcnn():
    model = nsjax.nnx.FCNN((N, 16, 8, 3), rngs=nnx.Rngs(1))
    return (model, None), np.asarray(model.Dense_0.kernel[...]).T


def _nnx_cnn():
    model = nsjax.nnx.CNN(input_shape=SHAPE, kernels=1, kernel_size=3, hidden=(8,),
                          num_classes=3, rngs=nnx.Rngs(2))
    return (model, None), np.asarray(nsjax.conv_matrix(model.Conv_0.kernel[...], SHAPE))


def _plain_mlp():
    k1, k2, k3 = jax.random.split(jax.random.key(3), 3)
    params = {"w1": jax.random.normal(k1, (N, 16)) / 8, "b1": 0.1 * jax.random.normal(k2, (16,)),
              "w2": jax.random.normal(k3, (16, 3)) / 4}

    def predict(p, x):  # ONE example of SHAPE
        return jax.nn.relu(x.reshape(-1) @ p["w1"] + p["b1"]) @ p["w2"]

    return (nsjax.as_model(predict, params=params, input_shape=SHAPE), None), \
        np.asarray(params["w1"]).T


def _equinox_mlp():
    mlp = eqx.nn.MLP(N, 3, 16, 2, key=jax.random.key(4))  # (out, in) weights, one example
    return (nsjax.as_model(mlp, input_shape=(N,)), None), np.asarray(mlp.layers[0].weight)


MODELS = {"linen-fcnn": _linen_fcnn, "nnx-fcnn": _nnx_fcnn, "nnx-cnn": _nnx_cnn,
          "plain-mlp": _plain_mlp, "equinox-mlp": _equinox_mlp}


@pytest.fixture(scope="module", params=list(MODELS))
def case(request):
    (model, variables), operator = MODELS[request.param]()
    m = nsjax.as_model(model, variables)
    ns = nsjax.null_space_of(model, variables) if variables is not None else \
        nsjax.null_space_of(model)
    return request.param, m, ns, operator


def _images(key, n, bounds, shape):
    lo, hi = bounds
    return jax.random.uniform(key, (n,) + shape, jnp.float32, lo, hi)


@pytest.mark.parametrize("bounds", BOUNDS, ids=["[-1,1]", "[0,1]"])
def test_same_workflow_on_every_model(case, bounds):
    name, m, ns, operator = case
    shape = tuple(ns.input_shape)
    # 1. the null space: the first kernel's, dimension from NumPy's float64 rank
    assert ns.n == N and ns.dim == N - np.linalg.matrix_rank(operator.astype(np.float64))
    assert ns.dim > 0
    # 2. invariance: probes drawn from the image domain
    x = _images(jax.random.key(10), 32, bounds, shape)
    inv = nsjax.check_invariance(m, ns, jax.random.key(11), n_probes=32, x=x)
    assert inv.passed, f"{name}: {inv.summary()}"
    # 3. steganography: S in the domain, the net sees rescale(H)
    covers = _images(jax.random.key(12), 16, bounds, shape)
    hiddens = _images(jax.random.key(13), 16, bounds, shape)
    r = nsjax.stego(covers, hiddens, ns, bounds=bounds)
    assert bounds[0] <= float(r.image.min()) and float(r.image.max()) <= bounds[1]
    assert np.all(np.asarray(r.alpha2) > 0)
    seen = m(nsjax.rescale(hiddens, 0.2, bounds=bounds))
    got = m(r.image)
    # S - rescale(H) is a null vector of norm <= ~2 sqrt(n); the float32 first layer errs
    # by ~eps32 * sum_j |W1_kj| * max|v| per unit (~1e-6 here) and these small nets gain
    # < 100 on the way out: 1e-4 of the output scale separates that from a wrong null
    # space (an O(1) change)
    scale = 1.0 + float(jnp.abs(seen).max())
    np.testing.assert_allclose(got, seen, rtol=0, atol=1e-4 * scale)
    assert np.array_equal(np.asarray(got).argmax(-1), np.asarray(seen).argmax(-1))
    # 4. the certificate: lower bound = the null space, upper bound from Jacobians at
    # points uniform in the domain.  On [-1, 1] they meet for these generic nets; on
    # [0, 1] a ReLU unit with zero bias and mostly negative weights may never fire, and the
    # upper bound (for f restricted to the domain) is honestly larger
    cert = nsjax.certify(m, jax.random.key(14), bounds=bounds)
    assert cert.lower == ns.dim <= cert.upper <= N, f"{name}: {cert.summary()}"
    if bounds == (-1.0, 1.0):
        assert cert.meets, f"{name}: {cert.summary()}"
    assert cert.containment < 1e-5
    assert f"uniform[{bounds[0]:g},{bounds[1]:g}]" in cert.points
