"""The conv experiment (nsjax.experiments.conv): exact ranks, near-null spectrum, CLI, generic
nullities against an independent dense SVD."""

import json

import numpy as np
import pytest

import nsjax
from nsjax.blas import limit_blas_threads, openblas_threads
from nsjax.experiments.conv import (
    ConvNet,
    generic_nullity,
    planted_report,
    random_kernel,
    run_conv_nullspace,
    summary,
)


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    with limit_blas_threads(1):
        yield


def _svd_nullity(kernel, shape, **conv) -> int:
    """Independent: dense float64 SVD of nsjax.conv_matrix with the float64 rule."""
    a = nsjax.conv_matrix(kernel, shape, **conv)
    s = np.linalg.svd(a, compute_uv=False)
    return a.shape[1] - int(np.sum(s > max(a.shape) * np.finfo(np.float64).eps * s[0]))


def test_valid_single_kernel_is_108_and_invariant():
    r = run_conv_nullspace(kernels=1, lemma_trials=0, probes=8)
    assert r["rank_rule"] == "exact" and r["intersection_nullity"] == 108
    assert r["per_kernel_nullity"] == [108] and r["per_kernel_generic_nullity"] == 108
    assert r["numerical_nullity"] == 108 and r["invariance_passed"] is True and r["success"]
    assert "dim 108" in summary(r)


def test_same_padding_is_exactly_full_rank_with_near_null_spectrum_beside_it():
    r = run_conv_nullspace(kernels=1, padding="SAME", lemma_trials=2, exact_trials=1)
    assert r["intersection_nullity"] == 0 and r["per_kernel_nullity"] == [0]
    assert r["generic_intersection_nullity"] == 0
    # seed 0's kernel has near-null directions at the float32 rule (13 measured); they are
    # reported, not counted as null, so there is nothing to fail
    assert r["near_null_singular_values"] > 0
    assert r["numerical_nullity"] == r["near_null_singular_values"]
    assert r["sigma_min_over_max"] < r["numerical_rule_rtol"]
    assert r["invariance_passed"] is None and r["success"] is True
    lem = r["lemma_b1"]
    assert lem["SAME"]["exact_full_rank_fraction"] == 1.0 and lem["VALID"]["trials"] == 2
    assert "near-null spectrum" in summary(r)


def test_cli_same_padding_exits_0_and_reports_exact_0(capsys):
    from nsjax.cli import main

    code = main(["conv-nullspace", "--padding", "SAME", "--lemma-trials", "0", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["intersection_nullity"] == 0
    assert report["rank_rule"] == "exact" and report["per_kernel_nullity"] == [0] * 6


@pytest.mark.parametrize("kernels,want", [(1, 108), (2, 8), (3, 0)])
def test_generic_valid_nullity_matches_dense_svd(kernels, want):
    """Two VALID 3x3 kernels on 28x28 leave 2 (k-1)^2 = 8 common null directions (not 0)."""
    rng = np.random.default_rng(kernels)
    k = rng.standard_normal((3, 3, 1, kernels))
    assert _svd_nullity(k, (28, 28, 1)) == want
    assert generic_nullity((28, 28, 1), (3, 3, 1, kernels)) == want


def test_generic_nullity_small_images_and_strides_match_dense_svd():
    # no closed form here: 3 kernels on 5x5 leave 1, stride 2 leaves uncovered pixels
    rng = np.random.default_rng(0)
    for shape, kshape, conv in (((5, 5, 1), (3, 3, 1, 3), {}),
                                ((7, 9, 1), (3, 5, 1, 2), {}),
                                ((12, 12, 2), (3, 3, 2, 4), {"strides": 2}),
                                ((10, 10, 1), (3, 3, 1, 2), {"padding": "SAME"})):
        k = rng.standard_normal(kshape)
        assert generic_nullity(shape, kshape, **conv) == _svd_nullity(k, shape, **conv), shape


def test_planted_table_generic_column():
    rows = {r["name"]: r for r in planted_report((28, 28))}
    assert rows["common-factor-x6"]["VALID"]["generic_nullity"] == 0
    assert rows["corner-tap"]["VALID"]["generic_nullity"] == 108
    assert rows["common-factor-x6"]["VALID"]["exact_nullity"] == 55


def test_convnet_matches_cnn_parameters_and_shapes():
    import jax

    cnn = nsjax.CNN(input_shape=(12, 12, 1), kernels=2)
    net = ConvNet(input_shape=(12, 12, 1), kernels=2)
    p1 = nsjax.init_params(cnn, jax.random.key(0))
    p2 = nsjax.init_params(net, jax.random.key(0), (12, 12, 1))
    np.testing.assert_array_equal(p1["params"]["Conv_0"]["kernel"],
                                  p2["params"]["Conv_0"]["kernel"])
    x = np.zeros((3, 12, 12, 1), np.float32)
    assert net.apply(p2, x).shape == (3, 10) and net.apply(p2, x.reshape(3, 144)).shape == (3, 10)
    dil = ConvNet(input_shape=(12, 12, 1), kernels=1, dilation=2)
    assert nsjax.init_params(dil, jax.random.key(0), (12, 12, 1))["params"]["Conv_0"][
        "kernel"].shape == (3, 3, 1, 1)


def test_random_kernel_and_blas_threads():
    k = random_kernel(np.random.default_rng(0), 3, 2, 4)
    assert k.shape == (3, 3, 2, 4) and k.dtype == np.float32
    with limit_blas_threads(1):
        assert all(v == 1 for v in openblas_threads().values())


def test_conv_study_end_to_end_quick(tmp_path):
    """``scripts/conv_nullspace.py``'s library function on its smallest settings (~40 s)."""
    import json

    from nsjax.experiments.conv_study import run_conv_study

    r = run_conv_study(tmp_path, trials=2, exact=1, quick=True, timings=False, quiet=True)
    assert json.loads((tmp_path / "report.json").read_text())["quick"] is True
    assert "108" in (tmp_path / "report.md").read_text()
    # one VALID 3x3 kernel on 28x28: nullity 28^2 - 26^2 exactly, for every kernel tried
    assert r["108_vs_109"]["nullity_exact_gf_p"] == [108]
    rows = {(x["input"], x["kernels"], x["padding"], x["stride"]): x for x in r["nullity_table"]}
    assert len(rows) == 12 and {k[0] for k in rows} == {"28x28x1"}  # quick: 28x28 rows only
    assert rows[("28x28x1", 2, "VALID", 1)]["generic_nullity"] == 8  # 2 (k - 1)^2
    for key, x in rows.items():
        if key[2] == "VALID":  # random kernels are generic: measured = generic
            assert x["nullity"] == x["generic_nullity"], key
    planted = {p["name"]: p for p in r["planted"]}
    assert planted["zero"]["SAME"]["exact_nullity"] == 784
    assert planted["common-factor-x6"]["VALID"]["exact_nullity"] >= 784 - 27 * 27
