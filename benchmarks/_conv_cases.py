"""Convolutional first layers: null-space construction and batch projection.

Two groups, one case per first-layer spec (``ConvSpec``):

* ``conv-null-space``: ``nsjax.conv_null_space(kernel, input_shape, ...)`` against the
  paper-style construction, ``scipy.linalg.null_space`` of the materialised ``(m, n)``
  convolution operator (only up to ``DENSE_MAX_N`` inputs: the dense operator of a
  224 x 224 x 3 image has 150,528 columns).  Both must give the same nullity.
* ``conv-projection``: ``ns.project(x)`` for a batch of images, with the fused CPU kernel
  and through XLA's matmuls, against the paper's ``X @ N @ N.T`` (dense ``N``, small
  images) or, for patch embeddings, NumPy with the same per-patch structure; the floor is
  the elementwise pass and ``4 rows d min(r, d - r)`` flops at the run's GEMM rate.

Correctness first, against float64: the dense null basis of the float64 operator, or the
float64 QR basis of the ``(ph pw C, cout)`` patch matrix applied patch by patch.
"""

from __future__ import annotations

import math

import jax
import numpy as np
import scipy.linalg

import nsjax
from benchmarks import _baselines as bl
from benchmarks._bandwidth import projection_bytes
from benchmarks._cases import (
    TOL,
    Runner,
    _maxerr,
    _mem_ok,
    _sample_idx,
    _stats,
    _to_device,
    _uniform,
    add_xla_variant,
    roofline,
    settle,
)
from benchmarks._plan import ConvSpec
from benchmarks._timing import first_call, measure

DENSE_MAX_N = 3072  # above this the dense operator and its SVD are not the way anyone goes


def _kernel(spec: ConvSpec, seed: int, dtype: str) -> np.ndarray:
    rng = np.random.default_rng([seed, *spec.kernel_shape, spec.n])
    return rng.standard_normal(spec.kernel_shape).astype(dtype)


def _patchify(x: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """``(B, H, W, C)`` -> ``(B, patches, ph pw C)``, the layout of ``nsjax.NullSpace``."""
    h, w, c = spec.input_shape
    ph, pw = spec.kernel_shape[:2]
    b = x.shape[0]
    p = x.reshape(b, h // ph, ph, w // pw, pw, c).transpose(0, 1, 3, 2, 4, 5)
    return p.reshape(b, (h // ph) * (w // pw), ph * pw * c)


def _unpatchify(p: np.ndarray, spec: ConvSpec) -> np.ndarray:
    h, w, c = spec.input_shape
    ph, pw = spec.kernel_shape[:2]
    b = p.shape[0]
    x = p.reshape(b, h // ph, w // pw, ph, pw, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


def _jnp_patch(x, basis, spec: ConvSpec):
    """The patch-by-patch one-liner in ``jnp`` (traced under ``jax.jit``)."""
    h, w, c = spec.input_shape
    ph, pw = spec.kernel_shape[:2]
    b = x.shape[0]
    p = x.reshape(b, h // ph, ph, w // pw, pw, c).transpose(0, 1, 3, 2, 4, 5)
    p = p.reshape(b, (h // ph) * (w // pw), ph * pw * c)
    p = p - (p @ basis) @ basis.T
    p = p.reshape(b, h // ph, w // pw, ph, pw, c).transpose(0, 1, 3, 2, 4, 5)
    return p.reshape(b, h, w, c)


def _dense_null_basis(k: np.ndarray, spec: ConvSpec, dtype) -> np.ndarray:
    """The paper's way: materialise the operator, ``scipy.linalg.null_space`` of it."""
    a = nsjax.conv_matrix(k.astype(dtype), spec.input_shape, strides=spec.strides,
                          padding=spec.padding)
    return scipy.linalg.null_space(np.asarray(a, dtype))


def _patch_row_basis64(k: np.ndarray) -> np.ndarray:
    """Orthonormal float64 basis of the row space of one patch: columns of the patch matrix."""
    kh, kw, cin, cout = k.shape
    q, s, _ = np.linalg.svd(k.reshape(kh * kw * cin, cout).astype(np.float64),
                            full_matrices=False)
    return q[:, s > s[0] * max(q.shape) * np.finfo(np.float64).eps]


def null_space_case(runner: Runner, spec: ConvSpec, dtype: str) -> dict:
    """Time ``conv_null_space`` (and the dense SciPy construction where it fits)."""
    case = {"group": "conv-null-space", "name": f"{spec.name} {dtype}",
            "params": {**spec.params(), "dtype": dtype}}
    k = _kernel(spec, runner.s.seed, dtype)
    kj = jax.numpy.asarray(k)

    def run_nsjax():
        return nsjax.conv_null_space(kj, spec.input_shape, strides=spec.strides,
                                     padding=spec.padding).row_basis

    fns = {"nsjax": run_nsjax}
    skipped = {}
    if spec.n <= DENSE_MAX_N:
        fns["paper"] = lambda: _dense_null_basis(k, spec, dtype)
    else:
        skipped["paper"] = (f"skipped: the dense operator has n = {spec.n} columns "
                            f"(> {DENSE_MAX_N}); nsjax never forms it")
    jax.clear_caches()
    first_ms, _ = first_call(run_nsjax)
    ns = nsjax.conv_null_space(kj, spec.input_shape, strides=spec.strides, padding=spec.padding)
    correct = {"nsjax_dim": ns.dim, "patch": ns.patch}
    if "paper" in fns:
        dense_dim = _dense_null_basis(k, spec, np.float64).shape[1]
        correct["dense_float64_dim"] = dense_dim
        correct["ok"] = dense_dim == ns.dim
    else:  # patch embedding: per patch, nullity = d - rank of the (d, cout) patch matrix
        per = _patch_row_basis64(k).shape[1]
        npatch = spec.n // math.prod(spec.kernel_shape[:3])
        correct["expected_dim"] = spec.n - per * npatch
        correct["ok"] = correct["expected_dim"] == ns.dim
    case["correct"] = correct
    if not correct["ok"]:
        case["status"] = "failed: null space dimension differs from the float64 reference"
        return case
    runner.best_blas(fns, case, names=("paper",))
    st = measure(fns, runner.s.repeats, target_s=runner.s.target_s, settle_s=settle(fns, case))
    case["timings"] = _stats(st)
    case["timings"]["nsjax"]["first_call_ms"] = first_ms
    case["timings"]["nsjax"]["compile_ms"] = max(0.0, first_ms - st["nsjax"].median_ms)
    case["skipped"] = skipped
    med = {v: s.median_ms for v, s in st.items()}
    case["ratios"] = {"nsjax": {"speedup_vs_paper":
                                med["paper"] / med["nsjax"] if "paper" in med else None}}
    case["status"] = "ok"
    return case


def projection_case(runner: Runner, spec: ConvSpec, dtype: str) -> dict:
    """Project ``(B, H, W, C)`` images onto the null space of one conv first layer."""
    case = {"group": "conv-projection", "name": f"{spec.name} B={spec.batch} {dtype}",
            "params": {**spec.params(), "dtype": dtype}}
    item = np.dtype(dtype).itemsize
    ok, why = _mem_ok(5.0 * spec.batch * spec.n * item)
    if not ok:
        case["status"] = why
        return case
    gemm_rate = runner.gemm_rate(dtype)
    k = _kernel(spec, runner.s.seed, dtype)
    ns = nsjax.conv_null_space(jax.numpy.asarray(k), spec.input_shape, strides=spec.strides,
                               padding=spec.padding)
    rng = np.random.default_rng([runner.s.seed, spec.batch, spec.n, 5])
    xj, x = _to_device(_uniform(rng, (spec.batch, *spec.input_shape), dtype))
    floor_fn = jax.jit(lambda x: x + 0)
    fns = {"nsjax": lambda: ns.project(xj), "elementwise": lambda: floor_fn(xj)}
    add_xla_variant(fns, case, ns, xj)
    idx = _sample_idx(spec.batch)
    if spec.is_patch:
        d = math.prod(spec.kernel_shape[:3])
        rows, r = spec.batch * (spec.n // d), ns.row_basis.shape[1]
        rb = np.asarray(ns.row_basis)
        r64 = _patch_row_basis64(k)

        def numpy_patch(xs, basis):
            p = _patchify(xs, spec)
            return _unpatchify(p - (p @ basis) @ basis.T, spec)

        fns["numpy"] = lambda: numpy_patch(x, rb)
        jnp_patch = jax.jit(lambda xs, basis: _jnp_patch(xs, basis, spec))
        rbj = jax.numpy.asarray(rb)
        fns["jnp"] = lambda: jnp_patch(xj, rbj)
        ref = numpy_patch(x[idx].astype(np.float64), r64)
        case["paper_basis"] = "none: the dense operator is not formed (patch embedding)"
    else:
        d, rows = spec.n, spec.batch
        r = ns.rank
        nb = _dense_null_basis(k, spec, dtype).astype(dtype)
        n64 = _dense_null_basis(k, spec, np.float64)
        flat = x.reshape(spec.batch, -1)
        fns["paper"] = lambda: flat @ nb @ nb.T
        # the one-liner through the smaller side, with nsjax's own bases (for this layer
        # the null basis is narrower, so NumPy's one-liner is the paper's formula)
        rb = np.asarray(ns.row_basis)
        nbs = None if ns.null_basis is None else np.asarray(ns.null_basis)
        use_null = nbs is not None and nbs.shape[1] < rb.shape[1]
        side = nbs if use_null else rb
        sidej = jax.numpy.asarray(side)
        fns["numpy"] = lambda: bl.smaller_side(flat, rb, nbs).reshape(x.shape)
        jnp_side = bl.jnp_smaller_side()
        jnp_dense = jax.jit(lambda xs, b: jnp_side(xs.reshape(xs.shape[0], -1), b, use_null)
                            .reshape(xs.shape))
        fns["jnp"] = lambda: jnp_dense(xj, sidej)
        case["numpy_side"] = "(x N) N^T" if use_null else "x - (x R) R^T"
        x64 = flat[idx].astype(np.float64)
        ref = (x64 @ n64 @ n64.T).reshape((len(idx), *spec.input_shape))
        case["paper_basis"] = "scipy.linalg.null_space(conv_matrix(kernel))"
    jax.clear_caches()
    first_ms, out = first_call(fns["nsjax"])
    errs = {"nsjax": _maxerr(np.asarray(out)[idx], ref)}
    del out
    if "nsjax_xla" in fns:
        errs["nsjax_xla"] = _maxerr(np.asarray(fns["nsjax_xla"]())[idx], ref)
    if "paper" in fns:
        errs["paper"] = _maxerr(fns["paper"]()[idx].reshape(ref.shape), ref)
    if "numpy" in fns:
        errs["numpy"] = _maxerr(numpy_patch(x[idx], rb) if spec.is_patch
                                else bl.smaller_side(x[idx].reshape(len(idx), -1), rb, nbs)
                                .reshape(ref.shape), ref)
    errs["jnp"] = _maxerr(np.asarray(fns["jnp"]())[idx], ref)
    tol = TOL[dtype]
    case["correct"] = {"reference": "float64 dense null basis / per-patch QR",
                       "rows_checked": len(idx), "tol": tol, "max_abs_err": errs,
                       "ok": all(e <= tol for e in errs.values())}
    if not case["correct"]["ok"]:
        case["status"] = "failed: results differ from the float64 reference"
        return case
    runner.best_blas(fns, case)
    st = measure(fns, runner.s.repeats, target_s=runner.s.target_s, settle_s=settle(fns, case))
    case["timings"] = _stats(st)
    case["timings"]["nsjax"]["first_call_ms"] = first_ms
    case["timings"]["nsjax"]["compile_ms"] = max(0.0, first_ms - st["nsjax"].median_ms)
    flops = 4.0 * rows * d * min(r, d - r)
    floor = roofline(st["elementwise"].median_ms, flops, gemm_rate, rows=rows, d=d,
                     side=min(r, d - r))
    case["floor"] = floor
    case["ratios"] = runner._ratios(st, floor["ms"])
    case["bandwidth"] = runner.bandwidth(st, projection_bytes(spec.batch, spec.n, item,
                                                              d * floor["side"]))
    case["params"].update({"rank": ns.rank, "nullity": ns.dim})
    case["status"] = "ok"
    return case
