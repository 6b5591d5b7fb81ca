"""How close the fused CPU kernel runs to this core's FMA peak, one thread (or several).

    python scripts/bench_kernel_peak.py [--shapes 1200x784x32 6000x784x112 ...] [--repeats 15]
                                        [--threads 2]

Builds ``scripts/kernel_peak.cc`` (which includes ``nsjax/_kernels/project_cpu.cc``) with
the compiler and flags of the extension into a temporary directory, and runs it for each
``ROWSxNxCOLS`` shape and each instruction set the CPU has (AVX2, AVX-512, AMX): the
kernel's row loop on one thread, output buffer reused (no page faults), median of
``--repeats`` calls after 0.3 s of untimed ones, against a loop of independent
register-only FMAs of the same width (the core's peak, best of three).  The ratio says how
much a faster kernel could still gain on this machine: a margin against a tuned GEMM
(OpenBLAS, XLA's matmuls) doing the same FMAs is bounded by it.  Each result is checked
against float64 (``err``, units of sqrt(N) eps max|x|; the kernel tests allow 1.5).  Run it
with nothing else busy: a VM's other tenants lower both figures, not always equally.

The AMX rows (the kernel of ``project_amx.inc``, used for bases of 96 or more padded
columns) count float32 vector FMAs of 16 lanes too: a tile product (16 x 16 x 32 bfloat16
MACs) is worth 8192 / 6 / 16 of them, since the kernel spends six bfloat16 products on each
float32 MAC; their peak is a loop of register-only tile products.  So the avx512 and amx
peaks compare directly: where the tiles' peak is not well above AVX-512's, the AMX kernel
does not pay (the tiles' rate differs between hosts of the same CPU model;
docs/results/performance.md).

``--threads N`` (N > 1) adds, after each one-thread row, the same loop on N threads that
claim chunks of rows as the kernel's call does, once reading one packed basis together
(``shared``) and once a copy each (``copy``, what the kernel does); the peak is then N
times one core's.  On the 2-vCPU VMs of this project the shared basis cost each thread
~1.5x (docs/results/performance.md, fourteenth session).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import jax

from nsjax import _cpu_kernel as K

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join(ROOT, "scripts", "kernel_peak.cc")
KERNELS = os.path.join(ROOT, "nsjax", "_kernels")
DEFAULT_SHAPES = ["1200x784x32", "6000x784x32", "1200x784x112", "6000x784x112"]
ISAS = ("avx2", "avx512", "amx")
ERR_TOL = 1.5  # units of sqrt(N) eps max|x|, as in tests/test_cpu_kernel.py
NO_ISA = 3  # the harness's exit status where the CPU (or, for AMX, Linux) lacks the ISA


def _shape(s: str) -> tuple[int, int, int]:
    try:
        m, n, c = (int(v) for v in s.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ROWSxNxCOLS, e.g. 1200x784x32; got {s!r}")
    if not (m > 0 and n > 0 and 0 < c <= min(n, K.MAX_COLS) and c % K.LANES == 0):
        raise argparse.ArgumentTypeError(f"{s}: need ROWS, N > 0 and 0 < COLS <= min(N, "
                                         f"{K.MAX_COLS}), COLS a multiple of {K.LANES}")
    return m, n, c


def build(outdir: str) -> str:
    """Compile the harness into ``outdir``; returns the binary's path."""
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        raise SystemExit("bench_kernel_peak: no C++ compiler (g++ or $CXX) found")
    binary = os.path.join(outdir, "kernel_peak")
    cmd = [cxx, "-std=c++17", "-O3", "-Wno-attributes", "-Wno-return-type",
           f"-I{jax.ffi.include_dir()}", f"-I{KERNELS}", SOURCE, "-o", binary]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"bench_kernel_peak: build failed:\n{' '.join(cmd)}\n{done.stderr}")
    return binary


def run(binary: str, isa: str, shape: tuple[int, int, int], repeats: int, threads: int = 1,
        basis: str = "copy") -> dict | None:
    """One measurement, or None where the CPU lacks ``isa`` (the harness exits with NO_ISA).
    ``basis`` (``copy`` or ``shared``) matters only for ``threads`` > 1."""
    m, n, c = shape
    done = subprocess.run([binary, isa, str(m), str(n), str(c), str(repeats), str(threads),
                           basis], capture_output=True, text=True)
    if done.returncode == NO_ISA:
        return None
    if done.returncode:
        raise SystemExit(f"bench_kernel_peak: {isa} {m}x{n}x{c} failed: {done.stderr}")
    return json.loads(done.stdout)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", nargs="+", type=_shape, default=[_shape(s) for s in DEFAULT_SHAPES],
                   metavar="ROWSxNxCOLS")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=1,
                   help="also time N threads, with one shared basis and with a copy each")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    if not 1 <= args.threads <= 256:
        p.error("--threads must be 1 to 256")
    runs = [(1, "-")] + ([(args.threads, "shared"), (args.threads, "copy")]
                         if args.threads > 1 else [])
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        binary = build(tmp)
        print("| isa | rows x n x cols | threads | basis | kernel ms | kernel G vFMA/s "
              "| peak G vFMA/s | of peak | err |")
        print("|---|---|---|---|---|---|---|---|---|")
        for shape in args.shapes:
            for isa in ISAS:
                for threads, basis in runs:
                    r = run(binary, isa, shape, args.repeats, threads,
                            "copy" if basis == "-" else basis)
                    if r is None:
                        break
                    ok &= r["err"] <= ERR_TOL
                    print(f"| {isa} | {'x'.join(map(str, shape))} | {threads} | {basis} "
                          f"| {r['kernel_ms']:.2f} | {r['kernel_vfma_per_s'] / 1e9:.2f} "
                          f"| {r['peak_vfma_per_s'] / 1e9:.2f} | {r['fraction_of_peak']:.0%} "
                          f"| {r['err']:.2f} |")
    if not ok:
        print(f"error above {ERR_TOL}: the kernel's result is wrong", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
