"""Projection past one host: two local ``jax.distributed`` processes equal one process.

Two child processes (``tests/_distributed_worker.py``, 2 CPU devices each: a 4-device
global mesh) join a ``jax.distributed`` run on 127.0.0.1 (gloo CPU collectives), each
holding half of a seeded ``(64, 784)`` batch, and project it with
``ns.project(nsjax.sharding.shard_process_local(half))``.  Each checks its own rows against
a float64 NumPy ``x - (x R) R^T``; process 0 gathers the whole result
(``nsjax.sharding.gather_batch``) for this process -- a single JAX process -- to compare
with its own ``ns.project`` of the full batch.  The children print one JSON line each; the
assertions are made here.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from _distributed_worker import N, make_inputs

import nsjax

WORKER = Path(__file__).with_name("_distributed_worker.py")
NPROC, NLOCAL, BATCH = 2, 2, 64
TIMEOUT_S = 120
# Derived tolerance, float32 eps x scale: rounding in an n-term float32 dot product grows
# like sqrt(n) eps max|x| (independent rounding errors); the r-term second product and the
# subtraction add a few eps max|x|.  16 sqrt(n) eps max|x| (n = 784: 5.3e-5) leaves 16x
# headroom over that estimate (measured: ~3e-7), the bound tests/test_cpu_kernel.py uses too.
EPS32 = float(np.finfo(np.float32).eps)
TOL = 16 * np.sqrt(N) * EPS32  # times max|x| = 1 (x uniform in [-1, 1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child_env() -> dict:
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    # the device count comes from jax_num_cpu_devices in the worker; a forced count in
    # XLA_FLAGS (e.g. from a sharding test's environment) would clash with it
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(flags)
    return env


def _report(procs, outs, first_failed=None) -> str:
    """Both children's exit codes and output tails, the one that failed first on top."""
    order = sorted(range(len(procs)), key=lambda i: i != first_failed)
    lines = []
    for i in order:
        so, se = outs[i]
        tag = " (failed first)" if i == first_failed else ""
        lines.append(f"=== process {i}{tag}: exit code {procs[i].returncode}\n"
                     f"--- stdout:\n{so[-2000:]}\n--- stderr:\n{se[-5000:]}")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("distributed")
    port = _free_port()
    # output to files, not pipes: a child filling a pipe nobody reads yet would block
    logs = [(out_dir / f"stdout{i}.txt", out_dir / f"stderr{i}.txt") for i in range(NPROC)]
    procs = []
    for i in range(NPROC):
        with open(logs[i][0], "w") as so, open(logs[i][1], "w") as se:
            procs.append(subprocess.Popen(
                [sys.executable, str(WORKER), str(port), str(i), str(NPROC), str(NLOCAL),
                 str(BATCH), str(out_dir)], env=_child_env(), stdout=so, stderr=se))
    # Wait for both; once one fails, the other would wait for it until jax.distributed
    # times out, so stop it after a short grace period.
    deadline = time.monotonic() + TIMEOUT_S
    failed_at, first_failed = None, None
    while None in [p.poll() for p in procs]:  # a list: poll every child (no short-circuit)
        now = time.monotonic()
        bad = [i for i, p in enumerate(procs) if p.returncode not in (None, 0)]
        if failed_at is None and bad:
            failed_at, first_failed = now, bad[0]
        if now > deadline or (failed_at is not None and now > failed_at + 5):
            for p in procs:
                if p.poll() is None:
                    p.kill()
            break
        time.sleep(0.05)
    for p in procs:
        p.wait()
    outs = [(so.read_text(), se.read_text()) for so, se in logs]
    if first_failed is None:
        first_failed = next((i for i, p in enumerate(procs) if p.returncode), None)
    timed_out = time.monotonic() > deadline
    assert not timed_out and all(p.returncode == 0 for p in procs), (
        (f"timed out after {TIMEOUT_S} s\n" if timed_out else "")
        + _report(procs, outs, first_failed))
    results = []
    for p, (so, _) in zip(procs, outs):
        line = [ln for ln in so.splitlines() if ln.startswith("RESULT ")]
        assert line, _report(procs, outs)
        results.append(json.loads(line[-1][len("RESULT "):]))
    return results, np.load(out_dir / "gathered.npy")


def test_two_processes_four_devices(run):
    results, _ = run
    assert [r["process_index"] for r in results] == list(range(NPROC))
    for r in results:
        assert r["process_count"] == NPROC
        assert r["device_count"] == NPROC * NLOCAL == r["mesh_size"]
        assert r["local_device_count"] == NLOCAL


def test_each_process_holds_its_half(run):
    results, _ = run
    for r in results:
        assert r["global_shape"] == [BATCH, N]
        assert not r["fully_addressable"]
        assert r["roundtrip_exact"]  # process_local_rows gives back exactly what went in
        assert r["same_sharding"]  # ns.project keeps the batch split over the 4 devices
        assert r["local_shard_rows"] == [BATCH // (NPROC * NLOCAL)]


def test_same_null_space_in_every_process(run):
    results, _ = run
    assert len({r["rank"] for r in results}) == 1
    assert len({r["basis_sha"] for r in results}) == 1  # bit-identical W1 -> bit-identical R


def test_local_rows_match_float64(run):
    results, _ = run
    for r in results:
        assert r["local_err"] <= TOL * r["local_scale"], r
        assert r["sum_err"] <= TOL * r["local_scale"], r  # project + complement = identity


def test_gathered_equals_one_process(run):
    results, gathered = run
    for r in results:
        assert r["gathered_shape"] == [BATCH, N]
        assert r["gathered_rows_mine_exact"]  # the gather puts process k's rows k-th
    w1, x = make_inputs(BATCH)
    ns = nsjax.null_space(w1, input_shape=(28, 28, 1))
    one = np.asarray(ns.project(jnp.asarray(x)))  # this process: one device, maybe the
    r64 = np.asarray(ns.row_basis, np.float64)    # fused CPU kernel -- another sum order
    ref = x.astype(np.float64) - (x.astype(np.float64) @ r64) @ r64.T
    assert np.abs(gathered - ref).max() <= TOL
    # both within TOL of the float64 reference, so within 2 TOL of each other
    assert np.abs(gathered - one).max() <= 2 * TOL
