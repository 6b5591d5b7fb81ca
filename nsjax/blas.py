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
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Callable, Iterator

__all__ = ["openblas_libs", "openblas_threads", "set_openblas_threads", "limit_blas_threads"]

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


def openblas_libs() -> dict[str, tuple[_Getter, _Setter]]:
    """``{library file name: (get_num_threads, set_num_threads)}`` of every loaded OpenBLAS.

    Loads NumPy and SciPy's LAPACK first, so that both builds are found.  Empty where
    ``/proc/self/maps`` is unavailable or no OpenBLAS is loaded.
    """
    import numpy  # noqa: F401  (load both BLAS builds before looking)
    import scipy.linalg  # noqa: F401

    libs: dict[str, tuple[_Getter, _Setter]] = {}
    for path in _loaded_openblas_paths():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", ""):
                get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                put = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                if get is not None and put is not None:
                    get.restype = ctypes.c_int
                    libs[os.path.basename(path)] = (get, put)
                    break
            if os.path.basename(path) in libs:
                break
    return libs


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
