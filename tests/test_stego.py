"""Null-space steganography: S = alpha1 H_perp + alpha2 C_hat (paper Sec. 3)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nsjax
from nsjax._stego import DomainError, reveal, stego


@pytest.fixture(scope="module")
def net():
    model = nsjax.FCNN((784, 32, 16, 10))
    params = nsjax.init_params(model, jax.random.key(0))
    return model, params, nsjax.null_space_of(model, params, (28, 28, 1))


def _images(seed, n=64):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return (jax.random.uniform(k1, (n, 28, 28, 1), minval=-1, maxval=1),
            jax.random.uniform(k2, (n, 28, 28, 1), minval=-1, maxval=1))


def test_network_sees_only_the_hidden_image(net):
    model, params, ns = net
    c, h = _images(0)
    r = stego(c, h, ns)
    f = lambda x: jax.nn.softmax(model.apply(params, x))  # noqa: E731
    # float32 softmax of two inputs that differ by a null vector of norm ~10: 1e-5 margin
    assert np.abs(f(r.image) - f(0.2 * h)).max() <= 1e-5
    np.testing.assert_allclose(reveal(r.image, ns), 0.2 * ns.complement(h), atol=2e-6)


def test_alpha2_is_maximal_and_in_domain(net):
    _, _, ns = net
    c, h = _images(1)
    r = stego(c, h, ns)
    assert r.alpha2.shape == (64,)
    assert float(jnp.abs(r.image).max()) <= 1.0
    s_up = 0.2 * ns.complement(h) + (1.01 * r.alpha2)[:, None, None, None] * ns.project(c)
    assert bool(jnp.all(jnp.abs(s_up).reshape(64, -1).max(-1) > 1.0))


def test_batch_shapes_and_explicit_alpha2(net):
    _, _, ns = net
    c, h = _images(2, 6)
    r = stego(c.reshape(2, 3, 28, 28, 1), h.reshape(2, 3, 28, 28, 1), ns)
    assert r.image.shape == (2, 3, 28, 28, 1) and r.alpha2.shape == (2, 3)
    flat = stego(c.reshape(6, 784), h.reshape(6, 784), ns, alpha2=0.1)
    np.testing.assert_allclose(flat.alpha2, 0.1)
    with pytest.raises(DomainError, match="out of \\[-1, 1\\]"):
        stego(c, h, ns, alpha2=5.0)


@pytest.mark.parametrize("bad,err", [(2.0, DomainError), (np.nan, DomainError)])
def test_inputs_outside_domain_rejected(net, bad, err):
    _, _, ns = net
    c, h = _images(3, 2)
    with pytest.raises(err):
        stego(c.at[0, 0, 0, 0].set(bad), h, ns)


def test_shape_and_dtype_errors(net):
    _, _, ns = net
    c, h = _images(4, 2)
    with pytest.raises(ValueError, match="same shape"):
        stego(c, h[:1], ns)
    with pytest.raises(TypeError, match="floating"):
        stego(np.zeros((2, 28, 28, 1), np.uint8), h, ns)
    with pytest.raises(ValueError, match="alpha1"):
        stego(c, h, ns, alpha1=0.0)
