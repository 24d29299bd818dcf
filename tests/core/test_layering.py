"""The package's layers import only the ones below them: no cycles, the core never loads
the drawings, and `import graphnet` stays light (drawing, data and model modules load on
first use)."""

import ast
import pathlib
import subprocess
import sys

import pytest

import graphnet as gn

PACKAGE = pathlib.Path(gn.__file__).parent


def _module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module, level, current, is_package):
    if level == 0:
        return module
    base = current.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def module_level_imports():
    """{module: graphnet modules it imports at module level} (imports inside functions
    are lazy by design and may go upward)."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        name = _module_name(path)
        tree = ast.parse(path.read_text())
        found = set()
        for node in tree.body:
            if isinstance(node, ast.If):  # `if TYPE_CHECKING:` imports never run
                continue
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("graphnet")}
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(node.module, node.level, name, path.name == "__init__.py")
                if target.startswith("graphnet"):
                    found.add(target)
                    found |= {f"{target}.{a.name}" for a in node.names}
        known = {
            m
            for m in found
            if (PACKAGE.parent / m.replace(".", "/")).with_suffix(".py").exists()
            or (PACKAGE.parent / m.replace(".", "/") / "__init__.py").exists()
        }
        graph[name] = known - {name}
    return graph


def _is_within(module, package):
    return module == package or module.startswith(package + ".")


@pytest.mark.slow
def test_no_import_cycle_between_modules():
    graph = module_level_imports()
    # a package's __init__ importing its own submodules is how packages are built
    edges = {
        m: {t for t in targets if not (m.count(".") < t.count(".") and _is_within(t, m))}
        for m, targets in graph.items()
    }
    state = {}

    def visit(module, path):
        state[module] = "open"
        for target in sorted(edges.get(module, ())):
            if state.get(target) == "open":
                cycle = path[path.index(target) :] + [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])


@pytest.mark.slow
def test_lower_layers_do_not_import_upper_ones():
    order = [
        "graphnet.kernels",
        "graphnet.gates",
        "graphnet.core",
        "graphnet.passes",
        "graphnet.models",
        "graphnet.training",
        "graphnet.viz",
    ]
    graph = module_level_imports()
    for rank, layer in enumerate(order):
        above = order[rank + 1 :]
        for module, targets in graph.items():
            if _is_within(module, layer):
                wrong = [t for t in targets if any(_is_within(t, a) for a in above)]
                assert not wrong, f"{module} imports {wrong}, a layer above it"


def test_import_graphnet_loads_no_drawing_data_or_model_code():
    script = (
        "import sys, graphnet; print(sorted(m for m in ('matplotlib', 'graphviz', "
        "'networkx', 'tqdm', 'graphnet.viz', 'graphnet.data', 'graphnet.models') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    assert out == "[]"


def test_subpackages_are_attributes_of_graphnet():
    for name in (
        "data",
        "viz",
        "optim",
        "models",
        "layers",
        "fast_layers",
        "gradient_check",
        "cs231n",
        "interop",
    ):
        module = getattr(gn, name)
        assert module.__name__ == f"graphnet.{name}"
    assert callable(gn.viz.draw) and callable(gn.data.load_digits)
    assert gn.models.TwoLayerNet and callable(gn.optim.adam)
