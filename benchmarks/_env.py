"""What the numbers were measured on, and the process set-up that has to happen before JAX.

The headline figures come from a **plain process**: nothing set in the environment, no
re-execution, the C allocator and OpenBLAS as a user's ``python`` gets them.  Settings that
can only be made before ``jax``, OpenBLAS and the C allocator start are opt-in variants,
labelled as such in the output and the JSON; for them the runner re-executes itself once,
in the same process (``os.execve`` keeps the PID):

* ``--devices N`` on CPU: ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` splits the
  host into N JAX devices (they share its cores).
* ``--hugepages on`` (default ``off``): ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` makes
  glibc's ``malloc`` ask for transparent huge pages on every large block, XLA's buffers
  included.  Not needed for nsjax's fused kernel, which advises huge pages on its own
  output (``madvise``); it speeds up XLA's other buffers (the ``jnp`` baseline, the
  elementwise floor) on a kernel whose THP mode is ``madvise``.  ``auto``: on only where
  THP is ``madvise`` and the C library is glibc.  The JSON records the choice, the THP
  mode and the page faults per call of every timed variant.
* ``--openblas-thread-timeout N`` (default: unset): ``OPENBLAS_THREAD_TIMEOUT=N``.  Not
  needed by default either: the timing loop lets OpenBLAS's spinning workers go idle after
  each NumPy/SciPy sample (``SETTLE_S``) instead, so each variant is timed as if it ran
  alone.
* ``--isa avx2`` (default: unset, every library takes the best the CPU has): an AVX2-only
  CPU emulated on a newer one, for all contenders at once: ``NSJAX_CPU_KERNEL=avx2``
  (nsjax's AVX2 body), ``OPENBLAS_CORETYPE=Haswell`` (NumPy's and SciPy's OpenBLAS on its
  AVX2 kernels) and ``XLA_FLAGS=--xla_cpu_max_isa=AVX2`` (XLA's code).  Capping nsjax alone
  would race its AVX2 body against AVX-512 baselines, which no AVX2-only machine runs.  The
  instruction sets only: the cores, caches and memory stay this machine's.  Only on an
  x86-64 CPU with AVX2+FMA (elsewhere it stops with the reason).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import sys

REEXEC_MARK = "NSJAX_BENCH_REEXEC"
# OpenBLAS worker threads spin for 2^28 cycles (~0.1 s) after each call before they sleep;
# in an interleaved loop they would slow down whatever is timed next (3x measured for small
# SVDs on 2 cores), which never happens when one pipeline runs alone.  The timing loop
# idles this long after each sample of a NumPy/SciPy variant (not counted), unless the
# opt-in OPENBLAS_THREAD_TIMEOUT already makes idle workers sleep at once.
SETTLE_S = 0.15
HUGETLB = "glibc.malloc.hugetlb=1"
# --isa LEVEL: what each library is told (environment, XLA flag) to stay within that level
ISA_ENV = {"avx2": {"NSJAX_CPU_KERNEL": "avx2", "OPENBLAS_CORETYPE": "Haswell"}}
ISA_XLA_FLAG = {"avx2": "--xla_cpu_max_isa=AVX2"}
# settings that choose instruction sets: a process with any of them is not plain
_ISA_VARS = ("NSJAX_CPU_KERNEL", "OPENBLAS_CORETYPE")
_THP = "/sys/kernel/mm/transparent_hugepage/enabled"


def _cpuinfo(field: str) -> str | None:
    """The first ``field`` line's value in ``/proc/cpuinfo`` (Linux), else None."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _cpu_flags() -> set[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (Linux; empty elsewhere)."""
    return set((_cpuinfo("flags") or "").split())


def isa_problem(isa: str, machine: str, flags: set[str]) -> str | None:
    """Why ``--isa isa`` cannot emulate that instruction set on this CPU (``machine`` as
    ``platform.machine()`` names it, ``flags`` from ``/proc/cpuinfo``), or None if it can."""
    if isa not in ISA_ENV:
        return f"--isa: expected one of {sorted(ISA_ENV)}, got {isa!r}"
    if machine not in ("x86_64", "AMD64"):
        return f"--isa {isa} caps x86-64 code; this machine is {machine}"
    if not {"avx2", "fma"} <= flags:
        return f"--isa {isa}: this CPU has no AVX2+FMA, so there is nothing to cap down to"
    return None


def thp_mode() -> str | None:
    """The kernel's transparent-huge-page mode (``always``/``madvise``/``never``) or None."""
    try:
        text = open(_THP).read()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1 : end] if 0 <= start < end else None


def hugepages_active() -> bool:
    return HUGETLB in os.environ.get("GLIBC_TUNABLES", "")


def want_hugepages(choice: str) -> bool:
    """Resolve ``--hugepages {auto,on,off}`` for this machine."""
    if choice == "off":
        return False
    glibc = platform.libc_ver()[0] == "glibc"
    if choice == "on":
        return glibc
    return glibc and thp_mode() == "madvise"


def blas_settle_s() -> float:
    """Seconds to idle after a NumPy/SciPy sample (0 when ``OPENBLAS_THREAD_TIMEOUT`` is
    set to a small value: its workers sleep at once)."""
    try:
        return 0.0 if int(os.environ.get("OPENBLAS_THREAD_TIMEOUT", "99")) <= 8 else SETTLE_S
    except ValueError:
        return SETTLE_S


def process_label() -> str:
    """``"plain process"`` unless an opt-in setting is in effect, then which ones."""
    opt = []
    if hugepages_active():
        opt.append(f"GLIBC_TUNABLES={HUGETLB}")
    if os.environ.get("OPENBLAS_THREAD_TIMEOUT"):
        opt.append(f"OPENBLAS_THREAD_TIMEOUT={os.environ['OPENBLAS_THREAD_TIMEOUT']}")
    from nsjax._cpu_kernel import DEFAULT_MODES  # (imports jax: called after any re-exec)

    isa = [f"{k}={os.environ[k]}" for k in _ISA_VARS
           if os.environ.get(k, "1").strip().lower() not in DEFAULT_MODES]
    isa += [f for f in os.environ.get("XLA_FLAGS", "").split() if "xla_cpu_max_isa" in f]
    parts = (["tuned process (" + ", ".join(opt) + ")"] if opt else []) + (
        ["instruction sets chosen (" + ", ".join(isa) + ")"] if isa else [])
    if not parts:
        return "plain process"
    return "OPT-IN " + "; ".join(parts) + ", not what a user's process gets"


def reexec_if_needed(module: str, argv: list[str], *, hugepages: bool, devices: int | None,
                     openblas_timeout: int | None = None, isa: str | None = None):
    """Re-run ``python -m module argv`` with the opt-in allocator/BLAS/device/ISA settings,
    once.

    Does nothing when nothing is asked for (the default: a plain process), when the
    settings are already in place or when this process is the re-executed one.  Must be
    called before ``jax`` is imported.
    """
    if os.environ.get(REEXEC_MARK):
        return
    env = dict(os.environ)
    change = False
    if openblas_timeout is not None and env.get("OPENBLAS_THREAD_TIMEOUT") != str(
            openblas_timeout):
        env["OPENBLAS_THREAD_TIMEOUT"] = str(int(openblas_timeout))
        change = True
    if hugepages and not hugepages_active():
        tun = env.get("GLIBC_TUNABLES", "")
        env["GLIBC_TUNABLES"] = f"{tun}:{HUGETLB}" if tun else HUGETLB
        change = True
    flags = [f"--xla_force_host_platform_device_count={devices}"] if devices and devices > 1 \
        else []
    if isa is not None:
        problem = isa_problem(isa, platform.machine(), _cpu_flags())
        if problem:
            raise SystemExit(problem)
        for k, v in ISA_ENV[isa].items():
            if env.get(k) != v:
                env[k] = v
                change = True
        flags.append(ISA_XLA_FLAG[isa])
    for flag in flags:
        if flag not in env.get("XLA_FLAGS", "").split():
            if "jax" in sys.modules:
                raise RuntimeError("--devices and --isa must be handled before jax is imported")
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + flag).strip()
            change = True
    if not change:
        return
    env[REEXEC_MARK] = "1"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # so -m finds us
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", module, *argv], env)


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {s!r}")
    return v


def add_process_options(p: argparse.ArgumentParser) -> None:
    """Declare the process settings both entry points take (``python -m benchmarks`` and
    ``python -m benchmarks.projection_60k``): the opt-in re-executions above and
    ``--blas-threads``.  :func:`apply_process_options` acts on them."""
    p.add_argument("--hugepages", choices=("auto", "on", "off"), default="off",
                   help="opt-in: re-run with glibc's hugetlb malloc tunable (transparent "
                   "huge pages for all of XLA's buffers); default off: a plain process, "
                   "what users get (see README)")
    p.add_argument("--openblas-thread-timeout", type=int, default=None, metavar="N",
                   help="opt-in: re-run with OPENBLAS_THREAD_TIMEOUT=N (default: unset)")
    p.add_argument("--isa", choices=sorted(ISA_ENV), default=None,
                   help="opt-in: re-run with nsjax, OpenBLAS and XLA all kept to this "
                   "instruction set (emulates an AVX2-only CPU on a newer one; labelled)")
    p.add_argument("--blas-threads", type=_positive_int, default=None, metavar="N",
                   help="fix NumPy's/SciPy's OpenBLAS threads for the whole run (default: "
                   "each baseline gets the faster of the default count and 1; see README)")


def apply_process_options(module: str, argv: list[str], args: argparse.Namespace, *,
                          devices: int | None = None) -> None:
    """Act on :func:`add_process_options`' settings, before ``jax`` is imported: re-execute
    ``python -m module argv`` once if an opt-in asks for it (:func:`reexec_if_needed`),
    then fix the OpenBLAS thread count if ``--blas-threads`` gave one."""
    reexec_if_needed(module, argv, hugepages=want_hugepages(args.hugepages), devices=devices,
                     openblas_timeout=args.openblas_thread_timeout, isa=args.isa)
    if args.blas_threads:
        blas_threads(args.blas_threads)


def _cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def mem_available_bytes() -> int | None:
    """``MemAvailable`` from ``/proc/meminfo`` (Linux), else None."""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def openblas_libs():
    """ctypes handles ``{name: (get, set)}`` of the OpenBLAS builds loaded by NumPy and SciPy
    (Linux only): :func:`nsjax.blas.openblas_libs`, the one copy of the finder."""
    from nsjax import blas

    return blas.openblas_libs()


def openblas_cores() -> dict[str, str]:
    """The CPU kernels each loaded OpenBLAS runs: :func:`nsjax.blas.openblas_cores`."""
    from nsjax import blas

    return blas.openblas_cores()


def blas_threads(set_to: int | None = None) -> dict[str, int]:
    """Threads of each loaded OpenBLAS (NumPy's, SciPy's -- which jax's CPU LAPACK uses).

    With ``set_to``, set them first.  On a small machine that is also busy with other work,
    multi-threaded OpenBLAS calls of a few microseconds can take tens of milliseconds
    (threads waiting for a core), which inflates small baseline calls and nsjax's SVD:
    ``--blas-threads 1`` shows the difference.
    """
    out = {}
    for name, (get, put) in openblas_libs().items():
        if set_to:
            put(int(set_to))
        out[name] = int(get())
    return out


def _kernel_info() -> str:
    import nsjax

    return nsjax.cpu_kernel_info()


def describe(dtypes: list[str], precision: str) -> dict:
    """Everything the numbers depend on: devices, versions, dtype, precision, cores, date."""
    import jax
    import jaxlib
    import numpy as np
    import scipy

    from benchmarks._bandwidth import hbm_peak_gbps

    devs = jax.devices()
    try:
        import torch  # noqa: F401  (optional baseline)

        torch_version = torch.__version__
    except Exception:  # noqa: BLE001 - any import failure means "no torch baseline"
        torch_version = None
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "platform": devs[0].platform,
        "device_kind": devs[0].device_kind,
        "device_count": len(devs),
        "hbm_peak_gbps": hbm_peak_gbps(devs[0].platform, devs[0].device_kind),
        "devices": [str(d) for d in devs],
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "torch": torch_version,
        "python": platform.python_version(),
        "x64_enabled": bool(jax.config.jax_enable_x64),
        "cpu_kernel": _kernel_info(),
        "dtypes": dtypes,
        "precision": precision,
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else None,
        "load_average_at_start": list(load) if load else None,
        "mem_available_gb": round((mem_available_bytes() or 0) / 2**30, 1),
        "thp_mode": thp_mode(),
        "glibc_hugetlb": hugepages_active(),
        "process": process_label(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "blas_threads": blas_threads(),
        "openblas_thread_timeout": os.environ.get("OPENBLAS_THREAD_TIMEOUT"),
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
        "openblas_cores": openblas_cores(),
        "hostname": platform.node(),
        "os": platform.platform(),
    }
