"""Null-space steganography: S = alpha1 H_perp + alpha2 C_hat (paper Sec. 3)."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nsjax
from nsjax._stego import DomainError, reveal, stego


@pytest.fixture(scope="module")
def net():
    model = nsjax.FCNN((784, 32, 16, 10))
    params = nsjax.init_params(model, jax.random.key(0))
    return model, params, nsjax.null_space_of(model, params, (28, 28, 1))


def _images(seed, n=64):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return (jax.random.uniform(k1, (n, 28, 28, 1), minval=-1, maxval=1),
            jax.random.uniform(k2, (n, 28, 28, 1), minval=-1, maxval=1))


def test_network_sees_only_the_hidden_image(net):
    model, params, ns = net
    c, h = _images(0)
    r = stego(c, h, ns)
    f = lambda x: jax.nn.softmax(model.apply(params, x))  # noqa: E731
    # float32 softmax of two inputs that differ by a null vector of norm ~10: 1e-5 margin
    assert np.abs(f(r.image) - f(0.2 * h)).max() <= 1e-5
    np.testing.assert_allclose(reveal(r.image, ns), 0.2 * ns.complement(h), atol=2e-6)


def test_alpha2_is_maximal_and_in_domain(net):
    _, _, ns = net
    c, h = _images(1)
    r = stego(c, h, ns)
    assert r.alpha2.shape == (64,)
    assert float(jnp.abs(r.image).max()) <= 1.0
    s_up = 0.2 * ns.complement(h) + (1.01 * r.alpha2)[:, None, None, None] * ns.project(c)
    assert bool(jnp.all(jnp.abs(s_up).reshape(64, -1).max(-1) > 1.0))


def test_batch_shapes_and_explicit_alpha2(net):
    _, _, ns = net
    c, h = _images(2, 6)
    r = stego(c.reshape(2, 3, 28, 28, 1), h.reshape(2, 3, 28, 28, 1), ns)
    assert r.image.shape == (2, 3, 28, 28, 1) and r.alpha2.shape == (2, 3)
    flat = stego(c.reshape(6, 784), h.reshape(6, 784), ns, alpha2=0.1)
    np.testing.assert_allclose(flat.alpha2, 0.1)
    with pytest.raises(DomainError, match="out of \\[-1, 1\\]"):
        stego(c, h, ns, alpha2=5.0)


@pytest.mark.parametrize("bad,err", [(2.0, DomainError), (np.nan, DomainError)])
def test_inputs_outside_domain_rejected(net, bad, err):
    _, _, ns = net
    c, h = _images(3, 2)
    with pytest.raises(err):
        stego(c.at[0, 0, 0, 0].set(bad), h, ns)


def test_shape_and_dtype_errors(net):
    _, _, ns = net
    c, h = _images(4, 2)
    with pytest.raises(ValueError, match="same shape"):
        stego(c, h[:1], ns)
    with pytest.raises(TypeError, match="floating"):
        stego(np.zeros((2, 28, 28, 1), np.uint8), h, ns)
    with pytest.raises(ValueError, match="alpha1"):
        stego(c, h, ns, alpha1=0.0)


# ------------------------------------------------------------- other image domains: bounds


def _unit_images(seed, n=64):
    """[0, 1] images, uniform over the whole domain (black and white pixels included)."""
    k1, k2 = jax.random.split(jax.random.key(seed))
    return (jax.random.uniform(k1, (n, 28, 28, 1), minval=0.0, maxval=1.0),
            jax.random.uniform(k2, (n, 28, 28, 1), minval=0.0, maxval=1.0))


def _interval64(kernel, c, h, alpha1, lo, hi):
    """Independent float64 admissible interval [L, U] of alpha2 per pair (NumPy, from W1),
    for the construction centred on m = (lo + hi) / 2."""
    m = (lo + hi) / 2
    q = np.linalg.qr(np.asarray(kernel, np.float64))[0]  # (n, rank) row-space basis
    c = np.asarray(c, np.float64).reshape(len(c), -1) - m
    h = np.asarray(h, np.float64).reshape(len(h), -1) - m
    hp = m + alpha1 * (h @ q) @ q.T
    ch = c - (c @ q) @ q.T
    safe = np.where(ch == 0, 1.0, ch)
    up = np.where(ch > 0, (hi - hp) / safe, np.where(ch < 0, (lo - hp) / safe, np.inf))
    low = np.where(ch > 0, (lo - hp) / safe, np.where(ch < 0, (hi - hp) / safe, -np.inf))
    return np.maximum(low.max(1), 0.0), up.min(1)


def _first_layer_tol(kernels, v):
    """f(S) = f(rescale(H)): S - rescale(H) is a null vector v of W1.  In float32 the first
    layer errs per unit by the rounding of sum_j W1_jk v_j and of the null-space basis, each
    ~eps32 * max_k sum_j |W1_jk| * max |v|; ReLU is 1-Lipschitz and each later layer
    multiplies a max-norm error by at most its largest column abs-sum."""
    gain = np.prod([np.abs(k).sum(0).max() for k in kernels[1:]])
    return 4 * np.finfo(np.float32).eps * np.abs(kernels[0]).sum(0).max() * v * gain


def test_unit_range_stego_in_domain_maximal_and_invisible(net):
    model, params, ns = net
    c, h = _unit_images(10)
    r = stego(c, h, ns, bounds=(0, 1))
    s = np.asarray(r.image)
    assert s.min() >= 0.0 and s.max() <= 1.0
    kernels = [np.asarray(params["params"][f"Dense_{i}"]["kernel"]) for i in range(3)]
    lower, upper = _interval64(kernels[0], c, h, 0.2, 0.0, 1.0)
    a2 = np.asarray(r.alpha2, np.float64)
    # maximal: nsjax shrinks by (1 - 8 eps32) against rounding; float32 bases add ~1e-6
    assert np.all(a2 >= (1 - 1e-5) * upper) and np.all(a2 <= (1 + 1e-5) * upper)
    assert np.all(a2 >= lower)
    seen = nsjax.rescale(h, 0.2, bounds=(0, 1))
    np.testing.assert_array_equal(seen, 0.5 + 0.2 * (h - 0.5))
    tol = _first_layer_tol(kernels, np.abs(s - np.asarray(seen)).max())
    np.testing.assert_allclose(model.apply(params, r.image), model.apply(params, seen),
                               rtol=0, atol=tol)
    # what the network sees, back in the domain: 0.5 + 0.2 (H - 0.5)_perp
    np.testing.assert_allclose(nsjax.reveal(r.image, ns, bounds=(0, 1)),
                               0.5 + 0.2 * ns.complement(h - 0.5), atol=1e-6)
    with pytest.raises(DomainError, match=r"out of \[0, 1\].*> max"):
        stego(c, h, ns, bounds=(0, 1), alpha2=(1 + 1e-4) * r.alpha2)


def test_unit_range_mnist_like_images_and_an_empty_interval(net):
    model, params, ns = net
    # MNIST-like: black background, a bright square.  Without the centring, alpha1 H_perp
    # is negative somewhere the cover's C_hat <= 0 and no alpha2 helps; about m = 0.5 the
    # hidden part stays near 0.5 and the interval is [0, U].
    c = jnp.zeros((2, 28, 28, 1)).at[:, 8:20, 8:20].set(1.0)
    h = jnp.zeros((2, 28, 28, 1)).at[:, 4:14, 10:24].set(0.8)
    r = stego(c, h, ns, bounds=(0, 1))
    assert float(r.image.min()) >= 0 and float(r.image.max()) <= 1
    assert np.all(np.asarray(r.alpha2) > 0)
    # m + alpha1 (H - m)_perp itself leaves [0, 1] when the row space is most of R^n and
    # alpha1 = 1 (binary H: h ~ H plus its small null part removed): the interval is empty,
    # the message names the domain and the remedy
    wide = nsjax.null_space(jax.random.normal(jax.random.key(3), (700, 784)),
                            input_shape=(28, 28, 1))
    binary = jax.random.bernoulli(jax.random.key(1), 0.5, h.shape).astype(jnp.float32)
    with pytest.raises(DomainError, match=r"\[0, 1\].*smaller alpha1"):
        stego(c, binary, wide, bounds=(0, 1), alpha1=1.0)
    assert stego(c, binary, wide, bounds=(0, 1), alpha1=0.2).image.max() <= 1


def test_bounds_in_domain_errors(net):
    _, _, ns = net
    c, h = _unit_images(11, 2)
    with pytest.raises(DomainError, match=r"cover images must lie in \[0, 1\].*bounds=\(0, 1\)"):
        stego(c.at[0, 0, 0, 0].set(1.5), h, ns, bounds=(0, 1))
    with pytest.raises(DomainError, match=r"hidden images must lie in \[0.2, 1\]"):
        stego(0.25 + 0.5 * c, (0.25 + 0.5 * h).at[1, 0, 0, 0].set(0.1), ns, bounds=(0.2, 1))
    with pytest.raises(DomainError, match=r"\[0, 1\]"):
        nsjax.check_domain(-0.1 * h, bounds=(0, 1))
    with pytest.raises(DomainError, match=r"\[0, 1\]"):
        nsjax.check_domain(-0.1 * h, lo=0.0, hi=1.0)  # the old spelling still works
    assert nsjax.check_domain(h, bounds=(0, 1)).shape == h.shape
    for bad in [(1, 0), (0, np.inf), (0, 1, 2), "01"]:
        with pytest.raises(ValueError, match="bounds"):
            stego(c, h, ns, bounds=bad)
    with pytest.raises(ValueError, match="not both"):
        nsjax.check_domain(h, lo=0.0, hi=2.0, bounds=(0, 1))


def test_unit_range_looking_data_warns_without_bounds(net):
    _, _, ns = net
    c, h = _unit_images(12, 2)
    with pytest.warns(UserWarning, match=r"\[-1, 1\].*bounds=\(0, 1\)"):
        default = stego(c, h, ns)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stego(c, h, ns, bounds=(0, 1))
        explicit = stego(c, h, ns, bounds=(-1, 1))
        stego(2 * c - 1, 2 * h - 1, ns)  # negative pixels: [-1, 1] data, no warning
    np.testing.assert_array_equal(explicit.image, default.image)
    np.testing.assert_array_equal(explicit.alpha2, default.alpha2)


def test_check_domain_message_names_its_default_subject_and_domain():
    # mutmut survivors: check_domain's default name ("images") and its pass-through of
    # `what` were never read back.  The message quotes the name, the domain and the
    # observed range (min 0, max 1.5 exactly, both representable in float32)
    x = jnp.zeros((2, 3)).at[1, 2].set(1.5)
    with pytest.raises(DomainError,
                       match=r"^images must lie in \[-1, 1\] .*got values in \[0, 1\.5\]"):
        nsjax.check_domain(x)
    with pytest.raises(DomainError, match=r"^covers must lie in \[0, 1\]"):
        nsjax.check_domain(x, "covers", bounds=(0, 1))
    inside = jnp.linspace(-1.0, 1.0, 7)  # both ends on the closed domain's boundary
    np.testing.assert_array_equal(nsjax.check_domain(inside), inside)


def test_unit_range_warning_points_at_the_callers_line():
    # mutmut survivor: stacklevel=3 dropped (the warning then names nsjax/_stego.py, not the
    # line that called stego: _warn_if_unit_range -> stego -> caller).  Under mutmut's
    # trampolines each call has extra frames, so the check is that nsjax's own file is not
    # blamed, and, in a plain run, that this file is.
    import nsjax._stego as module

    ns = nsjax.null_space(np.array([[2.0, 1.0, 1.0]], np.float32))  # as below: one compile
    c, h = jnp.array([[0.0, 0.5, 1.0], [1.0, 0.25, 0.0]]), jnp.full((2, 3), 0.5)
    with pytest.warns(UserWarning, match=r"^every cover and hidden pixel is >= 0, as in "
                      r"\[0, 1\] images, but .*bounds=\(0, 1\)") as rec:
        stego(c, h, ns)
    assert len(rec) == 1 and rec[0].filename != module.__file__
    if not hasattr(module, "_mutmut_mutated"):  # not rewritten by mutmut: a plain run
        assert rec[0].filename == __file__


def test_lower_alpha2_bound_is_per_pair_and_two_sided():
    # mutmut survivor: the lower bound L of alpha2 taken over the whole batch instead of
    # per pair.  By hand, row space r = (2, 1, 1)/sqrt(6), alpha1 = 0.8, domain [-1, 1]:
    # pair A, H = (1, 1, 1), C = (-1, 0, 0): h = 0.8 (4/3, 2/3, 2/3) = (16/15, 8/15, 8/15)
    # (pixel 0 outside the domain), c = C - (r.C) r = (-1/3, 1/3, 1/3), so
    # L = (1 - 16/15) / (-1/3) = 0.2 and U = min(6.2, (1 - 8/15) / (1/3)) = 1.4;
    # pair B, H = 0, same C: h = 0, L = 0, U = 3.
    ns = nsjax.null_space(np.array([[2.0, 1.0, 1.0]], np.float32))
    hidden = jnp.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    cover = jnp.array([[-1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    # the picked alpha2 is U (1 - 8 eps32); the float32 basis, h, c and the division add a
    # few eps32/2 each: 4 eps32 relative
    eps = np.finfo(np.float32).eps
    picked = stego(cover, hidden, ns, alpha1=0.8)
    np.testing.assert_allclose(picked.alpha2_max, np.array([1.4, 3.0]) * (1 - 8 * eps),
                               rtol=4 * eps)
    # pair B's alpha2 = 0.1 is below pair A's L but admissible for B itself
    r = stego(cover, hidden, ns, alpha1=0.8, alpha2=jnp.array([0.5, 0.1]))
    np.testing.assert_allclose(r.image, [[0.9, 0.7, 0.7], [-1 / 30, 1 / 30, 1 / 30]],
                               rtol=0, atol=8 * eps)  # entries <= 1.1: a few eps32 each
    # two-sided at L = 0.2: computed L errs by a few eps32, far inside 1e-4 relative
    stego(cover, hidden, ns, alpha1=0.8, alpha2=jnp.array([0.2 * (1 + 1e-4), 0.1]))
    with pytest.raises(DomainError, match="< min"):
        stego(cover, hidden, ns, alpha1=0.8, alpha2=jnp.array([0.2 * (1 - 1e-4), 0.1]))


def test_bounds_are_compared_in_the_images_dtype():
    # mutmut survivor: the bounds not rounded to the images' dtype.  0.1 in bfloat16 (8
    # significant bits) is 205/2048 = 0.10009765625 > float32(0.1); the next bfloat16 up
    # is 206/2048.  Two-sided: bfloat16(0.1) lies in [0, 0.1] as the images represent it,
    # the next value does not.
    at = jnp.full((3,), 0.1, jnp.bfloat16)
    assert float(at[0]) == 205 / 2048
    np.testing.assert_array_equal(nsjax.check_domain(at, bounds=(0, 0.1)), at)
    with pytest.raises(DomainError, match=r"\[0, 0\.1\]"):
        nsjax.check_domain(at.at[1].set(206 / 2048), bounds=(0, 0.1))


def test_cover_without_null_part_and_a_cap_below_the_lower_bound():
    # mutmut survivors: the C_hat = 0 check applied to explicit alpha2 instead of picked
    # ones, and the cap's value missing from the message.  Same by-hand case as above:
    # r = (2, 1, 1)/sqrt(6), alpha1 = 0.8, pair A has L = 0.2.
    ns = nsjax.null_space(np.array([[2.0, 1.0, 1.0]], np.float32))
    hidden = jnp.array([[1.0, 1.0, 1.0]])
    zero = jnp.zeros((1, 3))  # C_hat = P_N 0 = 0 exactly: nothing bounds alpha2
    with pytest.raises(nsjax.TrivialNullSpaceError, match="no component in the null space"):
        stego(zero, 0.5 * hidden, ns, alpha1=0.8, bounds=(-1, 1))  # no [0, 1] warning
    # an explicit alpha2 is allowed: S = h = 0.8 * 0.5 * (4/3, 2/3, 2/3), a few eps32
    r = stego(zero, 0.5 * hidden, ns, alpha1=0.8, alpha2=0.5, bounds=(-1, 1))
    np.testing.assert_allclose(r.image, [[8 / 15, 4 / 15, 4 / 15]], rtol=0,
                               atol=4 * np.finfo(np.float32).eps)
    # a cap below L: the message names the cap and its value
    with pytest.raises(DomainError, match=r"alpha2_cap 0\.1 takes .* < min 0\.2.*raise the cap"):
        stego(jnp.array([[-1.0, 0.0, 0.0]]), hidden, ns, alpha1=0.8, alpha2_cap=0.1)


def test_rounding_guard_message(monkeypatch):
    # mutmut survivors: the message of the last guard (S outside the domain after rounding),
    # which correct margins never reach; simulated by reporting every S as outside
    import nsjax._stego as module

    real = module._stego_flat

    def all_outside(*args, **kwargs):
        out = real(*args, **kwargs)
        return out[:6] + (jnp.zeros_like(out[6]),) + out[7:]

    monkeypatch.setattr(module, "_stego_flat", all_outside)
    ns = nsjax.null_space(np.array([[2.0, 1.0, 1.0]], np.float32))
    cover = jnp.array([[-1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    with pytest.raises(DomainError, match=r"leaves \[-1, 1\] by rounding for 2 pair\(s\)"):
        stego(cover, jnp.zeros((2, 3)), ns, bounds=(-1, 1))


def test_max_alpha2_is_stegos_alpha2_with_the_same_alpha1_and_bounds():
    """``max_alpha2`` passes the null space, ``alpha1`` and ``bounds`` through: its values
    are ``stego``'s for each setting, and they differ between settings."""
    from nsjax._stego import max_alpha2

    ns = nsjax.null_space(np.array([[2.0, 1.0, 1.0, 0.0]], np.float32))
    c = jnp.array([[0.1, 0.5, 0.9, 0.3], [0.8, 0.2, 0.4, 0.6]])
    h = jnp.array([[0.5, 0.4, 0.6, 0.5], [0.3, 0.7, 0.5, 0.2]])
    got = {}
    for alpha1, bounds in ((0.2, None), (0.3, None), (0.2, (0.0, 2.0))):
        cc, hh = (c, h) if bounds else (2 * c - 1, 2 * h - 1)  # in [0, 2] or [-1, 1]
        a2 = np.asarray(max_alpha2(cc, hh, ns, alpha1=alpha1, bounds=bounds))
        np.testing.assert_array_equal(
            a2, np.asarray(stego(cc, hh, ns, alpha1=alpha1, bounds=bounds).alpha2))
        got[alpha1, bounds] = a2
    assert len({v.tobytes() for v in got.values()}) == 3
