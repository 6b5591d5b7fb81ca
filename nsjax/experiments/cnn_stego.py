"""Steganography on CNNs: VALID and patch first layers (a null space) vs SAME (none).

:func:`run_cnn_stego` trains CNNs of the :class:`nsjax.CNN` family with the same recipe on
the same data, computes the null space of each first convolution
(:func:`nsjax.null_space_of`), checks the invariant, and hides test images in test covers:

* ``valid_1k3``: one 3x3 VALID kernel -- nullity 28^2 - 26^2 = 108 on 28x28;
* ``patch_8k4s4``: eight 4x4 kernels with stride 4 (a patch embedding) -- nullity
  49 * (16 - 8) = 392, block diagonal;
* ``same_6k3``: six 3x3 SAME kernels -- nullity 0: nothing to hide in.  Then
  ``C_hat = 0``, ``S = alpha1 H`` and the cover is gone, which the report states instead of a
  success rate.
"""

from __future__ import annotations

from pathlib import Path

import jax

from nsjax import _train
from nsjax._first_layer import null_space_of
from nsjax._invariance import check_invariance
from nsjax._models import CNN
from nsjax.experiments._common import (
    Progress,
    config_for,
    load_splits,
    pct,
    prepare_out,
    train_or_restore,
    write_report,
)
from nsjax.experiments._pipeline import filtered_set, stego_pairs, triplet_figure

__all__ = ["run_cnn_stego", "CNN_MODELS"]

CNN_MODELS = {
    "valid_1k3": dict(kernels=1, kernel_size=3, padding="VALID", stride=1),
    "patch_8k4s4": dict(kernels=8, kernel_size=4, padding="VALID", stride=4),
    "same_6k3": dict(kernels=6, kernel_size=3, padding="SAME", stride=1),
}

_NOTHING = ("null space {0}: C_hat = 0, so S = alpha1 H and the cover is gone; nothing can "
            "be hidden (nsjax remedy shows the approximate attack)")


def run_cnn_stego(out_dir: str | Path = "results/stego_cnn", *, data_dir=None,
                  source: str = "embedded", models: dict | None = None, epochs: int = 20,
                  n_pairs: int = 1000, seed: int = 0, alpha1: float = 0.2,
                  limit: int | None = None, test_limit: int | None = None,
                  quiet: bool = False) -> dict:
    """Train each CNN of ``models`` (default :data:`CNN_MODELS`) on MNIST and run stego.

    Args:
      out_dir: folder for the report, ``figures/`` and ``checkpoints/``.
      data_dir, source: where MNIST comes from (default: the embedded sample).
      models: ``{name: nsjax.CNN keyword arguments}``.
      epochs, seed, alpha1: training recipe overrides; ``alpha1`` is also the hidden weight.
      n_pairs: cover/hidden pairs per net (different classes, from the test images the net
        classifies correctly at scale 1 and ``alpha1``).
      limit, test_limit: caps on the train / test split.
      quiet: no progress output.

    Returns:
      the report (``report["models"][name]``: null dim, accuracies, invariance, stego).
    """
    progress = Progress(quiet)
    out = prepare_out(out_dir)
    tr, te = load_splits("mnist", data_dir, source, limit=limit, test_limit=test_limit)
    cfg = config_for("mnist", epochs=epochs, seed=seed, alpha=alpha1)
    rows = {}
    for name, kw in (models or CNN_MODELS).items():
        model = CNN(input_shape=tr.input_shape, hidden=(32,), num_classes=10, **kw)
        var, secs, _ = train_or_restore(out, name, model, cfg, tr, progress)
        rows[name] = {"config": kw, "train_seconds": secs,
                      **_one_net(out, name, model, var, te, n_pairs, alpha1, seed)}
        s = rows[name]["stego"]
        progress(f"{name}: null dim {rows[name]['null_space_dim']}, test "
                 f"{pct(rows[name]['test_accuracy'])}, "
                 + (f"stego success {pct(s['success_rate'])}" if s else "nothing to hide"))
    report = {"experiment": "cnn_stego", "dataset": "mnist", "data_source": tr.source,
              "epochs": cfg.epochs, "alpha1": alpha1, "n_pairs": n_pairs, "models": rows,
              "wall_seconds": progress.seconds()}
    write_report(out, report, _markdown(report))
    return report


def _one_net(out: Path, name: str, model, var, te, n_pairs: int, alpha1: float,
             seed: int) -> dict:
    """Null space, accuracy, invariance and stego of one trained CNN."""
    def f(x):
        return model.apply(var, x)

    ns = null_space_of(model, var, te.input_shape)
    ev = _train.evaluate(model, var, te.images, te.labels, alpha=alpha1)
    row = {"null_space_dim": ns.dim, "rank": ns.rank, "test_accuracy": ev["accuracy"],
           "test_accuracy_rescaled": ev["accuracy_rescaled"], "stego": None,
           "stego_note": _NOTHING}
    if not ns.dim:
        return row
    inv = check_invariance(f, ns, jax.random.key(seed + 1))
    keep = filtered_set(model, var, te.images, te.labels, alpha1=alpha1)["mask"]
    x, y = te.images[keep], te.labels[keep]
    res = stego_pairs(jax.jit(f), ns, x, y, x, y, n_pairs=n_pairs, alpha1=alpha1,
                      key=jax.random.key(seed + 2))
    fig = triplet_figure(out / "figures" / f"triplets_{name}.png", f, x, x, res, rows=4,
                         alpha1=alpha1, class_names=te.class_names,
                         title=f"CNN {name}: null space dim {ns.dim}")
    row.update(invariance_max_rel_error=float(inv.max_rel_error),
               invariance_passed=bool(inv.passed), stego=res.summary, stego_note=None,
               figure=str(Path(fig).relative_to(out)))
    return row


def _markdown(r: dict) -> str:
    lines = [f"# Steganography on CNNs ({r['data_source']}, {r['epochs']} epochs, "
             f"alpha1 = {r['alpha1']})", "",
             "| net | first layer | null dim | test acc (orig / x0.2) | invariance | stego "
             "success | max \\|softmax diff\\| f32 / f64 pass | SSIM(S, a2 C) | PSNR(S, C) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, m in r["models"].items():
        c = m["config"]
        layer = (f"{c['kernels']} x {c['kernel_size']}x{c['kernel_size']} {c['padding']}, "
                 f"stride {c['stride']}")
        acc = f"{pct(m['test_accuracy'])} / {pct(m['test_accuracy_rescaled'])}"
        s = m["stego"]
        if s is None:
            lines.append(f"| {name} | {layer} | {m['null_space_dim']} | {acc} | - | nothing "
                         "to hide (S = alpha1 H) | - | - | - |")
            continue
        f64 = s["agreement_max_abs_float64_eval"]
        lines.append(
            f"| {name} | {layer} | {m['null_space_dim']} | {acc} | "
            f"{m['invariance_max_rel_error']:.1e} ({'pass' if m['invariance_passed'] else 'FAIL'})"
            f" | {pct(s['success_rate'])} | {s['agreement_max_abs']:.1e} / "
            f"{'-' if f64 is None else f'{f64:.1e}'} | {s['ssim_scaled_cover_mean']:.3f} | "
            f"{s['psnr_cover_mean']:.1f} dB |")
    lines += ["", f"{r['n_pairs']} random pairs of different classes from the test images "
              "each net classifies correctly at scale 1 and alpha1. Captions: f(C), f(H) and "
              "f(S), each the predicted class and its confidence.", ""]
    lines += [f"![{n}]({m['figure']})" for n, m in r["models"].items() if m["stego"]]
    lines += ["", f"Total wall time: {r['wall_seconds']:.1f} s.", ""]
    return "\n".join(lines)
