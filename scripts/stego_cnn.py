"""Steganography on CNNs (issue: conv null spaces): VALID / patch first layers vs SAME.

    python scripts/stego_cnn.py --out results/stego_cnn                       # embedded MNIST
    python scripts/stego_cnn.py --data-dir ../shared/data --out results/stego_cnn

Trains three CNNs of the nsjax family with the same recipe on the same data, computes the
exact null space of each first convolution (``nsjax.null_space_of``), checks the invariant,
and hides test images in test covers:

* ``valid_1k3``: one 3x3 VALID kernel -- nullity 28^2 - 26^2 = 108;
* ``patch_8k4s4``: eight 4x4 kernels with stride 4 (a patch embedding) -- nullity
  49 * (16 - 8) = 392, block diagonal;
* ``same_6k3``: six 3x3 SAME kernels -- nullity 0: nothing to hide in.  Then ``C_hat = 0``,
  ``S = alpha1 H`` and the cover is gone, which the table states instead of a success rate.

Writes ``report.md``, ``report.json`` and one triplet figure per net with a null space.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np

import nsjax
from nsjax import data, plots, training

MODELS = {
    "valid_1k3": dict(kernels=1, kernel_size=3, padding="VALID", stride=1),
    "patch_8k4s4": dict(kernels=8, kernel_size=4, padding="VALID", stride=4),
    "same_6k3": dict(kernels=6, kernel_size=3, padding="SAME", stride=1),
}


def run(out: Path, *, data_dir=None, source="embedded", epochs=20, n_pairs=1000, seed=0,
        alpha1=0.2, quiet=False) -> dict:
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(exist_ok=True)
    tr = data.load("mnist", "train", data_dir=data_dir, source=source)
    te = data.load("mnist", "test", data_dir=data_dir, source=source)
    cfg = training.recipe("mnist", epochs=epochs, alpha=alpha1, seed=seed)
    rows = {}
    for name, kw in MODELS.items():
        model = nsjax.CNN(input_shape=tr.input_shape, hidden=(32,), num_classes=10, **kw)
        var, hist = training.train(model, tr.images, tr.labels, cfg, progress=not quiet)

        def f(x, model=model, var=var):
            return model.apply(var, x)

        ns = nsjax.null_space_of(model, var, tr.input_shape)
        ev = training.evaluate(model, var, te.images, te.labels, alpha=alpha1)
        row = {"config": kw, "null_space_dim": ns.dim, "rank": ns.rank,
               "train_seconds": hist[-1]["time_s"], "test_accuracy": ev["accuracy"],
               "test_accuracy_rescaled": ev["accuracy_rescaled"]}
        if ns.dim:
            inv = nsjax.check_invariance(f, ns, jax.random.key(seed + 1))
            row["invariance_max_rel_error"] = float(inv.max_rel_error)
            row["invariance_passed"] = bool(inv.passed)
            keep = np.asarray(training.filter_correct(model, var, te.images, te.labels,
                                                      alpha=alpha1))
            x, y = te.images[keep], te.labels[keep]
            ci, hi = nsjax.make_pairs(jax.random.key(seed + 2), y, y, n_pairs)
            summary, det = nsjax.evaluate_stego(f, ns, x[ci], x[hi], y[hi], alpha1=alpha1)
            row["stego"] = summary
            k = 4
            pc = np.asarray(jax.nn.softmax(f(x[ci[:k]]), -1))
            plots.plot_triplets(
                out / "figures" / f"triplets_{name}.png", x[ci[:k]], x[hi[:k]],
                det["stego"][:k], alpha1=alpha1, alpha2=det["alpha2"][:k],
                cover_pred=np.stack([pc.argmax(-1), pc.max(-1)], 1),
                hidden_pred=np.stack([det["pred_hidden"][:k], det["conf_hidden"][:k]], 1),
                stego_pred=np.stack([det["pred"][:k], det["conf"][:k]], 1),
                class_names=tr.class_names,
                title=f"CNN {name}: null space dim {ns.dim}")
        else:
            row["stego"] = None
            row["stego_note"] = ("null space {0}: C_hat = 0, so S = alpha1 H and the cover "
                                 "is gone; nothing can be hidden (see scripts/beyond_remedy.py "
                                 "for the approximate attack)")
        rows[name] = row
        if not quiet:
            print(f"[{time.perf_counter() - t0:6.1f}s] {name}: null dim {ns.dim}, test "
                  f"{100 * ev['accuracy']:.2f}%"
                  + (f", stego success {100 * row['stego']['success_rate']:.2f}%"
                     if row["stego"] else ", nothing to hide"), flush=True)
    report = {"dataset": "mnist", "data_source": tr.source, "epochs": epochs,
              "alpha1": alpha1, "n_pairs": n_pairs, "models": rows,
              "wall_seconds": time.perf_counter() - t0}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(_markdown(report))
    return report


def _markdown(r: dict) -> str:
    lines = [f"# Steganography on CNNs ({r['data_source']}, {r['epochs']} epochs, "
             f"alpha1 = {r['alpha1']})", "",
             "| net | first layer | null dim | test acc (orig / x0.2) | invariance | stego "
             "success | max \\|softmax diff\\| f32 / f64 pass | SSIM(S, a2 C) | PSNR(S, C) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, m in r["models"].items():
        c = m["config"]
        layer = f"{c['kernels']} x {c['kernel_size']}x{c['kernel_size']} {c['padding']}, " \
                f"stride {c['stride']}"
        acc = f"{100 * m['test_accuracy']:.2f} / {100 * m['test_accuracy_rescaled']:.2f} %"
        s = m["stego"]
        if s is None:
            lines.append(f"| {name} | {layer} | {m['null_space_dim']} | {acc} | - | nothing "
                         "to hide (S = alpha1 H) | - | - | - |")
            continue
        f64 = s["agreement_max_abs_float64_eval"]
        lines.append(
            f"| {name} | {layer} | {m['null_space_dim']} | {acc} | "
            f"{m['invariance_max_rel_error']:.1e} ({'pass' if m['invariance_passed'] else 'FAIL'})"
            f" | {100 * s['success_rate']:.2f} % | {s['agreement_max_abs']:.1e} / "
            f"{'-' if f64 is None else f'{f64:.1e}'} | {s['ssim_scaled_cover_mean']:.3f} | "
            f"{s['psnr_cover_mean']:.1f} dB |")
    lines += ["", f"{r['n_pairs']} random pairs of different classes from the test images "
              "each net classifies correctly at scale 1 and alpha1.", ""]
    lines += [f"![{n}](figures/triplets_{n}.png)" for n, m in r["models"].items() if m["stego"]]
    lines += ["", f"Total wall time: {r['wall_seconds']:.1f} s.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=None, help="folder holding mnist/ (default: the "
                   "MNIST sample embedded in nsjax)")
    p.add_argument("--out", default="results/stego_cnn")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--pairs", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    source = "files" if a.data_dir else "embedded"
    r = run(Path(a.out), data_dir=a.data_dir, source=source, epochs=a.epochs,
            n_pairs=a.pairs, seed=a.seed, quiet=a.quiet)
    print(f"wrote {a.out}/report.md ({r['wall_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
