"""PSNR/SSIM against scikit-image as the independent oracle."""

import jax
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from nsjax._metrics import psnr, ssim


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3)])
def test_against_skimage(shape):
    k1, k2 = jax.random.split(jax.random.key(0))
    x = np.asarray(jax.random.uniform(k1, (3,) + shape, minval=-1, maxval=1))
    y = np.clip(x + 0.3 * np.asarray(jax.random.normal(k2, x.shape)), -1, 1)
    ours_s, ours_p = np.asarray(ssim(x, y)), np.asarray(psnr(x, y))
    for i in range(3):
        ref = structural_similarity(x[i], y[i], data_range=2.0, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, channel_axis=-1)
        assert abs(ours_s[i] - ref) <= 1e-4
        assert abs(ours_p[i] - peak_signal_noise_ratio(x[i], y[i], data_range=2.0)) <= 1e-3


def test_identity_and_batch_shape():
    x = np.asarray(jax.random.uniform(jax.random.key(1), (2, 4, 28, 28, 1), minval=-1, maxval=1))
    np.testing.assert_allclose(ssim(x, x), np.ones((2, 4)), atol=1e-5)
    assert np.isinf(np.asarray(psnr(x, x))).all()
    with pytest.raises(ValueError, match="smaller than"):
        ssim(x[..., :8, :8, :], x[..., :8, :8, :])


def test_data_range_from_bounds():
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, (2, 16, 16, 1)).astype(np.float32)
    y = np.clip(x + 0.1 * rng.standard_normal(x.shape), 0, 1).astype(np.float32)
    p, s = np.asarray(psnr(x, y, bounds=(0, 1))), np.asarray(ssim(x, y, bounds=(0, 1)))
    for i in range(2):  # [0, 1] images: data range 1, as scikit-image takes it
        assert abs(p[i] - peak_signal_noise_ratio(x[i], y[i], data_range=1.0)) <= 1e-3
        ref = structural_similarity(x[i], y[i], data_range=1.0, gaussian_weights=True,
                                    sigma=1.5, use_sample_covariance=False, channel_axis=-1)
        assert abs(s[i] - ref) <= 1e-4
    np.testing.assert_array_equal(psnr(x, y, 1.0), p)
    np.testing.assert_array_equal(psnr(x, y), psnr(x, y, bounds=(-1, 1)))  # default: 2
    with pytest.raises(ValueError, match="contradicts"):
        psnr(x, y, 2.0, bounds=(0, 1))
