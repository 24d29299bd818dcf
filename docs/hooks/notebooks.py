"""MkDocs hook: the tutorials, notebooks/*.ipynb rendered with their outputs.

The notebooks are committed without outputs. Each is rendered from an executed copy in
build/executed-notebooks/, named by the notebook's content hash: the notebook test
(tests/e2e/test_notebooks.py) leaves one there after it runs, and when none matches the
committed notebook this hook executes it (in a fresh kernel, the python3 the notebooks
name, in notebooks/; the test runs them on a kernel of its own interpreter) and keeps
the copy. nbconvert turns each into Markdown, its pictures into
files beside the page; nothing is loaded from the network when the page is read.
"""
from __future__ import annotations

import base64
import hashlib
import logging
from pathlib import Path
from typing import Dict, Tuple

from mkdocs.structure.files import File, Files

log = logging.getLogger("mkdocs.hooks.notebooks")
ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = ROOT / "notebooks"
EXECUTED_DIR = ROOT / "build" / "executed-notebooks"
CELL_TIMEOUT = 300  # seconds, as in the notebook test


def executed_copy(path: Path) -> Path:
    """Where the executed copy of this version of the notebook is kept (the test writes
    the same name)."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return EXECUTED_DIR / f"{path.stem}-{digest}.ipynb"


def executed(path: Path):
    import nbformat
    copy = executed_copy(path)
    if copy.exists():
        return nbformat.read(copy, as_version=4)
    import nbclient
    log.info("executing %s (no executed copy from the tests)", path.name)
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK_DIR)}}).execute()
    copy.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, copy)
    return nb


#: Output types, best first: pictures become files, the rest text.
PICTURES = {"image/svg+xml": "svg", "image/png": "png", "image/jpeg": "jpg"}


def _text(source) -> str:
    return "".join(source) if isinstance(source, list) else source


def _fence(text: str, lang: str = "text") -> str:
    text = text.rstrip("\n")
    ticks = "````" if "```" in text else "```"
    return f"{ticks}{lang}\n{text}\n{ticks}\n"


def to_markdown(nb, stem: str) -> Tuple[str, Dict[str, bytes]]:
    """The notebook as Markdown, and {file name: bytes} of the pictures it refers to."""
    parts, files = [], {}
    for index, cell in enumerate(nb.cells):
        source = _text(cell.source)
        if cell.cell_type == "markdown":
            parts.append(source.rstrip() + "\n")
            continue
        if cell.cell_type != "code" or not source.strip():
            continue
        parts.append(_fence(source, "python"))
        for number, output in enumerate(cell.get("outputs", [])):
            kind = output.get("output_type")
            if kind == "stream":
                parts.append(_fence(_text(output.get("text", ""))))
            elif kind == "error":
                parts.append(_fence("\n".join(output.get("traceback", []))))
            elif kind in ("execute_result", "display_data"):
                data = output.get("data", {})
                picture = next((m for m in PICTURES if m in data), None)
                if picture is not None:
                    name = f"{stem}_files/cell{index}_{number}.{PICTURES[picture]}"
                    content = _text(data[picture])
                    files[name] = (content.encode("utf-8") if picture == "image/svg+xml"
                                   else base64.b64decode(content))
                    parts.append(f"![output of cell {index}]({name})\n")
                elif "text/plain" in data:
                    parts.append(_fence(_text(data["text/plain"])))
    return "\n".join(parts), files


def on_files(files: Files, config) -> Files:
    for path in sorted(NOTEBOOK_DIR.glob("*.ipynb")):
        body, pictures = to_markdown(executed(path), path.stem)
        note = (f"!!! note \"Run it yourself\"\n    This page is `notebooks/{path.name}`, "
                f"executed. Run it with `pip install \".[digits]\" jupyterlab` and "
                f"`jupyter lab notebooks/`.\n\n")
        files.append(File.generated(config, f"tutorials/{path.stem}.md",
                                    content=_with_note(body, note)))
        for name, data in pictures.items():
            files.append(File.generated(config, f"tutorials/{name}", content=data))
    return files


def _with_note(body: str, note: str) -> str:
    """The note after the notebook's title line."""
    first, _, rest = body.partition("\n")
    return f"{first}\n\n{note}{rest}" if first.startswith("# ") else note + body
