"""The 8x8 handwritten digits bundled with scikit-learn: a real data set with no download."""

from typing import Any, Dict, Optional, Tuple

import numpy as np

from ._common import package_splits

NUM_CLASSES = 10
_MAX_PIXEL = 16.0  # the bundled images hold ink counts 0..16


def load_digits() -> Tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits: X float32 (1797, 1, 8, 8) scaled to [0, 1], y int64 (1797,) in 0..9.

    Needs the optional scikit-learn dependency (`pip install graphnet[digits]`).
    """
    try:
        from sklearn import datasets
    except ImportError as err:
        raise ImportError(
            "graphnet.data.load_digits reads the digits bundled with "
            "scikit-learn: pip install graphnet[digits] "
            "(or pip install scikit-learn)"
        ) from err
    bunch = datasets.load_digits()
    X = (bunch.images / _MAX_PIXEL).astype(np.float32)[:, np.newaxis]
    return X, bunch.target.astype(np.int64)


def get_digits_data(
    num_validation: int = 180,
    num_test: int = 360,
    num_training: Optional[int] = None,
    seed: int = 0,
    subtract_mean: bool = True,
    dtype: Any = np.float32,
) -> Dict[str, np.ndarray]:
    """The digits shuffled with `seed` and split into train / validation / test.

    The same seed always gives the same, disjoint splits. num_training=None takes every
    image left after validation and test (1257 with the defaults).
    Returns {'X_train', 'y_train', 'X_val', 'y_val', 'X_test', 'y_test'} like
    get_CIFAR10_data: X `dtype` (N, 1, 8, 8), y int64 (N,); with subtract_mean the
    training set's mean image is subtracted from all three.
    """
    X, y = load_digits()
    available = len(X) - num_validation - num_test
    if num_training is None:
        num_training = available
    if min(num_training, num_validation, num_test) < 0 or num_training > available:
        raise ValueError(
            f"cannot split {len(X)} digits into {num_training} training, "
            f"{num_validation} validation and {num_test} test images"
        )
    order = np.random.default_rng(seed).permutation(len(X))
    test, val, train = np.split(order, [num_test, num_test + num_validation])
    train = train[:num_training]
    splits = {"train": (X[train], y[train]), "val": (X[val], y[val]), "test": (X[test], y[test])}
    return package_splits(splits, subtract_mean, dtype)
