"""The fused CPU projection kernel (``nsjax/_kernels/project_cpu.cc``), behind a JAX op.

XLA:CPU computes ``x - (x R) R^T`` as two Eigen matmuls and a subtraction: three passes
over the batch, the second matmul (contraction length ``r``) at about half the GEMM rate.
The kernel projects each tile of rows while it is in cache (one read of ``x``, one write).
Measured speed: ``benchmarks/README.md`` (``python -m benchmarks.projection_60k``).

:func:`project_rows` is what :mod:`nsjax._nullspace` calls.  It is

* **float32 accuracy**: float32 FMAs (the same arithmetic as ``Precision.HIGHEST``,
  summed in another order: the results agree with XLA's to a few ulps of ``|x|``), or, on
  a CPU with AMX-BF16, a basis of 96 or more (padded) columns and 4096 or more rows,
  Intel AMX tiles with each float32 operand split exactly into three bfloat16 pieces and
  the six products that reach float32's precision summed in float32
  (``nsjax/_kernels/project_amx.inc``; the same error bound against float64 as the FMA
  path, checked by the tests), when asked for with ``NSJAX_CPU_KERNEL=amx``.  By default
  the FMA code runs there too, so the results are the same bits on every AVX-512 CPU and in
  every process: the tiles pay only where they run near their nominal rate, which differs
  between hosts and, on a VM, from moment to moment (:func:`amx_probe` reports it);
* **CPU only**: under ``jit`` for another platform, ``lax.platform_dependent`` lowers
  XLA's matmuls instead, so one traced function serves CPU, GPU and TPU;
* **differentiable** (``custom_jvp``: tangents go through XLA's matmuls, reverse mode by
  transposing them) and **vmappable** (the kernel takes a batch of bases);
* **fast in a plain process**: as it writes a large output (>= 4 MiB) the kernel asks for
  transparent huge pages on it (``madvise(MADV_HUGEPAGE)``, Linux), as NumPy does for its
  arrays.  XLA's fresh buffers are otherwise faulted in 4 KiB at a time where the
  kernel's THP mode is ``madvise``: 45,938 faults per (60000, 784) float32 output, ~970
  with the advice; no environment variable or allocator tuning needed.  The first touch of
  each 2 MiB region is timed, and once huge pages have cost more than 4 KiB pages would
  (1 ms per region, plus a slack of 20), the rest of the output goes without: on a VM that
  hands idle memory back to its host (free page reporting), a huge page of such memory
  took ~13 ms to fault in, where 4 KiB pages took ~0.8 ms per 2 MiB
  (:func:`advice_stats`).  With ``inplace=True`` the output takes a donated ``x``'s buffer
  instead (no fresh buffer).

The library is built by ``pip install`` from the C++ source (``setup.py``, an optional
extension: without a compiler nsjax installs and uses XLA's matmuls).  :func:`available`
says whether it is in use; ``NSJAX_CPU_KERNEL=0`` in the environment switches it off,
``NSJAX_CPU_KERNEL=avx2`` keeps it to AVX2 on an AVX-512 machine,
``NSJAX_CPU_KERNEL=avx512`` to AVX-512 (the default's arithmetic) on an AMX machine, and
``NSJAX_CPU_KERNEL=amx`` takes the AMX tiles for wide bases (to test and measure those
paths, or for their speed where :func:`amx_probe` finds the tiles fast; the two kernels'
last bits differ).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.util
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["available", "info", "isa_capped", "amx_probe", "set_hugepages",
           "set_fault_allowance_ms", "advice_stats", "supports", "worthwhile", "project_rows",
           "project_rows_xla", "project_patches", "MAX_COLS"]

TARGET = "nsjax_project_f32"
PATCH_TARGET = "nsjax_project_patches_f32"
LANES = 16  # basis columns are zero-padded to a multiple of this (the AVX-512 width)
MAX_COLS = 256  # the kernel's limit on (padded) basis columns; wider bases use XLA
HIGHEST = lax.Precision.HIGHEST
_ISA_NAMES = {0: "none", 1: "avx2+fma", 2: "avx512f", 3: "avx512f+amx-bf16"}
_ISA_LEVELS = {"avx2": 1, "avx512": 2, "amx": 3}
_ENV_CAPS = ("avx2", "avx512", "amx")  # NSJAX_CPU_KERNEL values that set the instruction set
DEFAULT_MODES = ("", "1", "true", "on", "yes")  # NSJAX_CPU_KERNEL values meaning the default


def _env_mode() -> str:
    return os.environ.get("NSJAX_CPU_KERNEL", "1").strip().lower()


def _allowed_level() -> int:
    """The highest instruction-set level ``NSJAX_CPU_KERNEL`` allows (3: up to AMX)."""
    mode = _env_mode()
    return _ISA_LEVELS[mode] if mode in _ENV_CAPS else _ISA_LEVELS["amx"]


def _amx_mode() -> int:
    """Whether ``NSJAX_CPU_KERNEL`` asks wide bases to take the AMX tiles: 1 (``amx``) or 0."""
    return 1 if _env_mode() == "amx" else 0


_LIB: list = []  # the loaded library, once _load() succeeded


@functools.lru_cache(maxsize=1)
def _load() -> tuple[bool, str]:
    """Find, load and register the kernel once; ``(ok, why)``."""
    mode = _env_mode()
    if mode in ("0", "false", "off", "no"):
        return False, "switched off by NSJAX_CPU_KERNEL"
    if mode not in (*DEFAULT_MODES, *_ENV_CAPS):
        raise ValueError(f"NSJAX_CPU_KERNEL={mode!r}: expected 0 (off), 1 (on, the default), "
                         "avx2 (on, AVX2 code only), avx512 (on, no AMX) or amx (on, AMX "
                         "tiles for wide bases)")
    spec = importlib.util.find_spec("nsjax._project_cpu")
    if spec is None or not spec.origin:
        return False, "the extension nsjax._project_cpu was not built (no C++ compiler at install?)"
    try:
        lib = ctypes.CDLL(spec.origin)
        isa = int(lib.nsjax_project_cap_isa(_allowed_level()) if mode in _ENV_CAPS
                  else lib.nsjax_project_isa())
    except OSError as e:  # pragma: no cover - a broken build
        return False, f"could not load {spec.origin}: {e}"
    if isa == 0:
        return False, "this CPU has neither AVX-512F nor AVX2+FMA"
    if hasattr(lib, "nsjax_project_amx_mode"):
        lib.nsjax_project_amx_mode(_amx_mode())
    _LIB.append(lib)
    jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(lib.NsjaxProjectF32), platform="cpu")
    if hasattr(lib, "NsjaxProjectPatchesF32"):
        jax.ffi.register_ffi_target(PATCH_TARGET, jax.ffi.pycapsule(lib.NsjaxProjectPatchesF32),
                                    platform="cpu")
    return True, f"{_ISA_NAMES.get(isa, isa)} ({os.path.basename(spec.origin)})"


def available() -> bool:
    """Whether :func:`project_rows` uses the fused kernel on CPU (else XLA's matmuls)."""
    return _load()[0]


def _symbol(name: str):
    """The loaded library's function ``name``, or None (kernel not in use, or a build
    without it)."""
    return getattr(_LIB[0], name, None) if available() else None


def set_hugepages(on: bool) -> bool:
    """Whether the kernel asks for transparent huge pages on its large outputs (default
    on; ``madvise(MADV_HUGEPAGE)`` on Linux, before it writes them); returns the previous
    setting.  For measuring the difference (``benchmarks``), not a user setting."""
    fn = _symbol("nsjax_project_set_hugepages")
    return False if fn is None else bool(fn(int(bool(on))))


_NEVER_NS = 1 << 62  # an allowance no fault reaches: the advice never ends


def set_fault_allowance_ms(ms: float) -> float:
    """How long (ms, default 1) a 2 MiB region of a large output may take to fault in
    before the kernel counts huge pages as the slower choice and stops asking for them
    (with a slack of 20 such allowances); returns the previous value.  ``0`` stops at the
    first probe, ``inf`` never (every region advised, as NumPy does).  For tests and
    benchmarks, not a user setting."""
    fn = _symbol("nsjax_project_set_fault_allowance_ns")
    if fn is None:
        return math.nan
    if not ms >= 0:
        raise ValueError(f"set_fault_allowance_ms: expected ms >= 0, got {ms}")
    fn.restype, fn.argtypes = ctypes.c_int64, [ctypes.c_int64]
    prev = int(fn(_NEVER_NS if math.isinf(ms) else int(round(ms * 1e6))))
    return math.inf if prev >= _NEVER_NS else prev / 1e6


def advice_stats() -> dict[str, int]:
    """The huge-page advice of the kernel's last call that gave any (an output >= 4 MiB,
    not in place): ``regions`` (whole 2 MiB pages in the output), ``probed`` (their first
    touch timed), ``stopped`` (1 if the probes went over budget, having cost more than 4 KiB
    pages would: the regions after that probe, if any, got no huge pages).  All 0 before
    such a call."""
    fn = _symbol("nsjax_project_advice_stats")
    if fn is None:
        return {"regions": 0, "probed": 0, "stopped": 0}
    out = (ctypes.c_int64 * 3)()
    fn(out)
    return dict(zip(("regions", "probed", "stopped"), (int(v) for v in out)))


@contextlib.contextmanager
def isa_capped(isa: str):
    """Inside the block the kernel uses at most instruction set ``isa`` (``"avx2"``,
    ``"avx512"`` or ``"amx"``), and never more than the CPU has or ``NSJAX_CPU_KERNEL``
    allows; after it, that allowance again.  With ``"amx"``, wide bases take the AMX kernel
    (where the CPU has it) as with ``NSJAX_CPU_KERNEL=amx``.  Yields the level in use
    (:data:`_ISA_NAMES`), 0 when the kernel is not.  For tests and benchmarks that compare
    the code paths in one process, not a user setting."""
    if isa not in _ISA_LEVELS:
        raise ValueError(f"isa_capped: expected one of {sorted(_ISA_LEVELS)}, got {isa!r}")
    fn = _symbol("nsjax_project_cap_isa")
    if fn is None:
        yield 0
        return
    mode = _symbol("nsjax_project_amx_mode")
    allowed = _allowed_level()
    try:
        if mode is not None and isa == "amx":
            mode(1)
        yield int(fn(min(_ISA_LEVELS[isa], allowed)))
    finally:
        fn(allowed)
        if mode is not None:
            mode(_amx_mode())


def amx_probe() -> dict | None:
    """How fast the AMX tiles run here, and whether wide bases take them; None where the
    kernel or the CPU (or Linux) gives no AMX.

    The AMX kernel pays only where the tiles run near their nominal rate, which differs
    between hosts of one CPU model and, on a VM, from one moment to the next
    (``docs/results/performance.md``, twelfth and thirteenth sessions), so it runs only when
    asked for (``NSJAX_CPU_KERNEL=amx``).  The first call of this function times
    register-only tile products against the AVX-512 FMA peak, best of five rounds of ~0.5 ms
    each, once per process.  Returns ``{"ratio": r, "min_ratio": t, "uses_amx": bool}``:
    ``r`` is the tiles' peak over the FMA peak, in float32 multiply-adds (nominal 2.67),
    ``t`` the ratio from which the AMX kernel pays (2), ``uses_amx`` whether wide bases take
    the tiles now (``NSJAX_CPU_KERNEL=amx`` or :func:`isa_capped`), whatever ``r``."""
    fn = _symbol("nsjax_project_amx_probe")
    if fn is None:
        return None
    fn.restype = ctypes.c_double
    uses, min_ratio = ctypes.c_int(), ctypes.c_double()
    ratio = float(fn(ctypes.byref(uses), ctypes.byref(min_ratio)))
    if ratio <= 0:
        return None
    return {"ratio": ratio, "min_ratio": float(min_ratio.value), "uses_amx": bool(uses.value)}


def info() -> str:
    """One line on the kernel: its instruction set and library, or why it is not in use;
    and the AMX tiles' speed where the CPU has them and ``NSJAX_CPU_KERNEL`` allows them."""
    ok, why = _load()
    if not ok:
        return f"fused CPU kernel not in use: {why}"
    probe = amx_probe() if _allowed_level() >= _ISA_LEVELS["amx"] else None
    if probe is not None:
        why += (f"; AMX tiles at {probe['ratio']:.2f}x the FMA peak now (from "
                f"{probe['min_ratio']:g}x they pay): "
                + ("used for wide bases" if probe["uses_amx"]
                   else "not used (NSJAX_CPU_KERNEL=amx takes them for wide bases)"))
    return f"fused CPU kernel: {why}"


@functools.lru_cache(maxsize=1)
def _one_cpu_device() -> bool:
    return len(jax.devices("cpu")) == 1


def supports(basis: jax.Array) -> bool:
    """Whether the kernel takes this ``(n, c)`` basis (float32, ``1 <= c <= MAX_COLS``).

    Only with a single CPU device: the custom call has no sharding rule, so with several
    (``--xla_force_host_platform_device_count``) nsjax keeps XLA's matmuls, which XLA
    partitions over a batch-sharded ``x`` (:mod:`nsjax.sharding`).
    """
    c = basis.shape[-1]
    return (available() and basis.dtype == jnp.float32 and basis.ndim == 2
            and 1 <= -(-c // LANES) * LANES <= MAX_COLS and _one_cpu_device())


# The kernel re-reads the basis for every tile of 6 rows, so it pays while the basis stays
# in cache; XLA's GEMM blocks for large ones.  Measured on 2 cores (python -m benchmarks, the
# projection sweeps; nsjax vs kernel=False; with the earlier 8-row tile, which the current
# one matches or beats): the kernel wins for every skinny basis
# (c <= 32: 1.3-1.9x up to n = 12288, 1.5 MB) and up to ~1 MB otherwise (n = 784,
# c = 256: 1.2-1.5x); beyond (n = 3072, c = 128 or 256) the two tie within noise, or XLA
# wins for a few rows (0.5x at one row: XLA splits the matvec over both cores).
SKINNY_COLS = 32
CACHED_BASIS_BYTES = 1 << 20


def worthwhile(basis: jax.Array) -> bool:
    """Whether the kernel beats XLA's matmuls for this ``(n, c)`` basis (measured rule)."""
    n, c = basis.shape[-2:]
    cp = -(-c // LANES) * LANES
    return cp <= SKINNY_COLS or n * cp * 4 <= CACHED_BASIS_BYTES


def project_rows_xla(x: jax.Array, basis: jax.Array, null_part: bool):
    """Reference: ``x - (x B) B^T`` (``null_part``) or ``(x B) B^T``, and the coefficients.

    ``x``: ``(..., n)``, ``basis``: ``(n, c)``.  Returns ``(out, coef)``: ``(..., n)`` and
    ``(..., c)``.
    """
    coef = jnp.matmul(x, basis, precision=HIGHEST)
    perp = jnp.matmul(coef, basis.T, precision=HIGHEST)
    return (x - perp if null_part else perp), coef


def _kernel_call(x: jax.Array, basis: jax.Array, null_part: bool, rows: int,
                 inplace: bool = False):
    """``x``: any shape of ``rows`` rows of ``n`` values (row-major, e.g. ``(M, n)`` or
    ``(B, H, W, C)``), ``basis``: ``(n, c)`` -> ``(out, bad uint8 (rows,))``, ``out``
    shaped like ``x``.

    The kernel writes ``out`` in ``x``'s shape: XLA copies a reshaped custom-call result
    that leaves the computation (an extra pass into a fresh buffer, e.g. for grayscale
    images ``(B, H, W, 1)``), so the caller passes ``x`` already in the result's shape
    (reshaping an input is free).

    Under ``vmap`` (``vmap_method="expand_dims"``) an unbatched basis reaches the kernel
    with size-1 batch dims, which it broadcasts without copying.

    ``inplace``: the output aliases ``x`` (``input_output_aliases={0: 0}``), so XLA writes
    the result into ``x``'s buffer when ``x`` is dead afterwards: a donated argument
    (``jax.jit(..., donate_argnums=...)``) or a temporary of the enclosing computation.  The
    kernel reads each row tile before it writes it, and each output row depends only on
    the same input row, so projecting in place is exact.  Where ``x`` is still needed
    (a parameter that is not donated, or used later) XLA copies it first: one extra pass,
    so this is for callers that know ``x`` is donated.  Under ``vmap`` every operand is
    broadcast (``broadcast_all``) so that ``x`` and the output have the same shape.
    """
    n, c = basis.shape
    rp = -(-c // LANES) * LANES
    r = jnp.pad(basis, ((0, 0), (0, rp - c)))  # zero columns add exact zeros
    call = jax.ffi.ffi_call(
        TARGET,
        (jax.ShapeDtypeStruct(x.shape, jnp.float32), jax.ShapeDtypeStruct((rows,), jnp.uint8)),
        vmap_method="broadcast_all" if inplace else "expand_dims",
        input_output_aliases={0: 0} if inplace else None,
    )
    return call(x, r, r.T, null_part=bool(null_part))


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4))
def _fused(x: jax.Array, basis: jax.Array, null_part: bool, inplace: bool,
           shape: tuple[int, ...]):
    def cpu(x, basis):
        rows = math.prod(x.shape[:-1])
        out, bad = _kernel_call(x.reshape(shape), basis, null_part, rows, inplace)
        return out, jnp.all(bad == 0)

    def other(x, basis):
        out, coef = project_rows_xla(x, basis, null_part)
        return out.reshape(shape), jnp.all(jnp.isfinite(coef))

    return lax.platform_dependent(x, basis, cpu=cpu, default=other)


@_fused.defjvp
def _fused_jvp(null_part, inplace, shape, primals, tangents):
    out = _fused(*primals, null_part, inplace, shape)
    dout = jax.jvp(lambda x, b: project_rows_xla(x, b, null_part)[0], primals, tangents)[1]
    return out, (dout.reshape(out[0].shape), np.zeros((), jax.dtypes.float0))


def project_rows(x: jax.Array, basis: jax.Array, null_part: bool, inplace: bool = False,
                 shape: tuple[int, ...] | None = None):
    """``x - (x B) B^T`` (``null_part``) or ``(x B) B^T``, fused on CPU.

    Args:
      x: ``(..., n)`` float32, or float16/bfloat16: those are cast up to float32 first
        (exactly: every float16/bfloat16 value is a float32 value) and the result is
        float32, as XLA's promotion of ``x`` with a float32 basis gives.
      basis: ``(n, c)`` float32 with orthonormal columns, ``1 <= c <= MAX_COLS`` (check
        with :func:`supports`).
      null_part: which side to return.
      inplace: let the result take ``x``'s buffer (see :func:`_kernel_call`): free when
        ``x`` is donated to the enclosing ``jit`` or is a temporary there, one extra copy
        of ``x`` otherwise.  Off by default: a plain call keeps ``x``.
      shape: the shape of ``out``, ``x.shape`` by default; any shape of as many values
        (e.g. the images' ``(B, H, W, C)`` for ``x`` flattened to ``(B, H W C)``).  The
        kernel writes the result in that shape, so XLA does not copy it (it copies a
        reshaped kernel result that a compiled function returns).

    Returns:
      ``(out, finite)``: ``shape`` (default ``(..., n)``) float32 and a scalar bool, False
      iff a coefficient ``x B`` was NaN/inf (so iff ``x`` held NaN/inf, or was large enough
      to overflow).
    """
    if not supports(basis):
        raise ValueError(f"the fused kernel takes a float32 (n, c) basis with 1 <= c <= "
                         f"{MAX_COLS}; got {basis.dtype} {basis.shape} ({info()})")
    if x.dtype in (jnp.float16, jnp.bfloat16):
        x = x.astype(jnp.float32)
    if x.dtype != jnp.float32 or x.shape[-1] != basis.shape[0]:
        raise ValueError(f"expected float32 (or float16/bfloat16) x of shape "
                         f"(..., {basis.shape[0]}), got {x.dtype} {x.shape}")
    shape = tuple(x.shape) if shape is None else tuple(int(d) for d in shape)
    if math.prod(shape) != x.size:
        raise ValueError(f"shape {shape} has {math.prod(shape)} values; x {x.shape} has "
                         f"{x.size}")
    return _fused(x, basis, bool(null_part), bool(inplace), shape)


# ------------------------------------------------------------------ patch layout


def _patchify(x: jax.Array, patch: tuple[int, int]) -> jax.Array:
    """``(B, H, W, C)`` -> ``(B, P, ph pw C)`` (the row layout of a patch null space)."""
    b, h, w, c = x.shape
    ph, pw = patch
    x = x.reshape(b, h // ph, ph, w // pw, pw, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // ph) * (w // pw), ph * pw * c)


def _unpatchify(p: jax.Array, shape: tuple[int, ...], patch: tuple[int, int]) -> jax.Array:
    b, h, w, c = shape
    ph, pw = patch
    x = p.reshape(b, h // ph, w // pw, ph, pw, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(shape)


def project_patches_xla(x: jax.Array, basis: jax.Array, patch: tuple[int, int],
                        null_part: bool) -> jax.Array:
    """Reference for :func:`project_patches`: patchify, project, unpatchify with XLA."""
    out, _ = project_rows_xla(_patchify(x, patch), basis, null_part)
    return _unpatchify(out, x.shape, patch)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def _fused_patches(x: jax.Array, basis: jax.Array, patch: tuple[int, int], null_part: bool):
    def cpu(x, basis):
        c = basis.shape[1]
        rp = -(-c // LANES) * LANES
        r = jnp.pad(basis, ((0, 0), (0, rp - c)))
        b, h, w, _ = x.shape
        call = jax.ffi.ffi_call(
            PATCH_TARGET,
            (jax.ShapeDtypeStruct(x.shape, jnp.float32),
             jax.ShapeDtypeStruct((b * (h // patch[0]) * (w // patch[1]),), jnp.uint8)),
            vmap_method="sequential",
        )
        out, bad = call(x, r, r.T, null_part=bool(null_part), ph=np.int64(patch[0]),
                        pw=np.int64(patch[1]))
        return out, jnp.all(bad == 0)

    def other(x, basis):
        out, coef = project_rows_xla(_patchify(x, patch), basis, null_part)
        return _unpatchify(out, x.shape, patch), jnp.all(jnp.isfinite(coef))

    return lax.platform_dependent(x, basis, cpu=cpu, default=other)


@_fused_patches.defjvp
def _fused_patches_jvp(patch, null_part, primals, tangents):
    out = _fused_patches(*primals, patch, null_part)
    dout = jax.jvp(lambda x, b: project_patches_xla(x, b, patch, null_part), primals,
                   tangents)[1]
    return out, (dout, np.zeros((), jax.dtypes.float0))


def supports_patches() -> bool:
    """Whether this build has the patch-layout entry (:func:`project_patches`)."""
    return _symbol("NsjaxProjectPatchesF32") is not None


def project_patches(x: jax.Array, basis: jax.Array, patch: tuple[int, int],
                    null_part: bool):
    """:func:`project_rows` for a patch null space (stride = kernel size), in image layout.

    ``x``: ``(B, H, W, C)`` float32 images, ``basis``: ``(ph pw C, c)`` (the patch row
    basis), ``patch``: ``(ph, pw)``.  Equal to unpatchifying
    ``project_rows(patchify(x), basis, null_part)``, but the kernel gathers each tile of
    patches from the images and scatters the result back: no transposed copy of ``x`` or
    of the output (two passes over the batch, and a fresh XLA buffer, saved).  Returns
    ``(out (B, H, W, C), finite)``.
    """
    ph, pw = (int(patch[0]), int(patch[1]))
    if not (supports(basis) and supports_patches()):
        raise ValueError(f"the patch kernel is not available for this basis ({info()})")
    if x.dtype in (jnp.float16, jnp.bfloat16):
        x = x.astype(jnp.float32)
    if (x.dtype != jnp.float32 or x.ndim != 4 or x.shape[1] % ph or x.shape[2] % pw
            or ph * pw * x.shape[3] != basis.shape[0]):
        raise ValueError(f"expected float32 images (B, H, W, C) tiled by {ph}x{pw} patches of "
                         f"{basis.shape[0]} values, got {x.dtype} {x.shape}")
    return _fused_patches(x, basis, (ph, pw), bool(null_part))
