"""Batch sharding: ns.project(shard_batch(x)) runs over all devices with no change in nsjax.

The multi-device checks run in a separate process: the CPU device count is fixed when JAX
starts, so ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` must be set before
``import jax``.  The child prints one JSON line; the assertions are made here.
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nsjax._nullspace import null_space
from nsjax._sharding import (
    batch_sharding,
    gather_batch,
    global_mesh,
    local_mesh,
    process_local_rows,
    replicate,
    replicated_sharding,
    shard_batch,
    shard_process_local,
)

NDEV = 8
TOL32 = 1e-5  # float32 projections of values in [-1, 1], n = 784: observed ~4e-7

CHILD = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, numpy as np
    import nsjax
    from nsjax._sharding import shard_batch, replicate, batch_sharding
    from nsjax._sharding import (gather_batch, global_mesh, process_local_rows,
                                 shard_process_local)

    out = {"n_devices": jax.device_count()}
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((32, 784)).astype(np.float32)
    ns = nsjax.null_space(w1, input_shape=(28, 28, 1))
    x = rng.uniform(-1, 1, (64, 784)).astype(np.float32)
    ref = np.asarray(ns.project(jnp.asarray(x)))  # one device

    xs = shard_batch(x)
    out["input_devices"] = len(xs.sharding.device_set)
    p = ns.project(xs)
    out["out_spec"] = str(p.sharding.spec)
    out["out_devices"] = len(p.sharding.device_set)
    out["out_same_sharding"] = bool(p.sharding.is_equivalent_to(xs.sharding, p.ndim))
    out["shards"] = sorted({s.data.shape[0] for s in p.addressable_shards})
    out["max_err"] = float(np.abs(np.asarray(p) - ref).max())

    img = shard_batch(x.reshape(64, 28, 28, 1))          # image layout
    pi = ns.project(img)
    out["img_same_sharding"] = bool(pi.sharding.is_equivalent_to(img.sharding, pi.ndim))
    out["img_err"] = float(np.abs(np.asarray(pi).reshape(64, 784) - ref).max())

    nsr = replicate(ns)                                    # explicit replicated null space
    out["ns_devices"] = len(nsr.row_basis.sharding.device_set)
    pr = nsr.project(xs)
    out["rep_same_sharding"] = bool(pr.sharding.is_equivalent_to(xs.sharding, pr.ndim))
    out["rep_err"] = float(np.abs(np.asarray(pr) - ref).max())
    cs = ns.complement(xs)
    out["sum_err"] = float(np.abs(np.asarray(cs) + np.asarray(p) - x).max())

    try:
        shard_batch(np.ones((63, 784), np.float32))
        out["uneven"] = "no error"
    except ValueError as e:
        out["uneven"] = str(e)

    # the multi-process helpers in one process: the same as shard_batch over 8 devices
    xp = shard_process_local(x)
    out["pl_mesh"] = global_mesh().size
    out["pl_same_sharding"] = bool(xp.sharding.is_equivalent_to(xs.sharding, xp.ndim))
    out["pl_exact"] = bool(np.array_equal(process_local_rows(xp), x))
    out["pl_err"] = float(np.abs(process_local_rows(ns.project(xp)) - ref).max())
    out["gather_exact"] = bool(np.array_equal(gather_batch(p), np.asarray(p)))
    try:
        shard_process_local(np.ones((60, 784), np.float32))
        out["pl_uneven"] = "no error"
    except ValueError as e:
        out["pl_uneven"] = str(e)

    model = nsjax.FCNN((784, 32, 16, 10))
    params = nsjax.init_params(model, jax.random.key(0))
    nsm = nsjax.null_space_of(model, params, (28, 28, 1))
    probes = jax.random.uniform(jax.random.key(3), (64, 28, 28, 1), minval=-1.0, maxval=1.0)
    f = lambda z: model.apply(params, z)
    r1 = nsjax.check_invariance(f, nsm, jax.random.key(1), x=probes)
    r2 = nsjax.check_invariance(f, nsm, jax.random.key(1), x=shard_batch(probes))
    out["inv_passed"] = [bool(r1.passed), bool(r2.passed)]
    out["inv_max_ulps"] = [r1.max_ulps, r2.max_ulps]
    out["inv_ctrl_err"] = float(np.max(np.abs(r1.control_rel_change - r2.control_rel_change)
                                       / r1.control_rel_change))
    print("RESULT " + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def child():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                        f" --xla_force_host_platform_device_count={NDEV}").strip()
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def test_child_sees_eight_devices(child):
    assert child["n_devices"] == NDEV
    assert child["input_devices"] == NDEV


def test_projection_output_stays_sharded(child):
    assert child["out_devices"] == NDEV
    assert child["out_same_sharding"], child["out_spec"]
    assert "batch" in child["out_spec"]
    assert child["shards"] == [64 // NDEV]  # every device holds its own 8 rows
    assert child["img_same_sharding"]
    assert child["rep_same_sharding"]
    assert child["ns_devices"] == NDEV


def test_sharded_equals_unsharded(child):
    assert child["max_err"] <= TOL32
    assert child["img_err"] <= TOL32
    assert child["rep_err"] <= TOL32
    assert child["sum_err"] <= TOL32  # project + complement = identity, sharded


def test_uneven_batch_is_a_clear_error(child):
    assert "not a multiple of the 8 devices" in child["uneven"]


def test_process_local_helpers_in_one_process(child):
    # one process: shard_process_local is shard_batch over all (8) devices
    assert child["pl_mesh"] == NDEV
    assert child["pl_same_sharding"]
    assert child["pl_exact"]
    assert child["pl_err"] <= TOL32
    assert child["gather_exact"]
    assert "not a multiple of this process's 8 devices" in child["pl_uneven"]


def test_invariance_check_accepts_sharded_probes(child):
    assert child["inv_passed"] == [True, True]
    assert max(child["inv_max_ulps"]) <= 64
    # Same probes, same directions: the non-null control agrees up to float32 rounding in
    # another summation order: eps32 sqrt(784) ~ 3e-6 per forward pass, amplified in the
    # difference f(x + a v) - f(x) (measured 1.5e-5); 5e-5 is ~3x that
    assert child["inv_ctrl_err"] <= 5e-5


# ------------------------------------------------------------------ in-process, 1+ devices


def test_helpers_on_local_devices():
    mesh = local_mesh()
    assert mesh.size == jax.local_device_count()
    assert batch_sharding(mesh).spec == jax.sharding.PartitionSpec("batch")
    assert replicated_sharding(mesh).spec == jax.sharding.PartitionSpec()
    w1 = np.random.default_rng(1).standard_normal((8, 40)).astype(np.float32)
    ns = null_space(w1)
    x = np.random.default_rng(2).uniform(-1, 1, (4 * mesh.size, 40)).astype(np.float32)
    xs = shard_batch(x)
    np.testing.assert_allclose(np.asarray(ns.project(xs)), np.asarray(ns.project(jnp.asarray(x))),
                               atol=TOL32)
    tree = shard_batch({"a": x, "b": x[:, :3]})
    assert tree["b"].shape == (4 * mesh.size, 3)
    assert replicate(ns).rank == ns.rank


def test_process_local_helpers_on_local_devices():
    n = jax.local_device_count()
    x = np.random.default_rng(3).uniform(-1, 1, (2 * n, 5)).astype(np.float32)
    tree = shard_process_local({"x": x, "y": np.arange(2 * n)})
    assert tree["x"].sharding.is_equivalent_to(shard_batch(x).sharding, 2)
    np.testing.assert_array_equal(process_local_rows(tree["x"]), x)
    np.testing.assert_array_equal(gather_batch(tree)["y"], np.arange(2 * n))
    assert global_mesh().size == jax.device_count()
    assert shard_process_local(x, mesh=local_mesh()).shape == x.shape


def test_helper_errors():
    with pytest.raises(ValueError, match="leading batch axis"):
        shard_batch(jnp.float32(1.0))
    with pytest.raises(ValueError, match="leading batch axis"):
        shard_process_local(np.float32(1.0))
    with pytest.raises(ValueError, match="leading batch axis"):
        process_local_rows(jnp.float32(1.0))
    with pytest.raises(TypeError, match="Mesh"):
        shard_process_local(np.ones((2, 3)), mesh="batch")
    with pytest.raises(TypeError, match="Mesh"):
        batch_sharding("batch")
