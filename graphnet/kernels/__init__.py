"""Load the C++ extension, with the OpenBLAS it links to.

The extension finds libscipy_openblas.so through a relative RPATH, which holds when both
packages sit in one site-packages. Loading the library first, by its full path, makes the
extension work also when they were installed into different places (a venv on top of
system packages, say).
"""

import ctypes
import os

try:
    import scipy_openblas32

    ctypes.CDLL(
        os.path.join(scipy_openblas32.get_lib_dir(), f"lib{scipy_openblas32.get_library()}.so"),
        mode=ctypes.RTLD_GLOBAL,
    )
except (ImportError, OSError):
    pass  # the RPATH may still find it; if not, the import below says what is missing

try:
    from . import _C  # type: ignore[attr-defined]  # noqa: F401 (compiled, no stub)
except ImportError as err:
    raise ImportError(
        f"graphnet's C++ extension graphnet._C could not be loaded ({err}). Install graphnet "
        "with pip (`pip install .` or `pip install -e .` from the source tree) so that it is "
        "compiled, and make sure the scipy-openblas32 package is installed."
    ) from err
