"""onnx and torch stay optional: `import graphnet` loads neither, the converters are
reachable from `graphnet` without loading them, and a missing one names its extra."""

import subprocess
import sys
import textwrap

import pytest


def run_python(code):
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.slow
def test_import_graphnet_and_reaching_the_converters_loads_neither_onnx_nor_torch():
    out = run_python("""
        import sys
        import graphnet as gn
        converters = (gn.to_onnx, gn.from_onnx, gn.to_torch, gn.from_torch, gn.interop)
        print(sorted(m for m in ("onnx", "onnxruntime", "torch") if m in sys.modules))
    """)
    assert out.strip() == "[]"


@pytest.mark.slow
def test_a_missing_package_is_an_error_naming_the_extra():
    out = run_python("""
        import sys
        sys.modules["onnx"] = sys.modules["torch"] = None  # as if not installed
        import graphnet as gn
        g = gn.Graph()
        g.relu(g.input("x", shape=(None, 2)))
        for convert, args in ((gn.to_onnx, (g,)), (gn.from_onnx, ("m.onnx",)),
                              (gn.to_torch, (g,)), (gn.from_torch, (None, ()))):
            try:
                convert(*args)
            except gn.interop.MissingDependencyError as err:
                assert isinstance(err, ImportError)
                print(err)
    """)
    lines = out.strip().splitlines()
    assert len(lines) == 4
    assert lines[0] == (
        "graphnet.to_onnx needs the 'onnx' package, which is not installed: "
        'pip install "graphnet[onnx]"'
    )
    assert 'pip install "graphnet[onnx]"' in lines[1]
    assert all('pip install "graphnet[torch]"' in line for line in lines[2:])
