"""Null-space steganography end to end: the main job (``nsjax demo``) and paper experiments.

Steps of :func:`run_experiment` (each printed as it runs):

1. load a dataset (the demo: the real MNIST sample embedded in the package, which works
   offline right after ``pip install``; ``data_dir`` switches to full files);
2. train -- or reuse the checkpoint cached in ``out_dir`` -- an FCNN (paper: (784, 32, 16,
   10) ReLU) on originals + ``alpha1``-rescaled copies, and a second net of the same
   architecture from another seed (for "what another network sees");
3. compute the null space of the first layer and check the invariant numerically;
4. keep the test images the net classifies correctly at scale 1 and ``alpha1``; build stego
   images for ``n_pairs`` random cover/hidden pairs of different classes; measure; and
   again with covers from another dataset when one is given and present;
5. write ``report.json``, ``report.md`` and the figures into ``out_dir``, with the paper's
   numbers beside ours where the paper gives them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from nsjax import _checkpoint, _data, _plots, _train
from nsjax._experiment import evaluate_stego, make_pairs
from nsjax._first_layer import null_space_of
from nsjax._invariance import check_invariance
from nsjax._models import FCNN, init_params

__all__ = ["run_demo", "run_experiment", "DEMO_ARCH", "PAPER"]

DEMO_ARCH = (784, 32, 16, 10)

# Numbers the paper reports (Sec. 4), for side-by-side tables.  None: not reported.
PAPER = {
    "mnist": {"null_space_dim": 752, "accuracy": 0.9979, "accuracy_rescaled": 0.9978,
              "mean_confidence_correct": 0.9998, "mean_confidence_correct_rescaled": 0.9977},
    "fashion_mnist": {"null_space_dim": 752, "accuracy": None, "accuracy_rescaled": None,
                      "mean_confidence_correct": 0.9974,
                      "mean_confidence_correct_rescaled": 0.9722},
    "emnist_balanced": {},
    "cifar10": {},
}


def _log(msg: str, t0: float, quiet: bool) -> None:
    if not quiet:
        print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", flush=True)


def run_demo(out_dir: str | Path = "results/demo", *, data_dir=None, source: str = "embedded",
             **kwargs) -> dict:
    """The main job: :func:`run_experiment` on MNIST with the paper's (784, 32, 16, 10) net.

    By default it uses the real MNIST sample embedded in the package (offline, ~1 minute on
    2 CPU cores); ``data_dir`` switches to the full dataset files.
    """
    if data_dir is not None and source == "embedded":
        source = "files"
    return run_experiment("mnist", out_dir, data_dir=data_dir, source=source, **kwargs)


def run_experiment(
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
    cover_dataset: str | None = None,
    quiet: bool = False,
) -> dict:
    """Train (or reuse), find the null space, check it, hide images, measure, plot, report.

    Args:
      dataset: one of ``nsjax._data.DATASETS``.
      out_dir: folder for ``report.json``, ``report.md``, ``figures/`` and ``checkpoints/``.
      data_dir, source: where the data comes from (see :func:`nsjax._data.load`).
      arch: FCNN layer sizes; default ``(n, 32, 16, classes)`` as in the paper.
      n_pairs: number of cover/hidden pairs evaluated.
      epochs: training epochs (default: ``nsjax.training.recipe(dataset)``).
      seed: PRNG seed for initialisation, minibatches, probes and pairs.
      alpha1: hidden-image weight, also the rescaling of the training copies.
      cover_dataset: a second dataset whose test images serve as covers (same image shape);
        reported as not run, with the reason, when it cannot be loaded.
      quiet: no progress output.

    Returns:
      the report dict (also written as ``report.json``).
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    figs = out / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    train_ds = _data.load(dataset, "train", data_dir=data_dir, source=source)
    test_ds = _data.load(dataset, "test", data_dir=data_dir, source=source)
    _log(f"data: {train_ds.source}: {len(train_ds)} train / {len(test_ds)} test", t0, quiet)
    n = int(np.prod(train_ds.input_shape))
    arch = tuple(arch) if arch is not None else (n, 32, 16, len(train_ds.class_names))
    if arch[0] != n or arch[-1] < len(train_ds.class_names):
        raise ValueError(f"arch {arch} does not fit {dataset}: needs input {n} and at least "
                         f"{len(train_ds.class_names)} outputs")
    model = FCNN(arch)

    overrides = {"alpha": alpha1, "seed": seed}
    if epochs is not None:
        overrides["epochs"] = epochs
    cfg_a = _train.recipe(dataset, **overrides)
    cfg_b = cfg_a.replace(seed=seed + 1)
    def log(msg):
        _log(msg, t0, quiet)

    var_a, secs_a, _ = _checkpoint.train_or_restore(out / "checkpoints" / "net-a", model,
                                                    cfg_a, train_ds, log=None if quiet else log)
    var_b, secs_b, _ = _checkpoint.train_or_restore(out / "checkpoints" / "net-b", model,
                                                    cfg_b, train_ds, log=None if quiet else log)
    f_a = jax.jit(lambda x: model.apply(var_a, x))

    ns = null_space_of(model, var_a, train_ds.input_shape)
    ns_b = null_space_of(model, var_b, train_ds.input_shape)
    inv = check_invariance(lambda x: model.apply(var_a, x), ns, jax.random.key(seed + 10))
    _log(f"null space: rank {ns.rank}, dim {ns.dim}; invariance: {inv.summary()}", t0, quiet)

    ev_train = _train.evaluate(model, var_a, train_ds.images, train_ds.labels, alpha=alpha1)
    ev_test = _train.evaluate(model, var_a, test_ds.images, test_ds.labels, alpha=alpha1)
    _log(f"accuracy train {100 * ev_train['accuracy']:.2f}% (rescaled "
         f"{100 * ev_train['accuracy_rescaled']:.2f}%), test {100 * ev_test['accuracy']:.2f}% "
         f"(rescaled {100 * ev_test['accuracy_rescaled']:.2f}%)", t0, quiet)

    keep = np.asarray(_train.filter_correct(model, var_a, test_ds.images, test_ds.labels,
                                            alpha=alpha1))
    images, labels = test_ds.images[keep], test_ds.labels[keep]
    ci, hi = make_pairs(jax.random.key(seed + 20), labels, labels, n_pairs)
    summary, details = evaluate_stego(lambda x: model.apply(var_a, x), ns, images[ci],
                                      images[hi], labels[hi], alpha1=alpha1)
    _log(f"stego on {n_pairs} pairs from {int(keep.sum())} filtered test images: success "
         f"{100 * summary['success_rate']:.2f}%, max |softmax f(S) - softmax f(a1 H)| "
         f"{summary['agreement_max_abs']:.2e} (float64 pass: "
         f"{_sci(summary['agreement_max_abs_float64_eval'])}), "
         f"PSNR(S, C) {summary['psnr_cover_mean']:.1f} dB, "
         f"SSIM(S, a2 C) {summary['ssim_scaled_cover_mean']:.3f}", t0, quiet)

    foreign = None
    if cover_dataset is not None:
        try:
            cov = _data.load(cover_dataset, "test", data_dir=data_dir,
                             source="auto" if source == "embedded" else source)
            if cov.input_shape != test_ds.input_shape:
                raise ValueError(f"{cover_dataset} images are {cov.input_shape}, "
                                 f"not {test_ds.input_shape}")
            fc, fh = make_pairs(jax.random.key(seed + 30), cov.labels, labels, n_pairs,
                                different_classes=False)
            fsum, _ = evaluate_stego(lambda x: model.apply(var_a, x), ns, cov.images[fc],
                                     images[fh], labels[fh], alpha1=alpha1)
            foreign = {"cover_dataset": cover_dataset, "source": cov.source, **fsum}
            _log(f"covers from {cover_dataset}: success {100 * fsum['success_rate']:.2f}%, "
                 f"SSIM(S, a2 C) {fsum['ssim_scaled_cover_mean']:.3f}", t0, quiet)
        except (ValueError, FileNotFoundError) as err:
            foreign = {"cover_dataset": cover_dataset, "not_run": str(err)}
            _log(f"covers from {cover_dataset}: not run ({err})", t0, quiet)

    # ------------------------------------------------------------------ figures
    names = test_ds.class_names
    rows = np.arange(min(6, n_pairs))
    probs_c = np.asarray(jax.nn.softmax(f_a(images[ci[rows]])))
    probs_h = np.asarray(jax.nn.softmax(f_a(images[hi[rows]])))

    def pc(p):
        return np.stack([p.argmax(-1), p.max(-1)], -1)

    paths = {
        "triplets": _plots.plot_triplets(
            figs / "stego_triplets.png", images[ci[rows]], images[hi[rows]],
            details["stego"][rows], alpha1=alpha1, alpha2=details["alpha2"][rows],
            cover_pred=pc(probs_c), hidden_pred=pc(probs_h),
            stego_pred=np.stack([details["pred"][rows], details["conf"][rows]], -1),
            class_names=names, title=f"{dataset}, FCNN{arch}, null space dim {ns.dim}"),
        "pipeline": _plots.plot_pipeline(
            figs / "pipeline.png", images[ci[0]], images[hi[0]], ns.project(images[ci[0]]),
            ns.complement(images[hi[0]]), details["stego"][0], alpha1=alpha1,
            alpha2=float(details["alpha2"][0]),
            stego_label=f"f(S) -> {names[int(details['pred'][0])]} "
                        f"({100 * float(details['conf'][0]):.1f}%)"),
        "what_nn_sees": _plots.plot_what_nn_sees(
            figs / "what_nn_sees.png", images[:8],
            [np.asarray(ns.complement(images[:8])), np.asarray(ns_b.complement(images[:8]))],
            names=["net A", "net B (other seed)"]),
    }
    fig1 = FCNN((2, 1, 3, 1))
    p1 = init_params(fig1, jax.random.key(seed + 3))
    # random biases (Flax initialises them to 0) give the surface its kinks away from 0
    p1 = jax.tree_util.tree_map_with_path(
        lambda path, a: (jax.random.normal(jax.random.key(seed + 4), a.shape)
                         if "bias" in jax.tree_util.keystr(path) else a), p1)
    ns1 = null_space_of(fig1, p1, (2,))
    paths["relu_surface"] = _plots.plot_relu_surface(
        figs / "relu_2_1_3_1_surface.png", lambda x: fig1.apply(p1, jnp.asarray(x))[:, 0],
        np.asarray(ns1.basis())[:, 0])

    report = {
        "dataset": dataset,
        "data_source": train_ds.source,
        "n_train": len(train_ds),
        "n_test": len(test_ds),
        "arch": list(arch),
        "activation": "relu",
        "alpha1": alpha1,
        "seed": seed,
        "train_config": cfg_a.to_dict(),
        "train_seconds": secs_a,
        "null_space_dim": ns.dim,
        "rank": ns.rank,
        "rank_tolerance": float(ns.tol),
        "invariance_max_rel_error": inv.max_rel_error,
        "invariance_by_scale": inv.by_scale(),
        "invariance_max_ulps": inv.max_ulps,
        "invariance_passed": inv.passed,
        "accuracy": ev_train["accuracy"],
        "accuracy_rescaled": ev_train["accuracy_rescaled"],
        "train_eval": ev_train,
        "test_eval": ev_test,
        "n_filtered_test": int(keep.sum()),
        "stego": summary,
        "stego_foreign_covers": foreign,
        "paper": PAPER.get(dataset, {}),
        "figures": {k: str(v.relative_to(out)) for k, v in paths.items()},
        "second_network_null_space_dim": ns_b.dim,
        "second_network_train_seconds": secs_b,
    }
    report["wall_seconds"] = time.perf_counter() - t0
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(_markdown(report))
    _log(f"wrote {out / 'report.json'}, {out / 'report.md'} and {len(paths)} figures in {figs}",
         t0, quiet)
    return report


def _pct(x):
    return "n/a" if x is None else f"{100 * x:.2f} %"


def _paper(r: dict, key: str) -> str:
    v = r["paper"].get(key)
    if v is None:
        return "not reported"
    return str(v) if isinstance(v, int) else _pct(v)


def _sci(v) -> str:
    return "not available" if v is None else f"{v:.2e}"


def _stego_rows(s: dict) -> list[str]:
    return [
        "| metric | value |",
        "|---|---|",
        f"| success rate (argmax f(S) = class of H) | {_pct(s['success_rate'])} |",
        f"| success given alpha1 H correct | {_pct(s['success_rate_given_hidden_correct'])} |",
        f"| max \\|softmax f(S) - softmax f(alpha1 H)\\|, float32 forward pass | "
        f"{s['agreement_max_abs']:.2e} |",
        f"| the same, float64 forward pass of the same float32 images | "
        f"{_sci(s.get('agreement_max_abs_float64_eval'))} |",
        f"| mean confidence of f(S) | {_pct(s['confidence_mean'])} |",
        f"| alpha2 mean +- std [min, max] | {s['alpha2_mean']:.3f} +- {s['alpha2_std']:.3f} "
        f"[{s['alpha2_min']:.3f}, {s['alpha2_max']:.3f}] |",
        f"| PSNR(S, C) / SSIM(S, C) | {s['psnr_cover_mean']:.2f} dB / "
        f"{s['ssim_cover_mean']:.3f} |",
        f"| PSNR(S, alpha2 C) / SSIM(S, alpha2 C) | {s['psnr_scaled_cover_mean']:.2f} dB / "
        f"{s['ssim_scaled_cover_mean']:.3f} |",
        f"| PSNR(S, H) (hidden image visibility) | {s['psnr_hidden_mean']:.2f} dB |",
        f"| max \\|S\\| (domain [-1, 1]) | {s['stego_max_abs']:.6f} |",
    ]


def _markdown(r: dict) -> str:
    ev, s = r["train_eval"], r["stego"]
    lines = [
        f"# nsjax: null-space steganography on {r['dataset']}",
        "",
        f"Data: {r['data_source']} ({r['n_train']} train / {r['n_test']} test images, "
        "scaled to [-1, 1]).",
        f"Network: FCNN{tuple(r['arch'])} ReLU, trained on originals + {r['alpha1']}-rescaled "
        f"copies in {r['train_seconds']:.1f} s.",
        "",
        "| quantity | ours | paper |",
        "|---|---|---|",
        f"| null space dim | {r['null_space_dim']} | {_paper(r, 'null_space_dim')} |",
        f"| train accuracy (original) | {_pct(r['accuracy'])} | {_paper(r, 'accuracy')} |",
        f"| train accuracy (rescaled x{r['alpha1']}) | {_pct(r['accuracy_rescaled'])} | "
        f"{_paper(r, 'accuracy_rescaled')} |",
        f"| mean confidence, correct originals | {_pct(ev['mean_confidence_correct'])} | "
        f"{_paper(r, 'mean_confidence_correct')} |",
        f"| mean confidence, correct rescaled | "
        f"{_pct(ev['mean_confidence_correct_rescaled'])} | "
        f"{_paper(r, 'mean_confidence_correct_rescaled')} |",
        f"| test accuracy (original / rescaled) | {_pct(r['test_eval']['accuracy'])} / "
        f"{_pct(r['test_eval']['accuracy_rescaled'])} | not reported |",
        f"| invariance max rel. error, \\|a\\| up to 1e3 | {r['invariance_max_rel_error']:.2e} "
        f"({r['invariance_max_ulps']:.1f} ulps of the float32 floor) | not reported |",
        "",
        f"## Steganography over {s['n_pairs']} random pairs (different classes) from the "
        f"{r['n_filtered_test']} test images classified correctly at scale 1 and "
        f"{r['alpha1']}",
        "",
        *_stego_rows(s),
        "",
    ]
    f = r.get("stego_foreign_covers")
    if f:
        lines += [f"## Covers from {f['cover_dataset']}", ""]
        lines += ([f"Not run: {f['not_run']}"] if "not_run" in f else _stego_rows(f)) + [""]
    lines += ["## Figures", ""]
    lines += [f"![{k}]({v})" for k, v in r["figures"].items()]
    lines += ["", f"Total wall time: {r['wall_seconds']:.1f} s.", ""]
    return "\n".join(lines)


def script_main(dataset: str, argv=None, *, cover_dataset: str | None = None,
                arch: tuple[int, ...] | None = None) -> int:
    """Command line of the ``scripts/stego_*.py`` paper experiments (one per dataset).

    ``--data-dir DIR --out DIR [--pairs N] [--epochs E] [--seed S]``.  A dataset that is not
    present is reported as not run, with the reason, in ``OUT/report.md`` and
    ``OUT/report.json`` (exit code 0: nothing failed, there was nothing to run).
    """
    import argparse

    parser = argparse.ArgumentParser(description=f"Null-space steganography on {dataset}, "
                                     "with the paper's numbers side by side.")
    parser.add_argument("--data-dir", default=None, help="dataset folder (or NSJAX_DATA_DIR)")
    parser.add_argument("--source", default="auto")
    parser.add_argument("--out", default=f"results/{dataset}")
    parser.add_argument("--pairs", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    try:
        report = run_experiment(dataset, args.out, data_dir=args.data_dir, source=args.source,
                                arch=arch, n_pairs=args.pairs, epochs=args.epochs,
                                seed=args.seed, cover_dataset=cover_dataset, quiet=args.quiet)
    except _data.DatasetNotFoundError as err:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps({"dataset": dataset, "not_run": str(err)},
                                                    indent=2))
        (out / "report.md").write_text(f"# {dataset}: not run\n\n{err}\n")
        print(f"{dataset}: not run: {err}")
        return 0
    print(f"{dataset}: wrote {args.out}/report.md (success "
          f"{100 * report['stego']['success_rate']:.2f}%)")
    return 0
