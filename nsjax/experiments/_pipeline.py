"""The stego pipeline every experiment runs: filter, pair, hide, measure, show, tabulate.

``(model, variables)`` pairs are Flax Linen models with their variables (what
:mod:`nsjax.training` trains); ``apply_fn`` is any batched logits function.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from nsjax import _plots, _train
from nsjax._experiment import evaluate_stego, make_pairs
from nsjax._nullspace import NullSpace
from nsjax.experiments._common import pct, sci

__all__ = ["StegoPairs", "filtered_set", "paper_subset", "stego_pairs", "triplet_figure",
           "stego_table"]


class StegoPairs(NamedTuple):
    """Result of :func:`stego_pairs`.

    Attributes:
      summary: JSON-able metrics (:func:`nsjax.evaluate_stego`).
      details: per-pair arrays (``stego``, ``alpha2``, ``pred``, ``conf``, ``pred_hidden``,
        ``conf_hidden``, ``success``), each ``(P, ...)``.
      cover_index, hidden_index: ``(P,)`` indices into the cover / hidden image arrays.
    """

    summary: dict
    details: dict
    cover_index: np.ndarray
    hidden_index: np.ndarray


def filtered_set(model, variables, images, labels, *, alpha1: float = 0.2) -> dict:
    """The paper's filtered set: images predicted correctly at scale 1 AND at ``alpha1``.

    Returns:
      ``{"mask": (N,) bool, "n", "per_class": list, "mean_confidence",
      "mean_confidence_rescaled"}`` (confidences are mean max-softmax over the kept images,
      ``None`` when none is kept).
    """
    mask = np.asarray(_train.filter_correct(model, variables, images, labels, alpha=alpha1))
    labels = np.asarray(labels)
    n_classes = _train.num_outputs(model) or int(labels.max()) + 1
    out = {"mask": mask, "n": int(mask.sum()),
           "per_class": np.bincount(labels[mask], minlength=n_classes).tolist(),
           "mean_confidence": None, "mean_confidence_rescaled": None}
    if mask.any():
        ev = _train.evaluate(model, variables, np.asarray(images)[mask], labels[mask],
                             alpha=alpha1)
        out["mean_confidence"] = ev["mean_confidence_correct"]
        out["mean_confidence_rescaled"] = ev["mean_confidence_correct_rescaled"]
    return out


def paper_subset(mask, labels, *, per_class: int = 5000) -> dict:
    """The paper's set (Sec. 4.1): the first ``per_class`` kept images of every class.

    Args:
      mask: ``(N,)`` bool, the images kept (:func:`filtered_set`).
      labels: ``(N,)`` int classes.
      per_class: images per class (paper: 5,000, 50,000 in all for 10 classes).

    Returns:
      ``{"mask": (N,) bool, "n", "per_class": list, "short_classes": classes with fewer
      than ``per_class`` kept images (all of theirs are used)}``.
    """
    mask, labels = np.asarray(mask, bool), np.asarray(labels)
    out = np.zeros_like(mask)
    classes = np.unique(labels)
    for c in classes:
        out[np.flatnonzero(mask & (labels == c))[:per_class]] = True
    counts = [int(np.sum(out & (labels == c))) for c in classes]
    return {"mask": out, "n": int(out.sum()), "per_class": counts,
            "short_classes": [int(c) for c, k in zip(classes, counts) if k < per_class]}


def stego_pairs(apply_fn, ns: NullSpace, covers, cover_labels, hiddens, hidden_labels, *,
                n_pairs: int, key: jax.Array, alpha1: float = 0.2,
                alpha2_cap: float | None = None,
                different_classes: bool = True) -> StegoPairs:
    """Draw ``n_pairs`` random cover/hidden pairs, build the stego images and measure them.

    Args:
      apply_fn: batched logits ``(B, *shape) -> (B, classes)``.
      ns: the network's null space.
      covers, cover_labels: ``(Nc, *shape)`` images in ``[-1, 1]`` and ``(Nc,)`` labels.
      hiddens, hidden_labels: ``(Nh, *shape)`` and ``(Nh,)``.
      n_pairs: number of pairs (drawn with replacement, reproducible from ``key``).
      key: PRNG key for the pairs.
      alpha1: hidden-image weight.
      alpha2_cap: cover weight at most this (``nsjax.PAPER_ALPHA2_CAP``: the paper's rule);
        ``None``: the largest admissible.
      different_classes: the hidden image's class differs from the cover's (``False`` for
        covers from another dataset, whose labels mean something else).
    """
    covers, hiddens = np.asarray(covers), np.asarray(hiddens)
    hidden_labels = np.asarray(hidden_labels)
    ci, hi = make_pairs(key, cover_labels, hidden_labels, n_pairs,
                        different_classes=different_classes)
    summary, details = evaluate_stego(apply_fn, ns, covers[ci], hiddens[hi], hidden_labels[hi],
                                      alpha1=alpha1, alpha2_cap=alpha2_cap)
    return StegoPairs(summary, details, ci, hi)


def _pred_conf(apply_fn, images) -> np.ndarray:
    p = np.asarray(jax.nn.softmax(apply_fn(images), axis=-1))
    return np.stack([p.argmax(-1), p.max(-1)], -1)


def triplet_figure(path, apply_fn, covers, hiddens, result: StegoPairs, *, rows: int,
                   alpha1: float, class_names, title: str = "") -> Path:
    """Cover / hidden / stego figure of the first ``rows`` pairs of ``result``.

    Captions: ``f(C)``, ``f(H)`` (the hidden image at full scale) and ``f(S)``, each the
    predicted class and its softmax confidence.  Saved as PNG and PDF; returns the PNG path.
    """
    k = np.arange(min(rows, result.cover_index.size))
    c = np.asarray(covers)[result.cover_index[k]]
    h = np.asarray(hiddens)[result.hidden_index[k]]
    d = result.details
    return _plots.plot_triplets(
        path, c, h, d["stego"][k], alpha1=alpha1, alpha2=d["alpha2"][k],
        cover_pred=_pred_conf(apply_fn, c), hidden_pred=_pred_conf(apply_fn, h),
        stego_pred=np.stack([d["pred"][k], d["conf"][k]], -1), class_names=class_names,
        title=title)


def stego_table(s: dict, *, bounds: tuple[float, float] = (-1.0, 1.0)) -> list[str]:
    """Markdown rows of a stego summary (:func:`nsjax.evaluate_stego`)."""
    return [
        "| metric | value |",
        "|---|---|",
        f"| success rate (argmax f(S) = class of H) | {pct(s['success_rate'])} |",
        f"| success given alpha1 H correct | {pct(s['success_rate_given_hidden_correct'])} |",
        f"| max \\|softmax f(S) - softmax f(alpha1 H)\\|, float32 forward pass | "
        f"{s['agreement_max_abs']:.2e} |",
        f"| the same, float64 forward pass of the same float32 images | "
        f"{sci(s.get('agreement_max_abs_float64_eval'))} |",
        f"| mean confidence of f(S) | {pct(s['confidence_mean'])} |",
        f"| alpha2 mean +- std [min, max] | {s['alpha2_mean']:.3f} +- {s['alpha2_std']:.3f} "
        f"[{s['alpha2_min']:.3f}, {s['alpha2_max']:.3f}] ({s['alpha2_rule']}) |",
        f"| largest admissible alpha2 mean [max]; pairs capped | "
        f"{s['alpha2_admissible_mean']:.3f} [{s['alpha2_admissible_max']:.3f}]; "
        f"{pct(s['alpha2_capped_fraction'])} |",
        f"| PSNR(S, C) / SSIM(S, C) | {s['psnr_cover_mean']:.2f} dB / "
        f"{s['ssim_cover_mean']:.3f} |",
        f"| PSNR(S, alpha2 C) / SSIM(S, alpha2 C) | {s['psnr_scaled_cover_mean']:.2f} dB / "
        f"{s['ssim_scaled_cover_mean']:.3f} |",
        f"| PSNR(S, H) (hidden image visibility) | {s['psnr_hidden_mean']:.2f} dB |",
        f"| max \\|S\\| (domain [{bounds[0]:g}, {bounds[1]:g}]) | {s['stego_max_abs']:.6f} |",
    ]
