"""The null-space certificate: lower bound Null(f1), upper bound from stacked Jacobians."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _datapaths import MNIST, need

import nsjax
from nsjax._certify import (
    Certificate,
    _containment,
    certify,
    dead_unit_dim,
    default_n_points,
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


# ------------------------------------------------------------- data-free checks (issue #16)
#
# A small random net, its Jacobians by hand in float64 NumPy (the chain rule for
# x -> K3^T relu(K2^T relu(K1^T x + b1) + b2) + b3 with Flax (in, out) kernels):
#     J(x) = K3^T D2 K2^T D1 K1^T,   D_l = diag(pre-activation_l > 0).
# float64 throughout, so the stack built by nsjax must agree to rounding: each entry is a
# sum over <= 8 products of float64 numbers of size ~1, error ~ 8 eps64 max|J| ~ 2e-15
# relative; 1e-12 leaves 500x room and is 1e5x below a float32 computation (eps32 = 1.2e-7).

SMALL = (48, 8, 6, 3)  # n = 48, W1 of rank 8: lower = 40


@pytest.fixture(scope="module")
def small_net():
    model = nsjax.FCNN(SMALL)
    return model, nsjax.init_params(model, jax.random.key(11))


def _jacobians_by_hand(variables, pts):
    p = variables["params"]
    k = [np.asarray(p[f"Dense_{i}"]["kernel"], np.float64) for i in range(3)]
    b = [np.asarray(p[f"Dense_{i}"]["bias"], np.float64) for i in range(3)]
    rows = []
    for x in np.asarray(pts, np.float64):
        h1 = x @ k[0] + b[0]
        h2 = np.maximum(h1, 0) @ k[1] + b[1]
        rows.append(k[2].T @ np.diag(h2 > 0) @ k[1].T @ np.diag(h1 > 0) @ k[0].T)
    return np.concatenate(rows)  # (p * 3, 48): point i's Jacobian in rows 3i .. 3i + 2


def test_stacked_jacobian_matches_the_chain_rule_by_hand_with_a_padded_last_chunk(small_net):
    model, v = small_net
    pts = np.asarray(jax.random.uniform(jax.random.key(5), (37, 48), minval=-1, maxval=1))
    ref = _jacobians_by_hand(v, pts)
    # 37 = 2 * 16 + 5: the last chunk is padded to 16 points (repeats of the last), and
    # exactly the 37 * 3 real rows, in point order, must come back
    for mode in ("rev", "fwd"):
        stack = stacked_jacobian(model, v, pts, chunk=16, mode=mode)
        assert stack.dtype == np.float64 and stack.shape == (37 * 3, 48) == ref.shape
        np.testing.assert_allclose(stack, ref, rtol=0, atol=1e-12 * np.abs(ref).max())


def test_certify_decides_the_rank_on_the_float64_stack(small_net):
    model, v = small_net
    pts = np.random.default_rng(2).uniform(-1, 1, (37, 48)).astype(np.float32)
    c = certify(model, v, None, 0, data=pts, chunk=16)  # our points: 37 = 2 * 16 + 5
    s = np.linalg.svd(_jacobians_by_hand(v, pts), compute_uv=False)
    assert c.n_points == 37 and c.rows == 37 * 3 and c.n == 48
    # singular values of the float64 stack (backward stable SVDs: |ds| <= few eps64 s_max;
    # a float32 stack or SVD is off by ~eps32 = 1.2e-7 s_max)
    np.testing.assert_allclose(c.singular_values, s, rtol=0, atol=1e-12 * s[0])
    rtol = max(37 * 3, 48) * np.finfo(np.float64).eps
    assert c.rtol == rtol and c.tol == pytest.approx(rtol * s[0], rel=1e-12)
    # the rank decided with the float64 rule: 8 rows' worth of sigma well above, the rest
    # at the float64 floor (a float32 stack leaves them at ~1e-8 s_max, above this tol)
    assert s[7] > 1e6 * c.tol and s[8] < c.tol
    assert (c.lower, c.upper) == (40, 40) and c.meets
    rb = np.asarray(c.upper_space.row_basis, np.float64)
    b = np.asarray(c.lower_space.basis(), np.float64)
    assert c.containment == pytest.approx(np.linalg.norm(rb.T @ b, 2), abs=1e-6)
    assert c.containment < 1e-5


def test_default_number_of_points_by_hand(small_net):
    # 2 ceil(n / outputs): 2 ceil(48 / 3) = 32 points here; 2 ceil(784 / 10) = 158 for the
    # paper's net, 2 ceil(5 / 10) = 2 when there are more outputs than inputs
    assert (default_n_points(784, 10), default_n_points(48, 3), default_n_points(5, 10)) == (
        158, 32, 2)
    model, v = small_net
    c = certify(model, v, jax.random.key(0), chunk=16)
    assert c.n_points == 32 and c.rows == 96


def test_containment_is_bounded_from_both_sides():
    # lower space: Null(W) of a random (8, 48) W; the "upper row basis" is built by hand
    rng = np.random.default_rng(4)
    w = rng.standard_normal((8, 48))
    lower = nsjax.null_space(jnp.asarray(w, jnp.float32))
    assert lower.dim == 40
    row = np.linalg.qr(w.T)[0]  # (48, 8) orthonormal basis of the row space, float64
    b = np.asarray(lower.basis(), np.float64)
    # (1) the true row space: the null space sticks out only by the float32 basis' rounding
    #     (~eps32 sqrt(48) ~ 1e-6); the NumPy value of ||R^T B||_2 both ways
    inside = _containment(lower, row)
    assert inside == pytest.approx(np.linalg.norm(row.T @ b, 2), abs=1e-12) and inside < 1e-5
    # (2) a row basis holding one unit vector u = 0.6 z + 0.8 q, z in Null(W), q in the row
    #     space: ||R^T B||_2 = |u^T B| = 0.6 exactly, up to the same float32 rounding
    z = b[:, 0] - row @ (row.T @ b[:, 0])
    z /= np.linalg.norm(z)
    u = 0.6 * z + 0.8 * row[:, 0]
    assert _containment(lower, u[:, None]) == pytest.approx(0.6, abs=1e-5)
    # (3) and with z itself added to the row space: containment 1 (the whole of z is in both)
    both = np.linalg.qr(np.concatenate([row, z[:, None]], 1))[0]
    assert _containment(lower, both) == pytest.approx(1.0, abs=1e-5)


def test_planted_nets_without_data(small_net):
    # the counter-examples on the random net: dead units add exactly k dimensions (dead_unit_dim
    # counts them from W1 alone), a cancelling pair moves the lower bound by 1 and the upper
    # by 2 (plant_cancelling_pair's docstring, n - n1 + 1 and n - n1 + 2 for n1 = 8)
    model, v = small_net
    dead = certify(model, plant_dead_units(model, v, [1, 4]), jax.random.key(0), chunk=16)
    assert (dead.lower, dead.upper) == (40, 42) == (40, dead_unit_dim(model, v, [1, 4]))
    pair = certify(model, plant_cancelling_pair(model, v, 2, 5), jax.random.key(0), chunk=16)
    assert (pair.lower, pair.upper) == (48 - 8 + 1, 48 - 8 + 2)


def test_summary_without_data(small_net):
    # mutmut: Certificate.summary had no data-free test ("no tests" for its mutants).  The
    # same 37 points as above; the sigma ratios against NumPy's SVD of the by-hand stack
    import json

    model, v = small_net
    pts = np.random.default_rng(2).uniform(-1, 1, (37, 48)).astype(np.float32)
    c = certify(model, v, None, 0, data=pts, chunk=16)
    s = np.linalg.svd(_jacobians_by_hand(v, pts), compute_uv=False)
    summ = json.loads(json.dumps(c.summary()))  # JSON-able
    assert summ == {
        "lower": 40, "upper": 40, "meets": True, "n": 48, "n_points": 37, "rows": 111,
        "tol": c.tol, "rtol": c.rtol, "lower_tol": c.lower_tol, "containment": c.containment,
        "points": "37 data", "sigma_max": summ["sigma_max"],
        "smallest_kept_sigma_rel": summ["smallest_kept_sigma_rel"],
        "largest_dropped_sigma_rel": summ["largest_dropped_sigma_rel"]}
    # backward-stable float64 SVDs: |ds| <= a few eps64 s_max, so 1e-12 s_max relative to
    # s_max; the kept ratio s_8 / s_1 is >= 1e6 tol / s_max, so 1e-9 relative is ample
    assert summ["sigma_max"] == pytest.approx(s[0], rel=1e-12)
    assert summ["smallest_kept_sigma_rel"] == pytest.approx(s[7] / s[0], rel=1e-9)
    # the largest dropped one sits at the float64 floor, below the rank tolerance
    assert 0 <= summ["largest_dropped_sigma_rel"] < c.rtol


def test_dead_unit_dim_of_a_one_unit_first_layer():
    # mutmut survivor: the "every unit dead" shortcut keyed on np.unique(None).size == 1,
    # i.e. taken for any one-unit layer.  W1 is (1, 4) and nonzero: rank 1, so no dead unit
    # leaves dim 3, the one unit dead leaves all of R^4
    model = nsjax.FCNN((4, 1, 2))
    v = nsjax.init_params(model, jax.random.key(0))
    assert np.abs(np.asarray(v["params"]["Dense_0"]["kernel"])).max() > 0
    assert (dead_unit_dim(model, v, []), dead_unit_dim(model, v, [0])) == (3, 4)


def test_certify_without_a_key_says_which_argument(small_net):
    # mutmut survivor: the message (upper-cased) was never read back
    model, v = small_net
    with pytest.raises(ValueError, match=r"certify needs a PRNG key .*jax\.random\.key\(0\)"):
        certify(model, v, None, 5)


def test_certify_passes_its_rtol_to_the_rank_decision(small_net):
    """A given ``rtol`` decides the upper bound's rank: placed between ``s[3]`` and ``s[4]``
    (relative to ``s[0]``) it keeps exactly 4 singular values of the float64 stack."""
    model, v = small_net
    pts = np.random.default_rng(2).uniform(-1, 1, (37, 48)).astype(np.float32)
    s = np.linalg.svd(_jacobians_by_hand(v, pts), compute_uv=False)
    rtol = float(np.sqrt(s[3] * s[4]) / s[0])
    c = certify(model, v, None, 0, data=pts, chunk=16, rtol=rtol)
    assert c.rtol == rtol and c.tol == pytest.approx(rtol * s[0], rel=1e-12)
    assert c.upper == c.upper_space.dim == 48 - 4 and not c.meets


def test_planting_needs_a_hidden_layer():
    """Both planting helpers need an FCNN with a hidden layer; one hidden layer suffices."""
    flat = nsjax.FCNN((6, 3))
    fv = nsjax.init_params(flat, jax.random.key(0))
    with pytest.raises(TypeError, match="needs an FCNN with at least one hidden layer"):
        plant_cancelling_pair(flat, fv)
    with pytest.raises(ValueError, match="needs an FCNN with at least one hidden layer"):
        plant_dead_units(flat, fv, 1)
    one = nsjax.FCNN((6, 4, 3))
    ov = nsjax.init_params(one, jax.random.key(0))
    k = np.asarray(plant_dead_units(one, ov, [1])["params"]["Dense_1"]["kernel"])
    assert not k[1].any() and k[[0, 2, 3]].all()
    pair = plant_cancelling_pair(one, ov, 0, 2)["params"]
    np.testing.assert_array_equal(pair["Dense_1"]["kernel"][2], -pair["Dense_1"]["kernel"][0])
