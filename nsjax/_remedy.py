"""Remedy: a first layer with a trivial null space, and what it buys (beyond the paper).

The null space of an FCNN is ``Null(W1)``, of dimension ``n0 - rank(W1) >= n0 - n1``.  A
first layer at least as wide as the input -- the ``(784, 800, 16, 10)`` FCNN -- or a
SAME-padded convolution has (almost surely) a trivial null space: ``Null(f1) = {0}``, so the
paper's steganography has nothing to hide the cover in (with the exact null space,
``C_hat = 0`` and ``S = alpha1 H``).

"Steganography no longer works" must then be tested against the honest attacker, who uses
the *weakest* directions instead, in a space of the same dimension ``d`` (752) as the
vulnerable net's null space, and builds ``S = alpha1 H_perp + alpha2 C_hat`` as before:

* ``"first_layer"`` attack (the issue's): the ``d`` right singular vectors of the first
  layer's matrix with the smallest singular values, ``nsjax.null_space(W1op, rank=n - d)``.
  The cover part is heard by the first layer, attenuated by at most
  ``sigma_{n-d+1} / sigma_max`` (``attack_sigma_rel``).
* ``"jacobian"`` attack (any architecture): the ``d`` weakest right singular
  directions of the stacked Jacobian ``[J_f(x_1); ...; J_f(x_p)]`` at ``p`` training images
  (float64, :func:`nsjax._certify.stacked_jacobian`): the directions the WHOLE network is
  least sensitive to near the data, i.e. an approximate version of the certificate's upper
  bound space.

:func:`compare` measures, on ONE test set and ONE list of cover/hidden pairs (drawn from test
images every compared net classifies correctly at scale 1 and ``alpha1``), for every net and
attack: test accuracy (original / ``alpha1``-rescaled), exact null dimension, attack
dimension, stego success (``argmax f(S) == class(H)``), the rate at which ``f(S)`` returns
the cover's class, the rate at which the hidden cover part ``f(alpha2 C_hat)`` ALONE is
classified as the cover's class (~chance: the net ignores that space), and
``SSIM(S, alpha2 C)``.  :func:`remedy` trains the nets on the same
data first.

Measured results: ``docs/results/remedy.md``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nsjax._certify import first_layer_matrix, stacked_jacobian
from nsjax._experiment import evaluate_stego, make_pairs
from nsjax._first_layer import null_space_of
from nsjax._models import CNN, FCNN, input_shape_of
from nsjax._nullspace import NullSpace, null_space

__all__ = ["ATTACKS", "AttackSpace", "attack_space", "compare", "remedy", "TABLE_KEYS",
           "VULNERABLE_ARCH", "REMEDY_ARCH", "default_models", "first_layer_spectra"]

VULNERABLE_ARCH = (784, 32, 16, 10)
REMEDY_ARCH = (784, 800, 16, 10)
ATTACKS = ("first_layer", "jacobian")

#: keys of every row of the table returned by :func:`compare` / :func:`remedy`.
TABLE_KEYS = (
    "name", "model", "n_params", "accuracy_test", "accuracy_test_rescaled", "null_dim",
    "attack", "attack_dim", "attack_kind", "attack_sigma_rel", "n_pairs", "stego_success",
    "stego_cover_class", "cover_part_cover_class", "hidden_correct_rate", "ssim_scaled_cover",
    "psnr_scaled_cover", "alpha2_mean", "chance",
)


class AttackSpace(NamedTuple):
    """The space an attacker hides the cover in.

    Attributes:
      exact: the exact null space ``Null(f1)`` (package rank rule).
      attack: the space used: for ``"first_layer"``, the exact null space if its dimension
        is at least ``target_dim``, otherwise the ``target_dim`` weakest right singular
        directions of the first layer; for ``"jacobian"``, the ``target_dim`` weakest
        directions of the stacked Jacobian.
      kind: ``"exact"`` or ``"approximate"``.
      sigma_rel: largest singular value (of the first layer, or of the stacked Jacobian) on
        ``attack``, relative to ``sigma_max`` (~0 for an exact null space): how loudly the
        network hears the hidden cover.
    """

    exact: NullSpace
    attack: NullSpace
    kind: str
    sigma_rel: float


def attack_space(model: nn.Module, variables, target_dim: int, input_shape=None, *,
                 attack: str = "first_layer", points=None) -> AttackSpace:
    """The attacker's ``target_dim``-dimensional space for ``model`` (module docstring).

    Args:
      attack: ``"first_layer"`` or ``"jacobian"``.
      points: ``(p, ...)`` inputs for the ``"jacobian"`` attack (e.g. training images).
    """
    input_shape = tuple(input_shape or input_shape_of(model))
    n = math.prod(input_shape)
    exact = null_space_of(model, variables, input_shape)
    rank = n - int(target_dim)
    if attack == "first_layer":
        if exact.dim >= target_dim:
            return AttackSpace(exact, exact, "exact", 0.0)
        w = np.asarray(first_layer_matrix(model, variables, input_shape), np.float32)
    elif attack == "jacobian":
        if points is None:
            raise ValueError("the jacobian attack needs points (e.g. training images)")
        w = stacked_jacobian(model, variables, points, input_shape=input_shape)
    else:
        raise ValueError(f"attack must be one of {ATTACKS}, got {attack!r}")
    if not 0 <= rank <= min(w.shape):
        raise ValueError(f"target_dim {target_dim} impossible for a {w.shape} matrix "
                         f"(needs n - target_dim <= {min(w.shape)})")
    if w.dtype == np.float64:
        with jax.enable_x64(True):
            ns = null_space(jnp.asarray(w), rank=rank, input_shape=input_shape)
            s = np.asarray(ns.singular_values, np.float64)
            rb = np.asarray(ns.row_basis, np.float32)
        approx = NullSpace(row_basis=jnp.asarray(rb), singular_values=jnp.asarray(s, jnp.float32),
                           tol=jnp.float32(0.0), n=n, rank=rank, input_shape=input_shape)
    else:
        approx = null_space(jnp.asarray(w), rank=rank, input_shape=input_shape)
        s = np.asarray(approx.singular_values, np.float64)
    sigma_rel = float(s[rank] / s[0]) if rank < s.size and s[0] > 0 else 0.0
    kind = "exact" if attack == "first_layer" and exact.dim >= target_dim else "approximate"
    return AttackSpace(exact, approx, kind, sigma_rel)


def _model_name(model) -> str:
    if isinstance(model, FCNN):
        return f"FCNN{tuple(model.arch)}"
    if isinstance(model, CNN):
        return (f"CNN({model.kernels}x{model.kernel_size}x{model.kernel_size} "
                f"{model.padding}, hidden {tuple(model.hidden)})")
    return type(model).__name__


def _n_params(variables) -> int:
    return int(sum(np.size(a) for a in jax.tree_util.tree_leaves(variables["params"])))


def compare(entries: dict, test_images, test_labels, *, alpha1: float = 0.2,
            target_dim: int | None = None, n_pairs: int = 1000, key: jax.Array | None = None,
            attacks=("first_layer",), jacobian_points=None,
            n_classes: int | None = None) -> dict:
    """One table: accuracy, null dimension and steganography for several nets, same data.

    Args:
      entries: ``{name: (model, variables)}``.
      test_images, test_labels: the ONE test set all numbers are computed on.
      alpha1: hidden weight (the nets should be trained with ``alpha1``-rescaled copies).
      target_dim: dimension of the attacker's space; default: the largest exact null
        dimension among the nets (752 for the paper's net beside a remedied one).
      n_pairs: cover/hidden pairs (different classes), the same pairs for every net, drawn
        from the test images that EVERY net classifies correctly at scale 1 and ``alpha1``
        (pairs whose ``alpha1 H_perp`` leaves ``[-1, 1]`` in any attack space are dropped
        for all, and counted).
      key: PRNG key for the pairs.
      attacks: subset of :data:`ATTACKS`, one row per net and attack.
      jacobian_points: inputs for the ``"jacobian"`` attack (training images, never test).

    Returns:
      ``{"rows": [...], "alpha1", "target_dim", "n_common_correct", "n_pairs_dropped"}``;
      each row has the keys :data:`TABLE_KEYS` (plus ``"_details"``: per-pair arrays).
    """
    from nsjax._train import evaluate, filter_correct

    key = jax.random.key(0) if key is None else key
    x = np.asarray(test_images, np.float32)
    y = np.asarray(test_labels)
    shape = x.shape[1:]
    n_classes = n_classes or int(y.max()) + 1
    evals, keep = {}, np.ones(y.shape[0], bool)
    for name, (model, variables) in entries.items():
        evals[name] = evaluate(model, variables, x, y, alpha=alpha1)
        keep &= np.asarray(filter_correct(model, variables, x, y, alpha=alpha1))
    if target_dim is None:
        target_dim = max(null_space_of(m, v, shape).dim for m, v in entries.values())
    spaces = {(name, a): attack_space(model, variables, target_dim, shape, attack=a,
                                      points=jacobian_points)
              for name, (model, variables) in entries.items() for a in attacks}
    idx = np.flatnonzero(keep)
    ci, hi, n_dropped = _common_pairs(x, y, idx, spaces.values(), alpha1, n_pairs, key)
    rows = []
    for (name, a), sp in spaces.items():
        model, variables = entries[name]
        rows.append(_table_row(name, model, variables, a, sp, evals[name], x, y, ci, hi,
                               alpha1, n_classes))
    return {"rows": rows, "alpha1": float(alpha1), "target_dim": int(target_dim),
            "n_common_correct": int(idx.size), "n_pairs_dropped": n_dropped}


def _common_pairs(x, y, idx, spaces, alpha1: float, n_pairs: int, key):
    """``n_pairs`` cover/hidden index pairs (different classes) among the test images
    ``idx``, less those whose ``alpha1 H_perp`` leaves ``[-1, 1]`` in any attack space.

    Returns ``(cover_index (P,), hidden_index (P,), number dropped)``.
    """
    if idx.size < 2:
        raise ValueError("fewer than 2 test images are classified correctly by every net")
    ci, hi = make_pairs(key, y[idx], y[idx], n_pairs)
    ci, hi = idx[ci], idx[hi]
    ok = np.ones(ci.size, bool)
    for sp in spaces:
        hp = np.asarray(sp.attack.complement(x[hi])).reshape(ci.size, -1)
        ok &= np.abs(alpha1 * hp).max(axis=1) <= 1.0
    return ci[ok], hi[ok], int((~ok).sum())


def _table_row(name, model, variables, attack, sp: AttackSpace, ev: dict, x, y, ci, hi,
               alpha1: float, n_classes: int) -> dict:
    """One row of :func:`compare`'s table: net ``name`` under ``attack`` on pairs
    ``(ci, hi)`` of the test images ``x`` ``(N, ...)`` with labels ``y`` ``(N,)``."""
    summary, details = evaluate_stego(lambda z: model.apply(variables, z), sp.attack, x[ci],
                                      x[hi], y[hi], alpha1=alpha1)
    # what the net makes of the hidden cover part alone: f(alpha2 C_hat)
    a2 = np.asarray(details["alpha2"]).reshape((-1,) + (1,) * (x.ndim - 1))
    c_part = a2 * np.asarray(sp.attack.project(x[ci]))
    pred_c = np.asarray(model.apply(variables, jnp.asarray(c_part))).argmax(-1)
    return {
        "name": name,
        "model": _model_name(model),
        "n_params": _n_params(variables),
        "accuracy_test": ev["accuracy"],
        "accuracy_test_rescaled": ev["accuracy_rescaled"],
        "null_dim": int(sp.exact.dim),
        "attack": attack,
        "attack_dim": int(sp.attack.dim),
        "attack_kind": sp.kind,
        "attack_sigma_rel": sp.sigma_rel,
        "n_pairs": int(ci.size),
        "stego_success": summary["success_rate"],
        "stego_cover_class": float(np.mean(details["pred"] == y[ci])),
        "cover_part_cover_class": float(np.mean(pred_c == y[ci])),
        "hidden_correct_rate": summary["hidden_correct_rate"],
        "ssim_scaled_cover": summary["ssim_scaled_cover_mean"],
        "psnr_scaled_cover": summary["psnr_scaled_cover_mean"],
        "alpha2_mean": summary["alpha2_mean"],
        "chance": 1.0 / n_classes,
        "_details": {"stego": details["stego"], "pred": details["pred"],
                     "conf": details["conf"], "alpha2": details["alpha2"],
                     "cover_index": ci, "hidden_index": hi},
    }


def default_models(input_shape=(28, 28, 1), n_classes: int = 10, *, cnn: bool = False) -> dict:
    """``{"vulnerable": FCNN(n, 32, 16, C), "wide": FCNN(n, max(800, n), 16, C)}`` and, with
    ``cnn``, ``"cnn_same": CNN(6 kernels 3x3, SAME, hidden (32,))``."""
    n = math.prod(input_shape)
    models = {"vulnerable": FCNN((n, 32, 16, n_classes)),
              "wide": FCNN((n, max(REMEDY_ARCH[1], n), 16, n_classes))}
    if cnn:
        models["cnn_same"] = CNN(input_shape=tuple(input_shape), kernels=6, kernel_size=3,
                                 padding="SAME", hidden=(32,), num_classes=n_classes)
    return models


def remedy(train_images, train_labels, test_images, test_labels, *, models=None, config=None,
           alpha1: float = 0.2, n_pairs: int = 1000, seed: int = 0, variables=None,
           attacks=("first_layer",), n_jacobian_points: int = 300,
           progress: bool = False) -> dict:
    """Train the vulnerable and the remedied nets on the same data and :func:`compare` them.

    Args:
      train_images, train_labels, test_images, test_labels: one dataset's splits.
      models: ``{name: model}`` (default :func:`default_models`: the paper's FCNN and the
        ``(784, 800, 16, 10)`` FCNN).  The first is the vulnerable reference.
      config: :class:`nsjax._train.TrainConfig` for all (default ``TrainConfig(alpha=alpha1,
        seed=seed)``: the recipe, 100 epochs -- pass fewer for a quick run).
      variables: optional ``{name: variables}`` to skip training those nets.
      attacks: see :func:`compare`; the ``"jacobian"`` attack uses the first
        ``n_jacobian_points`` TRAINING images.
      progress: tqdm bars while training.

    Returns:
      :func:`compare`'s dict plus ``"histories"`` (``{name: history or None}``) and
      ``"entries"`` (``{name: (model, variables)}``).
    """
    from nsjax._train import TrainConfig, train

    x = np.asarray(test_images)
    models = models or default_models(x.shape[1:], int(np.max(test_labels)) + 1)
    config = config or TrainConfig(alpha=alpha1, seed=seed)
    variables = dict(variables or {})
    entries, histories = {}, {}
    for name, model in models.items():
        if name in variables:
            v, h = variables[name], None
        else:
            v, h = train(model, train_images, train_labels, config, progress=progress)
        entries[name] = (model, v)
        histories[name] = h
    pts = None
    if "jacobian" in attacks:
        pts = np.asarray(train_images)[:n_jacobian_points]
    out = compare(entries, test_images, test_labels, alpha1=alpha1, n_pairs=n_pairs,
                  key=jax.random.key(seed + 20), attacks=attacks, jacobian_points=pts)
    out["histories"] = histories
    out["entries"] = entries
    return out



def first_layer_spectra(entries: dict, input_shape) -> dict[str, np.ndarray]:
    """Singular values of each net's first-layer matrix (float64, descending).

    Args:
      entries: ``{name: (model, variables)}``.
      input_shape: shape of one input, ``n = prod(input_shape)``.

    Returns:
      ``{"name: model": (n,) singular values}``, padded with zeros to ``n`` (a layer with
      fewer outputs than inputs has at least ``n - outputs`` zero singular values); the
      input of :func:`nsjax.plots.plot_first_layer_spectra`.
    """
    n = math.prod(input_shape)
    out = {}
    for name, (model, variables) in entries.items():
        s = np.linalg.svd(first_layer_matrix(model, variables, input_shape), compute_uv=False)
        out[f"{name}: {_model_name(model)}"] = np.r_[s, np.zeros(max(0, n - s.size))]
    return out
