"""Pairing and the quantitative stego evaluation."""

import warnings

import jax
import numpy as np
import pytest

import nsjax
from nsjax._experiment import evaluate_stego, make_pairs


def test_make_pairs_reproducible_and_different_classes():
    cl = np.arange(100) % 10
    hl = (np.arange(50) * 3) % 10
    a = make_pairs(jax.random.key(0), cl, hl, 500)
    b = make_pairs(jax.random.key(0), cl, hl, 500)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[0].shape == (500,) and np.all(cl[a[0]] != hl[a[1]])
    with pytest.raises(ValueError, match="two classes"):
        make_pairs(jax.random.key(0), np.zeros(3), np.zeros(3), 5)


@pytest.fixture(scope="module")
def net():
    model = nsjax.FCNN((784, 32, 16, 10))
    params = nsjax.init_params(model, jax.random.key(0))
    return model, params, nsjax.null_space_of(model, params, (28, 28, 1))


def test_evaluate_stego_on_random_net(net):
    model, params, ns = net
    k1, k2 = jax.random.split(jax.random.key(1))
    c = jax.random.uniform(k1, (40, 28, 28, 1), minval=-1, maxval=1)
    h = jax.random.uniform(k2, (40, 28, 28, 1), minval=-1, maxval=1)
    pred_h = np.asarray(model.apply(params, 0.2 * h).argmax(-1))
    summary, details = evaluate_stego(lambda x: model.apply(params, x), ns, c, h, pred_h,
                                      batch_size=16)
    # labels = the net's own prediction of alpha1 H, so every pair must succeed
    assert summary["n_pairs"] == 40 and summary["hidden_correct_rate"] == 1.0
    assert summary["success_rate"] == 1.0 and summary["agreement_max_abs"] <= 1e-5
    # float64 forward pass of the float32 images: only the construction error of S remains
    assert summary["agreement_max_abs_float64_eval"] <= 1e-5
    assert summary["stego_max_abs"] <= 1.0
    assert details["stego"].shape == (40, 28, 28, 1)
    assert 0 < summary["ssim_scaled_cover_mean"] <= 1


def test_evaluate_stego_in_unit_range(net):
    model, params, ns = net
    rng = np.random.default_rng(3)
    c, h = rng.uniform(0.0, 1.0, (2, 8, 28, 28, 1)).astype(np.float32)
    # the labels: what the net says of the hidden image as it sees it, 0.5 + 0.2 (h - 0.5)
    pred_h = np.asarray(model.apply(params, 0.5 + 0.2 * (h - 0.5)).argmax(-1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # bounds given: no [0, 1]-looking-data warning
        summary, details = evaluate_stego(lambda x: model.apply(params, x), ns, c, h, pred_h,
                                          bounds=(0, 1))
    assert summary["bounds"] == [0.0, 1.0] and summary["success_rate"] == 1.0
    assert 0.0 <= summary["stego_min"] and summary["stego_max"] <= 1.0
    s = details["stego"]
    mse = np.mean((s - c) ** 2, axis=(1, 2, 3), dtype=np.float64)
    # PSNR with the data range hi - lo = 1 of [0, 1]
    assert abs(summary["psnr_cover_mean"] - np.mean(10 * np.log10(1.0 / mse))) <= 1e-3
