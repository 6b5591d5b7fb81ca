"""Checkpoints: bitwise round trip, spec/shape mismatches, missing files."""

import hashlib
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization

import nsjax
from nsjax import _checkpoint
from nsjax._train import TrainConfig


def _x(shape=(16, 28, 28, 1)):
    return jax.random.uniform(jax.random.key(7), shape, minval=-1.0, maxval=1.0)


@pytest.mark.parametrize("model", [
    nsjax.FCNN((784, 32, 16, 10)),
    nsjax.CNN(input_shape=(28, 28, 1), kernels=3, padding="VALID", hidden=(8,), num_classes=4),
])
def test_round_trip_bitwise(tmp_path, model):
    variables = nsjax.init_params(model, jax.random.key(1))
    # perturb so the values are not just an init the restore could recreate
    variables = jax.tree.map(lambda a: a + 0.01 * jnp.sin(jnp.arange(a.size).reshape(a.shape)),
                             variables)
    cfg = TrainConfig(epochs=2)
    _checkpoint.save(tmp_path / "ck", model, variables, config=cfg,
                     metrics={"acc": np.float32(0.5), "n": np.int64(3)})
    m2, v2, meta = _checkpoint.restore(tmp_path / "ck")
    assert m2 == model and meta["model"] == nsjax.spec(model)
    assert TrainConfig.from_dict(meta["config"]) == cfg
    assert meta["metrics"] == {"acc": 0.5, "n": 3}
    assert {"nsjax", "jax", "flax"} <= set(meta["versions"])
    for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(v2), strict=True):
        assert a.dtype == b.dtype and np.array_equal(np.asarray(a), np.asarray(b))
    x = _x()
    l1 = np.asarray(model.apply(variables, x))
    l2 = np.asarray(m2.apply(v2, x))
    assert l1.tobytes() == l2.tobytes()
    # the model may also be given; equal spec is accepted
    _, v3, _ = _checkpoint.restore(tmp_path / "ck", model=model)
    assert np.asarray(model.apply(v3, x)).tobytes() == l1.tobytes()


def test_mismatched_spec_lists_fields(tmp_path):
    model = nsjax.FCNN((784, 32, 16, 10))
    _checkpoint.save(tmp_path, model, nsjax.init_params(model, jax.random.key(0)))
    with pytest.raises(ValueError, match=r"arch.*activation|activation.*arch") as e:
        _checkpoint.restore(tmp_path, model=nsjax.FCNN((784, 64, 10), activation="sigmoid"))
    assert "saved" in str(e.value)
    with pytest.raises(ValueError, match="family"):
        _checkpoint.restore(tmp_path, model=nsjax.CNN())


def test_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="meta.json"):
        _checkpoint.restore(tmp_path / "nope")
    model = nsjax.FCNN((784, 32, 16, 10))
    _checkpoint.save(tmp_path, model, nsjax.init_params(model, jax.random.key(0)))
    (tmp_path / "params.msgpack").unlink()
    with pytest.raises(FileNotFoundError, match="params.msgpack"):
        _checkpoint.restore(tmp_path)


def test_params_that_do_not_fit(tmp_path):
    model = nsjax.FCNN((784, 32, 16, 10))
    _checkpoint.save(tmp_path, model, nsjax.init_params(model, jax.random.key(0)))
    other = nsjax.FCNN((784, 8, 16, 10))
    blob = serialization.to_bytes(nsjax.init_params(other, jax.random.key(0)))
    (tmp_path / "params.msgpack").write_bytes(blob)
    with pytest.raises(ValueError, match="SHA-256"):
        _checkpoint.restore(tmp_path)
    meta = json.loads((tmp_path / "meta.json").read_text())
    meta["params_sha256"] = hashlib.sha256(blob).hexdigest()
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="digest"):  # the descriptor changed too
        _checkpoint.restore(tmp_path)
    # a self-consistent checkpoint (digest recomputed) whose params do not fit its model
    meta["digest"] = _checkpoint._digest(meta, blob)
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"shape mismatch.*Dense_0.*kernel"):
        _checkpoint.restore(tmp_path)
    with pytest.raises(ValueError, match="params"):
        _checkpoint.save(tmp_path / "x", model, {"weights": 1})
