import numpy as np
import pytest

from graphnet import optim
from graphnet.gradient_check import rel_error

RULES = [optim.sgd, optim.sgd_momentum, optim.rmsprop, optim.adam]


# Out-of-place references written straight from the formulas; each returns next_w and
# the new state without touching its inputs.


def ref_sgd(w, dw, lr=1e-2):
    return w - lr * dw, {}


def ref_momentum(w, dw, lr=1e-2, mu=0.9, velocity=None):
    v = mu * (np.zeros_like(w) if velocity is None else velocity) - lr * dw
    return w + v, {"velocity": v}


def ref_rmsprop(w, dw, lr=1e-2, decay=0.99, eps=1e-8, cache=None):
    c = decay * (np.zeros_like(w) if cache is None else cache) + (1 - decay) * dw**2
    return w - lr * dw / (np.sqrt(c) + eps), {"cache": c}


def ref_adam(w, dw, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, m=None, v=None, t=0):
    t = t + 1
    m = b1 * (np.zeros_like(w) if m is None else m) + (1 - b1) * dw
    v = b2 * (np.zeros_like(w) if v is None else v) + (1 - b2) * dw**2
    w_next = w - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    return w_next, {"m": m, "v": v, "t": t}


def course_arrays(n=4, d=5):
    """The small linspace test case of the course notebooks."""

    def lin(lo, hi):
        return np.linspace(lo, hi, num=n * d).reshape(n, d)

    return lin, lin(-0.4, 0.6), lin(-0.6, 0.4)


# ----------------------------------------------------------------- values by hand


def test_sgd_by_hand():
    w = np.array([1.0, -2.0])
    next_w, config = optim.sgd(w, np.array([0.5, 1.0]), {"learning_rate": 0.1})
    np.testing.assert_allclose(next_w, [0.95, -2.1], rtol=1e-15)
    assert config == {"learning_rate": 0.1}


def test_momentum_by_hand_two_steps():
    w, config = np.array([1.0]), {"learning_rate": 0.1}
    w, config = optim.sgd_momentum(w, np.array([2.0]), config)
    np.testing.assert_allclose([w[0], config["velocity"][0]], [0.8, -0.2], rtol=1e-14)
    w, config = optim.sgd_momentum(w, np.array([2.0]), config)
    # v = 0.9 * -0.2 - 0.2 = -0.38, w = 0.8 - 0.38
    np.testing.assert_allclose([w[0], config["velocity"][0]], [0.42, -0.38], rtol=1e-14)


def test_rmsprop_by_hand():
    # cache = 0.01 * 4 = 0.04, step = 0.01 * 2 / sqrt(0.04) = 0.1
    w, config = optim.rmsprop(np.array([1.0]), np.array([2.0]))
    np.testing.assert_allclose(config["cache"], [0.04], rtol=1e-14)
    np.testing.assert_allclose(w, [0.9], rtol=1e-7)


def test_adam_by_hand_two_steps():
    # With a constant gradient the bias-corrected m_hat = dw and v_hat = dw^2 at every
    # step, so each step moves w by learning_rate * sign(dw).
    w, config = np.array([1.0]), None
    w, config = optim.adam(w, np.array([2.0]), config)
    assert config["t"] == 1
    np.testing.assert_allclose(w, [0.999], rtol=1e-10)
    w, config = optim.adam(w, np.array([2.0]), config)
    assert config["t"] == 2
    np.testing.assert_allclose(config["m"], [0.38], rtol=1e-14)
    np.testing.assert_allclose(config["v"], [0.007996], rtol=1e-12)
    np.testing.assert_allclose(w, [0.998], rtol=1e-10)


# ----------------------------------------------------------------- the course's cases


def test_momentum_course_case():
    lin, w, dw = course_arrays()
    v = lin(0.6, 0.9)
    expected_w, expected = ref_momentum(w, dw, lr=1e-3, velocity=v)
    next_w, config = optim.sgd_momentum(w, dw, {"learning_rate": 1e-3, "velocity": v.copy()})
    assert rel_error(next_w, expected_w) < 1e-14
    assert rel_error(config["velocity"], expected["velocity"]) < 1e-14


def test_rmsprop_course_case():
    lin, w, dw = course_arrays()
    cache = lin(0.6, 0.9)
    expected_w, expected = ref_rmsprop(w, dw, lr=1e-2, cache=cache)
    next_w, config = optim.rmsprop(w, dw, {"learning_rate": 1e-2, "cache": cache.copy()})
    assert rel_error(next_w, expected_w) < 1e-14
    assert rel_error(config["cache"], expected["cache"]) < 1e-14


def test_adam_course_case_increments_t_before_use():
    lin, w, dw = course_arrays()
    m, v = lin(0.6, 0.9), lin(0.7, 0.5)
    expected_w, expected = ref_adam(w, dw, lr=1e-2, m=m, v=v, t=5)
    config = {"learning_rate": 1e-2, "m": m.copy(), "v": v.copy(), "t": 5}
    next_w, config = optim.adam(w.copy(), dw, config)
    assert config["t"] == 6
    assert rel_error(next_w, expected_w) < 1e-14
    assert rel_error(config["m"], expected["m"]) < 1e-14
    assert rel_error(config["v"], expected["v"]) < 1e-14
    # using the old t = 5 would have given a visibly different step
    m_hat, v_hat = expected["m"] / (1 - 0.9**5), expected["v"] / (1 - 0.999**5)
    stale_w = w - 1e-2 * m_hat / np.sqrt(v_hat)
    assert rel_error(next_w, stale_w) > 1e-6


# ----------------------------------------------------------------- defaults, contract


@pytest.mark.parametrize(
    "rule, defaults",
    [
        (optim.sgd, {"learning_rate": 1e-2}),
        (optim.sgd_momentum, {"learning_rate": 1e-2, "momentum": 0.9}),
        (optim.rmsprop, {"learning_rate": 1e-2, "decay_rate": 0.99, "epsilon": 1e-8}),
        (optim.adam, {"learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8}),
    ],
)
def test_defaults_are_filled_in(rule, defaults):
    _, config = rule(np.ones(3), np.ones(3))
    for key, value in defaults.items():
        assert config[key] == value
    config = {"learning_rate": 0.5}
    _, returned = rule(np.ones(3), np.ones(3), config)
    assert returned is config and config["learning_rate"] == 0.5


REFERENCES = {
    optim.sgd: (ref_sgd, {}),
    optim.sgd_momentum: (ref_momentum, {"velocity": "velocity"}),
    optim.rmsprop: (ref_rmsprop, {"cache": "cache"}),
    optim.adam: (ref_adam, {"m": "m", "v": "v", "t": "t"}),
}


@pytest.mark.parametrize("rule", RULES)
def test_in_place_updates_match_the_out_of_place_reference(rule):
    reference, state_keys = REFERENCES[rule]
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 4))
    w_ref, state = w.copy(), {}
    config = None
    for _ in range(6):
        dw = rng.standard_normal((3, 4))
        next_w, config = rule(w, dw, config)
        assert next_w is w  # updated in place
        w_ref, state = reference(w_ref, dw, **state)
        np.testing.assert_allclose(w, w_ref, rtol=1e-13, atol=1e-15)
        for key in state_keys:
            np.testing.assert_allclose(config[key], state[key], rtol=1e-13)


def at_odd_byte(a):
    """a's values in an array whose data starts one byte past an item boundary."""
    view = np.zeros(a.nbytes + 1, np.uint8)[1:].view(a.dtype).reshape(a.shape)
    view[...] = a
    return view


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_misaligned_w_and_states_are_updated_in_place_with_the_same_numbers(rule, dtype):
    """A w or state at an odd byte (np.frombuffer at an offset) is updated where it is, on
    numpy's path (the kernel writes only aligned arrays), with the aligned run's numbers
    to rounding."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((5, 7)).astype(dtype)
    aligned_w, odd_w = w.copy(), at_odd_byte(w)
    aligned_config = odd_config = None
    for _ in range(3):
        dw = rng.standard_normal((5, 7)).astype(dtype)
        aligned_w, aligned_config = rule(aligned_w, dw, aligned_config)
        if odd_config is not None:  # the states at odd bytes too
            for key, value in odd_config.items():
                if isinstance(value, np.ndarray):
                    odd_config[key] = at_odd_byte(value)
        next_w, odd_config = rule(odd_w, at_odd_byte(dw), odd_config)
        assert next_w is odd_w and not odd_w.flags.aligned
        np.testing.assert_allclose(odd_w, aligned_w, rtol=1e-6 if dtype == np.float32 else 1e-14)


@pytest.mark.parametrize("rule", RULES)
def test_read_only_or_integer_w_is_copied_not_modified(rule):
    rng = np.random.default_rng(1)
    dw = rng.standard_normal(5)
    w = rng.standard_normal(5)
    expected, _ = rule(w.copy(), dw)
    frozen = w.copy()
    frozen.flags.writeable = False
    next_w, _ = rule(frozen, dw)
    assert next_w is not frozen and np.array_equal(frozen, w)
    np.testing.assert_array_equal(next_w, expected)
    ints = np.arange(5)
    next_w, _ = rule(ints, dw)
    assert next_w.dtype == np.float64 and np.array_equal(ints, np.arange(5))
    next_w, _ = rule(list(w), dw)
    np.testing.assert_array_equal(next_w, expected)


@pytest.mark.parametrize("rule", RULES)
def test_float32_stays_float32(rule):
    rng = np.random.default_rng(2)
    w64 = rng.standard_normal((4, 3))
    w32, config32, config64 = w64.astype(np.float32), None, None
    for _ in range(3):
        dw = rng.standard_normal((4, 3))
        w32, config32 = rule(w32, dw.astype(np.float32), config32)
        w64, config64 = rule(w64, dw, config64)
    assert w32.dtype == np.float32
    for key in ("velocity", "cache", "m", "v"):
        if key in config32:
            assert config32[key].dtype == np.float32
    np.testing.assert_allclose(w32, w64, rtol=1e-5, atol=1e-6)


def test_state_of_another_dtype_is_converted_to_w_dtype():
    w = np.ones(3, dtype=np.float32)
    _, config = optim.sgd_momentum(w, np.ones(3), {"velocity": np.zeros(3)})
    assert config["velocity"].dtype == np.float32


@pytest.mark.parametrize("rule", RULES)
def test_shape_mismatch_is_a_clear_error(rule):
    message = rf"{rule.__name__}: dw has shape \(3,\) but w has shape \(2, 3\)"
    with pytest.raises(ValueError, match=message):
        rule(np.ones((2, 3)), np.ones(3))


def test_state_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match=r"config\['velocity'\] has shape \(2,\)"):
        optim.sgd_momentum(np.ones(3), np.ones(3), {"velocity": np.zeros(2)})


# An out-of-range hyperparameter would write NaN or infinities into w; it is refused before
# w or config change, on the C++ path (plain float arrays), the numpy path (a strided w) and
# the kernel's own entry.
OUT_OF_RANGE = [
    (optim.sgd, "learning_rate", float("nan"), "finite and >= 0"),
    (optim.sgd, "learning_rate", -1e-3, "finite and >= 0"),
    (optim.sgd_momentum, "momentum", float("inf"), "finite and >= 0"),
    (optim.rmsprop, "decay_rate", 1.5, r"in \[0, 1\]"),
    (optim.rmsprop, "epsilon", -1e-8, "finite and >= 0"),
    (optim.adam, "beta1", 1.0, r"in \[0, 1\)"),
    (optim.adam, "beta2", -0.5, r"in \[0, 1\)"),
    (optim.adam, "epsilon", float("nan"), "finite and >= 0"),
]


def _weights(layout):
    w = np.linspace(-1, 1, 12).reshape(3, 4)
    return w if layout == "plain" else np.asfortranarray(w)


@pytest.mark.parametrize("layout", ["plain", "strided"])
@pytest.mark.parametrize(("rule", "key", "value", "range_"), OUT_OF_RANGE)
def test_out_of_range_hyperparameters_are_refused_before_anything_changes(
    rule, key, value, range_, layout
):
    w = _weights(layout)
    before = w.copy()
    config = {key: value}
    with pytest.raises(ValueError, match=rf"{rule.__name__}: config\['{key}'\] must be {range_}"):
        rule(w, np.ones_like(w), config)
    np.testing.assert_array_equal(w, before)
    assert config.get("t", 0) == 0


@pytest.mark.parametrize("layout", ["plain", "strided"])
def test_adam_refuses_a_negative_step_count(layout):
    w = _weights(layout)
    before = w.copy()
    config = {"t": -1}
    with pytest.raises(ValueError, match=r"adam: config\['t'\] .* must be >= 0, got -1"):
        optim.adam(w, np.ones_like(w), config)
    np.testing.assert_array_equal(w, before)
    assert config["t"] == -1


@pytest.mark.parametrize("t", [0.5, 2**63 - 1, 2**70])
def test_adam_refuses_a_step_count_that_is_not_an_int_of_64_bits(t):
    with pytest.raises(ValueError, match=r"adam: config\['t'\] .* must be an int below 2\*\*63"):
        optim.adam(np.ones(3), np.ones(3), {"t": t})


@pytest.mark.parametrize(
    ("key", "value"), [("beta1", 0.0), ("beta2", 1.0 - 2.0**-53), ("epsilon", 0.0)]
)
def test_adam_takes_the_edges_of_its_ranges(key, value):
    w, config = optim.adam(np.ones(3), np.full(3, 0.5), {key: value})
    assert np.all(np.isfinite(w)) and config["t"] == 1


def test_the_kernel_entry_refuses_out_of_range_hyperparameters():
    from graphnet.kernels import _C

    w = np.ones(4)
    states = [np.zeros(4), np.zeros(4)]
    with pytest.raises(ValueError, match=r"adam: config\['beta1'\] must be in \[0, 1\), got 1.0"):
        _C.update("adam", w, np.ones(4), states, [1e-3, 1.0, 0.999, 1e-8], 1)
    with pytest.raises(ValueError, match=r"adam: config\['t'\] .* must be >= 0, got -1"):
        _C.update("adam", w, np.ones(4), states, [1e-3, 0.9, 0.999, 1e-8], 0)
    np.testing.assert_array_equal(w, np.ones(4))
