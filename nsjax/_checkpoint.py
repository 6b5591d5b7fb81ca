"""Checkpoints: a model's variables plus a JSON description that rebuilds the model.

Layout of a checkpoint directory::

    DIR/params.msgpack   flax.serialization.to_bytes(variables)
    DIR/meta.json        {"format", "format_version", "model": nsjax.spec(model), "config",
                          "metrics", "versions", "created", "params_sha256", "param_shapes",
                          "digest"}

One checkpoint is one atomic commit: both files are written (and fsynced) into a temporary
sibling directory, which is then renamed onto ``DIR``.  An existing checkpoint at ``DIR`` is
first renamed aside to ``.DIR.previous`` and removed only after the new one is in place, so a
crash at any step leaves either the old or the new checkpoint whole, and :func:`restore`
finds the old one at ``.DIR.previous`` if the crash came between the two renames.
``digest`` is the SHA-256 of the descriptor (every other field of ``meta.json``, canonical
JSON) together with the parameter bytes: editing either is detected on restore.

Why Flax serialization (msgpack) and not orbax-checkpoint: the paper's nets are tiny
(~26k parameters for (784, 32, 16, 10)); one msgpack file is written and read
synchronously in milliseconds, stores the float32 bytes exactly (restored logits are
bitwise identical), has no async/threading machinery, and can be read with plain
``msgpack`` anywhere.  Orbax's directory-per-step layout and async managers buy nothing at
this size.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
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
FORMAT_VERSION = 2


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


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _digest(meta: dict, blob: bytes) -> str:
    """SHA-256 of the descriptor (``meta`` without ``digest``, canonical JSON) and params."""
    desc = {k: v for k, v in meta.items() if k != "digest"}
    text = json.dumps(desc, sort_keys=True, default=_json_default, allow_nan=True)
    return hashlib.sha256(text.encode() + b"\0" + blob).hexdigest()


def _previous(directory: Path) -> Path:
    return directory.parent / f".{directory.name}.previous"


def _is_checkpoint_dir(directory: Path) -> bool:
    names = {p.name for p in directory.iterdir()}
    return names <= {PARAMS_FILE, META_FILE}


def _commit(tmp: Path, directory: Path) -> None:
    """Rename the complete checkpoint ``tmp`` onto ``directory``, keeping the old one aside
    until the new one is in place."""
    prev = _previous(directory)
    if prev.exists():
        if directory.exists():  # left by a crash after the new one was in place: stale
            shutil.rmtree(prev)
        else:  # left by a crash between the renames: the only whole checkpoint
            os.rename(prev, directory)
    if directory.exists():
        os.rename(directory, prev)
    os.rename(tmp, directory)
    if prev.exists():
        shutil.rmtree(prev)


def save(directory: str | os.PathLike, model: nn.Module, variables, *, config: Any = None,
         metrics: dict | None = None) -> Path:
    """Write ``variables`` of ``model`` (and its spec, config, metrics) to ``directory``.

    Args:
      directory: the checkpoint's own directory: created, or replaced atomically when it
        already holds a checkpoint (an empty directory is fine; one holding other files is
        refused).
      model: an nsjax model (``nsjax.spec`` must describe it).
      variables: ``{"params": ...}``.
      config: a :class:`nsjax.training.TrainConfig` (anything with ``to_dict``) or a dict.
      metrics: JSON-able dict (NumPy scalars are converted).

    Returns:
      The directory as a ``Path``.

    Raises:
      ValueError: ``variables`` has no ``params``, or ``directory`` holds other files.
    """
    directory = Path(directory)
    model_spec = spec(model)
    if not isinstance(variables, dict) or "params" not in variables:
        raise ValueError("variables must be a dict with a 'params' entry, as returned by "
                         "model.init / nsjax.init_params")
    if directory.exists() and not (directory.is_dir() and _is_checkpoint_dir(directory)):
        raise ValueError(f"{directory} exists and is not a checkpoint directory (it holds "
                         f"files other than {META_FILE} and {PARAMS_FILE}); a checkpoint "
                         "needs a directory of its own")
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
    meta = json.loads(json.dumps(meta, default=_json_default, allow_nan=True))
    meta["digest"] = _digest(meta, blob)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.new-"))
    try:
        _write_synced(tmp / PARAMS_FILE, blob)
        _write_synced(tmp / META_FILE, json.dumps(meta, indent=2, allow_nan=True).encode())
        _commit(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _spec_diff(a: dict, b: dict) -> list[str]:
    keys = sorted(set(a) | set(b))
    return [f"{k}: saved {a.get(k, '<absent>')!r} vs given {b.get(k, '<absent>')!r}"
            for k in keys if a.get(k) != b.get(k)]


def _check_descriptor(meta, meta_path: Path) -> None:
    """Types and values of the fields :func:`restore` relies on -> ``ValueError``."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path} is not an {FORMAT} metadata file")
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"{meta_path}: format_version must be a positive integer, got "
                         f"{version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(f"checkpoint format version {version} is newer than this nsjax "
                         f"understands ({FORMAT_VERSION})")
    if not isinstance(meta.get("model"), dict):
        raise ValueError(f"{meta_path}: 'model' must be a model description (a JSON object "
                         f"from nsjax.spec), got {meta.get('model')!r}")
    if version >= 2 and not isinstance(meta.get("digest"), str):
        raise ValueError(f"{meta_path}: format version {version} needs a 'digest' string")


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
      ValueError: the descriptor is malformed, the descriptor or the parameters changed
        since saving (digest), ``model``'s spec differs from the saved one (the differing
        fields are listed), the params file is corrupt, or its tree/shapes do not match.
    """
    directory = Path(directory)
    if not directory.is_dir() and _previous(directory).is_dir():
        # a save was interrupted between its two renames: the old checkpoint is whole
        directory = _previous(directory)
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
    _check_descriptor(meta, meta_path)
    blob = params_path.read_bytes()
    if meta["format_version"] >= 2 and meta.get("digest") != _digest(meta, blob):
        raise ValueError(f"{directory} was changed after it was saved: the SHA-256 of its "
                         f"descriptor ({META_FILE}) and parameters ({PARAMS_FILE}) does not "
                         "match the recorded digest; not trusting it")
    try:
        saved_model = from_spec(meta["model"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"{meta_path}: the model description is invalid ({err})") from None
    if model is not None:
        given = spec(model)
        diff = _spec_diff(meta["model"], given)
        if diff:
            raise ValueError("model does not match the checkpoint's model spec; differing "
                             "fields: " + "; ".join(diff))
    else:
        model = saved_model

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
