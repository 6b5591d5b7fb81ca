"""What the numbers were measured on, and the process set-up that has to happen before JAX.

Some settings can only be made before ``jax``, OpenBLAS and the C allocator start, so the
runner re-executes itself once, in the same process (``os.execve`` keeps the PID), with
them (``OPENBLAS_THREAD_TIMEOUT=4`` always, unless set: see ``ENV_DEFAULTS``):

* ``--devices N`` on CPU: ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` splits the
  host into N JAX devices (they share its cores).
* ``--hugepages`` (default ``auto``): ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` makes
  glibc's ``malloc`` ask for transparent huge pages (``madvise``) on large blocks.  NumPy
  already does this for its own arrays; XLA's CPU buffers come from ``malloc`` and do not.
  On a kernel whose THP mode is ``madvise`` (common default) every fresh output buffer of
  XLA is then faulted in 4 KiB at a time: 45,938 page faults for one (60000, 784) float32
  array, which on a VM can cost more than the projection itself.  ``auto`` turns the
  tunable on only where THP is ``madvise`` and the C library is glibc; the JSON records
  the choice, the THP mode and the page faults per call of every timed variant.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys

REEXEC_MARK = "NSJAX_BENCH_REEXEC"
# Set unless the user set them.  OpenBLAS worker threads spin for 2^28 cycles (~0.1 s)
# after each call before they sleep; the benchmark alternates NumPy's OpenBLAS, SciPy's
# OpenBLAS (also jax's CPU LAPACK) and XLA's threads, and each one's spinning threads slow
# the next one down (3x measured for small SVDs on 2 cores), which never happens when one
# pipeline runs alone.  2^4 cycles makes idle workers sleep at once.
ENV_DEFAULTS = {"OPENBLAS_THREAD_TIMEOUT": "4"}
HUGETLB = "glibc.malloc.hugetlb=1"
_THP = "/sys/kernel/mm/transparent_hugepage/enabled"


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


def reexec_if_needed(module: str, argv: list[str], *, hugepages: bool, devices: int | None):
    """Re-run ``python -m module argv`` with the allocator/device settings, once.

    Does nothing when the settings are already in place or when this process is the
    re-executed one.  Must be called before ``jax`` is imported.
    """
    if os.environ.get(REEXEC_MARK):
        return
    env = dict(os.environ)
    change = False
    for k, v in ENV_DEFAULTS.items():
        if k not in env:
            env[k] = v
            change = True
    if hugepages and not hugepages_active():
        tun = env.get("GLIBC_TUNABLES", "")
        env["GLIBC_TUNABLES"] = f"{tun}:{HUGETLB}" if tun else HUGETLB
        change = True
    if devices and devices > 1:
        flag = f"--xla_force_host_platform_device_count={devices}"
        if flag not in env.get("XLA_FLAGS", ""):
            if "jax" in sys.modules:
                raise RuntimeError("--devices must be handled before jax is imported")
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


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "blas_threads": blas_threads(),
        "openblas_thread_timeout": os.environ.get("OPENBLAS_THREAD_TIMEOUT"),
        "hostname": platform.node(),
        "os": platform.platform(),
    }
