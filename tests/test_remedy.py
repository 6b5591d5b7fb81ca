"""The remedy table (trivial null space beside the paper's net) and the CLI wiring."""


import jax
import numpy as np
import pytest
from _datapaths import MNIST, need

import nsjax
from nsjax._remedy import TABLE_KEYS, attack_space, compare, default_models, remedy
from nsjax._stego import stego


@pytest.fixture(scope="module")
def mnist():
    need(MNIST / "train-images-idx3-ubyte.gz")
    from nsjax import _data

    tr = _data.load("mnist", "train", data_dir=MNIST, limit=1500)
    te = _data.load("mnist", "test", data_dir=MNIST, limit=500)
    return tr, te


@pytest.fixture(scope="module")
def table(mnist):
    from nsjax._train import TrainConfig

    tr, te = mnist
    return remedy(tr.images, tr.labels, te.images, te.labels,
                  config=TrainConfig(epochs=2, seed=0), n_pairs=60,
                  attacks=("first_layer", "jacobian"), n_jacobian_points=40)


def test_remedy_table_keys_and_dims(table):
    rows = {(r["name"], r["attack"]): r for r in table["rows"]}
    assert set(rows) == {(n, a) for n in ("vulnerable", "wide")
                         for a in ("first_layer", "jacobian")}
    for r in table["rows"]:
        assert set(TABLE_KEYS) <= set(r)
        assert r["attack_dim"] == 752 == table["target_dim"]
        assert 0.0 <= r["stego_success"] <= 1.0 and 0.0 <= r["accuracy_test"] <= 1.0
        assert r["n_pairs"] == 60 - table["n_pairs_dropped"]
        assert r["chance"] == pytest.approx(0.1)
    vul, wide = rows["vulnerable", "first_layer"], rows["wide", "first_layer"]
    assert vul["model"] == "FCNN(784, 32, 16, 10)" and wide["model"] == "FCNN(784, 800, 16, 10)"
    assert vul["null_dim"] == 752 and vul["attack_kind"] == "exact"
    assert wide["null_dim"] == 0 and wide["attack_kind"] == "approximate"
    assert wide["attack_sigma_rel"] > 1e-3  # the weakest directions are heard
    # exact null space + pairs the net gets right at scale alpha1: f(S) = f(alpha1 H)
    assert vul["stego_success"] == 1.0 and vul["hidden_correct_rate"] == 1.0
    # same test set and the same pairs for every row
    d0 = table["rows"][0]["_details"]
    for r in table["rows"][1:]:
        np.testing.assert_array_equal(r["_details"]["cover_index"], d0["cover_index"])
        np.testing.assert_array_equal(r["_details"]["hidden_index"], d0["hidden_index"])
    assert set(table["histories"]) == {"vulnerable", "wide"}


def test_attack_space_with_cnn_same(mnist):
    _, te = mnist
    cnn = default_models((28, 28, 1), 10, cnn=True)["cnn_same"]
    v = nsjax.init_params(cnn, jax.random.key(0))
    sp = attack_space(cnn, v, 752, (28, 28, 1))
    assert sp.exact.dim == 0 and sp.attack.dim == 752 and sp.kind == "approximate"
    assert 0 < sp.sigma_rel <= 1
    # S stays in the domain and is built from the approximate space
    x = te.images[:4]
    r = stego(x[::-1], x, sp.attack, alpha1=0.2)
    assert float(np.abs(np.asarray(r.image)).max()) <= 1.0


def test_compare_errors(mnist):
    tr, te = mnist
    m = nsjax.FCNN((784, 32, 16, 10))
    v = nsjax.init_params(m, jax.random.key(0))
    with pytest.raises(ValueError, match="jacobian attack needs points"):
        compare({"a": (m, v)}, te.images, te.labels, attacks=("jacobian",), n_pairs=4)
    with pytest.raises(ValueError, match="attack must be"):
        attack_space(m, v, 752, attack="other")


def test_cli_registers_beyond_commands(capsys):
    from nsjax.cli import build_parser, main

    parser = build_parser()
    for cmd in ("certify", "detect", "remedy"):
        args = parser.parse_args([cmd, "--out", "x", "--limit", "10", "--test-limit", "5"])
        assert callable(args.func) and args.out == "x"
        assert (args.limit, args.test_limit) == (10, 5)
    args = parser.parse_args(["detect", "--alphas", "0.1,0.5", "--datasets", "mnist"])
    assert args.alphas == (0.1, 0.5) and args.datasets == ("mnist",)
    with pytest.raises(SystemExit) as e:
        main(["remedy", "--help"])
    assert e.value.code == 0
    assert "--no-cnn" in capsys.readouterr().out


def test_first_layer_spectra():
    from nsjax._remedy import first_layer_spectra

    models = default_models((28, 28, 1), 10)
    entries = {k: (m, nsjax.init_params(m, jax.random.key(0))) for k, m in models.items()}
    spectra = first_layer_spectra(entries, (28, 28, 1))
    s_vul = spectra["vulnerable: FCNN(784, 32, 16, 10)"]
    s_wide = spectra["wide: FCNN(784, 800, 16, 10)"]
    assert s_vul.shape == s_wide.shape == (784,)
    assert np.all(s_vul[32:] == 0) and s_vul[31] > 0  # rank 32: 752 zeros
    assert np.all(np.diff(s_wide) <= 0) and s_wide[-1] > 0
