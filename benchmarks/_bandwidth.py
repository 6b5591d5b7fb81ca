"""Memory bandwidth of the projection cases: achieved GB/s and, on accelerators with HBM,
the fraction of the device's nominal HBM bandwidth.

The bytes counted are the least any out-of-place projection moves: ``x`` read once, the
result written once, and the basis (``n x side`` values, the side the projection goes
through) read once, ``(2 B n + n side) itemsize``.  Bytes over the median time is the
bandwidth a call achieves, a lower bound on its real traffic.  On a GPU or TPU its ratio to
the nominal HBM bandwidth says how close the call runs to the memory system's limit, the
one that bounds a memory-bound projection there.  The peaks are the vendors' data-sheet
figures (decimal GB/s) for the HBM devices whose kinds JAX reports; a device kind not
listed (GDDR cards, every CPU) gets the achieved GB/s without a ratio.
"""

from __future__ import annotations

import re

# (pattern searched in jax's ``device.device_kind``, case-insensitive; nominal HBM GB/s),
# first match wins
HBM_PEAK_GBPS: tuple[tuple[str, float], ...] = (
    (r"\bH200\b", 4800.0),                  # "NVIDIA H200" (141 GB HBM3e)
    (r"\bH100\b(?=.*\bNVL\b)", 3900.0),
    (r"\bH100\b(?=.*\bPCIe\b)", 2000.0),
    (r"\bH100\b", 3350.0),                  # "NVIDIA H100 80GB HBM3" (SXM5)
    (r"\bA100\b(?=.*80GB)(?=.*PCIe)", 1935.0),
    (r"\bA100\b(?=.*80GB)", 2039.0),        # "NVIDIA A100-SXM4-80GB", "A100-SXM-80GB"
    (r"\bA100\b", 1555.0),                  # the 40 GB SXM4 and PCIe cards
    (r"\bV100\b", 900.0),
    (r"^TPU v4$", 1200.0),
    (r"^TPU v5 lite$", 819.0),               # v5e
    (r"^TPU v5p?$", 2765.0),                 # v5p
    (r"^TPU v6 lite$", 1640.0),              # v6e (Trillium)
)


def hbm_peak_gbps(platform: str, device_kind: str) -> float | None:
    """The nominal HBM bandwidth (GB/s) of a ``platform`` (``jax.Device.platform``) device
    of this ``device_kind``, or None (a CPU, or a device kind the table does not list)."""
    if platform not in ("gpu", "cuda", "rocm", "tpu"):
        return None
    for pattern, gbps in HBM_PEAK_GBPS:
        if re.search(pattern, device_kind, re.IGNORECASE):
            return gbps
    return None


def projection_bytes(rows: int, n: int, itemsize: int, basis_values: int = 0) -> int:
    """Bytes an out-of-place projection of ``(rows, n)`` values must move: x read once, the
    result written once, the basis's ``basis_values`` values read once."""
    return (2 * rows * n + basis_values) * itemsize


def bandwidth(medians_ms: dict[str, float], nbytes: int, peak_gbps: float | None) -> dict:
    """``{"bytes", "hbm_peak_gbps", "variants": {name: {"gbps", "of_hbm_peak"}}}`` for the
    timed variants ``medians_ms`` (name -> median ms), each moving ``nbytes``;
    ``of_hbm_peak`` is None without a peak."""
    out = {}
    for name, ms in medians_ms.items():
        gbps = nbytes / (ms * 1e-3) / 1e9 if ms > 0 else None
        out[name] = {"gbps": gbps,
                     "of_hbm_peak": gbps / peak_gbps if gbps and peak_gbps else None}
    return {"bytes": nbytes, "hbm_peak_gbps": peak_gbps, "variants": out}


def describe(bw: dict, name: str = "nsjax") -> str:
    """``"12.3 GB/s"`` or ``"2160.0 GB/s (45% of HBM peak)"`` for variant ``name``; ``"-"``
    where it has no figure."""
    v = bw["variants"].get(name) or {}
    if v.get("gbps") is None:
        return "-"
    text = f"{v['gbps']:.1f} GB/s"
    if v.get("of_hbm_peak") is not None:
        text += f" ({v['of_hbm_peak']:.0%} of HBM peak)"
    return text
