"""MkDocs hook: pages whose source lives outside docs/.

- CHANGELOG.md and CONTRIBUTING.md (at the repository's root, where GitHub shows them)
  become changelog.md and contributing.md; their links into docs/ are made site-relative.
- visualizations/ (the gallery: index.md, its SVGs and PNGs) becomes gallery/.
- Every docs/**/*.dot (a Graphviz diagram) becomes the SVG beside it.
- reference/cli.md is the `--help` of every `graphnet` command, from graphnet.cli's parser.
"""
from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]

ROOT_PAGES = {"CHANGELOG.md": "changelog.md", "CONTRIBUTING.md": "contributing.md"}


def site_relative(markdown: str) -> str:
    """Links written from the repository's root (docs/x.md, README.md) as the site sees
    them from a page at the site's root."""
    markdown = re.sub(r"\]\(docs/", "](", markdown)
    for source, dest in ROOT_PAGES.items():
        markdown = markdown.replace(f"]({source}", f"]({dest}")
    return re.sub(r"\]\(README\.md", "](index.md", markdown)


def cli_reference() -> str:
    import argparse
    import os

    from graphnet.cli import build_parser
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal's width otherwise
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    lines = ["# Command line", "",
             "`graphnet COMMAND ...`, also `python -m graphnet COMMAND ...`. What a "
             "training run writes, how it stops and resumes: "
             "[Training on CIFAR-10](../how-to/cifar10.md#the-command-line).", ""]
    for name, sub in commands.choices.items():
        lines += [f"## graphnet {name}", "", "```text", sub.format_help().rstrip(), "```", ""]
    if columns is None:
        del os.environ["COLUMNS"]
    else:
        os.environ["COLUMNS"] = columns
    return "\n".join(lines)


def on_files(files: Files, config) -> Files:
    import subprocess
    files.append(File.generated(config, "reference/cli.md", content=cli_reference()))
    docs = Path(config["docs_dir"])
    for diagram in sorted(docs.rglob("*.dot")):
        svg = subprocess.run(["dot", "-Tsvg", str(diagram)], check=True,
                             capture_output=True).stdout
        files.append(File.generated(config, diagram.relative_to(docs).with_suffix(".svg")
                                    .as_posix(), content=svg))
    for source, dest in ROOT_PAGES.items():
        text = site_relative((ROOT / source).read_text(encoding="utf-8"))
        files.append(File.generated(config, dest, content=text))
    gallery = ROOT / "visualizations"
    for path in sorted(gallery.iterdir()):
        if path.suffix in (".md", ".svg", ".png"):
            files.append(File.generated(config, f"gallery/{path.name}",
                                        content=path.read_bytes()))
    return files
