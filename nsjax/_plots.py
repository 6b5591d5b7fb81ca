"""Figures of the paper, as PNG files (matplotlib, Agg backend; no screen needed).

* :func:`plot_triplets` -- cover / hidden / stego with alpha1, alpha2, predictions (Figs 3-6).
* :func:`plot_pipeline` -- the decomposition C -> C_hat, H -> H_perp -> S (Fig 2).
* :func:`plot_what_nn_sees` -- images next to their complement component (Figs 10-11).
* :func:`plot_relu_surface` -- surface + contour of a (2, 1, 3, 1) ReLU net (Fig 1).

Images are ``(H, W, C)`` arrays in ``[-1, 1]`` shown on a fixed grey/colour scale; parts that
are not images (``C_hat``, ``H_perp``) are shown on their own symmetric scale, as stated in
each panel.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_triplets", "plot_pipeline", "plot_what_nn_sees", "plot_relu_surface"]


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


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_triplets(path, covers, hiddens, stegos, *, alpha1: float, alpha2: Sequence[float],
                  cover_pred, hidden_pred, stego_pred, class_names: Sequence[str],
                  title: str = "") -> Path:
    """Rows of (cover, hidden, stego), each annotated with prediction and confidence.

    ``*_pred`` are ``(rows, 2)`` arrays of (class index, confidence).
    """
    rows = len(covers)
    fig, axes = plt.subplots(rows, 3, figsize=(6.6, 2.25 * rows), squeeze=False)
    for i in range(rows):
        def lab(p):
            return f"{class_names[int(p[0])]} ({100 * float(p[1]):.1f}%)"
        _show(axes[i, 0], covers[i], f"cover: f -> {lab(cover_pred[i])}")
        _show(axes[i, 1], hiddens[i], f"hidden: f -> {lab(hidden_pred[i])}")
        _show(axes[i, 2], stegos[i],
              f"S = {alpha1:g} H$_\\perp$ + {float(alpha2[i]):.2f} $\\hat{{C}}$\n"
              f"f(S) -> {lab(stego_pred[i])}")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_pipeline(path, cover, hidden, cover_null, hidden_perp, stego, *, alpha1: float,
                  alpha2: float, stego_label: str = "") -> Path:
    """The decomposition of Fig. 2: C = C_hat + C_perp, H = H_hat + H_perp, S."""
    panels = [
        (cover, "cover C", True),
        (cover_null, "$\\hat{C}$ = P$_N$ C\n(null-space part)", False),
        (hidden, "hidden H", True),
        (hidden_perp, "H$_\\perp$ = (I - P$_N$) H\n(what f uses)", False),
        (stego, f"S = {alpha1:g} H$_\\perp$ + {alpha2:.2f} $\\hat{{C}}$\n{stego_label}", True),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.3 * len(panels), 2.8))
    for ax, (img, title, fixed) in zip(axes, panels):
        _show(ax, img, title + ("" if fixed else "\n[own scale]"), fixed=fixed)
    fig.suptitle("Null-space steganography: the network sees only H$_\\perp$", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    return _save(fig, path)


def plot_what_nn_sees(path, images, seen: Sequence[np.ndarray], *, names: Sequence[str],
                      cols: int = 8) -> Path:
    """Row block "what we see" followed by one row block per network of what it uses.

    ``seen[k]`` holds the complement components ``(I - P_N) x`` for network ``k``.
    """
    n = min(len(images), cols)
    blocks = [("what we see", images)] + [(f"what {nm} sees", s) for nm, s in zip(names, seen)]
    fig, axes = plt.subplots(len(blocks), n, figsize=(1.3 * n, 1.55 * len(blocks)),
                             squeeze=False)
    for r, (label, imgs) in enumerate(blocks):
        for c in range(n):
            _show(axes[r, c], imgs[c], fixed=(r == 0))
        axes[r, 0].set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
    fig.suptitle("What we see vs what each network sees: the complement of its null space "
                 "(network rows on their own scale)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return _save(fig, path)


def plot_relu_surface(path, f: Callable[[np.ndarray], np.ndarray], null_dir: np.ndarray, *,
                      extent: float = 3.0, steps: int = 121) -> Path:
    """Surface of a 2-input scalar net with its contour plot beneath (Fig 1).

    ``f`` maps ``(N, 2)`` to ``(N,)``; ``null_dir`` is the unit null vector, drawn as an
    arrow on the contour plane: the level lines are parallel to it.
    """
    from mpl_toolkits.mplot3d import Axes3D  # noqa: F401  (registers the 3d projection)

    g = np.linspace(-extent, extent, steps)
    xx, yy = np.meshgrid(g, g)
    zz = np.asarray(f(np.stack([xx.ravel(), yy.ravel()], -1))).reshape(xx.shape)
    fig = plt.figure(figsize=(7, 5.5))
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
    return _save(fig, path)
