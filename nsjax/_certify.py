"""A two-sided certificate for the null space ``N(f)`` of a network (beyond the paper).

The paper computes ``Null(W1)`` (the partial null space given by the first linear map) and
argues that it *usually* equals ``N(f)``.  This module checks it, network by network:

* **Lower bound.**  ``Null(f1) ⊆ N(f)`` for the first linear map ``f1`` (Lemma 2.3), so
  ``lower = dim Null(f1)``, from :func:`nsjax.null_space_of` (the package's rank rule).
* **Upper bound.**  If ``v ∈ N(f)`` then ``t -> f(x + t v)`` is constant, so wherever ``f`` is
  differentiable its directional derivative vanishes: ``J_f(x) v = 0``.  Hence, for ANY set
  of points ``x_1..x_p`` at which ``f`` is differentiable,

      N(f)  ⊆  ∩_i Null(J_f(x_i))  =  Null([J_f(x_1); ...; J_f(x_p)]),

  and ``upper = n - rank(stacked Jacobian)``.  ReLU networks are piecewise linear: they are
  differentiable everywhere except on finitely many hyperplane pieces (measure zero), so
  points drawn from a continuous distribution -- uniform on the image domain ``[-1, 1]^n``
  by default -- are differentiable points with probability 1 and each one contributes a
  valid constraint.  Fewer points (or points from a narrow distribution such as the
  training images, on which some ReLU units may never fire) give a *larger* intersection:
  still a valid upper bound, only a looser one.  The bound holds for the definition of
  ``N(f)`` over all of ``R^n`` and, a fortiori, for the one restricted to the domain.
* **Meeting.**  The Jacobian factors through ``f1`` (``J_f(x) = J_{f2}(f1 x) W1``), so
  ``Null(f1) ⊆ ∩ Null(J_f(x_i))`` always; if the two dimensions are equal the spaces are
  equal and ``N(f) = Null(f1)`` is certified.  :attr:`Certificate.containment` measures that
  inclusion numerically (``||P_{upper^perp} B_lower||_2`` for an orthonormal basis ``B_lower``
  of the lower space; ~1e-6 for float32 weights).

Numerics.  The stacked Jacobian ``(p m, n)`` is formed in **float64**: the float32 weights are
cast (exactly) to float64 and ``f`` is differentiated inside ``jax.enable_x64(True)``.  Why:
every row of the stack lies, in exact arithmetic, in the row space of ``W1``; computed in
float32 each row also carries rounding components of relative size ~``eps32 = 1.2e-7`` in
*every* direction of ``R^n``.  Stacking hundreds of rows turns those into a floor of singular
values outside the true row space a few decades below ``sigma_max``, and the float32 rule's
tolerance ``max(p m, n) eps32`` sits between that floor and the genuine small singular values
with little margin on either side.  In float64 the floor drops to ~``eps64 sigma_max``, so the
rank is decided with a wide margin by the ONE rule of the package: :func:`nsjax.null_space` on
the stacked matrix, ``tol = max(atol, rtol sigma_max)``, ``rtol = max(p m, n) eps64``.
(Measured floors and margins: ``docs/results/certify.md``.)

Jacobians: ``jax.vmap`` over points of ``jax.jacrev`` (when the network has fewer outputs than
inputs, ``m`` backward passes per point) or ``jax.jacfwd`` (``n`` tangents) -- both exact;
computed in jitted chunks of points to bound memory.

Planted counter-examples (:func:`plant_dead_units`, :func:`plant_cancelling_pair`) build
networks whose null space is provably larger than ``Null(W1)``; the certificate finds it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nsjax._first_layer import first_linear_layer, null_space_of
from nsjax._model import Model, as_model
from nsjax._models import CNN, FCNN, input_shape_of
from nsjax._nullspace import NullSpace, null_space
from nsjax._stego import _as_bounds

__all__ = [
    "Certificate",
    "certify",
    "stacked_jacobian",
    "default_n_points",
    "plant_dead_units",
    "plant_cancelling_pair",
    "dead_unit_dim",
    "first_layer_matrix",
]


class Certificate(NamedTuple):
    """Result of :func:`certify`.

    Attributes:
      lower: ``dim Null(f1)`` (first linear map; Lemma 2.3), a lower bound of ``dim N(f)``.
      upper: ``n - rank([J_f(x_1); ...; J_f(x_p)])``, an upper bound of ``dim N(f)``.
      meets: ``lower == upper``: then ``N(f) = Null(f1)`` (see the module docstring).
      n: input dimension.
      n_points: number of points ``p`` the Jacobian was taken at.
      rows: rows of the stacked Jacobian (``p * outputs``).
      singular_values: ``(min(rows, n),)`` float64 singular values of the stack, descending.
      tol: the rank tolerance applied to them (``sigma_i > tol`` counts).
      rtol: the relative tolerance used (``max(rows, n) * eps64`` by default).
      lower_tol: tolerance of the lower bound's rank decision (float32 rule on ``W1``).
      containment: ``||P_{upper^perp} B_lower||_2``: how far the lower space sticks out of
        the upper one (0 in exact arithmetic; ~1e-6 for float32 weights).
      points: how the points were drawn (``"uniform[-1,1]"``, ``"data"`` or both).
      lower_space: the :class:`NullSpace` ``Null(f1)``.
      upper_space: the :class:`NullSpace` of the stacked Jacobian (float32 copy).
    """

    lower: int
    upper: int
    meets: bool
    n: int
    n_points: int
    rows: int
    singular_values: np.ndarray
    tol: float
    rtol: float
    lower_tol: float
    containment: float
    points: str
    lower_space: NullSpace
    upper_space: NullSpace

    def summary(self) -> dict:
        """JSON-able dict of the scalar fields (no arrays, no spaces)."""
        s = self.singular_values
        r = self.n - self.upper
        return {
            "lower": self.lower, "upper": self.upper, "meets": self.meets, "n": self.n,
            "n_points": self.n_points, "rows": self.rows, "tol": self.tol, "rtol": self.rtol,
            "lower_tol": self.lower_tol, "containment": self.containment, "points": self.points,
            "sigma_max": float(s[0]) if s.size else 0.0,
            "smallest_kept_sigma_rel": float(s[r - 1] / s[0]) if r > 0 else None,
            "largest_dropped_sigma_rel": float(s[r] / s[0]) if r < s.size and s[0] > 0 else None,
        }


def default_n_points(n: int, outputs: int) -> int:
    """``2 * ceil(n / outputs)``: twice the points needed to reach rank ``n`` in principle."""
    return 2 * math.ceil(n / max(1, outputs))


def _to_f64(tree):
    return jax.tree_util.tree_map(
        lambda a: jnp.asarray(a, jnp.float64) if jnp.issubdtype(jnp.asarray(a).dtype,
                                                               jnp.floating) else a, tree)


def _model_args(model, variables, rest, input_shape) -> tuple[Model, tuple[int, ...], Any]:
    """Normalise ``(model, variables, <next positional>)``: a non-Linen model has no
    variables, so its second positional argument is the next one (``certify(nnx_model,
    key)``, ``stacked_jacobian(eqx_mlp, points)``)."""
    if not isinstance(model, nn.Module) and rest is None:
        variables, rest = None, variables
    m = as_model(model, variables, input_shape=input_shape)
    return m, m.resolve_input_shape(), rest


def stacked_jacobian(model, variables=None, points=None, *, input_shape=None,
                     mode: str = "auto", chunk: int = 32, x64: bool = True) -> np.ndarray:
    """``[J_f(x_1); ...; J_f(x_p)]`` as a float64 NumPy array of shape ``(p * m, n)``.

    The model is applied to one flat input at a time (``x.reshape(input_shape)``), its float
    parameters are cast to float64 and everything runs inside ``jax.enable_x64(True)``.
    ``x64=False`` computes in float32 instead (only to show the rounding floor it leaves).

    Args:
      model, variables: any model :func:`nsjax.as_model` accepts (Linen: with its
        ``{"params": ...}``; NNX, Equinox, callables: ``stacked_jacobian(model, points)``).
      points: ``(p, n)`` or ``(p, *input_shape)`` inputs.
      input_shape: shape of one input (default: the model's, see :func:`nsjax.as_model`).
      mode: ``"rev"`` (``jax.jacrev``), ``"fwd"`` (``jax.jacfwd``) or ``"auto"`` (reverse
        mode when the network has fewer outputs than inputs).
      chunk: points per jitted ``vmap`` call.
    """
    m, input_shape, points = _model_args(model, variables, points, input_shape)
    if points is None:
        raise ValueError("no points: pass a (p, n) or (p, *input_shape) array")
    n = math.prod(input_shape)
    pts = np.asarray(points, np.float64).reshape(-1, n)
    if mode not in ("auto", "fwd", "rev"):
        raise ValueError(f"mode must be 'auto', 'fwd' or 'rev', got {mode!r}")
    dtype = jnp.float64 if x64 else jnp.float32
    with jax.enable_x64(x64):
        m64 = m.replace(params=_to_f64(m.params)) if x64 else m
        out_shape = jax.eval_shape(lambda x: m64.single(x.reshape(input_shape)),
                                   jax.ShapeDtypeStruct((n,), dtype))
        outputs = math.prod(out_shape.shape)
        rev = mode == "rev" or (mode == "auto" and outputs < n)
        out = []
        for i in range(0, pts.shape[0], chunk):
            block = pts[i:i + chunk]
            k = block.shape[0]
            if k < chunk and pts.shape[0] > chunk:  # pad: one compiled shape
                block = np.concatenate([block, np.repeat(block[-1:], chunk - k, 0)])
            jac = _jacobians(m64, jnp.asarray(block, dtype), input_shape, rev)
            out.append(np.asarray(jac, np.float64)[:k].reshape(-1, n))
    return np.concatenate(out) if out else np.zeros((0, n))


@functools.partial(jax.jit, static_argnames=("input_shape", "rev"))
def _jacobians(model: Model, x, input_shape, rev):
    """``(p, m, n)`` Jacobians of the flat-input model at the rows of ``x`` (cached per
    architecture, shape, dtype and x64 mode: the model's params are traced)."""

    def f(xx, mm):
        return mm.single(xx.reshape(input_shape)).reshape(-1)

    jf = jax.jacrev(f) if rev else jax.jacfwd(f)
    return jax.vmap(jf, in_axes=(0, None))(x, model)


def _points(key, n_points, n, data, bounds) -> tuple[np.ndarray, str]:
    """The uniform points in ``bounds`` plus ``data``, and their description."""
    lo, hi = _as_bounds(bounds)
    parts, kinds = [], []
    if n_points:
        parts.append(np.asarray(jax.random.uniform(key, (n_points, n), jnp.float32, lo, hi)))
        kinds.append(f"{n_points} uniform[{lo:g},{hi:g}]")
    if data is not None:
        d = np.asarray(data, np.float32).reshape(-1, n)
        parts.append(d)
        kinds.append(f"{d.shape[0]} data")
    if not parts:
        raise ValueError("no points: give n_points > 0 or data")
    return np.concatenate(parts), " + ".join(kinds)


def certify(
    model,
    variables=None,
    key: jax.Array | None = None,
    n_points: int | None = None,
    *,
    input_shape: Sequence[int] | None = None,
    data=None,
    bounds: tuple[float, float] = (-1.0, 1.0),
    rtol: float | None = None,
    atol: float = 0.0,
    mode: str = "auto",
    chunk: int = 32,
) -> Certificate:
    """Lower and upper bound of ``dim N(f)``, and whether they meet (module docstring).

    Args:
      model, variables: any model :func:`nsjax.as_model` accepts whose first operation is a
        dense or conv layer: a Linen module with its ``{"params": ...}``
        (``certify(model, variables, key)``), or an NNX / Equinox module or a callable
        (``certify(model, key)``).
      key: PRNG key for the uniform points.
      n_points: points drawn uniformly from the image domain ``bounds`` (default
        :func:`default_n_points`; 0 allowed when ``data`` is given).
      input_shape: shape of one input (default: the model's).
      data: optional ``(p_data, ...)`` extra points (e.g. training images), all used.
      bounds: ``(lo, hi)`` of the image domain the uniform points are drawn from (default
        the paper's ``[-1, 1]``; ``(0, 1)`` for images scaled by 1/255).
      rtol, atol: rank tolerance for the stacked Jacobian (:func:`nsjax.null_space`'s rule;
        default ``rtol = max(rows, n) * eps(float64)``).  The lower bound uses the package's
        default rule on the first layer.
      mode, chunk: see :func:`stacked_jacobian`.

    Returns:
      :class:`Certificate`.
    """
    m, input_shape, key = _model_args(model, variables, key, input_shape)
    n = math.prod(input_shape)
    lower = null_space_of(m)
    outputs = int(jax.eval_shape(m.single, jax.ShapeDtypeStruct(input_shape, jnp.float32)).size)
    if n_points is None:
        n_points = 0 if data is not None else default_n_points(n, outputs)
    if n_points < 0:
        raise ValueError(f"n_points must be >= 0, got {n_points}")
    if n_points and key is None:
        raise ValueError("certify needs a PRNG key for its uniform points (jax.random.key(0))")
    pts, kinds = _points(key, n_points, n, data, bounds)
    stack = stacked_jacobian(m, points=pts, mode=mode, chunk=chunk)
    with jax.enable_x64(True):
        up = null_space(jnp.asarray(stack), rtol=rtol, atol=atol, input_shape=input_shape)
        s = np.asarray(up.singular_values, np.float64)
        tol = float(up.tol)
        rb64 = np.asarray(up.row_basis, np.float64)
    used_rtol = float(rtol) if rtol is not None else float(max(stack.shape) *
                                                             np.finfo(np.float64).eps)
    upper = NullSpace(row_basis=jnp.asarray(rb64, jnp.float32),
                      singular_values=jnp.asarray(s, jnp.float32), tol=jnp.float32(tol),
                      n=n, rank=up.rank, input_shape=input_shape)
    containment = _containment(lower, rb64)
    return Certificate(
        lower=int(lower.dim), upper=int(up.dim), meets=int(lower.dim) == int(up.dim), n=n,
        n_points=int(pts.shape[0]), rows=int(stack.shape[0]), singular_values=s, tol=tol,
        rtol=used_rtol, lower_tol=float(lower.tol), containment=containment,
        points=kinds, lower_space=lower, upper_space=upper)


def _containment(lower: NullSpace, upper_row_basis: np.ndarray) -> float:
    """``||R_up^T B_low||_2``: the lower null space's reach into the upper row space."""
    if lower.dim == 0 or upper_row_basis.shape[1] == 0:
        return 0.0
    b = np.asarray(lower.basis(), np.float64)  # (n, dim_lower), orthonormal
    return float(np.linalg.norm(upper_row_basis.T @ b, 2))


# --------------------------------------------------------------------------- counter-examples


def _params(variables) -> dict:
    return jax.tree_util.tree_map(lambda a: a, dict(variables["params"]))


def _units(units, width: int) -> np.ndarray:
    idx = np.arange(int(units)) if np.isscalar(units) else np.asarray(units, int).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= width):
        raise ValueError(f"units must lie in [0, {width}), got {idx.tolist()}")
    return idx


def plant_dead_units(model: nn.Module, variables, units) -> dict:
    """Zero the OUTGOING weights of first-layer units, so their incoming rows stop mattering.

    For an :class:`nsjax.FCNN` with ``K >= 2`` layers, unit ``u`` of layer 1 feeds the next
    layer through row ``u`` of ``Dense_1``'s kernel (Flax ``(in, out)`` layout); zeroing it
    removes ``w_u`` from every Jacobian, so ``N(f) ⊇ Null(W1 without row u)``, which is one
    dimension larger than ``Null(W1)`` when ``W1`` has full row rank.  For an
    :class:`nsjax.CNN`, "unit" means a first-layer kernel (channel): the rows of the head's
    first Dense kernel that read that channel are zeroed.

    Args:
      units: an int ``k`` (the first ``k`` units) or a sequence of unit indices.

    Returns:
      new variables (the input is not modified).
    """
    params = _params(variables)
    if isinstance(model, FCNN):
        if len(model.arch) < 3:
            raise ValueError("plant_dead_units needs an FCNN with at least one hidden layer")
        idx = _units(units, model.arch[1])
        k = dict(params["Dense_1"])
        k["kernel"] = jnp.asarray(k["kernel"]).at[idx, :].set(0.0)
        params["Dense_1"] = k
    elif isinstance(model, CNN):
        idx = _units(units, model.kernels)
        name = "Dense_0"
        k = dict(params[name])
        rows = np.arange(k["kernel"].shape[0])
        dead = np.isin(rows % model.kernels, idx)  # channel-last flatten: row % C = channel
        k["kernel"] = jnp.asarray(k["kernel"]).at[np.flatnonzero(dead), :].set(0.0)
        params[name] = k
    else:
        raise TypeError(f"plant_dead_units supports FCNN and CNN, got {type(model).__name__}")
    return {**variables, "params": params}


def plant_cancelling_pair(model: nn.Module, variables, i: int = 0, j: int = 1) -> dict:
    """FCNN: make units ``i`` and ``j`` of layer 1 identical and cancel each other.

    Unit ``j`` gets unit ``i``'s incoming row and bias and the negated outgoing weights, so
    ``relu(w_i x + b_i) (o_i - o_i) = 0``: the pair contributes nothing.  ``W1`` loses one
    rank (``lower = n - n1 + 1``) but ``N(f)`` gains two dimensions (``upper = n - n1 + 2``
    for an otherwise full-rank ``W1``): a net where the lower bound moves and still misses.
    """
    if not isinstance(model, FCNN) or len(model.arch) < 3:
        raise TypeError("plant_cancelling_pair needs an FCNN with at least one hidden layer")
    if i == j:
        raise ValueError("i and j must differ")
    params = _params(variables)
    d0, d1 = dict(params["Dense_0"]), dict(params["Dense_1"])
    d0["kernel"] = jnp.asarray(d0["kernel"]).at[:, j].set(d0["kernel"][:, i])
    d0["bias"] = jnp.asarray(d0["bias"]).at[j].set(d0["bias"][i])
    d1["kernel"] = jnp.asarray(d1["kernel"]).at[j, :].set(-d1["kernel"][i, :])
    params["Dense_0"], params["Dense_1"] = d0, d1
    return {**variables, "params": params}


def first_layer_matrix(model: nn.Module, variables, input_shape=None) -> np.ndarray:
    """The first linear map as a float64 ``(out, n)`` operator-layout matrix (bias dropped).

    Dense: ``kernel.T``.  Otherwise (Conv): materialised with ``jax.jacfwd`` of the
    layer's linear map in float64 (exact: the map is linear).  Rows are in the layer's
    output order (channel last for ``nn.Conv``).
    """
    input_shape = tuple(input_shape or input_shape_of(model))
    layer = first_linear_layer(model, variables, input_shape)
    if isinstance(layer.module, nn.Dense) and len(layer.arg_shape) == 1:
        return np.asarray(layer.variables["params"]["kernel"], np.float64).T
    n = math.prod(input_shape)
    with jax.enable_x64(True):
        mod = layer.module.clone(parent=None)
        p = _to_f64(dict(layer.variables["params"]))
        if "bias" in p:
            p["bias"] = jnp.zeros_like(p["bias"])
        shape = layer.arg_shape

        def f1(x):
            return mod.apply({"params": p}, x.reshape((1,) + shape)).reshape(-1)

        return np.asarray(jax.jit(jax.jacfwd(f1))(jnp.zeros((n,), jnp.float64)))


def dead_unit_dim(model: nn.Module, variables, units, input_shape=None) -> int:
    """``n - rank`` of the first layer without the rows of ``units``: the null-space dimension
    :func:`plant_dead_units` produces (computed "by hand", independently of Jacobians).

    FCNN: rows ``units`` of ``W1`` set to zero (the same rank as removing them, and one
    matrix shape, hence one compiled SVD, for every choice of ``units``); CNN: the output
    channels ``units`` removed.  The rank uses the package's rule in the weights' dtype
    (float32) for an FCNN, in float64 for the materialised convolution.
    """
    w = first_layer_matrix(model, variables, input_shape)
    if isinstance(model, FCNN):
        idx = _units(units, model.arch[1])
        if np.unique(idx).size == w.shape[0]:
            return w.shape[1]
        w = w.copy()
        w[idx] = 0.0
        return int(null_space(jnp.asarray(w, jnp.float32), input_shape=(w.shape[1],)).dim)
    if isinstance(model, CNN):
        idx = _units(units, model.kernels)
        keep = np.flatnonzero(~np.isin(np.arange(w.shape[0]) % model.kernels, idx))
        return w.shape[1] if keep.size == 0 else _dim64(w[keep])
    raise TypeError(f"dead_unit_dim supports FCNN and CNN, got {type(model).__name__}")


def _dim64(a: np.ndarray) -> int:
    with jax.enable_x64(True):
        return int(null_space(jnp.asarray(a, jnp.float64), input_shape=(a.shape[1],)).dim)

