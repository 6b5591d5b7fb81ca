"""The conv null-space study: nullity tables, SAME padding, patch embeddings, timings.

Library code behind ``scripts/conv_nullspace.py``: :func:`run_conv_study` runs every part
and writes ``report.json``/``report.md`` (:func:`nsjax.experiments._common.write_report`).
Each part is a function returning JSON-able data:

* :func:`resolution_108` -- "108 vs 109": the VALID nullity of one 3x3 kernel on 28x28;
* :func:`nullity_table` -- 28x28x1 and 32x32x3 inputs, 1..64 kernels, VALID/SAME, stride 1/2;
* :func:`same_padding` -- spectra, float32/float64-rule and exact (GF(p)) full-rank fractions,
  the partial-winding predictor, geometric decay of sigma_min with the image size, edge
  localisation of the near-null vectors; :func:`same_padding_invariance`;
* :func:`patch_embedding` (224x224x3, 16x16 patches) and :func:`cifar_timings`.

Measured results are in ``docs/results/conv.md``.
"""

from __future__ import annotations

import math
import os
import platform
import time

import jax
import numpy as np

import nsjax
from nsjax._conv import (
    conv_apply,
    conv_matrix,
    conv_null_space,
    conv_output_shape,
    conv_singular_values,
    exact_conv_rank,
)
from nsjax.blas import limit_blas_threads
from nsjax.experiments._common import Progress, prepare_out, write_report
from nsjax.experiments.conv import (
    generic_nullity,
    lemma_b1_trials,
    nullity_rules,
    partial_windings,
    planted_report,
    random_kernel,
)

__all__ = ["resolution_108", "nullity_table", "same_padding", "same_padding_invariance",
           "patch_embedding", "cifar_timings", "study_markdown", "run_conv_study"]

EPS32 = float(np.finfo(np.float32).eps)


def _timed(fn, repeat=1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        jax.block_until_ready(getattr(out, "row_basis", out))
        best = min(best, time.perf_counter() - t)
    return out, best


# --------------------------------------------------------------------------- 108 vs 109


def resolution_108(trials: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    f32, f64, exact = [], [], []
    for _ in range(trials):
        k = random_kernel(rng, 3)
        s = conv_singular_values(k, (28, 28, 1), method="svd")
        r = nullity_rules(s, 676, 784)
        f32.append(r["float32"])
        f64.append(r["float64"])
        exact.append(784 - exact_conv_rank(k, (28, 28, 1)))
    ns = conv_null_space(random_kernel(np.random.default_rng(seed), 3), (28, 28, 1))
    return {
        "input": [28, 28, 1], "kernel": [3, 3], "padding": "VALID",
        "n_minus_m": 784 - 26 * 26,
        "trials": trials,
        "nullity_float32_rule": sorted(set(f32)),
        "nullity_float64_rule": sorted(set(f64)),
        "nullity_exact_gf_p": sorted(set(exact)),
        "conv_null_space_dim_seed": ns.dim,
        "argument": "C^T y is the full 2-D convolution of y with the kernel, i.e. the product "
                    "of two nonzero polynomials, never 0 (R[z, w] has no zero divisors): C has "
                    "full row rank 26*26 = 676 for EVERY nonzero 3x3 kernel, so the nullity is "
                    "784 - 676 = 108.  The paper's later '109-dimensional' is a slip.  (A "
                    "numerical 109 needs a kernel whose symbol vanishes on the torus to high "
                    "order, e.g. (1,-2,1)x(1,-2,1): float32 rule 109, exact 108.)",
    }


# --------------------------------------------------------------------------- nullity table


def nullity_table(kernel_counts, seed: int,
                  shapes=((28, 28, 1), (32, 32, 3))) -> list[dict]:
    """Nullity of random kernel banks on each input shape (default 28x28x1 and 32x32x3),
    VALID/SAME, stride 1/2.

    Each row: ``generic_nullity`` (:func:`~nsjax.experiments.conv.generic_nullity`),
    ``nullity`` (nsjax's float32 rule), ``nullity_f64_rule`` where a dense float64 SVD is
    affordable, ``sigma_min_over_max`` and the time of :func:`nsjax.conv_null_space`.
    """
    rows = []
    for shape in shapes:
        for padding in ("VALID", "SAME"):
            for stride in (1, 2):
                for cout in kernel_counts:
                    rows.append(_nullity_row(shape, padding, stride, cout, seed))
    return rows


def _nullity_row(shape, padding: str, stride: int, cout: int, seed: int) -> dict:
    k = random_kernel(np.random.default_rng(seed), 3, shape[2], cout)
    ho, wo, _ = conv_output_shape(shape, k.shape, strides=stride, padding=padding)
    n, m = math.prod(shape), ho * wo * cout
    ns, sec = _timed(lambda: conv_null_space(k, shape, strides=stride, padding=padding))
    s = np.asarray(ns.singular_values, np.float64)
    row = {"input": "x".join(map(str, shape)), "kernels": cout, "padding": padding,
           "stride": stride, "n": n, "m": m,
           "generic_nullity": generic_nullity(shape, k.shape, strides=stride, padding=padding),
           "nullity": ns.dim,
           "sigma_min_over_max": float(s[min(ns.rank, s.size) - 1] / s[0]) if ns.rank else 0.0,
           "seconds": round(sec, 3)}
    if ho * wo * min(cout, 9 * shape[2]) * n <= 2**22:  # float64 rule: un-squared sigmas
        s64 = conv_singular_values(k, shape, strides=stride, padding=padding, method="svd")
        row["nullity_f64_rule"] = nullity_rules(s64, m, n)["float64"]
    return row


# --------------------------------------------------------------------------- SAME padding


def same_padding(trials: int, seed: int, exact: int, sizes) -> dict:
    """SAME padding on 28x28x1: spectra of 5 random kernels, :func:`lemma_b1_trials`, decay
    of sigma_min with the image size ``sizes``, edge localisation, six-kernel banks."""
    k_rand = random_kernel(np.random.default_rng(seed), 3)
    return {"spectra": _same_spectra(np.random.default_rng(seed)),
            "trials_28x28": lemma_b1_trials((28, 28), 3, trials, seed=seed, exact=exact),
            "sigma_min_vs_N": _sigma_min_decay(k_rand, sizes),
            "edge_localisation": _edge_localisation(k_rand),
            "six_same_kernels_nullity_f32_rule": _six_same_kernels(seed, min(trials, 50))}


def _same_spectra(rng: np.random.Generator, count: int = 5) -> list[dict]:
    spectra = []
    for _ in range(count):
        k = random_kernel(rng, 3)
        a = conv_matrix(k, (28, 28, 1), padding="SAME")
        s64 = np.linalg.svd(a, compute_uv=False)
        s32 = np.linalg.svd(a.astype(np.float32), compute_uv=False).astype(np.float64)
        tol = 784 * EPS32
        wd = partial_windings(k[:, :, 0, 0], (1, 1))
        spectra.append({
            "kernel": np.round(k[:, :, 0, 0], 4).tolist(),
            "smallest_12_sigma_rel_float64_svd": [float(v) for v in (s64[-12:] / s64[0])],
            "smallest_6_sigma_rel_float32_svd": [float(v) for v in (s32[-6:] / s32[0])],
            "nullity_f32_rule_from_float64_svd": int(np.sum(s64 / s64[0] <= tol)),
            "nullity_f32_rule_from_float32_svd": int(np.sum(s32 / s32[0] <= tol)),
            "nullity_f64_rule": nullity_rules(s64, 784, 784)["float64"],
            "nsjax_conv_null_space_dim": conv_null_space(k, (28, 28, 1), padding="SAME").dim,
            "exact_rank": exact_conv_rank(k, (28, 28, 1), padding="SAME"),
            "row_windings": sorted(wd["rows"]), "col_windings": sorted(wd["cols"]),
            "min_abs_symbol_on_torus": wd["min_abs_symbol"],
        })
    return spectra


def _sigma_min_decay(k_rand: np.ndarray, sizes) -> dict:
    """Geometric decay of sigma_min/sigma_max with the image size: genuine, not rounding."""
    k_dom = k_rand.astype(np.float64).copy()
    k_dom[1, 1, 0, 0] = 1.5 * (np.abs(k_dom).sum() - abs(k_dom[1, 1, 0, 0]))
    k_dom = k_dom.astype(np.float32)
    u = np.array([0.125, 0.5, 1.0])
    v = np.array([0.25, 1.0, 0.25])
    k_w1 = np.outer(u, v).astype(np.float32)[:, :, None, None]
    decay = {"N": list(sizes)}
    for name, k in (("random_seed_kernel", k_rand), ("winding-1", k_w1),
                    ("centre-dominant", k_dom)):
        decay[name] = []
        for n in sizes:
            s = conv_singular_values(k, (n, n, 1), padding="SAME", method="svd")
            decay[name].append(float(s[-1] / s[0]))
    return decay


def _edge_localisation(k_rand: np.ndarray) -> dict:
    """Where the near-null vectors live: their energy within 3 pixels of the border."""
    a = conv_matrix(k_rand, (28, 28, 1), padding="SAME")
    _, s, vt = np.linalg.svd(a)
    border = np.ones((28, 28), bool)
    border[3:-3, 3:-3] = False
    nnull = max(1, int(np.sum(s / s[0] <= 784 * EPS32)))
    e = (vt[-nnull:] ** 2).reshape(nnull, 28, 28)
    return {"near_null_vectors": nnull,
            "border_pixels_fraction": float(border.mean()),
            "energy_in_border_mean": float(e[:, border].sum(-1).mean()),
            "energy_in_border_random_unit_vector_expected": float(border.mean())}


def _six_same_kernels(seed: int, trials: int) -> dict[int, int]:
    """Several SAME kernels: do their numerical near-null directions intersect?"""
    rng = np.random.default_rng(seed + 1)
    dims = [conv_null_space(random_kernel(rng, 3, 1, 6), (28, 28, 1), padding="SAME").dim
            for _ in range(trials)]
    return {int(a): int(b) for a, b in zip(*np.unique(dims, return_counts=True))}


def same_padding_invariance(seeds: int) -> list[dict]:
    """SAME CNNs: is the numerical null space invariant?  float32 rule vs float64 rule."""
    import jax.numpy as jnp

    rows = []
    rules = {"float32 rule (default)": None,
             "float64 rule": nsjax.default_rtol((784, 784), jnp.float64)}
    for seed in range(seeds):
        model = nsjax.CNN(input_shape=(28, 28, 1), kernels=1, padding="SAME")
        params = nsjax.init_params(model, jax.random.key(seed))
        for name, rtol in rules.items():
            ns = nsjax.null_space_of(model, params, (28, 28, 1), rtol=rtol)
            row = {"seed": seed, "rule": name, "nullity": ns.dim}
            if ns.dim:
                s = np.asarray(ns.singular_values, np.float64)
                res = nsjax.check_invariance(lambda x: model.apply(params, x), ns,
                                             jax.random.key(1), n_probes=32)
                row.update(largest_null_sigma_rel=float(s[ns.rank] / s[0]),
                           max_rel_error=res.max_rel_error, max_ulps=res.max_ulps,
                           passed=res.passed)
            rows.append(row)
    return rows


# --------------------------------------------------------------------------- patch embedding


def patch_embedding(quick: bool) -> dict:
    rows = []
    cases = [((224, 224, 3), 16, 384), ((224, 224, 3), 16, 768), ((230, 229, 3), 16, 384)]
    if quick:
        cases = cases[:1]
    for shape, p, width in cases:
        k = random_kernel(np.random.default_rng(0), p, shape[2], width)
        ns, sec = _timed(lambda: conv_null_space(k, shape, strides=p), repeat=2)
        x = jax.random.uniform(jax.random.key(1), (4,) + shape, minval=-1, maxval=1)
        px, sec_p = _timed(lambda: ns.project(x), repeat=2)
        y = conv_apply(k, x, strides=p)
        ypx = conv_apply(k, px, strides=p)
        n = math.prod(shape)
        rows.append({
            "input": "x".join(map(str, shape)), "patch": p, "width": width,
            "type": type(ns).__name__, "nullity": ns.dim,
            "expected": (shape[0] // p) * (shape[1] // p) * max(p * p * shape[2] - width, 0)
            + n - (shape[0] // p) * p * (shape[1] // p) * p * shape[2],
            "seconds_null_space": round(sec, 3),
            "row_basis_shape": list(ns.row_basis.shape),
            "row_basis_MB": ns.row_basis.size * 4 / 2**20,
            "dense_null_basis_GB": n * ns.dim * 4 / 2**30,
            "dense_operator_GB": n * (shape[0] // p) * (shape[1] // p) * width * 4 / 2**30,
            "seconds_project_4_images": round(sec_p, 3),
            "rel_residual_C_Px": float(np.abs(ypx).max() / np.abs(y).max()),
        })
    return {"cases": rows}


# --------------------------------------------------------------------------- timings


def cifar_timings(seed: int, blas_threads: int) -> list[dict]:
    rows = []
    for cout in (32, 64):
        for padding in ("VALID", "SAME"):
            k = random_kernel(np.random.default_rng(seed), 3, 3, cout)
            for threads in (blas_threads, 0):
                with limit_blas_threads(threads):
                    ns, sec = _timed(lambda: conv_null_space(k, (32, 32, 3), padding=padding),
                                     repeat=2)
                rows.append({"input": "32x32x3", "kernels": cout, "padding": padding,
                             "blas_threads": threads or "library default",
                             "nullity": ns.dim, "seconds": round(sec, 3)})
    # the previous route for reference: dense jacfwd + float32 SVD (28x28x1, six kernels)
    model = nsjax.CNN(input_shape=(28, 28, 1), kernels=6)
    params = nsjax.init_params(model, jax.random.key(seed))
    layer = nsjax.first_linear_layer(model, params, (28, 28, 1))

    def dense():
        a = jax.jit(jax.jacfwd(layer.linear_map()))(jax.numpy.zeros((784,)))
        return nsjax.null_space(a, input_shape=(28, 28, 1))

    ns_d, sec_d = _timed(dense, repeat=2)
    ns_c, sec_c = _timed(lambda: nsjax.null_space_of(model, params, (28, 28, 1)), repeat=2)
    rows.append({"input": "28x28x1", "kernels": 6, "padding": "VALID",
                 "dense_jacfwd_float32_svd_seconds": round(sec_d, 3), "dense_nullity": ns_d.dim,
                 "nsjax_conv_route_seconds (incl. model trace)": round(sec_c, 3),
                 "nullity": ns_c.dim})
    return rows


# --------------------------------------------------------------------------- report


def study_markdown(res: dict) -> str:
    """``report.md`` of :func:`run_conv_study` (missing parts are left out)."""
    parts = [(None, _md_head), ("nullity_table", _md_table), ("same_padding", _md_same),
             ("same_invariance", _md_invariance), ("planted", _md_planted),
             ("patch_embedding", _md_patch), ("cifar_timings", _md_cifar)]
    L = []
    for key, fn in parts:
        if key is None or res.get(key) is not None:
            L += fn(res)
    return "\n".join(L) + "\n"


def _md_head(res: dict) -> list[str]:
    L = ["# Null spaces of convolutional first layers", ""]
    L.append(f"Machine: {res['machine']}.  Seconds are wall-clock, best of 1-2 runs, on "
             "shared cores.")
    r = res["108_vs_109"]
    L += ["", "## 108 vs 109", "",
          f"One random 3x3 VALID kernel on 28x28x1, {r['trials']} kernels: nullity at the "
          f"float32 rule {r['nullity_float32_rule']}, at the float64 rule "
          f"{r['nullity_float64_rule']}, exact (GF(p)) {r['nullity_exact_gf_p']}; "
          f"784 - 26*26 = {r['n_minus_m']}.", "", r["argument"]]
    return L


def _md_table(res: dict) -> list[str]:
    L = ["", "## Nullity table (random LeCun-normal kernels, float32 rule)", "",
          "| input | kernels | padding | stride | n | generic | nullity | f64 rule | "
          "sigma_min/max | s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for t in res["nullity_table"]:
        L.append(f"| {t['input']} | {t['kernels']} | {t['padding']} | {t['stride']} | {t['n']} "
                 f"| {t['generic_nullity']} | {t['nullity']} | {t.get('nullity_f64_rule', '')} "
                 f"| {t['sigma_min_over_max']:.2e} | {t['seconds']} |")
    L += ["", "'generic': n minus the exact rank of a random integer kernel bank of the same "
          "shape (generic_nullity); e.g. two VALID 3x3 kernels leave 2 (k-1)^2 = 8 at any "
          "image size.", ""]
    return L


def _md_same(res: dict) -> list[str]:
    s = res["same_padding"]
    t = s["trials_28x28"]
    L = ["## SAME padding (28x28x1, one 3x3 kernel)", ""]
    for pad in ("VALID", "SAME"):
        d = t[pad]
        L.append(f"* {pad}, {d['trials']} random kernels: numerically full rank at the float32 "
                 f"rule {100 * d['full_rank_fraction_f32_rule']:.1f}%, at the float64 rule "
                 f"{100 * d['full_rank_fraction_f64_rule']:.1f}%, exactly (GF(p)) "
                 f"{100 * d.get('exact_full_rank_fraction', float('nan')):.1f}% of "
                 f"{d.get('exact_trials', 0)}; sigma_min/sigma_max quantiles "
                 f"{ {k: f'{v:.1e}' for k, v in d['sigma_min_rel_quantiles'].items()} }")
    d = t["SAME"]
    L += [f"* SAME nullity histogram at the float32 rule: {d['nullity_f32_histogram']}",
          f"* SAME nullity histogram at the float64 rule: {d['nullity_f64_histogram']}",
          f"* partial windings all zero for {100 * d['windings_zero_fraction']:.1f}% of kernels;"
          f" predictor vs float32 rule: {d['predictor']}",
          f"* six SAME kernels, nullity at the float32 rule: "
          f"{s['six_same_kernels_nullity_f32_rule']}", ""]
    return L + _md_spectra(s)


def _md_spectra(s: dict) -> list[str]:
    L = ["Smallest singular values (relative) of five random kernels, float64 SVD:", ""]
    for sp in s["spectra"]:
        L.append(f"* windings rows {sp['row_windings']} cols {sp['col_windings']}, min|a| "
                 f"{sp['min_abs_symbol_on_torus']:.2e}: "
                 + ", ".join(f"{v:.1e}" for v in sp["smallest_12_sigma_rel_float64_svd"])
                 + f" -> nullity f32 rule {sp['nullity_f32_rule_from_float64_svd']} (float32 "
                 f"SVD: {sp['nullity_f32_rule_from_float32_svd']}), f64 rule "
                 f"{sp['nullity_f64_rule']}, exact rank {sp['exact_rank']}")
    dec = s["sigma_min_vs_N"]
    L += ["", "sigma_min/sigma_max of the SAME operator vs image size N:", "",
          "| N | " + " | ".join(k for k in dec if k != "N") + " |",
          "|---|" + "---|" * (len(dec) - 1)]
    for i, n in enumerate(dec["N"]):
        L.append(f"| {n} | " + " | ".join(f"{dec[k][i]:.2e}" for k in dec if k != "N") + " |")
    e = s["edge_localisation"]
    L += ["", f"Edge localisation: the {e['near_null_vectors']} near-null right singular vectors"
          f" of the random kernel carry {100 * e['energy_in_border_mean']:.1f}% of their energy "
          f"in the 3-pixel border ({100 * e['border_pixels_fraction']:.1f}% of the pixels).", ""]
    return L


def _md_invariance(res: dict) -> list[str]:
    L = ["SAME CNNs (nsjax.CNN, one 3x3 kernel, 28x28x1): invariance check of the numerical "
          "null space under both rules:", "", "| seed | rule | nullity | largest null sigma/max "
          "| max rel error | ulps | passed |", "|---|---|---|---|---|---|---|"]
    for r in res["same_invariance"]:
        if r["nullity"]:
            L.append(f"| {r['seed']} | {r['rule']} | {r['nullity']} | "
                     f"{r['largest_null_sigma_rel']:.1e} | {r['max_rel_error']:.1e} | "
                     f"{r['max_ulps']:.0f} | {r['passed']} |")
        else:
            L.append(f"| {r['seed']} | {r['rule']} | 0 | | | | (trivial) |")
    return L + [""]


def _md_planted(res: dict) -> list[str]:
    L = ["## Planted degenerate kernels (28x28; nullity float32 rule / float64 rule / exact)",
          "", "| kernel | VALID | SAME | why |", "|---|---|---|---|"]
    for p in res["planted"]:
        v, sm = p["VALID"], p["SAME"]
        L.append(f"| {p['name']} | {v['nullity_f32']}/{v['nullity_f64']}/{v['exact_nullity']} "
                 f"(generic {v['generic_nullity']}) | {sm['nullity_f32']}/{sm['nullity_f64']}/"
                 f"{sm['exact_nullity']} (generic {sm['generic_nullity']}) | {p['why']} |")
    return L


def _md_patch(res: dict) -> list[str]:
    L = ["", "## Patch embeddings", "",
          "| input | patch | width | type | nullity | expected | null space s | row basis | "
          "dense basis | project 4 imgs s | C(Px)/Cx |", "|---" * 11 + "|"]
    for c in res["patch_embedding"]["cases"]:
        L.append(f"| {c['input']} | {c['patch']} | {c['width']} | {c['type']} | {c['nullity']} | "
                 f"{c['expected']} | {c['seconds_null_space']} | {c['row_basis_shape']} "
                 f"({c['row_basis_MB']:.1f} MB) | {c['dense_null_basis_GB']:.1f} GB | "
                 f"{c['seconds_project_4_images']} | {c['rel_residual_C_Px']:.1e} |")
    return L


def _md_cifar(res: dict) -> list[str]:
    L = ["", "## CIFAR-10 first layers (32x32x3, 3x3 kernels, stride 1)", "",
          "| kernels | padding | BLAS threads | nullity | seconds |", "|---|---|---|---|---|"]
    for c in res["cifar_timings"]:
        if "kernels" in c and c.get("input") == "32x32x3":
            L.append(f"| {c['kernels']} | {c['padding']} | {c['blas_threads']} | {c['nullity']} "
                     f"| {c['seconds']} |")
    ref = [c for c in res["cifar_timings"] if c.get("input") == "28x28x1"]
    if ref:
        c = ref[0]
        L += ["", f"Previous dense route (jacfwd + float32 SVD) on 28x28x1 with six kernels: "
              f"{c['dense_jacfwd_float32_svd_seconds']} s (nullity {c['dense_nullity']}); "
              f"nsjax.null_space_of through nsjax._conv: "
              f"{c['nsjax_conv_route_seconds (incl. model trace)']} s (nullity {c['nullity']})."]
    return L


def run_conv_study(out_dir, *, trials: int = 200, exact: int | None = None, quick: bool = False,
                   seed: int = 0, blas_threads: int | None = 1, timings: bool = True,
                   quiet: bool = False) -> dict:
    """Run the whole study and write ``report.json``/``report.md`` into ``out_dir``.

    Args:
      out_dir: output folder (created; checked writable before any work).
      trials: random kernels per statistic; ``exact``: of those, how many get an exact
        GF(p) rank (default: all).
      quick: small trial counts and sizes, 28x28 table rows with 1, 2, 6 kernels, one patch
        case (a smoke test).
      seed: kernel seed; ``blas_threads``: OpenBLAS cap (``None``/0: leave as is).
      timings: include :func:`patch_embedding` and :func:`cifar_timings` (the slow parts).
      quiet: no progress lines.

    Returns:
      The report dict (also in ``report.json``).
    """
    out = prepare_out(out_dir)
    progress = Progress(quiet)
    exact = trials if exact is None else exact
    if quick:
        trials, exact = min(trials, 20), min(exact, 5)
    res = {"experiment": "conv_nullspace_study", "quick": quick,
           "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average "
                      f"{os.getloadavg()[0]:.1f}, jax {jax.__version__}"}
    t0 = time.perf_counter()
    with limit_blas_threads(blas_threads):
        res["108_vs_109"] = resolution_108(trials, seed)
        progress(f"108 vs 109: exact {res['108_vs_109']['nullity_exact_gf_p']}")
        res["nullity_table"] = (nullity_table((1, 2, 6), seed, shapes=((28, 28, 1),)) if quick
                                else nullity_table((1, 2, 6, 32, 64), seed))
        progress("nullity table done")
        sizes = (8, 16, 28) if quick else (8, 12, 16, 20, 24, 28, 32, 40, 48)
        res["same_padding"] = same_padding(trials, seed, exact, sizes)
        res["same_invariance"] = same_padding_invariance(2 if quick else 10)
        res["planted"] = planted_report((28, 28), 3)
        progress("SAME padding done")
        if timings:
            res["patch_embedding"] = patch_embedding(quick)
            progress("patch embedding done")
    if timings:
        res["cifar_timings"] = cifar_timings(seed, blas_threads)
    res["total_seconds"] = round(time.perf_counter() - t0, 1)
    path = write_report(out, res, study_markdown(res))
    progress(f"wrote {path} ({res['total_seconds']} s)")
    return res


