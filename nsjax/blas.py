"""OpenBLAS thread control for the LAPACK calls nsjax makes on the host (NumPy, SciPy).

On a machine whose cores are shared with other busy processes, multi-threaded OpenBLAS
spin-waits, and small LAPACK calls (a 784 x 784 SVD) slow down 10-100x; one thread is then
the fast choice.  NumPy and SciPy each load their own OpenBLAS (SciPy's is also the one
JAX's CPU LAPACK uses); the functions here find every OpenBLAS loaded in this process
(Linux: ``/proc/self/maps``) and read or set their thread counts through ``ctypes``.
On other systems, or with another BLAS, they find nothing and do nothing.

Example::

    from nsjax.blas import limit_blas_threads, openblas_threads

    openblas_threads()            # {"libscipy_openblas64_-....so": 2, ...}
    with limit_blas_threads(1):   # one thread inside, the previous setting restored after
        ...

nsjax's own factorisations (``null_space``'s SVD, ``NullSpace.basis``) run inside
:func:`lapack_threads`: OpenBLAS capped at one thread for small factorisations, else at
the cores no other process is running on.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
from collections.abc import Callable, Iterator

__all__ = ["openblas_libs", "openblas_threads", "openblas_cores", "set_openblas_threads",
           "limit_blas_threads", "free_cpus", "lapack_threads", "SINGLE_THREAD_WORK"]

_Getter = Callable[[], int]
_Setter = Callable[[int], None]


def _loaded_openblas_paths() -> list[str]:
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f
                     if len(line.split()) >= 6 and "openblas" in line.split()[-1].lower()
                     and ".so" in line.split()[-1]}
    except OSError:
        return []
    return sorted(paths)


def _openblas_symbol(lib: ctypes.CDLL, name: str):
    """``lib``'s function ``name`` under any of OpenBLAS's symbol spellings, or None."""
    for prefix in ("scipy_openblas", "openblas"):
        for suffix in ("64_", ""):
            fn = getattr(lib, f"{prefix}_{name}{suffix}", None)
            if fn is not None:
                return fn
    return None


def _loaded_openblas() -> Iterator[tuple[str, ctypes.CDLL]]:
    import numpy  # noqa: F401  (load both BLAS builds before looking)
    import scipy.linalg  # noqa: F401

    for path in _loaded_openblas_paths():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        yield os.path.basename(path), lib


def openblas_libs() -> dict[str, tuple[_Getter, _Setter]]:
    """``{library file name: (get_num_threads, set_num_threads)}`` of every loaded OpenBLAS.

    Loads NumPy and SciPy's LAPACK first, so that both builds are found.  Empty where
    ``/proc/self/maps`` is unavailable or no OpenBLAS is loaded.
    """
    libs: dict[str, tuple[_Getter, _Setter]] = {}
    for name, lib in _loaded_openblas():
        get = _openblas_symbol(lib, "get_num_threads")
        put = _openblas_symbol(lib, "set_num_threads")
        if get is not None and put is not None:
            get.restype = ctypes.c_int
            libs[name] = (get, put)
    return libs


def openblas_cores() -> dict[str, str]:
    """``{library file name: core}``: the CPU kernels each loaded OpenBLAS runs (its
    ``get_corename``, e.g. ``"Haswell"``, ``"SkylakeX"``; ``OPENBLAS_CORETYPE`` sets it)."""
    cores = {}
    for name, lib in _loaded_openblas():
        fn = _openblas_symbol(lib, "get_corename")
        if fn is not None:
            fn.restype = ctypes.c_char_p
            cores[name] = (fn() or b"").decode(errors="replace")
    return cores


def openblas_threads() -> dict[str, int]:
    """Current thread count of each loaded OpenBLAS, by library file name."""
    return {name: int(get()) for name, (get, _) in openblas_libs().items()}


def set_openblas_threads(n: int) -> dict[str, int]:
    """Set every loaded OpenBLAS to ``n`` threads; returns the PREVIOUS counts."""
    old = {}
    for name, (get, put) in openblas_libs().items():
        old[name] = int(get())
        put(int(n))
    return old


@contextlib.contextmanager
def limit_blas_threads(n: int | None) -> Iterator[None]:
    """Cap every loaded OpenBLAS at ``n`` threads inside the block (``None``/``0``: no change).

    The previous counts are restored on exit, also when the block raises.
    """
    libs = openblas_libs() if n else {}
    old = {name: int(get()) for name, (get, _) in libs.items()}
    try:
        for _, put in libs.values():
            put(int(n))
        yield
    finally:
        for name, (_, put) in libs.items():
            put(old[name])


@functools.cache
def _libs_once() -> tuple[tuple[_Getter, _Setter], ...]:
    """:func:`openblas_libs` found once (NumPy's and SciPy's builds, loaded by then)."""
    return tuple(openblas_libs().values())


def free_cpus(loadavg: str | None = None, own_running: int | None = None) -> int:
    """Cores this process may use that no other process's runnable thread is on, >= 1.

    ``len(os.sched_getaffinity(0))`` minus the runnable threads of ``/proc/loadavg``'s 4th
    field (``running/total``; an instantaneous count, unlike the load averages) that are
    not this process's own.  Its own are counted in ``/proc/self/task`` (state ``R``): the
    caller, and OpenBLAS workers still spinning after the previous call -- the very threads
    the next call runs on, so counting them as busy would halve a 2-core machine's LAPACK
    speed after every NumPy matmul.  ``loadavg``, ``own_running``: that file's text and
    the process's runnable-thread count (for tests).  Without ``/proc``: all cores.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = max(1, cpus or 1)
    try:
        if loadavg is None:
            with open("/proc/loadavg") as f:
                loadavg = f.read()
        running = int(loadavg.split()[3].split("/")[0])
    except (OSError, IndexError, ValueError):
        return cpus
    if running <= 1:  # only the caller
        return cpus
    own = _own_running() if own_running is None else own_running
    return max(1, cpus - max(0, running - max(1, own)))


def _own_running() -> int:
    """Threads of this process in state ``R`` (running or runnable), >= 1: the caller."""
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 1
    count = 0
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # the thread ended meanwhile
            continue
        count += stat[stat.rindex(b")") + 2:][:1] == b"R"
    return max(1, count)


# Below this much work (units of ``m n min(m, n)`` for an (m, n) factorisation) one
# OpenBLAS thread is faster than several: a second thread's wake-up and spin-wait, beside
# XLA's threads and the other OpenBLAS build's, costs more than it saves (measured in
# docs/results/performance-null-basis.md, "Fourth session").
SINGLE_THREAD_WORK = 1e9


@contextlib.contextmanager
def lapack_threads(work: float | None = None) -> Iterator[None]:
    """Cap every loaded OpenBLAS inside the block: at one thread for ``work`` below
    :data:`SINGLE_THREAD_WORK`, else at :func:`free_cpus` threads.

    Multi-threaded OpenBLAS on oversubscribed cores spin-waits: a ``32 x 784`` null space
    took ~1 s instead of ~5 ms beside busy processes (and XLA's own threads).  With free
    cores the threads stay for large work (large SVDs gain from them).  ``work``: the
    factorisation's size in units of ``m n min(m, n)``; ``None``: unknown, free cores.
    JAX's CPU LAPACK calls SciPy's OpenBLAS, so the cap covers ``jnp.linalg`` too -- but
    only for work that *finishes* inside the block: block on the results before leaving
    it.  The counts are global to the process: another Python thread's NumPy call
    meanwhile also gets the cap.
    """
    libs = _libs_once()
    old = [int(get()) for get, _ in libs]
    cap = 1 if work is not None and work < SINGLE_THREAD_WORK else free_cpus()
    changed = [(put, n) for (_, put), n in zip(libs, old, strict=True) if n > cap]
    try:
        for put, _ in changed:
            put(cap)
        yield
    finally:
        for put, n in changed:
            put(n)
