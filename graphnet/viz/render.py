"""Running Graphviz's `dot`, with one clear error when it is not installed.

Building a drawing needs only the `graphviz` Python package; turning it into an image
needs the `dot` program, which pip cannot install. Every path to an image (Jupyter's
inline display, `pipe`, `render`, `export`) goes through `Drawing`, so a missing `dot`
always gives the same message saying how to get it, and the DOT source stays usable.
"""

import contextlib
import re

import graphviz

INSTALL_HINT = (
    "Rendering a graphnet drawing needs the Graphviz 'dot' program, which is not on "
    "PATH. Install Graphviz itself (pip's 'graphviz' package is only the Python "
    "binding):\n"
    "  Debian/Ubuntu:  sudo apt-get install graphviz\n"
    "  macOS:          brew install graphviz\n"
    "  conda:          conda install -c conda-forge graphviz\n"
    "  Windows:        winget install graphviz (or https://graphviz.org/download/)\n"
    "The DOT source works without it: drawing.source, or export(drawing, 'graph.dot')."
)


class GraphvizNotFoundError(RuntimeError):
    """The Graphviz `dot` program is missing; the message says how to install it."""


class DotRefusedError(ValueError):
    """`dot` could not read the drawing: a label it cannot carry (a NUL character, tens of
    thousands of characters). Graph refuses node names that would be one."""


@contextlib.contextmanager
def dot_required():
    try:
        yield
    except graphviz.ExecutableNotFound:
        raise GraphvizNotFoundError(INSTALL_HINT) from None
    except graphviz.CalledProcessError as err:
        said = (err.stderr or b"").decode(errors="replace").strip().splitlines()
        raise DotRefusedError(
            f"Graphviz's dot could not read the drawing ({said[0] if said else err}); a "
            "node's name or label holds what DOT cannot carry, such as a NUL character"
        ) from None
    except BrokenPipeError:  # dot stopped reading before the drawing's end
        raise DotRefusedError(
            "Graphviz's dot stopped reading the drawing before its end; a node's name or "
            "label holds what DOT cannot carry, such as tens of thousands of characters"
        ) from None


class Drawing(graphviz.Digraph):
    """A graphviz.Digraph whose rendering failures name the fix (see module docstring)."""

    def pipe(self, *args, **kwargs):
        with dot_required():
            return super().pipe(*args, **kwargs)

    def render(self, *args, **kwargs):
        with dot_required():
            return super().render(*args, **kwargs)


def to_bytes(drawing, fmt):
    """The drawing rendered by `dot` as `fmt` ('svg', 'png', 'pdf') bytes. dot's own
    messages are not echoed: when it fails, the error carries them."""
    with dot_required():
        return drawing.pipe(format=fmt, quiet=True)


_SVG_PROLOG = re.compile(r"^.*?(?=<svg\b)", re.S)


def inline_svg(drawing):
    """SVG markup to paste into an HTML page: without the XML declaration and the
    DOCTYPE, whose DTD address a browser would otherwise see as an external reference."""
    return _SVG_PROLOG.sub("", to_bytes(drawing, "svg").decode("utf-8"), count=1)
