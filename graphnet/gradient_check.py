"""Numerical gradients by centered differences, to check analytic backward passes.

Same names and calling conventions as CS231n's ``gradient_check`` module. The functions
perturb ``x`` IN PLACE, one element at a time, because the function under test usually
closes over ``x`` rather than reading its argument; every element is restored afterwards,
also when ``f`` raises.
"""
import numpy as np

__all__ = ["eval_numerical_gradient", "eval_numerical_gradient_array", "rel_error"]


def _centered_differences(f, x, h, on_entry=None):
    """d f(x) / d x for f mapping x to a scalar, one element at a time.

    x: a float ndarray of any shape, perturbed in place and restored. Returns a float64
    array of x's shape: the difference quotient is formed in double precision even when x
    is float32, where h = 1e-5 is already near the rounding step of x itself.
    """
    if not (isinstance(x, np.ndarray) and x.dtype.kind == "f"):
        raise ValueError("gradient check: x must be a float ndarray that f reads, "
                         f"got {type(x).__name__} {getattr(x, 'dtype', '')}")
    if not (isinstance(h, (int, float, np.floating)) and h > 0):
        raise ValueError(f"gradient check: the step h must be a positive number, got {h!r}")
    grad = np.zeros(x.shape, dtype=np.float64)
    for ix in np.ndindex(*x.shape):
        old = x[ix]
        try:
            x[ix] = old + h
            f_plus = f(x)
            x[ix] = old - h
            f_minus = f(x)
        finally:
            x[ix] = old
        grad[ix] = (f_plus - f_minus) / (2 * h)
        if on_entry is not None:
            on_entry(ix, grad[ix])
    return grad


def eval_numerical_gradient(f, x, verbose=True, h=1e-5):
    """Gradient of the scalar function f at x (any shape); returns an array of x's shape.

    With verbose, prints each index and its partial derivative as it is computed.
    """
    return _centered_differences(lambda a: float(f(a)), x, h,
                                 on_entry=(lambda ix, g: print(ix, g)) if verbose else None)


def eval_numerical_gradient_array(f, x, df, h=1e-5):
    """Gradient of sum(f(x) * df) at x: the vector-Jacobian product a backward pass returns.

    f maps x to an array of df's shape. Returns an array of x's shape.
    """
    df = np.asarray(df)

    def projected(a):
        out = np.asarray(f(a))
        if out.shape != df.shape:
            raise ValueError(f"eval_numerical_gradient_array: df has shape {df.shape} but f(x) "
                             f"has shape {out.shape} (x {np.shape(x)}); pass df of f(x)'s shape")
        # Reduced to a scalar at once, so an f that reuses its output buffer between calls
        # cannot corrupt the difference.
        return np.sum(out * df)
    return _centered_differences(projected, x, h)


def rel_error(x, y):
    """max |x - y| / max(1e-8, |x| + |y|), elementwise; a float."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return float(np.max(np.abs(x - y) / np.maximum(1e-8, np.abs(x) + np.abs(y))))
