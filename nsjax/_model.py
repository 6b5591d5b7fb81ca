"""One model protocol for the whole package: Linen, NNX, Equinox, or a plain function.

A :class:`Model` is what nsjax needs from a network: a pure function
``apply_fn(params, x)`` and its ``params``, with ``x`` a batch ``(B, *input_shape)``.
:func:`as_model` builds one from

* a Flax **Linen** module with its variables (``as_model(module, variables)``),
* a Flax **NNX** module (``nnx.split`` gives the params; ``nnx.merge`` rebuilds it),
* any JAX **callable**: ``f(x)``, or ``f(params, x)`` with ``params=``; and any pytree
  callable such as an Equinox module, whose array leaves become the params.  Callables
  map ONE example by default (``batched=False``: the Model vmaps them, the Equinox
  convention); pass ``batched=True`` for a function of a batch.

The first linear map ``f1`` (the paper's ``W1``) of any model is found by tracing it
(:mod:`nsjax._first_layer`), or described explicitly with :class:`LinearMap` when it
cannot be (``LinearMap.dense(kernel, layout=...)``, ``LinearMap.conv(kernel, ...)``).

A Model is a pytree whose leaves are the params, so ``jax.jit`` compiles one function for
every set of weights of an architecture.  The explicit ``first_layer`` is host-side
metadata and is not carried through transformations.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nsjax._nullspace import NullSpace, null_space

__all__ = ["Model", "LinearMap", "as_model"]

_DENSE_LAYOUTS = {
    "in_out": "(in, out): Flax Linen/NNX, Keras, x @ kernel",
    "out_in": "(out, in): Equinox, PyTorch, the paper's W1, kernel @ x",
}
_CONV_LAYOUTS = {"HWIO": "(kh, kw, cin, cout): Flax", "OIHW": "(cout, cin, kh, kw): PyTorch"}


@dataclasses.dataclass(frozen=True, eq=False)
class LinearMap:
    """An explicit description of a model's first linear map (its bias left out).

    Build one with :meth:`dense` or :meth:`conv`.  The orientation is checked against the
    input size when the null space is computed: a kernel that only fits transposed is an
    error that says which layout to pass, never a silent ``dim = 0``.
    """

    kind: str  # "dense" or "conv"
    kernel: Any
    layout: str
    strides: Any = 1
    padding: Any = "VALID"
    dilation: Any = 1

    @classmethod
    def dense(cls, kernel, layout: str = "in_out") -> LinearMap:
        """A dense first layer.  ``kernel``: ``(n, out)`` for ``layout="in_out"`` (Flax,
        Keras), ``(out, n)`` for ``"out_in"`` (Equinox ``Linear.weight``, PyTorch)."""
        if layout not in _DENSE_LAYOUTS:
            raise ValueError(f"dense layout must be one of {sorted(_DENSE_LAYOUTS)}, "
                             f"got {layout!r}")
        k = jnp.asarray(kernel)
        if k.ndim != 2:
            raise ValueError(f"a dense kernel is 2-D, got shape {k.shape}")
        return cls("dense", k, layout)

    @classmethod
    def conv(cls, kernel, *, strides=1, padding="VALID", dilation=1,
             layout: str = "HWIO") -> LinearMap:
        """A 2-D convolution on ``(H, W, C)`` inputs, as ``nn.Conv`` computes it.

        ``kernel``: ``(kh, kw, cin, cout)`` (``layout="HWIO"``, Flax) or ``(cout, cin, kh,
        kw)`` (``"OIHW"``).  ``strides``, ``padding``, ``dilation`` as in
        :func:`nsjax.conv_null_space`.  Channels-first inputs: describe the map densely.
        """
        if layout not in _CONV_LAYOUTS:
            raise ValueError(f"conv layout must be one of {sorted(_CONV_LAYOUTS)}, "
                             f"got {layout!r}")
        k = jnp.asarray(kernel)
        if k.ndim != 4:
            raise ValueError(f"a 2-D conv kernel is 4-D ({_CONV_LAYOUTS[layout]}), got "
                             f"shape {k.shape}")
        if layout == "OIHW":
            k = jnp.transpose(k, (2, 3, 1, 0))
        return cls("conv", k, "HWIO", strides, padding, dilation)

    def operator(self, n: int) -> jax.Array:
        """Dense maps: the ``(out, n)`` operator-layout matrix, after checking that the
        kernel has ``n`` inputs in its declared layout."""
        if self.kind != "dense":
            raise ValueError("operator() is for dense maps; a conv map's null space comes "
                             "from nsjax.conv_null_space")
        k = self.kernel
        axis = 0 if self.layout == "in_out" else 1
        if k.shape[axis] != n:
            other = "out_in" if self.layout == "in_out" else "in_out"
            hint = (f"; its shape reads as layout={other!r} ({_DENSE_LAYOUTS[other]}): pass "
                    f"that layout (or the transposed kernel)" if k.shape[1 - axis] == n else "")
            raise ValueError(
                f"dense kernel of shape {tuple(k.shape)} with layout={self.layout!r} "
                f"({_DENSE_LAYOUTS[self.layout]}) has {k.shape[axis]} inputs, but the model "
                f"input has n = {n} values{hint}")
        return k.T if self.layout == "in_out" else k

    def null_space(self, input_shape: Sequence[int], *, rtol: float | None = None,
                   atol: float = 0.0) -> NullSpace:
        """``Null(f1)`` over inputs of ``input_shape`` (one example)."""
        input_shape = tuple(int(d) for d in input_shape)
        if self.kind == "dense":
            return null_space(self.operator(math.prod(input_shape)), rtol=rtol, atol=atol,
                              input_shape=input_shape)
        from nsjax._conv import conv_null_space

        if len(input_shape) != 3 or input_shape[-1] != self.kernel.shape[2]:
            raise ValueError(
                f"conv kernel {tuple(self.kernel.shape)} (HWIO) reads {self.kernel.shape[2]} "
                f"channels from (H, W, C) inputs, but the input shape is {input_shape}; for "
                "channels-first inputs pass the map densely (LinearMap.dense)")
        return conv_null_space(self.kernel, input_shape, strides=self.strides,
                               padding=self.padding, dilation=self.dilation, rtol=rtol,
                               atol=atol)

    def __repr__(self):
        shape = tuple(self.kernel.shape)
        if self.kind == "dense":
            return f"LinearMap.dense(kernel {shape}, layout={self.layout!r})"
        return (f"LinearMap.conv(kernel {shape} HWIO, strides={self.strides}, "
                f"padding={self.padding!r}, dilation={self.dilation})")


# ----------------------------------------------------------------------------- adapters
# Small hashable callables, so that a Model's static part compares equal across models
# of one architecture (jit caches on it).


@dataclasses.dataclass(frozen=True)
class _LinenApply:
    module: nn.Module

    def __call__(self, variables, x):
        return self.module.apply(variables, x)


@dataclasses.dataclass(frozen=True)
class _NNXApply:
    graphdef: Any

    def __call__(self, state, x):
        return nnx.merge(self.graphdef, state)(x)


@dataclasses.dataclass(frozen=True)
class _PlainApply:
    fn: Callable

    def __call__(self, params, x):
        return self.fn(x)


@dataclasses.dataclass(frozen=True)
class _PytreeApply:
    """A pytree callable (e.g. an Equinox module) split into array leaves and the rest."""

    treedef: Any
    static: tuple  # (index, leaf) of the non-array leaves

    def __call__(self, arrays, x):
        leaves = list(arrays)
        for i, leaf in self.static:
            leaves.insert(i, leaf)
        return jax.tree_util.tree_unflatten(self.treedef, leaves)(x)


def _is_array(leaf) -> bool:
    return isinstance(leaf, jax.Array | np.ndarray | np.generic)


@jax.tree_util.register_pytree_node_class
class Model:
    """A network as nsjax sees it: ``apply_fn(params, x)`` and ``params``.

    Attributes:
      apply_fn: hashable pure function; ``x`` is ``(B, *input_shape)`` when ``batched``,
        else one example ``input_shape``.
      params: pytree of arrays (the leaves of this pytree).
      input_shape: shape of ONE input, or ``None`` if not known yet.
      batched: whether ``apply_fn`` takes a batch.
      kind: ``"linen"``, ``"nnx"``, ``"pytree"`` or ``"callable"``.
      first_layer: explicit :class:`LinearMap`, or ``None`` (found by tracing).
      module: the Linen/NNX module it was built from (``None`` otherwise).

    Calling ``model(x)`` maps a batch ``(B, *input_shape) -> (B, ...)`` whatever ``batched``,
    and one example ``input_shape -> (...)`` when the input shape is known.
    """

    def __init__(self, apply_fn, params, *, input_shape=None, batched=True, kind="callable",
                 first_layer=None, module=None):
        self.apply_fn = apply_fn
        self.params = params
        self.input_shape = None if input_shape is None else tuple(int(d) for d in input_shape)
        self.batched = bool(batched)
        self.kind = kind
        self.first_layer = first_layer
        self.module = module

    def tree_flatten(self):
        return (self.params,), (self.apply_fn, self.input_shape, self.batched, self.kind)

    @classmethod
    def tree_unflatten(cls, aux, children):
        apply_fn, input_shape, batched, kind = aux
        return cls(apply_fn, children[0], input_shape=input_shape, batched=batched, kind=kind)

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.input_shape is not None and tuple(x.shape) == self.input_shape:
            return self.single(x)  # one example (what check_invariance's vmap passes)
        if self.batched:
            return self.apply_fn(self.params, x)
        return jax.vmap(lambda xi: self.apply_fn(self.params, xi))(x)

    def single(self, x: jax.Array) -> jax.Array:
        """``f`` on ONE example of ``input_shape``."""
        if self.batched:
            return self.apply_fn(self.params, x[None])[0]
        return self.apply_fn(self.params, x)

    def example_input(self, input_shape=None) -> jax.Array:
        """A zero input of the form ``apply_fn`` takes (with the batch axis if batched)."""
        shape = self.resolve_input_shape(input_shape)
        return jnp.zeros(((1,) if self.batched else ()) + shape, jnp.float32)

    def resolve_input_shape(self, input_shape=None) -> tuple[int, ...]:
        """``input_shape`` if given, else the model's; a clear error if neither is known."""
        if input_shape is not None:
            return tuple(int(d) for d in input_shape)
        if self.input_shape is None:
            raise ValueError(f"the input shape of this {self.kind} model is not known: pass "
                             "input_shape=(...) (the shape of ONE input, e.g. (28, 28, 1))")
        return self.input_shape

    def replace(self, **changes) -> Model:
        fields = dict(input_shape=self.input_shape, batched=self.batched, kind=self.kind,
                      first_layer=self.first_layer, module=self.module)
        fields.update(changes)
        apply_fn = fields.pop("apply_fn", self.apply_fn)
        params = fields.pop("params", self.params)
        return Model(apply_fn, params, **fields)

    def __repr__(self):
        shape = "?" if self.input_shape is None else self.input_shape
        name = type(self.module).__name__ if self.module is not None else self.kind
        return f"Model({name}, input {shape}, batched={self.batched})"


def _nnx_input_shape(module) -> tuple[int, ...] | None:
    """The input shape of nsjax's NNX models, or the one an NNX model's first
    ``nnx.Linear`` implies, if it has one."""
    from nsjax._models import input_shape_of

    try:
        return input_shape_of(module)
    except (TypeError, ValueError):
        pass
    for _, node in nnx.iter_graph(module):
        if isinstance(node, nnx.Linear):
            return (int(node.in_features),)
        if isinstance(node, nnx.Conv):
            return None
    return None


def as_model(model, variables=None, *, params=None, input_shape: Sequence[int] | None = None,
             first_layer: LinearMap | None = None, batched: bool | None = None) -> Model:
    """A :class:`Model` from a Linen module + variables, an NNX module, or a callable.

    Args:
      model: a :class:`Model` (returned, with the given fields replaced), a Flax Linen
        module, a Flax NNX module, a pytree callable (an Equinox module), or any callable
        ``f(x)`` / ``f(params, x)``.
      variables: the Linen variables ``{"params": ...}`` (Linen only).
      params: for a callable ``f(params, x)``: its params pytree.
      input_shape: shape of ONE input; NNX models with an ``nnx.Linear`` first and Linen
        ``nsjax`` models know theirs.
      first_layer: explicit :class:`LinearMap` of the first linear map (needed only when it
        cannot be found by tracing the model).
      batched: whether the callable takes a batch ``(B, *input_shape)``; default ``False``
        for callables (one example; the Model vmaps), ``True`` for Linen and NNX modules.

    Raises:
      TypeError: something that is not a model (say what was expected).
      ValueError: Linen without variables, or variables given for a non-Linen model.
    """
    if input_shape is not None:
        input_shape = tuple(int(d) for d in input_shape)
    if isinstance(model, Model):
        changes = {k: v for k, v in dict(input_shape=input_shape, first_layer=first_layer,
                                         batched=batched).items() if v is not None}
        return model.replace(**changes) if changes else model
    if isinstance(model, nn.Module):
        if variables is None:
            raise ValueError(f"the Linen module {type(model).__name__} needs its variables: "
                             "as_model(module, variables) with variables = module.init(...)")
        from nsjax._first_layer import _check_variables
        from nsjax._models import input_shape_of

        _check_variables(model, variables)
        if input_shape is None:
            try:
                input_shape = input_shape_of(model)
            except (TypeError, ValueError):
                input_shape = None
        return Model(_LinenApply(model), variables, input_shape=input_shape,
                     batched=True if batched is None else batched, kind="linen",
                     first_layer=first_layer, module=model)
    if variables is not None:
        raise ValueError(f"variables are for Linen modules; {type(model).__name__} is not "
                         "one (an NNX module holds its own state; a callable f(params, x) "
                         "takes params=)")
    if isinstance(model, nnx.Module):
        graphdef, state = nnx.split(model)
        return Model(_NNXApply(graphdef), state,
                     input_shape=input_shape or _nnx_input_shape(model),
                     batched=True if batched is None else batched, kind="nnx",
                     first_layer=first_layer, module=model)
    if not callable(model):
        raise TypeError(
            f"expected a model: a Flax Linen module with its variables, a Flax NNX module, "
            f"an Equinox module or a JAX callable f(x) / f(params, x); got "
            f"{type(model).__name__}")
    batched = False if batched is None else batched
    if params is not None:
        return Model(model, params, input_shape=input_shape, batched=batched,
                     kind="callable", first_layer=first_layer)
    leaves, treedef = jax.tree_util.tree_flatten(model)
    arrays = [leaf for leaf in leaves if _is_array(leaf)]
    if arrays:  # a pytree callable (Equinox module, jax.tree_util.Partial, ...)
        static = tuple((i, leaf) for i, leaf in enumerate(leaves) if not _is_array(leaf))
        return Model(_PytreeApply(treedef, static), arrays, input_shape=input_shape,
                     batched=batched, kind="pytree", first_layer=first_layer)
    return Model(_PlainApply(model), (), input_shape=input_shape, batched=batched,
                 kind="callable", first_layer=first_layer)
