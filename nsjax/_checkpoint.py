"""Checkpoints on orbax-checkpoint: a model's arrays, optional optimizer state and step, and a
JSON descriptor that rebuilds (or checks) the model.

Layout of a checkpoint directory (format version 3)::

    DIR/state/       an orbax-checkpoint PyTree checkpoint (StandardCheckpointHandler) of
                     {"variables": ..., "opt_state": ...}
    DIR/meta.json    {"format", "format_version": 3, "model": nsjax.spec(model), "kind",
                      "config", "metrics", "step", "has_opt_state", "versions", "created",
                      "param_shapes", "param_dtypes", "files", "digest"}

``variables`` is what the model's arrays are, as :func:`nsjax.as_model` sees them: the Linen
variables ``{"params": ...}``; for an NNX module ``nnx.to_pure_dict`` of its state (its
``nnx.RngState`` is not saved), which for :class:`nsjax._models.NNXFCNN` / ``NNXCNN`` is
the Linen ``params`` tree; the params pytree of a callable or :class:`nsjax.Model`.

Integrity: ``files`` maps every file of ``state/`` to its SHA-256 and ``digest`` is the
SHA-256 of the descriptor (every other field, canonical JSON): a changed, missing or added
array file, or an edited descriptor, is a :class:`CheckpointError` naming the file.

Crash safety: one checkpoint is one atomic commit.  Orbax writes ``state/`` (its own
temporary directory renamed into place when complete) inside a temporary sibling directory
of ``DIR``, every file there is fsynced, ``meta.json`` is written and fsynced beside it,
and only then is the temporary directory renamed onto ``DIR``.  Orbax's own atomic
finalize covers ``state/`` alone, not ``meta.json`` beside it, hence the outer commit.  An
existing checkpoint at ``DIR`` is first renamed aside to ``.DIR.previous`` and removed only
after the new one is in place, so a crash at any step leaves either the old or the new
checkpoint whole, and :func:`restore` finds the old one at ``.DIR.previous`` if the crash
came between the two renames.

Orbax is used synchronously (``ocp.Checkpointer``, not the async manager): :func:`save`
returns once the checkpoint is committed.

Format version 2 checkpoints (``params.msgpack`` + ``meta.json``, Linen FCNN/CNN only)
are still read by :func:`restore`; :func:`save` writes version 3 only.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, serialization

from nsjax import _interrupt
from nsjax._models import CUSTOM, from_spec, input_shape_of, spec

__all__ = ["save", "restore", "Restored", "CheckpointError", "STATE_DIR", "META_FILE",
           "PARAMS_FILE", "FORMAT", "FORMAT_VERSION"]

STATE_DIR = "state"
META_FILE = "meta.json"
PARAMS_FILE = "params.msgpack"  # format version 2 only
FORMAT = "nsjax-checkpoint"
FORMAT_VERSION = 3


class CheckpointError(ValueError):
    """A checkpoint that cannot be trusted or used: damaged, edited, malformed, or not of
    the given model.  The message names the file and what is wrong with it."""


class _RestoredFields(NamedTuple):
    model: Any
    variables: Any
    meta: dict


class Restored(_RestoredFields):
    """What :func:`restore` returns; unpacks as ``(model, variables, meta)``.

    Attributes:
      model: the given model, or the one rebuilt from the saved spec; an NNX module holds
        the restored state, a :class:`nsjax.Model` has it as ``params``.
      variables: the arrays: Linen ``{"params": ...}``, the NNX module's ``nnx.State``, or
        the params pytree of a callable / ``Model``.
      meta: the descriptor (``meta.json``) as a dict.
      opt_state: the saved optimizer state (``None`` if none was saved); in the structure
        of the ``opt_state`` template given to :func:`restore`, else as orbax stores it
        (NamedTuples become lists).
      step: the saved step (``None`` if none).
    """

    def __new__(cls, model, variables, meta, opt_state=None, step=None):
        self = super().__new__(cls, model, variables, meta)
        self.opt_state = opt_state
        self.step = step
        return self


# ----------------------------------------------------------------------------- helpers


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

    def version(name):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:  # e.g. nsjax running from a source tree
            return None

    return {"nsjax": version("nsjax"), "jax": jax.__version__, "flax": flax.__version__,
            "optax": optax.__version__, "orbax-checkpoint": version("orbax-checkpoint"),
            "numpy": np.__version__}


def _shapes(tree) -> dict[str, list[int]]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(p): list(np.shape(v)) for p, v in flat}


def _dtypes(tree) -> dict[str, str]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(p): str(np.dtype(v.dtype)) for p, v in flat}


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_tree(root: Path) -> None:
    """fsync every file and directory under ``root`` (orbax does not)."""
    for dirpath, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        fd = os.open(dirpath, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _file_hashes(root: Path) -> dict[str, str]:
    """``{relative path: SHA-256}`` of every file under ``root``."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            p = Path(dirpath) / name
            out[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return dict(sorted(out.items()))


def _digest(meta: dict, blob: bytes = b"") -> str:
    """SHA-256 of the descriptor (``meta`` without ``digest``, canonical JSON) and ``blob``
    (version 2: the params file; version 3: empty, the file hashes are in ``meta``)."""
    desc = {k: v for k, v in meta.items() if k != "digest"}
    text = json.dumps(desc, sort_keys=True, default=_json_default, allow_nan=True)
    return hashlib.sha256(text.encode() + b"\0" + blob).hexdigest()


def _previous(directory: Path) -> Path:
    return directory.parent / f".{directory.name}.previous"


def _is_checkpoint_dir(directory: Path) -> bool:
    names = {p.name for p in directory.iterdir()}
    return names <= {STATE_DIR, META_FILE, PARAMS_FILE}


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


def _checkpointer():
    import orbax.checkpoint as ocp

    return ocp.Checkpointer(ocp.StandardCheckpointHandler())


# ----------------------------------------------------------------------------- save


def _nnx_arrays(module: nnx.Module, state=None):
    """The saved tree of an NNX module: ``nnx.to_pure_dict`` of its non-RNG state."""
    if state is None:
        state = nnx.state(module, nnx.Not(nnx.RngState))
    return nnx.to_pure_dict(state) if isinstance(state, nnx.State) else state


def _arrays_of(model, variables):
    """``(spec, kind, tree of arrays to save)`` for any model :func:`nsjax.as_model` takes."""
    from nsjax._model import Model, as_model

    if isinstance(model, nn.Module):
        if not isinstance(variables, dict) or "params" not in variables:
            raise ValueError(f"variables of the Linen module {type(model).__name__} must be "
                             "a dict with a 'params' entry, as returned by model.init / "
                             "nsjax.init_params")
        return spec(model), "linen", variables
    if isinstance(model, nnx.Module):
        return spec(model), "nnx", _nnx_arrays(model, variables)
    if not isinstance(model, Model):
        model = as_model(model, params=variables)
    elif variables is not None:
        model = model.replace(params=variables)
    params = nnx.to_pure_dict(model.params) if isinstance(model.params, nnx.State) \
        else model.params
    return spec(model), model.kind, params


def save(directory: str | os.PathLike, model, variables=None, *, opt_state=None,
         step: int | None = None, config: Any = None, metrics: dict | None = None) -> Path:
    """Write a model's arrays (and optimizer state, step, spec, config, metrics).

    Args:
      directory: the checkpoint's own directory: created, or replaced atomically when it
        already holds a checkpoint (an empty directory is fine; one holding other files is
        refused).
      model: a Linen module (with ``variables``), an NNX module (its state is saved;
        ``variables`` may be an ``nnx.State`` to save instead), a :class:`nsjax.Model`, or
        a callable ``f(params, x)`` with its params as ``variables``.  A model nsjax does
        not know is saved too; its descriptor records its class (restoring it needs it).
      variables: Linen ``{"params": ...}``; see ``model`` for the others.
      opt_state: optional optimizer state pytree (e.g. ``tx.init(params)``).
      step: optional step / epoch count (an int).
      config: a :class:`nsjax.training.TrainConfig` (anything with ``to_dict``) or a dict.
      metrics: JSON-able dict (NumPy scalars are converted).

    Returns:
      The directory as a ``Path``.

    Raises:
      ValueError: Linen ``variables`` without ``params``, or ``directory`` holds other files.
    """
    import orbax.checkpoint as ocp

    directory = Path(directory)
    model_spec, kind, tree = _arrays_of(model, variables)
    if directory.exists() and not (directory.is_dir() and _is_checkpoint_dir(directory)):
        raise ValueError(f"{directory} exists and is not a checkpoint directory (it holds "
                         f"files other than {META_FILE} and {STATE_DIR}/); a checkpoint "
                         "needs a directory of its own")
    item = {"variables": tree}
    if opt_state is not None:
        item["opt_state"] = opt_state
    if config is not None and hasattr(config, "to_dict"):
        config = config.to_dict()
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.new-"))
    try:
        with _interrupt.deferred():  # Ctrl-C mid-write leaves orbax's threads running
            _checkpointer().save(tmp / STATE_DIR, args=ocp.args.StandardSave(item))
        _fsync_tree(tmp / STATE_DIR)
        meta = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "model": model_spec,
            "kind": kind, "config": config, "metrics": metrics,
            "step": None if step is None else int(step),
            "has_opt_state": opt_state is not None, "versions": _versions(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "param_shapes": _shapes(tree), "param_dtypes": _dtypes(tree),
            "files": _file_hashes(tmp / STATE_DIR),
        }
        meta = json.loads(json.dumps(meta, default=_json_default, allow_nan=True))
        meta["digest"] = _digest(meta)
        _write_synced(tmp / META_FILE, json.dumps(meta, indent=2, allow_nan=True).encode())
        _commit(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


# ----------------------------------------------------------------------------- restore


def _spec_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    """``"field: saved X vs given Y"`` for every differing (nested) field."""
    out = []
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k, "<absent>"), b.get(k, "<absent>")
        if isinstance(x, dict) and isinstance(y, dict):
            out += _spec_diff(x, y, f"{prefix}{k}.")
        elif x != y:
            out.append(f"{prefix}{k}: saved {x!r} vs given {y!r}")
    return out


def _check_descriptor(meta, meta_path: Path) -> None:
    """Types and values of the fields :func:`restore` relies on -> :class:`CheckpointError`."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path} is not an {FORMAT} metadata file")
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{meta_path}: format_version must be a positive integer, got "
                              f"{version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{meta_path}: checkpoint format version {version} is newer "
                              f"than this nsjax understands ({FORMAT_VERSION})")
    if version < 2:
        raise CheckpointError(f"{meta_path}: checkpoint format version {version} is no longer "
                              "read; re-run the training to write a new checkpoint")
    if not isinstance(meta.get("model"), dict):
        raise CheckpointError(f"{meta_path}: 'model' must be a model description (a JSON "
                              f"object from nsjax.spec), got {meta.get('model')!r}")
    if not isinstance(meta.get("digest"), str):
        raise CheckpointError(f"{meta_path}: format version {version} needs a 'digest' "
                              "string")
    if version >= 3 and not isinstance(meta.get("files"), dict):
        raise CheckpointError(f"{meta_path}: format version 3 needs 'files' (the SHA-256 of "
                              f"every file of {STATE_DIR}/)")


def _read_meta(directory: Path) -> dict:
    """The checked descriptor of ``directory`` (after the ``.previous`` fallback)."""
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"checkpoint {str(directory)!r} has no {META_FILE}: expected "
                                f"{META_FILE} and {STATE_DIR}/ written by nsjax checkpoint "
                                "save")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{meta_path} is not valid JSON: {e}") from None
    _check_descriptor(meta, meta_path)
    return meta


def _verify_files(directory: Path, meta: dict) -> None:
    """Every file of ``state/`` as recorded, none missing or added; the descriptor's digest."""
    state = directory / STATE_DIR
    want = meta["files"]
    got = _file_hashes(state) if state.is_dir() else {}
    for name in sorted(set(want) | set(got)):
        where = f"{state / name}"
        if name not in got:
            raise CheckpointError(f"{where} is missing: the checkpoint {directory} is "
                                  "incomplete")
        if name not in want:
            raise CheckpointError(f"{where} is not part of the checkpoint {directory} "
                                  f"(not listed in its {META_FILE})")
        if got[name] != want[name]:
            raise CheckpointError(f"{where} was changed after it was saved (its SHA-256 does "
                                  f"not match {META_FILE}); not trusting it")
    if meta["digest"] != _digest(meta):
        raise CheckpointError(f"{directory / META_FILE} was changed after it was saved: the "
                              "SHA-256 of the descriptor does not match its digest; not "
                              "trusting it")


def _resolve_model(saved: dict, model, meta_path: Path):
    """The given model after checking its spec against ``saved``, or one built from it."""
    if model is not None:
        diff = _spec_diff(saved, spec(model))
        if diff:
            raise CheckpointError(f"model does not match the model spec in {meta_path}; "
                                  "differing fields: " + "; ".join(diff))
        return model
    if saved.get("family") == CUSTOM:
        raise CheckpointError(f"{meta_path}: the checkpoint holds a custom {saved.get('api')} "
                              f"model {saved.get('class')!r} that nsjax cannot rebuild; pass "
                              "it: restore(directory, model)")
    try:
        if saved.get("api") == "nnx":
            return nnx.eval_shape(lambda: from_spec(saved))
        return from_spec(saved)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{meta_path}: the model description is invalid ({err})") from None


def _template(model, kind: str):
    """Abstract tree of the arrays ``model`` expects (``None``: not known, e.g. a custom
    Linen module whose input shape nsjax cannot tell)."""
    from nsjax._model import Model

    if isinstance(model, nn.Module):
        try:
            shape = input_shape_of(model)
        except TypeError:
            return None
        return jax.eval_shape(lambda: model.init(jax.random.key(0),
                                                 jnp.zeros((1,) + shape, jnp.float32)))
    if isinstance(model, nnx.Module):
        return _nnx_arrays(model)
    if isinstance(model, Model):
        p = model.params
        return nnx.to_pure_dict(p) if isinstance(p, nnx.State) else p
    return None


def _check_fits(meta: dict, template, where: Path, name: str) -> None:
    """:class:`CheckpointError` unless the recorded shapes and dtypes are ``template``'s."""
    got, expected = meta.get("param_shapes") or {}, _shapes(template)
    saved_dtypes = meta.get("param_dtypes") or {}
    dtypes = {k: str(np.dtype(leaf.dtype)) for k, leaf in _flat(template).items()}
    wrong_dtype = sorted(k for k in dtypes if saved_dtypes.get(k, dtypes[k]) != dtypes[k])
    if got == expected and not wrong_dtype:
        return
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    wrong = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
    parts = [f"missing {missing}"] if missing else []
    parts += [f"unexpected {extra}"] if extra else []
    if wrong:
        parts.append("shape mismatch " + ", ".join(
            f"{k}: saved {got[k]} vs model {expected[k]}" for k in wrong))
    parts += [f"dtype of {k}: saved {saved_dtypes[k]} vs model {dtypes[k]}"
              for k in wrong_dtype]
    raise CheckpointError(f"arrays in {where} do not fit {name}: " + "; ".join(parts))


def _flat(tree) -> dict:
    return {jax.tree_util.keystr(p): v
            for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _abstract(tree, sharding, target=None):
    """``ShapeDtypeStruct``s of ``tree``'s leaves on ``target``'s leaf shardings, else on
    ``sharding``, else on the first device."""
    default = sharding or jax.sharding.SingleDeviceSharding(jax.devices()[0])
    shard = (jax.tree.map(lambda leaf: getattr(leaf, "sharding", None) or default, target)
             if target is not None else jax.tree.map(lambda _: default, tree))
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(np.shape(a), a.dtype, sharding=s),
                        tree, shard)


def _saved_tree(directory: Path, key: str):
    """The abstract tree orbax recorded for ``key`` (``variables`` / ``opt_state``)."""
    md = _checkpointer().metadata(directory / STATE_DIR).item_metadata.tree
    return jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype), md[key],
                        is_leaf=lambda m: hasattr(m, "shape") and hasattr(m, "dtype"))


def _rebuild(model, tree):
    """``(model, variables)`` from the restored array tree."""
    from nsjax._model import Model

    if isinstance(model, nnx.Module):
        state = nnx.state(model, nnx.Not(nnx.RngState))
        nnx.replace_by_pure_dict(state, tree)
        nnx.update(model, state)
        return model, nnx.state(model)
    if isinstance(model, Model):
        params = tree
        if isinstance(model.params, nnx.State):
            params = jax.tree.map(lambda a: a, model.params)  # a copy to fill
            nnx.replace_by_pure_dict(params, tree)
        return model.replace(params=params), params
    return model, tree


def restore(directory: str | os.PathLike, model=None, *, opt_state=None, sharding=None,
            target=None) -> Restored:
    """Load a checkpoint written by :func:`save`.

    Args:
      directory: the checkpoint directory.
      model: needed for a model nsjax cannot rebuild from its spec (a custom module or a
        callable); if given, its spec must equal the saved one.  An NNX module given here
        is updated in place with the restored state.
      opt_state: template of the optimizer state (e.g. ``tx.init(params)``, arrays or
        ``ShapeDtypeStruct``s): the saved state comes back in its structure.
      sharding: a ``jax.sharding.Sharding`` (e.g. a ``NamedSharding`` on a mesh) every
        restored array is placed on; default: the first device.
      target: a pytree like the variables (Linen ``{"params": ...}``, an NNX state / pure
        dict, a params pytree) of arrays or ``ShapeDtypeStruct``s: each array is restored
        onto its leaf's ``sharding`` (leaves without one take ``sharding``).

    Returns:
      :class:`Restored`: unpacks as ``(model, variables, meta)`` (arrays bitwise as saved);
      ``.opt_state`` and ``.step`` as saved (``None`` if not).

    Raises:
      FileNotFoundError: no checkpoint at ``directory`` (no directory or no ``meta.json``).
      CheckpointError (a ``ValueError``): the descriptor is malformed or edited, a file of
        ``state/`` is missing, added or changed, ``model``'s spec differs from the saved one
        (the differing fields are listed), the model is custom and not given, or the arrays
        do not fit the model (their paths and shapes are listed).
    """
    import orbax.checkpoint as ocp

    directory = Path(directory)
    if not directory.is_dir() and _previous(directory).is_dir():
        # a save was interrupted between its two renames: the old checkpoint is whole
        directory = _previous(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"no checkpoint directory at {str(directory)!r}: expected a "
                                f"directory holding {META_FILE} and {STATE_DIR}/ written by "
                                "nsjax checkpoint save")
    meta = _read_meta(directory)
    if meta["format_version"] == 2:
        return _restore_v2(directory, meta, model, sharding)
    _verify_files(directory, meta)
    meta_path, state = directory / META_FILE, directory / STATE_DIR
    model = _resolve_model(meta["model"], model, meta_path)
    name = type(getattr(model, "module", None) or model).__name__
    template = _template(model, meta.get("kind"))
    if isinstance(target, nnx.State):
        target = nnx.to_pure_dict(target)
    for tree in (template, target):
        if tree is not None:
            _check_fits(meta, tree, state, name)
    shapes = next((t for t in (target, template) if t is not None), None)
    item = {"variables": _abstract(shapes if shapes is not None else
                                   _saved_tree(directory, "variables"), sharding, target)}
    if meta.get("has_opt_state"):
        item["opt_state"] = _abstract(_saved_tree(directory, "opt_state") if opt_state is None
                                      else opt_state, sharding)
    try:
        got = _checkpointer().restore(state, args=ocp.args.StandardRestore(item))
    except Exception as err:  # orbax / tensorstore raise many types
        raise CheckpointError(f"{state} could not be restored into {name} "
                              f"({type(err).__name__}: {err})") from None
    model, variables = _rebuild(model, got["variables"])
    return Restored(model, variables, meta, got.get("opt_state"), meta.get("step"))


def _restore_v2(directory: Path, meta: dict, model, sharding) -> Restored:
    """A format version 2 checkpoint: ``params.msgpack`` of a Linen FCNN/CNN."""
    params_path, meta_path = directory / PARAMS_FILE, directory / META_FILE
    if not params_path.is_file():
        raise FileNotFoundError(f"checkpoint {str(directory)!r} (format version 2) has no "
                                f"{PARAMS_FILE}")
    blob = params_path.read_bytes()
    if meta["digest"] != _digest(meta, blob):
        raise CheckpointError(f"{directory} was changed after it was saved: the SHA-256 of "
                              f"its descriptor ({META_FILE}) and parameters ({PARAMS_FILE}) "
                              "does not match the recorded digest; not trusting it")
    model = _resolve_model(meta["model"], model, meta_path)
    if not isinstance(model, nn.Module):
        raise CheckpointError(f"{meta_path}: format version 2 holds a Linen model")
    try:
        state = serialization.msgpack_restore(blob)
    except Exception as e:  # msgpack raises several types
        raise CheckpointError(f"{params_path} could not be decoded as Flax msgpack: "
                              f"{e}") from None
    template = _template(model, "linen")
    meta2 = {**meta, "param_shapes": _shapes(state), "param_dtypes": _dtypes(state)}
    _check_fits(meta2, template, params_path, type(model).__name__)
    variables = serialization.from_state_dict(template, state)
    put = (lambda a: jax.device_put(a, sharding)) if sharding is not None else jnp.asarray
    return Restored(model, jax.tree.map(put, variables), meta, None, None)
