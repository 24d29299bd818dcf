"""Self-contained HTML: one drawing in a page, or a step-by-step player of frames.

Everything is inline (SVG, CSS, script) and nothing refers to the network, so a file
works offline, attached to an email or opened from a course's shared drive.
"""
import html
import json
from pathlib import Path

from .render import inline_svg

_STYLE = """
body { font-family: Helvetica, Arial, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; margin: 0 0 0.6em 0; }
.drawing svg { max-width: 100%; height: auto; }
"""

_PLAYER_STYLE = _STYLE + """
.controls { display: flex; gap: 0.5em; align-items: center; margin-bottom: 0.8em; }
.controls button { font-size: 1em; padding: 0.3em 1em; cursor: pointer; }
#counter { font-weight: bold; min-width: 8em; }
.hint { color: #777; font-size: 0.9em; }
pre.text { background: #f6f6f6; border-left: 4px solid #ff8c00; padding: 0.6em 0.9em;
           font-size: 0.95em; white-space: pre-wrap; margin: 0 0 0.8em 0; }
"""

# Prev / Next / Play, the arrow keys and the space bar. Play advances once a second and
# stops on the last frame; any manual move stops it.
_PLAYER_SCRIPT = """
(function () {
  var frames = document.querySelectorAll('.frame');
  var counter = document.getElementById('counter');
  var play = document.getElementById('play');
  var current = 0, timer = null;
  function show(i) {
    current = Math.max(0, Math.min(frames.length - 1, i));
    frames.forEach(function (f, k) { f.hidden = k !== current; });
    counter.textContent = 'Step ' + (current + 1) + ' / ' + frames.length;
  }
  function stop() { clearInterval(timer); timer = null; play.textContent = 'Play'; }
  function toggle() {
    if (timer) { stop(); return; }
    if (current === frames.length - 1) show(0);
    play.textContent = 'Pause';
    timer = setInterval(function () {
      show(current + 1);
      if (current >= frames.length - 1) stop();
    }, INTERVAL);
  }
  document.getElementById('prev').onclick = function () { stop(); show(current - 1); };
  document.getElementById('next').onclick = function () { stop(); show(current + 1); };
  play.onclick = toggle;
  document.addEventListener('keydown', function (e) {
    if (e.key === 'ArrowLeft') { stop(); show(current - 1); }
    else if (e.key === 'ArrowRight') { stop(); show(current + 1); }
    else if (e.key === ' ') { e.preventDefault(); toggle(); }
  });
  show(0);
})();
"""


def svg_page(svg, title):
    """An HTML page showing one inline SVG drawing."""
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
            f"</title><style>{_STYLE}</style></head>\n<body><h1>{html.escape(title)}</h1>\n"
            f"<div class=\"drawing\">{svg}</div>\n</body></html>\n")


def export_html(frames, path, title=None, interval=1.0):
    """Write a self-contained HTML player of `frames` (from backward_steps or
    forward_steps): Prev / Next / Play buttons, arrow keys, a step counter, each frame's
    explanation and its drawing as inline SVG. `interval` is Play's seconds per frame.
    Returns the path."""
    frames = list(frames)
    if not frames:
        raise ValueError("export_html needs at least one frame")
    if title is None:
        title = f"graphnet: {frames[0].direction} pass, step by step"
    parts = []
    for index, frame in enumerate(frames):
        # The explanation sits above the drawing here, so the drawing needs no title.
        svg = inline_svg(frame.draw(title=None))
        parts.append(f'<div class="frame" data-step="{index + 1}"{" hidden" if index else ""}>'
                     f'<pre class="text">{html.escape(frame.text)}</pre>'
                     f'<div class="drawing">{svg}</div></div>')
    script = _PLAYER_SCRIPT.replace("INTERVAL", json.dumps(int(interval * 1000)))
    page = (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_PLAYER_STYLE}</style></head>\n"
            f"<body><h1>{html.escape(title)}</h1>\n<div class=\"controls\">"
            '<button id="prev">&#9664; Prev</button><button id="play">Play</button>'
            '<button id="next">Next &#9654;</button><span id="counter"></span>'
            '<span class="hint">arrow keys: step, space: play/pause</span></div>\n'
            + "\n".join(parts) + f"\n<script>{script}</script>\n</body></html>\n")
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path
