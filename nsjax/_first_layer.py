"""The partial null space given by a model's first linear map (paper, Def. 2.2).

For ``f = f2 o f1`` with ``f1`` linear, ``Null(f1)`` is a subspace of ``N(f)``
(Lemma 2.3).  For a Flax (Linen) model we find ``f1`` by watching the model run once:
the first leaf module that is called must be an ``nn.Dense`` or ``nn.Conv`` that receives
the model's input itself (up to a reshape).  Its bias is affine and does not change the
null space, so ``f1`` is the layer's Jacobian, i.e. the layer without its bias.

* ``nn.Dense`` on the flattened input: ``Null(W1)`` from the kernel directly (``W1 =
  kernel.T``), no extra work.
* ``nn.Conv``: the structured exact route of :mod:`nsjax._conv` (window index map, float64
  SVD / banded Gram, block-diagonal patch mode for stride == kernel size), same rank rule;
  convs it does not model (input dilation, 1-D/3-D) fall back to the dense route below.
* A Dense on an un-flattened input: the map is materialised as an ``(out, n)`` matrix with
  ``jax.jacfwd`` (exact: the Jacobian of an affine map is its linear part) and passed to
  :func:`nsjax.null_space`.  Cost: ``n`` forward passes fused into one batched call, memory
  ``out * n`` floats.

Anything else before the first linear layer (an activation, a normalisation, a learned
scale) makes the first operation nonlinear and raises ``ValueError``.  A fixed nonzero
scalar scaling or a reshape before it (``Dense(..)(2.0 * x)``) keeps the null space and is
accepted.  And the first linear map must be the *only* reader of the input: the model is
traced (``jax.make_jaxpr``) and a skip connection or second head from the raw input (which
sees directions the first layer ignores) raises ``ValueError`` naming the other reader.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.extend.core as jex_core
import jax.numpy as jnp
import numpy as np

from nsjax._model import LinearMap, Model, as_model
from nsjax._nullspace import NullSpace, _check_tolerances, null_space

__all__ = ["null_space_of", "first_linear_layer", "find_first_map", "FirstLayer"]

_LINEAR = (nn.Dense, nn.Conv)


class FirstLayer:
    """What :func:`first_linear_layer` found: the module, its variables, its input shape."""

    def __init__(self, module: nn.Module, variables, arg_shape: tuple[int, ...], path: str):
        self.module = module
        self.variables = variables
        self.arg_shape = arg_shape  # shape of the layer's input for ONE example
        self.path = path

    @property
    def kind(self) -> str:
        return type(self.module).__name__

    def linear_map(self):
        """``x (n,) -> (out,)``: the layer without bias, as a function of the flat input."""
        mod = self.module.clone(parent=None)
        params = dict(self.variables["params"])
        if "bias" in params:
            params["bias"] = jnp.zeros_like(params["bias"])
        shape = self.arg_shape

        def f1(x):
            return mod.apply({"params": params}, x.reshape((1,) + shape)).reshape(-1)

        return f1

    def __repr__(self):
        return f"FirstLayer({self.kind} at {self.path!r}, input {self.arg_shape})"


def _check_variables(model: nn.Module, variables) -> None:
    """Linen variables are ``{"params": {...}, ...}``; say so when given anything else."""
    if not isinstance(variables, Mapping) or not all(isinstance(k, str) for k in variables):
        raise TypeError(f"variables must be the dict model.init returns ({{'params': ...}}), "
                        f"got {type(variables).__name__}")
    if "params" not in variables:
        hint = (" (this looks like the params tree itself: pass {'params': params})"
                if any(isinstance(v, Mapping) for v in variables.values()) else "")
        raise ValueError(f"variables for {type(model).__name__} have no 'params' collection; "
                         f"got collections {sorted(variables)}{hint}")


def first_linear_layer(model: nn.Module, variables, input_shape: Sequence[int]) -> FirstLayer:
    """Run ``model`` once on a random input and return its first layer if it is linear.

    Raises:
      ValueError: if the first leaf module is not ``nn.Dense``/``nn.Conv``, does not
        receive the model input itself (up to a reshape and a fixed nonzero scalar factor:
        something nonlinear ran before it), or is not the only reader of the input (a skip
        connection or second head from the input; the message names the other reader).
    """
    input_shape = tuple(int(d) for d in input_shape)
    n = math.prod(input_shape)
    x = jax.random.uniform(jax.random.key(0), (1,) + input_shape, minval=-1.0, maxval=1.0)
    calls: list[tuple[nn.Module, tuple]] = []

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name == "__call__" and not calls and (
                module.scope.path or isinstance(module, _LINEAR)):
            # First submodule call (or the model itself, a bare nn.Dense / nn.Conv).
            # Leaf = a module type we know, or anything else.
            calls.append((module, args))
        return next_fun(*args, **kwargs)

    _check_variables(model, variables)
    try:
        with nn.intercept_methods(interceptor):
            model.apply(variables, x)
    except TypeError as err:  # e.g. a model that takes several inputs
        raise ValueError(
            f"null_space_of runs model.apply(variables, x) with one input x of shape "
            f"(1, *{input_shape}); {type(model).__name__} failed on it ({err}). A model with "
            "several inputs or another call signature: pass its first linear map to "
            "nsjax.null_space (a Dense kernel as kernel.T) instead") from None

    if not calls:
        raise ValueError(f"{type(model).__name__} calls no submodule; expected its first "
                         "operation to be an nn.Dense or nn.Conv layer")
    module, args = calls[0]
    path = "/".join(module.scope.path) or type(module).__name__
    if not isinstance(module, _LINEAR):
        raise ValueError(
            f"the first operation of {type(model).__name__} is {type(module).__name__} "
            f"({path}), which is not linear; null_space_of() needs a model whose first layer "
            "is nn.Dense or nn.Conv applied to the input (paper, Def. 2.2)"
        )
    arg = args[0]
    if arg.size != n or not _proportional(np.asarray(arg).reshape(-1), np.asarray(x).reshape(-1)):
        raise ValueError(
            f"the first layer {type(module).__name__} ({path}) does not receive the model input "
            "itself: something (an activation or other transform) runs before it, so the "
            "model's first operation is not linear and its partial null space is not defined "
            "by that layer"
        )
    arg_shape = tuple(arg.shape[1:]) if arg.shape[0] == 1 else tuple(arg.shape)
    _check_single_reader(model, variables, x, path)
    return FirstLayer(module, module.variables, arg_shape, path)


def _proportional(arg: np.ndarray, x: np.ndarray) -> bool:
    """Whether ``arg == c x`` for one scalar ``c != 0``, up to rounding of ``c x``.

    ``c`` is the least-squares factor; each entry of ``fl(c x)`` errs by at most
    ``eps(arg) |c x_i| / 2`` (one rounding, or one per cast for a lower-precision ``arg``),
    so we allow ``4 eps(arg) |c| max|x|``.  ``c = 1`` exactly when ``arg`` is ``x``.
    """
    if not np.issubdtype(arg.dtype, np.floating) and arg.dtype.kind != "V":
        return False
    a64, x64 = np.asarray(arg, np.float64), np.asarray(x, np.float64)
    c = float(a64 @ x64) / float(x64 @ x64)
    if c == 0.0 or not np.isfinite(c):
        return False
    eps = float(jnp.finfo(arg.dtype).eps)
    return bool(np.abs(a64 - c * x64).max() <= 4 * eps * abs(c) * np.abs(x64).max())


# --------------------------------------------------------------------------- input readers
#
# The interceptor above finds the first module called and checks that it receives the
# input.  That alone does not make Null(f1) a null space of the model: a skip connection or
# a second head that also reads x (``Dense(10)(x)`` added to the output, ``concatenate([h,
# x])``) sees the directions f1 ignores.  So we trace ``x -> model.apply(variables, x)`` and
# follow every value derived from x by a *relayout or fixed nonzero scaling* (which keep
# the null space: ``Null(W (c P x)) = Null(W P)`` for c != 0 and a reshape P); each other
# equation that reads such a value is a reader of the raw input.  Exactly one may exist,
# and it must be a linear map (dot_general / conv_general_dilated) with x on one side only.

# primitives that move or re-type values without mixing them (float -> float converts only)
_RELAYOUT = {"reshape", "squeeze", "expand_dims", "convert_element_type", "copy", "copy_p"}
_LINEAR_PRIMS = {"dot_general", "conv_general_dilated"}
# call-like primitives whose body runs once on the same operands: followed inside
_CALLS = {"pjit", "jit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call",
          "custom_vjp_call_jaxpr", "checkpoint", "remat", "remat2"}


def _where(eqn) -> str:
    """The Flax module path of an equation (its JAX name stack), or ``"the model"``."""
    try:
        where = str(eqn.source_info.name_stack)
    except AttributeError:  # pragma: no cover - a JAX without name stacks
        where = ""
    return where or "the model"


def _known(v, consts: dict):
    """The concrete value of a jaxpr operand, or None (a Literal, or a known constant)."""
    if isinstance(v, jex_core.Literal):
        return np.asarray(v.val)
    return consts.get(v)


def _scalar_factor(eqn, tainted, consts) -> str | None:
    """For ``mul``/``div``/``neg`` reading the input: None if it is a fixed nonzero scalar
    scaling of it (keeps the null space), else why not."""
    name = eqn.primitive.name
    if name == "neg":
        return None
    ops = list(eqn.invars)
    if name == "div" and ops[1] in tainted:
        return "divides by the input"
    other = [v for v in ops if not (isinstance(v, jex_core.Var) and v in tainted)]
    if not other:
        return "multiplies the input by itself"
    val = _known(other[0], consts)
    if val is None:
        return "scales the input by a value computed in the model"
    if val.size != 1:
        return (f"scales the input elementwise by a {val.shape} array (that changes the "
                "null space)")
    if not np.isfinite(val).all() or float(val.reshape(())) == 0.0:
        return f"scales the input by {float(val.reshape(()))}"
    return None


def _follow(jaxpr, tainted: set, consts: dict, linear: list, other: list) -> list[bool]:
    """Walk ``jaxpr`` with ``tainted`` input-derived vars; fill ``linear`` (equations that
    apply a linear map to the input) and ``other`` (``(what, where)`` of any other reader).
    Returns, per outvar, whether it is input-derived."""
    for eqn in jaxpr.eqns:
        reads = [i for i, v in enumerate(eqn.invars)
                 if isinstance(v, jex_core.Var) and v in tainted]
        name = eqn.primitive.name
        if not reads:
            # keep constants computed from constants (a converted or reshaped parameter)
            vals = [_known(v, consts) for v in eqn.invars]
            if (eqn.invars and all(v is not None for v in vals) and len(eqn.outvars) == 1
                    and name not in _CALLS):
                try:
                    consts[eqn.outvars[0]] = np.asarray(eqn.primitive.bind(*vals, **eqn.params))
                except Exception:  # noqa: BLE001 - unknown stays unknown (conservative)
                    pass
            continue
        if (name in _RELAYOUT and (name != "convert_element_type"
                                   or jnp.issubdtype(eqn.params["new_dtype"], jnp.floating))
                or (name == "broadcast_in_dim"  # adding unit axes only: a reshape
                    and math.prod(eqn.outvars[0].aval.shape)
                    == math.prod(eqn.invars[0].aval.shape))):
            tainted.update(eqn.outvars)
        elif name in ("mul", "div", "neg"):
            why = _scalar_factor(eqn, tainted, consts)
            if why is None:
                tainted.update(eqn.outvars)
            else:
                other.append((f"{name} ({why})", _where(eqn)))
        elif name in _LINEAR_PRIMS:
            if reads == [0] or (name == "dot_general" and reads == [1]):
                linear.append(_Linear(eqn, reads[0], consts))
            else:
                other.append((f"{name} with the input on both sides", _where(eqn)))
        elif name in _CALLS:
            sub = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
            body = getattr(sub, "jaxpr", sub)
            if body is None or len(body.invars) != len(eqn.invars):
                other.append((name, _where(eqn)))
                continue
            sub_consts = dict(zip(body.constvars, getattr(sub, "consts", ())))
            for v_out, v_in in zip(eqn.invars, body.invars):
                val = _known(v_out, consts)
                if val is not None:
                    sub_consts[v_in] = val
            sub_tainted = {body.invars[i] for i in reads}
            flags = _follow(body, sub_tainted, sub_consts, linear, other)
            tainted.update(v for v, f in zip(eqn.outvars, flags) if f)
        else:
            other.append((name, _where(eqn)))
    return [isinstance(v, jex_core.Var) and v in tainted for v in jaxpr.outvars]


class _Linear(NamedTuple):
    """A linear equation reading the input: the operand index of the input and the known
    values of its scope (the kernel is one of them)."""

    eqn: Any
    side: int
    consts: dict


def _check_single_reader(model: nn.Module, variables, x: jax.Array, layer_path: str) -> _Linear:
    """Raise ``ValueError`` unless the first linear map is the only reader of the input;
    return that map's equation."""
    return _single_reader(lambda x: model.apply(variables, x), type(model).__name__, x,
                          layer_path)


def _single_reader(fn, name: str, x: jax.Array, layer_path: str | None) -> _Linear:
    """The one linear equation that reads ``x`` in ``fn``; ``ValueError`` if there is not
    exactly one, or if anything else reads the input."""
    try:
        closed = jax.make_jaxpr(fn)(x)
    except Exception as e:  # noqa: BLE001 - any tracing failure: say what we needed
        raise ValueError(
            f"could not trace {name} on an input of shape {tuple(x.shape)} to find its "
            f"first linear map ({type(e).__name__}: {e}); check input_shape (the shape of "
            "ONE input) and batched=, or describe the first layer explicitly: "
            "first_layer=nsjax.LinearMap.dense(...) or .conv(...)") from e
    jaxpr = closed.jaxpr
    consts = dict(zip(jaxpr.constvars, closed.consts))
    linear: list = []
    other: list[tuple[str, str]] = []
    reaches_output = _follow(jaxpr, {jaxpr.invars[0]}, consts, linear, other)
    if any(reaches_output):
        other.append(("the model's output (returned without a linear map)", "the model"))
    if len(linear) > 1:
        other.extend((f"a second linear map ({e.eqn.primitive.name})", _where(e.eqn))
                     for e in linear[1:])
    if not other and len(linear) == 1:
        return linear[0]
    what = "; ".join(f"{w} in {p}" for w, p in other[:4])
    more = f" and {len(other) - 4} more" if len(other) > 4 else ""
    if not linear:
        raise ValueError(
            f"found no linear map (dot_general / conv_general_dilated) applied to the input "
            f"of {name}; the input is read by: {what or 'nothing'}{more}.  The model's first "
            "operation must be a dense or conv layer on the input (paper, Def. 2.2); if it "
            "is and nsjax cannot see it, pass first_layer=nsjax.LinearMap.dense(kernel, "
            "layout=...) or nsjax.LinearMap.conv(kernel, ...)")
    first = layer_path or f"{linear[0].eqn.primitive.name} in {_where(linear[0].eqn)}"
    raise ValueError(
        f"the input of {name} is read not only by its first linear map ({first}) but also "
        f"by: {what}{more}.  Directions that map ignores can reach the output that way (a "
        "skip connection or second head), so Null(f1) is not a null space of the model.  "
        "If you know the input reaches the network only through that layer, describe it "
        "explicitly: first_layer=nsjax.LinearMap.dense(kernel, layout=...) (or "
        "nsjax.null_space(kernel.T, input_shape=...) for a Flax (in, out) kernel)")


def _map_from_eqn(lin: _Linear, n: int, name: str) -> tuple[LinearMap, tuple[int, ...]]:
    """The :class:`LinearMap` a traced linear equation applies to the (flat) input, and the
    shape of one input as the map sees it (the flat order is the model input's: only
    reshapes and scalings run before it)."""
    eqn, side = lin.eqn, lin.side
    kernel = _known(eqn.invars[1 - side], lin.consts)
    where = f"{eqn.primitive.name} in {_where(eqn)}"
    if kernel is None:
        raise ValueError(
            f"the first linear map of {name} ({where}) multiplies the input by weights that "
            "are not fixed constants of the model (computed from the input or passed at "
            "call time); describe it with first_layer=nsjax.LinearMap.dense/.conv")
    kernel = jnp.asarray(kernel)
    xshape = tuple(eqn.invars[side].aval.shape)
    xdtype = eqn.invars[side].aval.dtype
    p = eqn.params
    if eqn.primitive.name == "dot_general":
        (lc, rc), (lb, rb) = p["dimension_numbers"]
        cx, ck, bx = (lc, rc, lb) if side == 0 else (rc, lc, rb)
        if (not bx and kernel.ndim == 2 and len(ck) == 1
                and math.prod(xshape[d] for d in cx) == n):
            return LinearMap.dense(kernel, "in_out" if ck[0] == 0 else "out_in"), (n,)
    else:
        dn = p["dimension_numbers"]
        if (len(xshape) == 4 and xshape[0] == 1 and tuple(dn.lhs_spec) == (0, 3, 1, 2)
                and tuple(dn.rhs_spec) == (3, 2, 0, 1) and set(p["lhs_dilation"]) == {1}
                and p["feature_group_count"] == 1 and p["batch_group_count"] == 1):
            padding = tuple(tuple(int(v) for v in pair) for pair in p["padding"])
            return (LinearMap.conv(kernel, strides=tuple(p["window_strides"]), padding=padding,
                                   dilation=tuple(p["rhs_dilation"])), xshape[1:])

    def f1(xflat):  # any other layout: the equation itself, materialised below
        xo = xflat.reshape(xshape).astype(xdtype)
        ops = (xo, kernel) if side == 0 else (kernel, xo)
        return eqn.primitive.bind(*ops, **p).reshape(-1)

    matrix = jax.jit(jax.jacfwd(f1))(jnp.zeros((n,), jnp.result_type(xdtype, jnp.float32)))
    return LinearMap.dense(matrix, "out_in"), (n,)


def find_first_map(model, input_shape: Sequence[int] | None = None) -> LinearMap:
    """The first linear map of any :class:`nsjax.Model` (or what :func:`nsjax.as_model`
    accepts), found by tracing it once.

    Raises:
      ValueError: no linear map reads the input, something else reads it too (a skip
        connection, an activation before the first layer), or its weights are not fixed.
    """
    return _discover(as_model(model), input_shape)[0]


def _discover(m: Model, input_shape) -> tuple[LinearMap, tuple[int, ...]]:
    shape = m.resolve_input_shape(input_shape)
    n = math.prod(shape)
    x = jax.random.uniform(jax.random.key(0), ((1,) if m.batched else ()) + shape,
                           minval=-1.0, maxval=1.0)
    name = repr(m)
    lin = _single_reader(lambda x: m.apply_fn(m.params, x), name, x, None)
    return _map_from_eqn(lin, n, name)


def _operator_matches(given: LinearMap, found: LinearMap, n: int) -> bool:
    """Whether two dense maps are the same up to a nonzero scalar (a fixed input scaling
    before the first layer keeps the null space); float32 rounding tolerance."""
    a = np.asarray(given.operator(n), np.float64)
    b = np.asarray(found.operator(n), np.float64)
    if a.shape != b.shape:
        return False
    c = float((a * b).sum()) / max(float((b * b).sum()), 1e-300)
    return bool(c != 0 and np.abs(a - c * b).max() <= 1e-5 * max(np.abs(a).max(), 1e-30))


def _explicit_null_space(m: Model, shape, rtol, atol) -> NullSpace:
    """``Null(f1)`` from the explicit ``first_layer``, cross-checked against the traced map
    when the model can be traced (a dense kernel in the wrong orientation is an error)."""
    given: LinearMap = m.first_layer
    n = math.prod(shape)
    if given.kind == "dense":
        given.operator(n)  # shape/orientation against the input size
        try:
            found, _ = _discover(m, shape)
        except (ValueError, TypeError):
            found = None  # not traceable: the explicit description is trusted
        if found is not None and found.kind == "dense" and not _operator_matches(given, found, n):
            raise ValueError(
                f"first_layer={given!r} does not match the first linear map traced in the "
                f"model ({found!r}); a square kernel in the wrong layout (in_out vs out_in) "
                "looks like this")
    return given.null_space(shape, rtol=rtol, atol=atol)


def null_space_of(
    model,
    variables=None,
    input_shape: Sequence[int] | None = None,
    *,
    first_layer: LinearMap | None = None,
    params=None,
    batched: bool | None = None,
    rtol: float | None = None,
    atol: float = 0.0,
) -> NullSpace:
    """Partial null space ``Null(f1)`` of ``model`` given by its first linear layer.

    For an FCNN this is ``Null(W1)``, which the paper shows equals ``N(f)`` in almost all
    cases; for a CNN it is the intersection of the null spaces of the first-layer kernels.

    Args:
      model: any model :func:`nsjax.as_model` accepts: a Flax Linen module (with
        ``variables``), a Flax NNX module, an Equinox module or a JAX callable ``f(x)``
        (``f(params, x)`` with ``params=``), or a :class:`nsjax.Model`.  Its first operation
        must be a dense or conv layer on the input; it is found by tracing the model.
      variables: Linen only, ``{"params": ...}`` as returned by ``model.init``.  (For other
        models a tuple of ints here is taken as ``input_shape``.)
      input_shape: shape of ONE input, e.g. ``(28, 28, 1)`` or ``(784,)`` (optional when the
        model knows it: nsjax's models, NNX models starting with ``nnx.Linear``).
      first_layer: explicit :class:`nsjax.LinearMap` of the first linear map, for models in
        which it cannot be traced; checked against the input size (and against the traced
        map when there is one).
      params, batched: see :func:`nsjax.as_model`.
      rtol, atol: rank tolerance, see :func:`nsjax.null_space`.

    Returns:
      :class:`NullSpace` over ``R^n``, ``n = prod(input_shape)``, with ``input_shape`` set so
      that images ``(..., H, W, C)`` can be projected directly.

    Raises:
      ValueError: the first operation is not linear, the input has another reader (a skip
        connection), the explicit ``first_layer`` does not fit; the message says what was
        found and how to pass the first layer.
    """
    _check_tolerances(rtol, atol)  # before tracing the model: finite and >= 0
    if (not isinstance(model, nn.Module) and input_shape is None
            and isinstance(variables, tuple | list) and all(isinstance(d, int) for d in variables)):
        variables, input_shape = None, variables
    if isinstance(model, Model) and model.kind == "linen" and first_layer is None:
        if input_shape is None:
            input_shape = model.resolve_input_shape()
        model, variables = model.module, model.params  # the Linen route below
    if isinstance(model, nn.Module) and first_layer is None:
        if input_shape is None:
            input_shape = as_model(model, variables).resolve_input_shape()
        input_shape = tuple(int(d) for d in input_shape)
        try:
            return _linen_null_space(model, variables, input_shape, rtol, atol)
        except ValueError as linen_error:  # no nn.Dense/nn.Conv first: try the traced route
            try:
                found, arg_shape = _discover(as_model(model, variables, input_shape=input_shape),
                                             input_shape)
            except (ValueError, TypeError):
                raise linen_error from None
            return _found_null_space(found, arg_shape, input_shape, rtol, atol)
    m = as_model(model, variables, params=params, input_shape=input_shape,
                 first_layer=first_layer, batched=batched)
    shape = m.resolve_input_shape()
    if m.first_layer is not None:
        return _explicit_null_space(m, shape, rtol, atol)
    found, arg_shape = _discover(m, shape)
    return _found_null_space(found, arg_shape, shape, rtol, atol)


def _found_null_space(found: LinearMap, arg_shape, shape, rtol, atol) -> NullSpace:
    ns = found.null_space(arg_shape, rtol=rtol, atol=atol)
    if ns.patch is None and tuple(ns.input_shape) != shape:
        ns = ns.replace(input_shape=shape)  # same flat order: the layer sees a reshape
    return ns


def _linen_null_space(model: nn.Module, variables, input_shape, rtol, atol) -> NullSpace:
    """Linen route: the first module called, found with ``nn.intercept_methods``."""
    layer = first_linear_layer(model, variables, input_shape)
    if isinstance(layer.module, nn.Dense) and len(layer.arg_shape) == 1:
        kernel = layer.variables["params"]["kernel"]  # (n, out): Flax's in x out layout
        return null_space(kernel.T, rtol=rtol, atol=atol, input_shape=input_shape)
    # --- nn.Conv first layers: exact structured route (nsjax._conv) -----------------------
    if isinstance(layer.module, nn.Conv):
        from nsjax._conv import conv_null_space_of_layer

        ns = conv_null_space_of_layer(layer.module, layer.variables, layer.arg_shape,
                                      rtol=rtol, atol=atol)
        if ns.patch is None and tuple(ns.input_shape) != input_shape:
            ns = ns.replace(input_shape=input_shape)  # same flat order: the layer sees a reshape
        return ns
    # --- end nn.Conv route ----------------------------------------------------------------
    n = math.prod(input_shape)
    matrix = jax.jit(jax.jacfwd(layer.linear_map()))(jnp.zeros((n,), jnp.float32))  # (out, n)
    return null_space(matrix, rtol=rtol, atol=atol, input_shape=input_shape)
