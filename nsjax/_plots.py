"""Every figure of nsjax: the paper's figures and those of the experiments beyond it.

* :func:`plot_triplets` -- cover / hidden / stego with alpha1, alpha2, predictions (Figs 3-6).
* :func:`plot_pipeline` -- the decomposition C -> C_hat, H -> H_perp -> S (Fig 2).
* :func:`plot_what_nn_sees` -- images next to their complement component (Figs 10-11).
* :func:`plot_relu_surface` -- surface + contour of a (2, 1, 3, 1) ReLU net (Fig 1).
* :func:`plot_spectrum` -- singular values of stacked Jacobians (the null-space certificate).
* :func:`plot_roc` -- ROC curves of null-space stego detectors.
* :func:`plot_first_layer_spectra` -- first-layer singular values of several nets (remedy).

This module imports only NumPy and matplotlib and takes plain arrays and dicts.  Figures are
built on :class:`matplotlib.figure.Figure` directly (no ``pyplot``): no backend is selected
and a user's backend is left alone.  Each function returns the
:class:`~matplotlib.figure.Figure` when ``path`` is ``None``; given a path it writes a PNG at
:data:`DPI` dpi AND a vector PDF beside it (same stem) and returns the PNG path.  The
single-panel plots also take ``ax=`` to draw into an existing axes.

Images are ``(H, W, C)`` arrays in ``[-1, 1]`` shown on a fixed grey/colour scale; parts that
are not images (``C_hat``, ``H_perp``) are shown on their own symmetric scale, as stated in
each panel.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

__all__ = ["DPI", "plot_triplets", "plot_rescaled", "plot_pipeline", "plot_what_nn_sees",
           "plot_relu_surface", "plot_spectrum", "plot_roc", "plot_first_layer_spectra", "save"]

#: resolution of the PNG files (the PDF beside each is vector).
DPI = 200


def _show(ax, img, title=None, *, fixed=True, fontsize=8):
    img = np.asarray(img, np.float64)
    if fixed:
        disp = (np.clip(img, -1, 1) + 1) / 2  # already in [-1, 1]; clip only guards display
    else:  # own symmetric scale
        m = max(float(np.abs(img).max()), 1e-12)
        disp = (img / m + 1) / 2
    if disp.shape[-1] == 1:
        ax.imshow(disp[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(disp, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=fontsize)


def save(fig: Figure, path) -> Path:
    """Write ``fig`` as ``path`` (PNG, :data:`DPI` dpi) and as a PDF of the same stem.

    Returns the PNG path.
    """
    path = Path(path).with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    fig.savefig(path.with_suffix(".pdf"), bbox_inches="tight")
    return path


def _finish(fig: Figure, path):
    return fig if path is None else save(fig, path)


def _axes(ax, figsize):
    """``(figure, axes)``: ``ax`` and its figure, or a new one-panel figure."""
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize)
    return fig, fig.add_subplot()


def plot_triplets(path, covers, hiddens, stegos, *, alpha1: float, alpha2: Sequence[float],
                  cover_pred, hidden_pred, stego_pred, class_names: Sequence[str],
                  title: str = ""):
    """Rows of (cover, hidden, stego), each annotated with prediction and confidence.

    ``covers``, ``hiddens``, ``stegos`` are ``(rows, H, W, C)``; ``*_pred`` are
    ``(rows, 2)`` arrays of (class index, confidence); ``alpha2`` is ``(rows,)``.
    """
    rows = len(covers)
    fig = Figure(figsize=(6.6, 2.25 * rows))
    axes = fig.subplots(rows, 3, squeeze=False)

    def lab(p):
        return f"{class_names[int(p[0])]} ({100 * float(p[1]):.1f}%)"

    for i in range(rows):
        _show(axes[i, 0], covers[i], f"cover: f -> {lab(cover_pred[i])}")
        _show(axes[i, 1], hiddens[i], f"hidden: f -> {lab(hidden_pred[i])}")
        _show(axes[i, 2], stegos[i],
              f"S = {alpha1:g} H$_\\perp$ + {float(alpha2[i]):.2f} $\\hat{{C}}$\n"
              f"f(S) -> {lab(stego_pred[i])}")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _finish(fig, path)


def plot_rescaled(path, image, probs, probs_scaled, *, alpha1: float,
                  class_names: Sequence[str], top: int = 3, title: str = ""):
    """``H`` beside ``alpha1 H`` with the network's top class probabilities for each (Fig 7).

    ``image`` is one ``(H, W, C)`` array in ``[-1, 1]``, shown with ``alpha1 * image`` on
    the same fixed scale (the rescaled copy looks dimmer, as the network sees it);
    ``probs``, ``probs_scaled`` are ``(classes,)`` softmax outputs for the two.
    """
    fig = Figure(figsize=(7.2, 3.4))
    axes = fig.subplots(1, 4, gridspec_kw={"width_ratios": [1, 1.1, 1, 1.1]})
    for k, (img, p, name) in enumerate(((image, probs, "H"),
                                        (alpha1 * np.asarray(image), probs_scaled,
                                         f"{alpha1:g} H"))):
        p = np.asarray(p, np.float64)
        order = np.argsort(p)[::-1][:top]
        _show(axes[2 * k], img, name)
        bar = axes[2 * k + 1]
        bar.barh(range(len(order))[::-1], p[order], color="tab:blue")
        bar.set_yticks(range(len(order))[::-1])
        bar.set_yticklabels([class_names[int(c)] for c in order], fontsize=8)
        bar.set_xlim(0, 1)
        bar.set_xlabel(f"f({name}) probability", fontsize=8)
        for y, v in zip(range(len(order))[::-1], p[order]):
            bar.text(min(v + 0.02, 0.7), y, f"{100 * v:.1f}%", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _finish(fig, path)


def plot_pipeline(path, cover, hidden, cover_null, hidden_perp, stego, *, alpha1: float,
                  alpha2: float, stego_label: str = ""):
    """The decomposition of Fig. 2: C = C_hat + C_perp, H = H_hat + H_perp, S.

    Every image argument is one ``(H, W, C)`` array.
    """
    panels = [
        (cover, "cover C", True),
        (cover_null, "$\\hat{C}$ = P$_N$ C\n(null-space part)", False),
        (hidden, "hidden H", True),
        (hidden_perp, "H$_\\perp$ = (I - P$_N$) H\n(what f uses)", False),
        (stego, f"S = {alpha1:g} H$_\\perp$ + {alpha2:.2f} $\\hat{{C}}$\n{stego_label}", True),
    ]
    fig = Figure(figsize=(2.3 * len(panels), 2.8))
    axes = fig.subplots(1, len(panels))
    for ax, (img, title, fixed) in zip(axes, panels):
        _show(ax, img, title + ("" if fixed else "\n[own scale]"), fixed=fixed)
    fig.suptitle("Null-space steganography: the network sees only H$_\\perp$", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    return _finish(fig, path)


def plot_what_nn_sees(path, images, seen: Sequence[np.ndarray], *, names: Sequence[str],
                      cols: int = 8):
    """Row block "what we see" followed by one row block per network of what it uses.

    ``images`` is ``(N, H, W, C)``; ``seen[k]`` holds the complement components
    ``(I - P_N) x`` of the same images for network ``k``, ``(N, H, W, C)``.
    """
    n = min(len(images), cols)
    blocks = [("what we see", images)] + [(f"what {nm} sees", s) for nm, s in zip(names, seen)]
    fig = Figure(figsize=(1.3 * n, 1.55 * len(blocks)))
    axes = fig.subplots(len(blocks), n, squeeze=False)
    for r, (label, imgs) in enumerate(blocks):
        for c in range(n):
            _show(axes[r, c], imgs[c], fixed=(r == 0))
        axes[r, 0].set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
    fig.suptitle("What we see vs what each network sees: the complement of its null space "
                 "(network rows on their own scale)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return _finish(fig, path)


def plot_relu_surface(path, f: Callable[[np.ndarray], np.ndarray], null_dir: np.ndarray, *,
                      extent: float = 3.0, steps: int = 121):
    """Surface of a 2-input scalar net with its contour plot beneath (Fig 1).

    ``f`` maps ``(N, 2)`` to ``(N,)``; ``null_dir`` is the ``(2,)`` unit null vector, drawn
    as a line on the contour plane: the level lines are parallel to it.
    """
    from mpl_toolkits.mplot3d import Axes3D  # noqa: F401  (registers the 3d projection)

    g = np.linspace(-extent, extent, steps)
    xx, yy = np.meshgrid(g, g)
    zz = np.asarray(f(np.stack([xx.ravel(), yy.ravel()], -1))).reshape(xx.shape)
    fig = Figure(figsize=(7, 5.5))
    ax = fig.add_subplot(projection="3d")
    span = float(zz.max() - zz.min()) or 1.0
    floor = float(zz.min()) - 0.6 * span
    ax.plot_surface(xx, yy, zz, cmap="viridis", linewidth=0, antialiased=True, alpha=0.9)
    ax.contour(xx, yy, zz, levels=20, cmap="viridis", offset=floor)
    d = np.asarray(null_dir, np.float64) * extent * 0.8
    ax.plot([-d[0], d[0]], [-d[1], d[1]], [floor, floor], color="red", lw=2.5,
            label="null-space direction")
    ax.set_zlim(floor, float(zz.max()))
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_zlabel("f(x)")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("A (2, 1, 3, 1)-ReLU net: f is constant along its 1-dim null space", fontsize=10)
    return _finish(fig, path)


def plot_spectrum(path, spectra: Mapping[str, Mapping], *, title: str = "",
                  extra: Mapping[str, np.ndarray] | None = None, ax=None):
    """Singular values of stacked Jacobians, relative to ``sigma_max``, on a log scale.

    Args:
      path: PNG path (a PDF is written beside it), or ``None``.
      spectra: ``{label: {"singular_values": (k,) descending, "tol": float, "n": int,
        "lower": int, "upper": int}}`` (the fields of :class:`nsjax.Certificate`).  Each is
        drawn with its rank tolerance (dashed) and the first layer's rank ``n - lower``
        (dotted).
      extra: more spectra ``{label: (k,) singular values}`` drawn in grey (e.g. a float32
        stack).
      ax: axes to draw into (default: a new figure).
    """
    fig, ax = _axes(ax, (7.0, 4.2))
    for i, (name, c) in enumerate(spectra.items()):
        s = np.asarray(c["singular_values"], np.float64)
        if not s.size or s[0] == 0:
            continue
        color = f"C{i}"
        rel = np.maximum(s / s[0], 1e-300)
        ax.semilogy(np.arange(1, s.size + 1), rel, ".", ms=2.5, color=color,
                    label=f"{name}: lower {c['lower']}, upper {c['upper']}")
        ax.axhline(c["tol"] / s[0], color=color, ls="--", lw=0.8)
        ax.axvline(c["n"] - c["lower"] + 0.5, color=color, ls=":", lw=0.8)
    for j, (name, s) in enumerate((extra or {}).items()):
        s = np.asarray(s, np.float64)
        ax.semilogy(np.arange(1, s.size + 1), np.maximum(s / s[0], 1e-300), "x", ms=2.0,
                    color=str(0.45 + 0.2 * j), label=name)
    ax.set_xlabel("index i")
    ax.set_ylabel("sigma_i / sigma_max of the stacked Jacobian (float64)")
    ax.set_title(title or "stacked Jacobian spectra; dashed: rank tolerance, "
                 "dotted: rank of the first layer", fontsize=9)
    ax.legend(fontsize=7, loc="center right")
    fig.tight_layout()
    return _finish(fig, path)


def plot_roc(path, curves: Mapping[str, tuple[np.ndarray, np.ndarray, float]], *,
             title: str = "", fpr_mark: float | None = 0.01, ax=None):
    """ROC curves on a log-scaled FPR axis, the target FPR marked by a dotted line.

    Args:
      path: PNG path (a PDF is written beside it), or ``None``.
      curves: ``{label: (fpr (k,), tpr (k,), auc)}``.
      fpr_mark: target false-positive rate to mark (``None``: no mark).
      ax: axes to draw into (default: a new figure).
    """
    fig, ax = _axes(ax, (5.6, 4.4))
    for label, (fpr, tpr, auc) in curves.items():
        ax.plot(np.maximum(fpr, 1e-5), tpr, lw=1.2, label=f"{label} (AUC {auc:.4f})")
    if fpr_mark:
        ax.axvline(fpr_mark, color="k", ls=":", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlim(1e-4, 1.0)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false-positive rate (clean test images)")
    ax.set_ylabel("true-positive rate (stego test images)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _finish(fig, path)


def plot_first_layer_spectra(path, spectra: Mapping[str, np.ndarray], target_dim: int, *,
                             title: str = "", ax=None):
    """First-layer singular values of several nets, relative to ``sigma_max``, log scale.

    Args:
      path: PNG path (a PDF is written beside it), or ``None``.
      spectra: ``{label: (n,) singular values}``, descending, padded with zeros to the input
        dimension ``n`` (exact zeros are drawn at 1e-17).
      target_dim: dimension of the attacker's weakest space; its boundary ``n - target_dim``
        is marked.
      ax: axes to draw into (default: a new figure).
    """
    fig, ax = _axes(ax, (6.4, 4.0))
    n = 0
    for i, (label, s) in enumerate(spectra.items()):
        s = np.asarray(s, np.float64)
        n = max(n, s.size)
        ax.semilogy(np.arange(1, s.size + 1), np.maximum(s / s[0], 1e-17), ".", ms=2.5,
                    color=f"C{i}", label=label)
    ax.axvline(n - target_dim + 0.5, color="k", ls=":", lw=0.8,
               label=f"right of this: the attacker's {target_dim} weakest directions")
    ax.set_xlabel("index i")
    ax.set_ylabel("sigma_i / sigma_max (first layer)")
    ax.set_title(title or "first-layer spectra (exact zeros drawn at 1e-17)", fontsize=9)
    ax.legend(fontsize=7, loc="center right")
    fig.tight_layout()
    return _finish(fig, path)
