"""Null spaces of convolutional first layers: nullity tables, SAME padding, patch embeddings.

Usage::

    python scripts/conv_nullspace.py --out results/conv_nullspace [--trials 200] [--quick]

Writes ``results.json`` and ``results.md`` to ``--out``:

* "108 vs 109": the VALID nullity of one 3x3 kernel on 28x28 (numerical and exact);
* a nullity table for 28x28x1 and 32x32x3 inputs with 1, 2, 6, 32, 64 kernels, VALID/SAME,
  stride 1/2 (with the route taken and the time);
* the SAME-padding investigation: singular-value spectra, the fraction of random kernels
  that are numerically full rank at the float32 / float64 rules and exactly (GF(p)), the
  partial-winding predictor, geometric decay of sigma_min with the image size, edge
  localisation of the near-null vectors;
* patch embeddings (224x224x3, 16x16 patches, width 384) and CIFAR timings.

Threaded OpenBLAS spin-waits when the cores are shared with other busy processes; the
script caps it at ``--blas-threads`` (default 1) and also reports CIFAR timings with the
library default.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import jax
import numpy as np

import nsjax
from nsjax._cli_conv import (
    _random_kernel,
    lemma_b1_trials,
    limit_blas_threads,
    nullity_rules,
    partial_windings,
    planted_report,
)
from nsjax._conv import (
    _Geometry,
    conv_apply,
    conv_matrix,
    conv_null_space,
    conv_singular_values,
    exact_conv_rank,
)

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
        k = _random_kernel(rng, 3)
        s = conv_singular_values(k, (28, 28, 1), method="svd")
        r = nullity_rules(s, 676, 784)
        f32.append(r["float32"])
        f64.append(r["float64"])
        exact.append(784 - exact_conv_rank(k, (28, 28, 1)))
    ns = conv_null_space(_random_kernel(np.random.default_rng(seed), 3), (28, 28, 1))
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


def nullity_table(kernel_counts, seed: int) -> list[dict]:
    rows = []
    for shape in ((28, 28, 1), (32, 32, 3)):
        for padding in ("VALID", "SAME"):
            for stride in (1, 2):
                for cout in kernel_counts:
                    rng = np.random.default_rng(seed)
                    k = _random_kernel(rng, 3, shape[2], cout)
                    g = _Geometry(shape, k.shape, stride, padding, 1)
                    nc = g.covered().size
                    generic = g.n - min(nc, g.positions * min(cout, g.taps))
                    ns, sec = _timed(lambda: conv_null_space(k, shape, strides=stride,
                                                             padding=padding))
                    s = np.asarray(ns.singular_values, np.float64)
                    row = {"input": "x".join(map(str, shape)), "kernels": cout,
                           "padding": padding, "stride": stride, "n": g.n, "m": g.m,
                           "generic_nullity": generic, "nullity": ns.dim,
                           "sigma_min_over_max": float(s[min(ns.rank, s.size) - 1] / s[0])
                           if ns.rank else 0.0,
                           "seconds": round(sec, 3)}
                    mp = g.positions * min(cout, g.taps)
                    if mp * nc <= 2**22:  # float64 rule needs un-squared sigmas
                        s64 = conv_singular_values(k, shape, strides=stride, padding=padding,
                                                   method="svd")
                        row["nullity_f64_rule"] = nullity_rules(s64, g.m, g.n)["float64"]
                    rows.append(row)
    return rows


# --------------------------------------------------------------------------- SAME padding


def same_padding(trials: int, seed: int, exact: int, sizes) -> dict:
    out = {}
    rng = np.random.default_rng(seed)
    spectra = []
    for i in range(5):
        k = _random_kernel(rng, 3)
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
    out["spectra"] = spectra
    out["trials_28x28"] = lemma_b1_trials((28, 28), 3, trials, seed=seed, exact=exact)

    # geometric decay with the image size: genuine, not rounding
    k_rand = _random_kernel(np.random.default_rng(seed), 3)
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
    out["sigma_min_vs_N"] = decay

    # where do the near-null vectors live?  energy within 3 pixels of the border
    a = conv_matrix(k_rand, (28, 28, 1), padding="SAME")
    _, s, vt = np.linalg.svd(a)
    border = np.ones((28, 28), bool)
    border[3:-3, 3:-3] = False
    nnull = max(1, int(np.sum(s / s[0] <= 784 * EPS32)))
    e = (vt[-nnull:] ** 2).reshape(nnull, 28, 28)
    out["edge_localisation"] = {
        "near_null_vectors": nnull,
        "border_pixels_fraction": float(border.mean()),
        "energy_in_border_mean": float(e[:, border].sum(-1).mean()),
        "energy_in_border_random_unit_vector_expected": float(border.mean()),
    }

    # several SAME kernels: do numerical near-null directions intersect?
    rng = np.random.default_rng(seed + 1)
    dims = []
    for _ in range(min(trials, 50)):
        k = _random_kernel(rng, 3, 1, 6)
        dims.append(conv_null_space(k, (28, 28, 1), padding="SAME").dim)
    out["six_same_kernels_nullity_f32_rule"] = {int(a): int(b) for a, b in
                                                zip(*np.unique(dims, return_counts=True))}
    return out


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
        k = _random_kernel(np.random.default_rng(0), p, shape[2], width)
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
            k = _random_kernel(np.random.default_rng(seed), 3, 3, cout)
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


def _md(res: dict) -> str:
    L = ["# Null spaces of convolutional first layers", ""]
    L.append(f"Machine: {res['machine']}.  Seconds are wall-clock, best of 1-2 runs, on "
             "shared cores.")
    r = res["108_vs_109"]
    L += ["", "## 108 vs 109", "",
          f"One random 3x3 VALID kernel on 28x28x1, {r['trials']} kernels: nullity at the "
          f"float32 rule {r['nullity_float32_rule']}, at the float64 rule "
          f"{r['nullity_float64_rule']}, exact (GF(p)) {r['nullity_exact_gf_p']}; "
          f"784 - 26*26 = {r['n_minus_m']}.", "", r["argument"]]
    L += ["", "## Nullity table (random LeCun-normal kernels, float32 rule)", "",
          "| input | kernels | padding | stride | n | generic | nullity | f64 rule | "
          "sigma_min/max | s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for t in res["nullity_table"]:
        L.append(f"| {t['input']} | {t['kernels']} | {t['padding']} | {t['stride']} | {t['n']} "
                 f"| {t['generic_nullity']} | {t['nullity']} | {t.get('nullity_f64_rule', '')} "
                 f"| {t['sigma_min_over_max']:.2e} | {t['seconds']} |")
    L += ["", "'generic' = n - min(covered pixels, positions * min(kernels, taps)): the "
          "nullity of a generic kernel bank.", ""]
    s = res["same_padding"]
    t = s["trials_28x28"]
    L += ["## SAME padding (28x28x1, one 3x3 kernel)", ""]
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
    L += ["Smallest singular values (relative) of five random kernels, float64 SVD:", ""]
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
    L += ["SAME CNNs (nsjax.CNN, one 3x3 kernel, 28x28x1): invariance check of the numerical "
          "null space under both rules:", "", "| seed | rule | nullity | largest null sigma/max "
          "| max rel error | ulps | passed |", "|---|---|---|---|---|---|---|"]
    for r in res["same_invariance"]:
        if r["nullity"]:
            L.append(f"| {r['seed']} | {r['rule']} | {r['nullity']} | "
                     f"{r['largest_null_sigma_rel']:.1e} | {r['max_rel_error']:.1e} | "
                     f"{r['max_ulps']:.0f} | {r['passed']} |")
        else:
            L.append(f"| {r['seed']} | {r['rule']} | 0 | | | | (trivial) |")
    L += [""]
    L += ["## Planted degenerate kernels (28x28; nullity float32 rule / float64 rule / exact)",
          "", "| kernel | VALID | SAME | why |", "|---|---|---|---|"]
    for p in res["planted"]:
        v, sm = p["VALID"], p["SAME"]
        L.append(f"| {p['name']} | {v['nullity_f32']}/{v['nullity_f64']}/{v['exact_nullity']} "
                 f"(generic {v['generic_nullity']}) | {sm['nullity_f32']}/{sm['nullity_f64']}/"
                 f"{sm['exact_nullity']} (generic {sm['generic_nullity']}) | {p['why']} |")
    L += ["", "## Patch embeddings", "",
          "| input | patch | width | type | nullity | expected | null space s | row basis | "
          "dense basis | project 4 imgs s | C(Px)/Cx |", "|---" * 11 + "|"]
    for c in res["patch_embedding"]["cases"]:
        L.append(f"| {c['input']} | {c['patch']} | {c['width']} | {c['type']} | {c['nullity']} | "
                 f"{c['expected']} | {c['seconds_null_space']} | {c['row_basis_shape']} "
                 f"({c['row_basis_MB']:.1f} MB) | {c['dense_null_basis_GB']:.1f} GB | "
                 f"{c['seconds_project_4_images']} | {c['rel_residual_C_Px']:.1e} |")
    L += ["", "## CIFAR-10 first layers (32x32x3, 3x3 kernels, stride 1)", "",
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
    return "\n".join(L) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output folder for results.json/.md")
    ap.add_argument("--trials", type=int, default=200, help="random kernels per statistic")
    ap.add_argument("--exact", type=int, default=200, help="of those, exact GF(p) ranks")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--blas-threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="small trial counts (smoke test)")
    args = ap.parse_args(argv)
    if args.quick:
        args.trials, args.exact = min(args.trials, 20), min(args.exact, 5)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    res = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average "
                      f"{os.getloadavg()[0]:.1f}, jax {jax.__version__}"}
    with limit_blas_threads(args.blas_threads):
        res["108_vs_109"] = resolution_108(args.trials, args.seed)
        print("108 vs 109:", res["108_vs_109"]["nullity_exact_gf_p"], flush=True)
        counts = (1, 2, 6) if args.quick else (1, 2, 6, 32, 64)
        res["nullity_table"] = nullity_table(counts, args.seed)
        print("nullity table done", flush=True)
        sizes = (8, 16, 28) if args.quick else (8, 12, 16, 20, 24, 28, 32, 40, 48)
        res["same_padding"] = same_padding(args.trials, args.seed, args.exact, sizes)
        print("SAME padding done", flush=True)
        res["same_invariance"] = same_padding_invariance(4 if args.quick else 10)
        res["planted"] = planted_report((28, 28), 3)
        res["patch_embedding"] = patch_embedding(args.quick)
        print("patch embedding done", flush=True)
    res["cifar_timings"] = cifar_timings(args.seed, args.blas_threads)
    res["total_seconds"] = round(time.perf_counter() - t0, 1)
    (out / "results.json").write_text(json.dumps(res, indent=2, default=str))
    (out / "results.md").write_text(_md(res))
    print(_md(res))
    print(f"wrote {out / 'results.json'} and {out / 'results.md'} "
          f"({res['total_seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
