"""certify / detect / remedy end to end on the embedded MNIST sample, and their CLI.

Tiny settings (1 epoch on 2,000 training images, 500 test images, few points and pairs):
the point is that every step runs and its output means what it says, not the numbers.
"""

import json
import shutil
from pathlib import Path

import pytest

import nsjax
from nsjax.experiments.certify import run_certify
from nsjax.experiments.detect import run_detect
from nsjax.experiments.remedy import run_remedy

QUICK = {"source": "embedded", "epochs": 1, "limit": 2000, "test_limit": 500, "quiet": True}


def _files(out, report):
    """report.json (same content as returned), report.md and PNG + PDF for every figure."""
    assert json.loads((out / "report.json").read_text())["experiment"] == report["experiment"]
    md = (out / "report.md").read_text()
    assert md.startswith("# ")
    assert report["figures"]
    for rel in report["figures"].values():
        png = out / rel
        assert png.suffix == ".png" and png.stat().st_size > 1000, rel
        assert png.with_suffix(".pdf").is_file(), rel
        assert rel in md  # the markdown shows it
    return md


@pytest.fixture(scope="module")
def certify_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("certify")
    # 80 points x 10 outputs = 800 >= 784 rows, and the data row has the same stack shape
    return out, run_certify(out, n_points=80, n_data_points=80, **QUICK)


def test_certify_end_to_end(certify_run):
    out, r = certify_run
    md = _files(out, r)
    assert [p.name.split("-")[0] for p in sorted((out / "checkpoints").iterdir())] == \
        ["cnn1_valid", "cnn6_valid", "fcnn"]
    rows = {x["id"]: x for x in r["rows"]}
    assert len(rows) == len(r["rows"]) == 11
    assert r["bounds"] == [-1.0, 1.0] and rows["trained"]["points"].startswith("80 uniform[-1,1]")
    for x in r["rows"]:
        assert x["lower"] <= x["upper"] <= x["n"] == 784
        assert x["as_expected"], x
    # trained / random nets: the bounds meet at the first layer's null dimension
    assert rows["trained"]["lower"] == rows["trained"]["upper"] == 752
    assert rows["random"]["upper"] == 752
    assert rows["cnn1_valid"]["upper"] == 108 == 28 * 28 - 26 * 26
    # planted nets: the upper bound is the dimension computed by hand
    planted = [x for x in r["rows"] if x["kind"] == "planted"]
    assert {x["id"] for x in planted} == {"dead1", "dead4", "dead16", "pair", "cnn2_dead"}
    for x in planted:
        assert x["upper"] == x["expected_upper"] > x["lower"]
    for k in (1, 4, 16):
        assert rows[f"dead{k}"]["expected_upper"] == 784 - (32 - k)
    assert (rows["pair"]["lower"], rows["pair"]["upper"]) == (753, 754)
    assert rows["data"]["points"] == "80 data" and rows["data"]["upper"] >= 752
    assert r["all_as_expected"] is True and "All as expected: True" in md
    # float32 leaves a rounding floor far above float64's
    f32 = r["float32_stack"]
    assert rows["trained"]["largest_dropped_sigma_rel"] < 1e-13
    assert 1e-13 < f32["largest_sigma_rel_outside_row_space"] < f32["float32_rtol"]


def test_detect_end_to_end(tmp_path):
    # a data folder holding MNIST (the embedded sample's files) and no Fashion-MNIST
    shutil.copytree(Path(nsjax.__file__).parent / "_embedded" / "mnist-sample",
                    tmp_path / "data" / "mnist")
    r = run_detect(tmp_path, datasets=("mnist", "fashion_mnist"), alphas=(0.2,),
                   data_dir=tmp_path / "data", **{**QUICK, "source": "files"})
    md = _files(tmp_path, r)
    assert "not_run" in r["datasets"]["fashion_mnist"]  # missing data: reported, not failed
    assert "## fashion_mnist: not run" in md
    d = r["datasets"]["mnist"]
    assert d["null_space_dim"] == 752 and (d["n_train"], d["n_test"]) == (2000, 500)
    assert sorted(x["statistic"] for x in r["rows"]) == sorted(r["statistics"])
    assert len(r["statistics"]) == 4
    for x in r["rows"]:
        assert 0.0 <= x["auc"] <= 1.0 and x["alpha1"] == 0.2
        assert x["n_clean"] == x["n_stego"] == 500
        assert 0.0 <= x["fpr_realised"] <= 1.0 and x["calibration_fpr"] <= 0.01
    assert set(r["figures"]) == {f"mnist/{s}" for s in r["statistics"]}


def test_remedy_end_to_end(tmp_path, certify_run):
    # the same training as certify's FCNN (same model, config, data, hence the same key in
    # the checkpoint's name): restored from its checkpoint, not retrained
    src = next((certify_run[0] / "checkpoints").glob("fcnn-*"))
    shutil.copytree(src, tmp_path / "checkpoints" / src.name.replace("fcnn", "vulnerable-mnist"))
    r = run_remedy(tmp_path, cnn=False, attacks=("first_layer",), n_pairs=40, **QUICK)
    _files(tmp_path, r)
    rows = {x["name"]: x for x in r["rows"]}
    assert set(rows) == {"vulnerable", "wide"} and r["target_dim"] == 752
    assert rows["vulnerable"]["null_dim"] == 752 and rows["vulnerable"]["attack_kind"] == "exact"
    assert rows["wide"]["null_dim"] == 0 and rows["wide"]["attack_kind"] == "approximate"
    for x in r["rows"]:
        assert x["attack_dim"] == 752 and 0.0 <= x["stego_success"] <= 1.0
        assert x["n_pairs"] == 40 - r["n_pairs_dropped"] > 0
        assert "_details" not in x
    assert set(r["figures"]) == {"triplets_vulnerable", "triplets_wide", "first_layer_spectra"}


def test_cli_exit_codes_and_flags(tmp_path, monkeypatch, capsys):
    """The CLI only passes flags on: exit 1 when a certificate is not as expected."""
    from nsjax.cli import main
    from nsjax.experiments import certify

    seen = {}

    def fake(out, **kw):
        seen.update(kw, out=out)
        return {"rows": [{"as_expected": True}, {"as_expected": ok}], "all_as_expected": ok}

    monkeypatch.setattr(certify, "run_certify", fake)
    for ok, code in ((True, 0), (False, 1)):
        assert main(["certify", "--out", str(tmp_path), "--epochs", "2", "--limit", "300",
                     "--test-limit", "100", "--points", "7", "--quiet"]) == code
    assert (seen["epochs"], seen["limit"], seen["test_limit"], seen["n_points"]) == \
        (2, 300, 100, 7)
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [f"certify: {n}/2 as expected; report: {tmp_path}/report.md" for n in (2, 1)]


def test_cli_missing_dataset_is_not_run(tmp_path, capsys):
    from nsjax.cli import main

    empty = tmp_path / "empty"
    empty.mkdir()
    for cmd in ("certify", "remedy"):
        out = tmp_path / cmd
        assert main([cmd, "--out", str(out), "--data-dir", str(empty), "--source", "files",
                     "--quiet"]) == 0
        report = json.loads((out / "report.json").read_text())
        assert report["experiment"] == cmd and report["not_run"]
        assert (out / "report.md").read_text().startswith(f"# {cmd}: not run")
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(": not run: " in x for x in lines)
