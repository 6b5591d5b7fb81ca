"""Figures are written as real PNGs with the expected content size."""

import jax
import numpy as np
from matplotlib.image import imread

import nsjax
from nsjax import _plots


def _png_ok(path, min_w=300):
    img = imread(path)
    assert img.ndim == 3 and img.shape[1] >= min_w
    assert img[..., :3].std() > 0.05  # not a blank canvas
    return img


def test_triplets_pipeline_and_seen(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.uniform(-1, 1, (3, 28, 28, 1))
    pred = np.array([[1, 0.9], [2, 0.8], [3, 0.99]])
    _png_ok(_plots.plot_triplets(tmp_path / "t.png", imgs, imgs, imgs, alpha1=0.2,
                                 alpha2=[0.5, 0.6, 0.7], cover_pred=pred, hidden_pred=pred,
                                 stego_pred=pred, class_names=[str(i) for i in range(10)]))
    _png_ok(_plots.plot_pipeline(tmp_path / "p.png", *imgs, imgs[0], imgs[1], alpha1=0.2,
                                 alpha2=0.5))
    _png_ok(_plots.plot_what_nn_sees(tmp_path / "s.png", imgs, [imgs, -imgs],
                                     names=["net A", "net B"]))


def test_relu_surface(tmp_path):
    model = nsjax.FCNN((2, 1, 3, 1))
    params = nsjax.init_params(model, jax.random.key(0))
    ns = nsjax.null_space_of(model, params, (2,))
    v = np.asarray(ns.basis())[:, 0]
    _png_ok(_plots.plot_relu_surface(tmp_path / "f1.png",
                                     lambda x: model.apply(params, x)[:, 0], v))
