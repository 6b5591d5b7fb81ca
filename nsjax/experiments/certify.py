"""Certify the null space ``N(f)`` of trained, random and planted networks, end to end.

:func:`run_certify` loads one dataset, trains (or restores from ``out/checkpoints/``) an
``FCNN(n, 32, 16, C)`` and two VALID CNNs (1 and 6 kernels of 3x3, hidden ``(32,)``), and
computes for each net a two-sided certificate (:func:`nsjax.certify`): ``lower = dim
Null(f1)`` and ``upper = n - rank`` of the float64 Jacobians stacked over sampled points.
One table row per net, each with what theory expects:

* trained and randomly initialised nets: the bounds meet (``N(f) = Null(f1)``);
* the trained FCNN with Jacobians at training images only: a valid, possibly looser upper
  bound (no expectation);
* planted counter-examples whose null space is larger than ``Null(f1)``: ``k`` dead
  first-layer units (``k = 1, 4, 16``), a cancelling pair of units, a dead channel of a
  2-kernel CNN.  The upper bound must equal the dimension computed by hand
  (:func:`nsjax._certify.dead_unit_dim`; ``n - n1 + 2`` for the pair) and exceed the lower.

It also recomputes the trained FCNN's stack in float32, to record the rounding floor that
float64 removes.  Writes ``report.json``, ``report.md`` and ``figures/spectra.{png,pdf}``;
``report["all_as_expected"]`` says whether every row behaved as expected.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import jax
import numpy as np

from nsjax import _certify, _plots
from nsjax._models import CNN, FCNN, init_params
from nsjax._train import evaluate
from nsjax.experiments import _common
from nsjax.experiments._common import Progress, pct

__all__ = ["run_certify"]

_FIGURE_ROWS = ("trained", "dead16", "cnn1_valid", "cnn6_valid")


def run_certify(out_dir, *, dataset: str = "mnist", data_dir=None, source: str = "auto",
                epochs: int | None = 10, seed: int = 0, n_points: int | None = None,
                n_data_points: int = 1000, limit: int | None = None,
                test_limit: int | None = None, quiet: bool = False,
                bounds: tuple[float, float] = (-1.0, 1.0)) -> dict:
    """Certificates for trained / random / planted nets (module docstring).

    Args:
      out_dir: output folder (``report.json``, ``report.md``, ``figures/``, ``checkpoints/``).
      dataset, data_dir, source: what to load (:func:`nsjax.data.load`).
      epochs: training epochs per net (``None``: the recipe's); seed: training and points.
      n_points: uniform points per certificate (default ``2 ceil(n / outputs)``).
      n_data_points: training images for the data-only row.
      limit, test_limit: caps on the train / test splits (quick runs).
      quiet: no progress lines.
      bounds: ``(lo, hi)``, the image domain the uniform points are drawn from (the data
        are in the paper's ``[-1, 1]``; a smaller domain certifies ``f`` restricted to it).

    Returns:
      the report written to ``report.json``.

    Raises:
      nsjax.data.DatasetNotFoundError: the dataset is not available.
    """
    progress = Progress(quiet)
    out = _common.prepare_out(out_dir)
    tr, te = _common.load_splits(dataset, data_dir, source, limit=limit, test_limit=test_limit,
                                 progress=progress)
    cfg = _common.config_for(dataset, epochs=epochs, seed=seed, alpha=0.2)
    nets = _train_nets(out, tr, cfg, progress)
    accs = {name: evaluate(m, v, te.images, te.labels, alpha=0.2)["accuracy"]
            for name, (m, v) in nets.items()}
    ctx = {"key": jax.random.key(seed + 100), "shape": tr.input_shape, "points": n_points,
           "progress": progress, "bounds": tuple(float(b) for b in bounds)}
    rows, certs = [], {}
    for spec in _net_specs(nets, accs, tr, seed, n_data_points):
        row, certs[spec["id"]] = _certificate_row(spec, ctx)
        rows.append(row)
    m_fc, v_fc = nets["fcnn"]
    floor, s32 = _float32_floor(m_fc, v_fc, certs["trained"], ctx["key"], tr.input_shape)
    progress(f"float32 stack of the trained FCNN: sigma_(r+1) / sigma_max = "
             f"{floor['largest_sigma_rel_outside_row_space']:.1e} (float64: "
             f"{certs['trained'].summary()['largest_dropped_sigma_rel']:.1e})")
    fig = _spectra_figure(out / "figures" / "spectra.png", rows, certs, s32)
    report = {
        "experiment": "certify", "dataset": dataset, "data_source": tr.source,
        "n_train": len(tr), "n_test": len(te), "train_config": cfg.to_dict(),
        "bounds": list(ctx["bounds"]), "test_accuracy": accs, "rows": rows,
        "all_as_expected": all(r["as_expected"] for r in rows),
        "float32_stack": floor, "figures": {"spectra": str(fig.relative_to(out))},
        "wall_seconds": progress.seconds(),
    }
    _common.write_report(out, report, certify_markdown(report))
    progress(f"wrote {out / 'report.md'}")
    return report


def _train_nets(out: Path, tr, cfg, progress: Progress) -> dict:
    """``{"fcnn" | "cnn1_valid" | "cnn6_valid": (model, variables)}``, trained or restored."""
    shape, classes = tr.input_shape, len(tr.class_names)
    models = {
        "fcnn": FCNN((math.prod(shape), 32, 16, classes)),
        "cnn1_valid": CNN(input_shape=shape, kernels=1, padding="VALID", hidden=(32,),
                          num_classes=classes),
        "cnn6_valid": CNN(input_shape=shape, kernels=6, padding="VALID", hidden=(32,),
                          num_classes=classes),
    }
    nets = {}
    for name, model in models.items():
        v, _, _ = _common.train_or_restore(out, name, model, cfg, tr, progress)
        nets[name] = (model, v)
    return nets


def _net_specs(nets: dict, accs: dict, tr, seed: int, n_data_points: int) -> list[dict]:
    """One dict per table row: ``id``, ``net`` (label), ``model``, ``variables``, ``kind``,
    ``expected`` (``"meet"``, ``None`` or the upper bound by hand) and optional ``data``,
    ``points`` and ``note``."""
    shape, classes = tr.input_shape, len(tr.class_names)
    n = math.prod(shape)
    m_fc, v_fc = nets["fcnn"]
    fc = f"FCNN({n},32,16,{classes})"
    h, w = shape[0], shape[1]
    specs = [
        dict(id="trained", net=f"{fc} trained", model=m_fc, variables=v_fc, kind="trained",
             expected="meet", note=f"test acc {pct(accs['fcnn'])}"),
        dict(id="random", net=f"{fc} random init", model=m_fc,
             variables=init_params(m_fc, jax.random.key(seed)), kind="random",
             expected="meet"),
        dict(id="cnn1_valid", net="CNN 1 kernel 3x3 VALID trained", kind="trained",
             model=nets["cnn1_valid"][0], variables=nets["cnn1_valid"][1], expected="meet",
             note=f"test acc {pct(accs['cnn1_valid'])}; n - {h - 2}*{w - 2} = "
                  f"{n - (h - 2) * (w - 2)} (paper, MNIST: 28^2 - 26^2 = 108)"),
        dict(id="cnn6_valid", net="CNN 6 kernels 3x3 VALID trained", kind="trained",
             model=nets["cnn6_valid"][0], variables=nets["cnn6_valid"][1], expected="meet",
             note=f"test acc {pct(accs['cnn6_valid'])}"),
    ]
    # Jacobians at training images only: valid, but looser where units never fire on them
    idx = np.random.default_rng(seed).choice(len(tr), min(n_data_points, len(tr)), False)
    specs.append(dict(id="data", net=f"FCNN trained, {len(idx)} training images only",
                      model=m_fc, variables=v_fc, kind="data points", expected=None,
                      data=tr.images[idx], points=0,
                      note="upper > lower means first-layer units that never fire on these "
                           "images"))
    return specs + _planted_specs(m_fc, v_fc, shape, classes, seed)


def _planted_specs(m_fc, v_fc, shape, classes: int, seed: int) -> list[dict]:
    """Rows of the planted counter-examples, each with its null dimension by hand."""
    n = math.prod(shape)
    specs = []
    for k in (1, 4, 16):
        specs.append(dict(id=f"dead{k}", net=f"FCNN trained, {k} dead unit(s)", model=m_fc,
                          variables=_certify.plant_dead_units(m_fc, v_fc, k), kind="planted",
                          expected=_certify.dead_unit_dim(m_fc, v_fc, k),
                          note=f"by hand: {n} - (32 - {k}) = {n - 32 + k} when W1 has full "
                               "rank"))
    specs.append(dict(id="pair", net="FCNN trained, cancelling pair", model=m_fc,
                      variables=_certify.plant_cancelling_pair(m_fc, v_fc, 0, 1),
                      kind="planted", expected=n - 32 + 2,
                      note="units 0, 1 identical, outgoing weights opposite: lower n-31, "
                           "upper n-30"))
    cnn2 = CNN(input_shape=shape, kernels=2, padding="VALID", hidden=(32,),
               num_classes=classes)
    v2 = init_params(cnn2, jax.random.key(seed + 1))
    specs.append(dict(id="cnn2_random", net="CNN 2 kernels VALID random init", model=cnn2,
                      variables=v2, kind="random", expected="meet"))
    specs.append(dict(id="cnn2_dead", net="CNN 2 kernels VALID, channel 1 dead", model=cnn2,
                      variables=_certify.plant_dead_units(cnn2, v2, [1]), kind="planted",
                      expected=_certify.dead_unit_dim(cnn2, v2, [1]),
                      note="only kernel 0 matters: upper = dim Null(kernel 0)"))
    return specs


def _as_expected(c: _certify.Certificate, expected) -> bool:
    if expected == "meet":
        return bool(c.meets)
    if expected is None:
        return True
    return c.upper == expected and c.upper > c.lower


def _certificate_row(spec: dict, ctx: dict) -> tuple[dict, _certify.Certificate]:
    """Certify one net; returns its table row and the :class:`nsjax.Certificate`."""
    start = time.perf_counter()
    c = _certify.certify(spec["model"], spec["variables"], ctx["key"],
                         spec.get("points", ctx["points"]), input_shape=ctx["shape"],
                         data=spec.get("data"), bounds=ctx["bounds"])
    secs = time.perf_counter() - start
    expected = spec["expected"]
    by_hand = None if expected in (None, "meet") else int(expected)
    ok = _as_expected(c, expected)
    ctx["progress"](f"{spec['net']}: lower {c.lower}, upper {c.upper}, meets {c.meets}"
                    f"{'' if by_hand is None else f', by hand {by_hand}'}"
                    f" ({'ok' if ok else 'UNEXPECTED'}; {c.rows} x {c.n} stack, {secs:.1f} s)")
    row = {"id": spec["id"], "net": spec["net"], "kind": spec["kind"], **c.summary(),
           "expected_upper": by_hand, "as_expected": ok, "seconds": secs,
           "note": spec.get("note", "")}
    return row, c


def _float32_floor(model, variables, cert, key, shape) -> tuple[dict, np.ndarray]:
    """The trained FCNN's stack (same points as ``cert``) in float32: its singular values
    outside / inside the true row space, relative to ``sigma_max``, and the float32 rtol."""
    n = cert.n
    pts = np.asarray(jax.random.uniform(key, (cert.n_points, n), minval=-1.0, maxval=1.0))
    s32 = np.linalg.svd(_certify.stacked_jacobian(model, variables, pts, input_shape=shape,
                                                  x64=False), compute_uv=False)
    r = n - cert.lower
    floor = {"largest_sigma_rel_outside_row_space": float(s32[r] / s32[0]),
             "smallest_sigma_rel_inside": float(s32[r - 1] / s32[0]),
             "float32_rtol": float(max(cert.rows, n) * np.finfo(np.float32).eps)}
    return floor, s32


def _spectra_figure(path: Path, rows: list[dict], certs: dict, s32: np.ndarray) -> Path:
    """``figures/spectra``: the rows :data:`_FIGURE_ROWS` and the float32 stack ``s32``."""
    labels = {r["id"]: r["net"] for r in rows}
    fields = ("singular_values", "tol", "n", "lower", "upper")
    spectra = {labels[k]: {f: getattr(certs[k], f) for f in fields} for k in _FIGURE_ROWS}
    return _plots.plot_spectrum(path, spectra,
                                extra={"FCNN trained, same stack in float32": s32})


def certify_markdown(r: dict) -> str:
    """``report.md`` of :func:`run_certify`'s report ``r``."""
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
        kept, drop = x["smallest_kept_sigma_rel"], x["largest_dropped_sigma_rel"]
        lines.append(
            f"| {x['net']} | {x['lower']} | {x['upper']} | {x['meets']} | "
            f"{'' if x['expected_upper'] is None else x['expected_upper']} | {x['points']} | "
            f"{x['rows']} x {x['n']} | {'-' if kept is None else f'{kept:.2e}'} / "
            f"{'-' if drop is None else f'{drop:.2e}'} | {x['containment']:.1e} | "
            f"{'yes' if x['as_expected'] else '**NO**'} | {x['note']} |")
    f32 = r["float32_stack"]
    lines += ["", f"All as expected: {r['all_as_expected']}.", "",
              "The same stack for the trained FCNN computed in float32: "
              f"sigma_(n-lower+1) / sigma_max = {f32['largest_sigma_rel_outside_row_space']:.1e}"
              " (rounding outside the row space of W1), smallest genuine one "
              f"{f32['smallest_sigma_rel_inside']:.1e}, float32 rule's rtol "
              f"{f32['float32_rtol']:.1e}. The float64 columns of the table show the same "
              "gap with eps64 in place of eps32.", "",
              f"![spectra]({r['figures']['spectra']})", "",
              f"Wall time {r['wall_seconds']:.1f} s.", ""]
    return "\n".join(lines)
