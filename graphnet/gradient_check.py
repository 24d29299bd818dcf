"""Numerical gradients by centred differences, to check analytic backward passes.

The names, calling conventions and arithmetic of CS231n's ``gradient_check`` module (the
same in every edition): the array checkers subtract the two outputs before projecting
them, ``sum((f(x+h) - f(x-h)) * df) / (2h)``, and the gradient has x's dtype. Each
function perturbs ``x`` IN PLACE, one element at a time, because the function under test
usually closes over ``x`` rather than reading its argument; every element is restored
afterwards, also when ``f`` raises. The differences are computed by the same core as
``graphnet.gradcheck`` (graphnet.core.gradcheck).
"""

import random
from typing import Any, Callable, List, Sequence

import numpy as np

from .core.gradcheck import difference_quotients, numerical_gradient
from .core.gradcheck import relative_error as rel_error

__all__ = [
    "eval_numerical_gradient",
    "eval_numerical_gradient_array",
    "eval_numerical_gradient_blobs",
    "eval_numerical_gradient_net",
    "grad_check_sparse",
    "rel_error",
]


def eval_numerical_gradient(
    f: Callable[[np.ndarray], Any], x: np.ndarray, verbose: bool = True, h: float = 1e-5
) -> np.ndarray:
    """Gradient of the scalar function f at x (any shape): an array of x's shape and dtype.

    With verbose, prints each index and its partial derivative as it is computed.
    """
    return numerical_gradient(f, x, h, on_entry=(lambda ix, g: print(ix, g)) if verbose else None)


def _projected_difference(f, x, df):
    """f with its output copied, and the difference that projects two outputs onto df."""
    df = np.asarray(df)

    def output(a):
        # A copy: f may return a buffer that its next call overwrites.
        out = np.array(f(a), copy=True)
        if out.shape != df.shape:
            raise ValueError(
                f"eval_numerical_gradient_array: df has shape {df.shape} but f(x) "
                f"has shape {out.shape} (x {np.shape(x)}); pass df of f(x)'s shape"
            )
        return out

    return output, lambda above, below: np.sum((above - below) * df)


def eval_numerical_gradient_array(
    f: Callable[[np.ndarray], Any], x: np.ndarray, df: Any, h: float = 1e-5
) -> np.ndarray:
    """Gradient of sum(f(x) * df) at x: the vector-Jacobian product a backward pass returns.

    f maps x to an array of df's shape. Returns an array of x's shape and dtype.
    """
    output, difference = _projected_difference(f, x, df)
    return numerical_gradient(output, x, h, difference)


def eval_numerical_gradient_blobs(
    f: Callable[..., Any], inputs: Sequence[Any], output: Any, h: float = 1e-5
) -> List[np.ndarray]:
    """Gradients for a function on "blobs": objects with `.vals` (the values) and `.diffs`
    (for the output: the upstream gradient).

    f(*inputs, output) computes into output.vals. Returns, for each input blob, the
    gradient of sum(output.vals * output.diffs) with respect to its vals (an array of the
    shape and dtype of its vals).
    """

    def compute(_):
        f(*inputs, output)
        return np.array(output.vals, copy=True)

    def difference(above, below):
        return np.sum((above - below) * output.diffs)

    return [numerical_gradient(compute, blob.vals, h, difference) for blob in inputs]


def eval_numerical_gradient_net(
    net: Any, inputs: Sequence[Any], output: Any, h: float = 1e-5
) -> List[np.ndarray]:
    """eval_numerical_gradient_blobs for a net whose net.forward() reads the input blobs
    and writes the output blob."""
    return eval_numerical_gradient_blobs(lambda *blobs: net.forward(), inputs, output, h=h)


def grad_check_sparse(
    f: Callable[[np.ndarray], Any],
    x: np.ndarray,
    analytic_grad: np.ndarray,
    num_checks: int = 10,
    h: float = 1e-5,
) -> List[float]:
    """Check analytic_grad against centred differences of the scalar f at num_checks
    random entries of x, printing each as the course does.

    The entries are drawn with Python's `random.randrange`, like the course's, so
    random.seed(...) repeats them. Returns the relative errors |n - a| / max(1e-8, |n| + |a|)
    as a list of floats (the course's has no 1e-8 floor, and divides by zero for two zeros).
    """
    if np.shape(analytic_grad) != np.shape(x):
        raise ValueError(
            f"grad_check_sparse: analytic_grad has shape {np.shape(analytic_grad)} but x has "
            f"shape {np.shape(x)}; pass the gradient of f at x"
        )
    if np.size(x) == 0 and num_checks > 0:
        raise ValueError(f"grad_check_sparse: x of shape {np.shape(x)} has no entries to check")
    # drawn one check at a time, as the course's loop draws them
    indices = (tuple(random.randrange(m) for m in x.shape) for _ in range(num_checks))
    errors = []
    for ix, numerical in difference_quotients(f, x, h, indices):
        analytic = analytic_grad[ix]
        errors.append(rel_error(numerical, analytic))
        print(f"numerical: {numerical:f} analytic: {analytic:f}, relative error: {errors[-1]:e}")
    return errors
