"""Data sets: CIFAR-10 from the official python batches, scikit-learn's 8x8 digits, and
handwritten numbers captioned in words (a recurrent task that ships with the install).

CIFAR-10 and the digits come as the course's dict {'X_train', 'y_train', 'X_val',
'y_val', 'X_test', 'y_test'} with images channels first, (N, C, H, W); the number
captions in the layout of the course's COCO captioning data.
"""

from ._common import DataError, default_data_dir
from ._download import ChecksumError, DownloadError
from ._safe_pickle import UnsafePickleError
from .cifar10 import (
    CIFAR10_MD5,
    CIFAR10_URL,
    default_cifar10_dir,
    download_cifar10,
    get_CIFAR10_data,
    load_cifar10,
)
from .digits import get_digits_data, load_digits
from .number_captions import (
    caption_accuracy,
    decode_captions,
    load_number_captions,
    sample_minibatch,
    spell_number,
)

__all__ = [
    "CIFAR10_MD5",
    "CIFAR10_URL",
    "ChecksumError",
    "DataError",
    "DownloadError",
    "UnsafePickleError",
    "default_cifar10_dir",
    "default_data_dir",
    "download_cifar10",
    "get_CIFAR10_data",
    "get_digits_data",
    "load_cifar10",
    "load_digits",
    "load_number_captions",
    "sample_minibatch",
    "decode_captions",
    "caption_accuracy",
    "spell_number",
]
