"""Run the sweeps of a plan and summarise them (acceptance verdicts, growth fits)."""

from __future__ import annotations

import time
import traceback
from dataclasses import asdict, dataclass, field

from benchmarks import _conv_cases, _env
from benchmarks._bandwidth import describe as describe_bandwidth
from benchmarks._cases import Runner, Settings, fit_affine, fit_loglog
from benchmarks._plan import GROUPS, make_plan

SCHEMA = "nsjax-bench/1"

# Acceptance targets of the (60000, 784) float32 rank-32 case (issue text).
TARGET_SPEEDUP = 15.0
TARGET_X_FLOOR = 1.5
# Issue #14: in a plain process, >= this much faster than the NumPy one-liner and the
# hand-written jnp version (1.2 for the conv cases)
TARGET_VS_BASELINES = 1.5


@dataclass
class Config:
    mode: str = "default"  # quick | default | full
    dtypes: list[str] = field(default_factory=lambda: ["float32"])
    groups: list[str] = field(default_factory=lambda: list(GROUPS))
    repeats: int | None = None
    max_call_s: float = 1.5
    seed: int = 0
    hugepages: str = "off"
    devices: int | None = None
    blas_threads: int | None = None


def run(cfg: Config, log=print) -> dict:
    """Run every group of ``cfg`` and return the JSON-ready result document."""
    t_start = time.perf_counter()
    plan = make_plan(cfg.mode)
    repeats = cfg.repeats or (3 if cfg.mode == "quick" else 5)
    runner = Runner(Settings(repeats=repeats, max_call_s=cfg.max_call_s, seed=cfg.seed,
                             best_blas=cfg.blas_threads is None,
                             gemm_size=plan.gemm_size), log)
    doc = {
        "schema": SCHEMA,
        "env": _env.describe(cfg.dtypes, "jax.lax.Precision.HIGHEST"),
        "config": {**asdict(cfg), "repeats": repeats},
        "caps": plan.caps,
        "cases": [],
    }
    log(f"nsjax benchmarks ({cfg.mode}) on {doc['env']['device_kind']} "
        f"x{doc['env']['device_count']}, {doc['env']['cpu_count']} CPU cores, "
        f"[{doc['env']['process']}]")
    for cap in plan.caps:
        log(f"  note: {cap}")

    def add(fn, *args, **kw):
        t0 = time.perf_counter()
        try:
            case = fn(*args, **kw)
        except Exception as e:  # noqa: BLE001 - one broken case must not lose the others
            case = {"group": kw.get("group", fn.__name__), "name": repr(args),
                    "status": f"failed: {type(e).__name__}: {e}",
                    "traceback": traceback.format_exc()}
        case["wall_s"] = time.perf_counter() - t0
        doc["cases"].append(case)
        log(_line(case))
        return case

    for dtype in cfg.dtypes:
        for g in cfg.groups:
            log(f"[{g}] {dtype}")
            runner.gemm_rate(dtype)
            if g == "projection-60k":
                b, n, r = plan.acceptance
                add(runner.projection, "projection-60k", b, n, r, dtype, extra=True,
                    repeats=cfg.repeats or plan.acceptance_repeats)
            elif g == "projection-batch":
                for n, r, bs in plan.batch:
                    for b in bs:
                        add(runner.projection, "projection-batch", b, n, r, dtype)
            elif g == "projection-rank":
                for n, b, rs in plan.rank:
                    for r in rs:
                        add(runner.projection, "projection-rank", b, n, r, dtype)
            elif g == "projection-n":
                r, b, ns = plan.n_sweep
                for n in ns:
                    add(runner.projection, "projection-n", b, n, r, dtype)
            elif g == "null-space":
                for m, n in plan.null_space:
                    add(runner.null_space, m, n, dtype)
            elif g == "stego":
                add(runner.stego, plan.stego_batch, dtype)
            elif g == "invariance":
                add(runner.invariance, plan.invariance_probes, dtype)
            elif g == "conv-null-space":
                for spec in plan.conv_null:
                    add(_conv_cases.null_space_case, runner, spec, dtype)
            elif g == "conv-projection":
                for spec in plan.conv_projection:
                    add(_conv_cases.projection_case, runner, spec, dtype)
            elif g == "devices":
                add(runner.devices, plan.devices_batch, dtype)
    doc["gemm"] = runner.gemm
    doc["acceptance"] = acceptance(doc, cfg.mode)
    doc["fits"] = fits(doc)
    doc["wall_s"] = time.perf_counter() - t_start
    return doc


def _fmt(x, spec=".3g"):
    return "-" if x is None else format(x, spec)


def _line(case: dict) -> str:
    head = f"  {case['name']:<34} "
    if case.get("status") != "ok":
        return head + case.get("status", "?")
    t = case["timings"]
    main = "nsjax" if "nsjax" in t else next(iter(t))
    rat = case.get("ratios", {}).get(main, {})
    parts = [f"{main} {t[main]['median_ms']:.3g} ms"]
    if "paper" in t:
        parts.append(f"paper {t['paper']['median_ms']:.3g} ms "
                     f"(x{_fmt(rat.get('speedup_vs_paper'))})")
    if case.get("floor"):
        parts.append(f"floor {case['floor']['ms']:.3g} ms ({_fmt(rat.get('x_floor'))}x)")
    if case.get("bandwidth"):
        parts.append(f"bandwidth {describe_bandwidth(case['bandwidth'], main)}")
    for v, rr in case.get("ratios", {}).items():
        if "speedup_vs_1dev" in rr:
            parts.append(f"{v} {t[v]['median_ms']:.3g} ms, speedup vs 1 device "
                         f"x{_fmt(rr['speedup_vs_1dev'])}")
    return head + ", ".join(parts)


def acceptance(doc: dict, mode: str) -> dict:
    """Verdicts on the (60000, 784) float32 rank-32 targets, from the projection-60k case."""
    cases = [c for c in doc["cases"] if c.get("group") == "projection-60k"
             and c.get("params", {}).get("dtype") == "float32" and c.get("status") == "ok"]
    if not cases:
        return {"evaluated": False, "reason": "projection-60k (float32) was not run"}
    c = cases[0]
    out = {"evaluated": c["params"]["B"] == 60_000, "case": c["name"],
           "targets": {"speedup_vs_paper_min": TARGET_SPEEDUP, "x_floor_max": TARGET_X_FLOOR,
                       "speedup_vs_baselines_min": TARGET_VS_BASELINES},
           "process": doc["env"].get("process"),
           "floor_ms": c["floor"]["ms"], "floor_bound": c["floor"]["bound"],
           "paper_ms": c["timings"].get("paper", {}).get("median_ms"), "variants": {}}
    if not out["evaluated"]:
        out["reason"] = f"{mode} mode runs B={c['params']['B']}, not 60000"
    for v, rat in c["ratios"].items():
        sp, xf = rat["speedup_vs_paper"], rat["x_floor"]
        snp, sjn = rat.get("speedup_vs_numpy"), rat.get("speedup_vs_jnp")
        out["variants"][v] = {
            "ms": c["timings"][v]["median_ms"], "speedup_vs_paper": sp, "x_floor": xf,
            "speedup_vs_numpy": snp, "speedup_vs_jnp": sjn,
            "speedup_ok": sp is not None and sp >= TARGET_SPEEDUP,
            "numpy_ok": snp is not None and snp >= TARGET_VS_BASELINES,
            "jnp_ok": sjn is not None and sjn >= TARGET_VS_BASELINES,
            "floor_ok": xf is not None and xf <= TARGET_X_FLOOR,
            # nsjax_xla: the same projection without the fused CPU kernel, for comparison
            "reference": v == "nsjax_xla",
        }
    return out


def fits(doc: dict) -> dict:
    """How nsjax's time grows: with batch size, rank, n (log-log slopes, affine fits)."""
    ok = [c for c in doc["cases"] if c.get("status") == "ok"]
    out: dict = {"batch": [], "rank": [], "n": []}
    for group, key, fixed, field_ in (("projection-batch", "batch", ("n", "r"), "B"),
                                      ("projection-rank", "rank", ("n", "B"), "r"),
                                      ("projection-n", "n", ("r", "B"), "n")):
        series: dict = {}
        for c in ok:
            if c["group"] != group:
                continue
            p = c["params"]
            series.setdefault((p["dtype"],) + tuple(p[f] for f in fixed), []).append(c)
        for k, cs in series.items():
            cs = sorted(cs, key=lambda c: c["params"][field_])
            xs = [c["params"][field_] for c in cs]
            ys = {v: [c["timings"][v]["median_ms"] for c in cs]
                  for v in ("nsjax", "nsjax_nocheck", "nsjax_xla", "paper", "elementwise")
                  if all(v in c["timings"] for c in cs)}
            # batch: fit where the fixed per-call overhead is negligible (B >= 10^4)
            sel = [i for i, x in enumerate(xs) if field_ != "B" or x >= 10_000]
            entry = {"dtype": k[0], **dict(zip(fixed, k[1:])), "x": field_, "values": xs}
            for v, y in ys.items():
                entry[v] = {"loglog_slope": fit_loglog([xs[i] for i in sel],
                                                       [y[i] for i in sel]),
                            "affine": fit_affine([xs[i] for i in sel], [y[i] for i in sel])}
            if field_ == "r":
                # nullity n - r falls as r grows: nsjax's time should rise, the paper's fall
                entry["nullity"] = [c["params"]["nullity"] for c in cs]
            out[key].append(entry)
    return out
