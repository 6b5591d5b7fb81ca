"""Detect null-space stego images with null-space statistics, on whole test sets.

:func:`run_detect`, for every dataset: trains (or restores from ``out/checkpoints/``) the
paper's ``FCNN(n, 32, 16, C)``, takes its null space ``N``, and fits one detector per
statistic (:data:`nsjax._detect.STATISTICS`) on clean TRAINING images, with the threshold
calibrated on a held-out part of them at the target false-positive rate
(:func:`nsjax.fit_detector`).  Then, for every ``alpha1``, every test image becomes the
cover of one stego image ``S = alpha1 H_perp + alpha2 C_hat`` hiding a random admissible
test image of another class (:func:`nsjax._detect.make_stego_set`), and each detector is
scored on clean vs stego TEST images: ROC AUC, TPR at the calibrated threshold, realised
FPR, next to the attack's success rate (``argmax f(S)`` = class of ``H``).

A dataset that is not available gets a ``{"not_run": reason}`` entry; the others still run.
Writes ``report.json``, ``report.md`` and ``figures/roc_<dataset>_<statistic>.{png,pdf}``.
"""

from __future__ import annotations

import math
from pathlib import Path

import jax
import numpy as np

from nsjax import _data, _detect, _plots
from nsjax._first_layer import null_space_of
from nsjax._models import FCNN
from nsjax._train import evaluate, predict
from nsjax.experiments import _common
from nsjax.experiments._common import Progress, pct

__all__ = ["run_detect", "DEFAULT_ALPHAS"]

DEFAULT_ALPHAS = (0.1, 0.2, 0.5)


def run_detect(out_dir, *, datasets=("mnist", "fashion_mnist"), alphas=DEFAULT_ALPHAS,
               statistics=None, data_dir=None, source: str = "auto",
               epochs: int | None = None, seed: int = 0, fpr: float = 0.01,
               limit: int | None = None, test_limit: int | None = None,
               quiet: bool = False) -> dict:
    """Detector table on whole test sets, per dataset / ``alpha1`` / statistic (module
    docstring).

    Args:
      out_dir: output folder (``report.json``, ``report.md``, ``figures/``, ``checkpoints/``).
      datasets: dataset names; missing ones are reported as not run.
      alphas: ``alpha1`` values of the stego images.
      statistics: subset of :data:`nsjax._detect.STATISTICS` (default: all).
      data_dir, source: where to load from (:func:`nsjax.data.load`).
      epochs: training epochs (``None``: the recipe's); seed: training, split, pairs.
      fpr: target false-positive rate of the calibrated threshold.
      limit, test_limit: caps on the train / test splits (quick runs).
      quiet: no progress lines.

    Returns:
      the report written to ``report.json``.
    """
    progress = Progress(quiet)
    out = _common.prepare_out(out_dir)
    statistics = tuple(statistics or _detect.STATISTICS)
    settings = {"alphas": tuple(alphas), "statistics": statistics, "fpr": fpr, "seed": seed}
    rows, per_ds, figures = [], {}, {}
    for ds in datasets:
        try:
            tr, te = _common.load_splits(ds, data_dir, source, limit=limit,
                                         test_limit=test_limit)
        except _data.DatasetNotFoundError as err:
            per_ds[ds] = {"not_run": str(err)}
            progress(f"{ds}: not run ({err})")
            continue
        per_ds[ds], ds_rows, curves = _dataset(out, ds, tr, te, epochs, settings, progress)
        rows += ds_rows
        figures.update(_roc_figures(out, ds, curves, fpr))
    report = {"experiment": "detect", "datasets": per_ds, "alphas": list(alphas),
              "statistics": list(statistics), "fpr_target": fpr, "rows": rows,
              "figures": figures, "wall_seconds": progress.seconds()}
    _common.write_report(out, report, detect_markdown(report))
    progress(f"wrote {out / 'report.md'}")
    return report


def _dataset(out: Path, ds: str, tr, te, epochs, settings: dict, progress: Progress):
    """Train, fit the detectors and score them on one dataset.

    Returns ``(summary, rows, curves)``; ``curves[statistic][label] = (fpr, tpr, auc)``.
    """
    seed, statistics = settings["seed"], settings["statistics"]
    model = FCNN((math.prod(tr.input_shape), 32, 16, len(tr.class_names)))
    cfg = _common.config_for(ds, epochs=epochs, seed=seed, alpha=0.2)
    v, _, _ = _common.train_or_restore(out, f"fcnn-{ds}", model, cfg, tr, progress)
    ns = null_space_of(model, v, tr.input_shape)
    acc = evaluate(model, v, te.images, te.labels, alpha=None)["accuracy"]
    summary = {"data_source": tr.source, "n_train": len(tr), "n_test": len(te),
               "null_space_dim": ns.dim, "test_accuracy": acc, "train_config": cfg.to_dict()}
    dets = {s: _detect.fit_detector(ns, tr.images, statistic=s, fpr=settings["fpr"],
                                    seed=seed) for s in statistics}
    first = dets[statistics[0]]
    progress(f"{ds}: null dim {ns.dim}, test acc {pct(acc)}; detectors fitted on "
             f"{first.n_fit} train images, thresholds on {first.n_calibration} held-out "
             "train images")
    rows, curves = [], {s: {} for s in statistics}
    for a1 in settings["alphas"]:
        a_rows = _alpha_rows(ds, model, v, ns, te, dets, a1, seed, curves)
        rows += a_rows
        progress(f"{ds} alpha1={a1:g}: {a_rows[0]['n_stego']} stego (hidden from "
                 f"{a_rows[0]['n_admissible_hidden']} admissible), attack success "
                 f"{pct(a_rows[0]['stego_success'])}; AUC "
                 + ", ".join(f"{r['statistic']} {r['auc']:.4f}" for r in a_rows))
    return summary, rows, curves


def _alpha_rows(ds: str, model, variables, ns, te, dets: dict, alpha1: float, seed: int,
                curves: dict) -> list[dict]:
    """One stego set at ``alpha1`` (one stego image per test image) scored by every
    detector: one row per statistic; adds each ROC curve to ``curves``."""
    ss = _detect.make_stego_set(ns, te.images, te.labels, te.images, te.labels, alpha1=alpha1,
                                key=jax.random.key(seed + int(1000 * alpha1)))
    pred = np.asarray(predict(model, variables, ss.images)).argmax(-1)
    success = float(np.mean(pred == te.labels[ss.hidden_index]))
    rows = []
    for s, det in dets.items():
        ev = _detect.evaluate_detector(det, te.images, ss.images)
        scores = ev.pop("_scores")
        fpr_c, tpr_c, _ = _detect.roc_curve(scores["clean"], scores["stego"])
        curves[s][f"alpha1 = {alpha1:g}"] = (fpr_c, tpr_c, ev["auc"])
        rows.append({"dataset": ds, "alpha1": alpha1, **ev,
                     "n_admissible_hidden": ss.n_admissible_hidden,
                     "alpha2_mean": float(ss.alpha2.mean()), "stego_success": success,
                     "calibration_fpr": det.calibration_fpr})
    return rows


def _roc_figures(out: Path, ds: str, curves: dict, fpr: float) -> dict[str, str]:
    """``figures/roc_<ds>_<statistic>``: one ROC figure per statistic, all ``alpha1``."""
    paths = {}
    for s, c in curves.items():
        p = _plots.plot_roc(out / "figures" / f"roc_{ds}_{s}.png", c,
                            title=f"{ds}: statistic '{s}', clean vs stego TEST images; "
                                  f"dotted: {fpr:g} FPR", fpr_mark=fpr)
        paths[f"{ds}/{s}"] = str(p.relative_to(out))
    return paths


_PROTOCOL = (
    "Detector fitted on 80 % of the clean TRAINING images, threshold = the (1 - target FPR) "
    "quantile of its score on the other 20 % (held out). Evaluated on the whole TEST set: "
    "every test image clean (negatives) and as the cover of one stego image "
    "S = alpha1 H_perp + alpha2 C_hat (positives; H a random test image of another class "
    "whose alpha1 H_perp fits in [-1, 1], alpha2 the largest admissible). AUC by the "
    "Mann-Whitney rank formula. Attack success: argmax f(S) = class of H (all pairs, "
    "unfiltered). Statistics: 'consistency' = log ||x_perp - ridge(x_hat)|| / ||x||; "
    "'gauss' = Mahalanobis distance of (log||x_hat||, log||x_perp||); 'ratio' = "
    "log ||x_hat|| / ||x_perp||; 'perp' = -log ||x_perp||.")


def detect_markdown(r: dict) -> str:
    """``report.md`` of :func:`run_detect`'s report ``r``."""
    lines = ["# Detecting null-space stego images", "",
             f"Target FPR {pct(r['fpr_target'])}. {_PROTOCOL}", ""]
    for ds, d in r["datasets"].items():
        if "not_run" in d:
            lines += [f"## {ds}: not run", "", d["not_run"], ""]
            continue
        lines += [f"## {ds}", "",
                  f"Data: {d['data_source']} ({d['n_train']} train / {d['n_test']} test); "
                  f"FCNN null space dim {d['null_space_dim']}, test accuracy "
                  f"{pct(d['test_accuracy'])}.", "",
                  "| alpha1 | statistic | AUC | TPR at threshold | realised FPR (test) | "
                  "n clean / n stego | admissible hidden | attack success | mean alpha2 |",
                  "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {x['alpha1']:g} | {x['statistic']} | {x['auc']:.5f} | "
                  f"{pct(x['tpr_at_threshold'])} | {pct(x['fpr_realised'])} | "
                  f"{x['n_clean']} / {x['n_stego']} | {x['n_admissible_hidden']} | "
                  f"{pct(x['stego_success'])} | {x['alpha2_mean']:.3f} |"
                  for x in r["rows"] if x["dataset"] == ds]
        lines.append("")
        lines += [f"![{k}]({v})" for k, v in r["figures"].items() if k.startswith(ds + "/")]
        lines.append("")
    lines += [f"Wall time {r['wall_seconds']:.1f} s.", ""]
    return "\n".join(lines)
