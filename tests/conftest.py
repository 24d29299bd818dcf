"""Shared fixtures, and the hypothesis profile the tests run under."""

import os

import pytest
from hypothesis import settings

from graphnet.kernels import _C

# The suite draws the same examples on every run, so a failure in CI is a failure on any
# machine that runs the same commit; HYPOTHESIS_PROFILE=explore draws new ones each run
# (and keeps the failures it finds in .hypothesis/ to replay them first).
settings.register_profile("repeatable", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


@pytest.fixture(scope="module")
def one_kernel_thread():
    """Run the C++ kernels on one thread: the tests' tiny batches gain nothing from a
    second one, which would only wake up and sleep again on every call."""
    before = _C.get_num_threads()
    _C.set_num_threads(1)
    yield
    _C.set_num_threads(before)
