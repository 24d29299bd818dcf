"""The colours of every drawing, one meaning each, and the log scale of edge gradients.

One meaning per visual channel, colour-blind safe (the Okabe-Ito colours and ColorBrewer's
PRGn and BrBG maps, which stay apart for the common forms of colour blindness):

- text colour: blue for a value (forward), vermillion for a gradient (backward);
- node fill and shape: the node's role (input, parameter, constant, gate, loss, block),
  a saturated yellow fill for the gate of a step player's current step;
- node border colour: a warning (vanishing, exploding, NaN/Inf and the path it took);
- edge colour: the sign of the gradient sent back along it, purple negative, green
  positive (tensor edges carry a norm, which has no sign: grey); edge width: its size;
- in a comparison (`diff`) the fill holds the change of a node's gradient norm instead.
"""

import math

from .._format import is_scalar, magnitude, scalar

FONT = "Helvetica,Arial,sans-serif"
VALUE = "#0072B2"  # Okabe-Ito blue
GRAD = "#D55E00"  # Okabe-Ito vermillion
TEXT, MUTED, PENDING = "#222222", "#666666", "#9a9a9a"
BORDER = "#555555"
ACTIVE_FILL = "#F0E442"  # Okabe-Ito yellow
FLAG_COLORS = {"vanishing": "#E69F00", "exploding": "#CC79A7", "NaN": "#000000", "Inf": "#000000"}
ANOMALY = FLAG_COLORS["NaN"]
HEAT_LOW, HEAT_HIGH = "#f7f7f7", "#fdae61"
#: BrBG, light half only so that text on it stays readable: teal shrank, brown grew.
SHRANK, GREW, SAME = "#5ab4ac", "#d8b365", "#f5f5f5"

#: Node style per role: shape and fill tell the role; every border is the same grey
#: until a warning colours it.
STYLES = {
    "input": dict(shape="box", style="filled,diagonals", fillcolor="#d6e6f4"),
    "param": dict(shape="box", style="filled", fillcolor="#f1e6cf"),
    "const": dict(shape="ellipse", style="filled,dashed", fillcolor="#eeeeee", margin="0.02,0.02"),
    "gate": dict(shape="box", style="rounded,filled", fillcolor="#ffffff"),
    "loss": dict(shape="box", style="rounded,filled", fillcolor="#f6d5e5"),
    "block": dict(shape="box3d", style="filled", fillcolor="#e4ddf0"),
    "not_run": dict(shape="box", style="rounded,dashed", fillcolor="#ffffff"),
}
ROLE_NAMES = {
    "input": "input",
    "param": "parameter",
    "const": "constant",
    "gate": "gate",
    "loss": "loss / output",
    "block": "collapsed block",
    "not_run": "not run in the last forward",
}


def mix(light, dark, t):
    """The colour a fraction t of the way from `light` to `dark` (hex strings)."""
    a = [int(light[i : i + 2], 16) for i in (1, 3, 5)]
    b = [int(dark[i : i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(x + (y - x) * t):02x}" for x, y in zip(a, b))


def change_color(log_ratio, decades):
    """Fill for a gradient norm that changed by 10**log_ratio, on a scale of +-decades."""
    t = min(abs(log_ratio) / decades, 1.0)
    return mix(SAME, GREW if log_ratio > 0 else SHRANK, t)


class GradientScale:
    """Edge width and colour from a gradient's magnitude, on one log scale for the whole
    drawing: the largest magnitude maps to a thick dark edge and the smallest non-zero one
    (or one 100 times smaller, if that is smaller still) to a thin pale one, so a drawing
    compares gradients across the graph at a glance.

    `signed` graphs (every edge carries one scalar) colour by sign on PRGn: purple for a
    negative gradient, green for a positive one. Tensor edges carry norms, which are never
    negative: grey, darker for larger. Exact zeros are thin and light, NaN and Inf black.
    """

    MIN_WIDTH, MAX_WIDTH = 1.0, 7.0
    #: Gradients within a factor of 100 of each other should not look a world apart.
    MIN_DECADES = 2.0
    ZERO, NONFINITE = "#cccccc", "#000000"
    PALE_NEGATIVE, NEGATIVE = "#c2a5cf", "#762a83"
    PALE_POSITIVE, POSITIVE = "#a6dba0", "#1b7837"
    PALE_NORM, NORM = "#bdbdbd", "#404040"

    def __init__(self, values, signed):
        self.signed = signed
        logs = [math.log10(m) for m in map(magnitude, values) if 0 < m < math.inf]
        self.high, self.smallest = max(logs, default=0.0), min(logs, default=0.0)
        self.low = min(self.smallest, self.high - self.MIN_DECADES)

    def position(self, value):
        """Where |value| sits on the scale, 0 (smallest) to 1 (largest)."""
        m = magnitude(value)
        return min(max((math.log10(m) - self.low) / (self.high - self.low), 0.0), 1.0)

    def width(self, value):
        m = magnitude(value)
        if not 0 < m < math.inf:
            return self.MAX_WIDTH if m == math.inf or math.isnan(m) else self.MIN_WIDTH * 0.7
        return round(self.MIN_WIDTH + (self.MAX_WIDTH - self.MIN_WIDTH) * self.position(value), 2)

    def color(self, value):
        m = magnitude(value)
        if math.isnan(m) or m == math.inf:
            return self.NONFINITE
        if m == 0:
            return self.ZERO
        t = 0.25 + 0.75 * self.position(value)  # even the smallest gradient stays visible
        if not (self.signed and is_scalar(value)):
            return mix(self.PALE_NORM, self.NORM, t)
        if scalar(value) < 0:
            return mix(self.PALE_NEGATIVE, self.NEGATIVE, t)
        return mix(self.PALE_POSITIVE, self.POSITIVE, t)

    def samples(self):
        """Magnitudes for the legend: the smallest and largest gradient drawn, and the
        middle between them when they differ."""
        if self.high == self.smallest:
            return [10**self.high]
        return [10**x for x in (self.smallest, (self.smallest + self.high) / 2, self.high)]
