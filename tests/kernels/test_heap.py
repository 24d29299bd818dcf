"""The allocator keeps the memory a step frees (cpp/heap.h): a large array allocated
after another of its size was freed reuses that memory instead of faulting fresh pages in;
GRAPHNET_RETURN_FREED_MEMORY=1 leaves glibc's allocator as it was."""

import os
import platform

import pytest

from isolation import assert_survived, run_in_child

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux"
    or platform.libc_ver()[0] != "glibc"
    or "asan" in os.environ.get("LD_PRELOAD", ""),  # .ci/sanitize: its own allocator
    reason="the setting is glibc's allocator's",
)

# 64 MB: above glibc's largest default mmap threshold (32 MB), so without the setting every
# such array is mapped afresh and its pages faulted in (32 huge pages or 16384 small ones).
FAULTS_OF_A_REFILLED_ARRAY = """
    import resource
    import numpy as np
    from graphnet.kernels import _C

    def faults_of_a_new_array():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        a = np.empty(16 << 20, np.float32)
        a.fill(1)
        del a
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    faults_of_a_new_array()
    print(_C.keeps_freed_memory, min(faults_of_a_new_array() for _ in range(3)))
"""


def _kept_and_faults(monkeypatch, opt_out):
    if opt_out is None:
        monkeypatch.delenv("GRAPHNET_RETURN_FREED_MEMORY", raising=False)
    else:
        monkeypatch.setenv("GRAPHNET_RETURN_FREED_MEMORY", opt_out)
    result = run_in_child(FAULTS_OF_A_REFILLED_ARRAY)
    assert_survived(result)
    kept, faults = result.stdout.split()
    return kept == "True", int(faults)


@pytest.mark.parametrize("opt_out", [None, "", "0"])
def test_a_freed_array_is_reused_without_page_faults(monkeypatch, opt_out):
    kept, faults = _kept_and_faults(monkeypatch, opt_out)
    assert kept and faults < 8


def test_the_environment_can_leave_the_allocator_as_it_was(monkeypatch):
    kept, faults = _kept_and_faults(monkeypatch, "1")
    assert not kept and faults >= 16
