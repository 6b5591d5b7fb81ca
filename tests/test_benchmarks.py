"""The benchmark harness works: output files, JSON schema, results correct vs NumPy.

No timing assertions: CI machines are shared and slow.  ``python -m benchmarks --quick``
runs once per session in a subprocess (as a user would run it, from the repository root);
its helpers are also checked in-process on tiny data.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import nsjax
from nsjax import _cpu_kernel as K

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import _baselines as bl  # noqa: E402
from benchmarks._cases import _stego_numpy, fit_affine, fit_loglog  # noqa: E402
from benchmarks._timing import measure  # noqa: E402

STATS_KEYS = {"median_ms", "q1_ms", "q3_ms", "min_ms", "max_ms", "repeats", "inner",
              "minor_faults_per_call"}
ENV_KEYS = {"date", "platform", "device_kind", "device_count", "jax", "jaxlib", "dtypes",
            "precision", "cpu_count", "x64_enabled", "glibc_hugetlb", "blas_threads"}
PROJECTION_GROUPS = {"projection-60k", "projection-batch", "projection-rank", "projection-n"}


def _run(args, tmp):
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    env.pop("NSJAX_BENCH_REEXEC", None)
    proc = subprocess.run([sys.executable, "-m", "benchmarks", *args, "--out", str(tmp)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads((tmp / "results.json").read_text())


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-quick")
    proc, doc = _run(["--quick"], out)
    return out, proc, doc


def test_quick_writes_all_files(quick):
    out, proc, _ = quick
    for name in ("results.json", "results.md", "batch.png", "rank.png", "n.png",
                 "null_space.png", "projection_60k.png"):
        assert (out / name).stat().st_size > 0, name
    assert "wall time" in proc.stdout


def test_json_schema(quick):
    _, _, doc = quick
    assert doc["schema"] == "nsjax-bench/1"
    assert ENV_KEYS <= set(doc["env"])
    assert doc["env"]["dtypes"] == ["float32"]
    assert doc["config"]["mode"] == "quick"
    assert doc["caps"] and doc["wall_s"] > 0
    assert doc["gemm"]["float32"]["gflops"] > 0
    assert doc["gemm"]["float32"]["size"] == 1024  # quick mode: the smaller GEMM
    groups = {c["group"] for c in doc["cases"]}
    assert {"projection-60k", "projection-batch", "projection-rank", "projection-n",
            "null-space", "stego", "invariance", "conv-null-space", "conv-projection",
            "devices"} <= groups
    for c in doc["cases"]:
        assert c["status"] == "ok" or c["status"].startswith("skipped:"), (c["name"],
                                                                            c["status"])
        if c["status"] != "ok":
            continue
        assert c["correct"]["ok"], c["correct"]
        for name, st in c["timings"].items():
            assert STATS_KEYS <= set(st), name
            assert 0 < st["min_ms"] <= st["q1_ms"] <= st["median_ms"] <= st["q3_ms"] \
                <= st["max_ms"], (c["name"], name, st)
        first = next(iter(c["timings"].values()))
        assert first["first_call_ms"] > 0 and first["compile_ms"] >= 0


def test_projection_cases_are_consistent(quick):
    _, _, doc = quick
    cases = [c for c in doc["cases"] if c["group"] in PROJECTION_GROUPS]
    assert cases and all(c["status"] == "ok" for c in cases)
    for c in cases:
        p, t, fl, rat = c["params"], c["timings"], c["floor"], c["ratios"]["nsjax"]
        assert p["nullity"] == p["n"] - p["r"]
        assert fl["flops"] == 4 * p["B"] * p["n"] * p["r"]
        assert fl["ms"] == max(fl["elementwise_ms"], fl["flops_ms"])
        assert math.isclose(rat["x_floor"], t["nsjax"]["median_ms"] / fl["ms"])
        assert math.isclose(rat["speedup_vs_paper"], t["paper"]["median_ms"] /
                            t["nsjax"]["median_ms"])
        tol = c["correct"]["tol"]
        for v in ("nsjax", "nsjax_nocheck", "paper", "numpy", "jnp"):
            assert c["correct"]["max_abs_err"][v] <= tol
        # the NumPy one-liner and the hand-written jnp version are in every projection case
        assert {"numpy", "jnp"} <= set(t)
        assert math.isclose(rat["speedup_vs_jnp"], t["jnp"]["median_ms"] /
                            t["nsjax"]["median_ms"])
    acc = doc["acceptance"]
    assert acc["evaluated"] is False and "quick" in acc["reason"]
    assert {"nsjax", "nsjax_nocheck"} <= set(acc["variants"])


def test_conv_cases_are_consistent(quick):
    _, _, doc = quick
    nulls = {c["params"]["kernel_shape"][0]: c for c in doc["cases"]
             if c["group"] == "conv-null-space"}
    projs = {c["params"]["kernel_shape"][0]: c for c in doc["cases"]
             if c["group"] == "conv-projection"}
    assert set(nulls) == set(projs) == {3, 16}
    assert all(c["status"] == "ok" for c in [*nulls.values(), *projs.values()])
    valid, patch = nulls[3]["correct"], nulls[16]["correct"]
    assert valid["nsjax_dim"] == valid["dense_float64_dim"] == 28 * 28 - 26 * 26  # Lemma B.1
    assert patch["patch"] == [16, 16] and patch["nsjax_dim"] == 64 * 64 * 3 - 16 * 192
    assert "paper" in nulls[3]["timings"] and "paper" in nulls[16]["skipped"]
    for c in projs.values():
        fl, p = c["floor"], c["params"]
        assert fl["flops"] == 4 * fl["rows"] * fl["d"] * fl["side"]
        assert p["nullity"] == p["n"] - p["rank"]
        assert all(e <= c["correct"]["tol"] for e in c["correct"]["max_abs_err"].values())
    assert projs[3]["params"]["nullity"] == 108 and "paper" in projs[3]["timings"]
    assert "numpy" in projs[16]["timings"]  # patch structure, no dense operator
    for c in projs.values():  # both baselines in every conv projection case
        assert {"numpy", "jnp"} <= set(c["timings"]) and "speedup_vs_jnp" in c["ratios"]["nsjax"]
    assert projs[3]["numpy_side"] == "(x N) N^T"  # nullity 108 < rank 676


def test_default_run_is_a_plain_process(quick):
    from benchmarks import _env

    _, proc, doc = quick
    # the run inherits this environment: plain unless the suite itself runs with a setting
    # (GLIBC_TUNABLES, OPENBLAS_THREAD_TIMEOUT, NSJAX_CPU_KERNEL=avx2, ...)
    if _env.process_label() == "plain process" and not os.environ.get("GLIBC_TUNABLES"):
        assert doc["env"]["process"] == "plain process"
        assert not doc["env"]["glibc_hugetlb"] and doc["env"]["openblas_thread_timeout"] is None
    assert doc["config"]["hugepages"] == "off"


def test_stego_row_present(quick):
    _, _, doc = quick
    (c,) = [c for c in doc["cases"] if c["group"] == "stego"]
    # nsjax's alpha2 against the float64 reference: the float32 basis and the (1 - 8 eps)
    # shrink leave ~1e-6 relative; 1e-5 is 10x that
    assert c["status"] == "ok" and c["correct"]["alpha2_max_rel_err"] <= 1e-5


def test_markdown_has_every_section(quick):
    out, _, doc = quick
    md = (out / "results.md").read_text()
    assert "## Acceptance: (60000, 784) float32 batch, rank 32" in md
    for g in {c["group"] for c in doc["cases"]}:
        assert f"## {g}" in md
    assert "quick mode" in md


def test_devices_and_isa_opt_ins_reexec_with_their_settings(tmp_path):
    # one re-executed run for both opt-ins: N host devices, and every library on AVX2
    _, doc = _run(["--quick", "--devices", "4", "--isa", "avx2", "--no-plots"], tmp_path)
    env = doc["env"]
    assert env["device_count"] == 4
    assert env["xla_flags"].split() == ["--xla_force_host_platform_device_count=4",
                                        "--xla_cpu_max_isa=AVX2"]
    assert env["process"].startswith("OPT-IN instruction sets chosen (NSJAX_CPU_KERNEL=avx2, "
                                     "OPENBLAS_CORETYPE=Haswell, --xla_cpu_max_isa=AVX2)")
    assert env["openblas_cores"] and set(env["openblas_cores"].values()) == {"Haswell"}
    if K.available():
        assert env["cpu_kernel"].startswith("fused CPU kernel: avx2+"), env["cpu_kernel"]
    (c,) = doc["cases"]
    assert c["group"] == "devices" and c["status"] == "ok"
    assert c["correct"]["sharding_kept"] and c["correct"]["output_devices"] == 4
    assert c["ratios"]["nsjax_4dev"]["speedup_vs_1dev"] > 0


# ---------------------------------------------------------------------- helpers, in-process


def _problem(n=40, r=6, b=16, seed=0):
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((r, n)).astype(np.float32)
    x = rng.uniform(-1, 1, (b, n)).astype(np.float32)
    return w1, x, nsjax.null_space(w1)


def test_baselines_agree_with_nsjax():
    w1, x, ns = _problem()
    ref = np.asarray(ns.project(jnp.asarray(x)))
    nb, how = bl.paper_basis(w1)
    assert nb.shape == (40, 34) and how == "scipy.linalg.null_space"
    np.testing.assert_allclose(bl.paper_project(x, nb), ref, atol=1e-5)
    np.testing.assert_allclose(bl.numpy_complement(x, np.asarray(ns.row_basis)), ref, atol=1e-5)
    # the QR route used for large n gives the same projector
    q, _ = np.linalg.qr(w1.T.astype(np.float64), mode="complete")
    np.testing.assert_allclose(bl.paper_project(x, q[:, 6:]), ref, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(bl.elementwise_pass()(jnp.asarray(x))), x)
    assert bl.paper_flops(2, 40, 6) == 4 * 2 * 40 * 34
    for name, (fn, res) in bl.torch_variants(x, np.asarray(ns.row_basis)).items():
        np.testing.assert_allclose(res(), ref, atol=1e-5, err_msg=name)


def test_stego_reference_matches_nsjax():
    stego = nsjax.stego
    w1, _, _ = _problem(n=784, r=32)
    ns = nsjax.null_space(w1, input_shape=(28, 28, 1))
    rng = np.random.default_rng(3)
    c = rng.uniform(-1, 1, (8, 28, 28, 1)).astype(np.float32)
    h = rng.uniform(-1, 1, (8, 28, 28, 1)).astype(np.float32)
    res = stego(jnp.asarray(c), jnp.asarray(h), ns, alpha1=0.2)
    rb = np.asarray(ns.row_basis, np.float64)
    s, a2 = _stego_numpy(c.reshape(8, -1).astype(np.float64), h.reshape(8, -1).astype(
        np.float64), 0.2, lambda z: z - (z @ rb) @ rb.T, with_alpha=True)
    np.testing.assert_allclose(np.asarray(res.image).reshape(8, -1), s, atol=1e-5)
    np.testing.assert_allclose(np.asarray(res.alpha2), a2, rtol=1e-5)  # as above


def test_measure_and_fits():
    calls = {"a": 0, "b": 0}

    def a():
        calls["a"] += 1
        return jnp.ones(3) + 1

    def b():
        calls["b"] += 1
        return np.ones(3)

    st = measure({"a": a, "b": b}, repeats=4, target_s=0.0)
    assert set(st) == {"a", "b"} and st["a"].repeats == 4 and st["b"].inner == 1
    assert calls["a"] >= 4 + 2  # warm-up + calibration + samples
    assert st["a"].min_ms <= st["a"].median_ms <= st["a"].max_ms
    assert math.isclose(fit_loglog([1, 10, 100], [2, 20, 200]), 1.0)
    aff = fit_affine([1, 2, 3], [5, 7, 9])
    assert math.isclose(aff["slope_ms"], 2.0) and math.isclose(aff["r2"], 1.0)


def test_measure_settles_after_the_named_variants():
    st = measure({"a": lambda: np.ones(3), "b": lambda: np.ones(3)}, repeats=3, target_s=0.0,
                 settle_s={"a": 0.01})
    assert st["a"].repeats == st["b"].repeats == 3
    assert st["a"].max_ms < 10  # the idle time is not part of the sample


def test_reexec_only_on_request(monkeypatch):
    from benchmarks import _env

    def no_exec(*a, **k):
        raise AssertionError("re-executed without an opt-in setting")

    monkeypatch.setattr(_env.os, "execve", no_exec)
    monkeypatch.delenv(_env.REEXEC_MARK, raising=False)
    _env.reexec_if_needed("benchmarks", [], hugepages=_env.want_hugepages("off"), devices=None)
    for var in ("GLIBC_TUNABLES", "OPENBLAS_THREAD_TIMEOUT", *_env._ISA_VARS):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    assert _env.process_label() == "plain process" and _env.blas_settle_s() > 0
    monkeypatch.setenv("OPENBLAS_THREAD_TIMEOUT", "4")
    assert "OPT-IN tuned process" in _env.process_label() and _env.blas_settle_s() == 0
    # an instruction set chosen by hand is no plain process either
    monkeypatch.delenv("OPENBLAS_THREAD_TIMEOUT")
    monkeypatch.setenv("NSJAX_CPU_KERNEL", "avx2")
    assert _env.process_label() == ("OPT-IN instruction sets chosen (NSJAX_CPU_KERNEL=avx2), "
                                    "not what a user's process gets")
    with pytest.raises(SystemExit, match="--isa: expected one of"):
        _env.reexec_if_needed("benchmarks", [], hugepages=False, devices=None, isa="sse2")


def test_both_entry_points_take_the_process_options_alike(monkeypatch):
    from benchmarks import __main__ as bench_main
    from benchmarks import _env, projection_60k

    class Stop(Exception):
        pass

    seen = []

    def record_threads(n):
        seen[-1]["blas_threads"] = n
        raise Stop  # the run itself is not wanted here

    monkeypatch.setattr(_env, "reexec_if_needed", lambda module, argv, **kw: seen.append(
        {"module": module, "argv": argv, **kw}))
    monkeypatch.setattr(_env, "blas_threads", record_threads)
    argv = ["--hugepages", "off", "--openblas-thread-timeout", "4", "--isa", "avx2",
            "--blas-threads", "1"]
    for main in (bench_main.main, projection_60k.main):
        with pytest.raises(Stop):
            main(argv)
        with pytest.raises(SystemExit):  # 0 threads is no count (and not the default)
            main(["--blas-threads", "0"])
    assert [s.pop("module") for s in seen] == ["benchmarks", "benchmarks.projection_60k"]
    assert seen[0] == seen[1] == {"argv": argv, "hugepages": False, "devices": None,
                                  "openblas_timeout": 4, "isa": "avx2", "blas_threads": 1}


def test_isa_emulation_only_caps_an_x86_cpu_that_has_the_level():
    from benchmarks import _env

    flags = {"sse4_2", "avx", "avx2", "fma", "avx512f"}
    assert _env.isa_problem("avx2", "x86_64", flags) is None
    assert "this machine is aarch64" in _env.isa_problem("avx2", "aarch64", set())
    assert "no AVX2+FMA" in _env.isa_problem("avx2", "x86_64", {"sse4_2", "avx"})
    assert "expected one of ['avx2']" in _env.isa_problem("avx512", "x86_64", flags)


def _case(skip=("paper",)):
    st = {"median_ms": 10.0, "q1_ms": 9.0, "q3_ms": 11.0, "minor_faults_per_call": 3.0}
    t = {v: dict(st) for v in ("nsjax", "nsjax_complement", "numpy", "jnp", "paper")
         if v not in skip}
    for v in ("numpy", "jnp"):
        if v in t:
            t[v]["median_ms"] = 20.0
    rat = {v: {"speedup_vs_paper": None if "paper" in skip else 30.0,
               "speedup_vs_numpy": None if "numpy" in skip else 2.0,
               "speedup_vs_jnp": 2.0, "x_floor": None} for v in ("nsjax", "nsjax_complement")}
    return {"status": "ok", "timings": t, "ratios": rat, "floor": {},
            "correct": {"tol": 1e-4, "max_abs_err": {"nsjax": 1e-7}},
            "skipped": {k: "skipped: estimated 9 s per call" for k in skip}}


def test_projection_60k_prints_with_a_skipped_baseline():
    from benchmarks.projection_60k import format_case, verdicts

    lines = format_case(_case(skip=("paper",)))  # issue #14: this raised TypeError
    text = "\n".join(lines)
    assert "vs paper - (>= 15: FAIL)" in text and "skipped: estimated" in text
    assert lines[-1].endswith("NOT all met")
    lines = format_case(_case(skip=("paper", "numpy")))
    assert "vs NumPy - (>= 1.5: FAIL)" in "\n".join(lines)
    ok, vlines = verdicts(_case(skip=())["ratios"])
    assert ok and len(vlines) == 2 and all("FAIL" not in v for v in vlines)
    assert format_case(_case(skip=()))[-1].endswith("all PASS")
    case = _case(skip=())
    case["timings"]["numpy_copy"] = dict(case["timings"]["nsjax"], median_ms=4.0)
    case["timings"]["paper"]["median_ms"] = 300.0
    ceiling = next(ln for ln in format_case(case) if ln.startswith("ceiling"))
    own = case["timings"]["nsjax"]["median_ms"]
    assert "paper / NumPy copy = 75.0x" in ceiling
    assert f"ns.project takes {own / 4.0:.2f}x the copy" in ceiling
    assert not any("ceiling" in ln for ln in lines)  # no paper time, no ceiling line


def test_hbm_peaks_by_device_kind():
    from benchmarks._bandwidth import hbm_peak_gbps

    # device kinds as JAX reports them (CUDA device names, TPU generations)
    assert hbm_peak_gbps("gpu", "NVIDIA H200") == 4800
    assert hbm_peak_gbps("gpu", "NVIDIA H100 80GB HBM3") == 3350
    assert hbm_peak_gbps("gpu", "NVIDIA H100 PCIe") == 2000
    assert hbm_peak_gbps("gpu", "NVIDIA A100-SXM4-80GB") == 2039
    assert hbm_peak_gbps("gpu", "NVIDIA A100-SXM4-40GB") == 1555
    assert hbm_peak_gbps("gpu", "NVIDIA A100-SXM-80GB") == 2039  # another spelling seen
    assert hbm_peak_gbps("gpu", "NVIDIA A100 80GB PCIe") == 1935
    assert hbm_peak_gbps("tpu", "TPU v5 lite") == 819
    assert hbm_peak_gbps("tpu", "TPU v5") == 2765
    # a kind the table does not list gets no peak, not a near miss's: GH200 is no H200
    assert hbm_peak_gbps("gpu", "NVIDIA GH200 480GB") is None
    assert hbm_peak_gbps("gpu", "NVIDIA L40S") is None  # GDDR: no HBM figure
    assert hbm_peak_gbps("cpu", "NVIDIA H200") is None  # a CPU device has no HBM figure


def test_bandwidth_figures_and_their_text():
    from benchmarks._bandwidth import bandwidth, describe, projection_bytes

    assert projection_bytes(60_000, 784, 4, 784 * 32) == (2 * 60_000 + 32) * 784 * 4
    nbytes = projection_bytes(60_000, 784, 4)
    bw = bandwidth({"nsjax": 0.1, "jnp": 0.2}, nbytes, 4800.0)  # ms
    assert math.isclose(bw["variants"]["nsjax"]["gbps"], nbytes / 1e-4 / 1e9)
    assert math.isclose(bw["variants"]["jnp"]["of_hbm_peak"], nbytes / 2e-4 / 1e9 / 4800)
    assert describe(bw) == f"{nbytes / 1e-4 / 1e9:.1f} GB/s (78% of HBM peak)"
    cpu = bandwidth({"nsjax": 80.0}, nbytes, None)
    assert cpu["variants"]["nsjax"]["of_hbm_peak"] is None
    assert describe(cpu) == "4.7 GB/s" and describe(cpu, "jnp") == "-"


def test_projection_cases_report_their_bandwidth(quick):
    out, proc, doc = quick
    assert doc["env"]["hbm_peak_gbps"] is None  # a CPU run: GB/s without an HBM ratio
    cases = [c for c in doc["cases"] if c["group"] in PROJECTION_GROUPS | {"conv-projection"}
             and c["status"] == "ok"]
    assert cases
    for c in cases:
        bw, p, fl = c["bandwidth"], c["params"], c["floor"]
        # x read, the result written, the basis (d x side, the side nsjax projects through)
        if c["group"] == "conv-projection":  # rows of d values: images or patches
            rows_n, d = fl["rows"] * fl["d"], fl["d"]
        else:
            rows_n, d = p["B"] * p["n"], p["n"]
            assert fl["side"] in (p["r"], p["nullity"])
        assert bw["bytes"] == (2 * rows_n + d * fl["side"]) * 4
        for v in ("nsjax", "jnp", "elementwise"):
            assert math.isclose(bw["variants"][v]["gbps"],
                                bw["bytes"] / c["timings"][v]["median_ms"] / 1e6)
        assert "numpy" not in bw["variants"]  # host baselines are not the device's traffic
    md = (out / "results.md").read_text()
    assert "| nsjax bandwidth |" in md and " GB/s |" in md
    assert " GB/s" in proc.stdout


def test_gpu_rows_show_the_fraction_of_hbm_peak():
    from benchmarks._bandwidth import bandwidth
    from benchmarks._report import _projection_table

    case = _case(skip=())
    case["params"] = {"B": 60_000, "n": 784, "r": 32, "nullity": 752, "dtype": "float32"}
    case["timings"]["nsjax"]["first_call_ms"] = 50.0
    case["timings"]["nsjax_nocheck"] = dict(case["timings"]["nsjax"])
    case["floor"] = {"ms": 5.0, "elementwise_ms": 5.0, "flops_ms": 1.0}
    case["bandwidth"] = bandwidth({"nsjax": 0.1}, 2 * 60_000 * 784 * 4, 4800.0)
    row = _projection_table([case])[-1]
    assert row.count("|") == 21 and "(78% of HBM peak)" in row
