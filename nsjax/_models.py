"""Flax (Linen) model families of the paper: fully connected nets and small CNNs.

Inputs are images scaled to ``[-1, 1]``, shape ``(..., H, W, C)``, or flat vectors
``(..., n)``.  Every model's first operation is linear plus bias (``nn.Dense`` or
``nn.Conv``), which is what :func:`nsjax.null_space_of` relies on.

Models are plain dataclasses, so ``spec(model)`` / ``from_spec(d)`` turn them into JSON
and back (used by checkpoints).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["FCNN", "CNN", "ACTIVATIONS", "parse_arch", "spec", "from_spec", "init_params"]

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


_FAMILIES = {"FCNN": FCNN, "CNN": CNN}


def spec(model: nn.Module) -> dict:
    """JSON-able description of a model: ``{"family": ..., **fields}``."""
    family = type(model).__name__
    if family not in _FAMILIES:
        raise TypeError(f"spec() supports {sorted(_FAMILIES)}, got {family}")
    fields = {f.name: getattr(model, f.name) for f in dataclasses.fields(model)
              if f.name not in ("parent", "name")}
    return {"family": family, **{k: list(v) if isinstance(v, tuple) else v
                                 for k, v in fields.items()}}


def from_spec(d: dict) -> nn.Module:
    """Inverse of :func:`spec`."""
    d = dict(d)
    family = d.pop("family", None)
    if family not in _FAMILIES:
        raise ValueError(f"model spec needs family in {sorted(_FAMILIES)}, got {family!r}")
    cls = _FAMILIES[family]
    names = {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)} for {family}; expected {sorted(names)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def input_shape_of(model: nn.Module) -> tuple[int, ...]:
    """Shape of one input of an nsjax model: ``(n0,)`` for FCNN, ``(H, W, C)`` for CNN."""
    if isinstance(model, FCNN):
        return (model.arch[0],)
    if isinstance(model, CNN):
        return tuple(model.input_shape)
    raise TypeError(f"input_shape_of() supports FCNN and CNN, got {type(model).__name__}")


def init_params(model: nn.Module, key: jax.Array, input_shape: Sequence[int] | None = None):
    """Initialise ``model`` from ``key`` on a dummy input of shape ``(1, *input_shape)``."""
    shape = tuple(input_shape) if input_shape is not None else input_shape_of(model)
    return model.init(key, jnp.zeros((1,) + shape, jnp.float32))
