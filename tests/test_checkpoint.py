"""Checkpoints (orbax, format 3): bitwise round trips for Linen, NNX, custom and callable
models, optimizer state and step, shardings, damaged files, format 2 still read."""

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nsjax
from nsjax import _checkpoint
from nsjax._checkpoint import CheckpointError
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
    assert {"nsjax", "jax", "flax", "orbax-checkpoint"} <= set(meta["versions"])
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


def _state_files(ck):
    return sorted(p for p in (ck / "state").rglob("*") if p.is_file())


def test_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="meta.json"):
        _checkpoint.restore(tmp_path / "nope")
    model = nsjax.FCNN((784, 32, 16, 10))
    _checkpoint.save(tmp_path, model, nsjax.init_params(model, jax.random.key(0)))
    victim = _state_files(tmp_path)[-1]
    victim.unlink()
    with pytest.raises(CheckpointError, match=f"{victim.name} is missing"):
        _checkpoint.restore(tmp_path)


def test_a_changed_array_file_is_named(tmp_path):
    model = nsjax.FCNN((16, 8, 4))
    _checkpoint.save(tmp_path, model, nsjax.init_params(model, jax.random.key(0)))
    for victim in _state_files(tmp_path):  # every file counts, data and orbax metadata
        data = victim.read_bytes()
        victim.write_bytes(data[:-1] + bytes([data[-1] ^ 1]) if data else b"x")
        with pytest.raises(CheckpointError, match=f"{victim.name} was changed"):
            _checkpoint.restore(tmp_path)
        victim.write_bytes(data)
    (tmp_path / "state" / "extra").write_text("")
    with pytest.raises(CheckpointError, match="extra is not part"):
        _checkpoint.restore(tmp_path)


def test_params_that_do_not_fit(tmp_path):
    _checkpoint.save(tmp_path, nsjax.FCNN((784, 8, 16, 10)),
                     nsjax.init_params(nsjax.FCNN((784, 8, 16, 10)), jax.random.key(0)))
    meta = json.loads((tmp_path / "meta.json").read_text())
    meta["model"]["arch"] = [784, 32, 16, 10]
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="meta.json was changed"):
        _checkpoint.restore(tmp_path)
    # a self-consistent checkpoint (digest recomputed) whose arrays do not fit its model
    meta["digest"] = _checkpoint._digest(meta)
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"shape mismatch.*Dense_0.*kernel"):
        _checkpoint.restore(tmp_path)
    with pytest.raises(ValueError, match="params"):
        _checkpoint.save(tmp_path / "x", nsjax.FCNN((4, 2)), {"weights": 1})


def test_custom_linen_model_needs_to_be_given(tmp_path):
    import flax.linen as nn

    class Custom(nn.Module):  # neither FCNN nor CNN: spec() used to raise TypeError
        width: int = 3

        @nn.compact
        def __call__(self, x):
            return nn.Dense(2)(nn.tanh(nn.Dense(self.width)(x)))

    model = Custom()
    variables = model.init(jax.random.key(0), jnp.ones((1, 5)))
    _checkpoint.save(tmp_path, model, variables)
    with pytest.raises(CheckpointError, match=r"custom linen model .*Custom.*restore\("):
        _checkpoint.restore(tmp_path)
    with pytest.raises(CheckpointError, match="fields.width: saved 3 vs given 4"):
        _checkpoint.restore(tmp_path, Custom(width=4))
    m2, v2, meta = _checkpoint.restore(tmp_path, model)
    assert meta["model"]["class"].endswith("Custom") and meta["kind"] == "linen"
    x = jnp.linspace(-1, 1, 10).reshape(2, 5)
    assert np.asarray(m2.apply(v2, x)).tobytes() == np.asarray(model.apply(variables, x)).tobytes()


def test_nnx_fcnn_round_trip_bitwise(tmp_path):
    from flax import nnx

    from nsjax._models import NNXFCNN

    model = NNXFCNN((784, 32, 16, 10), rngs=nnx.Rngs(3))
    _checkpoint.save(tmp_path, model)
    x = _x()
    logits = np.asarray(model(x)).tobytes()
    rebuilt = _checkpoint.restore(tmp_path)  # from the spec: {"family": "FCNN", "api": "nnx"}
    assert isinstance(rebuilt.model, NNXFCNN) and isinstance(rebuilt.variables, nnx.State)
    assert np.asarray(rebuilt.model(x)).tobytes() == logits
    other = NNXFCNN((784, 32, 16, 10), rngs=nnx.Rngs(4))
    _checkpoint.restore(tmp_path, other)  # updated in place
    assert np.asarray(other(x)).tobytes() == logits
    # a callable Model is saved and restored through its params
    f = nsjax.as_model(lambda p, x: x @ p["w"], params={"w": jnp.arange(6.0).reshape(3, 2)})
    _checkpoint.save(tmp_path / "f", f)
    got = _checkpoint.restore(tmp_path / "f", f)
    assert np.array_equal(got.variables["w"], f.params["w"]) and got.model.params is got.variables


def test_opt_state_and_step_round_trip(tmp_path):
    model = nsjax.FCNN((16, 8, 4))
    variables = nsjax.init_params(model, jax.random.key(0))
    tx = optax.adam(1e-2)
    opt = tx.init(variables["params"])
    grads = jax.tree.map(jnp.ones_like, variables["params"])
    _, opt = tx.update(grads, opt, variables["params"])  # mu, nu, count nonzero
    _checkpoint.save(tmp_path, model, variables, opt_state=opt, step=7)
    got = _checkpoint.restore(tmp_path, opt_state=tx.init(variables["params"]))
    assert got.step == 7 and got.meta["has_opt_state"]
    assert jax.tree.structure(got.opt_state) == jax.tree.structure(opt)
    assert all(np.array_equal(a, b) for a, b in
               zip(jax.tree.leaves(opt), jax.tree.leaves(got.opt_state), strict=True))
    bare = _checkpoint.restore(tmp_path)  # no template: orbax's lists and dicts
    assert [np.asarray(a).tolist() for a in jax.tree.leaves(bare.opt_state)] == \
        [np.asarray(a).tolist() for a in jax.tree.leaves(opt)]
    assert _checkpoint.restore(tmp_path / ".." / tmp_path.name).step == 7
    _checkpoint.save(tmp_path, model, variables)
    assert _checkpoint.restore(tmp_path).opt_state is None


def test_restore_onto_a_sharding(tmp_path):
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    model = nsjax.FCNN((16, 8, 4))
    variables = nsjax.init_params(model, jax.random.key(0))
    _checkpoint.save(tmp_path, model, variables, opt_state=optax.sgd(0.1, 0.9).init(
        variables["params"]))
    mesh = Mesh(np.array(jax.devices()[:1]), ("d",))
    rep = NamedSharding(mesh, PartitionSpec())
    got = _checkpoint.restore(tmp_path, sharding=rep)
    assert all(a.sharding == rep for a in jax.tree.leaves((got.variables, got.opt_state)))
    cols = NamedSharding(mesh, PartitionSpec(None, "d"))
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=(
        cols if a.ndim == 2 else rep)), variables)
    got = _checkpoint.restore(tmp_path, target=target)
    assert got.variables["params"]["Dense_0"]["kernel"].sharding == cols
    assert _same_bits(got.variables, variables)


def _same_bits(a, b):
    return all(np.asarray(x).tobytes() == np.asarray(y).tobytes() for x, y in
               zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


_MESH_CHILD = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import nsjax
    from nsjax import _checkpoint
    mesh = Mesh(np.array(jax.devices()), ("d",))
    cols, rep = NamedSharding(mesh, P(None, "d")), NamedSharding(mesh, P())
    model = nsjax.FCNN((16, 8, 4))
    v = nsjax.init_params(model, jax.random.key(0))
    put = lambda a: jax.device_put(a, cols if a.ndim == 2 else rep)
    _checkpoint.save(sys.argv[1], model, jax.tree.map(put, v))  # saved from the mesh
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype,
                                                         sharding=put(a).sharding), v)
    got = _checkpoint.restore(sys.argv[1], target=target).variables
    k = got["params"]["Dense_0"]["kernel"]
    print("RESULT " + json.dumps({
        "devices": len(k.sharding.device_set), "spec": list(k.sharding.spec),
        "shard": list(k.addressable_shards[0].data.shape),
        "same": bool(np.array_equal(k, v["params"]["Dense_0"]["kernel"]))}))
""")


def test_restore_onto_a_two_device_mesh(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") +
                         " --xla_force_host_platform_device_count=2").strip()}
    proc = subprocess.run([sys.executable, "-c", _MESH_CHILD, str(tmp_path / "ck")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    got = json.loads(line[len("RESULT "):])
    assert got == {"devices": 2, "spec": [None, "d"], "shard": [16, 4],
                   "same": True}


def test_format_2_checkpoints_are_still_read(tmp_path):
    from flax import serialization

    model = nsjax.FCNN((16, 8, 4))
    variables = nsjax.init_params(model, jax.random.key(0))
    blob = serialization.to_bytes(jax.tree.map(np.asarray, variables))
    meta = {"format": "nsjax-checkpoint", "format_version": 2, "model": nsjax.spec(model),
            "config": None, "metrics": None, "params_sha256": hashlib.sha256(blob).hexdigest()}
    meta["digest"] = _checkpoint._digest(meta, blob)
    (tmp_path / "params.msgpack").write_bytes(blob)
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    m2, v2, _ = _checkpoint.restore(tmp_path)
    assert m2 == model and _same_bits(v2, variables)
    (tmp_path / "params.msgpack").write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))
    with pytest.raises(CheckpointError, match="digest"):
        _checkpoint.restore(tmp_path)
