"""The fused CPU projection kernel (nsjax/_cpu_kernel.py, nsjax/_kernels/project_cpu.cc).

Oracle: the same projection in float64 NumPy.  Tolerance: each output is two float32 dot
products (length n, then length c); their rounding errors are random-signed, so they grow
like sqrt(n) eps |x|, and we allow 16 sqrt(n) eps max|x| (n = 784: 5e-5; measured: < 1e-6).
A wrong index or a missed tail column gives errors of order |x|.
"""

import ctypes
import hashlib
import math
import os
import platform
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _scripts import SCRIPTS, load_script

import nsjax
from nsjax import _cpu_kernel as K
from nsjax import _nullspace

EPS = float(np.finfo(np.float32).eps)


def _cpu_has(flag: str) -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and f" {flag}" in line for line in f)
    except OSError:
        return False


X86_AVX2 = platform.machine() in ("x86_64", "AMD64") and _cpu_has("avx2") and _cpu_has("fma")
needs_kernel = pytest.mark.skipif(not K.available(), reason=K.info())


def _basis(n, c, seed=1):
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, c)))
    return jnp.asarray(q, jnp.float32)


def _x(shape, seed=0, scale=1.0):
    return jnp.asarray(np.random.default_rng(seed).uniform(-scale, scale, shape), jnp.float32)


def _ref(x, b, null_part):
    x64, b64 = np.asarray(x, np.float64), np.asarray(b, np.float64)
    perp = (x64 @ b64) @ b64.T
    return x64 - perp if null_part else perp


def _tol(x):
    return 16 * np.sqrt(x.shape[-1]) * EPS * max(float(jnp.max(jnp.abs(x))), 1e-30)


# ------------------------------------------------------------------ edge shapes (issue #16)
#
# Tolerance of _check_against_float64, a worst-case bound (not a measured one): per row,
# phase 1 sums each coefficient c_j = x . R_j in blocks of <= 64 terms and then adds the
# ceil(n / 64) block sums, so |dc_j| <= K eps ||x||_2 ||R_j||_2 with K = min(n, 64) +
# ceil(n / 64) and ||R_j|| = 1; phase 2 forms x_i - sum_j c_j R_ij (c terms, one more
# rounding for x_i), adding <= (c + 1) eps (|x_i| + ||c|| ||R_i||) <= 2 (c + 1) eps ||x||_2,
# while the propagated sum_j |dc_j| |R_ij| <= K eps ||x||_2 (||R_i|| <= 1).  So
#     |out - out64| <= (K + 2 c + 2) eps ||x||_2
# (n = 785, c = 32: 143 eps ||x|| ~ 2.7e-4 for x uniform in [-1, 1]).  A wrong index, a
# missed or extra tail lane or a store to the wrong row is an error of order |x| ~ 0.5.

# (m, n, c): B = 0; n = 1 (and rank = n); rank = n with AVX-512 tails of 1 and 15 lanes
# (n = 17, 31) and AVX2 tails of 1 and 7; rank 17 and 31 (padded to 32 columns) on rows
# whose length leaves tails of 1 (785) and 15 (47) lanes; rank = n = MAX_COLS (no tail);
# >= 1024 rows, where the kernel packs the basis into column panels (kPackMinRows), on
# AVX-512 (panels of 4 vectors, 64 columns): rank 100 (112 columns: a 4- and a 3-vector
# panel) on rows of 785 (12 whole panels of Rt, a 1-vector panel and a 1-lane masked tail),
# rank 31 (one 2-vector panel) on rows of 47 (a 2-vector panel and 15 masked lanes), and
# rank 40 (one 3-vector panel) on rows of 114 (a 4-vector, a 3-vector panel, 2 masked lanes)
EDGE_CASES = [(0, 785, 32), (5, 1, 1), (9, 17, 17), (7, 31, 31), (11, 785, 17), (11, 47, 31),
              (6, 256, 256), (25, 40, 1), (1100, 785, 100), (1031, 47, 31), (1040, 114, 40)]
# 12000 x 785 float32 = 37.7 MB >= the kernel's 32 MB streaming-store threshold, with rows
# of 785 floats (3140 bytes = 4 mod 32): only every 8th row starts 32-byte aligned, every
# 16th 64-byte aligned, so the streaming stores must stay off (their row-alignment guard)
BIG_UNALIGNED = (12000, 785, 32)


# The AMX kernel (project_amx.inc) takes bases of >= 96 padded columns and >= 4096 rows per
# basis, on CPUs with AMX-BF16.  Its sums run in another order (bfloat16 pieces, 32-term
# tile dot products), so its bits differ from the FMA code's; both are held to _amx_tol,
# 1.5 sqrt(n) eps max|x| against float64 (2 of it for |project(x) B|): on the cases below
# the FMA code measures 0.15-0.80 of sqrt(n) eps max|x| (|project(x) B|: 0.33-0.60), the
# AMX kernel 0.12-0.40 (0.47-0.69), and the kernel without its three order-2 piece products
# 2.2-12 (5-18), which the looser _tol would let through.  Cases: rows of 785 (a 1-lane
# tail; 25 k-blocks, the last padded) with 112 columns (an odd number of column tiles) and
# 4 rows in the last 32-row block; 1040 x 250 -> 256 columns (even), 31 rows in the last
# block; rows of 130 against 96 columns, 4096 rows (whole blocks); and (next test) a basis
# per vmapped slice.  By default wide bases take the FMA code (the AMX kernel only with
# NSJAX_CPU_KERNEL=amx); these tests take the AMX kernel with isa_capped("amx").
AMX = K.available() and "amx" in K.info().split(";")[0]
AMX_CASES = [(4100, 785, 100), (4127, 1040, 250), (4096, 130, 96)]


ISA_DEFAULT_CAP = K._allowed_level()  # what NSJAX_CPU_KERNEL allows (3: up to AMX)


def _amx_tol(x):
    return 1.5 * np.sqrt(x.shape[-1]) * EPS * float(jnp.max(jnp.abs(x)))


def _run_child(code: str, **env):
    """Run ``python -c code`` where it can ``import test_cpu_kernel`` (these cases), from
    the tests directory (``-c`` puts the working directory first on ``sys.path``: from the
    repository root it would import ./nsjax whatever ``PYTHONPATH`` says)."""
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=path, **env)
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=here, capture_output=True,
                          text=True, timeout=300)


def _check_against_float64(m, n, c, seed=0):
    """Both parts of the fused projection of an (m, n) batch on an (n, c) orthonormal basis
    against float64 NumPy; returns max |error| / tolerance (<= 1 passes)."""
    x = _x((m, n), seed=seed)
    b = _basis(n, c, seed=seed + 1)
    x64, b64 = np.asarray(x, np.float64), np.asarray(b, np.float64)
    norm = float(np.linalg.norm(x64, axis=1).max()) if m else 0.0
    k = min(n, 64) + -(-n // 64)
    tol = max((k + 2 * c + 2) * EPS * norm, np.finfo(np.float32).tiny)
    worst = 0.0
    for null_part in (True, False):
        out, finite = K.project_rows(x, b, null_part)
        assert out.shape == (m, n) and out.dtype == jnp.float32 and bool(finite), (m, n, c)
        if m:
            worst = max(worst, float(np.abs(np.asarray(out, np.float64)
                                            - _ref(x64, b64, null_part)).max()) / tol)
    return worst


def test_kernel_is_built_where_the_cpu_can_run_it():
    # CI and developer machines are x86_64 with AVX2: the optional extension must have been
    # built by `pip install` and be in use, or nsjax silently falls back to XLA's matmuls.
    if X86_AVX2 and os.environ.get("NSJAX_CPU_KERNEL", "1") != "0":
        assert K.available() is True, K.info()
        assert "avx" in K.info()
    else:
        assert K.available() is False
        assert "not in use" in K.info()
    assert nsjax.cpu_kernel_info() == K.info()


@needs_kernel
@pytest.mark.parametrize("null_part", [True, False])
@pytest.mark.parametrize(
    "m,n,c",
    [(1, 5, 1), (7, 50, 3), (13, 785, 17), (100, 784, 32), (37, 64, 256), (3, 16, 16),
     (3001, 784, 32), (257, 3072, 100)],
)
def test_matches_float64_reference(m, n, c, null_part):
    x, b = _x((m, n)), _basis(n, c)
    out, finite = jax.jit(lambda x, b: K.project_rows(x, b, null_part))(x, b)
    assert out.shape == x.shape and out.dtype == jnp.float32
    assert bool(finite)
    np.testing.assert_allclose(np.asarray(out), _ref(x, b, null_part), rtol=0, atol=_tol(x))


@needs_kernel
def test_large_batch_streaming_stores_and_threads():
    # 12000 x 784 float32 = 38 MB: above the kernel's streaming-store threshold, and split
    # over XLA's intra-op threads.
    x, b = _x((12000, 784), seed=3), _basis(784, 32, seed=4)
    out, finite = K.project_rows(x, b, True)
    ref = _ref(x, b, True)
    np.testing.assert_allclose(np.asarray(out), ref, rtol=0, atol=_tol(x))
    # the defining property: no component left along the basis
    assert float(jnp.max(jnp.abs(out @ b))) < 64 * EPS * np.sqrt(784)
    assert bool(finite)


@needs_kernel
@pytest.mark.parametrize("m,n,c", EDGE_CASES, ids=lambda v: str(v))
def test_edge_shapes_match_float64(m, n, c):
    # on the ISA in use (AVX-512 where the CPU has it, see the test below); the AVX2 path
    # runs the same cases in test_avx2_path_and_the_unaligned_32mb_batch_in_a_subprocess
    assert _check_against_float64(m, n, c) <= 1.0


def test_avx512_path_is_the_one_tested_where_the_cpu_has_it(record_property):
    # Which code the in-process tests exercised, in the report (junit property) and, where
    # AVX-512F is missing, as a visible skip: its AVX-512 tail masks are then untested here
    # (the skip reason is not a data skip, so conftest.py does not fail CI on it).
    record_property("cpu_kernel", K.info())
    if not K.available():
        pytest.skip(K.info())
    if not _cpu_has("avx512f"):
        assert "avx2" in K.info(), K.info()
        pytest.skip("AVX-512F absent on this CPU, AVX2 path tested instead")
    if os.environ.get("NSJAX_CPU_KERNEL", "1").strip().lower() == "avx2":
        pytest.skip("NSJAX_CPU_KERNEL=avx2: AVX-512 path switched off, AVX2 path tested")
    assert "avx512f" in K.info(), K.info()
    assert "avx512f" in nsjax.cpu_kernel_info()


def test_rank_zero_and_full_rank_spaces_project_exactly_without_the_kernel():
    # rank 0 (W = 0): project is the identity; rank n: project is 0.  Neither has a basis
    # the kernel takes (0 columns), so the dispatch must keep them on XLA, and exactly.
    x = _x((7, 33))
    w = np.random.default_rng(2).standard_normal((33, 33))
    zero, full = (nsjax.null_space(jnp.asarray(a, jnp.float32)) for a in (0 * w, w))
    assert (zero.rank, zero.dim, full.rank, full.dim) == (0, 33, 33, 0)
    for ns, want in ((zero, x), (full, 0 * x)):
        assert not _nullspace.uses_cpu_kernel(ns)
        assert not _nullspace.uses_cpu_kernel(ns, kernel=True)
        got = _nullspace._apply(ns, x, "null", True, kernel=True)
        np.testing.assert_array_equal(np.asarray(got), want)


@needs_kernel
def test_null_plus_perp_is_identity_and_batch_shapes():
    x, b = _x((2, 3, 5, 784)), _basis(784, 32)
    null, _ = K.project_rows(x, b, True)
    perp, _ = K.project_rows(x, b, False)
    assert null.shape == x.shape
    # the null part is x - (c Rt), the perp part c Rt, the same sum: they add up to x to
    # the rounding of that one subtraction (and of the test's own addition)
    np.testing.assert_allclose(np.asarray(null + perp), np.asarray(x), rtol=0,
                               atol=2 * EPS * float(jnp.max(jnp.abs(x) + jnp.abs(perp))))


@needs_kernel
def test_vmap_over_x_and_over_bases():
    x, b = _x((4, 9, 200)), _basis(200, 20)
    f = jax.vmap(lambda xi: K.project_rows(xi, b, True)[0])
    np.testing.assert_allclose(np.asarray(f(x)), _ref(x, b, True), rtol=0, atol=_tol(x))
    bs = jnp.stack([_basis(200, 20, seed=s) for s in range(4)])
    g = jax.jit(jax.vmap(lambda xi, bi: K.project_rows(xi, bi, False)))
    out, finite = g(x, bs)
    assert finite.shape == (4,) and bool(jnp.all(finite))
    for i in range(4):
        np.testing.assert_allclose(np.asarray(out[i]), _ref(x[i], bs[i], False), rtol=0,
                                   atol=_tol(x))
    # one x, four bases: the kernel broadcasts x's size-1 batch dim
    h = jax.vmap(lambda bi: K.project_rows(x[0], bi, True)[0])(bs)
    for i in range(4):
        np.testing.assert_allclose(np.asarray(h[i]), _ref(x[0], bs[i], True), rtol=0,
                                   atol=_tol(x))


@needs_kernel
@pytest.mark.parametrize("null_part", [True, False])
def test_packed_basis_path_is_bit_identical_to_the_row_major_one(null_part):
    # From 1024 rows per basis the kernel repacks R and Rt into column panels; each row's
    # sums run in the same order either way, so a batch that is packed and its first rows
    # projected alone (too few to pack) must agree exactly, for one basis and for a batch
    # of bases under vmap (each basis packed separately).
    # (The FMA code, whatever the CPU; the AMX kernel is tested below.)
    x, b = _x((1100, 785)), _basis(785, 100, seed=1)
    with K.isa_capped("avx512"):
        big = np.asarray(K.project_rows(x, b, null_part)[0])
        small = np.asarray(K.project_rows(x[:13], b, null_part)[0])
    np.testing.assert_array_equal(big[:13], small)
    xs = _x((2, 1100, 200), seed=2)
    bs = jnp.stack([_basis(200, 20, seed=s) for s in range(2)])
    f = jax.vmap(lambda xi, bi: K.project_rows(xi, bi, null_part)[0])
    with K.isa_capped("avx512"):
        big, small = np.asarray(f(xs, bs)), np.asarray(f(xs[:, :13], bs))
    np.testing.assert_array_equal(big[:, :13], small)
    for i in range(2):
        np.testing.assert_allclose(big[i], _ref(xs[i], bs[i], null_part), rtol=0, atol=_tol(xs))


@needs_kernel
def test_workers_copies_of_the_packed_basis_give_the_callers_bits():
    # In a large call every worker after the first projects its chunks with its own copy of
    # the packed basis.  Rows 0..11999 spread over the workers' chunks must equal, bit for
    # bit, the same rows in calls of 1000 (below the packing threshold: every worker reads
    # the basis as given).
    x, b = _x((12000, 785), seed=5), _basis(785, 100, seed=6)
    with K.isa_capped("avx512"):
        for null_part in (True, False):
            big = np.asarray(K.project_rows(x, b, null_part)[0])
            parts = [np.asarray(K.project_rows(x[i:i + 1000], b, null_part)[0])
                     for i in range(0, 12000, 1000)]
            np.testing.assert_array_equal(big, np.concatenate(parts))


@needs_kernel
@pytest.mark.parametrize("m,n,c", AMX_CASES, ids=lambda v: str(v))
def test_amx_shapes_match_float64_and_the_fma_code(m, n, c):
    # Where the CPU has AMX these shapes take the AMX kernel (elsewhere the FMA code, and
    # the test checks that code against the same tolerance).  By default they take the FMA
    # code, whatever the tiles' speed (the AMX kernel only with NSJAX_CPU_KERNEL=amx): the
    # same bits as the AVX-512 body's.
    x, b = _x((m, n), seed=5), _basis(n, c, seed=6)
    for null_part in (True, False):
        with K.isa_capped("amx"):
            out, finite = K.project_rows(x, b, null_part)
        with K.isa_capped("avx512"):
            fma = np.asarray(K.project_rows(x, b, null_part)[0])
        default = np.asarray(K.project_rows(x, b, null_part)[0])
        chosen = np.asarray(out) if K._amx_mode() else fma
        np.testing.assert_array_equal(default, chosen)
        assert bool(finite)
        ref = _ref(x, b, null_part)
        np.testing.assert_allclose(np.asarray(out), ref, rtol=0, atol=_amx_tol(x))
        np.testing.assert_allclose(fma, ref, rtol=0, atol=_amx_tol(x))
        if AMX:  # another summation order: the AMX kernel ran
            assert not np.array_equal(np.asarray(out), fma)
        # in place (the kernel reads each block of x before it writes it): the same bits
        inplace = jax.jit(lambda x: K.project_rows(x, b, null_part, inplace=True)[0])  # noqa: B023
        with K.isa_capped("amx"):
            np.testing.assert_array_equal(np.asarray(inplace(x)), np.asarray(out))
        if null_part:  # the defining property: nothing left along the basis
            assert float(jnp.max(jnp.abs(out @ b))) < 2 * _amx_tol(x)


@needs_kernel
def test_amx_kernel_flags_nan_and_inf_rows_and_takes_a_basis_per_slice():
    x = _x((2, 4100, 300), seed=7)
    bs = jnp.stack([_basis(300, 100, seed=s) for s in range(2)])
    f = jax.jit(jax.vmap(lambda xi, bi: K.project_rows(xi, bi, True)))
    with K.isa_capped("amx"):  # the AMX kernel where the CPU has it
        out, finite = f(x, bs)
        assert finite.tolist() == [True, True]
        for i in range(2):
            np.testing.assert_allclose(np.asarray(out[i]), _ref(x[i], bs[i], True), rtol=0,
                                       atol=_amx_tol(x))
        # a NaN in the last row of the first slice (the last, partial block), +inf in the
        # second slice's first block
        bad = x.at[0, 4099, 7].set(jnp.nan).at[1, 5, 299].set(jnp.inf)
        assert f(bad, bs)[1].tolist() == [False, False]
        assert f(bad.at[1].set(x[1]), bs)[1].tolist() == [False, True]


@needs_kernel
def test_amx_probe_reports_and_only_an_explicit_request_takes_the_tiles():
    probe = K.amx_probe()
    if not _amx_usable():
        assert probe is None and "AMX tiles" not in K.info(), (probe, K.info())
        return
    if ISA_DEFAULT_CAP < 3:  # NSJAX_CPU_KERNEL=avx2 or avx512: no word of tiles not allowed
        assert "AMX tiles" not in K.info() and not probe["uses_amx"], (probe, K.info())
        return
    # the tiles against the FMA units, in float32 multiply-adds: positive, and the same
    # figure at every call (probed once per process)
    assert probe["ratio"] > 0 and probe["min_ratio"] == 2.0, probe
    # whatever the ratio, the tiles run only where NSJAX_CPU_KERNEL=amx asks for them
    assert probe["uses_amx"] == (AMX and K._amx_mode() == 1), probe
    assert K.amx_probe() == probe
    assert f"AMX tiles at {probe['ratio']:.2f}x" in K.info()
    assert ("NSJAX_CPU_KERNEL=amx takes them" in K.info()) is not probe["uses_amx"], K.info()
    with K.isa_capped("amx"):  # never above what NSJAX_CPU_KERNEL allows
        assert K.amx_probe()["uses_amx"] is AMX
    with K.isa_capped("avx512"):
        assert K.amx_probe()["uses_amx"] is False
    assert K.amx_probe() == probe


@needs_kernel
def test_amx_environment_value_takes_the_tiles():
    # NSJAX_CPU_KERNEL=amx: in a new process, wide bases take the AMX kernel where the CPU
    # has it (elsewhere the FMA code), bit for bit what isa_capped("amx") gives here
    code = ("import hashlib, numpy as np; from nsjax import _cpu_kernel as K; "
            "from test_cpu_kernel import _x, _basis; "
            "out = K.project_rows(_x((4096, 130), seed=5), _basis(130, 96, seed=6), True)[0]; "
            "print(K.amx_probe()); print(hashlib.sha256(np.asarray(out).tobytes()).hexdigest())")
    child = _run_child(code, NSJAX_CPU_KERNEL="amx")
    assert child.returncode == 0, child.stderr[-2000:]
    probe, digest = child.stdout.strip().splitlines()
    assert (probe == "None") if not _amx_usable() else ("'uses_amx': True" in probe), probe
    if _amx_usable() and not AMX:  # NSJAX_CPU_KERNEL keeps this process off the tiles
        return
    with K.isa_capped("amx"):
        out = K.project_rows(_x((4096, 130), seed=5), _basis(130, 96, seed=6), True)[0]
    assert digest == hashlib.sha256(np.asarray(out).tobytes()).hexdigest()


@needs_kernel
def test_isa_capped_restores_the_level_and_rejects_unknown_names():
    level = K._LIB[0].nsjax_project_isa()
    with K.isa_capped("avx2") as inside:
        assert inside == 1 == K._LIB[0].nsjax_project_isa()
    assert K._LIB[0].nsjax_project_isa() == level
    with pytest.raises(ValueError, match="avx512"):
        with K.isa_capped("sse"):
            pass


def test_amx_kernel_is_the_one_tested_where_the_cpu_has_it(record_property):
    # As for AVX-512 above: where the CPU lacks AMX-BF16 (or Linux refuses the tile state)
    # the AMX tests ran the FMA code, and this says so as a visible skip.
    record_property("cpu_kernel", K.info())
    if not K.available():
        pytest.skip(K.info())
    if not (_cpu_has("amx_bf16") and _cpu_has("avx512_bf16")):
        assert "amx" not in K.info(), K.info()
        pytest.skip("AMX-BF16 absent on this CPU: the AMX tests ran the FMA code")
    if ISA_DEFAULT_CAP < 3:
        pytest.skip("NSJAX_CPU_KERNEL caps the kernel below AMX")
    if not _amx_permitted():
        assert "amx" not in K.info(), K.info()
        pytest.skip("Linux refuses this process the AMX tile state: the FMA code ran")
    assert "amx-bf16" in K.info(), K.info()


def _amx_usable() -> bool:
    """Whether this CPU and Linux give the AMX kernel (whatever NSJAX_CPU_KERNEL says)."""
    return _cpu_has("amx_bf16") and _cpu_has("avx512_bf16") and _amx_permitted()


def _amx_permitted() -> bool:
    """Whether Linux grants this process the AMX tile state (what the kernel asks for)."""
    sys_arch_prctl, req_xcomp_perm, xtiledata = 158, 0x1023, 18  # x86_64 Linux
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.syscall(sys_arch_prctl, req_xcomp_perm, xtiledata) == 0


@needs_kernel
def test_nested_vmap_with_a_basis_per_outer_slice():
    # outer vmap over bases (2), inner over x slices (3) with the outer slice's basis
    x = _x((2, 3, 7, 64))
    bs = jnp.stack([_basis(64, 5, seed=s) for s in range(2)])
    inner = lambda xo, bo: jax.vmap(lambda xi: K.project_rows(xi, bo, True))(xo)  # noqa: E731
    out, finite = jax.vmap(inner)(x, bs)
    assert out.shape == x.shape and finite.shape == (2, 3)
    for o in range(2):
        np.testing.assert_allclose(np.asarray(out[o]), _ref(x[o], bs[o], True), rtol=0,
                                   atol=_tol(x))
    x_bad = x.at[1, 2, 6, 63].set(jnp.nan)
    assert jax.vmap(inner)(x_bad, bs)[1].tolist() == [[True, True, True], [True, True, False]]


@needs_kernel
def test_result_in_the_callers_shape_is_the_same_bytes_without_a_copy():
    # project_rows(x, b, shape=...) has the kernel write its result in the final shape:
    # the same values as a reshape, under vmap (batch dims before that shape), with
    # derivatives; and the compiled function has no copy of the result.  XLA copies a
    # reshaped custom-call result that leaves the computation when the shape has a size-1
    # dim, e.g. grayscale images (B, H, W, 1): a full extra pass into a fresh buffer.
    x, b = _x((12, 5, 6, 1)), _basis(30, 7)
    flat = x.reshape(12, 30)
    out, finite = K.project_rows(flat, b, False, shape=x.shape)
    assert out.shape == x.shape and bool(finite)
    np.testing.assert_array_equal(np.asarray(out),
                                  np.asarray(K.project_rows(flat, b, False)[0]).reshape(x.shape))
    xs = _x((3, 12, 5, 6, 1), seed=4)
    bs = jnp.stack([_basis(30, 7, seed=s) for s in range(3)])
    v = jax.vmap(lambda xi, bi: K.project_rows(xi.reshape(12, 30), bi, True, shape=xi.shape))
    vo, vf = v(xs, bs)
    assert vo.shape == xs.shape and vf.shape == (3,)
    for i in range(3):
        np.testing.assert_allclose(np.asarray(vo[i]).reshape(12, 30),
                                   _ref(xs[i].reshape(12, 30), bs[i], True), rtol=0,
                                   atol=_tol(xs))
    t = _x((12, 30), seed=5)
    _, jk = jax.jvp(lambda z: K.project_rows(z, b, True, shape=x.shape)[0], (flat,), (t,))
    assert jk.shape == x.shape
    np.testing.assert_allclose(np.asarray(jk).reshape(12, 30), _ref(t, b, True), rtol=0,
                               atol=_tol(t))
    with pytest.raises(ValueError, match="has 60 values"):
        K.project_rows(flat, b, True, shape=(12, 5))

    def copies(f, *args):
        hlo = jax.jit(f).lower(*args).compile().as_text()
        entry = hlo[hlo.index("ENTRY"):]
        # an instruction that writes a new (12, 5, 6, 1) float32 array: a copy or a fusion
        return [ln for ln in entry.splitlines()
                if " = f32[12,5,6,1]" in ln and (" copy(" in ln or " fusion(" in ln)]

    def reshaped_after(z, c):  # what nsjax did before
        out, fin = K.project_rows(z.reshape(12, 30), c, True)
        return out.reshape(z.shape), fin

    assert copies(reshaped_after, x, b)  # the check sees XLA's copy ...
    assert not copies(lambda z, c: K.project_rows(z.reshape(12, 30), c, True, shape=z.shape),
                      x, b)  # ... and there is none when the kernel writes the shape
    for rank in (7, 25):  # the row basis, and the null basis (dim 5 < rank 25)
        a = np.random.default_rng(rank).standard_normal((rank, 30))
        ns = nsjax.null_space(jnp.asarray(a, jnp.float32), input_shape=(5, 6, 1))
        assert _nullspace.uses_cpu_kernel(ns) and (ns.null_basis is not None) == (rank == 25)
        for part in ("null", "perp"):
            assert not copies(lambda z: _nullspace._project_impl(ns, z, part, True, (12,),
                                                                 False, False), x)


@needs_kernel
def test_derivatives_match_the_xla_reference():
    x, b = _x((6, 100)), _basis(100, 10)
    w = _x((6, 100), seed=9)

    def loss(fn):
        return lambda x, b: jnp.sum(w * fn(x, b, True)[0] ** 2)

    g_k = jax.grad(loss(K.project_rows), argnums=(0, 1))(x, b)
    g_x = jax.grad(loss(K.project_rows_xla), argnums=(0, 1))(x, b)
    for a, r in zip(g_k, g_x):
        np.testing.assert_allclose(np.asarray(a), np.asarray(r), rtol=1e-5, atol=1e-5)
    t = _x((6, 100), seed=5)
    _, jk = jax.jvp(lambda x: K.project_rows(x, b, True)[0], (x,), (t,))
    np.testing.assert_allclose(np.asarray(jk), _ref(t, b, True), rtol=0, atol=_tol(t))


@needs_kernel
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_rows_are_flagged(bad):
    b = _basis(784, 32)
    x = _x((50, 784))
    assert bool(K.project_rows(x, b, True)[1])
    assert not bool(K.project_rows(x.at[31, 700].set(bad), b, True)[1])
    # finite but so large that x R overflows: flagged too, as XLA's coefficient check does
    huge = jnp.full((2, 784), 3e38, jnp.float32)
    assert not bool(K.project_rows(huge, b, True)[1])
    # per slice under vmap
    xs = jnp.stack([x, x.at[0, 0].set(bad)])
    _, fin = jax.vmap(lambda xi, bi: K.project_rows(xi, bi, True))(xs, jnp.stack([b, b]))
    assert fin.tolist() == [True, False]


def test_unsupported_bases_are_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="float32"):
        K.project_rows(jnp.zeros((2, 8), jnp.float32), jnp.zeros((8, 300), jnp.float32), True)
    with pytest.raises(ValueError, match="float32"):
        K.project_rows(jnp.zeros((2, 8), jnp.float32), jnp.zeros((8, 0), jnp.float32), True)
    if K.available():
        with pytest.raises(ValueError, match=r"\(\.\.\., 8\)"):
            K.project_rows(jnp.zeros((2, 9), jnp.float32), jnp.eye(8, 2, dtype=jnp.float32), True)


@needs_kernel
def test_other_platforms_lower_xla_matmuls_instead():
    x, b = _x((4, 64)), _basis(64, 8)
    f = jax.jit(lambda x, b: K.project_rows(x, b, True)[0])
    ours = [jax.export.DisabledSafetyCheck.custom_call(K.TARGET)]  # not a stable target
    cpu = jax.export.export(f, platforms=["cpu"], disabled_checks=ours)(x, b).mlir_module()
    cuda = jax.export.export(f, platforms=["cuda"])(x, b).mlir_module()
    assert K.TARGET in cpu
    assert K.TARGET not in cuda and "dot_general" in cuda


# ------------------------------------------------------------- through NullSpace.project


@needs_kernel
@pytest.mark.parametrize("rank", [32, 700])  # 700: the null basis (84 columns) is used
def test_null_space_projection_uses_the_kernel_and_agrees(rank):
    rng = np.random.default_rng(0)
    ns = nsjax.null_space(jnp.asarray(rng.standard_normal((rank, 784)), jnp.float32),
                          input_shape=(28, 28, 1))
    x = _x((333, 28, 28, 1))
    for part in ("null", "perp"):
        fused = _nullspace._apply(ns, x, part, True)
        xla = _nullspace._apply(ns, x, part, True, kernel=False)
        np.testing.assert_allclose(np.asarray(fused), np.asarray(xla), rtol=0, atol=_tol(x))
    f = jax.jit(lambda x: ns.project(x))
    assert K.TARGET in f.lower(x).as_text() and _nullspace.uses_cpu_kernel(ns)
    assert K.TARGET not in jax.jit(lambda x: ns.project(x, accurate=True)).lower(x).as_text()
    with pytest.raises(nsjax.NonFiniteError):
        ns.project(x.at[5, 3, 3, 0].set(jnp.nan))
    ns.project(x.at[5, 3, 3, 0].set(jnp.nan), check_finite=False)  # no error asked for


@needs_kernel
def test_wide_bases_beyond_the_caches_stay_on_xla():
    # 3072 x 256 float32 (3 MB): XLA's blocked GEMM ties or wins there (measured)
    w = jax.random.normal(jax.random.key(0), (256, 3072))
    ns = nsjax.null_space(w, float64_svd=False)
    assert not K.worthwhile(ns.row_basis)
    assert K.worthwhile(_basis(784, 32)) and K.worthwhile(_basis(12288, 32))
    assert K.worthwhile(_basis(784, 256)) and not K.worthwhile(_basis(3072, 128))
    x = _x((10, 3072))
    assert K.TARGET not in jax.jit(ns.project).lower(x).as_text()
    assert not _nullspace.uses_cpu_kernel(ns) and _nullspace.uses_cpu_kernel(ns, kernel=True)
    forced = _nullspace._apply(ns, x, "null", True, kernel=True)  # still correct
    np.testing.assert_allclose(np.asarray(forced), np.asarray(ns.project(x)), rtol=0,
                               atol=_tol(x))


@needs_kernel
def test_patch_null_space_projection_agrees():
    ns = nsjax.conv_null_space(
        jax.random.normal(jax.random.key(0), (4, 4, 3, 20)), (32, 32, 3), strides=(4, 4),
        padding="VALID")
    assert ns.patch == (4, 4)
    x = _x((17, 32, 32, 3))
    for method, part in ((ns.project, "null"), (ns.complement, "perp")):
        fused = method(x)
        xla = _nullspace._apply(ns, x, part, True, kernel=False)
        np.testing.assert_allclose(np.asarray(fused), np.asarray(xla), rtol=0, atol=_tol(x))
        if K.supports_patches():  # dispatched to the patch-layout entry: the same bits
            direct, _ = K.project_patches(x, ns.row_basis, ns.patch, part == "null")
            np.testing.assert_array_equal(np.asarray(fused), np.asarray(direct))
        one = method(x[3])  # one image, no batch axis
        np.testing.assert_array_equal(np.asarray(one), np.asarray(fused[3]))
    with pytest.raises(nsjax.NonFiniteError):
        ns.project(x.at[16, 31, 31, 2].set(np.inf))


def test_environment_switch_turns_the_kernel_off():
    code = ("import jax.numpy as jnp, nsjax; from nsjax import _cpu_kernel as K; "
            "ns = nsjax.null_space(jnp.eye(3, 10)); y = ns.project(jnp.ones((2, 10))); "
            "print(K.available(), float(y.sum()), K.info())")
    env = dict(os.environ, NSJAX_CPU_KERNEL="0", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300, check=True).stdout
    assert out.startswith("False 14.0 ") and "NSJAX_CPU_KERNEL" in out


@needs_kernel
def test_avx2_path_and_the_unaligned_32mb_batch_in_a_subprocess():
    # In its own process: (1) the AVX2 code (8 lanes, 6-row tiles, masked tails) on this
    # machine, on the cases below, EDGE_CASES and BIG_UNALIGNED; (2) BIG_UNALIGNED again on
    # the best ISA (AVX-512 where present, the cap lifted): a >= 32 MB output with unaligned
    # rows, where streaming stores without their row-alignment guard fault (SIGSEGV).  A
    # crash is then this test's failure (rc -11), not a dead pytest.
    code = """
import ctypes, importlib.util
import jax, jax.numpy as jnp, numpy as np
from nsjax import _cpu_kernel as K
from test_cpu_kernel import EDGE_CASES, BIG_UNALIGNED, _check_against_float64
assert 'avx2' in K.info(), K.info()
for case in EDGE_CASES + [BIG_UNALIGNED]:
    print('avx2', *case, 'worst/tol', _check_against_float64(*case), flush=True)
worst = 0.0
for m, n, c in [(1, 5, 1), (13, 785, 17), (3001, 784, 32), (37, 64, 256)]:
    x = jnp.asarray(np.random.default_rng(m).uniform(-1, 1, (m, n)), jnp.float32)
    q = jnp.asarray(np.linalg.qr(np.random.default_rng(n).standard_normal((n, c)))[0], jnp.float32)
    for null in (True, False):
        out, fin = K.project_rows(x, q, null)
        x64, q64 = np.asarray(x, np.float64), np.asarray(q, np.float64)
        ref = (x64 @ q64) @ q64.T
        ref = x64 - ref if null else ref
        tol = 16 * np.sqrt(n) * np.finfo(np.float32).eps
        worst = max(worst, float(np.abs(np.asarray(out) - ref).max()) / tol)
        assert bool(fin)
    assert not bool(K.project_rows(x.at[0, n - 1].set(jnp.inf), q, True)[1])
print('avx2 sweep worst/tol', worst, flush=True)
lib = ctypes.CDLL(importlib.util.find_spec('nsjax._project_cpu').origin)
isa = lib.nsjax_project_cap_isa(2)
print('isa', isa, *BIG_UNALIGNED, 'worst/tol', _check_against_float64(*BIG_UNALIGNED, seed=3))
"""
    out = _run_child(code, NSJAX_CPU_KERNEL="avx2")
    assert out.returncode == 0, (out.returncode, out.stdout[-1000:], out.stderr[-2000:])
    lines = out.stdout.strip().splitlines()
    assert len(lines) == len(EDGE_CASES) + 3, out.stdout
    isa = int(lines[-1].split()[1])
    assert isa == (2 if _cpu_has("avx512f") else 1), lines[-1]
    for line in lines:
        assert float(line.split()[-1]) <= 1.0, line


@needs_kernel
def test_row_space_residual_within_a_few_ulps_on_both_paths():
    # what the invariant rests on: W1 project(x) ~ 0.  The kernel sums the coefficients in
    # blocks of 64 (measured 2.1e-7 relative against XLA's 4.4e-7 for this net and seed).
    model = nsjax.FCNN((784, 32, 16, 10))
    params = nsjax.init_params(model, jax.random.key(0))
    ns = nsjax.null_space_of(model, params, (28, 28, 1))
    w1 = np.asarray(params["params"]["Dense_0"]["kernel"], np.float64)  # (784, 32)
    x = jax.random.uniform(jax.random.key(1), (4000, 28, 28, 1), minval=-1, maxval=1)
    scale = np.abs(np.asarray(x, np.float64).reshape(-1, 784) @ w1).max()

    def resid(y):
        return np.abs(np.asarray(y, np.float64).reshape(-1, 784) @ w1).max() / scale

    # both paths are float32 FMA sums of length 784 against a float64-exact residual of 0:
    # each stays within a few eps32 of |W1 x| (an absolute bound, not an ordering of the
    # two, which an XLA upgrade could flip)
    fused = resid(ns.project(x))
    xla = resid(ns.project(x, kernel=False))
    assert fused < 8 * EPS and xla < 8 * EPS, (fused, xla)


# ------------------------------------------------------------------ issue #14: buffers
#
# The kernel advises huge pages on large fresh outputs (>= 4 MiB) and, with inplace=True,
# writes into x's own buffer (input_output_aliases): both must give the float64 answer,
# in a loop with unrelated allocations between calls (buffers recycled by malloc, pages
# already touched, VMAs split by earlier advice).  37.6 MB batches also take the
# streaming-store path (>= 32 MiB), so in-place streaming stores are covered.


def _fresh(shape, seed):
    return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32))


@needs_kernel
@pytest.mark.parametrize("null_part", [True, False])
def test_inplace_donated_call_reuses_the_buffer_and_matches_float64(null_part):
    b = _basis(784, 32)
    f = jax.jit(lambda x: K.project_rows(x, b, null_part, inplace=True), donate_argnums=0)
    junk = []
    for i, m in enumerate((12_000, 3_001, 12_000, 7)):  # 37.6 MB (streaming), odd, tiny
        x = _fresh((m, 784), i)
        x_np = np.array(x)  # a copy: x's buffer is about to be overwritten
        ptr = x.unsafe_buffer_pointer()
        out, finite = f(x)
        assert x.is_deleted()
        assert out.unsafe_buffer_pointer() == ptr  # the result lives in x's buffer
        assert bool(finite)
        err = np.max(np.abs(np.asarray(out, np.float64) - _ref(x_np, b, null_part)))
        assert err <= _tol(x_np), (m, err)
        junk.append(np.ones(3_000_000, np.float32))  # unrelated allocations between calls
        junk.append(jnp.ones((2_000, 784)) + i)
        del out


@needs_kernel
def test_inplace_without_donation_keeps_x_and_vmaps():
    b = _basis(100, 20)
    x = _x((5, 37, 100), seed=3)
    x_np = np.array(x)
    out, _ = jax.jit(lambda x: K.project_rows(x, b, True, inplace=True))(x)
    assert not x.is_deleted()
    np.testing.assert_array_equal(np.asarray(x), x_np)  # XLA copied x before the kernel
    assert np.max(np.abs(np.asarray(out) - _ref(x_np, b, True))) <= _tol(x_np)
    # vmap with one basis per slice (broadcast_all: x and the output have equal shapes)
    bs = jnp.stack([_basis(100, 20, seed=s) for s in range(5)])
    outs = jax.vmap(lambda xi, bi: K.project_rows(xi, bi, False, inplace=True)[0])(x, bs)
    for i in range(5):
        ref = _ref(x_np[i], bs[i], False)
        assert np.max(np.abs(np.asarray(outs[i]) - ref)) <= _tol(x_np)
    # an unbatched x under vmap over bases: broadcast first, never written in place
    outs = jax.vmap(lambda bi: K.project_rows(x[0], bi, True, inplace=True)[0])(bs)
    np.testing.assert_array_equal(np.asarray(x), x_np)
    assert np.max(np.abs(np.asarray(outs[4]) - _ref(x_np[0], bs[4], True))) <= _tol(x_np)


@needs_kernel
def test_huge_page_advice_on_or_off_gives_the_same_bits_between_allocations(record_property):
    import resource

    b = _basis(784, 32)
    x = _fresh((12_000, 784), 7)  # 37.6 MB output: advised, streaming stores
    ref = _ref(np.asarray(x), b, True)
    f = jax.jit(lambda x: K.project_rows(x, b, True)[0])
    first = None
    faults = {}
    previous = []
    try:
        for on in (True, False, True):
            previous.append(K.set_hugepages(on))
            junk = [np.ones(1_000_000 * (k + 1), np.float32) for k in range(3)]
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            out = np.asarray(f(x))
            faults.setdefault(on, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
            del junk
            assert np.max(np.abs(out - ref)) <= _tol(x)
            if first is None:
                first = out
            np.testing.assert_array_equal(out, first)  # the advice changes no arithmetic
    finally:
        K.set_hugepages(True)
    assert previous == [True, True, False]  # each call returns the setting it replaced
    record_property("minor_faults_per_call", faults)  # informative only: no assertion


needs_patches = pytest.mark.skipif(not (K.available() and K.supports_patches()),
                                   reason="no patch-layout kernel in this build")


def _advice_runs(call, limits):
    """``call()``'s result and the kernel's advice stats under each fault allowance (ms),
    and (key ``None``) its result without advice."""
    out = {}
    previous = K.set_fault_allowance_ms(limits[0])
    try:
        K.set_hugepages(False)
        out[None] = (np.asarray(call()), None)
        K.set_hugepages(True)
        for ms in limits:
            K.set_fault_allowance_ms(ms)
            y = np.asarray(call())
            out[ms] = (y, K.advice_stats())
    finally:
        K.set_hugepages(True)
        K.set_fault_allowance_ms(previous)
    return out


@needs_kernel
def test_huge_page_probe_stops_the_advice_when_faults_cost_too_much_and_changes_no_bits():
    # 24000 x 784 float32: a 75 MB output, 34-35 whole 2 MiB regions, so more regions than
    # worker threads.  Allowance inf: every region is probed, the advice never ends.
    # Allowance 0: the first probe of each worker is over budget, so the advice ends there;
    # without the stop every region would still be probed.
    b = _basis(784, 32)
    x = _fresh((24_000, 784), 8)
    f = jax.jit(lambda x: K.project_rows(x, b, True)[0])
    runs = _advice_runs(lambda: f(x), [math.inf, 0.0, 1.0])
    every, stopped, default = (runs[ms][1] for ms in (math.inf, 0.0, 1.0))
    assert every["regions"] >= 34
    assert every == {"regions": every["regions"], "probed": every["regions"], "stopped": 0}
    assert stopped["regions"] >= 34  # 34 or 35, by where the allocator put the output
    assert stopped["stopped"] == 1
    assert 1 <= stopped["probed"] <= min(os.cpu_count() or 1, 8) < stopped["regions"]
    assert default["probed"] <= default["regions"]
    if default["probed"] < default["regions"]:  # only a stop leaves regions unprobed
        assert default["stopped"] == 1
    ref = _ref(np.asarray(x), b, True)
    for y, _ in runs.values():  # a probe writes a zero byte only where the kernel writes next
        assert np.max(np.abs(y - ref)) <= _tol(x)
        np.testing.assert_array_equal(y, runs[None][0])
    with pytest.raises(ValueError, match="ms >= 0"):
        K.set_fault_allowance_ms(-1.0)
    with pytest.raises(ValueError, match="ms >= 0"):
        K.set_fault_allowance_ms(math.nan)


def _vm_flags(addr):
    """The ``VmFlags`` of the mapping that holds ``addr`` (``/proc/self/smaps``)."""
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) ", line)
            if m:
                inside = int(m.group(1), 16) <= addr < int(m.group(2), 16)
            elif inside and line.startswith("VmFlags:"):
                return set(line.split()[1:])
    raise AssertionError(f"no mapping holds {addr:#x}")


@needs_kernel
@pytest.mark.skipif(not (os.path.exists("/proc/self/smaps")
                         and os.path.isdir("/sys/kernel/mm/transparent_hugepage")),
                    reason="needs Linux with transparent huge pages")
def test_a_slow_probe_marks_the_rest_of_the_output_for_small_pages():
    # The output's last whole 2 MiB region, held alive: advised for huge pages ("hg") while
    # the probes stay within budget, marked MADV_NOHUGEPAGE ("nh") once they do not (so
    # THP mode "always" gives it 4 KiB pages too).
    b = _basis(784, 32)
    x = _fresh((24_000, 784), 13)
    f = jax.jit(lambda x: K.project_rows(x, b, True)[0])
    flags = {}
    previous = K.set_fault_allowance_ms(math.inf)
    try:
        for ms in (math.inf, 0.0):
            K.set_fault_allowance_ms(ms)
            y = f(x).block_until_ready()
            end = (y.unsafe_buffer_pointer() + y.nbytes) & ~((2 << 20) - 1)
            flags[ms] = _vm_flags(end - (1 << 20))
            del y
    finally:
        K.set_fault_allowance_ms(previous)
    assert "hg" in flags[math.inf] and "nh" not in flags[math.inf]
    assert "nh" in flags[0.0] and "hg" not in flags[0.0]


@needs_patches
def test_huge_page_probe_in_the_patch_layout_entry():
    # 1024 images of 64x64x3 in 16x16 patches: a 50 MB output, 24 whole 2 MiB regions.  A
    # worker probes the regions that start in images it projects whole.
    q = np.linalg.qr(np.random.default_rng(3).standard_normal((768, 40)))[0]
    basis = jnp.asarray(q, jnp.float32)
    x = _fresh((1024, 64, 64, 3), 12)
    f = jax.jit(lambda x: K.project_patches(x, basis, (16, 16), True)[0])
    runs = _advice_runs(lambda: f(x), [math.inf, 0.0])
    every, stopped = runs[math.inf][1], runs[0.0][1]
    assert every["regions"] >= 23 and every["stopped"] == 0
    assert every["regions"] // 2 <= every["probed"] <= every["regions"]
    assert stopped["stopped"] == 1
    assert 1 <= stopped["probed"] <= min(os.cpu_count() or 1, 8)
    for y, _ in runs.values():
        np.testing.assert_array_equal(y, runs[None][0])
    rows = np.asarray(x, np.float64).reshape(1024, 4, 16, 4, 16, 3)
    rows = rows.transpose(0, 1, 3, 2, 4, 5).reshape(-1, 768)
    ref = _ref(rows, q, True).reshape(1024, 4, 4, 16, 16, 3).transpose(0, 1, 3, 2, 4, 5)
    assert np.max(np.abs(runs[0.0][0] - ref.reshape(x.shape))) <= _tol(rows)


@needs_kernel
def test_huge_page_probe_skips_small_and_in_place_outputs():
    b = _basis(784, 32)
    big = jax.jit(lambda x: K.project_rows(x, b, True)[0])
    big(_fresh((3000, 784), 9)).block_until_ready()  # 9.4 MB: advised
    before = K.advice_stats()
    assert before["regions"] >= 3 and before["probed"] >= 1
    small = _fresh((1000, 784), 10)  # 3.1 MB < 4 MiB: left to the allocator
    np.asarray(jax.jit(lambda x: K.project_rows(x, b, True)[0])(small))
    x = _fresh((3000, 784), 11)  # in place: the donated pages are touched already
    jax.jit(lambda x: K.project_rows(x, b, True, inplace=True)[0], donate_argnums=0)(x)
    assert K.advice_stats() == before


@needs_patches
@pytest.mark.parametrize("shape,patch,cout", [((3, 8, 12, 2), (4, 3), 5),  # odd tail tiles
                                              ((2, 32, 32, 3), (16, 16), 40),  # ViT-like
                                              # 256 patches: chunks on every worker
                                              ((64, 32, 32, 3), (16, 16), 40)])
def test_patch_layout_kernel_matches_float64(shape, patch, cout):
    b, h, w, c = shape
    ph, pw = patch
    d = ph * pw * c
    q = np.linalg.qr(np.random.default_rng(2).standard_normal((d, min(cout, d))))[0]
    basis = jnp.asarray(q, jnp.float32)
    x = _x(shape, seed=4)
    rows = np.asarray(x, np.float64).reshape(b, h // ph, ph, w // pw, pw, c)
    rows = rows.transpose(0, 1, 3, 2, 4, 5).reshape(-1, d)
    for null_part in (True, False):
        out, finite = jax.jit(lambda x: K.project_patches(x, basis, patch, null_part))(x)
        ref = _ref(rows, q, null_part).reshape(b, h // ph, w // pw, ph, pw, c)
        ref = ref.transpose(0, 1, 3, 2, 4, 5).reshape(shape)
        assert bool(finite) and np.max(np.abs(np.asarray(out) - ref)) <= _tol(rows)
        # bit-identical to the same kernel on patchified rows
        flat, _ = K.project_rows(jnp.asarray(rows, jnp.float32), basis, null_part)
        np.testing.assert_array_equal(
            np.asarray(out),
            np.asarray(flat).reshape(b, h // ph, w // pw, ph, pw, c)
            .transpose(0, 1, 3, 2, 4, 5).reshape(shape))
    bad = x.at[0, h - 1, w - 1, c - 1].set(np.nan)
    assert not bool(K.project_patches(bad, basis, patch, True)[1])
    with pytest.raises(ValueError, match="expected float32 images"):  # (B, H, W): no C axis
        K.project_patches(x[..., 0], basis, patch, True)
    if d > 100:
        return
    g = jax.grad(lambda x: K.project_patches(x, basis, patch, True)[0].sum())(x)
    g_ref = jax.grad(lambda x: K.project_patches_xla(x, basis, patch, True).sum())(x)
    np.testing.assert_allclose(np.asarray(g), np.asarray(g_ref), atol=1e-5)


def test_donated_input_gives_its_buffer_to_the_result():
    # donate=True: the same values as without (same kernel, same arithmetic: bit-equal),
    # and x's buffer is consumed (deleted) by an eager call
    ns = nsjax.null_space(jax.random.normal(jax.random.key(0), (6, 40)))
    x = _x((300, 40), seed=5)
    for method in (ns.project, ns.complement):
        ref = np.asarray(method(x))
        xd = x + 0.0
        out = method(xd, donate=True)
        assert xd.is_deleted()
        np.testing.assert_array_equal(np.asarray(out), ref)
        # inside the caller's jit, with and without donating x to it: same values
        for donate_argnums in ((0,), ()):
            f = jax.jit(lambda v, m=method: m(v, donate=True), donate_argnums=donate_argnums)
            np.testing.assert_array_equal(np.asarray(f(x + 0.0)), ref)
    if K.available():  # the row kernel declares the alias: its output IS x's buffer
        xd = x + 0.0
        ptr = xd.unsafe_buffer_pointer()
        assert ns.project(xd, donate=True).unsafe_buffer_pointer() == ptr
        # also for grayscale images (B, H, W, 1), whose reshaped result XLA would copy
        nsi = nsjax.null_space(jax.random.normal(jax.random.key(0), (6, 40)),
                               input_shape=(5, 8, 1))
        ref = np.asarray(nsi.project(x)).reshape(300, 5, 8, 1)
        xi = x.reshape(300, 5, 8, 1) + 0.0
        ptr = xi.unsafe_buffer_pointer()
        out = nsi.project(xi, donate=True)
        assert xi.is_deleted() and out.shape == xi.shape
        assert out.unsafe_buffer_pointer() == ptr
        np.testing.assert_array_equal(np.asarray(out), ref)


@needs_kernel
def test_inplace_declares_the_output_alias_and_the_build_has_the_patch_entry():
    # the alias is what lets XLA write the result into a donated x without a copy: it must
    # be in the lowered custom call with inplace=True (and through ns.project's donate=True),
    # and absent otherwise.  Both entries are built from one source: the patch entry is
    # there whenever the kernel is.
    b = _basis(40, 6)
    x = _x((30, 40))
    alias = "output_operand_alias"
    for inplace in (True, False):
        text = jax.jit(lambda x: K.project_rows(x, b, True, inplace=inplace)[0]).lower(x)
        assert (alias in text.as_text()) == inplace
    ns = nsjax.null_space(jnp.asarray(b).T)
    for donate in (True, False):
        text = jax.jit(lambda x: ns.project(x, donate=donate)).lower(x).as_text()
        assert (alias in text) == donate
    assert K.supports_patches()


def test_xla_reference_matmuls_run_at_highest_precision():
    """The XLA route must not use the default matmul precision: on GPUs that is TF32
    (10-bit mantissa), which leaves ``A project(x)`` at ~1e-3 relative.  CPUs compute float32
    either way, so the only check that holds everywhere is the precision in the jaxpr."""
    x, b = jnp.ones((4, 6), jnp.float32), jnp.ones((6, 2), jnp.float32)
    jaxpr = jax.make_jaxpr(lambda x, b: K.project_rows_xla(x, b, True))(x, b)
    dots = [e for e in jaxpr.eqns if e.primitive.name == "dot_general"]
    assert len(dots) == 2
    for e in dots:
        assert set(e.params["precision"]) == {jax.lax.Precision.HIGHEST}, e.params["precision"]


@needs_kernel
def test_bench_idle_faults_script_runs_and_restores_the_defaults(capsys):
    mod = load_script(SCRIPTS / "bench_idle_faults.py")
    assert mod.main(["--batch", "3000", "--gaps", "0", "--calls", "1"]) == 0
    out = capsys.readouterr().out
    for name in ("probed (default)", "every region", "none (4 KiB pages)", "NumPy x.copy()"):
        assert name in out
    assert "regions probed" in out  # a 9.4 MB output is advised and probed
    assert K.set_fault_allowance_ms(1.0) == 1.0 and K.set_hugepages(True) is True


@needs_kernel
def test_bench_cpu_isa_script_runs_every_path_and_restores_the_level(capsys):
    mod = load_script(SCRIPTS / "bench_cpu_isa.py")
    level = K._LIB[0].nsjax_project_isa()
    assert mod.main(["--repeats", "1", "--rounds", "1", "--shapes", "4100x130x96"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"4100x130x96: .*avx2 [\d.]+ ms", out), out
    assert ("amx " in out) == AMX
    assert ("avx512 " in out) == (_cpu_has("avx512f") and ISA_DEFAULT_CAP >= 2)
    assert K._LIB[0].nsjax_project_isa() == level
    with pytest.raises(SystemExit):  # a malformed shape is an argparse error
        mod.main(["--shapes", "60000x784"])


@pytest.mark.skipif(not X86_AVX2, reason="the harness times the AVX2 and AVX-512 bodies")
def test_kernel_peak_harness_checks_every_body_the_cpu_has(capsys):
    mod = load_script(SCRIPTS / "bench_kernel_peak.py")
    # 7 rows: a 6-row tile and a 1-row one; n = 130 = 8 x 16 + 2: a masked tail in both
    # bodies.  --threads 2: each body also on two threads (30 rows: chunks of 24 and 6, or
    # one AMX block), with one basis shared and with a copy each.
    assert mod.main(["--shapes", "30x784x32", "7x130x16", "--repeats", "2",
                     "--threads", "2"]) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^\| (avx2|avx512|amx) \| (\S+) \| (\d) \| (-|shared|copy) \| "
                      r"[\d.]+ \| [\d.]+ \| [\d.]+ \| (\d+)% \| ([\d.]+) \|$", out, re.M)
    isas = ["avx2"] + (["avx512"] if _cpu_has("avx512f") else [])
    isas += ["amx"] if _amx_usable() else []
    assert [r[:4] for r in rows] == [
        (isa, shape, t, b) for shape in ("30x784x32", "7x130x16") for isa in isas
        for t, b in (("1", "-"), ("2", "shared"), ("2", "copy"))], out
    for _, _, threads, _, pct, err in rows:  # two threads on a few rows: mostly the spawn
        assert (int(pct) > 0 or threads == "2") and 0 < float(err) <= 1.5, out
    with pytest.raises(SystemExit):  # COLS must suit both bodies' vector widths
        mod.main(["--shapes", "30x784x24"])
