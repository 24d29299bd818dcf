"""The one log scale that sizes and colours gradients in a drawing."""
import math

from .._format import is_scalar, magnitude, scalar


def mix(light, dark, t):
    """The colour a fraction t of the way from `light` to `dark` (hex strings)."""
    a = [int(light[i:i + 2], 16) for i in (1, 3, 5)]
    b = [int(dark[i:i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(x + (y - x) * t):02x}" for x, y in zip(a, b))


class GradientScale:
    """Edge width and colour from a gradient's magnitude, on one log scale for the whole
    drawing: the largest magnitude maps to a thick dark edge and the smallest non-zero one
    (or one 100 times smaller, if that is smaller still) to a thin pale one, so a drawing
    compares gradients across the graph at a glance.

    `signed` graphs (every edge carries one scalar) use a diverging map centred on 0:
    blue for negative gradients, red for positive ones. Tensor graphs have only norms,
    which are never negative, so they get one sequential red map.
    """

    MIN_WIDTH, MAX_WIDTH = 1.0, 7.0
    #: Gradients within a factor of 100 of each other should not look a world apart.
    MIN_DECADES = 2.0
    ZERO = "#b0b0b0"
    NONFINITE = "#7b2cbf"
    PALE_RED, RED = "#f4a582", "#b2182b"
    PALE_BLUE, BLUE = "#92c5de", "#2166ac"

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
        if self.signed and scalar(value) < 0:
            return mix(self.PALE_BLUE, self.BLUE, t)
        return mix(self.PALE_RED, self.RED, t)

    def text_color(self, value):
        """Label text: always the dark end of the hue, readable on white."""
        if self.signed and is_scalar(value) and scalar(value) < 0:
            return self.BLUE
        return self.NONFINITE if math.isnan(magnitude(value)) else self.RED

    def samples(self):
        """Magnitudes for the legend: the smallest and largest gradient drawn, and the
        middle between them when they differ."""
        if self.high == self.smallest:
            return [10 ** self.high]
        return [10 ** x for x in (self.smallest, (self.smallest + self.high) / 2, self.high)]
