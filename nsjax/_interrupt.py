"""Ctrl-C for long runs: an interrupt that always reaches the caller, and a clean exit.

Two ways a plain ``KeyboardInterrupt`` goes wrong in a JAX program:

* **Swallowed.**  Python runs a signal handler at the next bytecode of the main thread,
  which may be Python code called from C++ or from the garbage collector (JAX's
  ``_xla_gc_callback``).  An exception raised there is printed as "Exception ignored in
  ..." and discarded: the run goes on to its end as if Ctrl-C had not been pressed.
* **A crash on the way out.**  An interrupt raised inside orbax's checkpoint writer leaves
  its worker threads mid-write, and the interpreter's shutdown then frees the runtime under
  them: a segmentation fault after the "interrupted" line.  Likewise for a computation still
  running on XLA's threads (JAX dispatches asynchronously).

:class:`SigintGuard` raises ``KeyboardInterrupt`` on SIGINT and delivers it again every
``redeliver_s`` seconds until the caller acknowledges it (:meth:`SigintGuard.acknowledge`);
:func:`deferred` holds SIGINT back during a section that must not be cut (a checkpoint
write) and delivers it after; :func:`settle` waits for every live array, i.e. for the
computations that produce them.
"""

from __future__ import annotations

import _thread
import contextlib
import signal
import threading

import jax

__all__ = ["SigintGuard", "deferred", "settle"]


class SigintGuard:
    """Context manager: SIGINT raises ``KeyboardInterrupt`` in the main thread, again every
    ``redeliver_s`` seconds until :meth:`acknowledge` (so a swallowed one is not lost).
    Outside the main thread it does nothing (signals are only delivered there)."""

    def __init__(self, redeliver_s: float = 1.0):
        self.redeliver_s = float(redeliver_s)
        self._pending = threading.Event()
        self._done = threading.Event()
        self._previous = None

    def __enter__(self) -> SigintGuard:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        self.acknowledge()
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    @property
    def interrupted(self) -> bool:
        """Whether SIGINT arrived inside the guard."""
        return self._pending.is_set()

    def acknowledge(self) -> None:
        """The interrupt has reached the caller: stop delivering it."""
        self._done.set()

    def _handler(self, signum, frame):
        if self._done.is_set():
            return
        if not self._pending.is_set():
            self._pending.set()
            threading.Thread(target=self._redeliver, name="nsjax-sigint", daemon=True).start()
        raise KeyboardInterrupt

    def _redeliver(self) -> None:
        while not self._done.wait(self.redeliver_s):
            _thread.interrupt_main(signal.SIGINT)  # runs _handler in the main thread


@contextlib.contextmanager
def deferred():
    """Hold SIGINT back inside the block; if it arrived, deliver it (to the handler that was
    in place) right after.  Outside the main thread, or when SIGINT is not handled by
    Python, the block runs unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if not callable(previous):  # SIG_IGN / SIG_DFL / None: nothing raises in Python
        yield
        return
    caught: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            _thread.interrupt_main(signal.SIGINT)  # runs ``previous`` at the next bytecode


def settle() -> None:
    """Wait until no computation is running on JAX's threads (block on every live array),
    so that the process can exit without freeing the runtime under a running kernel."""
    for a in jax.live_arrays():
        try:
            a.block_until_ready()
        except Exception:  # noqa: BLE001 - a failed or deleted computation is settled too
            pass
