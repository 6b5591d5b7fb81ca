"""Null-space steganalysis: ROC maths, the protocol, and AUC on real MNIST (held-out data)."""


import jax
import numpy as np
import pytest
from _datapaths import MNIST, need

import nsjax
from nsjax._detect import (
    STATISTICS,
    evaluate_detector,
    fit_detector,
    make_stego_set,
    roc_auc,
    roc_curve,
)
from nsjax._plots import plot_roc


def _auc_bruteforce(neg, pos):
    d = np.asarray(pos)[:, None] - np.asarray(neg)[None, :]
    return float(np.mean((d > 0) + 0.5 * (d == 0)))


def test_roc_auc_matches_pairwise_definition_with_ties():
    rng = np.random.default_rng(0)
    neg = rng.integers(0, 6, 200).astype(float)  # many ties
    pos = rng.integers(2, 9, 150).astype(float)
    assert roc_auc(neg, pos) == pytest.approx(_auc_bruteforce(neg, pos), abs=1e-12)
    assert roc_auc([0, 1], [2, 3]) == 1.0 and roc_auc([2, 3], [0, 1]) == 0.0
    assert roc_auc([1, 1], [1, 1]) == 0.5
    with pytest.raises(ValueError):
        roc_auc([], [1.0])


def test_roc_curve_endpoints_and_area():
    rng = np.random.default_rng(1)
    neg, pos = rng.normal(0, 1, 300), rng.normal(1, 1, 200)
    fpr, tpr, thr = roc_curve(neg, pos)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(neg, pos), abs=1e-12)


@pytest.fixture(scope="module")
def setup():
    need(MNIST / "train-images-idx3-ubyte.gz")
    from nsjax import _data
    from nsjax._train import TrainConfig, train

    tr = _data.load("mnist", "train", data_dir=MNIST, limit=3000)
    te = _data.load("mnist", "test", data_dir=MNIST, limit=1000)
    model = nsjax.FCNN((784, 32, 16, 10))
    v, _ = train(model, tr.images, tr.labels, TrainConfig(epochs=2), progress=False)
    ns = nsjax.null_space_of(model, v, (28, 28, 1))
    return model, v, ns, tr, te


def test_stego_set(setup):
    _, _, ns, _, te = setup
    ss = make_stego_set(ns, te.images, te.labels, te.images, te.labels, alpha1=0.2,
                        key=jax.random.key(0))
    assert ss.images.shape == te.images.shape
    assert np.all(te.labels[ss.hidden_index] != te.labels)  # another class
    assert np.abs(ss.images).max() <= 1.0
    # the network sees alpha1 H_perp only
    np.testing.assert_allclose(np.asarray(ns.complement(ss.images)),
                               0.2 * np.asarray(ns.complement(te.images[ss.hidden_index])),
                               atol=2e-5)


def test_detector_on_held_out_real_mnist(setup):
    """Calibrated on 3,000 TRAINING images, evaluated on 1,000 TEST images (disjoint)."""
    _, _, ns, tr, te = setup
    det = fit_detector(ns, tr.images, fpr=0.01, seed=0)
    assert det.statistic == "consistency"
    assert det.n_fit + det.n_calibration == len(tr) and det.n_calibration == 600
    assert det.calibration_fpr <= 0.01
    ss = make_stego_set(ns, te.images, te.labels, te.images, te.labels, alpha1=0.2,
                        key=jax.random.key(1))
    ev = evaluate_detector(det, te.images, ss.images)
    assert ev["auc"] > 0.9
    assert ev["tpr_at_threshold"] > 0.9
    assert ev["fpr_realised"] < 0.05  # unseen clean test images
    assert ev["n_clean"] == ev["n_stego"] == 1000
    flags = det.predict(np.concatenate([te.images[:50], ss.images[:50]]))
    assert flags.shape == (100,)


@pytest.mark.parametrize("statistic", [s for s in STATISTICS if s != "consistency"])
def test_other_statistics_at_alpha_0_1(setup, statistic):
    _, _, ns, tr, te = setup
    det = fit_detector(ns, tr.images[:1500], statistic=statistic)
    ss = make_stego_set(ns, te.images[:300], te.labels[:300], te.images, te.labels,
                        alpha1=0.1, key=jax.random.key(2))
    ev = evaluate_detector(det, te.images[:300], ss.images)
    assert ev["auc"] > 0.9


def test_errors_and_plot(setup, tmp_path):
    _, _, ns, tr, _ = setup
    with pytest.raises(ValueError, match="statistic"):
        fit_detector(ns, tr.images[:100], statistic="nope")
    with pytest.raises(ValueError, match="class other than"):
        make_stego_set(ns, tr.images[:5], np.zeros(5, int), tr.images[5:10], np.zeros(5, int),
                       alpha1=0.2, key=jax.random.key(0))
    rng = np.random.default_rng(0)
    fpr, tpr, _ = roc_curve(rng.normal(size=50), rng.normal(1, 1, 50))
    p = plot_roc(tmp_path / "roc.png", {"x": (fpr, tpr, 0.7)}, title="t")
    assert p.is_file() and p.with_suffix(".pdf").is_file()
