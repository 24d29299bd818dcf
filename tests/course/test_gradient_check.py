"""graphnet.gradient_check: the course's numerical gradient checkers."""

import random

import numpy as np
import pytest

from graphnet.gradient_check import (
    eval_numerical_gradient,
    eval_numerical_gradient_array,
    eval_numerical_gradient_blobs,
    eval_numerical_gradient_net,
    grad_check_sparse,
    rel_error,
)


def test_numerical_gradient_of_a_quadratic():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4))
    grad = eval_numerical_gradient(lambda a: np.sum(a**2 + 3 * a), x, verbose=False)
    assert grad.shape == x.shape
    np.testing.assert_allclose(grad, 2 * x + 3, rtol=1e-8, atol=1e-8)


def test_x_is_restored_bit_for_bit():
    x = np.random.default_rng(1).standard_normal((2, 3, 2))
    before = x.copy()
    eval_numerical_gradient(lambda a: np.sum(np.sin(a)), x, verbose=False)
    eval_numerical_gradient_array(lambda a: np.cos(a), x, np.ones_like(x))
    assert np.array_equal(x, before)


def test_x_is_restored_when_f_raises():
    x = np.arange(4.0)
    before = x.copy()
    calls = []

    def f(a):
        calls.append(1)
        if len(calls) == 2:  # fail on the minus step, while x[0] is perturbed
            raise RuntimeError("boom")
        return a.sum()

    with pytest.raises(RuntimeError):
        eval_numerical_gradient(f, x, verbose=False)
    assert np.array_equal(x, before)


def test_f_may_close_over_x_instead_of_reading_its_argument():
    x = np.array([1.0, -2.0, 0.5])
    grad = eval_numerical_gradient(lambda _: np.prod(x), x, verbose=False)
    np.testing.assert_allclose(grad, [-1.0, 0.5, -2.0], rtol=1e-9)


def test_array_version_is_a_vector_jacobian_product():
    rng = np.random.default_rng(2)
    A = rng.standard_normal((5, 3))
    x = rng.standard_normal((3, 2))
    df = rng.standard_normal((5, 2))
    grad = eval_numerical_gradient_array(lambda a: A @ a, x, df)
    np.testing.assert_allclose(grad, A.T @ df, rtol=1e-7, atol=1e-9)


def test_array_version_survives_an_f_that_reuses_its_output_buffer():
    buffer = np.empty(3)

    def f(a):
        np.multiply(a, 2.0, out=buffer)
        return buffer

    x = np.array([1.0, 2.0, 3.0])
    grad = eval_numerical_gradient_array(f, x, np.array([1.0, 10.0, 100.0]))
    np.testing.assert_allclose(grad, [2.0, 20.0, 200.0], rtol=1e-8)


def test_verbose_prints_each_index(capsys):
    eval_numerical_gradient(lambda a: a.sum(), np.zeros((2, 2)), verbose=True)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("(0, 0)")


def test_step_size_h_is_honoured():
    x = np.array([0.0])
    # d(a^3)/da at 0 is 0, but the centered difference of a cubic is exactly h^2.
    grad = eval_numerical_gradient(lambda a: float(a[0] ** 3), x, verbose=False, h=0.1)
    np.testing.assert_allclose(grad, [0.01], rtol=1e-12)


def test_integer_x_is_rejected():
    with pytest.raises(ValueError, match="float ndarray"):
        eval_numerical_gradient(lambda a: a.sum(), np.arange(3), verbose=False)


def test_rel_error():
    assert rel_error(np.ones(3), np.ones(3)) == 0.0
    assert rel_error(np.array([1.0]), np.array([0.0])) == 1.0
    assert rel_error(np.array([1.0, 3.0]), np.array([1.0, 1.0])) == pytest.approx(0.5)
    # both tiny: the 1e-8 floor keeps the ratio finite and small
    assert rel_error(np.array([1e-12]), np.array([0.0])) == pytest.approx(1e-4)
    assert isinstance(rel_error(1.0, 2.0), float)


# ------------------------------------------------------------- the course's arithmetic


def course_eval_numerical_gradient_array(f, x, df, h=1e-5):
    """The course's checker, as its gradient_check.py writes it: the reference."""
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=["readwrite"])
    while not it.finished:
        ix = it.multi_index
        oldval = x[ix]
        x[ix] = oldval + h
        pos = f(x).copy()
        x[ix] = oldval - h
        neg = f(x).copy()
        x[ix] = oldval
        grad[ix] = np.sum((pos - neg) * df) / (2 * h)
        it.iternext()
    return grad


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_array_version_is_the_courses_arithmetic_bit_for_bit(dtype):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 3)).astype(dtype)
    df = rng.standard_normal((4, 3))
    f = lambda a: np.tanh(a) * 3 + 100.0  # noqa: E731  (an offset that sums would cancel badly)
    ours = eval_numerical_gradient_array(f, x, df)
    assert ours.dtype == dtype
    np.testing.assert_array_equal(ours, course_eval_numerical_gradient_array(f, x, df))


def test_subtracting_outputs_first_keeps_the_courses_precision():
    # The notebooks' relu_backward cell: the course states an error on the order of e-12.
    # Summing each side first (sum(f(x+h) df) - sum(f(x-h) df)) gave 4.7e-9 here.
    np.random.seed(231)
    x = np.random.randn(10, 10)
    dout = np.random.randn(*x.shape)
    dx_num = eval_numerical_gradient_array(lambda a: np.maximum(a, 0), x, dout)
    assert rel_error(dx_num, dout * (x > 0)) < 1e-11


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gradient_dtype_follows_x(dtype):
    x = np.linspace(-1, 1, 6).astype(dtype)
    grad = eval_numerical_gradient(lambda a: float(np.sum(a**2)), x, verbose=False, h=1e-2)
    assert grad.dtype == dtype
    np.testing.assert_allclose(grad, 2 * x, rtol=1e-3, atol=1e-4)


class Blob:
    def __init__(self, vals, diffs=None):
        self.vals = np.array(vals, dtype=np.float64)
        self.diffs = np.zeros_like(self.vals) if diffs is None else np.array(diffs)


def test_blobs_gradients_of_a_product():
    rng = np.random.default_rng(6)
    x, w = Blob(rng.standard_normal((3, 4))), Blob(rng.standard_normal((4, 2)))
    out = Blob(np.zeros((3, 2)), rng.standard_normal((3, 2)))

    def f(x, w, out):
        out.vals[...] = x.vals @ w.vals  # writes into the output blob, as the course's nets do

    dx, dw = eval_numerical_gradient_blobs(f, (x, w), out)
    np.testing.assert_allclose(dx, out.diffs @ w.vals.T, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(dw, x.vals.T @ out.diffs, rtol=1e-8, atol=1e-10)


def test_net_gradients_call_forward_with_the_perturbed_blobs():
    rng = np.random.default_rng(7)
    x = Blob(rng.standard_normal(5))
    out = Blob(np.zeros(5), rng.standard_normal(5))

    class Net:
        calls = 0

        def forward(self):
            Net.calls += 1
            out.vals[...] = np.sin(x.vals)

    (dx,) = eval_numerical_gradient_net(Net(), [x], out)
    np.testing.assert_allclose(dx, np.cos(x.vals) * out.diffs, rtol=1e-8)
    assert Net.calls == 2 * 5


def test_grad_check_sparse_prints_the_courses_lines_and_repeats_with_random_seed(capsys):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((6, 7))
    before = x.copy()
    f = lambda a: float(np.sum(a**3))  # noqa: E731
    random.seed(0)
    errors = grad_check_sparse(f, x, 3 * x**2, num_checks=5)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(errors) == len(lines) == 5 and max(errors) < 1e-8
    assert all(line.startswith("numerical: ") and ", relative error: " in line for line in lines)
    random.seed(0)
    grad_check_sparse(f, x, 3 * x**2, num_checks=5)
    assert capsys.readouterr().out.strip().splitlines() == lines
    assert np.array_equal(x, before)
    wrong = grad_check_sparse(f, x, 3 * x**2 + 1, num_checks=3)
    assert min(wrong) > 1e-3


def test_every_module_exports_the_same_checkers():
    import graphnet.cs231n.gradient_check as latest
    import graphnet.cs231n.v2017.gradient_check as first
    import graphnet.gradient_check as top

    for name in top.__all__:
        assert getattr(latest, name) is getattr(first, name) is getattr(top, name)
    assert set(top.__all__) >= {
        "eval_numerical_gradient",
        "eval_numerical_gradient_array",
        "eval_numerical_gradient_blobs",
        "eval_numerical_gradient_net",
        "grad_check_sparse",
        "rel_error",
    }
