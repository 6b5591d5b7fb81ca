"""Null space of a randomly initialised FCNN and its invariance check (``nsjax nullspace``)."""

from __future__ import annotations

import jax

from nsjax._first_layer import null_space_of
from nsjax._invariance import check_invariance
from nsjax._models import FCNN, init_params, parse_arch

__all__ = ["run_nullspace", "nullspace_summary"]


def run_nullspace(arch="784,32,16,10", *, activation: str = "relu", seed: int = 0,
                  input_shape: tuple[int, ...] | None = None, rtol: float | None = None,
                  probes: int = 64) -> dict:
    """Initialise ``FCNN(arch)`` from ``seed``, find its null space, check the invariant.

    Returns:
      report dict: ``rank``, ``null_space_dim``, ``rank_tolerance`` and the invariance
      figures (``None`` when the null space is trivial: nothing to check).
    """
    arch = parse_arch(arch)
    model = FCNN(arch, activation=activation)
    input_shape = tuple(input_shape or (arch[0],))
    params = init_params(model, jax.random.key(seed), input_shape)
    ns = null_space_of(model, params, input_shape, rtol=rtol)
    res = None
    if ns.dim:
        res = check_invariance(lambda x: model.apply(params, x), ns,
                               jax.random.key(seed + 1), n_probes=probes)
    return {
        "arch": list(arch), "activation": activation, "seed": seed,
        "input_shape": list(input_shape), "rank": ns.rank, "null_space_dim": ns.dim,
        "rank_tolerance": float(ns.tol),
        "invariance_max_rel_error": None if res is None else res.max_rel_error,
        "invariance_by_scale": None if res is None else res.by_scale(),
        "non_null_control_fraction": None if res is None else res.control_fraction,
        "invariance_passed": None if res is None else res.passed,
        "invariance_summary": None if res is None else res.summary(),
    }


def nullspace_summary(r: dict) -> str:
    """Human-readable lines of a :func:`run_nullspace` report."""
    arch = tuple(r["arch"])
    lines = [f"FCNN {arch} ({r['activation']}), seed {r['seed']}, input "
             f"{tuple(r['input_shape'])}",
             f"  first layer W1: {arch[1]} x {arch[0]}, rank {r['rank']} "
             f"(tolerance {r['rank_tolerance']:.3e})",
             f"  null space dim: {r['null_space_dim']}   (paper: n0 - n1 = "
             f"{arch[0] - arch[1]} for full-rank W1)"]
    if r["invariance_summary"] is not None:
        lines.append(f"  invariance f(x + a v) = f(x): {r['invariance_summary']}")
    return "\n".join(lines)
