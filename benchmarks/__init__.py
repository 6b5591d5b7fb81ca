"""Benchmarks of nsjax (outside the package): ``python -m benchmarks --help``.

Every case checks its results against a float64 NumPy reference before timing, warms up
and compiles first (the first call is reported separately), blocks on every result, and
reports medians and spreads over interleaved repeats together with ratios against
baselines measured in the same process: the paper-style NumPy/SciPy pipeline, NumPy with
the same algorithm, PyTorch when importable, and a roofline floor.  See ``README.md``.

Nothing here imports ``jax`` at package import time: ``python -m benchmarks`` may have to
re-execute itself with ``XLA_FLAGS``/``GLIBC_TUNABLES`` first.
"""
