"""Detecting null-space stego images from null-space statistics (beyond the paper).

A stego image ``S = alpha1 H_perp + alpha2 C_hat`` (paper, Sec. 3) is built from two
*unrelated* images and rescaled parts: its complement part is ``alpha1`` times a whole
image's, and its null part carries most of its energy.  A defender who knows the network
(hence its null space ``N``, from :func:`nsjax.null_space_of`) can measure this on every
input ``x = x_hat + x_perp`` (``x_hat = P_N x``).  Statistics (higher = more suspicious):

* ``"ratio"``: ``log(||x_hat|| / ||x_perp||)`` -- "most energy in the null space".  One
  sided: it fails when ``alpha1`` is large (``alpha1 = 0.5`` leaves little room for the
  cover, ``alpha2`` is small and the ratio *drops* below that of clean images).
* ``"perp"``: ``-log ||x_perp||`` -- the part the network sees is scaled by ``alpha1``.
* ``"gauss"``: the Mahalanobis distance of ``(log ||x_hat||, log ||x_perp||)`` under a
  Gaussian fitted to clean images: two sided, catches both effects.
* ``"consistency"`` (default): in a natural image the two parts come from the SAME image, so
  ``x_perp`` is predictable from ``x_hat``; in a stego image they come from ``H`` and ``C``.
  A ridge regression ``x_perp ~ x_hat A + b`` is fitted on clean images and the score is
  ``log(||x_perp - x_hat A - b|| / ||x||)``.  It does not rely on the norms, so an attacker
  who rescales ``S`` to natural norms still has to make ``H_perp`` agree with ``C_hat``.

Protocol (:func:`fit_detector`): the fitted parts (Gaussian, regression) use a ``fit``
subset of clean TRAINING images; the threshold is the ``1 - fpr`` quantile (default 99 %:
1 % false-positive rate) of the scores on the remaining, held-out ``calibration`` subset of
the training images.  :func:`evaluate_detector` then scores clean and stego TEST images,
which the detector never saw: ROC AUC (Mann-Whitney U / rank formula, ties averaged), TPR
at the calibrated threshold and the realised FPR on the clean test images.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import numpy as np

from nsjax._nullspace import NullSpace
from nsjax._stego import stego

__all__ = [
    "STATISTICS",
    "Detector",
    "null_features",
    "fit_detector",
    "roc_auc",
    "roc_curve",
    "evaluate_detector",
    "StegoSet",
    "make_stego_set",
]

STATISTICS = ("consistency", "gauss", "ratio", "perp")
_TINY = 1e-30


def _flat(images) -> np.ndarray:
    x = np.asarray(images, np.float32)
    return x.reshape(x.shape[0], -1)


def null_features(ns: NullSpace, images, *, batch_size: int = 8192):
    """``(x_hat, x_perp)`` of ``images`` as float64 ``(N, n)`` arrays (``x = x_hat + x_perp``)."""
    x = _flat(images)
    perp = np.empty(x.shape, np.float64)
    for i in range(0, x.shape[0], batch_size):
        perp[i:i + batch_size] = np.asarray(ns.complement(x[i:i + batch_size]), np.float64)
    return x.astype(np.float64) - perp, perp


@dataclasses.dataclass(frozen=True, eq=False)
class Detector:
    """A fitted detector (from :func:`fit_detector`).

    Attributes:
      ns: the network's null space.
      statistic: one of :data:`STATISTICS`.
      threshold: images with ``score > threshold`` are flagged as stego.
      fpr_target: the false-positive rate the threshold was calibrated for.
      n_fit, n_calibration: clean training images used for fitting / for the threshold.
      calibration_fpr: fraction of calibration scores above the threshold (``<= fpr``).
      params: fitted parameters (``mean``/``cov_inv`` for ``gauss``, ``coef``/``intercept``
        for ``consistency``; empty otherwise).
    """

    ns: NullSpace
    statistic: str
    threshold: float
    fpr_target: float
    n_fit: int
    n_calibration: int
    calibration_fpr: float
    params: dict

    def score(self, images) -> np.ndarray:
        """``(N,)`` scores, higher = more likely a stego image."""
        return _score(self.ns, self.statistic, self.params, images)

    def predict(self, images) -> np.ndarray:
        """``(N,)`` booleans: flagged as stego."""
        return self.score(images) > self.threshold

    def summary(self) -> dict:
        return {"statistic": self.statistic, "threshold": self.threshold,
                "fpr_target": self.fpr_target, "n_fit": self.n_fit,
                "n_calibration": self.n_calibration, "calibration_fpr": self.calibration_fpr}


def _norm_feats(hat, perp):
    return np.stack([np.log(np.linalg.norm(hat, axis=1) + _TINY),
                     np.log(np.linalg.norm(perp, axis=1) + _TINY)], axis=1)


def _score(ns, statistic, params, images) -> np.ndarray:
    hat, perp = null_features(ns, images)
    if statistic == "ratio":
        f = _norm_feats(hat, perp)
        return f[:, 0] - f[:, 1]
    if statistic == "perp":
        return -_norm_feats(hat, perp)[:, 1]
    if statistic == "gauss":
        d = _norm_feats(hat, perp) - params["mean"]
        return np.sqrt(np.einsum("ni,ij,nj->n", d, params["cov_inv"], d))
    if statistic == "consistency":
        res = perp - (hat @ params["coef"] + params["intercept"])
        norm_x = np.linalg.norm(hat + perp, axis=1)
        return np.log(np.linalg.norm(res, axis=1) + _TINY) - np.log(norm_x + _TINY)
    raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")


def _fit(ns, statistic, images, ridge: float) -> dict:
    if statistic in ("ratio", "perp"):
        return {}
    hat, perp = null_features(ns, images)
    if statistic == "gauss":
        f = _norm_feats(hat, perp)
        cov = np.cov(f, rowvar=False) + 1e-12 * np.eye(2)
        return {"mean": f.mean(0), "cov_inv": np.linalg.inv(cov)}
    if statistic == "consistency":
        mh, mp = hat.mean(0), perp.mean(0)
        hc = hat - mh
        gram = hc.T @ hc
        lam = ridge * np.trace(gram) / gram.shape[0]
        coef = np.linalg.solve(gram + lam * np.eye(gram.shape[0]), hc.T @ (perp - mp))
        return {"coef": coef, "intercept": mp - mh @ coef, "ridge": ridge}
    raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")


def fit_detector(ns: NullSpace, clean_images, *, statistic: str = "consistency",
                 fpr: float = 0.01, calibration_fraction: float = 0.2, seed: int = 0,
                 ridge: float = 1e-3) -> Detector:
    """Fit a detector on clean (training) images and calibrate its threshold.

    The images are split at random (``seed``) into a fit part and a held-out calibration
    part (``calibration_fraction``); the threshold is the ``1 - fpr`` quantile of the
    calibration scores (``method="higher"``: at most ``fpr`` of them lie above it).

    Args:
      ns: the network's null space.
      clean_images: ``(N, ...)`` clean images in ``[-1, 1]`` (training split).
      statistic: one of :data:`STATISTICS` (see the module docstring).
      fpr: target false-positive rate.
      calibration_fraction: share of ``clean_images`` held out for the threshold.
      ridge: relative ridge strength for ``consistency`` (times the mean Gram diagonal).
    """
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
    if not 0 < fpr < 1 or not 0 < calibration_fraction < 1:
        raise ValueError("fpr and calibration_fraction must lie in (0, 1)")
    x = _flat(clean_images)
    perm = np.random.default_rng(seed).permutation(x.shape[0])
    n_cal = max(1, int(round(calibration_fraction * x.shape[0])))
    cal, fit = x[perm[:n_cal]], x[perm[n_cal:]]
    if fit.shape[0] < 2:
        raise ValueError(f"need more clean images to fit and calibrate, got {x.shape[0]}")
    params = _fit(ns, statistic, fit, ridge)
    s = _score(ns, statistic, params, cal)
    thr = float(np.quantile(s, 1.0 - fpr, method="higher"))
    return Detector(ns=ns, statistic=statistic, threshold=thr, fpr_target=float(fpr),
                    n_fit=int(fit.shape[0]), n_calibration=int(cal.shape[0]),
                    calibration_fpr=float(np.mean(s > thr)), params=params)


# --------------------------------------------------------------------------- ROC


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties get the mean of their ranks (as ``scipy.stats.rankdata``)."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], xs.size]
    avg = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(x.size, np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def roc_auc(negative_scores, positive_scores) -> float:
    """ROC AUC by the Mann-Whitney rank formula: ``P(score_pos > score_neg)`` (+ half ties).

    ``AUC = (R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg)``, ``R_pos`` the sum of the
    positives' ranks in the pooled sample.
    """
    neg = np.asarray(negative_scores, np.float64).ravel()
    pos = np.asarray(positive_scores, np.float64).ravel()
    if neg.size == 0 or pos.size == 0:
        raise ValueError("roc_auc needs at least one negative and one positive score")
    r = _average_ranks(np.concatenate([neg, pos]))
    return float((r[neg.size:].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))


def roc_curve(negative_scores, positive_scores):
    """``(fpr, tpr, thresholds)``: one point per distinct score, from (0, 0) to (1, 1)."""
    neg = np.asarray(negative_scores, np.float64).ravel()
    pos = np.asarray(positive_scores, np.float64).ravel()
    s = np.concatenate([neg, pos])
    y = np.concatenate([np.zeros(neg.size), np.ones(pos.size)])
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1]
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    fpr = np.r_[0.0, fp / max(neg.size, 1)]
    tpr = np.r_[0.0, tp / max(pos.size, 1)]
    return fpr, tpr, np.r_[np.inf, s[last]]


def evaluate_detector(detector: Detector, clean_images, stego_images) -> dict:
    """AUC, TPR at the calibrated threshold and the realised FPR on UNSEEN images.

    Returns a JSON-able dict: ``auc``, ``tpr_at_threshold``, ``fpr_realised``,
    ``threshold``, ``n_clean``, ``n_stego``, plus the per-image scores under
    ``"_scores"`` (``{"clean": ..., "stego": ...}``; drop it before writing JSON).
    """
    sc = detector.score(clean_images)
    ss = detector.score(stego_images)
    return {
        "statistic": detector.statistic,
        "auc": roc_auc(sc, ss),
        "tpr_at_threshold": float(np.mean(ss > detector.threshold)),
        "fpr_realised": float(np.mean(sc > detector.threshold)),
        "fpr_target": detector.fpr_target,
        "threshold": detector.threshold,
        "n_clean": int(sc.size),
        "n_stego": int(ss.size),
        "_scores": {"clean": sc, "stego": ss},
    }


# --------------------------------------------------------------------------- stego sets


class StegoSet(NamedTuple):
    """Stego images for a set of covers (from :func:`make_stego_set`).

    Attributes:
      images: ``(N, ...)`` stego images ``S`` (one per cover).
      cover_index, hidden_index: ``(N,)`` indices into the covers / hidden candidates.
      alpha2: ``(N,)`` cover weights used (the largest admissible, per pair).
      alpha1: hidden weight.
      n_admissible_hidden: hidden candidates with ``|alpha1 H_perp| <= 1`` (the others
        cannot be hidden at this ``alpha1`` and were never drawn).
    """

    images: np.ndarray
    cover_index: np.ndarray
    hidden_index: np.ndarray
    alpha2: np.ndarray
    alpha1: float
    n_admissible_hidden: int


def make_stego_set(ns: NullSpace, covers, cover_labels, hiddens, hidden_labels, *,
                   alpha1: float, key: jax.Array, batch_size: int = 4096) -> StegoSet:
    """One stego image per cover, hiding a random admissible image of ANOTHER class.

    A hidden image ``H`` is admissible at ``alpha1`` when ``alpha1 H_perp`` lies in
    ``[-1, 1]^n`` (otherwise no ``alpha2`` keeps ``S`` in the domain); hidden images are
    drawn uniformly among the admissible ones whose label differs from the cover's.
    """
    cov = np.asarray(covers, np.float32)
    hid = np.asarray(hiddens, np.float32)
    cl, hl = np.asarray(cover_labels), np.asarray(hidden_labels)
    _, hperp = null_features(ns, hid)
    ok = np.flatnonzero(np.abs(alpha1 * hperp).max(axis=1) <= 1.0)
    if ok.size == 0:
        raise ValueError(f"no hidden image satisfies |alpha1 H_perp| <= 1 at alpha1={alpha1}")
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel())
    hidx = np.empty(cov.shape[0], int)
    by_class = {c: ok[hl[ok] != c] for c in np.unique(cl)}
    for c, cand in by_class.items():
        sel = np.flatnonzero(cl == c)
        if cand.size == 0:
            raise ValueError(f"no admissible hidden image of a class other than {c}")
        hidx[sel] = cand[rng.integers(0, cand.size, sel.size)]
    imgs, a2s = [], []
    for i in range(0, cov.shape[0], batch_size):
        r = stego(cov[i:i + batch_size], hid[hidx[i:i + batch_size]], ns, alpha1=alpha1)
        imgs.append(np.asarray(r.image))
        a2s.append(np.asarray(r.alpha2))
    return StegoSet(np.concatenate(imgs), np.arange(cov.shape[0]), hidx, np.concatenate(a2s),
                    float(alpha1), int(ok.size))

