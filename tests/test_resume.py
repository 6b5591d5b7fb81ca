"""Resumable training: a run killed after a checkpoint and resumed ends with bitwise the
params of an uninterrupted run, in-process and through ``python -m nsjax train``."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import nsjax
from nsjax import _checkpoint
from nsjax._train import TrainConfig, train

MODEL = nsjax.FCNN((16, 8, 4))
CFG = TrainConfig(epochs=4, batch_size=16)


class _Killed(Exception):
    pass


def _data(n=64):
    rng = np.random.default_rng(0)
    return (rng.uniform(-1, 1, (n, 4, 4, 1)).astype(np.float32),
            (np.arange(n) % 4).astype(np.int32))


def _bits(tree):
    return [np.asarray(a).tobytes() for a in jax.tree.leaves(tree)]


def _kill_after_epoch(k):
    def callback(epoch, record):
        if epoch + 1 == k:
            raise _Killed
    return callback


def test_killed_and_resumed_equals_uninterrupted(tmp_path):
    x, y = _data()
    straight = train(MODEL, x, y, CFG, progress=False)
    assert straight.step == 4 and straight.resumed_from is None
    with pytest.raises(_Killed):  # dies after epoch 2 was checkpointed
        train(MODEL, x, y, CFG, progress=False, checkpoint_dir=tmp_path / "ck",
              checkpoint_every=2, callback=_kill_after_epoch(3))
    assert _checkpoint.restore(tmp_path / "ck").step == 2
    lines = []
    resumed = train(MODEL, x, y, CFG, progress=False, checkpoint_dir=tmp_path / "ck",
                    resume=True, log=lines.append)
    assert resumed.resumed_from == 2 and "epoch 2 of 4 done" in lines[0]
    assert _bits(resumed.variables) == _bits(straight.variables)
    assert _bits(resumed.opt_state) == _bits(straight.opt_state)
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in straight.history]
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    # the checkpoint now holds the finished run: resuming again trains nothing
    again = train(MODEL, x, y, CFG, progress=False, checkpoint_dir=tmp_path / "ck",
                  resume=True)
    assert again.resumed_from == 4 and _bits(again.variables) == _bits(straight.variables)
    with pytest.raises(ValueError, match=r"differing fields: batch_size: checkpoint 16 vs "
                                         r"now 32; learning_rate"):
        train(MODEL, x, y, CFG.replace(batch_size=32, learning_rate=0.1), progress=False,
              checkpoint_dir=tmp_path / "ck", resume=True)
    with pytest.raises(ValueError, match="other data"):
        train(MODEL, x[::-1].copy(), y, CFG, progress=False, checkpoint_dir=tmp_path / "ck",
              resume=True)


def test_nnx_module_resumes_in_place(tmp_path):
    from flax import nnx

    from nsjax._models import NNXFCNN

    x, y, cfg = *_data(), CFG.replace(epochs=2)
    straight = NNXFCNN((16, 8, 4), rngs=nnx.Rngs(0))
    train(straight, x, y, cfg, progress=False)  # updated in place
    with pytest.raises(_Killed):  # killed after epoch 1 was checkpointed
        train(NNXFCNN((16, 8, 4), rngs=nnx.Rngs(0)), x, y, cfg, progress=False,
              checkpoint_dir=tmp_path / "ck", callback=_kill_after_epoch(1))
    fresh = NNXFCNN((16, 8, 4), rngs=nnx.Rngs(0))
    result = train(fresh, x, y, cfg, progress=False, checkpoint_dir=tmp_path / "ck",
                   resume=True)
    assert result.resumed_from == 1 and isinstance(result.variables, nnx.State)
    assert np.asarray(fresh(x)).tobytes() == np.asarray(straight(x)).tobytes()


def _cli(out, *extra):
    return [sys.executable, "-m", "nsjax", "train", "--dataset", "mnist", "--source",
            "embedded", "--limit", "100", "--arch", "784,8,10", "--epochs", "12",
            "--batch-size", "50", "--checkpoint-every", "1", "--no-progress", "--out",
            str(out), *extra]


def test_cli_train_killed_and_rerun_resumes(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(_cli(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    meta = out / "checkpoint" / "meta.json"
    deadline = time.monotonic() + 240
    while not meta.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # mid-run: no cleanup, no finally
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err[-2000:]
    done = json.loads(meta.read_text())["step"]
    assert 1 <= done < 12, "the run finished before it was killed"
    rerun = subprocess.run(_cli(out), capture_output=True, text=True, timeout=240)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resuming from checkpoint {out / 'checkpoint'}: epoch {done} of 12 done" in \
        rerun.stderr
    saved = [int(n) for n in re.findall(r"train: checkpoint: epoch (\d+) of", rerun.stderr)]
    assert saved == list(range(done + 1, 13))  # no epoch before the kill trained again
    assert f"(resumed after epoch {done})" in rerun.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["epoch"] for r in metrics["history"]] == list(range(1, 13))
    assert _checkpoint.restore(out / "checkpoint").step == 12
