"""The documentation: the gate reference covers every registered gate, every Python
example in the README runs, the README stays short and undated, and the site builds
strictly (`mkdocs build --strict`, when the docs extra is installed)."""

import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

import graphnet as gn
from graphnet.gates import base as gates_base

ROOT = pathlib.Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
NORUN = "<!-- norun -->"  # put on the line before a ```python block that is not meant to run


def _load_hook(name):
    spec = importlib.util.spec_from_file_location(
        f"docs_hook_{name}", ROOT / "docs" / "hooks" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def gate_hook():
    pytest.importorskip("mkdocs")  # the hooks build mkdocs File objects
    return _load_hook("gates")


@pytest.fixture
def registered_cube():
    """A gate registered the way a user would, removed from the registry afterwards."""

    @gn.register_gate
    class DocsTestCube(gn.Gate):
        """f = x³, a gate the docs test registers."""

        op = "docs_test_cube"
        inputs = ("x",)
        formula = "{0}³"
        rule = "a cube gate scales the upstream gradient by 3·{0}²"
        derivatives = ("3·{0}²",)

        def shape(self, x):
            return x

        def forward(self, x):
            return x**3, x

        def backward(self, dout, cache, needs):
            return (3 * cache**2 * dout,)

    yield DocsTestCube
    del gates_base._REGISTRY["docs_test_cube"]


def _sections(markdown):
    return re.findall(r"(?m)^## (\S+)$", markdown)


def test_every_registered_gate_has_a_section_in_the_gate_reference(gate_hook, registered_cube):
    text, _ = gate_hook.reference_markdown(drawings=False)
    assert _sections(text) == gn.gate_names()
    cube = text.split("## docs_test_cube\n", 1)[1].split("\n## ", 1)[0]
    assert "`out = x³`" in cube and "**∂out/∂x** = `3·x²`" in cube
    assert "a cube gate scales the upstream gradient by 3·x²" in cube
    assert "saved 0.5" in cube  # its cache, from running it on a scalar


def built_in_gates():
    """The gates graphnet registers (other tests in this process may have registered their
    own, which the site, built in its own process, does not know)."""
    return [
        op for op in gn.gate_names() if gates_base.gate_class(op).__module__.startswith("graphnet.")
    ]


@pytest.mark.slow
def test_every_built_in_gate_example_runs_and_is_drawn(gate_hook):
    """The reference's drawings are of examples run forward and backward: an example that
    stops running (a builder's signature changed) fails here, not silently on the site."""
    pytest.importorskip("graphviz")
    _, svgs = gate_hook.reference_markdown(drawings=True)
    built_in = built_in_gates()
    assert len(built_in) >= 40
    for op in built_in:
        graph, ran = gate_hook.run_example(op)
        assert ran, f"the gate reference's example of {op!r} no longer runs"
        assert op in gate_hook.EXAMPLES, f"{op!r} has no example in docs/hooks/gates.py"
        assert svgs[f"gates/{op}.svg"].lstrip().startswith((b"<?xml", b"<svg"))


def python_blocks(path=README):
    """(line number, code) of every ```python block of a Markdown file not marked NORUN."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, start = [], None
    for number, line in enumerate(lines, 1):
        if start is None and line.strip() == "```python":
            skip = number >= 2 and lines[number - 2].strip() == NORUN
            start, code = (None if skip else number), []
            if skip:
                continue
        elif start is not None and line.strip() == "```":
            blocks.append((start, "\n".join(code)))
            start = None
        elif start is not None:
            code.append(line)
    return blocks


@pytest.mark.slow
def test_every_python_example_in_the_readme_runs(tmp_path, monkeypatch):
    """The README's blocks run in order in one namespace (a later block may use an
    earlier one's names), in a temporary folder (they write files)."""
    blocks = python_blocks()
    assert len(blocks) >= 4
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__readme__"}
    for line, code in blocks:
        exec(compile(code, f"README.md, the block at line {line}", "exec"), namespace)
    assert namespace["g"]["x"].grad == -4.0  # the step-player block's circuit
    assert abs(namespace["f"].value - (-12.0)) < 1e-12


@pytest.mark.slow
def test_every_python_example_in_getting_started_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__getting_started__"}
    page = ROOT / "docs" / "getting-started.md"
    for line, code in python_blocks(page):
        exec(compile(code, f"{page.name}, the block at line {line}", "exec"), namespace)
    assert namespace["solver"].best_val_acc > 0.8


def test_readme_is_short_and_undated():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text), "no dates in the README"
    assert text.count(NORUN) <= 2, "blocks that do not run: sparingly"


def test_readme_starts_with_the_set_up_commands_that_ci_runs():
    lines = README.read_text(encoding="utf-8").splitlines()
    commands = lines[lines.index("```bash") + 1 : lines.index("```bash") + 3]
    assert commands[0].startswith('pip install ".[digits]" && graphnet train')
    assert commands[1].startswith("bash .ci/run")
    assert lines.index("```bash") <= 3


def test_readme_links_lead_to_files():
    """Relative links in the README point at files of the repository."""
    for target in re.findall(r"\]\(([^)#\s]+)", README.read_text(encoding="utf-8")):
        if "://" in target:
            continue
        assert (ROOT / target).exists(), f"README links to {target}"


@pytest.mark.slow
def test_the_site_builds_strictly(tmp_path):
    """`mkdocs build --strict`: a broken link, a missing page or an unresolved reference
    fails. The tutorials come from the notebook test's executed copies when it ran
    first, else the build executes the notebooks."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    site = tmp_path / "site"
    gates = (site / "reference" / "gates" / "index.html").read_text(encoding="utf-8")
    for op in built_in_gates():
        assert f'id="{op}"' in gates
        assert (site / "reference" / "gates" / f"{op}.svg").exists()
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        page = site / "tutorials" / notebook.stem / "index.html"
        assert page.exists() and "<img" in page.read_text(encoding="utf-8"), notebook.name
    assert not np.any([b"fonts.googleapis.com" in p.read_bytes() for p in site.rglob("*.html")])
