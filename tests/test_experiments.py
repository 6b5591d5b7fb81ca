"""The paper's experiments end to end on the embedded MNIST sample, with tiny settings.

Each test runs the library function a script or CLI command runs, and checks the report
against what the theory fixes (null dimensions, stego success on the filtered sets, the
paper table's labels) and that every file it promises exists.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import nsjax
from nsjax.cli import main
from nsjax.experiments import (
    PAPER,
    run_cnn_stego,
    run_demo,
    run_stego,
    run_train_paper,
    train_and_evaluate,
)
from nsjax.experiments.paper import _lookup

TINY = dict(epochs=1, limit=2000, test_limit=400)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return out, run_demo(out, n_pairs=40, quiet=True, **TINY)


def _figures_exist(out, figures):
    for rel in figures.values():
        png = out / rel
        assert png.suffix == ".png" and png.stat().st_size > 0
        assert png.with_suffix(".pdf").stat().st_size > 0


def test_demo_report_files_and_theory(demo):
    out, r = demo
    assert json.loads((out / "report.json").read_text())["null_space_dim"] == 752
    assert "## The paper's numbers beside ours" in (out / "report.md").read_text()
    _figures_exist(out, r["figures"])
    assert set(r["figures"]) == {"triplets", "pipeline", "what_nn_sees", "relu_surface",
                                 "rescaled"}
    assert r["rank"] == 32 and r["invariance_passed"]
    # pairs come from images right at scale 1 and 0.2, and f(S) = f(0.2 H) up to rounding:
    # every pair must succeed, on both the test and the filtered training set
    for key in ("stego", "stego_train_filtered"):
        s = r[key]
        assert s["n_pairs"] == 40 and s["success_rate"] == 1.0
        assert s["agreement_max_abs"] < 1e-5 and s["stego_max_abs"] <= 1.0
    f, ps = r["filtered_train"], r["paper_set"]
    assert 0 < f["n"] <= r["n_train"] == 2000 and sum(f["per_class"]) == f["n"]
    assert "mask" not in f and "mask" not in ps
    # the paper's set: at most 5,000 per class of the images right at both scales
    assert ps["per_class"] == [min(k, 5000) for k in f["per_class"]]
    # the paper's rule alpha2 in (0, 1): the largest admissible value, capped below 1
    for key in ("stego", "stego_train_filtered"):
        s = r[key]
        assert s["alpha2_max"] < 1.0 and s["alpha2_max"] <= s["alpha2_admissible_max"]
        assert (s["alpha2_capped_fraction"] > 0) == (s["alpha2_admissible_max"] >= 1.0)


def test_every_paper_number_is_measured_by_the_report(demo):
    _, r = demo
    for name, v in PAPER["mnist"].items():
        assert _lookup(r, v.report_key) is not None, name
    # the paper's MNIST accuracy/confidences are on the training set, per scale ...
    assert "predicted correctly" in PAPER["mnist"]["confidence_correct"].measured_on
    # ... and its Fashion-MNIST confidences on the filtered set (right at both scales)
    for key in ("filtered_confidence", "filtered_confidence_rescaled"):
        v = PAPER["fashion_mnist"][key]
        assert "scale 1 and 0.2" in v.measured_on and v.report_key.startswith("filtered_train")


def test_rerun_reuses_checkpoints_max_rule_and_foreign_covers(demo, capsys):
    out, first = demo
    with pytest.warns(nsjax.data.IncompleteDatasetWarning):  # covers: the embedded sample
        again = run_stego("mnist", out, source="embedded", n_pairs=40, alpha2_rule="max",
                          cover_dataset="mnist", quiet=False, **TINY)
    assert capsys.readouterr().out.count("reusing checkpoint") == 2
    assert again["train_eval"] == first["train_eval"]
    s = again["stego"]  # the largest admissible weight: nothing capped
    assert s["alpha2_capped_fraction"] == 0.0 and s["alpha2_max"] == s["alpha2_admissible_max"]
    fc = again["stego_foreign_covers"]
    assert fc["success_rate"] == 1.0 and (out / fc["figure"]).with_suffix(".pdf").exists()
    assert again["figures"]["foreign_covers"] == fc["figure"]


def test_paper_verdicts():
    from nsjax.experiments.paper import verdict

    assert verdict(752, 752) == "match" and verdict(50000, 59965) == "+9,965"
    assert verdict(0.9977, 0.99785) == "match"  # 0.015 points
    assert verdict(0.9977, 0.9945) == "-0.32 pp" and verdict(0.9974, None) == "n/a"


def test_cli_reports_a_missing_dataset_as_not_run(tmp_path, capsys):
    out = tmp_path / "fm"
    code = main(["stego", "--dataset", "fashion_mnist", "--data-dir", str(tmp_path / "none"),
                 "--source", "files", "--out", str(out), "--quiet"])
    assert code == 0 and "not run" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert report["experiment"] == "stego" and "fashion_mnist" in report["not_run"]


def test_cli_refuses_an_output_that_is_a_file(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("")
    assert main(["demo", "--out", str(target), "--quiet"]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_train_and_evaluate_writes_checkpoint_and_metrics(tmp_path):
    from nsjax import checkpoint, training

    out = tmp_path / "run"
    m = train_and_evaluate("mnist", "784,32,16,10", training.recipe("mnist", epochs=1),
                           source="embedded", limit=1000, out_dir=out, progress=False)
    assert m["null_space_dim"] == 752 and m["n_train"] == m["n_test"] == 1000
    assert json.loads((out / "metrics.json").read_text())["filtered_train"]["n"] == \
        m["filtered_train"]["n"]
    model, variables, meta = checkpoint.restore(out / "checkpoint")
    assert meta["metrics"]["null_space_dim"] == 752
    assert meta["versions"]["jax"]


def test_train_paper_table_with_a_missing_dataset(tmp_path):
    # a data folder holding MNIST files (the embedded sample's) and no Fashion-MNIST
    sample = Path(nsjax.__file__).parent / "_embedded" / "mnist-sample"
    shutil.copytree(sample, tmp_path / "data" / "mnist")
    res = run_train_paper(tmp_path / "out", datasets=["mnist", "fashion_mnist"], epochs=1,
                          data_dir=tmp_path / "data", source="files", limit=500,
                          progress=False)
    assert "not_run" in res["fashion_mnist"] and res["mnist"]["null_space_dim"] == 752
    md = (tmp_path / "out" / "results.md").read_text()
    assert "Not run" in md and "| quantity | measured on | paper | ours | verdict | where |" in md
    # the paper's set (5,000 per class) is measured, not n/a: the sample has < 5,000 per class
    ps = res["mnist"]["paper_set"]
    assert ps["n"] == sum(ps["per_class"]) == res["mnist"]["filtered_train"]["n"] > 0
    assert f"| 50,000 | {ps['n']:,} |" in md


def test_cnn_stego_null_dims_and_same_padding(tmp_path):
    r = run_cnn_stego(tmp_path, epochs=1, n_pairs=20, limit=1000, test_limit=300, quiet=True)
    m = r["models"]
    # VALID 3x3 on 28x28: 28^2 - 26^2; 8 4x4/stride-4 kernels: 49 patches x (16 - 8); SAME: 0
    assert [m[k]["null_space_dim"] for k in ("valid_1k3", "patch_8k4s4", "same_6k3")] == \
        [108, 392, 0]
    assert m["same_6k3"]["stego"] is None and "nothing can be hidden" in m["same_6k3"][
        "stego_note"]
    for k in ("valid_1k3", "patch_8k4s4"):
        assert m[k]["invariance_passed"] and m[k]["stego"]["success_rate"] == 1.0
        assert (tmp_path / m[k]["figure"]).with_suffix(".pdf").exists()
    assert np.isfinite(r["wall_seconds"])
