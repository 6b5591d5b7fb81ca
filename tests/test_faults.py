"""Fault injection: killed writes, damaged files and reruns never lose or trust bad data.

Each kill runs in a subprocess that replaces one write step of the code under test with
``os._exit`` (a crash: no ``finally``, no cleanup), then the parent checks what is left.
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import nsjax
from nsjax import _checkpoint
from nsjax.experiments import _common

MODEL = nsjax.FCNN((16, 8, 4))

# kill the k-th call of the functions a checkpoint save uses to write: orbax's rename of
# its finished state/ into the temporary checkpoint, the meta.json write, the rename of the
# old checkpoint aside, the rename of the new one in, and the removal of the old one
_SAVE_SCRIPT = textwrap.dedent("""
    import os, shutil, sys
    import jax, nsjax
    from nsjax import _checkpoint
    target, kill_at, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    calls = [0]
    def crash_at_k(fn):
        def wrapped(*a, **k):
            calls[0] += 1
            if calls[0] == kill_at:
                os._exit(137)
            return fn(*a, **k)
        return wrapped
    _checkpoint._write_synced = crash_at_k(_checkpoint._write_synced)
    os.rename = crash_at_k(os.rename)
    shutil.rmtree = crash_at_k(shutil.rmtree)
    model = nsjax.FCNN((16, 8, 4))
    _checkpoint.save(target, model, nsjax.init_params(model, jax.random.key(seed), (16,)))
    print(calls[0])
""")


def _params(seed):
    return nsjax.init_params(MODEL, jax.random.key(seed), (16,))


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in
               zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def _save_killed_at(target, k, seed):
    return subprocess.run([sys.executable, "-c", _SAVE_SCRIPT, str(target), str(k), str(seed)],
                          capture_output=True, text=True, timeout=120)


def test_a_save_killed_at_each_step_leaves_a_whole_checkpoint(tmp_path):
    target = tmp_path / "ck"
    _checkpoint.save(target, MODEL, _params(0))
    done = _save_killed_at(target, 0, 1)  # 0: never killed, counts the steps
    assert done.returncode == 0, done.stderr
    steps = int(done.stdout)
    assert steps == 5  # orbax state in, write meta, old aside, new in, remove old
    for k in range(1, steps + 1):
        _checkpoint.save(target, MODEL, _params(0))  # the previous good checkpoint
        run = _save_killed_at(target, k, 1)
        assert run.returncode == 137, run.stderr
        _, variables, _ = _checkpoint.restore(target)  # never raises, never a mix
        # before the new checkpoint is renamed in (step 4) the old one is what restores
        assert _same(variables, _params(0 if k <= 4 else 1)), k
        # the next save recovers whatever the crash left and commits cleanly
        _checkpoint.save(target, MODEL, _params(2))
        assert _same(_checkpoint.restore(target)[1], _params(2))
        assert not _checkpoint._previous(target).exists()


@pytest.mark.parametrize("damage", ["params byte", "activation edited", "version string",
                                    "model null", "truncated meta", "digest removed"])
def test_a_damaged_checkpoint_is_refused(tmp_path, damage):
    _checkpoint.save(tmp_path / "ck", MODEL, _params(0))
    meta_path = tmp_path / "ck" / "meta.json"
    params_path = max((p for p in (tmp_path / "ck" / "state").rglob("*") if p.is_file()),
                      key=lambda p: p.stat().st_size)  # the array data
    meta = json.loads(meta_path.read_text())
    if damage == "params byte":
        blob = bytearray(params_path.read_bytes())
        blob[-3] ^= 0x01
        params_path.write_bytes(bytes(blob))
    elif damage == "truncated meta":
        meta_path.write_text(meta_path.read_text()[:40])
    else:
        if damage == "activation edited":  # restores a different function if trusted
            meta["model"]["activation"] = "sigmoid"
        elif damage == "version string":
            meta["format_version"] = "2"
        elif damage == "model null":
            meta["model"] = None
        else:
            del meta["digest"]
        meta_path.write_text(json.dumps(meta))
    with pytest.raises(_checkpoint.CheckpointError):
        _checkpoint.restore(tmp_path / "ck")


def _tiny_ds(n=64):
    rng = np.random.default_rng(0)
    return nsjax.data.Dataset(images=rng.uniform(-1, 1, (n, 4, 4, 1)).astype(np.float32),
                   labels=(np.arange(n) % 4).astype(np.int32), class_names=tuple("abcd"),
                   name="mnist", split="train", source="test-made", complete=False)


def test_a_rerun_with_another_config_keeps_the_old_checkpoint(tmp_path, capsys):
    ds, p = _tiny_ds(), _common.Progress(quiet=False)
    cfg = nsjax.training.recipe("mnist", epochs=1, batch_size=16)
    v1, _, reused = _common.train_or_restore(tmp_path, "net", MODEL, cfg, ds, p)
    assert not reused
    v2, _, _ = _common.train_or_restore(tmp_path, "net", MODEL, cfg.replace(seed=5), ds, p)
    dirs = sorted(d.name for d in (tmp_path / "checkpoints").iterdir())
    assert len(dirs) == 2 and all(d.startswith("net-") for d in dirs)
    v1_again, _, reused = _common.train_or_restore(tmp_path, "net", MODEL, cfg, ds, p)
    assert reused and _same(v1, v1_again) and not _same(v1, v2)


def test_a_damaged_cached_checkpoint_is_set_aside_and_retrained(tmp_path, capsys):
    ds, p = _tiny_ds(), _common.Progress(quiet=False)
    cfg = nsjax.training.recipe("mnist", epochs=1, batch_size=16)
    v1, _, _ = _common.train_or_restore(tmp_path, "net", MODEL, cfg, ds, p)
    (ck,) = (tmp_path / "checkpoints").iterdir()
    next(p for p in (ck / "state").rglob("*") if p.is_file()).write_bytes(b"garbage")
    v2, _, reused = _common.train_or_restore(tmp_path, "net", MODEL, cfg, ds, p)
    out = capsys.readouterr().out
    assert not reused and "cannot be trusted" in out and "moved to" in out
    assert ck.with_name(ck.name + ".damaged-0").is_dir()  # kept for inspection
    assert _same(v1, v2)  # same config and data: training is deterministic


_REPORT_SCRIPT = textwrap.dedent("""
    import os, sys
    from nsjax.experiments._common import write_report
    os.replace = lambda *a: os._exit(137)
    write_report(sys.argv[1], {"run": 2, "big": list(range(100000))}, "# second")
""")


def test_a_report_write_killed_keeps_the_old_report(tmp_path):
    _common.write_report(tmp_path, {"run": 1}, "# first")
    run = subprocess.run([sys.executable, "-c", _REPORT_SCRIPT, str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 137, run.stderr
    assert json.loads((tmp_path / "report.json").read_text()) == {"run": 1}
    assert (tmp_path / "report.md").read_text() == "# first"


def test_output_location_is_checked_before_any_work(tmp_path, capsys):
    from nsjax.cli import main

    afile = tmp_path / "file"
    afile.write_text("")
    for out in (afile, afile / "sub"):
        code = main(["train", "--dataset", "mnist", "--source", "embedded", "--out", str(out),
                     "--no-progress"])
        assert code == 2 and str(afile) in capsys.readouterr().err
    assert afile.read_text() == ""


def test_train_refuses_to_replace_another_training(tmp_path):
    from nsjax.experiments import train_and_evaluate

    cfg = nsjax.training.recipe("mnist", epochs=1)
    _checkpoint.save(tmp_path / "run" / "checkpoint", nsjax.FCNN((784, 32, 16, 10)),
                     nsjax.init_params(nsjax.FCNN((784, 32, 16, 10)), jax.random.key(0)),
                     config=cfg.replace(seed=9))
    with pytest.raises(ValueError, match=r"another model or training config .*seed: "
                                         r"checkpoint 9 vs now 0"):
        train_and_evaluate("mnist", config=cfg, source="embedded", out_dir=tmp_path / "run",
                           limit=100, progress=False)
    assert os.listdir(tmp_path / "run") == ["checkpoint"]  # nothing written
