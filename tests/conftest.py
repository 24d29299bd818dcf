"""Shared fixtures, and the hypothesis profile the tests run under."""

import json
import os
import sys

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


@pytest.fixture(scope="session")
def this_python_kernel(tmp_path_factory):
    """A Jupyter kernelspec (as a notebook's metadata names it) whose kernel is this
    interpreter, in a folder of its own put first on JUPYTER_PATH for the session: the
    notebooks the tests run import the graphnet under test whatever kernelspecs the machine
    has (a "python3" one installed for another Python would import another graphnet, or
    none)."""
    data = tmp_path_factory.mktemp("jupyter-data")
    spec = {
        "name": "graphnet-under-test",
        "display_name": "graphnet under test",
        "language": "python",
    }
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (data / "kernels" / spec["name"]).mkdir(parents=True)
    (data / "kernels" / spec["name"] / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": spec["display_name"], "language": "python"})
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(
            "JUPYTER_PATH",
            os.pathsep.join(filter(None, [str(data), os.environ.get("JUPYTER_PATH")])),
        )
        yield spec
