"""Exact null spaces of convolutional first layers (nsjax._conv)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.sparse

import nsjax
from nsjax._conv import (
    CroppedPatchNullSpace,
    ExactRankTooLarge,
    conv_apply,
    conv_matrix,
    conv_null_space,
    conv_null_space_of_layer,
    conv_singular_values,
    exact_conv_rank,
)
from nsjax._stego import reveal, stego
from nsjax.blas import limit_blas_threads
from nsjax.experiments.conv import partial_windings, planted_kernels

EPS32 = float(np.finfo(np.float32).eps)


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    # threaded OpenBLAS spin-waits on shared cores; these LAPACK calls are small
    with limit_blas_threads(1):
        yield


def _proj(basis):
    b = np.asarray(basis, np.float64)
    return b @ b.T


def _sliding_window_matrix(k2d, h, w):
    """Independent VALID construction: one row per window position, by hand."""
    kh, kw = k2d.shape
    rows = []
    for i in range(h - kh + 1):
        for j in range(w - kw + 1):
            img = np.zeros((h, w))
            img[i:i + kh, j:j + kw] = k2d
            rows.append(img.reshape(-1))
    return np.array(rows)


def _flax_kernel(seed, shape):
    """A float32 kernel like Flax's default LeCun-normal init (NumPy: no XLA compile)."""
    fan_in = int(np.prod(shape[:-1]))
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)


def _dense_layer_null_space(module, params, shape):
    """Reference: the layer's (out, n) Jacobian (jax.jacfwd) and SciPy's null space with the
    float32 rule ``rcond = max(m, n) eps32``.  Returns (projector, nullity, matrix)."""
    n = int(np.prod(shape))
    p = {k: (np.zeros_like(v) if k == "bias" else v) for k, v in params.items()}
    f = lambda x: module.apply({"params": p}, x.reshape((1,) + shape)).reshape(-1)  # noqa: E731
    a = np.asarray(jax.jit(jax.jacfwd(f))(jnp.zeros((n,), jnp.float32)), np.float64)
    ref = scipy.linalg.null_space(a, rcond=max(a.shape) * EPS32)
    return ref @ ref.T, ref.shape[1], a


def _projector(ns):
    """Dense projector onto Null from the row basis, in NumPy (no jit)."""
    if ns.patch is not None:
        return np.asarray(ns.projector(), np.float64)
    rb = np.asarray(ns.row_basis, np.float64)
    return np.eye(ns.n) - rb @ rb.T


# --------------------------------------------------------------------------- 28x28 facts


def test_one_valid_kernel_has_nullity_108_matching_scipy():
    k = _flax_kernel(0, (3, 3, 1, 1))
    ns = conv_null_space(k, (28, 28, 1))
    assert (ns.n, ns.rank, ns.dim) == (784, 676, 108)  # 784 - 26*26, not 109
    assert isinstance(ns, nsjax.NullSpace) and ns.input_shape == (28, 28, 1)
    a = _sliding_window_matrix(np.asarray(k, np.float64)[:, :, 0, 0], 28, 28)
    ref = scipy.linalg.null_space(a)
    assert ref.shape[1] == 108
    assert np.abs(_proj(ns.basis()) - ref @ ref.T).max() <= 1e-5
    assert exact_conv_rank(k, (28, 28, 1)) == 676  # also exactly: 108 is the true nullity


def test_every_nonzero_single_kernel_is_full_rank_valid():
    # C^T y is the full (polynomial product) convolution of y with the kernel: never 0.
    for name, _, k in planted_kernels():
        if k.shape[-1] != 1:
            continue
        expected = 784 if name == "zero" else 108
        assert 784 - exact_conv_rank(k, (28, 28, 1)) == expected, name


def test_six_valid_kernels_intersect_trivially():
    k = _flax_kernel(1, (3, 3, 1, 6))
    ns = conv_null_space(k, (28, 28, 1))
    assert ns.dim == 0 and ns.rank == 784
    per_kernel = [conv_null_space(k[..., i:i + 1], (28, 28, 1)).dim for i in range(6)]
    assert per_kernel == [108] * 6


def test_same_padding_exactly_full_rank_for_a_random_kernel():
    k = _flax_kernel(0, (3, 3, 1, 1))
    assert exact_conv_rank(k, (28, 28, 1), padding="SAME") == 784  # Lemma B.1, exactly


def test_same_padding_numerical_nullity_is_zero_when_partial_windings_vanish():
    # centre-dominant: T_N = k_c I + E with ||E|| <= sum|others| < |k_c|, for every N
    k = np.asarray(_flax_kernel(3, (3, 3, 1, 1)), np.float64)
    others = np.abs(k).sum() - abs(k[1, 1, 0, 0])
    k[1, 1, 0, 0] = 1.5 * others
    k = k.astype(np.float32)
    wd = partial_windings(k[:, :, 0, 0], (1, 1))
    assert wd["rows"] == {0} and wd["cols"] == {0}
    ns = conv_null_space(k, (28, 28, 1), padding="SAME")
    assert ns.dim == 0
    s = conv_singular_values(k, (28, 28, 1), padding="SAME", method="svd")
    assert s[-1] >= 0.99 * (abs(float(k[1, 1, 0, 0])) - others)


def test_same_padding_winding_kernel_is_numerically_but_not_exactly_singular():
    name, _, k = [p for p in planted_kernels() if p[0] == "winding-1"][0]
    wd = partial_windings(k[:, :, 0, 0], (1, 1))
    assert wd["rows"] == {1} and wd["cols"] == {0}
    s = conv_singular_values(k, (28, 28, 1), padding="SAME", method="svd")
    # one geometrically small singular value of T_28(u) times the 28 of T_28(v)
    assert s[-28] / s[0] < 784 * np.finfo(np.float64).eps and s[-29] / s[0] > 1e-3
    assert conv_null_space(k, (28, 28, 1), padding="SAME").dim == 28  # float32 rule
    assert exact_conv_rank(k, (28, 28, 1), padding="SAME") == 784  # but exactly invertible
    ns = conv_null_space(k, (28, 28, 1), padding="SAME", rank="exact")
    assert ns.dim == 0 and ns.rank == 784 and float(ns.tol) == 0.0
    assert int(ns.numerical_rank()) == 784  # tol consistent with the static rank


def test_exact_rank_option_matches_exact_conv_rank_and_keeps_an_svd_basis():
    k = _flax_kernel(0, (3, 3, 1, 1))
    same = conv_null_space(k, (28, 28, 1), padding="SAME", rank="exact")
    assert same.dim == 0  # the float32 rule reports near-null directions for this kernel
    assert conv_null_space(k, (28, 28, 1), padding="SAME").dim > 0
    valid = conv_null_space(k, (28, 28, 1), rank="exact")
    ref = conv_null_space(k, (28, 28, 1))
    assert valid.dim == ref.dim == 108 and int(valid.numerical_rank()) == 676
    assert np.abs(np.asarray(valid.projector(), np.float64)
                  - np.asarray(ref.projector(), np.float64)).max() <= 1e-5
    _, _, k2 = [p for p in planted_kernels() if p[0] == "common-factor-x6"][0]
    assert conv_null_space(k2, (28, 28, 1), rank="exact").dim == 55
    mod = nn.Conv(2, (3, 3), padding="VALID")
    params = jax.jit(mod.init)(jax.random.key(0), jnp.zeros((1, 12, 12, 1)))
    assert conv_null_space_of_layer(mod, params, (12, 12, 1), rank="exact").dim == 8
    with pytest.raises(ExactRankTooLarge):
        exact_conv_rank(_flax_kernel(1, (3, 3, 1, 6)), (28, 28, 1), max_entries=1000)
    small = [conv_singular_values(k, (n, n, 1), padding="SAME", method="svd")
             for n in (8, 12, 16)]
    ratios = [v[-1] / v[0] for v in small]
    assert ratios[0] > 10 * ratios[1] > 100 * ratios[2]  # geometric decay in N: not rounding


def test_same_padding_default_rule_counts_float64_singular_values_below_float32_tol():
    k = _flax_kernel(0, (3, 3, 1, 1))
    ns = conv_null_space(k, (28, 28, 1), padding="SAME")
    s = conv_singular_values(k, (28, 28, 1), padding="SAME", method="svd")
    assert ns.dim == int(np.sum(s <= 784 * EPS32 * s[0]))
    dense = nsjax.null_space(jnp.asarray(conv_matrix(k, (28, 28, 1), padding="SAME"),
                                         jnp.float32))
    assert dense.dim == ns.dim  # the float32 dense SVD sees the same tiny singular values


# --------------------------------------------------------------------------- operator


CONFIGS = [
    dict(shape=(12, 11, 3), kernel=(3, 2), features=2, strides=(2, 1), padding=((1, 0), (2, 1)),
         kernel_dilation=(1, 2)),
    dict(shape=(12, 11, 3), kernel=(3, 3), features=1, strides=1, padding="SAME",
         kernel_dilation=2),
    dict(shape=(10, 10, 2), kernel=(3, 3), features=24, strides=2, padding="VALID",
         kernel_dilation=1),
    dict(shape=(9, 10, 3), kernel=(3, 3), features=4, strides=2, padding="SAME",
         kernel_dilation=1),
    dict(shape=(10, 9, 1), kernel=(3, 3), features=1, strides=1, padding="CIRCULAR",
         kernel_dilation=1),
    dict(shape=(10, 9, 2), kernel=(3, 3), features=1, strides=1, padding="REFLECT",
         kernel_dilation=1),
    dict(shape=(9, 9, 3), kernel=(2, 2), features=6, strides=1, padding=1, kernel_dilation=1,
         feature_group_count=3),
]


def _conv_module(cfg, use_bias=True):
    return nn.Conv(cfg["features"], cfg["kernel"], strides=cfg["strides"],
                   padding=cfg["padding"], kernel_dilation=cfg["kernel_dilation"],
                   feature_group_count=cfg.get("feature_group_count", 1), use_bias=use_bias)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c['padding']}-{c['features']}")
def test_operator_equals_flax_layer_and_null_space_matches_dense(cfg):
    shape = cfg["shape"]
    mod = _conv_module(cfg)
    params = jax.jit(mod.init)(jax.random.key(0), jnp.zeros((1,) + shape))["params"]
    bias = np.asarray(params["bias"]) + np.float32(0.7)
    params = {"kernel": params["kernel"], "bias": bias}
    x = np.random.default_rng(1).uniform(-1, 1, (2,) + shape).astype(np.float32)
    apply = jax.jit(mod.apply)
    y_layer = np.asarray(apply({"params": params}, x), np.float64) - bias
    ns = conv_null_space_of_layer(mod, {"params": params}, shape)
    p_ref, dim_ref, a = _dense_layer_null_space(mod, params, shape)
    # the dense Jacobian is the layer minus its bias
    np.testing.assert_allclose(a @ x.reshape(2, -1).T, y_layer.reshape(2, -1).T, atol=2e-5)
    assert ns.dim == dim_ref
    assert np.abs(_projector(ns) - p_ref).max() <= 1e-5
    if cfg.get("feature_group_count", 1) == 1:
        kw = dict(strides=cfg["strides"], padding=cfg["padding"],
                  dilation=cfg["kernel_dilation"])
        zero_bias = {"kernel": params["kernel"], "bias": np.zeros_like(bias)}
        np.testing.assert_array_equal(conv_apply(params["kernel"], x, **kw),
                                      apply({"params": zero_bias}, x))  # same conv, bit for bit
        np.testing.assert_allclose(conv_matrix(params["kernel"], shape, **kw), a, atol=0)
    px = np.asarray(ns.project(x), np.float64).reshape(2, -1)
    assert np.abs(a @ px.T).max() <= 1e-5


def test_bias_does_not_change_the_null_space():
    shape = (16, 16, 3)
    m_bias = nsjax.CNN(input_shape=shape, kernels=2, use_bias=True)
    m_nobias = nsjax.CNN(input_shape=shape, kernels=2, use_bias=False)
    p = nsjax.init_params(m_bias, jax.random.key(0))
    p["params"]["Conv_0"]["bias"] = jnp.array([3.0, -2.0])
    q = {"params": {k: dict(v) for k, v in p["params"].items()}}
    del q["params"]["Conv_0"]["bias"]
    a = nsjax.null_space_of(m_bias, p, shape)
    b = nsjax.null_space_of(m_nobias, q, shape)
    assert a.dim == 768 - 2 * 14 * 14
    c = conv_null_space(p["params"]["Conv_0"]["kernel"], shape)
    assert a.dim == b.dim == c.dim == 768 - 2 * 14 * 14
    np.testing.assert_array_equal(np.asarray(a.row_basis), np.asarray(b.row_basis))
    np.testing.assert_array_equal(np.asarray(a.row_basis), np.asarray(c.row_basis))


def test_gram_and_svd_routes_agree_and_gram_refuses_unresolvable_tolerance():
    _, _, k = [p for p in planted_kernels() if p[0] == "common-factor-x6"][0]
    ns_gram = conv_null_space(k, (28, 28, 1), method="gram")  # tall, rank deficient
    ns_svd = conv_null_space(k, (28, 28, 1), method="svd")
    assert ns_gram.dim == ns_svd.dim == 55 == 784 - exact_conv_rank(k, (28, 28, 1))
    assert np.abs(np.asarray(ns_gram.projector(), np.float64)
                  - np.asarray(ns_svd.projector(), np.float64)).max() <= 1e-5
    tiny = 4056 * float(np.finfo(np.float64).eps)  # the float64 rule: below the Gram's floor
    with pytest.raises(ValueError, match="Gram"):  # and 55 sigmas sit in the unresolved band
        conv_null_space(k, (28, 28, 1), method="gram", rtol=tiny)
    assert conv_null_space(k, (28, 28, 1), rtol=tiny).dim == 55  # auto switches to the SVD
    kr = _flax_kernel(4, (3, 3, 1, 6))  # well conditioned: still decided from the Gram
    assert conv_null_space(kr, (28, 28, 1), method="gram", rtol=tiny).dim == 0


def test_planted_degenerate_kernels():
    expected = {  # (VALID, SAME) exact nullities on 28x28
        "zero": (784, 784), "corner-tap": (108, 55), "edge-tap": (108, 28),
        "common-factor-x6": (55, 0), "common-row-factor-x6": (56, 0),
    }
    for name, _, k in planted_kernels():
        if name not in expected:
            continue
        for padding, want in zip(("VALID", "SAME"), expected[name]):
            assert 784 - exact_conv_rank(k, (28, 28, 1), padding=padding) == want, (name, padding)
            if name.startswith("common") and padding == "SAME":
                continue  # SAME numerical rank of these depends on the windings, see above
            assert conv_null_space(k, (28, 28, 1), padding=padding).dim == want, (name, padding)


# --------------------------------------------------------------------------- patch embeddings


def test_patch_embedding_small_matches_dense():
    shape = (8, 8, 3)
    mod = nn.Conv(20, (4, 4), strides=4, padding="VALID")
    params = jax.jit(mod.init)(jax.random.key(0), jnp.zeros((1,) + shape))["params"]
    ns = conv_null_space_of_layer(mod, {"params": params}, shape)
    assert ns.patch == (4, 4) and ns.row_basis.shape == (48, 20)
    assert ns.dim == 4 * (48 - 20)
    p_ref, dim_ref, _ = _dense_layer_null_space(mod, params, shape)
    assert dim_ref == ns.dim
    assert np.abs(_proj(ns.basis()) - p_ref).max() <= 1e-5


def test_patch_embedding_with_remainder_pixels():
    shape = (10, 9, 3)  # 2 x 2 patches of 4x4 read rows 0..7, cols 0..7
    mod = nn.Conv(20, (4, 4), strides=4, padding="VALID", use_bias=False)
    params = jax.jit(mod.init)(jax.random.key(0), jnp.zeros((1,) + shape))["params"]
    ns = conv_null_space_of_layer(mod, {"params": params}, shape)
    assert isinstance(ns, CroppedPatchNullSpace) and ns.crop == (8, 8)
    assert ns.dim == 4 * 28 + (90 - 64) * 3
    general = conv_null_space(params["kernel"], shape, strides=4, method="svd")
    p_ref, dim_ref, _ = _dense_layer_null_space(mod, params, shape)
    assert general.dim == dim_ref == ns.dim
    p = np.asarray(ns.projector(), np.float64)
    assert np.abs(p - p_ref).max() <= 1e-5
    assert np.abs(p - _projector(general)).max() <= 1e-5
    assert np.abs(p - _proj(ns.basis())).max() <= 1e-5
    x = jax.random.uniform(jax.random.key(1), (2,) + shape, minval=-1, maxval=1)
    np.testing.assert_allclose(jax.jit(lambda n, v: n.project(v))(ns, x), ns.project(x),
                               atol=1e-6)
    np.testing.assert_allclose(ns.project(x) + ns.complement(x), x, atol=1e-6)
    np.testing.assert_array_equal(ns.project(x)[:, 8:], x[:, 8:])  # never read: all null
    # steganography works through the NullSpace methods
    cover = jax.random.uniform(jax.random.key(2), (2,) + shape, minval=-1, maxval=1)
    res = stego(cover, x, ns, alpha1=0.2)
    f = lambda v: mod.apply({"params": params}, v)  # noqa: E731
    np.testing.assert_allclose(f(res.image), f(reveal(res.image, ns)), atol=1e-5)


def test_vit_patch_embedding_224():
    k = _flax_kernel(0, (16, 16, 3, 384))
    ns = conv_null_space(k, (224, 224, 3), strides=16)
    assert ns.patch == (16, 16) and ns.dim == 196 * (768 - 384) == 75_264
    assert ns.row_basis.shape == (768, 384)  # 1.2 MB instead of a 150,528 x 75,264 basis
    x = jax.random.uniform(jax.random.key(1), (3, 224, 224, 3), minval=-1, maxval=1)
    px = ns.project(x)
    y = conv_apply(k, x, strides=16)
    ypx = conv_apply(k, px, strides=16)
    assert float(jnp.abs(ypx).max()) <= 1e-5 * float(jnp.abs(y).max())
    np.testing.assert_allclose(ns.project(px), px, atol=1e-5)
    np.testing.assert_allclose(px + ns.complement(x), x, atol=1e-5)


# --------------------------------------------------------------------------- models


@pytest.mark.parametrize("kw", [
    dict(input_shape=(28, 28, 1), kernels=1),
    dict(input_shape=(16, 16, 3), kernels=8, stride=2),
    dict(input_shape=(32, 32, 3), kernels=16, kernel_size=4, stride=4),
], ids=["mnist-1", "cifar-stride2", "cifar-patch"])
def test_cnn_invariance_through_null_space_of(kw):
    model = nsjax.CNN(**kw)
    shape = kw["input_shape"]
    params = nsjax.init_params(model, jax.random.key(0))
    ns = nsjax.null_space_of(model, params, shape)
    direct = conv_null_space(params["params"]["Conv_0"]["kernel"], shape,
                             strides=kw.get("stride", 1))
    assert ns.dim == direct.dim > 0 and ns.patch == direct.patch
    res = nsjax.check_invariance(lambda x: model.apply(params, x), ns, jax.random.key(1),
                                 n_probes=16)
    assert res.passed, res.summary()


def test_exact_rank_agrees_with_numpy_on_small_integer_kernels():
    rng = np.random.default_rng(0)
    for padding in ("VALID", "SAME"):
        for _ in range(3):
            k = rng.integers(-3, 4, (3, 3, 2, 2)).astype(np.float32)
            a = conv_matrix(k, (6, 5, 2), padding=padding)
            assert exact_conv_rank(k, (6, 5, 2), padding=padding) == np.linalg.matrix_rank(a)


def test_rejects_bad_inputs():
    k = np.ones((3, 3, 2, 1), np.float32)
    with pytest.raises(ValueError, match="input channels"):
        conv_null_space(k, (8, 8, 1))
    with pytest.raises(ValueError, match="padding"):
        conv_null_space(k, (8, 8, 2), padding="CAUSAL")
    with pytest.raises(ValueError, match="patch"):
        conv_null_space(k, (8, 8, 2), method="patch")
    with pytest.raises(nsjax.NonFiniteError):
        conv_null_space(k * np.nan, (8, 8, 2))


def test_two_valid_kernels_share_exactly_eight_null_directions():
    # common zeros (z, w) of the two kernel polynomials give null vectors z^i w^j: 2 (k-1)^2
    k = _flax_kernel(5, (3, 3, 1, 2))
    for n in (12, 28):
        ns = conv_null_space(k, (n, n, 1))
        assert ns.dim == 8 == n * n - exact_conv_rank(k, (n, n, 1))
    assert conv_null_space(_flax_kernel(5, (3, 3, 1, 3)), (28, 28, 1)).dim == 0


def test_fallback_and_low_precision_kernels():
    conv1d = nn.Conv(2, (3,), padding="VALID")  # not 2-D: dense jacfwd route
    p = jax.jit(conv1d.init)(jax.random.key(0), jnp.zeros((1, 10, 2)))
    assert conv_null_space_of_layer(conv1d, p, (10, 2)).dim == 20 - 16
    bf16 = nn.Conv(1, (3, 3), padding="VALID", param_dtype=jnp.bfloat16)
    p = jax.jit(bf16.init)(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    ns = conv_null_space_of_layer(bf16, p, (8, 8, 1))
    assert ns.dim == 64 - 36 and ns.dtype == jnp.float32


def test_cli_reports_nullities_and_invariance(capsys):
    import argparse
    import json

    from nsjax._cli_conv import add_parser

    parser = argparse.ArgumentParser(prog="nsjax")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["conv-nullspace", "--kernels", "2", "--input", "12,12,1",
                              "--lemma-trials", "0", "--probes", "8", "--json"])
    assert args.func(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["per_kernel_nullity"] == [44, 44]
    assert report["intersection_nullity"] == 8 and report["invariance_passed"] is True


def test_valid_kernel_projects_through_its_smaller_null_basis():
    """1 VALID 3x3 kernel on 28x28: rank 676 > nullity 108, so the (784, 108) null basis is
    kept and projection costs 108 per pixel instead of 676; same projector as the row basis."""
    k = _flax_kernel(3, (3, 3, 1, 1))
    ns = conv_null_space(k, (28, 28, 1))
    assert ns.dim == 108 and ns.null_basis.shape == (784, 108)
    via_rows = ns.replace(null_basis=None)
    x = jax.random.uniform(jax.random.key(2), (5, 28, 28, 1), minval=-1, maxval=1)
    # float32: each route errs by up to ~eps * |x| * sqrt(rank) ~ 1e-7 * 16 * 26 per pixel
    np.testing.assert_allclose(ns.project(x), via_rows.project(x), atol=1e-5)
    np.testing.assert_allclose(ns.complement(x), via_rows.complement(x), atol=1e-5)
    # the projection is invisible to the convolution (float32: ~eps * |k|_1 * |x|)
    assert float(jnp.abs(conv_apply(k, ns.project(x))).max()) <= 1e-5


# --------------------------------------------------------------------------- edge cases (#16)


def _valid_matrix_by_hand(k, h, w):
    """Independent VALID operator: one row per (output pixel, output channel), the kernel
    (kh, kw, cin) pasted into an (h, w, cin) image at the window (cross-correlation)."""
    kh, kw, _, cout = k.shape
    rows = []
    for i in range(h - kh + 1):
        for j in range(w - kw + 1):
            for o in range(cout):
                img = np.zeros((h, w, k.shape[2]))
                img[i:i + kh, j:j + kw, :] = k[:, :, :, o]
                rows.append(img.reshape(-1))
    return np.array(rows)


@pytest.mark.parametrize("shape", [(3, 7, 2), (6, 3, 2), (3, 3, 2)])
def test_kernel_as_tall_or_as_wide_as_the_image(shape):
    # one window position along that axis (VALID output size (H - kh) + 1 = 1, not 0)
    k = _flax_kernel(5, (3, 3, 2, 2))
    ho, wo = shape[0] - 2, shape[1] - 2
    assert nsjax.conv_output_shape(shape, k.shape) == (ho, wo, 2)
    a = _valid_matrix_by_hand(np.asarray(k, np.float64), *shape[:2])
    assert a.shape == (ho * wo * 2, int(np.prod(shape)))
    np.testing.assert_array_equal(conv_matrix(k, shape), a)
    # the float32 rule on the dense operator, by SciPy: a random kernel's rows are
    # independent, so the nullity is n - m (32, 20, 16)
    ref = scipy.linalg.null_space(a, rcond=max(a.shape) * EPS32)
    assert ref.shape[1] == a.shape[1] - a.shape[0]
    ns = conv_null_space(k, shape)
    assert ns.dim == ref.shape[1]
    assert np.abs(_projector(ns) - ref @ ref.T).max() <= 1e-5


def test_patch_route_decides_the_rank_with_the_patch_matrix_tolerance():
    # 2x2 patches (stride 2) on 64x64x1: every patch sees the (cout, T) = (3, 4) block
    # kmat^T with singular values (1, 0.5, 1e-4) by construction.  Its rule
    # (rtol = max(3, 4) eps32 = 4.8e-7) keeps all three: 1e-4 is 210x above; the rule of the
    # full (3072, 4096) operator (4096 eps32 = 4.9e-4) would drop the 1e-4 direction and
    # call 1024 directions with ||C v|| = 1e-4 ||v|| null (dimension 2048 instead of 1024).
    rng = np.random.default_rng(7)
    u = np.linalg.qr(rng.standard_normal((4, 3)))[0]
    v = np.linalg.qr(rng.standard_normal((3, 3)))[0]
    kmat = u @ np.diag([1.0, 0.5, 1e-4]) @ v.T  # (T, cout)
    k = kmat.reshape(2, 2, 1, 3).astype(np.float32)
    s = np.linalg.svd(np.asarray(k, np.float64).reshape(4, 3), compute_uv=False)
    assert s[2] / s[0] > 100 * 4 * EPS32 and s[2] / s[0] < 4096 * EPS32 / 4  # rounding kept it
    shape = (64, 64, 1)
    ns = conv_null_space(k, shape, strides=2)
    assert ns.patch == (2, 2)
    assert ns.dim == 4096 - 3 * 32 * 32 == 1024
    assert float(ns.tol) == pytest.approx(4 * EPS32 * s[0], rel=1e-3)
    # what the rule protects: the projection is invisible to the layer.  Residual of the
    # float32 projection ~ eps32 sqrt(T) |x| ~ 2.4e-7 |x| per patch (relative to |C x|
    # ~ 0.5 |x|); a 1e-4 direction wrongly called null leaves ~1e-4 |x|.  1e-5 is between.
    x = jax.random.uniform(jax.random.key(3), (4,) + shape, minval=-1, maxval=1)
    k64 = np.asarray(k, np.float64).reshape(4, 3)

    def conv64(img):  # C img in float64, patch by patch
        p = np.asarray(img, np.float64).reshape(4, 32, 2, 32, 2).transpose(0, 1, 3, 2, 4)
        return p.reshape(4, 1024, 4) @ k64

    assert np.abs(conv64(ns.project(x))).max() <= 1e-5 * np.abs(conv64(x)).max()


def test_augmented_singular_values_match_a_dense_svd():
    # the large-operator route: singular values of a banded sparse matrix from the banded
    # eigenvalues of [[0, A], [A^T, 0]] -- values AND descending order against LAPACK's
    # dense SVD; both are backward stable, so they agree to ~eps64 sigma_max (1e-12 allows
    # ~4500 eps64)
    from nsjax._conv import _augmented_singular_values

    rng = np.random.default_rng(3)
    m, n = 120, 90
    dense = np.zeros((m, n))
    for d in range(-2, 3):
        i = np.arange(max(0, -d), min(m, n - d))
        dense[i, i + d] = rng.standard_normal(i.size)
    got = _augmented_singular_values(scipy.sparse.csr_matrix(dense))
    ref = np.linalg.svd(dense, compute_uv=False)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12 * ref[0])


def test_given_rank_routes_on_a_conv_that_leaves_pixels_unread(monkeypatch):
    # 3x3 stride 2 on 8x8: the last row and column are never read (49 of 64 pixels); 8
    # kernels give 72 outputs, so the operator has rank 49 (full on the read pixels).
    # References: the dense float64 operator (conv_matrix) and NumPy's SVD of it.
    import nsjax._conv as conv

    k = _flax_kernel(5, (3, 3, 1, 8))
    shape = (8, 8, 1)
    a = conv_matrix(k, shape, strides=2)
    _, s_ref, vt_ref = np.linalg.svd(a)
    assert int(np.sum(s_ref > max(a.shape) * EPS32 * s_ref[0])) == 49
    # below full rank: the basis is the top right singular vectors, zero on unread pixels
    # (sigma_48 / sigma_49 of this kernel is far from 1: the subspace is well conditioned)
    ns = conv_null_space(k, shape, strides=2, rank=48)
    ref = vt_ref[:48].T
    assert ns.dim == 64 - 48
    np.testing.assert_allclose(np.asarray(ns.row_basis, np.float64) @ np.asarray(ns.row_basis,
                               np.float64).T, ref @ ref.T, atol=1e-5)
    # full rank on the read pixels, through the banded route for large operators
    monkeypatch.setattr(conv, "_SMALL_DENSE", 0)
    full = conv_null_space(k, shape, strides=2, rank=49)
    assert full.dim == 15
    np.testing.assert_allclose(np.asarray(full.singular_values, np.float64), s_ref,
                               rtol=0, atol=1e-6 * s_ref[0])


def test_a_conv_reading_one_pixel():
    # 1x1 image, 1x1 kernel with two output channels: rank 1, nothing null (one covered
    # pixel is not "nothing covered")
    k = np.array([[[[0.5, -2.0]]]], np.float32)
    ns = conv_null_space(k, (1, 1, 1))
    assert (ns.rank, ns.dim) == (1, 0)


def test_singular_values_by_the_gram_route_with_structural_zeros():
    """``method="auto"``/``"gram"`` returns values (no rank decision, so no tolerance check):
    a 3x3 VALID conv on 8x8x1 with 2 kernels has 64 values, the operator's; against a dense
    SVD to the Gram's resolution, ``~sqrt(n eps64) sigma_max``."""
    k = np.random.default_rng(0).standard_normal((3, 3, 1, 2)).astype(np.float32)
    ref = np.linalg.svd(conv_matrix(k, (8, 8, 1)).astype(np.float64), compute_uv=False)
    for method in ("auto", "gram", "svd"):
        s = conv_singular_values(k, (8, 8, 1), method=method)
        assert s.shape == ref.shape == (64,)
        np.testing.assert_allclose(s, ref, rtol=0, atol=1e-6 * ref[0])


def test_given_and_exact_ranks_on_a_one_pixel_conv_and_a_patch_conv():
    """A conv reading one pixel has rank 1 at a given or exact rank too; a patch conv's exact
    rank is the GF(p) rank per patch times the patches (the float rank here)."""
    k = np.array([[[[0.5, -2.0]]]], np.float32)
    for rank in (1, "exact"):
        ns = conv_null_space(k, (1, 1, 1), rank=rank)
        assert (ns.rank, ns.dim) == (1, 0), rank
    kp = np.random.default_rng(4).standard_normal((4, 4, 2, 5)).astype(np.float32)
    exact = conv_null_space(kp, (8, 12, 2), strides=4, rank="exact")
    assert exact.rank == conv_null_space(kp, (8, 12, 2), strides=4).rank == 6 * 5
    asked = conv_null_space(kp, (8, 12, 2), strides=4, method="patch")  # as "auto" picks
    assert asked.patch == exact.patch == (4, 4) and asked.rank == 30


def test_cropped_patch_projection_checks_finiteness_by_default():
    shape = (10, 9, 3)
    kp = np.random.default_rng(2).standard_normal((4, 4, 3, 20)).astype(np.float32)
    ns = conv_null_space(kp, shape, strides=4)
    assert isinstance(ns, CroppedPatchNullSpace)
    x = np.zeros((2,) + shape, np.float32)
    x[1, 9, 8, 2] = np.nan  # in the unread remainder: still an error
    for fn in (ns.project, ns.complement):
        with pytest.raises(nsjax.NonFiniteError):
            fn(x)
    assert np.isnan(np.asarray(ns.project(x, check_finite=False))[1, 9, 8, 2])


def test_tolerance_is_the_rule_not_the_largest_dropped_value():
    """``ns.tol`` is ``max(m, n) eps32 sigma_max`` (rounded to float32), not a value picked
    from the spectrum; a kernel of the wrong rank is refused with the layout it needs."""
    k = np.random.default_rng(0).standard_normal((3, 3, 1, 2)).astype(np.float32)
    ns = conv_null_space(k, (8, 8, 1))
    s = conv_singular_values(k, (8, 8, 1), method="svd")
    rule = np.float32(72 * np.finfo(np.float32).eps * s[0])
    assert ns.rank == 56 and s[56] < 1e-10 * s[0]
    assert float(ns.tol) == pytest.approx(float(rule), rel=1e-6)
    from nsjax._conv import conv_output_shape

    for call in (lambda: conv_null_space(k[..., 0], (8, 8, 1)),
                 lambda: conv_output_shape((8, 8, 1), (3, 3, 1)),
                 lambda: conv_apply(k[..., 0], np.zeros((8, 8, 1), np.float32))):
        with pytest.raises(ValueError, match=r"kernel must have Flax layout \(kh, kw, cin, cout\)"):
            call()


def test_exact_rank_of_same_convs_against_numpy():
    """SAME padding: the padded taps read no pixel and must not land in the matrix.  Small
    integer kernels on 3x3 images (rank-deficient ones among them), against NumPy's rank of
    the dense operator (integer entries: exact in float64)."""
    rng = np.random.default_rng(0)
    ranks = []
    for _ in range(8):
        k = rng.integers(-1, 2, (3, 3, 1, 1)).astype(np.float32)
        ref = int(np.linalg.matrix_rank(conv_matrix(k, (3, 3, 1), padding="SAME")))
        assert exact_conv_rank(k, (3, 3, 1), padding="SAME") == ref
        ranks.append(ref)
    assert min(ranks) < 9  # rank-deficient cases were among them


def test_zero_kernel_at_a_given_rank_and_a_patch_rtol():
    """A zero kernel at ``rank=0``/``"exact"``: all singular values 0 (``min(m, n)`` of them),
    everything null.  A patch conv decides its rank per patch with the ``rtol`` given."""
    z = np.zeros((3, 3, 1, 2), np.float32)
    for rank in (0, "exact"):
        ns = conv_null_space(z, (6, 6, 1), rank=rank)
        assert ns.dim == 36 and np.asarray(ns.singular_values).shape == (min(32, 36),)
        assert not np.asarray(ns.singular_values).any()
    kp = np.random.default_rng(4).standard_normal((4, 4, 2, 5)).astype(np.float32)
    s = np.linalg.svd(kp.reshape(32, 5).T.astype(np.float64), compute_uv=False)
    rtol = float(np.sqrt(s[2] * s[3]) / s[0])  # keeps 3 of the 5 values per patch
    ns = conv_null_space(kp, (8, 12, 2), strides=4, rtol=rtol)
    assert ns.patch == (4, 4) and ns.rank == 3 * 6


def test_custom_conv_functions_take_the_generic_route_and_the_layer_check_names_the_layer():
    """A Conv with its own ``conv_general_dilated`` is not the structured conv: its null space
    comes from the layer itself (here 2x the standard conv: the same null space).  The check
    that guards the structured route names the layer when a kernel does not reproduce it."""
    from nsjax._conv import _check_against_layer

    def doubled(*args, **kwargs):
        return 2.0 * jax.lax.conv_general_dilated(*args, **kwargs)

    shape = (6, 6, 1)
    plain = nn.Conv(2, (3, 3), padding="VALID")
    custom = nn.Conv(2, (3, 3), padding="VALID", conv_general_dilated=doubled)
    v = plain.init(jax.random.key(0), jnp.zeros((1,) + shape))
    ref = conv_null_space_of_layer(plain, v, shape)
    ns = conv_null_space_of_layer(custom, v, shape)
    assert ns.dim == ref.dim == 8  # 36 pixels, 32 outputs of rank 28
    np.testing.assert_allclose(np.asarray(ns.project(np.ones((1,) + shape, np.float32))),
                               np.asarray(ref.project(np.ones((1,) + shape, np.float32))),
                               atol=1e-5)
    with pytest.raises(RuntimeError, match="does not reproduce the layer Conv"):
        _check_against_layer(plain, v, shape, 2 * np.asarray(v["params"]["kernel"]), (1, 1),
                             "VALID", (1, 1))


def test_float32_kernel_rule_with_x64_on_and_bad_tolerances():
    """A float32 kernel keeps float32's tolerance rule and dtype when x64 is on (the layer
    computes in float32); a negative or NaN ``rtol`` is refused."""
    k = np.random.default_rng(0).standard_normal((3, 3, 1, 2)).astype(np.float32)
    base = conv_null_space(k, (8, 8, 1))
    with jax.enable_x64(True):
        ns = conv_null_space(k, (8, 8, 1))
    assert ns.row_basis.dtype == jnp.float32 and (ns.rank, ns.dim) == (base.rank, base.dim)
    assert float(ns.tol) == pytest.approx(float(base.tol), rel=1e-6)
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="rtol"):
            conv_null_space(k, (8, 8, 1), rtol=bad)
