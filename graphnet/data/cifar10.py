"""CIFAR-10, from the official "CIFAR-10 python version" batch files.

Each batch is a Python 2 pickle of a dict whose b'data' is a (N, 3072) uint8 array —
a row is the 1024 red, then 1024 green, then 1024 blue values of a 32x32 image in
row-major order — and whose b'labels' is a list of N ints in 0..9.
"""

import contextlib
import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np

from ._common import DataError, default_data_dir, package_splits
from ._download import DownloadError, download, file_md5, safe_extract
from ._safe_pickle import load_array_pickle

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
BATCH_FOLDER = "cifar-10-batches-py"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
NUM_CLASSES = 10
_ROW_SIZE = 3 * 32 * 32

_HOW_TO_GET = (
    "get it with `graphnet train --data cifar10 --download` "
    "or `graphnet.data.download_cifar10(root)`"
)


def default_cifar10_dir() -> Path:
    """$GRAPHNET_DATA if set (the batch folder or its parent, both work), else
    ~/.graphnet/data/cifar-10-batches-py."""
    if os.environ.get("GRAPHNET_DATA"):
        return default_data_dir()
    return default_data_dir() / BATCH_FOLDER


def _batch_folder(root):
    """`root` itself or its cifar-10-batches-py child, whichever holds the batches."""
    root = Path(root).expanduser()
    child = root / BATCH_FOLDER
    if not (root / TEST_BATCH).exists() and child.is_dir():
        return child
    return root


def _is_complete(folder):
    return all((folder / name).is_file() for name in TRAIN_BATCHES + (TEST_BATCH,))


# The entries of a batch dict. Python 2 wrote the keys as str, which read back as bytes; a
# batch re-saved by Python 3 has str keys instead.
_REQUIRED_KEYS, _OPTIONAL_KEYS = ("data", "labels"), ("batch_label", "filenames")


def _batch_fields(batch, path):
    """The batch's entries by their str names; DataError for a key the format lacks."""
    fields = {}
    for key, value in batch.items():
        name = key.decode("ascii", "replace") if isinstance(key, bytes) else key
        if name not in _REQUIRED_KEYS + _OPTIONAL_KEYS or name in fields:
            raise DataError(
                f"{path}: a CIFAR-10 batch holds only the entries "
                f"{', '.join(_REQUIRED_KEYS + _OPTIONAL_KEYS)}; found "
                f"{repr(key)[:60]}"
            )
        fields[name] = value
    for name in _REQUIRED_KEYS:
        if name not in fields:
            raise DataError(
                f"{path}: batch has no {name!r} entry (it has {', '.join(fields) or 'nothing'})"
            )
    return fields


def _check_data(data, path):
    if not (
        isinstance(data, np.ndarray)
        and data.dtype == np.uint8
        and data.ndim == 2
        and data.shape[1] == _ROW_SIZE
    ):
        raise DataError(
            f"{path}: 'data' must be a uint8 array of shape (N, {_ROW_SIZE}), "
            f"found {type(data).__name__} {getattr(data, 'dtype', '')} "
            f"{getattr(data, 'shape', '')}".rstrip()
        )


def _check_labels(labels, count, path):
    """labels (a list of ints, or a 1-D integer array) as int64, one per image, in 0..9."""
    if isinstance(labels, list):
        odd = next((v for v in labels if type(v) is not int), None)
        if odd is not None:
            raise DataError(
                f"{path}: 'labels' must be a list of ints, found an item of type "
                f"{type(odd).__name__}"
            )
    elif not (isinstance(labels, np.ndarray) and labels.dtype.kind in "iu"):
        raise DataError(
            f"{path}: 'labels' must be a list of ints or an integer array, "
            f"found {type(labels).__name__} {getattr(labels, 'dtype', '')}"
        )
    if np.ndim(labels) != 1 or len(labels) != count:
        raise DataError(
            f"{path}: 'labels' must be {count} integers (one per image), "
            f"found shape {np.shape(labels)}"
        )
    if count and (min(labels) < 0 or max(labels) >= NUM_CLASSES):
        raise DataError(
            f"{path}: labels must lie in 0..{NUM_CLASSES - 1}, found {min(labels)}..{max(labels)}"
        )
    return np.asarray(labels, dtype=np.int64)


def _check_metadata(fields, count, path):
    label = fields.get("batch_label", b"")
    names = fields.get("filenames", [b""] * count)
    if not isinstance(label, (bytes, str)):
        raise DataError(f"{path}: 'batch_label' must be a string, found {type(label).__name__}")
    if not (
        isinstance(names, list)
        and len(names) == count
        and all(isinstance(n, (bytes, str)) for n in names)
    ):
        raise DataError(f"{path}: 'filenames' must be a list of {count} strings (one per image)")


def _load_batch(path, dtype):
    """One batch file -> X (N, 32, 32, 3) `dtype`, y (N,) int64, validated."""
    if not path.exists():  # (a folder or a device in its place: load_array_pickle says so)
        raise FileNotFoundError(
            f"CIFAR-10 batch not found: {path}. Expected the 'CIFAR-10 python version' "
            f"folder {BATCH_FOLDER} holding {', '.join(TRAIN_BATCHES)} and {TEST_BATCH}; "
            + _HOW_TO_GET
        )
    batch = load_array_pickle(path)
    if not isinstance(batch, dict):
        raise DataError(f"{path}: expected a pickled dict, found {type(batch).__name__}")
    fields = _batch_fields(batch, path)
    data = fields["data"]
    _check_data(data, path)
    labels = _check_labels(fields["labels"], data.shape[0], path)
    _check_metadata(fields, data.shape[0], path)
    try:
        X = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).astype(dtype)
    except MemoryError:
        raise DataError(f"{path}: not enough memory for its {data.shape[0]} images") from None
    return X, labels


def _load_batches(folder, names, dtype):
    Xs, ys = zip(*(_load_batch(folder / name, dtype) for name in names))
    return np.concatenate(Xs), np.concatenate(ys)


def load_cifar10(
    root: Union[str, "os.PathLike[str]"], dtype: Any = np.float64
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load all of CIFAR-10 from `root` (the cifar-10-batches-py folder or its parent).

    Returns (X_train, y_train, X_test, y_test): X_train (50000, 32, 32, 3) and X_test
    (10000, 32, 32, 3) as `dtype` (float64 by default, pixel values 0..255, channels
    last), y_train (50000,) and y_test (10000,) int64 class indices in 0..9.
    Raises FileNotFoundError for a missing batch, DataError for a corrupted one, and
    UnsafePickleError if a batch tries to load anything but numpy arrays.
    """
    folder = _batch_folder(root)
    X_train, y_train = _load_batches(folder, TRAIN_BATCHES, dtype)
    X_test, y_test = _load_batches(folder, (TEST_BATCH,), dtype)
    return X_train, y_train, X_test, y_test


def get_CIFAR10_data(
    num_training: int = 49000,
    num_validation: int = 1000,
    num_test: int = 1000,
    subtract_mean: bool = True,
    cifar10_dir: Optional[Union[str, "os.PathLike[str]"]] = None,
    dtype: Any = np.float32,
) -> Dict[str, np.ndarray]:
    """CIFAR-10 split into train / validation / test, channels first.

    Training images 0..num_training-1 form the training set, the next num_validation
    the validation set; the test set is the first num_test test images. With
    subtract_mean, the training set's mean image is subtracted from all three.
    Returns {'X_train', 'y_train', 'X_val', 'y_val', 'X_test', 'y_test'}, X as `dtype`
    (N, 3, 32, 32), y int64 (N,). cifar10_dir defaults to default_cifar10_dir().
    """
    if cifar10_dir is None:
        cifar10_dir = default_cifar10_dir()
        if not _batch_folder(cifar10_dir).is_dir():
            raise FileNotFoundError(
                f"CIFAR-10 is not in {cifar10_dir} (set GRAPHNET_DATA or pass "
                f"cifar10_dir to use another folder); " + _HOW_TO_GET
            )
    X_train, y_train, X_test, y_test = load_cifar10(cifar10_dir, dtype=dtype)

    if num_training + num_validation > len(X_train) or num_test > len(X_test):
        raise ValueError(
            f"asked for {num_training} training + {num_validation} validation and "
            f"{num_test} test images, but {cifar10_dir} holds {len(X_train)} training "
            f"and {len(X_test)} test images"
        )
    end_val = num_training + num_validation
    channels_first = (0, 3, 1, 2)
    splits = {
        "train": (X_train[:num_training].transpose(channels_first), y_train[:num_training]),
        "val": (
            X_train[num_training:end_val].transpose(channels_first),
            y_train[num_training:end_val],
        ),
        "test": (X_test[:num_test].transpose(channels_first), y_test[:num_test]),
    }
    return package_splits(splits, subtract_mean, dtype)


def download_cifar10(
    root: Optional[Union[str, "os.PathLike[str]"]] = None,
    url: str = CIFAR10_URL,
    md5: str = CIFAR10_MD5,
    progress: bool = True,
) -> Path:
    """Download and unpack the CIFAR-10 python archive; return the batch folder path.

    root: the folder to put cifar-10-batches-py in (or that folder itself); defaults
    to default_cifar10_dir(). Nothing is fetched if the batches are already there, and
    a previously downloaded archive is reused if its checksum matches. The archive is
    verified against `md5` before it is unpacked; members with absolute or '..' paths,
    links and special files are refused.
    """
    root = Path(root if root is not None else default_cifar10_dir()).expanduser()
    parent = root.parent if root.name == BATCH_FOLDER else root
    folder = parent / BATCH_FOLDER
    if _is_complete(folder):
        return folder

    created = [p for p in (parent, *parent.parents) if not p.exists()]
    parent.mkdir(parents=True, exist_ok=True)
    archive = parent / ARCHIVE_NAME
    try:
        if not (archive.is_file() and file_md5(archive) == md5):
            download(url, archive, md5, progress=progress)
    except BaseException as err:
        for made in created:  # deepest first; a failed download leaves nothing in them
            with contextlib.suppress(OSError):
                made.rmdir()
        if isinstance(err, DownloadError):
            raise DownloadError(
                f"{err}. Download it by hand (with a browser, or `curl -LO "
                f"{url}`) and unpack it into {parent}, or pass the folder "
                f"that holds {BATCH_FOLDER} as --data-dir (root=)",
                url,
            ) from None
        raise
    try:
        safe_extract(archive, parent)
    except DataError as err:
        raise DataError(
            f"{err}; its MD5 digest matched, so the file itself is damaged: "
            f"delete it and download again"
        ) from None
    if not _is_complete(folder):
        raise DataError(
            f"{archive} unpacked, but {folder} lacks some of "
            f"{', '.join(TRAIN_BATCHES)}, {TEST_BATCH}"
        )
    return folder
