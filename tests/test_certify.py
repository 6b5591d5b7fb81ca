"""The null-space certificate: lower bound Null(f1), upper bound from stacked Jacobians."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _datapaths import MNIST, need

import nsjax
from nsjax._certify import (
    Certificate,
    certify,
    dead_unit_dim,
    first_layer_matrix,
    plant_cancelling_pair,
    plant_dead_units,
    stacked_jacobian,
)
from nsjax._plots import plot_spectrum

ARCH = (784, 32, 16, 10)


@pytest.fixture(scope="module")
def trained():
    """The paper's FCNN briefly trained on 2,000 real MNIST images (real weights, not init)."""
    need(MNIST / "train-images-idx3-ubyte.gz")
    from nsjax import _data
    from nsjax._train import TrainConfig, train

    ds = _data.load("mnist", "train", data_dir=MNIST, limit=2000)
    model = nsjax.FCNN(ARCH)
    v, hist = train(model, ds.images, ds.labels, TrainConfig(epochs=2, seed=0), progress=False)
    assert hist[-1]["accuracy"] > 0.6  # it did learn something
    return model, v, ds


@pytest.fixture(scope="module")
def random_net():
    model = nsjax.FCNN(ARCH)
    return model, nsjax.init_params(model, jax.random.key(3))


def test_trained_fcnn_bounds_meet(trained):
    model, v, _ = trained
    c = certify(model, v, jax.random.key(0))
    assert isinstance(c, Certificate)
    assert c.lower == c.upper == 752 and c.meets
    # default points: 2 ceil(n / outputs) = 2 ceil(784 / 10) = 158
    assert c.n == 784 and c.n_points == 158 and c.rows == 10 * c.n_points
    s = c.singular_values
    assert s.dtype == np.float64 and np.all(np.diff(s) <= 0)
    # the package's rule on the float64 stack, and a wide gap around the tolerance
    assert c.tol == pytest.approx(max(c.rows, 784) * np.finfo(np.float64).eps * s[0])
    assert s[31] > 1e6 * c.tol and s[32] < 1e-2 * c.tol
    assert c.containment < 1e-4  # Null(W1) lies inside the upper space
    summ = c.summary()
    assert summ["lower"] == 752 and summ["largest_dropped_sigma_rel"] < 1e-14


def test_random_init_bounds_meet(random_net):
    model, v = random_net
    c = certify(model, v, jax.random.key(1), 100)
    assert c.lower == c.upper == 752 and c.meets and c.n_points == 100


def test_float32_stack_carries_rounding_outside_the_row_space(random_net):
    """Why float64: in float32 the stacked rows leave the row space at ~eps32 level."""
    model, v = random_net
    pts = jax.random.uniform(jax.random.key(2), (20, 784), minval=-1.0, maxval=1.0)
    s64 = np.linalg.svd(stacked_jacobian(model, v, pts), compute_uv=False)
    s32 = np.linalg.svd(stacked_jacobian(model, v, pts, x64=False), compute_uv=False)
    assert s64[32] / s64[0] < 1e-14
    assert 1e-11 < s32[32] / s32[0] < 1e-5


@pytest.mark.parametrize("k", [1, 3])
def test_dead_units_enlarge_the_null_space_exactly(trained, k):
    model, v, _ = trained
    planted = plant_dead_units(model, v, k)
    # the input is not modified
    assert float(jnp.abs(v["params"]["Dense_1"]["kernel"][:k]).sum()) > 0
    c = certify(model, planted, jax.random.key(0))
    assert c.lower == 752  # W1 untouched: the lower bound cannot see it
    assert c.upper == 752 + k == 784 - (32 - k)  # by hand
    assert c.upper == dead_unit_dim(model, v, k)
    assert not c.meets


def test_planted_directions_really_are_null(trained):
    """A vector in the upper space but outside Null(W1) leaves f unchanged while W1 v != 0."""
    model, v, ds = trained
    planted = plant_dead_units(model, v, [5, 7])
    c = certify(model, planted, jax.random.key(0))
    assert c.upper == 754
    g = jax.random.normal(jax.random.key(4), (784,))
    u = c.upper_space.project(g)
    w = u - c.lower_space.project(u)  # in the upper space, orthogonal to Null(W1)
    w = w / jnp.linalg.norm(w)
    w1 = first_layer_matrix(model, planted)
    assert np.linalg.norm(w1 @ np.asarray(w)) > 1e-2  # not in Null(W1)
    x = jnp.asarray(ds.images[:32].reshape(32, -1))
    f = jax.jit(lambda z: model.apply(planted, z))
    for a in (1.0, 10.0):
        assert float(jnp.max(jnp.abs(f(x + a * w) - f(x)))) < 1e-3


def test_cancelling_pair(trained):
    model, v, _ = trained
    c = certify(model, plant_cancelling_pair(model, v, 2, 9), jax.random.key(0))
    assert (c.lower, c.upper) == (753, 754)


def test_cnn_valid_one_kernel_meets_at_108():
    model = nsjax.CNN(kernels=1, kernel_size=3, padding="VALID", hidden=(16,))
    v = nsjax.init_params(model, jax.random.key(0))
    c = certify(model, v, jax.random.key(1))
    assert c.lower == c.upper == 108 == 28 * 28 - 26 * 26 and c.meets


def test_cnn_dead_channel():
    model = nsjax.CNN(kernels=2, kernel_size=3, padding="VALID", hidden=(16,))
    v = nsjax.init_params(model, jax.random.key(0))
    c = certify(model, plant_dead_units(model, v, [1]), jax.random.key(1))
    assert c.upper == 108 == dead_unit_dim(model, v, [1])
    assert c.upper > c.lower


def test_data_points_give_a_valid_looser_bound(trained):
    model, v, ds = trained
    c = certify(model, v, jax.random.key(0), 0, data=ds.images[:100])
    assert c.points == "100 data" and c.upper >= c.lower == 752
    both = certify(model, v, jax.random.key(0), 100, data=ds.images[:50])
    assert both.n_points == 150 and both.upper == 752


def test_errors_and_plot(random_net, tmp_path):
    model, v = random_net
    with pytest.raises(ValueError, match="no points"):
        certify(model, v, jax.random.key(0), 0)
    with pytest.raises(ValueError, match="units"):
        plant_dead_units(model, v, [40])
    c = certify(model, v, jax.random.key(0), 40)
    spectra = {"random": {"singular_values": c.singular_values, "tol": c.tol, "n": c.n,
                          "lower": c.lower, "upper": c.upper}}
    p = plot_spectrum(tmp_path / "s.png", spectra, extra={"again": c.singular_values})
    assert p.is_file() and p.stat().st_size > 1000 and p.with_suffix(".pdf").is_file()
