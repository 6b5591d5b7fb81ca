"""Figures: PNG (>= 200 dpi) + vector PDF beside it, ``ax=`` / Figure returns, no backend."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread
from PIL import Image

import nsjax
from nsjax import _plots


def _written(path, min_w=300):
    """The PNG is a real, non-blank image at >= 200 dpi with a PDF of the same stem."""
    assert path.suffix == ".png" and path.is_file()
    img = imread(path)
    assert img.ndim == 3 and img.shape[1] >= min_w
    assert img[..., :3].std() > 0.05  # not a blank canvas
    with Image.open(path) as im:
        dpi = im.info.get("dpi")
    assert dpi is not None and round(dpi[0]) >= 200
    pdf = path.with_suffix(".pdf")
    assert pdf.is_file() and pdf.read_bytes()[:5] == b"%PDF-"
    return img


def test_triplets_pipeline_and_seen(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.uniform(-1, 1, (3, 28, 28, 1))
    pred = np.array([[1, 0.9], [2, 0.8], [3, 0.99]])
    _written(_plots.plot_triplets(tmp_path / "t.png", imgs, imgs, imgs, alpha1=0.2,
                                  alpha2=[0.5, 0.6, 0.7], cover_pred=pred, hidden_pred=pred,
                                  stego_pred=pred, class_names=[str(i) for i in range(10)]))
    _written(_plots.plot_pipeline(tmp_path / "p.png", *imgs, imgs[0], imgs[1], alpha1=0.2,
                                  alpha2=0.5))
    _written(_plots.plot_what_nn_sees(tmp_path / "s.png", imgs, [imgs, -imgs],
                                      names=["net A", "net B"]))
    # no path: the Figure itself, nothing written
    fig = _plots.plot_pipeline(None, *imgs, imgs[0], imgs[1], alpha1=0.2, alpha2=0.5)
    assert isinstance(fig, Figure) and len(fig.axes) == 5


def test_relu_surface(tmp_path):
    model = nsjax.FCNN((2, 1, 3, 1))
    params = nsjax.init_params(model, jax.random.key(0))
    ns = nsjax.null_space_of(model, params, (2,))
    v = np.asarray(ns.basis())[:, 0]
    _written(_plots.plot_relu_surface(tmp_path / "f1.png",
                                      lambda x: model.apply(params, x)[:, 0], v, steps=31))


@pytest.fixture
def beyond_inputs():
    rng = np.random.default_rng(1)
    s = np.sort(rng.uniform(1e-3, 1.0, 100))[::-1]
    spectrum = {"net": {"singular_values": s, "tol": 1e-2, "n": 100, "lower": 10,
                        "upper": 10}}
    fpr = np.r_[0.0, np.sort(rng.uniform(0, 1, 30)), 1.0]
    curves = {"alpha1 = 0.2": (fpr, np.sqrt(fpr), 0.66)}
    first = {"a": np.r_[s[:20], np.zeros(80)], "b": s}
    return spectrum, curves, first


def test_beyond_figures_write_png_and_pdf(tmp_path, beyond_inputs):
    spectrum, curves, first = beyond_inputs
    _written(_plots.plot_spectrum(tmp_path / "spec.png", spectrum,
                                  extra={"float32": spectrum["net"]["singular_values"]}))
    _written(_plots.plot_roc(tmp_path / "roc.png", curves, title="t", fpr_mark=0.01))
    _written(_plots.plot_first_layer_spectra(tmp_path / "fl.png", first, target_dim=80))


def test_beyond_figures_draw_into_given_axes(beyond_inputs):
    spectrum, curves, first = beyond_inputs
    fig = Figure()
    axes = fig.subplots(1, 3)
    assert _plots.plot_spectrum(None, spectrum, ax=axes[0]) is fig
    assert _plots.plot_roc(None, curves, ax=axes[1]) is fig
    assert _plots.plot_first_layer_spectra(None, first, 80, ax=axes[2]) is fig
    assert all(ax.lines for ax in axes)
    assert isinstance(_plots.plot_roc(None, curves), Figure)


def test_importing_nsjax_leaves_the_backend_alone(tmp_path):
    """No ``matplotlib.use`` at import and no pyplot: a user's backend survives, and
    figures are still written."""
    code = (
        "import matplotlib, numpy as np, sys\n"
        "import nsjax, nsjax.cli\n"
        "from nsjax.experiments import certify, detect, remedy\n"
        "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend()\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
        "s = np.linspace(1, 0.1, 10)\n"
        f"p = nsjax.plots.plot_first_layer_spectra({str(tmp_path / 'x.png')!r}, {{'a': s}}, 2)\n"
        "assert p.is_file() and p.with_suffix('.pdf').is_file()\n"
        "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend()\n"
    )
    env = {**os.environ, "MPLBACKEND": "svg", "JAX_PLATFORMS": "cpu"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
