"""Null space of a CNN's first convolution, and checks of Lemma B.1 (paper, App. B).

Library code behind ``nsjax conv-nullspace``: :func:`run_conv_nullspace` builds a
:class:`ConvNet`, computes each kernel's null space and their intersection ``Null(C)``,
checks invariance ``f(x + a v) = f(x)`` on it and, optionally, runs the Lemma B.1 trials on
random (:func:`lemma_b1_trials`) and planted degenerate (:func:`planted_report`) kernels.
:func:`summary` renders the report as text.

Lemma B.1 says that for almost every ``k1 x k2`` kernel the VALID or SAME convolution on
``n1 x n2`` images has full rank.  Exactly, that is true (for VALID with a single kernel it
holds for EVERY nonzero kernel).  Numerically, SAME padding differs: the finite section of a
2-level Toeplitz operator whose partial symbols wind around 0 has singular values decaying
geometrically with the image size, so many random kernels look rank deficient at the
float32 rule ``max(m, n) eps32 sigma_max``.  A float32 kernel's values are exact dyadic
rationals, so the experiment decides ranks EXACTLY (:func:`nsjax.exact_conv_rank`, over
GF(p); ``conv_null_space(..., rank="exact")``) and reports the numerical picture beside it:
how many singular values fall below the float32 rule ("near-null spectrum") and
``sigma_min / sigma_max``.
"""

from __future__ import annotations

import functools
import math
import time

import flax.linen as nn
import jax
import numpy as np
from jax import lax

from nsjax import _conv
from nsjax._conv import (
    ExactRankTooLarge,
    conv_null_space_of_layer,
    conv_output_shape,
    conv_singular_values,
    exact_conv_rank,
)
from nsjax._invariance import check_invariance
from nsjax._models import init_params
from nsjax._nullspace import default_rtol
from nsjax.blas import limit_blas_threads

__all__ = ["ConvNet", "random_kernel", "nullity_rules", "partial_windings", "generic_nullity",
           "lemma_b1_trials", "planted_kernels", "planted_report", "run_conv_nullspace",
           "summary", "PADDINGS"]

PADDINGS = ("VALID", "SAME", "CIRCULAR", "REFLECT")
_EPS64 = float(np.finfo(np.float64).eps)


class ConvNet(nn.Module):
    """``nsjax.CNN``'s architecture with a dilated first convolution.

    ``Conv_0`` (``kernels`` ``size x size`` kernels, ``padding``, ``stride``, ``dilation``)
    -> ReLU -> flatten -> ``Dense_0`` (32) -> ReLU -> ``Dense_1`` (10).  Same parameter
    names as ``nsjax.CNN`` (so ``dilation=1`` gets the same initial parameters).

    Input ``(..., H, W, C)`` or flat ``(..., H W C)``; output ``(..., 10)``.
    """

    input_shape: tuple[int, int, int] = (28, 28, 1)
    kernels: int = 6
    size: int = 3
    padding: str = "VALID"
    stride: int = 1
    dilation: int = 1

    def conv(self) -> nn.Conv:
        """The first layer as a standalone (unbound) ``nn.Conv``."""
        return nn.Conv(self.kernels, (self.size, self.size), strides=self.stride,
                       padding=self.padding, kernel_dilation=self.dilation, parent=None)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n = math.prod(self.input_shape)
        batch = x.shape[:-3] if x.shape[-3:] == tuple(self.input_shape) else x.shape[:-1]
        if x.shape[len(batch):] not in (tuple(self.input_shape), (n,)):
            raise ValueError(f"expected (..., {self.input_shape}) or (..., {n}) inputs, got "
                             f"{x.shape}")
        h = x.reshape((-1,) + tuple(self.input_shape))
        h = nn.Conv(self.kernels, (self.size, self.size), strides=self.stride,
                    padding=self.padding, kernel_dilation=self.dilation, name="Conv_0")(h)
        h = nn.relu(h).reshape(h.shape[0], -1)
        h = nn.Dense(10, name="Dense_1")(nn.relu(nn.Dense(32, name="Dense_0")(h)))
        return h.reshape(batch + (10,))


def random_kernel(rng: np.random.Generator, size: int, cin: int = 1,
                  cout: int = 1) -> np.ndarray:
    """Float32 ``(size, size, cin, cout)`` kernel like Flax's default LeCun-normal init."""
    k = rng.standard_normal((size, size, cin, cout)) / math.sqrt(size * size * cin)
    return k.astype(np.float32)


def nullity_rules(s: np.ndarray, m: int, n: int) -> dict[str, int]:
    """Nullity ``n - #{sigma > max(m, n) eps sigma_max}`` at the float32 and float64 rules.

    ``s``: the singular values (any order) of an ``(m, n)`` operator.
    """
    s = np.asarray(s, np.float64)
    smax = float(s.max()) if s.size else 0.0
    return {name: int(n - np.sum(s > max(m, n) * float(np.finfo(dt).eps) * smax))
            for name, dt in (("float32", np.float32), ("float64", np.float64))}


def partial_windings(kernel2d: np.ndarray, lo: tuple[int, int], grid: int = 256) -> dict:
    """Winding numbers about 0 of the partial symbols of a SAME-padded 2-D kernel.

    The SAME operator is the finite section of the 2-level Toeplitz operator with symbol
    ``a(z, w) = sum_ij k[i, j] z^(i - lo_h) w^(j - lo_w)``.  For ``|w| = 1`` fixed,
    ``z -> a(z, w)`` winds ``#(roots of sum_i c_i(w) z^i in |z| < 1) - lo_h`` times around 0
    (and symmetrically in ``w``).  A nonzero winding makes the half-plane Toeplitz operator
    non-invertible (Fredholm index != 0); the finite sections then have singular values
    decaying like ``rho^N``.

    Args:
      kernel2d: ``(kh, kw)`` kernel.
      lo: the low padding ``(lo_h, lo_w)`` (``(1, 1)`` for 3x3 SAME).
      grid: frequencies sampled on the unit circle.

    Returns:
      ``{"rows": set, "cols": set, "min_abs_symbol": float}``: winding numbers seen over the
      ``grid`` frequencies of the other variable, and ``min |a|`` on the ``grid x grid``
      torus.
    """
    k = np.asarray(kernel2d, np.float64)
    kh, kw = k.shape
    t = np.exp(2j * np.pi * (np.arange(grid) + 0.5) / grid)

    def windings(mat, offset):
        seen = set()
        for w in t:
            coef = mat @ (w ** np.arange(mat.shape[1]))  # c_i(w), i = 0..k-1
            roots = np.roots(coef[::-1]) if np.any(coef) else np.array([])
            seen.add(int(np.sum(np.abs(roots) < 1.0)) - offset)
        return seen

    zi = t[:, None] ** (np.arange(kh)[None, :] - lo[0])
    wj = t[:, None] ** (np.arange(kw)[None, :] - lo[1])
    sym = zi @ k @ wj.T
    return {"rows": windings(k, lo[0]), "cols": windings(k.T, lo[1]),
            "min_abs_symbol": float(np.abs(sym).min())}


@functools.lru_cache(maxsize=64)
def generic_nullity(input_shape: tuple[int, ...], kernel_shape: tuple[int, ...], *,
                    strides=1, padding="VALID", dilation=1, seed: int = 0) -> int | None:
    """Nullity of a GENERIC kernel bank of ``kernel_shape`` (the Lemma B.1 baseline).

    The generic rank is the largest rank over all kernels; a random integer kernel attains
    it with probability ~1, and its exact rank over GF(p) is a lower bound on it.  So this
    is ``n - exact_conv_rank(random integer kernel)`` (cached per arguments).

    No closed form covers all cases.  For VALID, stride 1, one channel, ``c`` kernels
    ``k1 x k2`` on a large enough image it is ``n - Ho Wo`` (c = 1), ``2 (k1-1)(k2-1)``
    (c = 2: the common zeros of two generic kernel polynomials, Bernstein-Kushnirenko,
    give null vectors ``x[i, j] = z^i w^j``; 8 for 3x3 at any image size) and 0 (c >= 3);
    small images differ (3x3, c = 3 on 5x5: 1).

    Above the size limit of :func:`nsjax.exact_conv_rank`: the number of singular values
    (banded float64 Gram) above ``10 sqrt(max(m, n) eps64) sigma_max`` -- certainly
    nonzero, so a lower bound on the kernel's rank -- if it meets the upper bound
    ``min(n_c, P min(cout, T))`` (pixels read, positions times independent filters), else
    ``None`` (not decided).
    """
    rng = np.random.default_rng(seed)
    k = rng.integers(-1024, 1025, kernel_shape).astype(np.float64)  # exact integers
    conv = dict(strides=strides, padding=padding, dilation=dilation)
    n = math.prod(input_shape)
    try:
        return n - exact_conv_rank(k, input_shape, **conv)
    except ExactRankTooLarge:
        pass
    g = _conv._Geometry(input_shape, kernel_shape, strides, padding, dilation)
    upper = min(g.covered().size, g.positions * min(g.cout, g.taps))
    s = conv_singular_values(k, input_shape, method="gram", **conv)
    # the banded Gram's eigenvalues err by ~ n eps64 lambda_max: sigmas above 10x
    # sqrt(n eps64) sigma_max are certainly nonzero
    floor = 10.0 * math.sqrt(max(g.m, n) * _EPS64) * (s[0] if s.size else 0.0)
    lower = int(np.sum(s > floor)) if s.size else 0
    return n - upper if lower == upper else None


# --------------------------------------------------------------------------- Lemma B.1


def _same_lo(hw: tuple[int, int], size: int) -> tuple[int, int]:
    return tuple(int(a) for a, _ in lax.padtype_to_pads(hw, (size, size), (1, 1), "SAME"))


def _trial_row(k: np.ndarray, shape: tuple[int, int, int], padding: str, exact: bool) -> dict:
    """One random kernel: float64-accurate nullity at both rules (and exact if asked)."""
    ho, wo, _ = conv_output_shape(shape, k.shape, padding=padding)
    m, n = ho * wo, math.prod(shape)
    s = conv_singular_values(k, shape, padding=padding, method="svd")
    rules = nullity_rules(s, m, n)
    row = {"nullity_f32": rules["float32"], "nullity_f64": rules["float64"],
           "sigma_min_rel": float(s[min(m, n) - 1] / s[0])}
    if padding == "SAME":
        wd = partial_windings(k[:, :, 0, 0], _same_lo(shape[:2], k.shape[0]))
        row["windings_zero"] = wd["rows"] == {0} and wd["cols"] == {0}
    if exact:
        row["exact_nullity"] = n - exact_conv_rank(k, shape, padding=padding)
    return row


def _histogram(values) -> dict[int, int]:
    return {int(v): int(c) for v, c in zip(*np.unique(np.asarray(values), return_counts=True))}


def _trial_summary(rows: list[dict], expect: int, padding: str) -> dict:
    f32 = np.array([r["nullity_f32"] for r in rows])
    f64 = np.array([r["nullity_f64"] for r in rows])
    rel = [r["sigma_min_rel"] for r in rows]
    out = {"expected_nullity": expect, "trials": len(rows),
           "full_rank_fraction_f32_rule": float(np.mean(f32 == expect)),
           "full_rank_fraction_f64_rule": float(np.mean(f64 == expect)),
           "nullity_f32_histogram": _histogram(f32), "nullity_f64_histogram": _histogram(f64),
           "sigma_min_rel_quantiles": {q: float(np.quantile(rel, float(q)))
                                       for q in ("0.0", "0.1", "0.5", "0.9")}}
    ex = [r["exact_nullity"] for r in rows if "exact_nullity" in r]
    if ex:
        out["exact_full_rank_fraction"] = float(np.mean(np.array(ex) == expect))
        out["exact_trials"] = len(ex)
    if padding == "SAME":
        wz = np.array([r["windings_zero"] for r in rows])
        ok = f32 == expect
        out["windings_zero_fraction"] = float(np.mean(wz))
        out["predictor"] = {
            "windings_zero_and_full_rank_f32": int(np.sum(wz & ok)),
            "windings_zero_and_deficient_f32": int(np.sum(wz & ~ok)),
            "winding_nonzero_and_full_rank_f32": int(np.sum(~wz & ok)),
            "winding_nonzero_and_deficient_f32": int(np.sum(~wz & ~ok))}
    return out


def lemma_b1_trials(hw: tuple[int, int], size: int, trials: int, seed: int = 0,
                    exact: int = 0) -> dict:
    """Lemma B.1 on ``trials`` random single-channel ``size x size`` kernels on ``hw`` images.

    For VALID and SAME: nullity from float64-accurate singular values at the float32 rule
    ``max(m, n) eps32 sigma_max`` (the nsjax default for float32 layers) and at the float64
    rule, ``sigma_min / sigma_max`` quantiles; for SAME also the partial-winding predictor;
    for the first ``exact`` kernels the exact nullity over GF(p).

    Returns:
      ``{"VALID": {...}, "SAME": {...}}`` with ``expected_nullity`` (the generic one),
      full-rank fractions per rule, nullity histograms, ...
    """
    rng = np.random.default_rng(seed)
    shape = (int(hw[0]), int(hw[1]), 1)
    kernels = [random_kernel(rng, size) for _ in range(trials)]
    res = {}
    for padding in ("VALID", "SAME"):
        expect = generic_nullity(shape, (size, size, 1, 1), padding=padding)
        rows = [_trial_row(k, shape, padding, i < exact) for i, k in enumerate(kernels)]
        res[padding] = _trial_summary(rows, expect, padding) if rows else {
            "expected_nullity": expect, "trials": 0}
    return res


def _full_conv(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros((a.shape[0] + b.shape[0] - 1, a.shape[1] + b.shape[1] - 1), np.float64)
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            out[i:i + b.shape[0], j:j + b.shape[1]] += a[i, j] * b
    return out.astype(np.float32)


def planted_kernels(size: int = 3) -> list[tuple[str, str, np.ndarray]]:
    """Degenerate kernels ``(name, why, kernel (size, size, 1, cout) float32)``.

    Exact dyadic entries, so exact ranks are meaningful.  Needs ``size >= 3``.
    """
    z = np.zeros((size, size, 1, 1), np.float32)
    out = [("zero", "the zero kernel: C = 0", z)]
    k = z.copy()
    k[-1, -1] = 1.0
    out.append(("corner-tap", "one off-centre tap: SAME shifts the image by (1, 1) and drops "
                "a row and a column", k))
    k = z.copy()
    k[size // 2, -1] = 1.0
    out.append(("edge-tap", "one tap right of centre: SAME shifts by one column", k))
    u = np.array([1.0, -2.0, 1.0], np.float32)
    k = z.copy()
    k[:3, :3, 0, 0] = np.outer(u, u)
    out.append(("laplacian-squared", "separable (1,-2,1)x(1,-2,1): double root ON the unit "
                "circle, sigma_min ~ N^-4; exactly full rank", k))
    u = np.array([0.125, 0.5, 1.0], np.float32)  # z^2 + z/2 + 1/8: both roots inside
    v = np.array([0.25, 1.0, 0.25], np.float32)
    k = z.copy()
    k[:3, :3, 0, 0] = np.outer(u, v)
    out.append(("winding-1", "separable u x v, u(z) = 1/8 + z/2 + z^2 has both roots inside "
                "the unit circle (partial winding 1): SAME is exactly invertible but "
                "sigma_min ~ 0.35^N", k))
    return out + _planted_banks()


def _planted_banks() -> list[tuple[str, str, np.ndarray]]:
    g = np.array([[1.0, 1.0], [1.0, -1.0]], np.float32)  # common 2x2 factor
    rng = np.random.default_rng(7)
    ks = np.zeros((3, 3, 1, 6), np.float32)
    for i in range(6):
        ks[:, :, 0, i] = _full_conv(g, np.round(rng.standard_normal((2, 2)) * 8) / 8)
    out = [("common-factor-x6", "six kernels k_i = g * h_i sharing a 2x2 factor g: "
            "Null(C) contains Null(g-VALID), dim >= 784 - 27*27 = 55 on 28x28", ks)]
    ks = np.zeros((3, 3, 1, 6), np.float32)
    uu = np.array([1.0, 0.5, -0.25], np.float32)
    for i in range(6):
        ks[:, :, 0, i] = np.outer(uu, np.round(rng.standard_normal(3) * 8) / 8)
    out.append(("common-row-factor-x6", "six separable kernels u x v_i with the same u: "
                "Null(C) contains {x : u-VALID along columns = 0}, dim >= 2 * 28", ks))
    return out


def planted_report(hw: tuple[int, int], size: int = 3) -> list[dict]:
    """Nullities of :func:`planted_kernels` on ``hw`` images, VALID and SAME.

    Returns one dict per kernel: ``name``, ``why``, ``kernels`` and per padding
    ``generic_nullity`` (:func:`generic_nullity` for a bank of the same shape),
    ``nullity_f32`` / ``nullity_f64`` (float64-accurate singular values at each rule),
    ``exact_nullity`` (GF(p)) and ``sigma_min_rel``.
    """
    shape = (int(hw[0]), int(hw[1]), 1)
    n = math.prod(shape)
    rows = []
    for name, why, k in planted_kernels(size):
        row = {"name": name, "why": why, "kernels": int(k.shape[-1])}
        for padding in ("VALID", "SAME"):
            ho, wo, cout = conv_output_shape(shape, k.shape, padding=padding)
            s = conv_singular_values(k, shape, padding=padding, method="svd")
            rules = nullity_rules(s, ho * wo * cout, n)
            row[padding] = {"generic_nullity": generic_nullity(shape, k.shape, padding=padding),
                            "nullity_f32": rules["float32"], "nullity_f64": rules["float64"],
                            "exact_nullity": n - exact_conv_rank(k, shape, padding=padding),
                            "sigma_min_rel": float(s[-1] / s[0]) if s[0] > 0 else 0.0}
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- the experiment


def _per_kernel(kernel: np.ndarray, shape, conv: dict, rtol, exact: bool) -> dict:
    """Each kernel alone: numerical nullity (nsjax's rule, from the singular values only) and,
    if ``exact``, the exact one."""
    n = math.prod(shape)
    ho, wo, _ = conv_output_shape(shape, kernel.shape, **conv)
    rule = default_rtol((ho * wo, n), np.float32) if rtol is None else float(rtol)
    num, ex = [], []
    for i in range(kernel.shape[-1]):
        k = kernel[..., i:i + 1]
        s = conv_singular_values(k, shape, **conv)
        num.append(int(n - np.sum(s > rule * s[0])) if s.size and s[0] > 0 else n)
        if exact:
            ex.append(n - exact_conv_rank(k, shape, **conv))
    return {"numerical": num, "exact": ex if exact else None}


def _intersection(model: ConvNet, params, shape, rtol, rank: str) -> tuple:
    """``(NullSpace, rank_rule, note)`` of the first layer; exact unless too large."""
    layer = model.conv()
    variables = {"params": params["params"]["Conv_0"]}
    if rank == "exact":
        try:
            return conv_null_space_of_layer(layer, variables, shape, rank="exact"), "exact", None
        except ExactRankTooLarge as err:
            note = (f"exact rank not computed ({err}); the rank below is the numerical one "
                    "(float32 rule unless --rtol)")
            return conv_null_space_of_layer(layer, variables, shape, rtol=rtol), "numerical", note
    return conv_null_space_of_layer(layer, variables, shape, rtol=rtol), "numerical", None


def _spectrum_fields(ns, m: int, n: int, rtol) -> dict:
    """The numerical picture beside the decided rank: near-null count at the rule used."""
    s = np.asarray(ns.singular_values, np.float64)
    if ns.patch is not None:  # the patch block's values: one copy per patch
        return {"numerical_nullity": None, "near_null_singular_values": None,
                "sigma_min_over_max": float(s[-1] / s[0]) if s.size and s[0] else None}
    rule = default_rtol((m, n), np.float32) if rtol is None else float(rtol)
    smax = float(s[0]) if s.size else 0.0
    near = int(np.sum(s <= rule * smax)) if smax else int(s.size)
    return {"numerical_rule_rtol": rule,
            "numerical_nullity": int(n - np.sum(s > rule * smax)) if smax else n,
            "near_null_singular_values": near,
            "sigma_min_over_max": float(s[-1] / smax) if smax else None}


def run_conv_nullspace(*, input_shape=(28, 28, 1), kernels: int = 6, size: int = 3,
                       padding: str = "VALID", stride: int = 1, dilation: int = 1,
                       seed: int = 0, rtol: float | None = None, probes: int = 64,
                       lemma_trials: int = 200, exact_trials: int = 20,
                       blas_threads: int | None = 1, rank: str = "exact") -> dict:
    """Null space of a :class:`ConvNet`'s first convolution, its invariance, Lemma B.1.

    Args:
      input_shape: ``(H, W, C)`` of one image.
      kernels, size, padding, stride, dilation: the first convolution (``padding`` one of
        :data:`PADDINGS`).
      seed: parameter init (and trial) seed.
      rtol: relative tolerance of the numerical rule (default ``max(m, n) eps32``).
      probes: invariance probes (when the null space is nontrivial).
      lemma_trials, exact_trials: random kernels for :func:`lemma_b1_trials` (0: skip it and
        :func:`planted_report`) and how many of them get an exact rank.
      blas_threads: cap OpenBLAS threads meanwhile (``None``/0: leave as is).
      rank: ``"exact"`` (default; ``conv_null_space(rank="exact")``, falling back to the
        numerical rule with a ``note`` when the case is too large) or ``"numerical"``.

    Returns:
      The report dict: ``intersection_nullity`` (the decided null dim), ``rank_rule``,
      ``numerical_nullity`` / ``near_null_singular_values`` / ``sigma_min_over_max`` (the
      float32-rule picture), ``per_kernel_nullity`` (and ``_numerical``), generic values,
      invariance results, ``success`` (False only if the invariance check failed), timings,
      ``lemma_b1`` and ``planted``.
    """
    if padding.upper() not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    if rank not in ("exact", "numerical"):
        raise ValueError(f"rank must be 'exact' or 'numerical', got {rank!r}")
    with limit_blas_threads(blas_threads):
        return _run(tuple(int(d) for d in input_shape), kernels, size, padding, stride,
                    dilation, seed, rtol, probes, lemma_trials, exact_trials, rank)


def _run(shape, kernels, size, padding, stride, dilation, seed, rtol, probes, lemma_trials,
         exact_trials, rank) -> dict:
    model = ConvNet(input_shape=shape, kernels=kernels, size=size, padding=padding,
                    stride=stride, dilation=dilation)
    params = init_params(model, jax.random.key(seed), shape)
    kernel = np.asarray(params["params"]["Conv_0"]["kernel"])
    conv = dict(strides=stride, padding=padding, dilation=dilation)
    ho, wo, cout = conv_output_shape(shape, kernel.shape, **conv)
    n, m = math.prod(shape), ho * wo * cout
    t0 = time.perf_counter()
    ns, rule, note = _intersection(model, params, shape, rtol, rank)
    t1 = time.perf_counter()
    per = _per_kernel(kernel, shape, conv, rtol, rule == "exact")
    t2 = time.perf_counter()
    res = None
    if ns.dim:
        res = check_invariance(lambda x: model.apply(params, x), ns,
                               jax.random.key(seed + 1), n_probes=probes)
    report = {
        "input": list(shape), "kernels": cout, "size": size, "padding": padding,
        "stride": stride, "dilation": dilation, "seed": seed, "output": [ho, wo, cout],
        "n": n, "m": m, "rank_rule": rule, "note": note,
        "intersection_nullity": ns.dim, "rank": ns.rank,
        "generic_intersection_nullity": generic_nullity(shape, kernel.shape, **conv),
        **_spectrum_fields(ns, m, n, rtol),
        "per_kernel_nullity": per["exact"] if rule == "exact" else per["numerical"],
        "per_kernel_nullity_numerical": per["numerical"],
        "per_kernel_generic_nullity": generic_nullity(shape, kernel.shape[:3] + (1,), **conv),
        "seconds_intersection": t1 - t0, "seconds_per_kernel": t2 - t1,
        "invariance_max_rel_error": None if res is None else res.max_rel_error,
        "invariance_max_ulps": None if res is None else res.max_ulps,
        "invariance_passed": None if res is None else bool(res.passed),
        "invariance_summary": None if res is None else res.summary(),
        "lemma_b1": None, "planted": None}
    report["success"] = report["invariance_passed"] is not False
    if lemma_trials:
        report["lemma_b1"] = lemma_b1_trials(shape[:2], size, lemma_trials, seed=seed,
                                             exact=exact_trials)
        report["planted"] = planted_report(shape[:2], size)
    return report


# --------------------------------------------------------------------------- summary


def _fmt(x, spec=".3e") -> str:
    return "n/a" if x is None else format(x, spec)


def summary(r: dict) -> str:
    """Plain-text (markdown-friendly) summary of a :func:`run_conv_nullspace` report."""
    lines = [f"CNN first layer: {r['kernels']} x {r['size']}x{r['size']} conv, padding "
             f"{r['padding']}, stride {r['stride']}, dilation {r['dilation']}, input "
             f"{tuple(r['input'])} -> {tuple(r['output'])}  (seed {r['seed']})"]
    pk = r["per_kernel_nullity"]
    pk_text = f"{pk[0]} (all {len(pk)} kernels)" if len(set(pk)) == 1 else str(pk)
    lines.append(f"  per-kernel nullity ({r['rank_rule']}): {pk_text}  (generic single kernel: "
                 f"{r['per_kernel_generic_nullity']}; numerical: "
                 f"{r['per_kernel_nullity_numerical']})")
    lines.append(f"  intersection Null(C): dim {r['intersection_nullity']} ({r['rank_rule']} "
                 f"rank {r['rank']} of n = {r['n']}; generic "
                 f"{r['generic_intersection_nullity']})  [{r['seconds_intersection']:.2f} s]")
    if r.get("numerical_nullity") is not None:
        lines.append(f"  near-null spectrum: {r['near_null_singular_values']} singular values "
                     f"<= rtol sigma_max (rtol {r['numerical_rule_rtol']:.2e}: numerical "
                     f"nullity {r['numerical_nullity']}), sigma_min/sigma_max "
                     f"{_fmt(r['sigma_min_over_max'])}")
    if r.get("note"):
        lines.append(f"  note: {r['note']}")
    lines.append(f"  invariance f(x + a v) = f(x): {r['invariance_summary']}"
                 if r["invariance_summary"] else "  null space trivial: no invariance to check")
    if r["lemma_b1"]:
        lines += _lemma_lines(r)
    return "\n".join(lines)


def _lemma_lines(r: dict) -> list[str]:
    lines = []
    for pad, d in r["lemma_b1"].items():
        if not d.get("trials"):
            continue
        line = (f"  Lemma B.1, {pad}, {d['trials']} random kernels: full rank at the float32 "
                f"rule {100 * d['full_rank_fraction_f32_rule']:.0f}%, float64 rule "
                f"{100 * d['full_rank_fraction_f64_rule']:.0f}%")
        if "exact_full_rank_fraction" in d:
            line += (f", exactly (GF(p)) {100 * d['exact_full_rank_fraction']:.0f}% of "
                     f"{d['exact_trials']}")
        lines.append(line)
        if pad == "SAME":
            lines.append(f"    nullity histogram (float32 rule): {d['nullity_f32_histogram']}; "
                         f"partial windings all zero for "
                         f"{100 * d['windings_zero_fraction']:.0f}%: {d['predictor']}")
    lines.append("  planted degenerate kernels (nullity float32 rule / float64 rule / exact):")
    for p in r["planted"]:
        v, s = p["VALID"], p["SAME"]
        lines.append(f"    {p['name']:<22} VALID {v['nullity_f32']}/{v['nullity_f64']}/"
                     f"{v['exact_nullity']} (generic {v['generic_nullity']})   SAME "
                     f"{s['nullity_f32']}/{s['nullity_f64']}/{s['exact_nullity']} (generic "
                     f"{s['generic_nullity']})")
    return lines
