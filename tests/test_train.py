"""Training, evaluation and the ``nsjax train`` command on a few thousand real MNIST images."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _datapaths import MNIST, need

import nsjax
from nsjax import _checkpoint
from nsjax._train import (
    TrainConfig,
    augment_rescaled,
    create_train_state,
    evaluate,
    filter_correct,
    make_optimizer,
    predict,
    train,
    train_step,
)

ARCH = (784, 32, 16, 10)

needs_mnist = pytest.mark.skipif(not (MNIST / "train-images-idx3-ubyte.gz").is_file(),
                                 reason=f"needs data: {MNIST} is missing (set NSJAX_DATA_DIR)")


@pytest.fixture(scope="module")
def mnist():
    need(MNIST / "train-images-idx3-ubyte.gz")
    from nsjax import _data

    tr = _data.load("mnist", "train", data_dir=MNIST, limit=3000)
    te = _data.load("mnist", "test", data_dir=MNIST, limit=1000)
    return tr.images, tr.labels, te.images, te.labels


def _leaves_equal(a, b):
    return all(np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def test_config_round_trip_and_checks():
    c = TrainConfig(epochs=3, learning_rate=1e-2, alpha=None, optimizer="adamw",
                    weight_decay=0.1)
    assert TrainConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert not c.uses_rescaled and TrainConfig().uses_rescaled
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_dict({"epochs": 1, "lr": 0.1})
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="step")
    with pytest.raises(ValueError, match="alpha"):
        TrainConfig(alpha=2.0)
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)


def test_augment_rescaled_shapes_and_values():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (5, 28, 28, 1)).astype(np.float32)
    y = np.arange(5, dtype=np.int32)
    x2, y2 = augment_rescaled(x, y, 0.2)
    assert x2.shape == (10, 28, 28, 1) and y2.shape == (10,) and x2.dtype == np.float32
    np.testing.assert_array_equal(x2[:5], x)
    np.testing.assert_allclose(x2[5:], 0.2 * x, rtol=1e-7)
    np.testing.assert_array_equal(y2, np.concatenate([y, y]))
    xj, yj = augment_rescaled(jnp.asarray(x), jnp.asarray(y), 0.5)
    assert isinstance(xj, jax.Array) and xj.shape == (10, 28, 28, 1)
    for off in (None, 0):
        a, b = augment_rescaled(x, y, off)
        assert a is x and b is y


@needs_mnist
def test_train_learns_and_evaluate(mnist):
    xtr, ytr, xte, yte = mnist
    model = nsjax.FCNN(ARCH)
    cfg = TrainConfig(epochs=2, batch_size=64, learning_rate=3e-3, warmup_epochs=0.2, seed=0)
    variables, hist = train(model, xtr, ytr, cfg, eval_data=(xte, yte), progress=False)
    assert [h["epoch"] for h in hist] == [1, 2]
    assert hist[1]["loss"] < hist[0]["loss"]
    assert hist[1]["accuracy"] > hist[0]["accuracy"]
    assert {"loss", "accuracy", "eval_accuracy", "eval_loss", "learning_rate", "time_s"} <= set(
        hist[0])
    ev = evaluate(model, variables, xte, yte, alpha=0.2)
    assert ev["n"] == 1000 and ev["accuracy"] > 0.75  # chance is 0.1
    assert ev["accuracy_rescaled"] > 0.6
    assert abs(ev["accuracy"] - hist[-1]["eval_accuracy"]) < 1e-9
    assert 0.1 < ev["mean_confidence_correct"] <= 1.0

    # evaluate / filter_correct against a direct computation
    logits = np.asarray(model.apply(variables, jnp.asarray(xte)))
    logits_r = np.asarray(model.apply(variables, jnp.asarray(0.2 * xte)))
    ok, ok_r = logits.argmax(-1) == yte, logits_r.argmax(-1) == yte
    probs = np.asarray(jax.nn.softmax(logits, -1))
    np.testing.assert_allclose(ev["accuracy"], ok.mean())
    np.testing.assert_allclose(ev["accuracy_rescaled"], ok_r.mean())
    np.testing.assert_allclose(ev["mean_confidence_correct"], probs.max(-1)[ok].mean(), rtol=1e-5)
    mask = filter_correct(model, variables, xte, yte, alpha=0.2)
    assert mask.dtype == bool and mask.shape == (1000,)
    np.testing.assert_array_equal(mask, ok & ok_r)
    np.testing.assert_allclose(ev["accuracy_both"], mask.mean())
    assert np.all(predict(model, variables, xte[mask]).argmax(-1) == yte[mask])
    assert np.all(predict(model, variables, 0.2 * xte[mask]).argmax(-1) == yte[mask])
    np.testing.assert_array_equal(filter_correct(model, variables, xte, yte, alpha=None), ok)
    # predict pads the last batch: same logits with any batch size
    np.testing.assert_allclose(predict(model, variables, xte, batch_size=300), logits,
                               rtol=1e-5, atol=1e-5)


@needs_mnist
def test_same_seed_same_bits_other_seed_differs(mnist):
    xtr, ytr = mnist[0][:1000], mnist[1][:1000]
    model = nsjax.FCNN(ARCH)
    cfg = TrainConfig(epochs=1, batch_size=100, seed=3)
    v1, h1 = train(model, xtr, ytr, cfg, progress=False)
    v2, h2 = train(model, xtr, ytr, cfg, progress=False)
    assert _leaves_equal(v1, v2) and h1[0]["loss"] == h2[0]["loss"]
    v3, _ = train(model, xtr, ytr, cfg.replace(seed=4), progress=False)
    assert not np.array_equal(np.asarray(v1["params"]["Dense_0"]["kernel"]),
                              np.asarray(v3["params"]["Dense_0"]["kernel"]))


def test_cnn_trains_with_the_same_code():
    model = nsjax.CNN(input_shape=(28, 28, 1), kernels=4, hidden=(8,), num_classes=10)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (64, 28, 28, 1)).astype(np.float32)
    y = (np.arange(64) % 10).astype(np.int32)
    cfg = TrainConfig(epochs=1, batch_size=32, warmup_epochs=0, max_norm=0.5)
    state = create_train_state(model, jax.random.key(0), make_optimizer(cfg, 2))
    before = state.params
    state, m = train_step(state, (jnp.asarray(x[:32]), jnp.asarray(y[:32])))
    assert np.isfinite(float(m["loss"])) and 0 <= float(m["accuracy"]) <= 1
    assert int(state.step) == 1 and not _leaves_equal(before, state.params)
    variables, hist = train(model, x, y, cfg, progress=False)
    assert len(hist) == 1 and np.isfinite(hist[0]["loss"])
    # max_norm: every first-layer kernel (one per unit) stays in the L2 ball
    k = np.asarray(variables["params"]["Conv_0"]["kernel"])
    assert np.all(np.linalg.norm(k.reshape(-1, k.shape[-1]), axis=0) <= 0.5 + 1e-5)
    assert evaluate(model, variables, x, y)["n"] == 64


def test_weight_decay_masks():
    from nsjax._train import _decay_mask

    params = nsjax.init_params(nsjax.FCNN(ARCH), jax.random.key(0))["params"]
    m = _decay_mask("hidden_kernels")(params)
    assert m["Dense_0"] == {"kernel": False, "bias": False}
    assert m["Dense_1"] == {"kernel": True, "bias": False}
    assert _decay_mask("kernels")(params)["Dense_0"]["kernel"] is True
    assert _decay_mask("all") is None


def test_bad_inputs():
    model = nsjax.FCNN(ARCH)
    x = np.zeros((8, 28, 28, 1), np.float32)
    y = np.zeros(8, np.int32)
    cfg = TrainConfig(epochs=1, batch_size=4)
    with pytest.raises(ValueError, match="same length"):
        train(model, x, y[:7], cfg, progress=False)
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        train(model, x, np.full(8, 10), cfg, progress=False)
    with pytest.raises(ValueError, match=r"\[-1, 1\].*not clipped"):
        train(model, x + 1.5, y, cfg, progress=False)
    with pytest.raises(ValueError, match="non-finite"):
        train(model, np.full_like(x, np.nan), y, cfg, progress=False)
    with pytest.raises(TypeError, match="floating"):
        train(model, x.astype(np.uint8), y, cfg, progress=False)
    with pytest.raises(TypeError, match="integers"):
        train(model, x, y.astype(np.float32), cfg, progress=False)
    with pytest.raises(ValueError, match="784"):
        train(model, np.zeros((8, 10, 10, 1), np.float32), y, cfg, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        train(model, x, y, cfg.replace(batch_size=64), progress=False)
    variables = nsjax.init_params(model, jax.random.key(0))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        evaluate(model, variables, x - 2, y)
    with pytest.raises(ValueError, match="same length"):
        filter_correct(model, variables, x, y[:3])


def test_cli_flags_override_the_dataset_recipe():
    from nsjax._cli_train import config_from_args
    from nsjax._train import recipe
    from nsjax.cli import build_parser

    parser = build_parser()

    def cfg(*flags):
        return config_from_args(parser.parse_args(["train", "--out", "x", *flags]))

    assert cfg() == recipe("mnist") == TrainConfig(epochs=150)
    assert cfg("--dataset", "fashion_mnist").epochs == 420 == recipe("fashion-mnist").epochs
    fm = cfg("--dataset", "fashion_mnist")
    assert fm.copy_weight == 0.6 == recipe("fashion_mnist").copy_weight
    assert cfg("--dataset", "fashion_mnist", "--copy-weight", "1").copy_weight == 1.0
    c = cfg("--dataset", "fashion_mnist", "--max-norm", "1.5", "--alpha", "0", "--lr", "0.01")
    assert c.max_norm == 1.5 and c.alpha is None and c.learning_rate == 0.01
    assert cfg("--dataset", "fashion_mnist", "--max-norm", "0").max_norm is None
    assert cfg("--epochs", "7", "--seed", "2").replace(epochs=100, seed=0) == TrainConfig()
    assert cfg("--copy-weight", "0.4").copy_weight == 0.4 and cfg().copy_weight == 1.0


@needs_mnist
def test_cli_train_writes_checkpoint_and_metrics(tmp_path, capsys):
    from nsjax.cli import build_parser

    parser = build_parser()
    out = tmp_path / "run"
    args = parser.parse_args(["train", "--dataset", "mnist", "--epochs", "1", "--limit", "600",
                              "--batch-size", "50", "--data-dir", str(MNIST), "--out", str(out),
                              "--no-progress"])
    assert args.func(args) == 0
    assert "null space dim 752" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["null_space_dim"] == 752 and metrics["n_train"] == 600
    assert len(metrics["history"]) == 1 and metrics["train_time_s"] > 0
    assert {"accuracy", "accuracy_rescaled", "mean_confidence_correct"} <= set(metrics["train"])
    assert metrics["config"]["epochs"] == 1 and metrics["config"]["alpha"] == 0.2
    model, variables, meta = _checkpoint.restore(out / "checkpoint")
    assert model == nsjax.FCNN(ARCH) and meta["metrics"]["null_space_dim"] == 752
    assert TrainConfig.from_dict(meta["config"]).batch_size == 50


def test_copy_weight_weights_the_rescaled_copies_loss():
    # train_step with per-example weights: its loss against a float64 NumPy cross-entropy
    # (float32 logits of O(1): agreement to ~1e-6), its gradient against jax.grad of the
    # weighted mean written out by hand; weights of 1 give exactly the unweighted step
    model = nsjax.FCNN((12, 6, 3))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(-1, 1, (8, 12)), jnp.float32)
    y = jnp.asarray(np.arange(8) % 3, jnp.int32)
    w = jnp.asarray([1, 1, 1, 1, 0.25, 0.25, 0.25, 0.25], jnp.float32)
    cfg = TrainConfig(epochs=1, batch_size=8, warmup_epochs=0, optimizer="sgd", momentum=0.0)
    state = create_train_state(model, jax.random.key(0), make_optimizer(cfg, 1))
    logits = np.asarray(model.apply({"params": state.params}, x), np.float64)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ce = -logp[np.arange(8), np.asarray(y)]
    _, m = train_step(state, (x, y, w))
    assert abs(float(m["loss"]) - float(np.mean(ce * np.asarray(w)))) <= 1e-6

    def by_hand(p):
        lg = model.apply({"params": p}, x)
        return jnp.mean(w * -jnp.take_along_axis(jax.nn.log_softmax(lg), y[:, None], 1)[:, 0])

    g = jax.grad(by_hand)(state.params)
    s1, _ = train_step(state, (x, y, w))
    s0, _ = train_step(state, (x, y, jnp.ones(8)))
    s_plain, _ = train_step(state, (x, y))
    assert _leaves_equal(s0.params, s_plain.params)
    # SGD without momentum: params move along -g; the weighted step differs from the plain one
    # (the step is read back as a float32 difference p1 - p0: rounding of 2 eps32 |p|)
    for p1, p0, gk in zip(jax.tree.leaves(s1.params), jax.tree.leaves(state.params),
                          jax.tree.leaves(g), strict=True):
        dk = np.asarray(p1, np.float64) - np.asarray(p0, np.float64)
        gk = np.asarray(gk, np.float64)
        if np.abs(gk).max() > 0:
            ratio = (dk * gk).sum() / (gk * gk).sum()  # -lr, the same for every leaf
            assert ratio < 0
            np.testing.assert_allclose(dk, ratio * gk,
                                       atol=4 * 2.0**-24 * np.abs(np.asarray(p1)).max())
    assert not _leaves_equal(s1.params, s_plain.params)
    with pytest.raises(ValueError, match="copy_weight must be finite and > 0"):
        TrainConfig(copy_weight=0.0)
