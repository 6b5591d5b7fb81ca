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
scale) makes the first operation nonlinear and raises ``ValueError``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nsjax._nullspace import NullSpace, null_space

__all__ = ["null_space_of", "first_linear_layer", "FirstLayer"]

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


def first_linear_layer(model: nn.Module, variables, input_shape: Sequence[int]) -> FirstLayer:
    """Run ``model`` once on a random input and return its first layer if it is linear.

    Raises:
      ValueError: if the first leaf module is not ``nn.Dense``/``nn.Conv`` or does not
        receive the model input itself (something nonlinear ran before it).
    """
    input_shape = tuple(int(d) for d in input_shape)
    n = math.prod(input_shape)
    x = jax.random.uniform(jax.random.key(0), (1,) + input_shape, minval=-1.0, maxval=1.0)
    calls: list[tuple[nn.Module, tuple]] = []

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name == "__call__" and module.scope.path and not calls:
            # First submodule call.  Leaf = a module type we know, or anything else.
            calls.append((module, args))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        model.apply(variables, x)

    if not calls:
        raise ValueError(f"{type(model).__name__} calls no submodule; expected its first "
                         "operation to be an nn.Dense or nn.Conv layer")
    module, args = calls[0]
    path = "/".join(module.scope.path)
    if not isinstance(module, _LINEAR):
        raise ValueError(
            f"the first operation of {type(model).__name__} is {type(module).__name__} "
            f"({path}), which is not linear; null_space_of() needs a model whose first layer "
            "is nn.Dense or nn.Conv applied to the input (paper, Def. 2.2)"
        )
    arg = args[0]
    if arg.size != n or not np.array_equal(np.asarray(arg).reshape(-1), np.asarray(x).reshape(-1)):
        raise ValueError(
            f"the first layer {type(module).__name__} ({path}) does not receive the model input "
            "itself: something (an activation or other transform) runs before it, so the "
            "model's first operation is not linear and its partial null space is not defined "
            "by that layer"
        )
    arg_shape = tuple(arg.shape[1:]) if arg.shape[0] == 1 else tuple(arg.shape)
    return FirstLayer(module, module.variables, arg_shape, path)


def null_space_of(
    model: nn.Module,
    variables,
    input_shape: Sequence[int],
    *,
    rtol: float | None = None,
    atol: float = 0.0,
) -> NullSpace:
    """Partial null space ``Null(f1)`` of ``model`` given by its first linear layer.

    For an FCNN this is ``Null(W1)``, which the paper shows equals ``N(f)`` in almost all
    cases; for a CNN it is the intersection of the null spaces of the first-layer kernels.

    Args:
      model: a Flax Linen module whose first operation is ``nn.Dense`` or ``nn.Conv``.
      variables: its variables, ``{"params": ...}`` as returned by ``model.init``.
      input_shape: shape of ONE input, e.g. ``(28, 28, 1)`` or ``(784,)``.
      rtol, atol: rank tolerance, see :func:`nsjax.null_space`.

    Returns:
      :class:`NullSpace` over ``R^n``, ``n = prod(input_shape)``, with ``input_shape`` set so
      that images ``(..., H, W, C)`` can be projected directly.
    """
    input_shape = tuple(int(d) for d in input_shape)
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
