"""Write a run's results: ``results.json``, ``results.md`` and PNG scaling plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

from benchmarks._bandwidth import describe as describe_bandwidth

VARIANT_STYLE = {  # label, matplotlib style
    "nsjax": ("nsjax", dict(color="C0", marker="o", lw=2)),
    "nsjax_nocheck": ("nsjax, check_finite=False", dict(color="C0", marker=".", ls=":")),
    "nsjax_xla": ("nsjax via XLA matmuls (no fused kernel)", dict(color="C1", marker="x",
                                                                  ls="--")),
    "paper": ("paper: X @ N @ N.T", dict(color="C3", marker="s")),
    "numpy": ("NumPy: X - (X R) R.T", dict(color="C2", marker="^")),
    "jnp": ("jnp jit: x - (x @ R) @ R.T", dict(color="C6", marker="d", ls="-.")),
    "torch_cpu": ("PyTorch CPU", dict(color="C4", marker="v")),
    "torch_cuda": ("PyTorch CUDA", dict(color="C5", marker="v")),
}


def _json_default(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:
        pass
    return str(o)


def _clean(o):
    """Replace NaN/inf floats by None so that the JSON is strict."""
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def write_all(doc: dict, out: Path, plots: bool = True) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "results.json", out / "results.md"]
    files[0].write_text(json.dumps(_clean(json.loads(json.dumps(doc, default=_json_default))),
                                   indent=1, allow_nan=False))
    files[1].write_text(markdown(doc))
    if plots:
        files += write_plots(doc, out)
    return files


# ---------------------------------------------------------------------- Markdown


def _f(x, spec=".3g", none="-"):
    if x is None:
        return none
    return format(x, spec)


def _ms(st: dict | None) -> str:
    if not st:
        return "-"
    return f"{st['median_ms']:.3g} [{st['q1_ms']:.3g}-{st['q3_ms']:.3g}]"


def _x(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def markdown(doc: dict) -> str:
    env, cfg = doc["env"], doc["config"]
    lines = [
        f"# nsjax benchmarks ({cfg['mode']} sweep, {env['date']})",
        "",
        f"- device: **{env['device_kind']}** ({env['platform']}) x{env['device_count']}"
        f"{_hbm_note(env)}; "
        f"CPU: {env['cpu_model']}, {env['cpu_count']} cores; load average at start "
        f"{_f((env.get('load_average_at_start') or [None])[0], '.2f')}",
        f"- jax {env['jax']}, jaxlib {env['jaxlib']}, numpy {env['numpy']}, scipy "
        f"{env['scipy']}, torch {env['torch'] or 'not installed'}; python {env['python']}",
        f"- dtypes: {', '.join(env['dtypes'])}; matmul precision {env['precision']}; "
        f"x64 {'on' if env['x64_enabled'] else 'off'}",
        f"- process: **{env.get('process', '?')}**",
        f"- allocator: glibc hugetlb tunable {'on' if env['glibc_hugetlb'] else 'off'} "
        f"(kernel THP mode: {env['thp_mode']}); XLA_FLAGS: `{env['xla_flags'] or '-'}`; "
        f"OpenBLAS threads: {sorted(set(env.get('blas_threads', {}).values())) or '-'} "
        f"(OPENBLAS_THREAD_TIMEOUT={env.get('openblas_thread_timeout')})",
        f"- wall time: {doc['wall_s']:.0f} s; repeats per variant: {cfg['repeats']} "
        "(interleaved; times are medians [IQR] in ms per call)",
    ]
    for cap in doc.get("caps", []):
        lines.append(f"- note: {cap}")
    lines += ["", *_acceptance_md(doc), "", *_fits_md(doc)]
    groups = []
    for c in doc["cases"]:
        if c.get("group") not in groups:
            groups.append(c.get("group"))
    for g in groups:
        cases = [c for c in doc["cases"] if c.get("group") == g]
        lines += ["", f"## {g}", ""]
        if g in ("projection-60k", "projection-batch", "projection-rank", "projection-n"):
            lines += _projection_table(cases)
        else:
            lines += _generic_table(cases)
    g = doc.get("gemm", {})
    if g:
        lines += ["", "## GEMM rate (roofline)", "",
                  "The flops floor uses the jitted JAX matmul's rate; NumPy's (OpenBLAS) is "
                  "shown for reference.", "",
                  "| dtype | size | JAX GFLOP/s | JAX ms [IQR] | NumPy GFLOP/s | NumPy ms [IQR] |",
                  "|---|---|---|---|---|---|"]
        for dt, v in g.items():
            lines.append(f"| {dt} | {v['size']}^3 | {v['gflops']:.1f} | {_ms(v['stats'])} | "
                         f"{v['numpy_gflops']:.1f} | {_ms(v['numpy_stats'])} |")
    lines.append("")
    return "\n".join(lines)


def _hbm_note(env: dict) -> str:
    peak = env.get("hbm_peak_gbps")
    return f", nominal HBM bandwidth {peak:g} GB/s (data sheet)" if peak else ""


def _acceptance_md(doc: dict) -> list[str]:
    a = doc.get("acceptance", {})
    out = ["## Acceptance: (60000, 784) float32 batch, rank 32", ""]
    if "variants" not in a:
        return out + [f"not evaluated: {a.get('reason', 'case not run')}"]
    if not a["evaluated"]:
        out.append(f"**not evaluated**: {a['reason']} (figures below are for that size)")
        out.append("")
    t = a["targets"]
    out += [
        f"paper pipeline {_f(a['paper_ms'])} ms; roofline floor {a['floor_ms']:.3g} ms "
        f"({a['floor_bound']}-bound).",
        "",
        f"| variant | ms | speedup vs paper (>= {t['speedup_vs_paper_min']:g}) | "
        f"vs NumPy (>= {t.get('speedup_vs_baselines_min', 1.5):g}) | "
        f"vs jnp (>= {t.get('speedup_vs_baselines_min', 1.5):g}) | "
        f"x floor (<= {t['x_floor_max']:g}) |",
        "|---|---|---|---|---|---|",
    ]
    for v, r in a["variants"].items():
        oks = ["PASS" if r.get(k) else "FAIL"
               for k in ("speedup_ok", "numpy_ok", "jnp_ok", "floor_ok")]
        if not a["evaluated"] or r.get("reference"):
            oks = ["n/a" if not a["evaluated"] else "(reference)"] * 4
        out.append(f"| {v} | {r['ms']:.3g} | {_f(r['speedup_vs_paper'], '.1f')}x {oks[0]} | "
                   f"{_f(r.get('speedup_vs_numpy'), '.2f')}x {oks[1]} | "
                   f"{_f(r.get('speedup_vs_jnp'), '.2f')}x {oks[2]} | "
                   f"{_f(r['x_floor'], '.2f')}x {oks[3]} |")
    out.append("")
    return out


def _fits_md(doc: dict) -> list[str]:
    f = doc.get("fits", {})
    out = ["## How the time grows", ""]
    names = {"batch": "batch size B (B >= 10^4)", "rank": "rank r", "n": "input size n"}
    for key, label in names.items():
        for e in f.get(key, []):
            fixed = ", ".join(f"{k}={e[k]}" for k in e if k in ("n", "r", "B"))
            parts = []
            for v in ("nsjax", "nsjax_xla", "paper", "elementwise"):
                if v in e and e[v]["loglog_slope"] is not None:
                    aff = e[v]["affine"]
                    parts.append(f"{v}: log-log slope {e[v]['loglog_slope']:.2f}, affine "
                                 f"{aff['intercept_ms']:.3g} + {aff['slope_ms']:.3g}*{e['x']}"
                                 f" ms (R^2 {aff['r2']:.3f})")
            if parts:
                out.append(f"- vs {label} ({fixed}, {e['dtype']}): " + "; ".join(parts))
    if len(out) == 2:
        out.append("- (no sweep with two or more sizes ran)")
    out.append("")
    out.append("Slope 1 = linear.  Along the rank sweep the nullity n - r *falls*: nsjax "
               "rises with r (4 B n r flops) while the paper pipeline falls with the nullity "
               "(4 B n (n - r) flops).")
    return out


def _projection_table(cases: list[dict]) -> list[str]:
    head = ("| B | n | r | nullity | dtype | nsjax ms [IQR] | no check | XLA matmuls "
            "| first call | paper ms | x paper | numpy ms | x numpy | jnp ms | x jnp | torch ms "
            "| floor ms (elem / flops) | x floor | nsjax bandwidth | max err |")
    out = [head, "|" + "---|" * 20]
    for c in cases:
        p = c.get("params", {})
        pre = (f"| {p.get('B', '?')} | {p.get('n', '?')} | {p.get('r', '?')} | "
               f"{p.get('nullity', '?')} | {p.get('dtype', '?')} ")
        if c.get("status") != "ok":
            out.append(pre + f"| {c.get('status')} |" + " |" * 14)
            continue
        t, r, fl = c["timings"], c["ratios"]["nsjax"], c["floor"]
        torch = t.get("torch_cuda") or t.get("torch_cpu")
        skip = c.get("skipped", {})
        paper = _ms(t.get("paper")) if "paper" in t else skip.get("paper", "-")
        numpy = f"{t['numpy']['median_ms']:.3g}" if "numpy" in t else skip.get("numpy", "-")
        err = max(c["correct"]["max_abs_err"].values())
        out.append(
            pre + f"| {_ms(t['nsjax'])} | {t['nsjax_nocheck']['median_ms']:.3g} | "
            f"{_f(t['nsjax_xla']['median_ms'] if 'nsjax_xla' in t else None)} | "
            f"{t['nsjax']['first_call_ms']:.3g} | {paper} | {_x(r['speedup_vs_paper'])} | "
            f"{numpy} | {_x(r['speedup_vs_numpy'])} | "
            f"{_f(t['jnp']['median_ms'] if 'jnp' in t else None)} | "
            f"{_x(r.get('speedup_vs_jnp'))} | "
            f"{_f(torch['median_ms'] if torch else None)} | {fl['ms']:.3g} "
            f"({fl['elementwise_ms']:.3g} / {fl['flops_ms']:.3g}) | {_x(r['x_floor'])} | "
            f"{describe_bandwidth(c['bandwidth']) if 'bandwidth' in c else '-'} | {err:.1e} |")
    return out


def _generic_table(cases: list[dict]) -> list[str]:
    out = ["| case | variant | ms [IQR] | first call | ratios | correct |",
           "|---|---|---|---|---|---|"]
    for c in cases:
        if c.get("status") != "ok":
            out.append(f"| {c.get('name')} | - | {c.get('status')} | | | |")
            continue
        rat = c.get("ratios", {})
        for v, st in c["timings"].items():
            rs = rat.get(v, {})
            rtxt = ", ".join(f"{k.replace('speedup_vs_', 'x vs ')} {val:.2f}"
                             for k, val in rs.items() if val is not None)
            fc = st.get("first_call_ms")
            ok = ("ok" if c["correct"]["ok"] else "NO") if v == next(iter(c["timings"])) else ""
            out.append(f"| {c['name']} | {v} | {_ms(st)} | {_f(fc)} | {rtxt} | {ok} |")
        for v, why in c.get("skipped", {}).items():
            out.append(f"| {c['name']} | {v} | {why} | | | |")
        if c.get("floor"):
            out.append(f"| {c['name']} | roofline floor | {c['floor']['ms']:.3g} | | "
                       f"{c['floor'].get('note', c['floor'].get('bound', ''))} | |")
        if c.get("bandwidth"):
            out.append(f"| {c['name']} | nsjax bandwidth | | | "
                       f"{describe_bandwidth(c['bandwidth'])} | |")
    return out


# ---------------------------------------------------------------------- plots


def write_plots(doc: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401  (matplotlib.ticker.NullLocator below)

    files = []
    ok = [c for c in doc["cases"] if c.get("status") == "ok"]
    title = (f"{doc['env']['device_kind']} x{doc['env']['device_count']}, "
             f"{doc['env']['cpu_count']} cores, jax {doc['env']['jax']}")
    specs = (("projection-batch", "B", ("n", "r"), "batch size B", "batch.png"),
             ("projection-rank", "r", ("n", "B"), "rank r  (nullity n - r falls to the right)",
              "rank.png"),
             ("projection-n", "n", ("r", "B"), "input size n", "n.png"))
    for group, xkey, fixed, xlabel, fname in specs:
        series: dict = {}
        for c in ok:
            if c["group"] == group:
                p = c["params"]
                series.setdefault((p["dtype"],) + tuple(p[k] for k in fixed), []).append(c)
        if not series:
            continue
        fig, axes = plt.subplots(1, len(series), figsize=(5.5 * len(series), 4.2),
                                 squeeze=False)
        for ax, (key, cs) in zip(axes[0], sorted(series.items())):
            cs = sorted(cs, key=lambda c: c["params"][xkey])
            xs = [c["params"][xkey] for c in cs]
            for v, (label, style) in VARIANT_STYLE.items():
                pts = [(x, c["timings"][v]["median_ms"]) for x, c in zip(xs, cs)
                       if v in c["timings"]]
                if pts:
                    ax.plot(*zip(*pts), label=label, **style)
            ax.plot(xs, [c["floor"]["ms"] for c in cs], color="k", ls="--",
                    label="roofline floor")
            ax.set_xscale("log")
            ax.set_yscale("log")
            if xkey != "B":  # label the measured sizes themselves
                ax.set_xticks(xs, [str(x) for x in xs], fontsize=7)
                ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ax.set_xlabel(xlabel)
            ax.set_ylabel("time per call (ms)")
            ax.set_title(f"{group}: " + ", ".join(f"{k}={v}" for k, v in zip(fixed, key[1:]))
                         + f", {key[0]}", fontsize=9)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
        fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        fig.savefig(out / fname, dpi=110)
        plt.close(fig)
        files.append(out / fname)
    nsc = sorted((c for c in ok if c["group"] == "null-space"),
                 key=lambda c: c["params"]["m"] * c["params"]["n"])
    if nsc:
        fig, ax = plt.subplots(figsize=(6, 4.2))
        xs = [c["params"]["m"] * c["params"]["n"] ** 2 for c in nsc]
        for v, label in (("nsjax", "nsjax.null_space"), ("paper", "scipy.linalg.null_space"),
                         ("numpy", "numpy.linalg.svd (thin)")):
            pts = [(x, c["timings"][v]["median_ms"]) for x, c in zip(xs, nsc)
                   if v in c["timings"]]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=label)
        ax.plot(xs, [c["floor"]["ms"] for c in nsc], "k--", label="Gram-matrix flops floor")
        for x, c in zip(xs, nsc):
            ax.annotate(f"{c['params']['m']}x{c['params']['n']}", (x, c["timings"]["nsjax"]
                        ["median_ms"]), fontsize=7)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("m n^2")
        ax.set_ylabel("time per call (ms)")
        ax.set_title("null-space basis of a dense (m, n) matrix", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "null_space.png", dpi=110)
        plt.close(fig)
        files.append(out / "null_space.png")
    acc = [c for c in ok if c["group"] == "projection-60k"]
    if acc:
        c = acc[0]
        names = [k for k in c["timings"] if k != "gemm"]
        vals = [c["timings"][k]["median_ms"] for k in names]
        lo = [c["timings"][k]["median_ms"] - c["timings"][k]["q1_ms"] for k in names]
        hi = [c["timings"][k]["q3_ms"] - c["timings"][k]["median_ms"] for k in names]
        fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.5))
        ax.barh(names, vals, xerr=[lo, hi], color=["C0" if "nsjax" in k else "C7" for k in names])
        ax.axvline(c["floor"]["ms"], color="k", ls="--", label="roofline floor")
        ax.set_xscale("log")
        ax.set_xlabel("ms per call (median, IQR)")
        ax.set_title(c["name"], fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "projection_60k.png", dpi=110)
        plt.close(fig)
        files.append(out / "projection_60k.png")
    return files
