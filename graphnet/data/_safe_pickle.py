"""Read numpy-array pickles without letting the file run code.

A pickle is a small program: every GLOBAL it names gets imported and may be called.
The CIFAR-10 batches were written by Python 2 (protocol 2) and, besides plain dicts,
lists, ints and strings, name only the three globals numpy needs to rebuild an array.
Those three are all this unpickler will hand out.
"""
import pickle

import numpy as np

try:  # numpy >= 2 moved the array reconstructor; pickles may name either module.
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]

from ._common import DataError

# Resolved here rather than imported by name, so that a file naming the old
# numpy.core path does not trigger numpy 2's deprecation shim.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}

# What a damaged file makes the unpickler or numpy's array rebuild raise.
_CORRUPTION_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, TypeError,
                      IndexError, KeyError, AttributeError, OverflowError)


class UnsafePickleError(DataError):
    """The pickle names a global outside the allowed numpy array reconstruction."""


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file, path):
        # 'bytes' keeps Python 2 str (keys such as b'data', the raw pixel buffer) as bytes.
        super().__init__(file, encoding="bytes")
        self._path = path

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._path}: refusing to load, the pickle asks for the global "
                f"{module}.{name}; only numpy array reconstruction is allowed") from None


def load_array_pickle(path):
    """Unpickle `path` allowing only numpy arrays, plain containers and scalars.

    Raises FileNotFoundError if `path` is missing, UnsafePickleError if it names any
    other global, and DataError if it is truncated or otherwise corrupted.
    """
    with open(path, "rb") as f:
        try:
            return _ArrayOnlyUnpickler(f, path).load()
        except UnsafePickleError:
            raise
        except _CORRUPTION_ERRORS as err:
            raise DataError(f"{path}: truncated or corrupted pickle "
                            f"({type(err).__name__}: {err})") from err
