"""The benchmark cases.  Each one checks correctness first, then times all its variants.

A case returns a dict (see ``README.md`` for the schema): its parameters, a ``status``
(``"ok"``, ``"failed: ..."`` when the correctness check fails -- nothing is timed then -- or
``"skipped: ..."``), the correctness record, one :class:`~benchmarks._timing.Stats` per
variant, the roofline floor and the ratios.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

import nsjax
from benchmarks import _baselines as bl
from benchmarks._bandwidth import bandwidth, hbm_peak_gbps, projection_bytes
from benchmarks._env import blas_settle_s, mem_available_bytes, openblas_libs
from benchmarks._plan import GEMM_SIZE
from benchmarks._timing import Stats, first_call, measure

# Correctness tolerances (max abs error against a float64 NumPy reference on inputs in
# [-1, 1]).  float32: rounding of length-n dot products plus the float32 SVD basis error,
# observed <= 3e-6 for n <= 12288; float64 likewise ~1e-14.
TOL = {"float32": 1e-4, "float64": 1e-10}
SAMPLE_ROWS = 512
SVD_SETUP_MAX = 2.1e8  # r^2 n above which projection cases skip the SVD (see Runner.basis)
MEM_FRACTION = 0.7


@dataclass
class Settings:
    repeats: int = 5
    max_call_s: float = 1.5  # skip a baseline whose estimated single call takes longer
    target_s: float = 0.02
    seed: int = 0
    best_blas: bool = True  # off when the user fixed the OpenBLAS thread count
    gemm_size: int = GEMM_SIZE  # side of the square GEMM whose rate sets the flops floor


def _stats(d: dict[str, Stats]) -> dict[str, dict]:
    return {k: v.to_dict() for k, v in d.items()}


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else float(a / b)


def _sample_idx(b: int) -> np.ndarray:
    return np.unique(np.linspace(0, b - 1, min(b, SAMPLE_ROWS)).astype(np.int64))


def _maxerr(a, ref) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - ref))) if ref.size else 0.0


def _mem_ok(need_bytes: float) -> tuple[bool, str]:
    avail = mem_available_bytes()
    if avail is None or need_bytes <= MEM_FRACTION * avail:
        return True, ""
    return False, (f"skipped: needs ~{need_bytes / 2**30:.1f} GiB, "
                   f"{avail / 2**30:.1f} GiB available")


def _uniform(rng: np.random.Generator, shape, dtype) -> np.ndarray:
    x = rng.random(shape, dtype=np.float32 if dtype == "float32" else np.float64)
    x *= 2
    x -= 1
    return x


def _to_device(x: np.ndarray) -> tuple[jax.Array, np.ndarray]:
    """Device copy, and a host view of it (zero-copy on CPU) so both share one buffer."""
    xj = jnp.asarray(x)
    if xj.devices().pop().platform == "cpu":
        return xj, np.asarray(xj)
    return xj, x


def _row_basis64(w: np.ndarray) -> np.ndarray:
    """Independent float64 reference: orthonormal basis of the row space by QR."""
    q, _ = np.linalg.qr(w.astype(np.float64).T)
    return q


# the projection variants that run on jax.devices()[0] (the others run on the host CPU)
DEVICE_VARIANTS = ("nsjax", "nsjax_nocheck", "nsjax_complement", "nsjax_images", "nsjax_xla",
                   "jnp", "elementwise", "torch_cuda")
BLAS_VARIANTS = ("numpy", "paper")  # NumPy/SciPy (OpenBLAS) variants, settled after each


def settle(fns: dict, case: dict | None = None) -> dict[str, float]:
    """Idle time after each sample of the OpenBLAS variants that run more than one thread
    (``case["blas_threads_used"]`` from :meth:`Runner.best_blas`, else the current count):
    their workers spin after each call (see ``_env.SETTLE_S``)."""
    s = blas_settle_s()
    if not s:
        return {}
    used = (case or {}).get("blas_threads_used", {})
    default = max((get() for get, _ in openblas_libs().values()), default=1)
    return {k: s for k in BLAS_VARIANTS if k in fns and used.get(k, default) > 1}


def add_xla_variant(fns: dict, case: dict, ns, xj) -> None:
    """Time ``ns.project(xj)`` through XLA's matmuls too (``nsjax_xla``: what the fused CPU
    kernel replaces) where the kernel could run, and record whether nsjax's default call
    uses it (``case["fused_kernel"]``)."""
    if nsjax.uses_cpu_kernel(ns, xj.dtype, kernel=True):
        fns["nsjax_xla"] = lambda: ns.project(xj, kernel=False)
        case["fused_kernel"] = nsjax.uses_cpu_kernel(ns, xj.dtype)


def roofline(elementwise_ms: float, flops: float, rate: float, **extra) -> dict:
    """The projection floor: the larger of the elementwise pass and ``flops`` at ``rate``."""
    floor = {"elementwise_ms": elementwise_ms, "flops_ms": flops / rate * 1e3, "flops": flops,
             **extra}
    floor["ms"] = max(floor["elementwise_ms"], floor["flops_ms"])
    floor["bound"] = "memory" if floor["elementwise_ms"] >= floor["flops_ms"] else "flops"
    return floor


class Runner:
    """Holds the run-wide measurements (GEMM rate) and runs cases."""

    def __init__(self, settings: Settings, log=print):
        self.s = settings
        self.log = log
        self.gemm: dict[str, dict] = {}
        self._bases: dict[tuple, dict] = {}
        self._blas = openblas_libs()
        dev = jax.devices()[0]
        self.hbm_gbps = hbm_peak_gbps(dev.platform, dev.device_kind)

    def basis(self, n: int, r: int, dtype: str) -> dict:
        """Random ``(r, n)`` W1 and everything derived from it, cached across batch sizes."""
        key = (n, r, dtype)
        if key not in self._bases:
            rng = np.random.default_rng([self.s.seed, n, r])
            w1 = rng.standard_normal((r, n)).astype(dtype)
            r64 = _row_basis64(w1)
            if r * r * n <= SVD_SETUP_MAX:
                ns, how = nsjax.null_space(w1), "nsjax.null_space(W1)"
            else:
                # The SVD of a large W1 takes seconds to minutes on a CPU and is the
                # null-space group's business; the projection only needs a row basis.
                ns = nsjax.NullSpace(row_basis=jnp.asarray(r64, dtype),
                                     singular_values=jnp.ones((r,), dtype),
                                     tol=jnp.zeros((), dtype), n=n, rank=r, input_shape=(n,))
                how = "NullSpace built from a QR row basis of W1 (no SVD)"
            self._bases[key] = {"w1": w1, "ns": ns, "rb": np.asarray(ns.row_basis),
                                "r64": r64, "paper": None, "how": how}
        return self._bases[key]

    def best_blas(self, fns: dict, case: dict, names=("paper", "numpy")) -> None:
        """Give each NumPy/SciPy baseline its faster OpenBLAS thread count: default or 1.

        On a small machine busy with other work, a multi-threaded OpenBLAS call waits for
        its slowest thread to get a core: a 0.2 GFLOP matmul measured 30 ms with 2 threads
        and 3 ms with 1 on 2 busy cores, while large calls gain from the threads.  The
        median of three calls with each setting decides (after one warm-up each; the
        settings alternate, and multi-threaded calls are followed by the settle time), as
        a single call per setting can pick the slower one on a noisy machine
        (``benchmarks/README.md``, BLAS threads).  The choice is recorded in
        ``case["blas_threads_used"]``, the trial times in ``case["blas_trial_ms"]``, and
        the wrapped baseline sets it for every call.
        """
        if not self._blas or not self.s.best_blas:
            return
        default = max(get() for get, _ in self._blas.values())
        if default <= 1:
            return

        def set_all(k):
            for _, put in self._blas.values():
                put(k)

        def bound(fn, k):
            def call():
                set_all(k)
                try:
                    return fn()
                finally:
                    set_all(default)

            return call

        used, trials = {}, {}
        settle_s = blas_settle_s()
        for name in names:
            if name not in fns:
                continue
            t: dict[int, list[float]] = {default: [], 1: []}
            for k in t:
                bound(fns[name], k)()
            for _ in range(3):
                for k in t:
                    f = bound(fns[name], k)
                    t0 = time.perf_counter()
                    f()
                    t[k].append(time.perf_counter() - t0)
                    if k > 1 and settle_s:
                        time.sleep(settle_s)
            k = min(t, key=lambda k: statistics.median(t[k]))
            fns[name] = bound(fns[name], k)
            used[name] = k
            trials[name] = {str(k): [round(1e3 * v, 2) for v in vs] for k, vs in t.items()}
        case["blas_threads_used"] = used
        case["blas_trial_ms"] = trials

    def gemm_variant(self, dtype: str):
        """The jitted ``gemm_size``-square GEMM (compiled once per dtype) and its flops."""
        size = self.s.gemm_size
        key = ("gemm", dtype, size)
        if key not in self._bases:
            self._bases[key] = bl.gemm(jnp.dtype(dtype), size)
        return self._bases[key]

    def paper_basis(self, n: int, r: int, dtype: str) -> tuple[np.ndarray, str]:
        entry = self.basis(n, r, dtype)
        if entry["paper"] is None:
            entry["paper"] = bl.paper_basis(entry["w1"])
        return entry["paper"]

    # ------------------------------------------------------------------ roofline pieces

    def gemm_rate(self, dtype: str) -> float:
        """Flop/s of a jitted ``gemm_size``-square matmul at HIGHEST, measured once."""
        size = self.s.gemm_size
        if dtype not in self.gemm:
            fn, flops = self.gemm_variant(dtype)
            a = np.asarray(jax.random.normal(jax.random.key(2), (size, size), dtype))
            first_ms, _ = first_call(fn)
            st = measure({"gemm": fn, "numpy_gemm": lambda: a @ a}, max(self.s.repeats, 5),
                         target_s=self.s.target_s)
            g, gn = st["gemm"], st["numpy_gemm"]
            self.gemm[dtype] = {"size": size, "flops": flops, "first_call_ms": first_ms,
                                "stats": g.to_dict(), "gflops": flops / g.median_ms / 1e6,
                                "numpy_stats": gn.to_dict(),
                                "numpy_gflops": flops / gn.median_ms / 1e6}
            self.log(f"  GEMM {size}^3 {dtype}: jax {self.gemm[dtype]['gflops']:.1f} GFLOP/s "
                     f"(the floor's rate), numpy {self.gemm[dtype]['numpy_gflops']:.1f}")
        return self.gemm[dtype]["gflops"] * 1e9

    # ------------------------------------------------------------------ projection

    def projection(self, group: str, b: int, n: int, r: int, dtype: str, *,
                   extra: bool = False, repeats: int | None = None) -> dict:
        """Project a ``(b, n)`` batch onto the null space of a random ``(r, n)`` W1."""
        repeats = repeats or self.s.repeats
        item = np.dtype(dtype).itemsize
        case = {"group": group, "name": f"B={b} n={n} r={r} {dtype}",
                "params": {"B": b, "n": n, "r": r, "nullity": n - r, "dtype": dtype}}
        ok, why = _mem_ok(4.0 * b * n * item)
        if not ok:
            case["status"] = why
            return case
        gemm_rate = self.gemm_rate(dtype)
        base = self.basis(n, r, dtype)
        ns, rb = base["ns"], base["rb"]
        if ns.rank != r:
            case["status"] = f"failed: numerical rank {ns.rank} != {r}"
            return case
        rng = np.random.default_rng([self.s.seed, b, n, r])
        xj, x = _to_device(_uniform(rng, (b, n), dtype))
        floor_fn = bl.elementwise_pass()
        rbj = jnp.asarray(rb)
        jnp_fn = bl.jnp_complement()
        fns = {
            "nsjax": lambda: ns.project(xj),
            "nsjax_nocheck": lambda: ns.project(xj, check_finite=False),
        }
        if extra:  # the other side, with the same baselines
            fns["nsjax_complement"] = lambda: ns.complement(xj)
            # a fresh copy with NumPy's huge pages: the least any out-of-place projection
            # costs in a plain process, so paper / copy bounds the reachable speedup
            fns["numpy_copy"] = lambda: x.copy()
            if n == 784:  # the same batch as MNIST images (B, 28, 28, 1), what the paper feeds
                ns_img, x_img = ns.replace(input_shape=(28, 28, 1)), xj.reshape(b, 28, 28, 1)
                fns["nsjax_images"] = lambda: ns_img.project(x_img)
        add_xla_variant(fns, case, ns, xj)
        fns["elementwise"] = lambda: floor_fn(xj)
        fns["jnp"] = lambda: jnp_fn(xj, rbj)
        skipped = {}
        numpy_est = 3 * bl.projection_flops(b, n, r) / gemm_rate  # skinny GEMMs: ~1/3 rate
        if numpy_est <= self.s.max_call_s:
            fns["numpy"] = lambda: bl.numpy_complement(x, rb)
        else:
            skipped["numpy"] = (f"skipped: estimated {numpy_est:.1f} s per call > "
                                f"--max-call-s {self.s.max_call_s:g}")
        paper_est = bl.paper_flops(b, n, r) / gemm_rate
        if paper_est <= self.s.max_call_s or extra:  # the acceptance case always has it
            nb, how = self.paper_basis(n, r, dtype)
            fns["paper"] = lambda: bl.paper_project(x, nb)
            case["paper_basis"] = how
        else:
            skipped["paper"] = (f"skipped: estimated {paper_est:.1f} s per call > "
                                f"--max-call-s {self.s.max_call_s:g}")
        torch_fns = bl.torch_variants(x, rb)
        for k, (fn, _) in torch_fns.items():
            fns[k] = fn
        # the GEMM whose rate sets the flops floor, re-timed in the same loop
        gemm_fn, gemm_flops = self.gemm_variant(dtype)
        fns["gemm"] = gemm_fn

        # compile / first call of nsjax, from a clean cache
        jax.clear_caches()
        first_ms, out = first_call(fns["nsjax"])

        # correctness before timing, on a sample of rows, against float64
        idx = _sample_idx(b)
        r64 = base["r64"]
        x64 = x[idx].astype(np.float64)
        ref = x64 - (x64 @ r64) @ r64.T
        errs = {"nsjax": _maxerr(np.asarray(out)[idx], ref)}
        del out
        errs["nsjax_nocheck"] = _maxerr(np.asarray(fns["nsjax_nocheck"]())[idx], ref)
        if "nsjax_complement" in fns:  # checked against x - ref: the row-space part
            errs["nsjax_complement"] = _maxerr(np.asarray(fns["nsjax_complement"]())[idx],
                                               x64 - ref)
        errs["jnp"] = _maxerr(np.asarray(fns["jnp"]())[idx], ref)
        if "nsjax_xla" in fns:
            errs["nsjax_xla"] = _maxerr(np.asarray(fns["nsjax_xla"]())[idx], ref)
        errs["numpy"] = _maxerr(bl.numpy_complement(x[idx], rb), ref)  # always checked
        if "paper" in fns:
            errs["paper"] = _maxerr(bl.paper_project(x[idx], nb), ref)
        for k, (_, res) in torch_fns.items():
            errs[k] = _maxerr(res()[idx], ref)
        errs["elementwise"] = _maxerr(np.asarray(floor_fn(xj))[idx], x64)
        if "numpy_copy" in fns:
            errs["numpy_copy"] = _maxerr(fns["numpy_copy"]()[idx], x64)
        if "nsjax_images" in fns:
            errs["nsjax_images"] = _maxerr(np.asarray(fns["nsjax_images"]()).reshape(b, n)[idx],
                                           ref)
        tol = TOL[dtype]
        case["correct"] = {"reference": "float64 NumPy, QR row basis", "rows_checked": len(idx),
                           "tol": tol, "max_abs_err": errs,
                           "ok": all(e <= tol for e in errs.values())}
        if not case["correct"]["ok"]:
            case["status"] = "failed: results differ from the float64 reference"
            return case

        self.best_blas(fns, case)
        st = measure(fns, repeats, target_s=self.s.target_s,
                     max_repeats=None if extra else {"gemm": 3}, settle_s=settle(fns, case))
        case["timings"] = _stats(st)
        case["timings"]["nsjax"]["first_call_ms"] = first_ms
        case["timings"]["nsjax"]["compile_ms"] = max(0.0, first_ms - st["nsjax"].median_ms)
        case["skipped"] = skipped
        case["basis"] = base["how"]
        rate = gemm_flops / (st["gemm"].median_ms / 1e3)
        # nsjax projects through the smaller side: rank r, or nullity n - r with a null basis
        side = r if ns.null_basis is None else n - r
        flops = bl.projection_flops(b, n, side)
        floor = roofline(st["elementwise"].median_ms, flops, rate, gemm_gflops=rate / 1e9,
                         side=side)
        case["floor"] = floor
        case["ratios"] = self._ratios(st, floor["ms"])
        case["bandwidth"] = self.bandwidth(st, projection_bytes(b, n, item, n * side))
        case["status"] = "ok"
        return case

    def bandwidth(self, st: dict[str, Stats], nbytes: int) -> dict:
        """Achieved GB/s (and the fraction of the device's HBM peak, where known) of the
        variants that run on the benchmark device, each moving ``nbytes``."""
        return bandwidth({v: st[v].median_ms for v in DEVICE_VARIANTS if v in st}, nbytes,
                         self.hbm_gbps)

    @staticmethod
    def _ratios(st: dict[str, Stats], floor_ms: float) -> dict:
        med = {k: v.median_ms for k, v in st.items()}
        out = {}
        for v in ("nsjax", "nsjax_nocheck", "nsjax_complement", "nsjax_xla"):
            if v not in med:
                continue
            out[v] = {
                "speedup_vs_paper": _ratio(med.get("paper"), med[v]),
                "speedup_vs_numpy": _ratio(med.get("numpy"), med[v]),
                "speedup_vs_jnp": _ratio(med.get("jnp"), med[v]),
                "speedup_vs_torch_cpu": _ratio(med.get("torch_cpu"), med[v]),
                "speedup_vs_torch_cuda": _ratio(med.get("torch_cuda"), med[v]),
                "x_floor": _ratio(med[v], floor_ms),
            }
        return out

    # ------------------------------------------------------------------ null space

    def null_space(self, m: int, n: int, dtype: str) -> dict:
        """``nsjax.null_space`` of a random dense ``(m, n)`` matrix vs SciPy/NumPy."""
        case = {"group": "null-space", "name": f"{m}x{n} {dtype}",
                "params": {"m": m, "n": n, "dtype": dtype}}
        item = np.dtype(dtype).itemsize
        ok, why = _mem_ok(item * (6.0 * m * n + 2.0 * n * n))
        if not ok:
            case["status"] = why
            return case
        gemm_rate = self.gemm_rate(dtype)
        rng = np.random.default_rng([self.s.seed, m, n, 7])
        w = rng.standard_normal((m, n)).astype(dtype)
        wj = jnp.asarray(w)

        def run_nsjax():
            ns = nsjax.null_space(wj)
            return ns.row_basis

        fns = {"nsjax": run_nsjax}
        if np.dtype(dtype).itemsize < 8:  # the default is a float64 SVD; also time float32
            fns["nsjax_float32_svd"] = lambda: nsjax.null_space(wj, float64_svd=False).row_basis
        skipped = {}
        # LAPACK SVDs run at ~1/20 of the GEMM rate on CPUs; the thin one costs ~6 m^2 n
        numpy_est = 6.0 * min(m, n) ** 2 * max(m, n) / (gemm_rate / 20)
        if numpy_est <= 10 * self.s.max_call_s:
            fns["numpy"] = lambda: np.linalg.svd(w, full_matrices=False)[2]
        else:
            skipped["numpy"] = (f"skipped: estimated {numpy_est:.0f} s per call "
                                f"> 10 x --max-call-s")
        # scipy.linalg.null_space computes the full n x n V: ~6 m n^2 flops
        paper_est = 6.0 * m * n * n / (gemm_rate / 20)
        if paper_est <= 10 * self.s.max_call_s:
            import scipy.linalg

            fns["paper"] = lambda: scipy.linalg.null_space(w)
        else:
            skipped["paper"] = (f"skipped: estimated {paper_est:.0f} s per call "
                                f"> 10 x --max-call-s")
        jax.clear_caches()
        first_ms, rb = first_call(run_nsjax)
        ns = nsjax.null_space(wj)
        # correctness: rank, and the projector against a float64 QR basis of the row space
        xs = rng.uniform(-1, 1, (64, n))
        vr = _row_basis64(w)
        ref = xs - (xs @ vr) @ vr.T
        err = _maxerr(ns.project(jnp.asarray(xs, dtype)), ref)
        errs = {"nsjax": err}
        if "nsjax_float32_svd" in fns:
            ns32 = nsjax.null_space(wj, float64_svd=False)
            errs["nsjax_float32_svd"] = _maxerr(ns32.project(jnp.asarray(xs, dtype)), ref)
        if "paper" in fns:
            nb = fns["paper"]()
            errs["paper"] = _maxerr(xs @ nb @ nb.T, ref)
        tol = TOL[dtype] * 10  # projector built from a float32 SVD of an n x n-ish problem
        case["correct"] = {"reference": "float64 NumPy QR of W^T", "rank": ns.rank,
                           "expected_rank": min(m, n), "tol": tol, "max_abs_err": errs,
                           "ok": ns.rank == min(m, n) and all(e <= tol for e in errs.values())}
        if not case["correct"]["ok"]:
            case["status"] = "failed: wrong rank or projector"
            return case
        self.best_blas(fns, case)
        st = measure(fns, min(self.s.repeats, 5), target_s=self.s.target_s, slow_s=1.0,
                     slow_repeats=3, warmup=0 if first_ms > 10_000 else 1,
                     settle_s=settle(fns, case))
        case["timings"] = _stats(st)
        case["timings"]["nsjax"]["first_call_ms"] = first_ms
        case["timings"]["nsjax"]["compile_ms"] = max(0.0, first_ms - st["nsjax"].median_ms)
        case["skipped"] = skipped
        gram = 2.0 * m * m * n if m <= n else 2.0 * n * n * m
        floor = {"ms": gram / gemm_rate * 1e3, "bound": "gram-flops",
                 "note": "2 m^2 n flops (the Gram matrix A A^T) at the GEMM rate: a loose "
                         "lower bound for any SVD"}
        case["floor"] = floor
        med = {k: v.median_ms for k, v in st.items()}
        case["ratios"] = {"nsjax": {"speedup_vs_paper": _ratio(med.get("paper"), med["nsjax"]),
                                    "speedup_vs_numpy": _ratio(med.get("numpy"), med["nsjax"]),
                                    "x_floor": _ratio(med["nsjax"], floor["ms"])}}
        case["status"] = "ok"
        return case

    # ------------------------------------------------------------------ steganography

    def stego(self, b: int, dtype: str) -> dict:
        """``stego(cover, hidden, ns)`` on 28x28x1 pairs, rank-32 W1 (the paper's FCNN)."""
        case = {"group": "stego", "name": f"B={b} 28x28x1 r=32 {dtype}",
                "params": {"B": b, "n": 784, "r": 32, "dtype": dtype}}
        stego_fn = nsjax.stego
        gemm_rate = self.gemm_rate(dtype)
        rng = np.random.default_rng([self.s.seed, b, 99])
        w1 = rng.standard_normal((32, 784)).astype(dtype)
        ns = nsjax.null_space(w1, input_shape=(28, 28, 1))
        cj, c = _to_device(_uniform(rng, (b, 28, 28, 1), dtype))
        hj, h = _to_device(_uniform(rng, (b, 28, 28, 1), dtype))
        a1 = 0.2
        nb, how = bl.paper_basis(w1)
        rb = np.asarray(ns.row_basis)
        floor_fn = jax.jit(lambda c, h: c + h)
        fns = {
            "nsjax": lambda: stego_fn(cj, hj, ns, alpha1=a1).image,
            "elementwise": lambda: floor_fn(cj, hj),
            "paper": lambda: _stego_numpy(c.reshape(b, -1), h.reshape(b, -1), a1,
                                          lambda z: z @ nb @ nb.T),
            "numpy": lambda: _stego_numpy(c.reshape(b, -1), h.reshape(b, -1), a1,
                                          lambda z: z - (z @ rb) @ rb.T),
        }
        jax.clear_caches()
        first_ms, _ = first_call(fns["nsjax"])
        res = stego_fn(cj, hj, ns, alpha1=a1)
        idx = _sample_idx(b)
        r64 = _row_basis64(w1)
        s_ref, a2_ref = _stego_numpy(c.reshape(b, -1)[idx].astype(np.float64),
                                     h.reshape(b, -1)[idx].astype(np.float64), a1,
                                     lambda z: z - (z @ r64) @ r64.T, with_alpha=True)
        err = _maxerr(np.asarray(res.image).reshape(b, -1)[idx], s_ref)
        a2 = np.asarray(res.alpha2).reshape(-1)[idx]
        a2_rel = float(np.max(np.abs(a2 - a2_ref) / np.abs(a2_ref)))
        p_err = _maxerr(fns["paper"]()[idx], s_ref)
        tol = TOL[dtype]
        case["correct"] = {"reference": "float64 NumPy stego (closed-form alpha2)",
                           "rows_checked": len(idx), "tol": tol,
                           "max_abs_err": {"nsjax": err, "paper": p_err},
                           "alpha2_max_rel_err": a2_rel,
                           "ok": err <= tol and p_err <= tol and a2_rel <= 1e-3}
        case["paper_basis"] = how
        if not case["correct"]["ok"]:
            case["status"] = "failed: stego images differ from the float64 reference"
            return case
        self.best_blas(fns, case)
        st = measure(fns, self.s.repeats, target_s=self.s.target_s, settle_s=settle(fns, case))
        case["timings"] = _stats(st)
        case["timings"]["nsjax"]["first_call_ms"] = first_ms
        case["timings"]["nsjax"]["compile_ms"] = max(0.0, first_ms - st["nsjax"].median_ms)
        flops = 2 * bl.projection_flops(b, 784, 32)
        floor = {"elementwise_ms": st["elementwise"].median_ms, "flops_ms":
                 flops / gemm_rate * 1e3, "flops": flops,
                 "note": "elementwise = jitted cover + hidden (2 reads, 1 write); flops = two "
                         "projections"}
        floor["ms"] = max(floor["elementwise_ms"], floor["flops_ms"])
        case["floor"] = floor
        case["ratios"] = self._ratios(st, floor["ms"])
        case["status"] = "ok"
        return case

    # ------------------------------------------------------------------ invariance

    def invariance(self, probes: int, dtype: str) -> dict:
        """``check_invariance`` on the paper's FCNN 784-32-16-10 vs the same check in NumPy."""
        arch = (784, 32, 16, 10)
        nscales = len(nsjax.DEFAULT_SCALES)
        case = {"group": "invariance", "name": f"FCNN {'-'.join(map(str, arch))} "
                f"P={probes} {dtype}",
                "params": {"arch": list(arch), "probes": probes, "scales": nscales,
                           "dtype": dtype}}
        gemm_rate = self.gemm_rate(dtype)
        model = nsjax.FCNN(arch)
        params = nsjax.init_params(model, jax.random.key(self.s.seed))
        params = jax.tree.map(lambda a: a.astype(dtype), params)
        ns = nsjax.null_space_of(model, params, (28, 28, 1))
        f = lambda z: model.apply(params, z)  # noqa: E731 - one closure for every call
        key = jax.random.key(1)
        layers = [(params["params"][f"Dense_{i}"]["kernel"], params["params"][f"Dense_{i}"]
                   ["bias"]) for i in range(len(arch) - 1)]
        layers = [(np.asarray(k), np.asarray(b)) for k, b in layers]
        nb, how = bl.paper_basis(np.asarray(layers[0][0]).T)
        rng = np.random.default_rng([self.s.seed, probes])
        elem_x = jnp.zeros((probes * (nscales + 2), 784), dtype)
        elem_fn = bl.elementwise_pass()
        fns = {
            "nsjax": lambda: nsjax.check_invariance(f, ns, key, n_probes=probes).rel_error,
            "paper": lambda: _invariance_numpy(layers, nb, rng, probes, dtype),
            "elementwise": lambda: elem_fn(elem_x),
        }
        jax.clear_caches()
        first_ms, _ = first_call(fns["nsjax"])
        res = nsjax.check_invariance(f, ns, key, n_probes=probes)
        np_rel = _invariance_numpy(layers, nb, rng, probes, dtype)
        eps = float(np.finfo(dtype).eps)
        # nsjax's own rounding floor (see nsjax/_invariance.py): K eps (|x| + |a|) / |x| with
        # K = 64, |x| ~ sqrt(n / 3) for x uniform in [-1, 1]^n, |a| <= 1e3
        xnorm = math.sqrt(784 / 3)
        bound = 64 * eps * (xnorm + max(nsjax.DEFAULT_SCALES)) / xnorm
        case["correct"] = {"reference": "same check in NumPy with a SciPy null basis",
                           "nsjax_passed": bool(res.passed),
                           "nsjax_max_rel_error": res.max_rel_error,
                           "numpy_max_rel_error": float(np_rel.max()), "bound": bound,
                           "ok": bool(res.passed) and float(np_rel.max()) <= bound}
        case["paper_basis"] = how
        if not case["correct"]["ok"]:
            case["status"] = "failed: invariance check did not pass"
            return case
        self.best_blas(fns, case)
        st = measure(fns, min(self.s.repeats, 5), target_s=self.s.target_s,
                     settle_s=settle(fns, case))
        case["timings"] = _stats(st)
        case["timings"]["nsjax"]["first_call_ms"] = first_ms
        case["timings"]["nsjax"]["compile_ms"] = max(0.0, first_ms - st["nsjax"].median_ms)
        evals = probes * (nscales + 2)
        flops = 2.0 * evals * sum(a * b for a, b in zip(arch[:-1], arch[1:]))
        floor = {"elementwise_ms": st["elementwise"].median_ms, "flops_ms":
                 flops / gemm_rate * 1e3, "flops": flops,
                 "note": f"{evals} forward passes; elementwise pass over the moved probes"}
        floor["ms"] = max(floor["elementwise_ms"], floor["flops_ms"])
        case["floor"] = floor
        case["ratios"] = self._ratios(st, floor["ms"])
        case["status"] = "ok"
        return case

    # ------------------------------------------------------------------ devices

    def devices(self, b: int, dtype: str) -> dict:
        """``ns.project`` on one device vs ``ns.project(shard_batch(x))`` on all of them."""
        shard_batch = nsjax.sharding.shard_batch

        ndev = jax.device_count()
        b = max(ndev, b // ndev * ndev)
        n, r = 784, 32
        case = {"group": "devices", "name": f"B={b} n={n} r={r} {dtype} 1 vs {ndev} devices",
                "params": {"B": b, "n": n, "r": r, "dtype": dtype, "devices": ndev}}
        if ndev < 2:
            case["status"] = "skipped: one device (use --devices 8 on CPU)"
            return case
        rng = np.random.default_rng([self.s.seed, b, 5])
        w1 = rng.standard_normal((r, n)).astype(dtype)
        ns = nsjax.null_space(w1)
        x = _uniform(rng, (b, n), dtype)
        x1 = jax.device_put(x, jax.devices()[0])
        xs = shard_batch(x)
        floor_fn = bl.elementwise_pass()
        fns = {"nsjax_1dev": lambda: ns.project(x1), f"nsjax_{ndev}dev": lambda: ns.project(xs),
               "elementwise_1dev": lambda: floor_fn(x1),
               f"elementwise_{ndev}dev": lambda: floor_fn(xs)}
        jax.clear_caches()
        first_ms, out_s = first_call(fns[f"nsjax_{ndev}dev"])
        out_1 = np.asarray(ns.project(x1))
        err = _maxerr(out_s, out_1.astype(np.float64))
        kept = bool(out_s.sharding.is_equivalent_to(xs.sharding, out_s.ndim))
        case["correct"] = {"reference": "the same projection on one device",
                           "max_abs_err": {"sharded": err}, "tol": TOL[dtype],
                           "output_sharding": str(out_s.sharding.spec),
                           "output_devices": len(out_s.sharding.device_set),
                           "sharding_kept": kept, "ok": err <= TOL[dtype] and kept}
        if not case["correct"]["ok"]:
            case["status"] = "failed: sharded result differs or lost its sharding"
            return case
        st = measure(fns, self.s.repeats, target_s=self.s.target_s, settle_s=settle(fns, case))
        case["timings"] = _stats(st)
        case["timings"][f"nsjax_{ndev}dev"]["first_call_ms"] = first_ms
        med = {k: v.median_ms for k, v in st.items()}
        case["ratios"] = {f"nsjax_{ndev}dev": {
            "speedup_vs_1dev": _ratio(med["nsjax_1dev"], med[f"nsjax_{ndev}dev"]),
            "elementwise_speedup": _ratio(med["elementwise_1dev"],
                                          med[f"elementwise_{ndev}dev"])}}
        case["status"] = "ok"
        return case


# ---------------------------------------------------------------------- helpers


def _stego_numpy(c, h, alpha1, project, with_alpha=False):
    """The paper's steganography in NumPy: S = a1 H_perp + a2 C_hat, a2 maximal."""
    hp = alpha1 * (h - project(h))
    ch = project(c)
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = np.where(ch > 0, (1 - hp) / ch, np.where(ch < 0, (-1 - hp) / ch, np.inf))
    a2 = bound.min(axis=-1) * (1 - 8 * np.finfo(c.dtype).eps)
    s = hp + a2[:, None] * ch
    return (s, a2) if with_alpha else s


def _invariance_numpy(layers, null_basis, rng, probes, dtype):
    """``max_j |f(x + a v) - f(x)| / max_j |f(x)|`` per probe and scale, NumPy forward pass."""
    scales = np.asarray(nsjax.DEFAULT_SCALES, dtype)
    n = null_basis.shape[0]
    x = rng.uniform(-1, 1, (probes, n)).astype(dtype)
    v = null_basis @ rng.standard_normal((null_basis.shape[1], probes)).astype(dtype)
    v = (v / np.linalg.norm(v, axis=0)).T
    sign = np.where(rng.random((probes, 1)) < 0.5, -1, 1).astype(dtype)
    moved = (x[:, None, :] + (sign * scales)[:, :, None] * v[:, None, :]).reshape(-1, n)

    def fwd(z):
        for i, (k, b) in enumerate(layers):
            z = z @ k + b
            if i < len(layers) - 1:
                z = np.maximum(z, 0)
        return z

    fx = fwd(x)
    fy = fwd(moved).reshape(probes, len(scales), -1)
    return np.abs(fy - fx[:, None]).max(-1) / np.abs(fx).max(-1)[:, None]


def fit_loglog(xs, ys) -> float | None:
    """Slope of ``log y`` against ``log x`` (1.0 = linear growth)."""
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    if len(xs) < 2:
        return None
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def fit_affine(xs, ys) -> dict | None:
    """Least-squares ``y = a + b x`` with its R^2."""
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    if len(xs) < 2:
        return None
    b, a = np.polyfit(xs, ys, 1)
    pred = a + b * xs
    ss = float(np.sum((ys - ys.mean()) ** 2))
    r2 = 1.0 - float(np.sum((ys - pred) ** 2)) / ss if ss > 0 else 1.0
    return {"intercept_ms": float(a), "slope_ms": float(b), "r2": r2}

