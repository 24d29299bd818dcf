import numpy as np
import pytest

from graphnet.gradient_check import (eval_numerical_gradient,
                                     eval_numerical_gradient_array, rel_error)


def test_numerical_gradient_of_a_quadratic():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4))
    grad = eval_numerical_gradient(lambda a: np.sum(a ** 2 + 3 * a), x, verbose=False)
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
