"""``nsjax certify | detect | remedy``: the "beyond the paper" experiments, end to end.

Register with ``nsjax._cli_beyond.add_parser(subparsers)`` (``nsjax/cli.py`` does it when
this module is importable).  Each subcommand loads real data, trains the nets it needs (or
reuses the checkpoints it saved in ``--out/checkpoints/``), calls the library
(:mod:`nsjax._certify`, :mod:`nsjax._detect`, :mod:`nsjax._remedy`) and writes
``--out/report.json``, ``--out/report.md`` and ``--out/figures/*.png``.
``args.func(args)`` returns the exit code.  ``scripts/beyond_*.py`` call
:func:`script_main`.

* ``certify``: lower / upper bound of ``dim N(f)`` for trained and random FCNNs and CNNs and
  for planted counter-examples whose null space is larger than ``Null(W1)``; exit code 1 if a
  certificate does not behave as the theory says (trained / random nets: bounds meet;
  planted nets: upper bound = the dimension computed by hand).
* ``detect``: null-space steganalysis on whole test sets, for several ``alpha1``.
* ``remedy``: the paper's net beside nets with a trivial null space, one table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from nsjax import _checkpoint
from nsjax._checkpoint import _json_default

__all__ = ["add_parser", "script_main", "run_certify", "run_detect", "run_remedy",
           "train_or_restore"]

DEFAULT_ALPHAS = (0.1, 0.2, 0.5)


# --------------------------------------------------------------------------- shared helpers


def _log(msg: str, t0: float, quiet: bool) -> None:
    if not quiet:
        print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", flush=True)


def _write(out: Path, report: dict, markdown: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=_json_default))
    (out / "report.md").write_text(markdown)


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.2f} %"


def train_or_restore(out: Path, name: str, model, config, train_ds, *, t0=None,
                     quiet: bool = False):
    """:func:`nsjax._checkpoint.train_or_restore` on ``out/checkpoints/name``, with this
    module's progress lines.  Returns ``(variables, train_seconds, reused)``."""
    t0 = time.perf_counter() if t0 is None else t0
    return _checkpoint.train_or_restore(Path(out) / "checkpoints" / name, model, config,
                                        train_ds,
                                        log=None if quiet else (lambda m: _log(m, t0, quiet)))


def _load(dataset, data_dir, source, limit=None):
    from nsjax import _data

    tr = _data.load(dataset, "train", data_dir=data_dir, source=source, limit=limit)
    te = _data.load(dataset, "test", data_dir=data_dir, source=source)
    return tr, te


def _config(dataset, epochs, seed, alpha):
    from nsjax._train import recipe

    changes = {"seed": seed, "alpha": alpha}
    if epochs is not None:
        changes["epochs"] = epochs
    return recipe(dataset, **changes)


def _not_run(out: Path, what: str, err: Exception, quiet: bool) -> int:
    _write(out, {"experiment": what, "not_run": str(err)}, f"# {what}: not run\n\n{err}\n")
    if not quiet:
        print(f"{what}: not run: {err}")
    return 0


# --------------------------------------------------------------------------- certify


def run_certify(out_dir="results/beyond/certify", *, dataset: str = "mnist", data_dir=None,
                source: str = "auto", epochs: int | None = 10, seed: int = 0,
                n_points: int | None = None, n_data_points: int = 1000,
                quiet: bool = False) -> dict:
    """Certificates for trained / random / planted nets; ``report.json``, ``report.md``,
    ``figures/spectra.png``.  Returns the report (``report["all_as_expected"]``)."""
    import jax

    import nsjax
    from nsjax import _certify

    t0 = time.perf_counter()
    out = Path(out_dir)
    figs = out / "figures"
    tr, te = _load(dataset, data_dir, source)
    shape = tr.input_shape
    n = math.prod(shape)
    classes = len(tr.class_names)
    _log(f"data: {tr.source}: {len(tr)} train / {len(te)} test", t0, quiet)
    cfg = _config(dataset, epochs, seed, 0.2)

    fc = nsjax.FCNN((n, 32, 16, classes))
    cnn1 = nsjax.CNN(input_shape=shape, kernels=1, padding="VALID", hidden=(32,),
                     num_classes=classes)
    cnn6 = nsjax.CNN(input_shape=shape, kernels=6, padding="VALID", hidden=(32,),
                     num_classes=classes)
    trained = {}
    for name, model in (("fcnn", fc), ("cnn1_valid", cnn1), ("cnn6_valid", cnn6)):
        v, secs, _ = train_or_restore(out, name, model, cfg, tr, t0=t0, quiet=quiet)
        trained[name] = (model, v, secs)
    key = jax.random.key(seed + 100)
    rows, certs, ok_all = [], {}, True

    def add(label, model, variables, expected_upper, kind, *, data=None, points=n_points,
            note=""):
        nonlocal ok_all
        start = time.perf_counter()
        c = _certify.certify(model, variables, key, points, input_shape=shape, data=data)
        secs = time.perf_counter() - start
        if expected_upper == "meet":
            ok = c.meets
        elif expected_upper is None:
            ok = True
        else:
            ok = c.upper == expected_upper and c.upper > c.lower
        ok_all &= bool(ok)
        certs[label] = c
        row = {"net": label, "kind": kind, **c.summary(),
               "expected_upper": None if expected_upper in (None, "meet") else expected_upper,
               "as_expected": bool(ok), "seconds": secs, "note": note}
        rows.append(row)
        _log(f"{label}: lower {c.lower}, upper {c.upper}, meets {c.meets}"
             f"{'' if expected_upper in (None, 'meet') else f', by hand {expected_upper}'}"
             f" ({'ok' if ok else 'UNEXPECTED'}; {c.rows} x {c.n} stack, "
             f"{secs:.1f} s)", t0, quiet)
        return c

    from nsjax._train import evaluate

    accs = {}
    for name, (model, v, _) in trained.items():
        accs[name] = evaluate(model, v, te.images, te.labels, alpha=0.2)["accuracy"]
    m_fc, v_fc = trained["fcnn"][:2]
    add("FCNN(784,32,16,10) trained", m_fc, v_fc, "meet", "trained",
        note=f"test acc {_pct(accs['fcnn'])}")
    add("FCNN(784,32,16,10) random init", m_fc, nsjax.init_params(m_fc, jax.random.key(seed)),
        "meet", "random")
    add("CNN 1 kernel 3x3 VALID trained", *trained["cnn1_valid"][:2], "meet", "trained",
        note=f"test acc {_pct(accs['cnn1_valid'])}; paper: 28^2 - 26^2 = 108")
    add("CNN 6 kernels 3x3 VALID trained", *trained["cnn6_valid"][:2], "meet", "trained",
        note=f"test acc {_pct(accs['cnn6_valid'])}")
    # sampling only on data: a valid but looser bound when units never fire on the data
    idx = np.random.default_rng(seed).choice(len(tr), min(n_data_points, len(tr)), False)
    add(f"FCNN trained, {len(idx)} training images only", m_fc, v_fc, None, "data points",
        data=tr.images[idx], points=0,
        note="upper > lower means first-layer units that never fire on these images")
    # planted counter-examples, dims by hand
    for k in (1, 4, 16):
        v_dead = _certify.plant_dead_units(m_fc, v_fc, k)
        by_hand = _certify.dead_unit_dim(m_fc, v_fc, k)
        add(f"FCNN trained, {k} dead unit(s)", m_fc, v_dead, by_hand, "planted",
            note=f"by hand: 784 - (32 - {k}) = {784 - 32 + k} when W1 has full rank")
    v_pair = _certify.plant_cancelling_pair(m_fc, v_fc, 0, 1)
    add("FCNN trained, cancelling pair", m_fc, v_pair, n - 32 + 2, "planted",
        note="units 0, 1 identical, outgoing weights opposite: lower n-31, upper n-30")
    cnn2 = nsjax.CNN(input_shape=shape, kernels=2, padding="VALID", hidden=(32,),
                     num_classes=classes)
    v2 = nsjax.init_params(cnn2, jax.random.key(seed + 1))
    add("CNN 2 kernels VALID random init", cnn2, v2, "meet", "random")
    add("CNN 2 kernels VALID, channel 1 dead", cnn2, _certify.plant_dead_units(cnn2, v2, [1]),
        _certify.dead_unit_dim(cnn2, v2, [1]), "planted",
        note="only kernel 0 matters: upper = dim Null(kernel 0) = 108")

    figs.mkdir(parents=True, exist_ok=True)
    pick = {k: certs[k] for k in ("FCNN(784,32,16,10) trained", "FCNN trained, 16 dead unit(s)",
                                   "CNN 1 kernel 3x3 VALID trained",
                                   "CNN 6 kernels 3x3 VALID trained")}
    # the same stack in float32, to show the rounding floor float64 removes
    c_fc = certs["FCNN(784,32,16,10) trained"]
    pts = np.asarray(jax.random.uniform(key, (c_fc.n_points, n), minval=-1.0, maxval=1.0))
    s32 = np.linalg.svd(_certify.stacked_jacobian(m_fc, v_fc, pts, input_shape=shape,
                                                  x64=False), compute_uv=False)
    r32 = n - c_fc.lower
    float32_floor = {"largest_sigma_rel_outside_row_space": float(s32[r32] / s32[0]),
                     "smallest_sigma_rel_inside": float(s32[r32 - 1] / s32[0]),
                     "float32_rtol": float(max(c_fc.rows, n) * np.finfo(np.float32).eps)}
    _log(f"float32 stack of the trained FCNN: sigma_33 / sigma_max = "
         f"{float32_floor['largest_sigma_rel_outside_row_space']:.1e} (float64: "
         f"{c_fc.summary()['largest_dropped_sigma_rel']:.1e})", t0, quiet)
    fig = _certify.plot_spectrum(figs / "spectra.png", pick,
                                 extra={"FCNN trained, same stack in float32": s32})
    report = {
        "experiment": "certify", "dataset": dataset, "data_source": tr.source,
        "train_config": cfg.to_dict(), "test_accuracy": accs, "rows": rows,
        "all_as_expected": bool(ok_all), "float32_stack": float32_floor,
        "figures": {"spectra": str(fig.relative_to(out))},
        "wall_seconds": time.perf_counter() - t0,
    }
    _write(out, report, _certify_md(report))
    _log(f"wrote {out / 'report.md'}", t0, quiet)
    return report


def _certify_md(r: dict) -> str:
    lines = [
        f"# Certificate of the null space N(f) ({r['dataset']})",
        "",
        "lower = dim Null(first linear map) (Lemma 2.3: a subspace of N(f)); upper = n - rank "
        "of the Jacobians J_f(x_i) stacked over sampled points (float64; every v in N(f) has "
        "J_f(x) v = 0 wherever f is differentiable, i.e. almost everywhere for ReLU nets). "
        "Equal bounds certify N(f) = Null(f1). Rank rule: sigma > max(rows, n) eps64 "
        "sigma_max (nsjax.null_space).",
        "",
        "| net | lower | upper | meets | by hand | points | stack | smallest kept / largest "
        "dropped sigma (rel.) | containment | as expected | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for x in r["rows"]:
        kept = x["smallest_kept_sigma_rel"]
        drop = x["largest_dropped_sigma_rel"]
        lines.append(
            f"| {x['net']} | {x['lower']} | {x['upper']} | {x['meets']} | "
            f"{'' if x['expected_upper'] is None else x['expected_upper']} | {x['points']} | "
            f"{x['rows']} x {x['n']} | {'-' if kept is None else f'{kept:.2e}'} / "
            f"{'-' if drop is None else f'{drop:.2e}'} | {x['containment']:.1e} | "
            f"{'yes' if x['as_expected'] else '**NO**'} | {x['note']} |")
    f32 = r["float32_stack"]
    lines += ["", f"All as expected: {r['all_as_expected']}.", "",
              "Why float64: the same stack for the trained FCNN computed in float32 has "
              f"sigma_(n-lower+1) / sigma_max = {f32['largest_sigma_rel_outside_row_space']:.1e}"
              " (rounding outside the row space of W1) against "
              f"{f32['smallest_sigma_rel_inside']:.1e} for the smallest genuine one, with the "
              f"float32 rule's rtol {f32['float32_rtol']:.1e} in between: float32 would still "
              "decide this net correctly, but its tolerance sits within a few decades of both "
              "the rounding floor and the genuine small singular values (which reach ~1e-3 for "
              "the VALID CNNs and lower for worse-conditioned layers). In float64 the floor is "
              "~1e-16 and the tolerance ~1e-13 (table): ~10 decades of margin.", "",
              f"![spectra]({r['figures']['spectra']})", "",
              f"Wall time {r['wall_seconds']:.1f} s.", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- detect


def run_detect(out_dir="results/beyond/detect", *, datasets=("mnist", "fashion_mnist"),
               alphas=DEFAULT_ALPHAS, statistics=None, data_dir=None, source: str = "auto",
               epochs: int | None = None, seed: int = 0, fpr: float = 0.01,
               quiet: bool = False) -> dict:
    """Detector table (AUC, TPR at the calibrated 1 % FPR threshold, realised FPR) on whole
    test sets, for every dataset / ``alpha1`` / statistic; ROC figures per dataset."""
    import jax

    import nsjax
    from nsjax import _data, _detect
    from nsjax._train import evaluate, predict

    statistics = tuple(statistics or _detect.STATISTICS)
    t0 = time.perf_counter()
    out = Path(out_dir)
    figs = out / "figures"
    rows, per_ds, fig_paths = [], {}, {}
    for ds in datasets:
        try:
            tr, te = _load(ds, data_dir, source)
        except _data.DatasetNotFoundError as err:
            per_ds[ds] = {"not_run": str(err)}
            _log(f"{ds}: not run ({err})", t0, quiet)
            continue
        n = math.prod(tr.input_shape)
        model = nsjax.FCNN((n, 32, 16, len(tr.class_names)))
        cfg = _config(ds, epochs, seed, 0.2)
        v, _, _ = train_or_restore(out, f"fcnn-{ds}", model, cfg, tr, t0=t0, quiet=quiet)
        ns = nsjax.null_space_of(model, v, tr.input_shape)
        acc = evaluate(model, v, te.images, te.labels, alpha=None)["accuracy"]
        per_ds[ds] = {"data_source": tr.source, "n_train": len(tr), "n_test": len(te),
                      "null_space_dim": ns.dim, "test_accuracy": acc,
                      "train_config": cfg.to_dict()}
        dets = {s: _detect.fit_detector(ns, tr.images, statistic=s, fpr=fpr, seed=seed)
                for s in statistics}
        _log(f"{ds}: null dim {ns.dim}, test acc {_pct(acc)}; detectors fitted on "
             f"{dets[statistics[0]].n_fit} train images, thresholds on "
             f"{dets[statistics[0]].n_calibration} held-out train images", t0, quiet)
        curves = {s: {} for s in statistics}
        for a1 in alphas:
            ss = _detect.make_stego_set(ns, te.images, te.labels, te.images, te.labels,
                                        alpha1=a1, key=jax.random.key(seed + int(1000 * a1)))
            pred = predict(model, v, ss.images).argmax(-1)
            success = float(np.mean(pred == te.labels[ss.hidden_index]))
            for s, det in dets.items():
                ev = _detect.evaluate_detector(det, te.images, ss.images)
                scores = ev.pop("_scores")
                fpr_c, tpr_c, _ = _detect.roc_curve(scores["clean"], scores["stego"])
                curves[s][f"alpha1 = {a1:g}"] = (fpr_c, tpr_c, ev["auc"])
                rows.append({"dataset": ds, "alpha1": a1, **ev,
                             "n_admissible_hidden": ss.n_admissible_hidden,
                             "alpha2_mean": float(ss.alpha2.mean()),
                             "stego_success": success,
                             "calibration_fpr": det.calibration_fpr})
            _log(f"{ds} alpha1={a1:g}: {ss.images.shape[0]} stego (hidden from "
                 f"{ss.n_admissible_hidden} admissible), attack success {_pct(success)}; AUC "
                 + ", ".join(f"{r['statistic']} {r['auc']:.4f}" for r in rows[-len(dets):]),
                 t0, quiet)
        for s in statistics:
            p = _detect.plot_roc(figs / f"roc_{ds}_{s}.png", curves[s],
                                 title=f"{ds}: statistic '{s}', clean vs stego TEST images; "
                                 f"dotted: {fpr:g} FPR", fpr_mark=fpr)
            fig_paths[f"{ds}/{s}"] = str(p.relative_to(out))
    report = {"experiment": "detect", "datasets": per_ds, "alphas": list(alphas),
              "statistics": list(statistics), "fpr_target": fpr, "rows": rows,
              "figures": fig_paths, "wall_seconds": time.perf_counter() - t0}
    _write(out, report, _detect_md(report))
    _log(f"wrote {out / 'report.md'}", t0, quiet)
    return report


def _detect_md(r: dict) -> str:
    lines = [
        "# Detecting null-space stego images",
        "",
        "Detector fitted on 80 % of the clean TRAINING images, threshold = 99th percentile of "
        "its score on the other 20 % (held out): target FPR 1 %. Evaluated on the whole TEST "
        "set: every test image clean (negatives) and as the cover of one stego image "
        "S = alpha1 H_perp + alpha2 C_hat (positives; H a random test image of another class "
        "whose alpha1 H_perp fits in [-1, 1], alpha2 the largest admissible). AUC by the "
        "Mann-Whitney rank formula. Attack success: argmax f(S) = class of H (all pairs, "
        "unfiltered). Statistics: 'consistency' = log ||x_perp - "
        "ridge(x_hat)|| / ||x||; 'gauss' = Mahalanobis distance of (log||x_hat||, "
        "log||x_perp||); 'ratio' = log ||x_hat|| / ||x_perp||; 'perp' = -log ||x_perp||.",
        "",
    ]
    for ds, d in r["datasets"].items():
        if "not_run" in d:
            lines += [f"## {ds}: not run", "", d["not_run"], ""]
            continue
        lines += [f"## {ds}", "",
                  f"Data: {d['data_source']}; FCNN null space dim {d['null_space_dim']}, test "
                  f"accuracy {_pct(d['test_accuracy'])}.", "",
                  "| alpha1 | statistic | AUC | TPR at threshold | realised FPR (test) | "
                  "n clean / n stego | admissible hidden | attack success | mean alpha2 |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for x in r["rows"]:
            if x["dataset"] != ds:
                continue
            lines.append(f"| {x['alpha1']:g} | {x['statistic']} | {x['auc']:.5f} | "
                         f"{_pct(x['tpr_at_threshold'])} | {_pct(x['fpr_realised'])} | "
                         f"{x['n_clean']} / {x['n_stego']} | {x['n_admissible_hidden']} | "
                         f"{_pct(x['stego_success'])} | "
                         f"{x['alpha2_mean']:.3f} |")
        lines.append("")
        lines += [f"![{k}]({v})" for k, v in r["figures"].items() if k.startswith(ds + "/")]
        lines.append("")
    lines += [f"Wall time {r['wall_seconds']:.1f} s.", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- remedy


def run_remedy(out_dir="results/beyond/remedy", *, dataset: str = "mnist", data_dir=None,
               source: str = "auto", epochs: int | None = 10, seed: int = 0,
               alpha1: float = 0.2, n_pairs: int = 1000, cnn: bool = True,
               attacks=("first_layer", "jacobian"), n_jacobian_points: int = 300,
               quiet: bool = False) -> dict:
    """The paper's FCNN beside nets with a trivial null space (wide FCNN; SAME CNN), one table
    on one test set; figures of example stego images and of the first-layer spectra."""
    import jax

    from nsjax import _plots, _remedy

    t0 = time.perf_counter()
    out = Path(out_dir)
    figs = out / "figures"
    tr, te = _load(dataset, data_dir, source)
    _log(f"data: {tr.source}: {len(tr)} train / {len(te)} test", t0, quiet)
    models = _remedy.default_models(tr.input_shape, len(tr.class_names), cnn=cnn)
    cfg = _config(dataset, epochs, seed, alpha1)
    variables, secs = {}, {}
    for name, model in models.items():
        variables[name], secs[name], _ = train_or_restore(out, f"{name}-{dataset}", model, cfg,
                                                          tr, t0=t0, quiet=quiet)
    res = _remedy.remedy(tr.images, tr.labels, te.images, te.labels, models=models,
                         config=cfg, alpha1=alpha1, n_pairs=n_pairs, seed=seed,
                         variables=variables, attacks=attacks,
                         n_jacobian_points=n_jacobian_points)
    rows = res["rows"]
    for r in rows:
        r["train_seconds"] = secs[r["name"]]
        _log(f"{r['name']} / {r['attack']}: acc {_pct(r['accuracy_test'])}, null dim "
             f"{r['null_dim']}, attack {r['attack_kind']} dim {r['attack_dim']} "
             f"(sigma_rel {r['attack_sigma_rel']:.3f}): stego success "
             f"{_pct(r['stego_success'])}, cover class {_pct(r['stego_cover_class'])}, "
             f"SSIM(S, a2 C) {r['ssim_scaled_cover']:.3f}", t0, quiet)
    figs.mkdir(parents=True, exist_ok=True)
    fig_paths = {}
    names = te.class_names
    entries = res["entries"]
    for r in rows:
        if r["attack"] != attacks[0]:
            continue
        d = r["_details"]
        k = np.arange(min(4, d["pred"].size))
        model, v = entries[r["name"]]
        ci, hi = d["cover_index"][k], d["hidden_index"][k]

        def pc(x, model=model, v=v):
            p = np.asarray(jax.nn.softmax(model.apply(v, x)))
            return np.stack([p.argmax(-1), p.max(-1)], -1)

        p = _plots.plot_triplets(
            figs / f"triplets_{r['name']}.png", te.images[ci], te.images[hi], d["stego"][k],
            alpha1=alpha1, alpha2=d["alpha2"][k], cover_pred=pc(te.images[ci]),
            hidden_pred=pc(te.images[hi]),
            stego_pred=np.stack([d["pred"][k], d["conf"][k]], -1), class_names=names,
            title=f"{r['name']}: {r['model']}, null dim {r['null_dim']}, "
                  f"{r['attack_kind']} attack space dim {r['attack_dim']}")
        fig_paths[f"triplets_{r['name']}"] = str(p.relative_to(out))
    p = _remedy.plot_first_layer_spectra(figs / "first_layer_spectra.png", entries,
                                         res["target_dim"], tr.input_shape)
    fig_paths["first_layer_spectra"] = str(p.relative_to(out))
    clean_rows = [{k: v for k, v in r.items() if k != "_details"} for r in rows]
    report = {"experiment": "remedy", "dataset": dataset, "data_source": tr.source,
              "n_test": len(te), "train_config": cfg.to_dict(), "alpha1": alpha1,
              "target_dim": res["target_dim"], "n_common_correct": res["n_common_correct"],
              "n_pairs_dropped": res["n_pairs_dropped"], "attacks": list(attacks),
              "n_jacobian_points": n_jacobian_points, "rows": clean_rows,
              "figures": fig_paths, "wall_seconds": time.perf_counter() - t0}
    _write(out, report, _remedy_md(report))
    _log(f"wrote {out / 'report.md'}", t0, quiet)
    return report


def _remedy_md(r: dict) -> str:
    lines = [
        f"# Remedy: a first layer with a trivial null space ({r['dataset']})",
        "",
        f"All nets trained with the same config on the same data; every number on the same "
        f"{r['n_test']} test images. Stego pairs: the same {r['rows'][0]['n_pairs']} "
        f"cover/hidden pairs (different classes) for every row, drawn from the "
        f"{r['n_common_correct']} test images that all nets classify correctly at scale 1 and "
        f"{r['alpha1']:g}; S = {r['alpha1']:g} H_perp + alpha2 C_hat with the largest "
        f"admissible alpha2. Attack spaces have dimension {r['target_dim']}: the exact null "
        "space when it is that large, otherwise the weakest directions of the first layer "
        "('first_layer', nsjax.null_space(W1op, rank=n - d)) or of the Jacobians stacked over "
        f"{r['n_jacobian_points']} training images ('jacobian'). sigma_rel: largest singular "
        "value inside the attack space / sigma_max. Chance = 1 / classes.",
        "",
        "| net | model | params | test acc (orig / x{a}) | exact null dim | attack | attack "
        "space (dim, sigma_rel) | stego success | f(S) = cover class | f(alpha2 C_hat) = "
        "cover class | SSIM(S, alpha2 C) | mean alpha2 |".format(a=f"{r['alpha1']:g}"),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for x in r["rows"]:
        lines.append(
            f"| {x['name']} | {x['model']} | {x['n_params']:,} | {_pct(x['accuracy_test'])} / "
            f"{_pct(x['accuracy_test_rescaled'])} | {x['null_dim']} | {x['attack']} | "
            f"{x['attack_kind']} {x['attack_dim']}, {x['attack_sigma_rel']:.3g} | "
            f"{_pct(x['stego_success'])} | {_pct(x['stego_cover_class'])} | "
            f"{_pct(x['cover_part_cover_class'])} | "
            f"{x['ssim_scaled_cover']:.3f} | {x['alpha2_mean']:.3f} |")
    lines += ["", "With the EXACT null space, a net whose null space is {0} gives C_hat = 0: "
              "S = alpha1 H, the cover cannot be hidden at all.", ""]
    lines += [f"![{k}]({v})" for k, v in r["figures"].items()]
    lines += ["", f"Wall time {r['wall_seconds']:.1f} s.", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- argparse


def _floats(text: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(t) for t in text.split(",") if t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")
    if not vals or not all(0 < v <= 1 for v in vals):
        raise argparse.ArgumentTypeError(f"expected values in (0, 1], got {text!r}")
    return vals


def _names(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _common(p: argparse.ArgumentParser, out: str, epochs: int | None = 10) -> None:
    p.add_argument("--out", default=out, help="output folder (default: %(default)s)")
    p.add_argument("--data-dir", default=None, help="dataset folder (or NSJAX_DATA_DIR)")
    p.add_argument("--source", default="auto", help="data source (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=epochs,
                   help="training epochs per net (default: "
                   f"{'the recipe, 100' if epochs is None else epochs}; checkpoints in "
                   "OUT/checkpoints are reused when the config matches)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress output")


def _cmd_certify(args) -> int:
    from nsjax import _data

    try:
        r = run_certify(args.out, dataset=args.dataset, data_dir=args.data_dir,
                        source=args.source, epochs=args.epochs, seed=args.seed,
                        n_points=args.points, n_data_points=args.data_points, quiet=args.quiet)
    except _data.DatasetNotFoundError as err:
        return _not_run(Path(args.out), "certify", err, args.quiet)
    print(f"certify: {sum(x['as_expected'] for x in r['rows'])}/{len(r['rows'])} as expected; "
          f"report: {args.out}/report.md")
    return 0 if r["all_as_expected"] else 1


def _cmd_detect(args) -> int:
    r = run_detect(args.out, datasets=args.datasets, alphas=args.alphas,
                   statistics=args.statistics, data_dir=args.data_dir, source=args.source,
                   epochs=args.epochs, seed=args.seed, fpr=args.fpr, quiet=args.quiet)
    print(f"detect: {len(r['rows'])} rows; report: {args.out}/report.md")
    return 0


def _cmd_remedy(args) -> int:
    from nsjax import _data

    try:
        r = run_remedy(args.out, dataset=args.dataset, data_dir=args.data_dir,
                       source=args.source, epochs=args.epochs, seed=args.seed,
                       alpha1=args.alpha1, n_pairs=args.pairs, cnn=not args.no_cnn,
                       attacks=args.attacks, n_jacobian_points=args.jacobian_points,
                       quiet=args.quiet)
    except _data.DatasetNotFoundError as err:
        return _not_run(Path(args.out), "remedy", err, args.quiet)
    print(f"remedy: {len(r['rows'])} rows; report: {args.out}/report.md")
    return 0


def _configure(name: str, p: argparse.ArgumentParser) -> None:
    if name == "certify":
        _common(p, "results/beyond/certify")
        p.add_argument("--dataset", default="mnist")
        p.add_argument("--points", type=int, default=None,
                       help="uniform points in [-1, 1]^n (default 2 ceil(n / outputs))")
        p.add_argument("--data-points", type=int, default=1000,
                       help="training images for the data-only certificate row")
        p.set_defaults(func=_cmd_certify)
    elif name == "detect":
        _common(p, "results/beyond/detect", epochs=None)
        p.add_argument("--datasets", type=_names, default=("mnist", "fashion_mnist"),
                       help="comma-separated (default: mnist,fashion_mnist)")
        p.add_argument("--alphas", type=_floats, default=DEFAULT_ALPHAS,
                       help="alpha1 values (default: 0.1,0.2,0.5)")
        p.add_argument("--statistics", type=_names, default=None,
                       help="subset of consistency,gauss,ratio,perp (default: all)")
        p.add_argument("--fpr", type=float, default=0.01, help="target FPR (default 0.01)")
        p.set_defaults(func=_cmd_detect)
    elif name == "remedy":
        _common(p, "results/beyond/remedy")
        p.add_argument("--dataset", default="mnist")
        p.add_argument("--alpha1", type=float, default=0.2)
        p.add_argument("--pairs", type=int, default=1000)
        p.add_argument("--attacks", type=_names, default=("first_layer", "jacobian"),
                       help="first_layer and/or jacobian (default: both)")
        p.add_argument("--jacobian-points", type=int, default=300)
        p.add_argument("--no-cnn", action="store_true", help="leave out the SAME CNN")
        p.set_defaults(func=_cmd_remedy)
    else:
        raise ValueError(f"unknown experiment {name!r}")


_HELP = {
    "certify": ("certificate: lower and upper bound of the null-space dimension",
                "Lower bound dim Null(first layer), upper bound from float64 Jacobians "
                "stacked over sampled points, for trained / random / planted nets."),
    "detect": ("detect null-space stego images from null-space statistics",
               "Fit detectors on clean training images, calibrate at 1 % FPR on held-out "
               "training images, report AUC / TPR / realised FPR on whole test sets."),
    "remedy": ("nets with a trivial null space beside the paper's, one table",
               "Train the paper's FCNN, a (784, 800, 16, 10) FCNN and a SAME CNN on the same "
               "data; accuracy, null dimension and steganography success on one test set."),
}


def add_parser(subparsers) -> None:
    """Register ``certify``, ``detect`` and ``remedy`` on an argparse subparsers object."""
    for name, (help_, desc) in _HELP.items():
        _configure(name, subparsers.add_parser(name, help=help_, description=desc))


def script_main(name: str, argv=None) -> int:
    """Entry point of ``scripts/beyond_<name>.py``: same flags as ``nsjax <name>``."""
    p = argparse.ArgumentParser(prog=f"beyond_{name}.py", description=_HELP[name][1])
    _configure(name, p)
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(script_main(sys.argv[1], sys.argv[2:]))
