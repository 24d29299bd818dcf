"""Errors and the split packaging shared by every data set."""

import os
from pathlib import Path

import numpy as np


class DataError(ValueError):
    """A data file exists but does not hold what its format promises."""


def default_data_dir() -> Path:
    """Where data sets live unless told otherwise: $GRAPHNET_DATA or ~/.graphnet/data."""
    env = os.environ.get("GRAPHNET_DATA")
    return Path(env).expanduser() if env else Path.home() / ".graphnet" / "data"


def package_splits(splits, subtract_mean, dtype):
    """Cast the splits and centre them on the training mean.

    splits: {"train": (X, y), "val": (X, y), "test": (X, y)}, X of shape (N, C, H, W).
    Returns the course's dict {'X_train', 'y_train', 'X_val', 'y_val', 'X_test', 'y_test'}
    with X as contiguous `dtype` arrays (N, C, H, W) and y as int64 (N,).
    """
    mean_image = 0.0
    if subtract_mean:
        # Accumulate in float64: a float32 sum over ~50k images loses digits.
        mean_image = splits["train"][0].mean(axis=0, dtype=np.float64)
    data = {}
    for split, (X, y) in splits.items():
        data[f"X_{split}"] = np.ascontiguousarray(X - mean_image, dtype=dtype)
        data[f"y_{split}"] = np.asarray(y, dtype=np.int64)
    return data
