"""Self-contained HTML: one drawing in a page, or a step-by-step player of frames.

Everything is inline (SVG, CSS, script, data) and nothing refers to the network, so a file
works offline, attached to an email or opened from a course's shared drive.
"""

import html
import json
from pathlib import Path
from typing import Any, Iterable, Optional, Union

from .scene import frames_scene, static_text

_STYLE = """
body { font-family: Helvetica, Arial, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; margin: 0 0 0.6em 0; }
.drawing svg { max-width: 100%; height: auto; }
"""

# The page is exactly the window: controls and the step's explanation on top, the drawing
# in the rest, so nothing scrolls away and every frame has the same size.
_PLAYER_STYLE = """
html, body { height: 100%; margin: 0; }
body { font-family: Helvetica, Arial, sans-serif; color: #222; display: flex;
       flex-direction: column; box-sizing: border-box; padding: 0.6em 0.8em; }
h1 { font-size: 1.15em; margin: 0 0 0.4em 0; }
.controls { display: flex; gap: 0.4em; align-items: center; flex-wrap: wrap;
            margin-bottom: 0.4em; }
.controls button { font-size: 0.95em; padding: 0.25em 0.8em; cursor: pointer; }
#counter { font-weight: bold; min-width: 7em; }
.hint { color: #666; font-size: 0.85em; }
pre#text { background: #f6f6f6; border-left: 4px solid #F0E442; padding: 0.4em 0.7em;
           font-size: 0.9em; white-space: pre-wrap; margin: 0 0 0.4em 0; max-height: 28vh;
           overflow: auto; flex: none; }
#stage { flex: 1 1 auto; min-height: 0; border: 1px solid #ddd; overflow: hidden;
         cursor: grab; touch-action: none; }
"""


def svg_page(svg: str, title: str) -> str:
    """An HTML page showing one inline SVG drawing."""
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}'
        f"</title><style>{_STYLE}</style></head>\n<body><h1>{html.escape(title)}</h1>\n"
        f'<div class="drawing">{svg}</div>\n</body></html>\n'
    )


def export_html(
    frames: Iterable[Any],
    path: Union[str, Path],
    title: Optional[str] = None,
    interval: float = 1.0,
    **options: Any,
) -> Path:
    """Write a self-contained HTML player of `frames` (from backward_steps or
    forward_steps): one drawing laid out once, which each step restyles in place (the
    active gate in yellow, the numbers filling in); buttons, arrow keys, Home/End and
    space (play/pause), a step counter and each frame's explanation. The mouse wheel
    zooms, dragging pans, 0 fits the drawing, and each step brings its gate into view.
    `interval` is Play's seconds per frame; `options` go to draw(). Returns the path."""
    frames = list(frames)
    if not frames:
        raise ValueError("export_html needs at least one frame")
    if title is None:
        title = f"graphnet: {frames[0].direction} pass, step by step"
    if frames[0].direction == "forward":
        options.setdefault("grads", False)
    scene = frames_scene(frames, **options)
    data = {
        "svg": scene.svg,
        "frames": scene.frames,
        "texts": [f.text for f in frames],
        "active": [scene.unit_id(f.node.name) for f in frames],
        "interval": int(interval * 1000),
    }
    # The explanation's box is as tall as the longest one (up to 28 % of the window),
    # so the drawing below it keeps one size through all the frames.
    lines = max(frame.text.count("\n") + 1 for frame in frames)
    # '</' inside a script element would end it early.
    payload = json.dumps(data).replace("</", "<\\/")
    page = (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_PLAYER_STYLE}</style></head>\n"
        f'<body><h1>{html.escape(title)}</h1>\n<div class="controls">'
        '<button id="first" title="first step (Home)">|&#9664;</button>'
        '<button id="prev" title="previous step (left arrow)">&#9664; Prev</button>'
        '<button id="play" title="play / pause (space)">Play</button>'
        '<button id="next" title="next step (right arrow)">Next &#9654;</button>'
        '<button id="last" title="last step (End)">&#9654;|</button>'
        '<span id="counter"></span>'
        '<button id="fit" title="the whole drawing (0)">Fit</button>'
        '<span class="hint">arrows: step · space: play · wheel or +/−: zoom · '
        "drag: pan · 0: fit</span></div>\n"
        f'<pre id="text" style="height: {lines * 1.25:.2f}em"></pre>\n'
        '<div id="stage"></div>\n'
        f'<script type="application/json" id="graphnet-data">{payload}</script>\n'
        f"<script>{static_text('scene.js')}\n{static_text('player.js')}</script>\n"
        "</body></html>\n"
    )
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path
