"""Quantitative steganography evaluation over many cover/hidden pairs.

The paper shows examples; here every number comes from whole sets of pairs:

* ``success_rate``: ``argmax f(S) == class(H)`` over all pairs;
* ``success_rate_given_hidden_correct``: the same over pairs whose ``rescale(H)`` alone is
  classified correctly (the null-space method promises 100 % there: ``f(S) =
  f(rescale(H))``; ``rescale(H) = alpha1 H`` in the paper's ``[-1, 1]``);
* ``agreement_max_abs``: ``max |softmax f(S) - softmax f(rescale(H))|`` over pairs and classes,
  with the network evaluated in the images' dtype (float32: what a deployment sees);
* ``agreement_max_abs_float64_eval``: the same with the network evaluated in float64 on the
  same images (``jax.enable_x64``), which isolates the construction error of ``S`` from the
  float32 forward pass (which alone errs by ``~eps * sum |W1||S|``, amplified by the net);
* ``confidence_mean``: mean of ``max softmax f(S)``;
* ``alpha2_*``: distribution of the chosen cover weights;
* ``psnr_cover_mean`` / ``ssim_cover_mean``: ``S`` against the cover ``C``;
  ``psnr_scaled_cover_mean`` / ``ssim_scaled_cover_mean``: against ``alpha2 C`` (what ``S``
  imitates, since the cover enters with weight ``alpha2``);
* ``psnr_hidden_mean``: ``S`` against ``H`` (low: the hidden image is not visible);
* ``bounds``, ``stego_min``, ``stego_max``: the image domain ``[lo, hi]`` and the range of
  ``S`` in it (``stego_max_abs``: ``max |S|``).

PSNR and SSIM use the data range ``hi - lo`` of the domain.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from nsjax._metrics import _data_range, psnr, ssim
from nsjax._nullspace import NullSpace
from nsjax._stego import DEFAULT_BOUNDS, TrivialNullSpaceError, _as_bounds, rescale, stego

__all__ = ["make_pairs", "evaluate_stego"]


def make_pairs(key: jax.Array, cover_labels, hidden_labels, n_pairs: int, *,
               different_classes: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Random ``(cover_index, hidden_index)`` pairs, reproducible from ``key``.

    With ``different_classes`` the hidden image's class differs from the cover's (covers
    from another dataset have unrelated labels: pass ``different_classes=False``).

    Returns:
      two ``(n_pairs,)`` int arrays.
    """
    cl, hl = np.asarray(cover_labels), np.asarray(hidden_labels)
    if len(cl) == 0 or len(hl) == 0:
        raise ValueError("need at least one cover and one hidden image to make pairs")
    if different_classes and len(set(cl.tolist()) | set(hl.tolist())) < 2:
        raise ValueError("different_classes=True needs images of at least two classes")
    ci, hi = [], []
    k = key
    while len(ci) < n_pairs:
        k, k1, k2 = jax.random.split(k, 3)
        c = np.asarray(jax.random.randint(k1, (2 * n_pairs,), 0, len(cl)))
        h = np.asarray(jax.random.randint(k2, (2 * n_pairs,), 0, len(hl)))
        keep = cl[c] != hl[h] if different_classes else np.ones(len(c), bool)
        ci.extend(c[keep].tolist())
        hi.extend(h[keep].tolist())
    return np.asarray(ci[:n_pairs]), np.asarray(hi[:n_pairs])


def evaluate_stego(
    apply_fn: Callable[[jax.Array], jax.Array],
    ns: NullSpace,
    covers,
    hiddens,
    hidden_labels,
    *,
    alpha1: float = 0.2,
    alpha2_cap: float | None = None,
    batch_size: int = 4096,
    bounds: tuple[float, float] | None = None,
) -> tuple[dict, dict]:
    """Build ``S`` for every pair and measure what the network and a person see.

    Args:
      apply_fn: batched logits, ``(B, *shape) -> (B, classes)``.
      ns: the network's null space.
      covers, hiddens: ``(P, *shape)`` paired images in ``[lo, hi]`` (``bounds``).
      hidden_labels: ``(P,)`` true classes of the hidden images.
      alpha1: hidden-image weight.
      alpha2_cap: cover weight ``min(largest admissible, alpha2_cap)`` (``None``: the
        largest admissible; :data:`nsjax.PAPER_ALPHA2_CAP`: the paper's ``alpha2 in (0, 1)``).
        The summary reports the largest admissible weights beside the ones used.
      batch_size: pairs per call (limits memory; each call is one jitted batch).
      bounds: ``(lo, hi)``, the image domain, passed to :func:`nsjax.stego` (``S`` stays in
        it) and giving PSNR/SSIM their data range ``hi - lo``; ``None``: the paper's
        ``(-1, 1)`` (:func:`nsjax.stego` warns when the data looks like ``[0, 1]``).

    Returns:
      ``(summary, details)``: summary is a JSON-able dict (module docstring); details holds
      per-pair arrays ``stego``, ``alpha2``, ``pred``, ``conf``, ``pred_hidden``,
      ``conf_hidden``, ``success``.

    Raises:
      ValueError: no pairs, or mismatched counts.
      TrivialNullSpaceError: ``ns.dim == 0`` (or a cover with no null-space component, from
        :func:`nsjax.stego`): nothing can be hidden, instead of ``alpha2_mean = inf``.
    """
    covers = jnp.asarray(covers)
    hiddens = jnp.asarray(hiddens)
    labels = np.asarray(hidden_labels)
    if covers.shape != hiddens.shape or covers.shape[0] != labels.shape[0]:
        raise ValueError(f"covers {covers.shape}, hiddens {hiddens.shape} and labels "
                         f"{labels.shape} must describe the same number of pairs")
    if covers.shape[0] == 0:
        raise ValueError(f"no pairs to evaluate: covers have shape {covers.shape}; expected "
                         f"(P, {', '.join(map(str, ns.input_shape))}) with P >= 1")
    if ns.dim == 0:  # stego would raise too; say it before compiling anything
        raise TrivialNullSpaceError(
            f"the null space is trivial (dim 0, n = {ns.n}): nothing can be hidden, so there "
            "is no steganography to evaluate")
    lo, hi = _as_bounds(DEFAULT_BOUNDS if bounds is None else bounds)
    cat = _run_pairs(apply_fn, ns, covers, hiddens, alpha1, alpha2_cap, batch_size, bounds,
                     _data_range(None, (lo, hi)))
    agree64 = _float64_agreement(apply_fn, cat["stego"],
                                 np.asarray(rescale(hiddens, alpha1, bounds=(lo, hi))), batch_size)
    summary, details = _summarize(cat, labels, alpha1, alpha2_cap)
    summary["agreement_max_abs_float64_eval"] = agree64
    summary["bounds"] = [lo, hi]
    return summary, details


def _run_pairs(apply_fn, ns, covers, hiddens, alpha1, alpha2_cap, batch_size, bounds,
               data_range) -> dict:
    """Stego images, weights, softmaxes and image metrics of all pairs, batch by batch;
    ``{name: concatenated array or None}``."""
    f = jax.jit(lambda x: jax.nn.softmax(apply_fn(x), axis=-1))
    out = {k: [] for k in ("stego", "alpha2", "alpha2_admissible", "probs", "probs_h",
                           "psnr_c", "ssim_c", "psnr_sc", "ssim_sc", "psnr_h")}
    for start in range(0, covers.shape[0], batch_size):
        c = covers[start:start + batch_size]
        h = hiddens[start:start + batch_size]
        r = stego(c, h, ns, alpha1=alpha1, alpha2_cap=alpha2_cap, bounds=bounds)
        s, a2 = r.image, r.alpha2
        m = sum(_as_bounds(DEFAULT_BOUNDS if bounds is None else bounds)) / 2
        sc = m + a2.reshape((-1,) + (1,) * (c.ndim - 1)) * (c - m)  # the weighted cover
        out["stego"].append(np.asarray(s))
        out["alpha2"].append(np.asarray(a2))
        out["alpha2_admissible"].append(np.asarray(r.alpha2_max))
        out["probs"].append(np.asarray(f(s)))
        out["probs_h"].append(np.asarray(f(rescale(h, alpha1, bounds=bounds))))
        if c.ndim == 4:
            for key, x, y, metric in (("psnr_c", s, c, psnr), ("ssim_c", s, c, ssim),
                                      ("psnr_sc", s, sc, psnr), ("ssim_sc", s, sc, ssim),
                                      ("psnr_h", s, h, psnr)):
                out[key].append(np.asarray(metric(x, y, data_range)))
    return {k: np.concatenate(v) if v else None for k, v in out.items()}


def _summarize(cat: dict, labels: np.ndarray, alpha1: float,
               alpha2_cap: float | None) -> tuple[dict, dict]:
    """The summary (module docstring) and per-pair details of :func:`_run_pairs`' output."""
    probs, probs_h = cat["probs"], cat["probs_h"]
    pred, pred_h = probs.argmax(-1), probs_h.argmax(-1)
    success = pred == labels
    hidden_ok = pred_h == labels
    a2 = cat["alpha2"]

    def mean(x):
        return None if x is None else float(np.mean(x))

    summary = {
        "n_pairs": int(labels.shape[0]),
        "alpha1": float(alpha1),
        "success_rate": float(success.mean()),
        "hidden_correct_rate": float(hidden_ok.mean()),
        "success_rate_given_hidden_correct": (float(success[hidden_ok].mean())
                                              if hidden_ok.any() else None),
        "prediction_equals_hidden_prediction": float((pred == pred_h).mean()),
        "agreement_max_abs": float(np.abs(probs - probs_h).max()),
        "agreement_max_abs_float64_eval": None,
        "confidence_mean": float(probs.max(-1).mean()),
        "alpha2_mean": float(a2.mean()),
        "alpha2_std": float(a2.std()),
        "alpha2_min": float(a2.min()),
        "alpha2_quartiles": [float(q) for q in np.quantile(a2, [0.25, 0.5, 0.75])],
        "alpha2_max": float(a2.max()),
        "alpha2_rule": "largest admissible" if alpha2_cap is None else
                       f"min(largest admissible, {alpha2_cap:.8g})",
        "alpha2_admissible_mean": float(cat["alpha2_admissible"].mean()),
        "alpha2_admissible_max": float(cat["alpha2_admissible"].max()),
        "alpha2_capped_fraction": float(np.mean(cat["alpha2_admissible"] > a2)),
        "stego_max_abs": float(np.abs(cat["stego"]).max()),
        "bounds": None,
        "stego_min": float(cat["stego"].min()),
        "stego_max": float(cat["stego"].max()),
        "psnr_cover_mean": mean(cat["psnr_c"]),
        "ssim_cover_mean": mean(cat["ssim_c"]),
        "psnr_scaled_cover_mean": mean(cat["psnr_sc"]),
        "ssim_scaled_cover_mean": mean(cat["ssim_sc"]),
        "psnr_hidden_mean": mean(cat["psnr_h"]),
    }
    details = {
        "stego": cat["stego"], "alpha2": a2, "pred": pred, "conf": probs.max(-1),
        "pred_hidden": pred_h, "conf_hidden": probs_h.max(-1), "success": success,
    }
    return summary, details


def _float64_agreement(apply_fn, stegos: np.ndarray, hidden_scaled: np.ndarray,
                       batch_size: int) -> float | None:
    """``max |softmax f(S) - softmax f(alpha1 H)|`` with ``f`` run in float64 (Flax promotes
    float32 parameters to the float64 input); ``None`` if ``apply_fn`` cannot run so."""
    try:
        with jax.enable_x64(True):
            f = jax.jit(lambda x: jax.nn.softmax(apply_fn(x), axis=-1))
            worst = 0.0
            for start in range(0, stegos.shape[0], batch_size):
                s = jnp.asarray(stegos[start:start + batch_size], jnp.float64)
                h = jnp.asarray(hidden_scaled[start:start + batch_size], jnp.float64)
                worst = max(worst, float(jnp.max(jnp.abs(f(s) - f(h)))))
            return worst
    except (TypeError, ValueError):
        return None
