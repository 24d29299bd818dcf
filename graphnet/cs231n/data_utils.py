"""The course's `data_utils` module (every edition): CIFAR-10 from the official python
batches, read by graphnet.data (a restricted unpickler: loading never runs code)."""

import os
from typing import Any, Dict, Tuple

import numpy as np

from ..data import cifar10

__all__ = ["load_CIFAR10", "get_CIFAR10_data", "COURSE_CIFAR10_DIR"]

#: Where the assignment's cs231n/datasets/get_datasets.sh puts CIFAR-10, relative to the
#: assignment folder (the notebooks' working directory).
COURSE_CIFAR10_DIR = os.path.join("cs231n", "datasets", "cifar-10-batches-py")


def load_CIFAR10(ROOT: Any) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All of CIFAR-10 from the batch folder ROOT, as the course loads it: X_train (50000,
    32, 32, 3) and X_test (10000, 32, 32, 3) float64 pixel values, channels last, and the
    labels y_train (50000,), y_test (10000,)."""
    return cifar10.load_cifar10(ROOT)


def get_CIFAR10_data(
    num_training: int = 49000,
    num_validation: int = 1000,
    num_test: int = 1000,
    subtract_mean: bool = True,
    cifar10_dir: Any = None,
    dtype: Any = np.float32,
) -> Dict[str, np.ndarray]:
    """The course's preprocessed splits: {'X_train', 'y_train', 'X_val', 'y_val', 'X_test',
    'y_test'}, images channels first (N, 3, 32, 32) with the training mean image subtracted.

    The batches are read from the course's folder cs231n/datasets/cifar-10-batches-py when
    it is under the current directory (where the assignment's get_datasets.sh puts them),
    otherwise from graphnet's ($GRAPHNET_DATA or ~/.graphnet/data; graphnet.data.
    download_cifar10() fetches them). cifar10_dir and dtype are additions; the images are
    float32 (the course's are float64: twice the memory for the same models' results).
    """
    if cifar10_dir is None and os.path.isdir(COURSE_CIFAR10_DIR):
        cifar10_dir = COURSE_CIFAR10_DIR
    return cifar10.get_CIFAR10_data(
        num_training, num_validation, num_test, subtract_mean, cifar10_dir=cifar10_dir, dtype=dtype
    )
