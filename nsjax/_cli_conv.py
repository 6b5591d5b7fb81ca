"""``nsjax conv-nullspace``: null space of a CNN's first convolution, and Lemma B.1 checks.

Register with ``nsjax._cli_conv.add_parser(subparsers)``.  The analysis helpers
(:func:`lemma_b1_trials`, :func:`planted_kernels`, :func:`partial_windings`) are shared with
``scripts/conv_nullspace.py``.

Lemma B.1 (paper, App. B) says that for almost every ``k1 x k2`` kernel the VALID or SAME
convolution on ``n1 x n2`` images has full rank.  Exactly, that is true (and for VALID with a
single kernel it holds for EVERY nonzero kernel).  Numerically, SAME padding is different:
the finite section of a 2-level Toeplitz operator whose partial symbols wind around 0 has
singular values that decay geometrically with the image size, so many random kernels are
rank deficient at float32 (and some at float64) precision.  The trials report both rules
and the exact rank over GF(p) (:func:`nsjax._conv.exact_conv_rank`).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import time

import numpy as np

__all__ = ["add_parser", "lemma_b1_trials", "planted_kernels", "partial_windings",
           "limit_blas_threads", "nullity_rules"]


# --------------------------------------------------------------------------- BLAS threads


def _openblas_handles():
    """(set, get) function pairs of every OpenBLAS loaded in this process (NumPy's, SciPy's)."""
    paths = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1] if len(line.split()) >= 6 else ""
                if "openblas" in path.lower() and ".so" in path:
                    paths.add(path)
    except OSError:
        return []
    out = []
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", ""):
                setter = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                getter = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                if setter is not None and getter is not None:
                    getter.restype = ctypes.c_int
                    out.append((setter, getter))
                    break
            else:
                continue
            break
    return out


@contextlib.contextmanager
def limit_blas_threads(n: int | None):
    """Temporarily cap OpenBLAS threads (``None``/``0``: leave as is).

    On a machine whose cores are shared with other busy processes, multi-threaded OpenBLAS
    spin-waits and small LAPACK calls (a 784 x 784 SVD) slow down 10-100x; one thread is
    then the fast choice.  Restores the previous setting on exit.
    """
    import scipy.linalg  # noqa: F401  (load SciPy's OpenBLAS before looking for it)

    handles = _openblas_handles() if n else []
    old = [int(get()) for _, get in handles]
    try:
        for setter, _ in handles:
            setter(int(n))
        yield
    finally:
        for (setter, _), k in zip(handles, old):
            setter(k)


# --------------------------------------------------------------------------- analysis


def nullity_rules(s: np.ndarray, m: int, n: int) -> dict:
    """Nullity ``n - #{sigma > max(m, n) eps sigma_max}`` at the float32 and float64 rules."""
    s = np.asarray(s, np.float64)
    smax = s[0] if s.size else 0.0
    out = {}
    for name, dt in (("float32", np.float32), ("float64", np.float64)):
        tol = max(m, n) * float(np.finfo(dt).eps) * smax
        out[name] = int(n - np.sum(s > tol))
    return out


def partial_windings(kernel2d: np.ndarray, lo: tuple[int, int], grid: int = 256):
    """Winding numbers about 0 of the partial symbols of a SAME-padded 2-D kernel.

    The SAME operator is the finite section of the 2-level Toeplitz operator with symbol
    ``a(z, w) = sum_ij k[i, j] z^(i - lo_h) w^(j - lo_w)``.  For ``|w| = 1`` fixed,
    ``z -> a(z, w)`` winds ``#(roots of sum_i c_i(w) z^i in |z| < 1) - lo_h`` times around 0
    on the unit circle (and symmetrically in ``w``).  A nonzero winding makes the half-plane
    Toeplitz operator non-invertible (Fredholm index != 0), and the finite sections then have
    singular values that decay like ``rho^N``.

    Returns:
      dict with ``rows``/``cols``: sets of winding numbers seen over the ``grid`` frequencies
      of the other variable, and ``min_abs_symbol``: ``min |a|`` on the ``grid x grid`` torus.
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


def _random_kernel(rng: np.random.Generator, size: int, cin: int = 1, cout: int = 1):
    """Float32 kernel like Flax's default init (LeCun normal up to truncation)."""
    return (rng.standard_normal((size, size, cin, cout)) / math.sqrt(size * size * cin)).astype(
        np.float32)


def lemma_b1_trials(hw: tuple[int, int], size: int, trials: int, seed: int = 0,
                    exact: int = 0) -> dict:
    """Fraction of random single-channel ``size x size`` kernels with full rank on ``hw``.

    For VALID and SAME padding: float64-accurate singular values (no squaring), nullity at the
    float32 rule ``max(m, n) eps32 sigma_max`` (the nsjax default for float32 layers) and the
    float64 rule; for SAME also the partial-winding predictor; for the first ``exact``
    kernels the exact rank over GF(p).
    """
    from nsjax._conv import conv_output_shape, conv_singular_values, exact_conv_rank

    rng = np.random.default_rng(seed)
    h, w = hw
    shape = (h, w, 1)
    n = h * w
    res = {}
    kernels = [_random_kernel(rng, size) for _ in range(trials)]
    for padding in ("VALID", "SAME"):
        ho, wo, _ = conv_output_shape(shape, (size, size, 1, 1), padding=padding)
        m = ho * wo
        expect = n - min(m, n)
        rows = []
        for i, k in enumerate(kernels):
            s = conv_singular_values(k, shape, padding=padding, method="svd")
            rules = nullity_rules(s, m, n)
            row = {"nullity_f32": rules["float32"], "nullity_f64": rules["float64"],
                   "sigma_min_rel": float(s[min(m, n) - 1] / s[0])}
            if padding == "SAME":
                from jax import lax

                lo = tuple(int(a) for a, _ in lax.padtype_to_pads((h, w), (size, size), (1, 1),
                                                                   "SAME"))
                wd = partial_windings(k[:, :, 0, 0], lo)
                row["windings_zero"] = wd["rows"] == {0} and wd["cols"] == {0}
            if i < exact:
                row["exact_nullity"] = n - exact_conv_rank(k, shape, padding=padding)
            rows.append(row)
        f32 = np.array([r["nullity_f32"] for r in rows])
        f64 = np.array([r["nullity_f64"] for r in rows])
        out = {
            "expected_nullity": expect,
            "trials": trials,
            "full_rank_fraction_f32_rule": float(np.mean(f32 == expect)),
            "full_rank_fraction_f64_rule": float(np.mean(f64 == expect)),
            "nullity_f32_histogram": {int(v): int(c) for v, c in
                                      zip(*np.unique(f32, return_counts=True))},
            "nullity_f64_histogram": {int(v): int(c) for v, c in
                                      zip(*np.unique(f64, return_counts=True))},
            "sigma_min_rel_quantiles": {q: float(np.quantile([r["sigma_min_rel"] for r in rows],
                                                             float(q)))
                                        for q in ("0.0", "0.1", "0.5", "0.9")},
        }
        if exact:
            ex = [r["exact_nullity"] for r in rows if "exact_nullity" in r]
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
                "winding_nonzero_and_deficient_f32": int(np.sum(~wz & ~ok)),
            }
        res[padding] = out
    return res


def planted_kernels(size: int = 3) -> list[tuple[str, str, np.ndarray]]:
    """Degenerate kernels ``(name, why, kernel (kh, kw, 1, cout) float32)`` for Lemma B.1.

    Exact dyadic entries, so exact ranks are meaningful.
    """
    out = []
    z = np.zeros((size, size, 1, 1), np.float32)
    out.append(("zero", "the zero kernel: C = 0", z))
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
    g = np.array([[1.0, 1.0], [1.0, -1.0]], np.float32)  # common 2x2 factor
    rng = np.random.default_rng(7)
    ks = np.zeros((3, 3, 1, 6), np.float32)
    for i in range(6):
        h = np.round(rng.standard_normal((2, 2)) * 8) / 8
        ks[:, :, 0, i] = _full_conv(g, h)
    out.append(("common-factor-x6", "six kernels k_i = g * h_i sharing a 2x2 factor g: "
                "Null(C) contains Null(g-VALID), dim >= 784 - 27*27 = 55 on 28x28", ks))
    ks = np.zeros((3, 3, 1, 6), np.float32)
    uu = np.array([1.0, 0.5, -0.25], np.float32)
    for i in range(6):
        ks[:, :, 0, i] = np.outer(uu, np.round(rng.standard_normal(3) * 8) / 8)
    out.append(("common-row-factor-x6", "six separable kernels u x v_i with the same u: "
                "Null(C) contains {x : u-VALID along columns = 0}, dim >= 2 * 28", ks))
    return out


def _full_conv(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros((a.shape[0] + b.shape[0] - 1, a.shape[1] + b.shape[1] - 1), np.float64)
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            out[i:i + b.shape[0], j:j + b.shape[1]] += a[i, j] * b
    return out.astype(np.float32)


def planted_report(hw: tuple[int, int], size: int = 3) -> list[dict]:
    """Numerical (float32 and float64 rules) and exact nullities of :func:`planted_kernels`."""
    from nsjax._conv import conv_output_shape, conv_singular_values, exact_conv_rank

    shape = (hw[0], hw[1], 1)
    n = hw[0] * hw[1]
    rows = []
    for name, why, k in planted_kernels(size):
        row = {"name": name, "why": why, "kernels": int(k.shape[-1])}
        for padding in ("VALID", "SAME"):
            ho, wo, cout = conv_output_shape(shape, k.shape, padding=padding)
            m = ho * wo * cout
            s = conv_singular_values(k, shape, padding=padding, method="svd")
            rules = nullity_rules(s, m, n)
            row[padding] = {"generic_nullity": n - min(n, ho * wo * min(cout, size * size)),
                            "nullity_f32": rules["float32"], "nullity_f64": rules["float64"],
                            "exact_nullity": n - exact_conv_rank(k, shape, padding=padding),
                            "sigma_min_rel": float(s[-1] / s[0]) if s[0] > 0 else 0.0}
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- the command


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(t) for t in text.split(",") if t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected H,W,C with positive sizes, got {text!r}")
    return shape


def _model(args):
    import flax.linen as nn

    import nsjax

    if args.dilation == 1:
        return nsjax.CNN(input_shape=tuple(args.input), kernels=args.kernels,
                         kernel_size=args.size, padding=args.padding, stride=args.stride)

    class DilatedCNN(nn.Module):  # nsjax.CNN has no dilation: same shape of net
        @nn.compact
        def __call__(self, x):
            h = x.reshape((-1,) + tuple(args.input))
            h = nn.Conv(args.kernels, (args.size, args.size), strides=args.stride,
                        padding=args.padding, kernel_dilation=args.dilation, name="Conv_0")(h)
            h = nn.relu(h).reshape(h.shape[0], -1)
            h = nn.Dense(10)(nn.relu(nn.Dense(32)(h)))
            return h.reshape(x.shape[:-3] + (10,))

    return DilatedCNN()


def _cmd(args: argparse.Namespace) -> int:
    with limit_blas_threads(args.blas_threads):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    import jax

    import nsjax
    from nsjax._conv import conv_null_space, conv_output_shape

    shape = tuple(args.input)
    if args.padding.upper() not in ("VALID", "SAME", "CIRCULAR", "REFLECT"):
        raise ValueError(f"--padding must be VALID, SAME, CIRCULAR or REFLECT, got {args.padding}")
    model = _model(args)
    params = nsjax.init_params(model, jax.random.key(args.seed), shape)
    kernel = params["params"]["Conv_0"]["kernel"]
    conv = dict(strides=args.stride, padding=args.padding, dilation=args.dilation)
    ho, wo, cout = conv_output_shape(shape, kernel.shape, **conv)
    n = math.prod(shape)
    t0 = time.perf_counter()
    per_kernel = [conv_null_space(kernel[..., i:i + 1], shape, rtol=args.rtol, **conv).dim
                  for i in range(cout)]
    t1 = time.perf_counter()
    ns = nsjax.null_space_of(model, params, shape, rtol=args.rtol)
    t2 = time.perf_counter()
    res = None
    if ns.dim:
        res = nsjax.check_invariance(lambda x: model.apply(params, x), ns,
                                     jax.random.key(args.seed + 1), n_probes=args.probes)
    lemma = planted = None
    if args.lemma_trials:
        lemma = lemma_b1_trials(shape[:2], args.size, args.lemma_trials, seed=args.seed,
                                exact=args.exact_trials)
        planted = planted_report(shape[:2], args.size)
    report = {
        "input": list(shape), "kernels": cout, "size": args.size, "padding": args.padding,
        "stride": args.stride, "dilation": args.dilation, "seed": args.seed,
        "output": [ho, wo, cout], "n": n, "m": ho * wo * cout,
        "per_kernel_nullity": per_kernel,
        "per_kernel_generic_nullity": n - min(n, ho * wo),
        "intersection_nullity": ns.dim, "rank": ns.rank, "rank_tolerance": float(ns.tol),
        "sigma_min_over_max": float(ns.singular_values[-1] / ns.singular_values[0])
        if ns.singular_values.size else None,
        "seconds_per_kernel_null_spaces": t1 - t0, "seconds_intersection": t2 - t1,
        "invariance_max_rel_error": None if res is None else res.max_rel_error,
        "invariance_max_ulps": None if res is None else res.max_ulps,
        "invariance_passed": None if res is None else res.passed,
        "lemma_b1": lemma, "planted": planted,
    }
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        _print(report, res)
    return 0 if res is None or res.passed else 1


def _print(r: dict, res) -> None:
    print(f"CNN first layer: {r['kernels']} x {r['size']}x{r['size']} conv, padding "
          f"{r['padding']}, stride {r['stride']}, dilation {r['dilation']}, input "
          f"{tuple(r['input'])} -> {tuple(r['output'])}  (seed {r['seed']})")
    pk = r["per_kernel_nullity"]
    pk_text = f"{pk[0]} (all {len(pk)} kernels)" if len(set(pk)) == 1 else str(pk)
    print(f"  per-kernel nullity: {pk_text}  (generic single kernel: n - Ho*Wo = "
          f"{r['per_kernel_generic_nullity']})")
    print(f"  intersection Null(C): dim {r['intersection_nullity']} (rank {r['rank']} of "
          f"n = {r['n']}, tolerance {r['rank_tolerance']:.3e}, sigma_min/sigma_max "
          f"{r['sigma_min_over_max']:.3e})  [{r['seconds_intersection']:.2f} s]")
    if res is not None:
        print(f"  invariance f(x + a v) = f(x): {res.summary()}")
    else:
        print("  null space trivial: no invariance to check")
    if r["lemma_b1"]:
        for pad, d in r["lemma_b1"].items():
            line = (f"  Lemma B.1, {pad}, {d['trials']} random kernels: full rank at the "
                    f"float32 rule {100 * d['full_rank_fraction_f32_rule']:.0f}%, float64 rule "
                    f"{100 * d['full_rank_fraction_f64_rule']:.0f}%")
            if "exact_full_rank_fraction" in d:
                line += (f", exactly (GF(p)) {100 * d['exact_full_rank_fraction']:.0f}% of "
                         f"{d['exact_trials']}")
            print(line)
            if pad == "SAME":
                print(f"    nullity histogram (float32 rule): {d['nullity_f32_histogram']}; "
                      f"partial windings all zero for "
                      f"{100 * d['windings_zero_fraction']:.0f}%: {d['predictor']}")
        print("  planted degenerate kernels (nullity float32 rule / float64 rule / exact):")
        for p in r["planted"]:
            v, s = p["VALID"], p["SAME"]
            print(f"    {p['name']:<22} VALID {v['nullity_f32']}/{v['nullity_f64']}/"
                  f"{v['exact_nullity']} (generic {v['generic_nullity']})   SAME "
                  f"{s['nullity_f32']}/{s['nullity_f64']}/{s['exact_nullity']} (generic "
                  f"{s['generic_nullity']})")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``conv-nullspace`` on an ``argparse`` subparsers object."""
    p = subparsers.add_parser(
        "conv-nullspace", help="null space of a CNN's first convolution (and Lemma B.1)",
        description="Build an nsjax CNN whose first layer is KERNELS SIZExSIZE convolutions, "
        "print each kernel's nullity, the dimension of their intersection Null(C) and the "
        "invariance error, and check Lemma B.1 (single-channel H x W images, as in the paper) "
        "on random and planted degenerate kernels.")
    p.add_argument("--input", type=_shape, default=(28, 28, 1), help="H,W,C (default 28,28,1)")
    p.add_argument("--kernels", type=int, default=6, help="number of kernels (default 6)")
    p.add_argument("--size", type=int, default=3, help="kernel side (default 3)")
    p.add_argument("--padding", default="VALID", help="VALID, SAME, CIRCULAR or REFLECT")
    p.add_argument("--stride", type=int, default=1)
    p.add_argument("--dilation", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rtol", type=float, default=None,
                   help="relative rank tolerance (default max(m, n) * eps32, the dense rule; "
                   "max(m, n) * 2.2e-16 is the float64 rule)")
    p.add_argument("--probes", type=int, default=64, help="invariance probes (default 64)")
    p.add_argument("--lemma-trials", type=int, default=200,
                   help="random kernels for the Lemma B.1 check (0: skip; default 200)")
    p.add_argument("--exact-trials", type=int, default=20,
                   help="of those, how many get an exact rank over GF(p) (default 20)")
    p.add_argument("--blas-threads", type=int, default=1,
                   help="cap OpenBLAS threads while running (0: leave as is; default 1, "
                   "because threaded OpenBLAS spin-waits on shared cores)")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.set_defaults(func=_cmd)
    return p
