"""The paper's steganography experiment (Sec. 4) on one dataset; the main job is MNIST.

Steps of :func:`run_stego`, each printed as it runs:

1. load the dataset (:func:`nsjax.data.load`);
2. train -- or reuse the checkpoint cached in ``out_dir/checkpoints`` -- an FCNN (paper:
   (784, 32, 16, 10) ReLU) on originals + ``alpha1``-rescaled copies, and a second net of
   the same architecture from another seed (for "what another network sees");
3. the null space of the first layer and the invariance check;
4. the paper's figures of merit on the training set (:mod:`nsjax.experiments.paper` says
   which quantity each is) and the filtered training set (right at both scales);
5. stego over random cover/hidden pairs of different classes drawn from the filtered TEST
   images and from the filtered TRAINING set (the paper's set), and with covers from
   another dataset when one is given and present;
6. ``report.json``, ``report.md`` and the figures (PNG + PDF) in ``out_dir``.
"""

from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from nsjax import _data, _plots, _train
from nsjax._first_layer import null_space_of
from nsjax._invariance import check_invariance
from nsjax._models import FCNN, init_params
from nsjax._stego import PAPER_ALPHA2_CAP
from nsjax.experiments import paper
from nsjax.experiments._common import (
    Progress,
    config_for,
    load_splits,
    pct,
    prepare_out,
    sci,
    train_or_restore,
    write_report,
)
from nsjax.experiments._pipeline import (
    filtered_set,
    paper_subset,
    stego_pairs,
    stego_table,
    triplet_figure,
)

__all__ = ["run_stego", "run_demo", "DEMO_ARCH"]

DEMO_ARCH = (784, 32, 16, 10)


def run_demo(out_dir: str | Path = "results/demo", *, data_dir=None, source: str = "embedded",
             **kwargs) -> dict:
    """The main job: :func:`run_stego` on MNIST with the paper's (784, 32, 16, 10) net.

    By default it uses the real MNIST sample embedded in the package (offline);
    ``data_dir`` switches to the full dataset files.
    """
    if data_dir is not None and source == "embedded":
        source = "files"
    return run_stego("mnist", out_dir, data_dir=data_dir, source=source, **kwargs)


def run_stego(
    dataset: str = "mnist",
    out_dir: str | Path = "results/demo",
    *,
    data_dir: str | Path | None = None,
    source: str = "auto",
    arch: tuple[int, ...] | None = None,
    n_pairs: int = 1000,
    epochs: int | None = None,
    seed: int = 0,
    alpha1: float = 0.2,
    alpha2_rule: str = "paper",
    cover_dataset: str | None = None,
    limit: int | None = None,
    test_limit: int | None = None,
    quiet: bool = False,
) -> dict:
    """Train (or reuse), find the null space, check it, hide images, measure, plot, report.

    Args:
      dataset: a name :func:`nsjax.data.load` knows.
      out_dir: folder for ``report.json``, ``report.md``, ``figures/`` and ``checkpoints/``.
      data_dir, source: where the data comes from (:func:`nsjax.data.load`).
      arch: FCNN layer sizes; default ``(n, 32, 16, classes)`` as in the paper.
      n_pairs: cover/hidden pairs per stego evaluation.
      epochs: training epochs (default: ``nsjax.training.recipe(dataset)``).
      seed: PRNG seed for initialisation, minibatches, probes and pairs.
      alpha1: hidden-image weight, also the rescaling of the training copies.
      alpha2_rule: ``"paper"``: the cover weight is the largest admissible one below 1 (the
        paper's ``alpha2 in (0, 1)``); ``"max"``: the largest admissible one, which can
        exceed 1 (nsjax's own option).  Reports show the largest admissible values beside.
      cover_dataset: a second dataset whose test images serve as covers (same image shape);
        reported as not run, with the reason, when it cannot be loaded.
      limit, test_limit: use only the first images of the train / test split (quick runs).
      quiet: no progress output.

    Returns:
      the report dict (also written as ``report.json``).

    Raises:
      nsjax.data.DatasetNotFoundError: ``dataset`` is not present.
      ValueError: ``arch`` does not fit the data, or ``out_dir`` cannot be written.
    """
    if alpha2_rule not in ("paper", "max"):
        raise ValueError(f"alpha2_rule must be 'paper' or 'max', got {alpha2_rule!r}")
    progress = Progress(quiet)
    out = prepare_out(out_dir)
    tr, te = load_splits(dataset, data_dir, source, limit=limit, test_limit=test_limit,
                         progress=progress)
    model, arch = _model_for(tr, arch)
    cfg = config_for(dataset, epochs=epochs, seed=seed, alpha=alpha1)
    nets = _train_nets(out, model, cfg, tr, progress)
    r = {"dataset": dataset, "data_source": tr.source, "n_train": len(tr), "n_test": len(te),
         "arch": list(arch), "activation": "relu", "alpha1": alpha1, "seed": seed,
         "alpha2_rule": alpha2_rule,
         "alpha2_cap": PAPER_ALPHA2_CAP if alpha2_rule == "paper" else None,
         "train_config": cfg.to_dict(), "train_seconds": nets["a"][1],
         "second_network_train_seconds": nets["b"][1]}
    var_a, var_b = nets["a"][0], nets["b"][0]
    ns, ns_b = (null_space_of(model, v, tr.input_shape) for v in (var_a, var_b))
    r.update(_null_space_entries(model, var_a, ns, ns_b, seed, progress))
    r.update(_figures_of_merit(model, var_a, tr, te, alpha1, progress))
    f = jax.jit(lambda x: model.apply(var_a, x))
    test_set, test_res = _stego_runs(r, f, model, var_a, ns, tr, te, n_pairs, progress)
    r["figures"] = _figures(out, f, test_set, test_res, ns, ns_b, te, r, seed)
    r["stego_foreign_covers"] = _foreign_covers(out, cover_dataset, te, test_set, f, ns,
                                                n_pairs, r, data_dir, source, progress)
    if "figure" in (r["stego_foreign_covers"] or {}):
        r["figures"]["foreign_covers"] = r["stego_foreign_covers"]["figure"]
    for key in ("filtered_train", "paper_set"):
        r[key] = {k: v for k, v in r[key].items() if k != "mask"}
    r["paper"] = {k: v._asdict() for k, v in paper.paper_values(dataset).items()}
    r["wall_seconds"] = progress.seconds()
    write_report(out, r, _markdown(r))
    progress(f"wrote {out / 'report.json'}, {out / 'report.md'} and "
             f"{len(r['figures'])} figures in {out / 'figures'}")
    return r


def _model_for(tr: _data.Dataset, arch):
    n = math.prod(tr.input_shape)
    classes = len(tr.class_names)
    arch = tuple(arch) if arch is not None else (n, 32, 16, classes)
    if arch[0] != n or arch[-1] < classes:
        raise ValueError(f"arch {arch} does not fit {tr.name}: needs input {n} and at least "
                         f"{classes} outputs")
    return FCNN(arch), arch


def _train_nets(out: Path, model, cfg, tr, progress: Progress) -> dict:
    """Net A (the experiment's) and net B (same recipe, seed + 1); ``{name: (vars, s)}``."""
    a = train_or_restore(out, "net-a", model, cfg, tr, progress)
    b = train_or_restore(out, "net-b", model, cfg.replace(seed=cfg.seed + 1), tr, progress)
    return {"a": a[:2], "b": b[:2]}


def _null_space_entries(model, variables, ns, ns_b, seed: int, progress: Progress) -> dict:
    inv = check_invariance(lambda x: model.apply(variables, x), ns, jax.random.key(seed + 10))
    progress(f"null space: rank {ns.rank}, dim {ns.dim}; invariance: {inv.summary()}")
    return {"null_space_dim": ns.dim, "rank": ns.rank, "rank_tolerance": float(ns.tol),
            "invariance_max_rel_error": inv.max_rel_error,
            "invariance_by_scale": inv.by_scale(), "invariance_max_ulps": inv.max_ulps,
            "invariance_passed": inv.passed, "second_network_null_space_dim": ns_b.dim}


def _figures_of_merit(model, variables, tr, te, alpha1: float, progress: Progress) -> dict:
    """Accuracy and confidences on train and test, and the paper's filtered training set."""
    ev_train = _train.evaluate(model, variables, tr.images, tr.labels, alpha=alpha1)
    ev_test = _train.evaluate(model, variables, te.images, te.labels, alpha=alpha1)
    kept = filtered_set(model, variables, tr.images, tr.labels, alpha1=alpha1)
    subset = paper_subset(kept["mask"], tr.labels)
    progress(f"accuracy train {pct(ev_train['accuracy'])} (rescaled "
             f"{pct(ev_train['accuracy_rescaled'])}), test {pct(ev_test['accuracy'])}; "
             f"filtered training set {kept['n']} images, confidence "
             f"{pct(kept['mean_confidence'])} / {pct(kept['mean_confidence_rescaled'])}; "
             f"the paper's set: {subset['n']} images (5,000 per class)")
    return {"accuracy": ev_train["accuracy"], "accuracy_rescaled": ev_train["accuracy_rescaled"],
            "train_eval": ev_train, "test_eval": ev_test, "filtered_train": kept,
            "paper_set": subset}


def _stego_runs(r: dict, f, model, variables, ns, tr, te, n_pairs: int, progress: Progress):
    """Stego over pairs from the filtered test images and from the paper's training set
    (``r["paper_set"]["mask"]``: 5,000 per class, right at both scales); fills ``r`` and
    returns the test images used and their :class:`~nsjax.experiments._pipeline.StegoPairs`.
    """
    alpha1, seed = r["alpha1"], r["seed"]
    keep_test = filtered_set(model, variables, te.images, te.labels, alpha1=alpha1)["mask"]
    keep_train = r["paper_set"]["mask"]
    r["n_filtered_test"] = int(keep_test.sum())
    sets = {"test": (te.images[keep_test], te.labels[keep_test]),
            "train_filtered": (tr.images[keep_train], tr.labels[keep_train])}
    results = {}
    for i, (name, (x, y)) in enumerate(sets.items()):
        results[name] = stego_pairs(f, ns, x, y, x, y, n_pairs=n_pairs, alpha1=alpha1,
                                    alpha2_cap=r["alpha2_cap"],
                                    key=jax.random.key(seed + 20 + i))
        progress(f"stego, pairs from the filtered {name.replace('_filtered', '')} images: "
                 f"{_stego_line(results[name].summary)}")
    r["stego"] = results["test"].summary
    r["stego_train_filtered"] = results["train_filtered"].summary
    return sets["test"], results["test"]


def _stego_line(s: dict) -> str:
    return (f"success {pct(s['success_rate'])}, max |softmax f(S) - softmax f(a1 H)| "
            f"{s['agreement_max_abs']:.2e} (float64 pass: "
            f"{sci(s['agreement_max_abs_float64_eval'])}), PSNR(S, C) "
            f"{s['psnr_cover_mean']:.1f} dB, SSIM(S, a2 C) {s['ssim_scaled_cover_mean']:.3f}")


def _foreign_covers(out: Path, cover_dataset, te, hidden_set, f, ns, n_pairs, r: dict, data_dir,
                    source, progress: Progress):
    """Stego with covers from another dataset and its triplet figure (Fig 4); ``None`` when
    none is asked for."""
    if cover_dataset is None:
        return None
    try:
        cov = _data.load(cover_dataset, "test", data_dir=data_dir,
                         source="auto" if source == "embedded" else source)
        if cov.input_shape != te.input_shape:
            raise ValueError(f"{cover_dataset} images are {cov.input_shape}, "
                             f"not {te.input_shape}")
    except (ValueError, FileNotFoundError) as err:
        progress(f"covers from {cover_dataset}: not run ({err})")
        return {"cover_dataset": cover_dataset, "not_run": str(err)}
    x, y = hidden_set
    res = stego_pairs(f, ns, cov.images, cov.labels, x, y, n_pairs=n_pairs,
                      alpha1=r["alpha1"], alpha2_cap=r["alpha2_cap"],
                      key=jax.random.key(r["seed"] + 30), different_classes=False)
    progress(f"covers from {cover_dataset}: {_stego_line(res.summary)}")
    fig = triplet_figure(
        out / "figures" / "stego_triplets_foreign_covers.png", f, cov.images, x, res, rows=4,
        alpha1=r["alpha1"], class_names=te.class_names,
        title=f"covers from {cover_dataset}, hidden images from {r['dataset']}")
    return {"cover_dataset": cover_dataset, "source": cov.source,
            "figure": str(Path(fig).relative_to(out)), **res.summary}


def _relu_surface_net(seed: int):
    """The (2, 1, 3, 1) ReLU net of Fig. 1, with random biases (Flax initialises them to 0,
    which would put every kink through the origin)."""
    net = FCNN((2, 1, 3, 1))
    params = init_params(net, jax.random.key(seed + 3))
    params = jax.tree_util.tree_map_with_path(
        lambda path, a: (jax.random.normal(jax.random.key(seed + 4), a.shape)
                         if "bias" in jax.tree_util.keystr(path) else a), params)
    return net, params


def _figures(out: Path, f, test_set, res, ns, ns_b, te, r: dict, seed: int) -> dict:
    """Figs 1, 2, 3, 7 and 10-11 of the paper for this run; ``{name: path relative to out}``."""
    figs, (x, _), names = out / "figures", test_set, te.class_names
    d, i0, h0 = res.details, res.cover_index[0], res.hidden_index[0]
    paths = {
        "triplets": triplet_figure(
            figs / "stego_triplets.png", f, x, x, res, rows=6, alpha1=r["alpha1"],
            class_names=names,
            title=f"{r['dataset']}, FCNN{tuple(r['arch'])}, null space dim {ns.dim}"),
        "pipeline": _plots.plot_pipeline(
            figs / "pipeline.png", x[i0], x[h0], ns.project(x[i0]), ns.complement(x[h0]),
            d["stego"][0], alpha1=r["alpha1"], alpha2=float(d["alpha2"][0]),
            stego_label=f"f(S) -> {names[int(d['pred'][0])]} "
                        f"({100 * float(d['conf'][0]):.1f}%)"),
        "what_nn_sees": _plots.plot_what_nn_sees(
            figs / "what_nn_sees.png", te.images[:8],
            [np.asarray(ns.complement(te.images[:8])), np.asarray(ns_b.complement(te.images[:8]))],
            names=["net A", "net B (other seed)"]),
    }
    # Fig 7: the pair whose f(S) is least confident, its H beside alpha1 H
    k = int(np.argmin(d["conf"]))
    h = x[res.hidden_index[k]]
    probs = np.asarray(jax.nn.softmax(f(np.stack([h, r["alpha1"] * h]))))
    paths["rescaled"] = _plots.plot_rescaled(
        figs / "hidden_vs_rescaled.png", h, probs[0], probs[1], alpha1=r["alpha1"],
        class_names=names, title="the least confident stego image's hidden image: "
        f"f(S) = f({r['alpha1']:g} H) up to rounding ({100 * float(d['conf'][k]):.1f}%)")
    net, params = _relu_surface_net(seed)
    ns1 = null_space_of(net, params, (2,))
    paths["relu_surface"] = _plots.plot_relu_surface(
        figs / "relu_2_1_3_1_surface.png", lambda z: net.apply(params, jnp.asarray(z))[:, 0],
        np.asarray(ns1.basis())[:, 0])
    return {k: str(Path(v).relative_to(out)) for k, v in paths.items()}


def _markdown(r: dict) -> str:
    ev = r["test_eval"]
    lines = [
        f"# nsjax: null-space steganography on {r['dataset']}", "",
        f"Data: {r['data_source']} ({r['n_train']} train / {r['n_test']} test images, "
        "scaled to [-1, 1]).",
        f"Network: FCNN{tuple(r['arch'])} ReLU, trained on originals + {r['alpha1']}-rescaled "
        f"copies in {r['train_seconds']:.1f} s.", "",
        "## The paper's numbers beside ours", "",
        *paper.comparison_rows(r["dataset"], r), "",
        f"Test accuracy (original / rescaled): {pct(ev['accuracy'])} / "
        f"{pct(ev['accuracy_rescaled'])} (the paper gives none). Invariance max relative "
        f"error for |a| up to 1e3: {r['invariance_max_rel_error']:.2e} "
        f"({r['invariance_max_ulps']:.1f} ulps of the float32 floor).", "",
    ]
    for key, where in (("stego", f"the {r['n_filtered_test']} test images"),
                       ("stego_train_filtered",
                        f"the paper's training set ({r['paper_set']['n']} images, at most "
                        "5,000 per class)")):
        s = r[key]
        lines += [f"## Steganography over {s['n_pairs']} random pairs (different classes) "
                  f"from {where} classified correctly at scale 1 and {r['alpha1']}", "",
                  *stego_table(s), ""]
    fc = r.get("stego_foreign_covers")
    if fc:
        lines += [f"## Covers from {fc['cover_dataset']}", ""]
        lines += ([f"Not run: {fc['not_run']}"] if "not_run" in fc else stego_table(fc)) + [""]
    lines += ["## Figures", "", *[f"![{k}]({v})" for k, v in r["figures"].items()], "",
              f"Total wall time: {r['wall_seconds']:.1f} s.", ""]
    return "\n".join(lines)
