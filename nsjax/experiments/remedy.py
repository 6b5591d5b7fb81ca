"""The paper's net beside nets whose first layer has a trivial null space: one table.

:func:`run_remedy` trains (or restores from ``out/checkpoints/``), with the same config on
the same data, the paper's ``FCNN(n, 32, 16, C)`` ("vulnerable"), a wide
``FCNN(n, max(800, n), 16, C)`` ("wide") and optionally a SAME-padded CNN ("cnn_same")
(:func:`nsjax._remedy.default_models`), then compares them on ONE test set and ONE list of
cover/hidden pairs (:func:`nsjax._remedy.remedy`): accuracy, exact null dimension, and
steganography success for each attack space (``"first_layer"``: the weakest first-layer
directions; ``"jacobian"``: the weakest directions of Jacobians stacked over training
images).  Writes ``report.json``, ``report.md``, ``figures/triplets_<net>.{png,pdf}``
(example stego images per net, first attack) and ``figures/first_layer_spectra.{png,pdf}``.
"""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np

from nsjax import _plots, _remedy
from nsjax.experiments import _common
from nsjax.experiments._common import Progress, pct
from nsjax.experiments._pipeline import StegoPairs, triplet_figure

__all__ = ["run_remedy"]


def run_remedy(out_dir, *, dataset: str = "mnist", data_dir=None, source: str = "auto",
               epochs: int | None = 10, seed: int = 0, alpha1: float = 0.2,
               n_pairs: int = 1000, cnn: bool = True, attacks=("first_layer", "jacobian"),
               n_jacobian_points: int = 300, limit: int | None = None,
               test_limit: int | None = None, quiet: bool = False) -> dict:
    """The remedy table (module docstring).

    Args:
      out_dir: output folder (``report.json``, ``report.md``, ``figures/``, ``checkpoints/``).
      dataset, data_dir, source: what to load (:func:`nsjax.data.load`).
      epochs: training epochs per net (``None``: the recipe's); seed: training and pairs.
      alpha1: hidden weight (the nets train with ``alpha1``-rescaled copies too).
      n_pairs: cover/hidden pairs, the same for every net.
      cnn: include the SAME CNN.
      attacks: subset of :data:`nsjax._remedy.ATTACKS`, one row per net and attack.
      n_jacobian_points: training images for the ``"jacobian"`` attack.
      limit, test_limit: caps on the train / test splits (quick runs).
      quiet: no progress lines.

    Returns:
      the report written to ``report.json``.

    Raises:
      nsjax.data.DatasetNotFoundError: the dataset is not available.
    """
    progress = Progress(quiet)
    out = _common.prepare_out(out_dir)
    attacks = tuple(attacks)
    tr, te = _common.load_splits(dataset, data_dir, source, limit=limit, test_limit=test_limit,
                                 progress=progress)
    models = _remedy.default_models(tr.input_shape, len(tr.class_names), cnn=cnn)
    cfg = _common.config_for(dataset, epochs=epochs, seed=seed, alpha=alpha1)
    variables, secs = {}, {}
    for name, model in models.items():
        variables[name], secs[name], _ = _common.train_or_restore(
            out, f"{name}-{dataset}", model, cfg, tr, progress)
    res = _remedy.remedy(tr.images, tr.labels, te.images, te.labels, models=models,
                         config=cfg, alpha1=alpha1, n_pairs=n_pairs, seed=seed,
                         variables=variables, attacks=attacks,
                         n_jacobian_points=n_jacobian_points)
    for r in res["rows"]:
        r["train_seconds"] = secs[r["name"]]
        _log_row(r, progress)
    figures = _triplet_figures(out, res, te, alpha1, attacks[0])
    p = _plots.plot_first_layer_spectra(
        out / "figures" / "first_layer_spectra.png",
        _remedy.first_layer_spectra(res["entries"], tr.input_shape), res["target_dim"])
    figures["first_layer_spectra"] = str(p.relative_to(out))
    report = {"experiment": "remedy", "dataset": dataset, "data_source": tr.source,
              "n_train": len(tr), "n_test": len(te), "train_config": cfg.to_dict(),
              "alpha1": alpha1, "target_dim": res["target_dim"],
              "n_common_correct": res["n_common_correct"],
              "n_pairs_dropped": res["n_pairs_dropped"], "attacks": list(attacks),
              "n_jacobian_points": n_jacobian_points,
              "rows": [{k: v for k, v in r.items() if k != "_details"} for r in res["rows"]],
              "figures": figures, "wall_seconds": progress.seconds()}
    _common.write_report(out, report, remedy_markdown(report))
    progress(f"wrote {out / 'report.md'}")
    return report


def _log_row(r: dict, progress: Progress) -> None:
    progress(f"{r['name']} / {r['attack']}: acc {pct(r['accuracy_test'])}, null dim "
             f"{r['null_dim']}, attack {r['attack_kind']} dim {r['attack_dim']} "
             f"(sigma_rel {r['attack_sigma_rel']:.3f}): stego success "
             f"{pct(r['stego_success'])}, cover class {pct(r['stego_cover_class'])}, "
             f"SSIM(S, a2 C) {r['ssim_scaled_cover']:.3f}")


def _triplet_figures(out: Path, res: dict, te, alpha1: float, attack: str,
                     rows: int = 4) -> dict[str, str]:
    """``figures/triplets_<net>``: the first ``rows`` stego pairs of each net under
    ``attack``, through the shared :func:`nsjax.experiments._pipeline.triplet_figure`."""
    paths = {}
    for r in res["rows"]:
        if r["attack"] != attack:
            continue
        d = r["_details"]
        model, v = res["entries"][r["name"]]
        pairs = StegoPairs(summary={}, details=d, cover_index=np.asarray(d["cover_index"]),
                           hidden_index=np.asarray(d["hidden_index"]))
        p = triplet_figure(
            out / "figures" / f"triplets_{r['name']}.png",
            lambda x, m=model, v=v: m.apply(v, jnp.asarray(x)), te.images, te.images, pairs,
            rows=rows, alpha1=alpha1, class_names=te.class_names,
            title=f"{r['name']}: {r['model']}, null dim {r['null_dim']}, "
                  f"{r['attack_kind']} attack space dim {r['attack_dim']}")
        paths[f"triplets_{r['name']}"] = str(p.relative_to(out))
    return paths


def remedy_markdown(r: dict) -> str:
    """``report.md`` of :func:`run_remedy`'s report ``r``."""
    a = f"{r['alpha1']:g}"
    lines = [
        f"# Remedy: a first layer with a trivial null space ({r['dataset']})",
        "",
        f"All nets trained with the same config on the same data; every number on the same "
        f"{r['n_test']} test images. Stego pairs: the same {r['rows'][0]['n_pairs']} "
        f"cover/hidden pairs (different classes) for every row, drawn from the "
        f"{r['n_common_correct']} test images that all nets classify correctly at scale 1 and "
        f"{a}; S = {a} H_perp + alpha2 C_hat with the largest admissible alpha2. Attack "
        f"spaces have dimension {r['target_dim']}: the exact null space when it is that "
        "large, otherwise the weakest directions of the first layer ('first_layer', "
        "nsjax.null_space(W1op, rank=n - d)) or of the Jacobians stacked over "
        f"{r['n_jacobian_points']} training images ('jacobian'). sigma_rel: largest singular "
        "value inside the attack space / sigma_max. Chance = 1 / classes.",
        "",
        f"| net | model | params | test acc (orig / x{a}) | exact null dim | attack | attack "
        "space (dim, sigma_rel) | stego success | f(S) = cover class | f(alpha2 C_hat) = "
        "cover class | SSIM(S, alpha2 C) | mean alpha2 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {x['name']} | {x['model']} | {x['n_params']:,} | {pct(x['accuracy_test'])} / "
        f"{pct(x['accuracy_test_rescaled'])} | {x['null_dim']} | {x['attack']} | "
        f"{x['attack_kind']} {x['attack_dim']}, {x['attack_sigma_rel']:.3g} | "
        f"{pct(x['stego_success'])} | {pct(x['stego_cover_class'])} | "
        f"{pct(x['cover_part_cover_class'])} | {x['ssim_scaled_cover']:.3f} | "
        f"{x['alpha2_mean']:.3f} |" for x in r["rows"]]
    lines += ["", "With the EXACT null space, a net whose null space is {0} gives C_hat = 0: "
              "S = alpha1 H, the cover cannot be hidden at all.", ""]
    lines += [f"![{k}]({v})" for k, v in r["figures"].items()]
    lines += ["", f"Wall time {r['wall_seconds']:.1f} s.", ""]
    return "\n".join(lines)
