"""Model families of the paper: fully connected nets and small CNNs, in Linen and NNX.

Inputs are images scaled to ``[-1, 1]``, shape ``(..., H, W, C)``, or flat vectors
``(..., n)``.  Every model's first operation is linear plus bias (``nn.Dense`` /
``nnx.Linear`` or ``nn.Conv`` / ``nnx.Conv``), which is what :func:`nsjax.null_space_of`
relies on.

The Linen classes :class:`FCNN`, :class:`CNN` and the NNX classes :class:`NNXFCNN`,
:class:`NNXCNN` compute the same function from the same parameter tree: the NNX modules
name their layers ``Dense_0``, ``Conv_0``, ... like Linen, so ``nnx.to_pure_dict`` of an
NNX model's state has the paths and shapes of the Linen ``variables["params"]``.

``spec(model)`` / ``from_spec(d)`` turn a model into JSON and back (used by checkpoints):
``{"family": "FCNN", **fields}`` for Linen (no ``"api"`` key: Linen is the default),
``{"family": "FCNN", "api": "nnx", **fields}`` for NNX.  A model nsjax does not know is
described as ``{"family": "custom", "api": ..., "class": "module:qualname", "fields":
{...}}`` (its JSON-able fields only); :func:`from_spec` cannot rebuild it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["FCNN", "CNN", "NNXFCNN", "NNXCNN", "ACTIVATIONS", "parse_arch", "spec",
           "from_spec", "init_params", "input_shape_of", "CUSTOM"]

ACTIVATIONS = {"relu": nn.relu, "sigmoid": nn.sigmoid}


def _activation(name: str):
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}") from None


def parse_arch(text: str | Sequence[int]) -> tuple[int, ...]:
    """``"784,32,16,10"`` -> ``(784, 32, 16, 10)``: input dim, hidden widths, outputs."""
    if isinstance(text, str):
        try:
            arch = tuple(int(t) for t in text.replace(" ", "").split(",") if t)
        except ValueError:
            raise ValueError(f"arch must be comma-separated integers like 784,32,16,10, "
                             f"got {text!r}") from None
    else:
        arch = tuple(int(t) for t in text)
    if len(arch) < 2 or min(arch) < 1:
        raise ValueError(f"arch needs an input size and at least one layer, all >= 1, got {arch}")
    return arch


def _flatten_to(x: jax.Array, n: int) -> jax.Array:
    """Flatten the trailing dims of ``x`` whose product is ``n``: ``(..., *shape) -> (..., n)``."""
    size = 1
    for k in range(1, x.ndim + 1):
        size *= x.shape[-k]
        if size == n:
            return x.reshape(x.shape[: x.ndim - k] + (n,))
        if size > n:
            break
    raise ValueError(f"expected inputs whose trailing dimensions hold {n} values, "
                     f"(..., {n}) or (..., H, W, C) with H*W*C = {n}; got shape {x.shape}")


class FCNN(nn.Module):
    """The ``(n0, n1, ..., nK, n_out)`` fully connected net of the paper (Def. 2.6).

    ``f(x) = W_{K+1} s(... s(W_1 x + b_1) ...) + b_{K+1}``, returning logits.

    Attributes:
      arch: ``(n0, n1, ..., n_out)``, e.g. ``(784, 32, 16, 10)``.
      activation: ``"relu"`` or ``"sigmoid"``.

    Input ``(..., n0)`` or ``(..., H, W, C)`` with ``H W C = n0``; output ``(..., n_out)``.
    """

    arch: tuple[int, ...]
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = _activation(self.activation)
        h = _flatten_to(x, self.arch[0])
        widths = self.arch[1:]
        for i, w in enumerate(widths):
            h = nn.Dense(w, name=f"Dense_{i}")(h)
            if i < len(widths) - 1:
                h = act(h)
        return h


class CNN(nn.Module):
    """A CNN whose first layer is ``kernels`` convolutions (Sec. 2.3 of the paper).

    ``conv(k x k, padding, stride) -> activation -> [pool] -> flatten -> Dense head``.

    Attributes:
      input_shape: ``(H, W, C)`` of one image.
      kernels: number of first-layer kernels.
      kernel_size: side of the square kernels.
      padding: ``"VALID"`` (leaves a null space) or ``"SAME"`` (almost surely none).
      stride: convolution stride.
      use_bias: whether the first convolution has a bias (it does not change the null space).
      pool: window of an average pool after the first activation (``0``: no pooling).
      hidden: widths of the dense hidden layers of the head.
      num_classes: outputs.
      activation: ``"relu"`` or ``"sigmoid"``.

    Input ``(..., H, W, C)`` (or flat ``(..., H W C)``); output ``(..., num_classes)``.
    """

    input_shape: tuple[int, int, int] = (28, 28, 1)
    kernels: int = 6
    kernel_size: int = 3
    padding: str = "VALID"
    stride: int = 1
    use_bias: bool = True
    pool: int = 0
    hidden: tuple[int, ...] = (32,)
    num_classes: int = 10
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = _activation(self.activation)
        n = math.prod(self.input_shape)
        batch = _flatten_to(x, n).shape[:-1]
        h = x.reshape((-1,) + tuple(self.input_shape))
        h = nn.Conv(
            self.kernels,
            (self.kernel_size, self.kernel_size),
            strides=self.stride,
            padding=self.padding,
            use_bias=self.use_bias,
            name="Conv_0",
        )(h)
        h = act(h)
        if self.pool:
            h = nn.avg_pool(h, (self.pool, self.pool), strides=(self.pool, self.pool))
        h = h.reshape(h.shape[0], -1)
        for i, w in enumerate(self.hidden):
            h = act(nn.Dense(w, name=f"Dense_{i}")(h))
        h = nn.Dense(self.num_classes, name=f"Dense_{len(self.hidden)}")(h)
        return h.reshape(batch + (self.num_classes,))


def _conv_out(size: int, k: int, stride: int, padding: str) -> int:
    """Output length of a ``VALID``/``SAME`` convolution along one axis."""
    if str(padding).upper() == "SAME":
        return -(-size // stride)
    if str(padding).upper() == "VALID":
        return (size - k) // stride + 1
    raise ValueError(f"padding must be 'VALID' or 'SAME', got {padding!r}")


class NNXFCNN(nnx.Module):
    """NNX twin of :class:`FCNN`: same fields, same function, same parameter paths.

    ``NNXFCNN(arch, activation="relu", *, rngs)``; layers ``Dense_0 ... Dense_K``
    (``nnx.Linear``, LeCun-normal kernels ``(n_i, n_{i+1})``, zero biases).

    Input ``(..., n0)`` or ``(..., H, W, C)`` with ``H W C = n0``; output ``(..., n_out)``.
    """

    def __init__(self, arch: Sequence[int], activation: str = "relu", *, rngs: nnx.Rngs):
        self.arch = parse_arch(arch)
        _activation(activation)
        self.activation = activation
        for i, (a, b) in enumerate(zip(self.arch[:-1], self.arch[1:])):
            setattr(self, f"Dense_{i}", nnx.Linear(a, b, rngs=rngs))

    def __call__(self, x: jax.Array) -> jax.Array:
        act = _activation(self.activation)
        h = _flatten_to(x, self.arch[0])
        k = len(self.arch) - 1
        for i in range(k):
            h = getattr(self, f"Dense_{i}")(h)
            if i < k - 1:
                h = act(h)
        return h


class NNXCNN(nnx.Module):
    """NNX twin of :class:`CNN` (same fields and defaults, same function and parameter
    paths ``Conv_0``, ``Dense_0`` ...); keyword-only ``rngs``.

    Input ``(..., H, W, C)`` (or flat ``(..., H W C)``); output ``(..., num_classes)``.
    """

    def __init__(self, input_shape: Sequence[int] = (28, 28, 1), kernels: int = 6,
                 kernel_size: int = 3, padding: str = "VALID", stride: int = 1,
                 use_bias: bool = True, pool: int = 0, hidden: Sequence[int] = (32,),
                 num_classes: int = 10, activation: str = "relu", *, rngs: nnx.Rngs):
        _activation(activation)
        self.input_shape = tuple(int(d) for d in input_shape)
        self.kernels, self.kernel_size, self.padding = kernels, kernel_size, padding
        self.stride, self.use_bias, self.pool = stride, use_bias, pool
        self.hidden, self.num_classes = tuple(int(w) for w in hidden), num_classes
        self.activation = activation
        h, w, c = self.input_shape
        self.Conv_0 = nnx.Conv(c, kernels, (kernel_size, kernel_size), strides=stride,
                               padding=padding, use_bias=use_bias, rngs=rngs)
        oh, ow = (_conv_out(d, kernel_size, stride, padding) for d in (h, w))
        if pool:
            oh, ow = oh // pool, ow // pool
        widths = (oh * ow * kernels,) + self.hidden + (num_classes,)
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            setattr(self, f"Dense_{i}", nnx.Linear(a, b, rngs=rngs))

    def __call__(self, x: jax.Array) -> jax.Array:
        act = _activation(self.activation)
        batch = _flatten_to(x, math.prod(self.input_shape)).shape[:-1]
        h = act(self.Conv_0(x.reshape((-1,) + self.input_shape)))
        if self.pool:
            h = nnx.avg_pool(h, (self.pool, self.pool), strides=(self.pool, self.pool))
        h = h.reshape(h.shape[0], -1)
        for i in range(len(self.hidden)):
            h = act(getattr(self, f"Dense_{i}")(h))
        h = getattr(self, f"Dense_{len(self.hidden)}")(h)
        return h.reshape(batch + (self.num_classes,))


_FAMILIES = {"FCNN": FCNN, "CNN": CNN}
_NNX_FAMILIES = {"FCNN": NNXFCNN, "CNN": NNXCNN}
_NNX_FIELDS = {"FCNN": ("arch", "activation"),
               "CNN": ("input_shape", "kernels", "kernel_size", "padding", "stride",
                       "use_bias", "pool", "hidden", "num_classes", "activation")}
#: ``spec(model)["family"]`` of a model nsjax does not know.
CUSTOM = "custom"


def _jsonable(v):
    """``v`` as JSON (tuples as lists), or ``None`` when it is not JSON-able."""
    v = list(v) if isinstance(v, tuple) else v
    try:
        json.dumps(v, allow_nan=False)
    except (TypeError, ValueError):
        return None
    return v


def _custom_spec(model, api: str) -> dict:
    """``{"family": "custom", "api", "class": "module:qualname", "fields"}``."""
    if api == "callable":
        named = model if hasattr(model, "__qualname__") else type(model)
        return {"family": CUSTOM, "api": api,
                "class": f"{getattr(named, '__module__', '?')}:{named.__qualname__}",
                "fields": {}}
    if api == "linen":
        raw = {f.name: getattr(model, f.name) for f in dataclasses.fields(model)
               if f.name not in ("parent", "name")}
    else:
        raw = {k: v for k, v in vars(model).items() if not k.startswith("_")}
    fields = {k: j for k, v in raw.items()
              if not isinstance(v, nnx.Variable | nnx.Module | nn.Module)
              and (j := _jsonable(v)) is not None}
    cls = type(model)
    return {"family": CUSTOM, "api": api, "class": f"{cls.__module__}:{cls.__qualname__}",
            "fields": fields}


def spec(model) -> dict:
    """JSON-able description of a model.

    ``{"family": "FCNN"|"CNN", **fields}`` for the Linen families, the same with
    ``"api": "nnx"`` for :class:`NNXFCNN` / :class:`NNXCNN`; for any other Linen or NNX
    module or callable ``{"family": "custom", "api": "linen"|"nnx"|"callable", "class":
    "module:qualname", "fields": {JSON-able fields}}`` (:func:`from_spec` cannot rebuild
    those: the caller passes the model).
    """
    from nsjax._model import Model

    if isinstance(model, Model):
        if model.module is not None:
            return spec(model.module)
        return _custom_spec(getattr(model.apply_fn, "fn", model.apply_fn), "callable")
    if type(model) in _FAMILIES.values():
        fields = {f.name: getattr(model, f.name) for f in dataclasses.fields(model)
                  if f.name not in ("parent", "name")}
        return {"family": type(model).__name__,
                **{k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}}
    if type(model) in _NNX_FAMILIES.values():
        family = "FCNN" if isinstance(model, NNXFCNN) else "CNN"
        fields = {k: getattr(model, k) for k in _NNX_FIELDS[family]}
        return {"family": family, "api": "nnx",
                **{k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}}
    if isinstance(model, nn.Module):
        return _custom_spec(model, "linen")
    if isinstance(model, nnx.Module):
        return _custom_spec(model, "nnx")
    if callable(model):
        return _custom_spec(model, "callable")
    raise TypeError(f"spec() describes models (a Flax Linen or NNX module, a callable), got "
                    f"{type(model).__name__}")


def from_spec(d: dict, *, rngs: nnx.Rngs | None = None):
    """Inverse of :func:`spec` for the nsjax families.

    NNX specs build an initialised module from ``rngs`` (default ``nnx.Rngs(0)``).

    Raises:
      ValueError: an unknown family or field, or a ``"custom"`` spec (a model nsjax does
        not know cannot be rebuilt from its description; the message names its class).
    """
    d = dict(d)
    family = d.pop("family", None)
    api = d.pop("api", "linen")
    if family == CUSTOM:
        raise ValueError(f"the model is a custom {api} model {d.get('class')!r} that nsjax "
                         "cannot rebuild from its description; pass the model itself")
    if family not in _FAMILIES or api not in ("linen", "nnx"):
        raise ValueError(f"model spec needs family in {sorted(_FAMILIES)} and api 'linen' or "
                         f"'nnx', got family {family!r}, api {api!r}")
    if api == "nnx":
        names = set(_NNX_FIELDS[family])
    else:
        names = {f.name for f in dataclasses.fields(_FAMILIES[family])} - {"parent", "name"}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)} for {family}; expected {sorted(names)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
    if api == "nnx":
        return _NNX_FAMILIES[family](**kwargs, rngs=rngs or nnx.Rngs(0))
    return _FAMILIES[family](**kwargs)


def input_shape_of(model) -> tuple[int, ...]:
    """Shape of one input of an nsjax model (Linen or NNX): ``(n0,)`` for FCNN,
    ``(H, W, C)`` for CNN."""
    if isinstance(model, FCNN | NNXFCNN):
        return (model.arch[0],)
    if isinstance(model, CNN | NNXCNN):
        return tuple(model.input_shape)
    raise TypeError(f"input_shape_of() supports FCNN and CNN (Linen or NNX), got "
                    f"{type(model).__name__}")


def init_params(model: nn.Module, key: jax.Array, input_shape: Sequence[int] | None = None):
    """Initialise ``model`` from ``key`` on a dummy input of shape ``(1, *input_shape)``."""
    shape = tuple(input_shape) if input_shape is not None else input_shape_of(model)
    return model.init(key, jnp.zeros((1,) + shape, jnp.float32))
