"""The sweeps: which sizes each group runs in ``--quick``, default and ``--full`` mode.

The default sweep is sized for < 10 minutes on 2 CPU cores, so it caps two things and the
output says so: the null-space sizes stop at 256 x 3072 (``--full`` goes on to 512 x 4096,
1024 x 4096, 2048 x 8192 and 4096 x 16384: a dense float32 SVD of 4096 x 16384 takes
minutes on a CPU), and n = 3072 batches stop at 10^4 rows (``--full``: 10^5).  Baselines whose
estimated single call exceeds ``--max-call-s`` are skipped with a ``skipped:`` row, never
silently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

GEMM_SIZE = 2048  # the square GEMM whose rate sets the flops floor (``--quick``: 1024)

GROUPS = (
    "projection-60k",
    "projection-batch",
    "projection-rank",
    "projection-n",
    "null-space",
    "stego",
    "invariance",
    "conv-null-space",
    "conv-projection",
    "devices",
)

@dataclass(frozen=True)
class ConvSpec:
    """One convolutional first layer (``benchmarks/_conv_cases.py``); no jax here: the
    runner re-executes itself before jax is imported (``--devices``, hugepages)."""

    name: str
    input_shape: tuple[int, int, int]
    kernel_shape: tuple[int, int, int, int]  # (kh, kw, cin, cout), Flax layout
    strides: int
    padding: str
    batch: int

    @property
    def n(self) -> int:
        return math.prod(self.input_shape)

    @property
    def is_patch(self) -> bool:
        kh, kw = self.kernel_shape[:2]
        return self.padding == "VALID" and self.strides == kh == kw

    def params(self) -> dict:
        return {"input_shape": list(self.input_shape), "kernel_shape": list(self.kernel_shape),
                "strides": self.strides, "padding": self.padding, "B": self.batch, "n": self.n}



# First layers of the CNN family (issue 5): the paper's Lemma B.1 case, a small patch
# embedding, a SAME layer (no null space: construction only), and ViT patch embeddings.
_VALID_3X3 = ConvSpec("1 kernel 3x3 VALID 28x28x1", (28, 28, 1), (3, 3, 1, 1), 1, "VALID",
                      60_000)
_PATCH_4 = ConvSpec("8 kernels 4x4 stride 4 28x28x1", (28, 28, 1), (4, 4, 1, 8), 4, "VALID",
                    60_000)
_SAME_3X3 = ConvSpec("6 kernels 3x3 SAME 28x28x1", (28, 28, 1), (3, 3, 1, 6), 1, "SAME", 0)
_VIT_TI = ConvSpec("ViT-Ti/16 patch embedding 224x224x3", (224, 224, 3), (16, 16, 3, 192), 16,
                   "VALID", 256)
_VIT_S = ConvSpec("ViT-S/16 patch embedding 224x224x3", (224, 224, 3), (16, 16, 3, 384), 16,
                  "VALID", 256)


@dataclass
class Plan:
    null_space: list[tuple[int, int]]
    batch: list[tuple[int, int, list[int]]]  # (n, r, batch sizes)
    rank: list[tuple[int, int, list[int]]]  # (n, B, ranks)
    n_sweep: tuple[int, int, list[int]]  # (r, B, input sizes n)
    acceptance: tuple[int, int, int]  # (B, n, r)
    acceptance_repeats: int
    stego_batch: int
    invariance_probes: int
    devices_batch: int
    conv_null: list[ConvSpec] = field(default_factory=list)
    conv_projection: list[ConvSpec] = field(default_factory=list)
    caps: list[str] = field(default_factory=list)
    gemm_size: int = GEMM_SIZE


def make_plan(mode: str) -> Plan:
    """``mode`` is ``"quick"``, ``"default"`` or ``"full"``."""
    if mode == "quick":
        return Plan(
            null_space=[(32, 784), (64, 256)],
            batch=[(784, 32, [1, 100, 1000])],
            rank=[(784, 1000, [32, 128])],
            n_sweep=(32, 1000, [256, 784]),
            acceptance=(6000, 784, 32),
            acceptance_repeats=3,
            stego_batch=64,
            invariance_probes=8,
            devices_batch=4096,
            conv_null=[_VALID_3X3, ConvSpec("patch 16, width 192, 64x64x3", (64, 64, 3),
                                            (16, 16, 3, 192), 16, "VALID", 0)],
            conv_projection=[ConvSpec(_VALID_3X3.name, (28, 28, 1), (3, 3, 1, 1), 1, "VALID",
                                      500),
                             ConvSpec("patch 16, width 192, 64x64x3", (64, 64, 3),
                                      (16, 16, 3, 192), 16, "VALID", 8)],
            caps=["quick mode: tiny sizes for a smoke test; the acceptance case runs at "
                  "B = 6000 (not 60000), so no acceptance verdict is given; the flops "
                  f"floor's GEMM is 1024^3 (not {GEMM_SIZE}^3)"],
            gemm_size=1024,
        )
    full = mode == "full"
    plan = Plan(
        null_space=[(32, 784), (128, 784), (256, 3072)],
        batch=[
            (784, 32, [1, 10, 100, 1000, 10_000, 100_000, 1_000_000]),
            (3072, 256, [1, 10, 100, 1000, 10_000]),
        ],
        rank=[(784, 10_000, [32, 64, 128, 256, 512]),
              (3072, 1024, [32, 64, 128, 256, 512, 1024])],
        n_sweep=(32, 4096, [784, 1568, 3072, 6144, 12288]),
        acceptance=(60_000, 784, 32),
        acceptance_repeats=11,
        stego_batch=10_000,
        invariance_probes=64,
        devices_batch=60_000,
        conv_null=[_VALID_3X3, _PATCH_4, _SAME_3X3, _VIT_TI, _VIT_S],
        conv_projection=[_VALID_3X3, _PATCH_4, _VIT_TI],
    )
    if full:
        plan.null_space += [(512, 4096), (1024, 4096), (2048, 8192), (4096, 16384)]
        plan.batch[1] = (3072, 256, [1, 10, 100, 1000, 10_000, 30_000, 100_000])
    else:
        plan.caps = [
            "null-space sizes capped at 256 x 3072 (--full adds 512 x 4096, 1024 x 4096, "
            "2048 x 8192 and 4096 x 16384)",
            "n = 3072 batch sweep capped at B = 10^4 (--full: 10^5)",
        ]
    return plan
