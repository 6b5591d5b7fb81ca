"""check_invariance on 200 random Linen and NNX MLPs: no false failures on the true null
space, and a null space tilted by eta = 2e-5 rad is caught every time (see
scripts/invariance_false_failures.py, whose measurement this runs)."""

import pytest
from _scripts import SCRIPTS, load_script

SCRIPT = SCRIPTS / "invariance_false_failures.py"


@pytest.fixture(scope="module")
def study():
    return load_script(SCRIPT)  # its dataclasses (Linen modules) look themselves up there


def test_no_false_failures_and_a_slightly_wrong_null_space_always_fails(study):
    r = study.measure(seeds=100)
    assert r["nets"] == 200 and r["eta"] == 2e-5
    assert r["false_failures"] == []
    # the true null spaces stay well inside the tolerance, but not trivially so
    assert 1 < r["max_ulps"] <= 64 * 0.75 and 0 < r["max_tolerance_ratio"] <= 0.75
    assert 0.5 < r["min_control_fraction"] <= 1
    # the tilted ones fail with a margin, yet only the large |a| catch them
    assert r["tilted_missed"] == []
    assert 2 < r["tilted_min_tolerance_ratio"] < 1e3
    assert 0 < r["tilted_max_ratio_at_smallest_scale"] < 1


def test_tilted_null_space_is_tilted_by_eta(study):
    import jax
    import numpy as np

    import nsjax

    f, kernel, shape = study.make_net("linen", 1)
    ns = nsjax.null_space(kernel.T, input_shape=shape)
    bad = study.tilted(ns, 1e-3, seed=1)
    assert bad.rank == ns.rank and bad.dim == ns.dim
    rb = np.asarray(bad.row_basis, np.float64)
    np.testing.assert_allclose(rb.T @ rb, np.eye(ns.rank), atol=1e-6)
    v = np.asarray(bad.project(jax.random.normal(jax.random.key(0), (8, ns.n))), np.float64)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    off = np.linalg.norm(np.asarray(ns.complement(v.astype(np.float32)), np.float64), axis=1)
    assert np.all((0.3e-3 < off) & (off < 3e-3))  # every tilted direction is ~eta off
