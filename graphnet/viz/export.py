"""export(graph or drawing, path): SVG, PNG, PDF, DOT or a self-contained HTML page."""

import os
from pathlib import Path
from typing import Any, Optional, Union

from .draw import draw
from .html import svg_page
from .render import inline_svg, to_bytes

FORMATS = ("svg", "png", "pdf", "dot", "gv", "html")


def export(
    drawing: Any, path: Union[str, "os.PathLike[str]"], format: Optional[str] = None, **options: Any
) -> Path:
    """Write `drawing` (a Graph, a step Frame, or a graphviz.Digraph such as draw()
    returns) to `path`. The format comes from `format` or else the path's suffix: svg,
    png, pdf, dot/gv (the DOT source; needs no Graphviz program) or html (the SVG
    inlined in a page that works offline). `options` go to draw() for a Graph or Frame.
    Returns the path."""
    path = Path(path)
    fmt = (format or path.suffix.lstrip(".")).lower()
    if fmt == "htm":
        fmt = "html"
    if fmt not in FORMATS:
        raise ValueError(
            f"unknown export format {fmt!r} for {str(path)!r}: use one of "
            + ", ".join(FORMATS)
            + " (or a path ending in one)"
        )
    if hasattr(drawing, "draw"):  # a step Frame
        drawing = drawing.draw(**options)
    elif not hasattr(drawing, "source"):  # a Graph
        drawing = draw(drawing, **options)
    elif options:
        raise TypeError("draw options apply to a Graph or a Frame, not to a finished drawing")
    if fmt in ("dot", "gv"):
        path.write_text(drawing.source, encoding="utf-8")
    elif fmt == "html":
        path.write_text(svg_page(inline_svg(drawing), title=path.stem), encoding="utf-8")
    else:
        path.write_bytes(to_bytes(drawing, fmt))
    return path
