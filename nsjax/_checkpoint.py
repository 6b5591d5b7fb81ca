"""Checkpoints: a model's variables plus a JSON description that rebuilds the model.

Layout of a checkpoint directory::

    DIR/params.msgpack   flax.serialization.to_bytes(variables)
    DIR/meta.json        {"format", "format_version", "model": nsjax.spec(model), "config",
                          "metrics", "versions", "created", "params_sha256", "param_shapes"}

Why Flax serialization (msgpack) and not orbax-checkpoint: the paper's nets are tiny
(~26k parameters for (784, 32, 16, 10)); one msgpack file is written and read
synchronously in milliseconds, stores the float32 bytes exactly (restored logits are
bitwise identical), has no async/threading machinery, and can be read with plain
``msgpack`` anywhere.  Orbax's directory-per-step layout and async managers buy nothing at
this size.  The SHA-256 of the params file is kept in ``meta.json`` and checked on restore.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from nsjax._models import from_spec, input_shape_of, spec

__all__ = ["save", "restore", "PARAMS_FILE", "META_FILE", "FORMAT",
           "FORMAT_VERSION"]

PARAMS_FILE = "params.msgpack"
META_FILE = "meta.json"
FORMAT = "nsjax-checkpoint"
FORMAT_VERSION = 1


def _json_default(o):
    if isinstance(o, (np.generic,)):
        return o.item()
    if isinstance(o, (np.ndarray, jax.Array)):
        return np.asarray(o).tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "to_dict"):
        return o.to_dict()
    raise TypeError(f"object of type {type(o).__name__} is not JSON serialisable")


def to_json(obj) -> str:
    """``json.dumps`` with NumPy / JAX arrays and scalars, paths and configs converted."""
    return json.dumps(obj, indent=2, default=_json_default)


def _versions() -> dict:
    from importlib import metadata

    import flax
    import optax

    try:
        version = metadata.version("nsjax")
    except metadata.PackageNotFoundError:  # running from a source tree
        version = None
    return {"nsjax": version, "jax": jax.__version__, "flax": flax.__version__,
            "optax": optax.__version__, "numpy": np.__version__}


def _shapes(tree) -> dict[str, list[int]]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(p): list(np.shape(v)) for p, v in flat}


def _atomic_write(path: Path, data: bytes):
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save(directory: str | os.PathLike, model: nn.Module, variables, *, config: Any = None,
         metrics: dict | None = None) -> Path:
    """Write ``variables`` of ``model`` (and its spec, config, metrics) to ``directory``.

    Args:
      directory: created if missing; ``params.msgpack`` and ``meta.json`` are overwritten.
      model: an nsjax model (``nsjax.spec`` must describe it).
      variables: ``{"params": ...}``.
      config: a :class:`nsjax._train.TrainConfig` (anything with ``to_dict``) or a dict.
      metrics: JSON-able dict (NumPy scalars are converted).

    Returns:
      The directory as a ``Path``.
    """
    directory = Path(directory)
    model_spec = spec(model)
    if not isinstance(variables, dict) or "params" not in variables:
        raise ValueError("variables must be a dict with a 'params' entry, as returned by "
                         "model.init / nsjax.init_params")
    directory.mkdir(parents=True, exist_ok=True)
    host = jax.tree_util.tree_map(np.asarray, variables)
    blob = serialization.to_bytes(host)
    if config is not None and hasattr(config, "to_dict"):
        config = config.to_dict()
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model_spec,
        "config": config,
        "metrics": metrics,
        "versions": _versions(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "params_file": PARAMS_FILE,
        "params_sha256": hashlib.sha256(blob).hexdigest(),
        "param_shapes": _shapes(host),
    }
    text = json.dumps(meta, indent=2, default=_json_default, allow_nan=True)
    _atomic_write(directory / PARAMS_FILE, blob)
    _atomic_write(directory / META_FILE, text.encode())
    return directory


def _spec_diff(a: dict, b: dict) -> list[str]:
    keys = sorted(set(a) | set(b))
    return [f"{k}: saved {a.get(k, '<absent>')!r} vs given {b.get(k, '<absent>')!r}"
            for k in keys if a.get(k) != b.get(k)]


def restore(directory: str | os.PathLike, model: nn.Module | None = None):
    """Load a checkpoint written by :func:`save`.

    Args:
      directory: the checkpoint directory.
      model: optional; if given, its spec must equal the saved one.

    Returns:
      ``(model, variables, meta)``: the model rebuilt from the saved spec (or ``model``),
      ``{"params": ...}`` as ``jax.Array``s (bitwise the saved values), the metadata dict.

    Raises:
      FileNotFoundError: the directory, ``meta.json`` or ``params.msgpack`` is missing.
      ValueError: ``model``'s spec differs from the saved one (the differing fields are
        listed), the params file is corrupt, or its tree/shapes do not match the model.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"no checkpoint directory at {str(directory)!r}: expected a "
                                f"directory holding {META_FILE} and {PARAMS_FILE} written by "
                                "nsjax checkpoint save")
    meta_path, params_path = directory / META_FILE, directory / PARAMS_FILE
    for p in (meta_path, params_path):
        if not p.is_file():
            raise FileNotFoundError(f"checkpoint {str(directory)!r} has no {p.name}: expected "
                                    f"{META_FILE} and {PARAMS_FILE} written by "
                                    "nsjax checkpoint save")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{meta_path} is not valid JSON: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "model" not in meta:
        raise ValueError(f"{meta_path} is not an {FORMAT} metadata file")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"checkpoint format version {meta['format_version']} is newer than "
                         f"this nsjax understands ({FORMAT_VERSION})")

    saved_model = from_spec(meta["model"])
    if model is not None:
        given = spec(model)
        diff = _spec_diff(meta["model"], given)
        if diff:
            raise ValueError("model does not match the checkpoint's model spec; differing "
                             "fields: " + "; ".join(diff))
    else:
        model = saved_model

    blob = params_path.read_bytes()
    want = meta.get("params_sha256")
    if want and hashlib.sha256(blob).hexdigest() != want:
        raise ValueError(f"{params_path} does not match the SHA-256 recorded in {META_FILE} "
                         "(corrupt or replaced file)")
    try:
        state = serialization.msgpack_restore(blob)
    except Exception as e:  # msgpack raises several types
        raise ValueError(f"{params_path} could not be decoded as Flax msgpack: {e}") from None

    template = jax.eval_shape(lambda: model.init(
        jax.random.key(0), jnp.zeros((1,) + tuple(input_shape_of(model)), jnp.float32)))
    got, expected = _shapes(state), _shapes(template)
    if got != expected:
        missing = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        wrong = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
        parts = []
        if missing:
            parts.append(f"missing {missing}")
        if extra:
            parts.append(f"unexpected {extra}")
        if wrong:
            parts.append("shape mismatch " + ", ".join(
                f"{k}: saved {got[k]} vs model {expected[k]}" for k in wrong))
        raise ValueError(f"parameters in {params_path} do not fit {type(model).__name__}: "
                         + "; ".join(parts))
    leaves_t = jax.tree_util.tree_leaves(template)
    leaves_s = jax.tree_util.tree_leaves(state)
    for t, s in zip(leaves_t, leaves_s):
        if np.asarray(s).dtype != t.dtype:
            raise ValueError(f"parameter dtype {np.asarray(s).dtype} in {params_path} does not "
                             f"match the model's {t.dtype}")
    variables = serialization.from_state_dict(template, state)
    variables = jax.tree_util.tree_map(jnp.asarray, variables)
    return model, variables, meta
