"""Running a risky call in a child process, so that a crash fails one test instead of
killing the whole suite."""

import os
import subprocess
import sys
import textwrap


def run_in_child(source, timeout=120, cwd=None):
    """Run the Python `source` in a fresh interpreter (this one's, with this environment:
    under .ci/sanitize that is the sanitized build with its runtimes preloaded).

    Returns the CompletedProcess (text stdout and stderr). A child killed by a signal has
    a negative returncode.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
    )


def assert_survived(result):
    """The child exited normally (status 0), whatever it printed."""
    assert result.returncode == 0, (
        f"child exited with {result.returncode}\nstdout:\n{result.stdout[-3000:]}\n"
        f"stderr:\n{result.stderr[-3000:]}"
    )
