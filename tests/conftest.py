"""Shared fixtures."""

import pytest

from graphnet.kernels import _C


@pytest.fixture(scope="module")
def one_kernel_thread():
    """Run the C++ kernels on one thread: the tests' tiny batches gain nothing from a
    second one, which would only wake up and sleep again on every call."""
    before = _C.get_num_threads()
    _C.set_num_threads(1)
    yield
    _C.set_num_threads(before)
