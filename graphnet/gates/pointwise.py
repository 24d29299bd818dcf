"""More elementwise gates: negation, powers, roots and absolute values, the min gate (the
max gate's pair), clipping, comparisons, where, and the smooth activations (leaky relu, GELU,
softplus). Each output entry depends on the same entry of each input, so each local rule
is a multiplication by a local derivative, entry by entry."""

import math
from typing import NamedTuple

import numpy as np

from .base import Gate, GateError, broadcast_shape, mask_summary, real, register_gate
from ..kernels import _C
from .elementwise import Maximum, UnaryGate, threaded_array, threaded_pair


@register_gate
class Negate(UnaryGate):
    """f = -x."""

    op = "negate"
    formula = "−{0}"
    rule = "a negate gate flips the sign of the upstream gradient"
    derivatives = ("−1",)

    def forward(self, x):
        return -x, None

    def backward(self, dout, cache, needs):
        return (-dout,)


@register_gate
class Pow(UnaryGate):
    """f = x^p for a constant exponent p. df/dx = p x^(p-1)."""

    op = "pow"
    formula = "{0}^{exponent}"
    rule = "a power gate scales the upstream gradient by {exponent}·{0}^({exponent}−1)"
    derivatives = ("{exponent}·{0}^({exponent}−1)",)

    def __init__(self, exponent):
        self.exponent = real("exponent", exponent, math.isfinite, "a finite number")

    def attrs(self):
        return {"exponent": self.exponent}

    def forward(self, x):
        if self.exponent == 3:  # numpy's power takes the slow general path for 3: 18x
            return x * x * x, x
        return x**self.exponent, x

    def backward(self, dout, cache, needs):
        if self.exponent == 0:  # x^0 is 1 everywhere, also at 0 where x^-1 is inf
            return (np.zeros_like(dout * cache),)
        return (dout * self.exponent * cache ** (self.exponent - 1),)


@register_gate
class Sqrt(UnaryGate):
    """f = √x. df/dx = 1 / (2√x), infinite at 0."""

    op = "sqrt"
    formula = "√{0}"
    rule = "sqrt: d{f}/d{0} = 1/(2·{f}), large where {0} is near 0"
    derivatives = ("1/(2·{f})",)

    def forward(self, x):
        out = np.sqrt(x)
        return out, out

    def backward(self, dout, cache, needs):
        return (dout / (2 * cache),)


@register_gate
class Abs(UnaryGate):
    """f = |x|. df/dx = sign(x), 0 at 0."""

    op = "abs"
    formula = "|{0}|"
    rule = "abs passes the upstream gradient where {0} > 0, flips it where {0} < 0, 0 at 0"
    derivatives = ("sign({0})",)

    def forward(self, x):
        return np.abs(x), x

    def backward(self, dout, cache, needs):
        return (dout * np.sign(cache),)


@register_gate
class Minimum(Maximum):
    """f = min(a, b) elementwise: routes the gradient to the smaller input, like the max
    gate routes it to the larger; on a tie the first input `a` gets it, every time."""

    op = "min"
    formula = "min({0}, {1})"
    rule = (
        "a min gate routes: the smaller input receives the whole upstream gradient, the "
        "other receives 0 (a tie goes to {0})"
    )
    derivatives = ("1 if {0} ≤ {1} else 0", "1 if {1} < {0} else 0")

    def forward(self, a, b):
        a_wins = a <= b
        return np.minimum(a, b), a_wins  # Maximum.backward routes by a_wins

    def summarize_cache(self, cache, input_names):
        a, b = input_names
        return [mask_summary(cache, f"mask {a} <= {b}")]


@register_gate
class Clip(UnaryGate):
    """f = x limited to [low, high] (either may be None: no limit on that side). The
    gradient passes where low <= x <= high, the limits included as in PyTorch's clamp;
    with limits_pass=False only strictly inside them, as in its hardtanh and relu6."""

    op = "clip"
    formula = "clip({0}, low, high)"
    rule = (
        "a clip gate passes the upstream gradient where {0} is within [low, high] (at the "
        "limits themselves as limits_pass says), blocks it elsewhere"
    )
    derivatives = ("1 if {0} is within [low, high] else 0",)

    def __init__(self, low=None, high=None, limits_pass=True):
        def limit(what, value):
            return (
                None
                if value is None
                else real(what, value, lambda v: not math.isnan(v), "a number or None")
            )

        self.low, self.high = limit("low", low), limit("high", high)
        if self.low is None and self.high is None:
            raise GateError("clip needs low, high or both")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise GateError(f"clip needs low <= high, got low={self.low}, high={self.high}")
        if not isinstance(limits_pass, (bool, np.bool_)):
            raise GateError(f"clip's limits_pass must be True or False, got {limits_pass!r}")
        self.limits_pass = bool(limits_pass)

    def attrs(self):
        return {"low": self.low, "high": self.high, "limits_pass": self.limits_pass}

    def forward(self, x):
        inside = np.ones(np.shape(x), dtype=bool)
        if self.low is not None:
            inside &= (x >= self.low) if self.limits_pass else (x > self.low)
        if self.high is not None:
            inside &= (x <= self.high) if self.limits_pass else (x < self.high)
        return np.clip(x, self.low, self.high), inside

    def backward(self, dout, cache, needs):
        return (dout * cache,)

    def summarize_cache(self, cache, input_names):
        within = "<=" if self.limits_pass else "<"
        return [mask_summary(cache, f"mask low {within} {input_names[0]} {within} high")]


@register_gate
class Compare(Gate):
    """f = 1 where a (relation) b, else 0: a mask of int8 for where, multiply or a loss;
    a and b broadcast. A comparison has no gradient: its node needs none, and neither
    input receives one through it."""

    op = "compare"
    inputs = ("a", "b")
    formula = "{0} {relation} {1}"
    rule = "a compare gate makes a mask: no gradient passes through it"
    derivatives = ("none", "none")
    output_dtype = np.dtype(np.int8)
    RELATIONS = {
        ">": np.greater,
        ">=": np.greater_equal,
        "<": np.less,
        "<=": np.less_equal,
        "==": np.equal,
        "!=": np.not_equal,
    }

    def __init__(self, relation=">"):
        if relation not in self.RELATIONS:
            raise GateError(
                f"compare's relation must be one of {list(self.RELATIONS)}, got {relation!r}"
            )
        self.relation = relation

    def attrs(self):
        return {"relation": self.relation}

    def shape(self, a, b):
        return broadcast_shape(a, b)

    def forward(self, a, b):
        return self.RELATIONS[self.relation](a, b).astype(np.int8), None

    def backward(self, dout, cache, needs):
        return None, None


@register_gate
class Where(Gate):
    """f = a where mask is true (nonzero), b elsewhere; mask, a and b broadcast. The mask
    is an integer input (a constant array becomes a const node) and gets no gradient."""

    op = "where"
    inputs = ("mask", "a", "b")
    integer_inputs = (0,)
    formula = "{1} where {0} else {2}"
    rule = (
        "a where gate routes by its mask: {1} receives the upstream gradient where the "
        "mask is true, {2} where it is false"
    )
    derivatives = ("none (the mask)", "1 where {0} else 0", "0 where {0} else 1")

    def shape(self, mask, a, b):
        return broadcast_shape(mask, a, b)

    def forward(self, mask, a, b):
        keep = np.asarray(mask) != 0
        return np.where(keep, a, b), keep

    def backward(self, dout, cache, needs):
        keep = cache
        da = np.where(keep, dout, 0) if needs[1] else None
        db = np.where(keep, 0, dout) if needs[2] else None
        return None, da, db

    def summarize_cache(self, cache, input_names):
        return [mask_summary(cache, f"mask {input_names[0]}")]


@register_gate
class LeakyRelu(UnaryGate):
    """f = x where x > 0, alpha·x elsewhere: a relu that leaks a little gradient."""

    op = "leaky_relu"
    formula = "max({0}, α·{0})"
    rule = (
        "a leaky relu passes the upstream gradient where {0} > 0 and scales it by α "
        "elsewhere (also at 0)"
    )
    derivatives = ("1 if {0} > 0 else α",)

    def __init__(self, alpha=0.01):
        self.alpha = real("alpha", alpha, math.isfinite, "a finite number")

    def attrs(self):
        return {"alpha": self.alpha}

    @property
    def kernel(self):
        """The C++ pointwise kernel (cpp/pointwise.h) and its alpha that compute this gate."""
        return "leaky_relu", self.alpha

    def forward(self, x):
        if threaded_array(x):  # one C++ pass
            return _C.pointwise_forward("leaky_relu", x, self.alpha), x
        return np.where(x > 0, x, self.alpha * x), x

    def backward(self, dout, cache, needs):
        if threaded_pair(dout, cache):
            return (_C.pointwise_backward("leaky_relu", dout, cache, self.alpha),)
        return (np.where(cache > 0, dout, self.alpha * dout),)

    def summarize_cache(self, cache, input_names):
        return [f"saved {input_names[0]} {np.shape(cache)}"]


_erf = np.frompyfunc(math.erf, 1, 1)  # numpy has no erf: for what the C++ kernel does not take
_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_TANH_CUBIC = 0.044715


@register_gate
class Gelu(UnaryGate):
    """f = x·Φ(x), Φ the standard normal's CDF (approximate='tanh': Φ(x) taken as
    (1 + tanh(√(2/π)(x + 0.044715x³)))/2, as GPT-2 did). df/dx = Φ(x) + x·φ(x).

    On float arrays the forward's kernel writes that slope too, in the same pass (Φ and φ
    share their exponential), and saves it (a GeluSlope) instead of x: backward is then
    dout times it, the bits of the kernel that recomputes it from x (which costs as much
    as the forward). Eval mode saves x, as do the numpy path's numbers: a backward after
    those recomputes the slope."""

    op = "gelu"
    formula = "{0}·Φ({0})"
    rule = (
        "a GELU gate scales the upstream gradient by Φ({0}) + {0}·φ({0}): about 1 for "
        "large {0}, 0 for very negative {0}"
    )
    derivatives = ("Φ({0}) + {0}·φ({0})",)

    def __init__(self, approximate="none"):
        if approximate not in ("none", "tanh"):
            raise GateError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def attrs(self):
        return {"approximate": self.approximate}

    @property
    def kernel(self):
        """The C++ pointwise kernel (cpp/pointwise.h) and its alpha that compute this gate."""
        return ("gelu_tanh" if self.approximate == "tanh" else "gelu"), 0.0

    def forward(self, x):
        if threaded_array(x):  # C++: Φ by a vectorised erfc, and the slope, one pass
            out, slope = _C.pointwise_forward_slope(self.kernel[0], x)
            return out, GeluSlope(slope)
        return self.eval_forward(x)

    def eval_forward(self, x):
        """The forward without the slope: x saved."""
        if threaded_array(x):
            return _C.pointwise_forward(self.kernel[0], x), x
        if self.approximate == "tanh":
            return 0.5 * x * (1 + self._tanh(x)), x
        return x * self._cdf(x), x

    def backward(self, dout, cache, needs):
        if type(cache) is GeluSlope:
            return (dout * cache.slope,)
        x = cache
        if threaded_pair(dout, x):
            return (_C.pointwise_backward(self.kernel[0], dout, x),)
        if self.approximate == "tanh":
            t = self._tanh(x)
            slope = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * _SQRT_2_OVER_PI * (
                1 + 3 * _TANH_CUBIC * x * x
            )
        else:
            slope = self._cdf(x) + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
        return (dout * slope,)

    @staticmethod
    def _cdf(x):
        return 0.5 * (1 + np.asarray(_erf(x / math.sqrt(2)), dtype=np.result_type(x)))

    @staticmethod
    def _tanh(x):
        return np.tanh(_SQRT_2_OVER_PI * (x + _TANH_CUBIC * x**3))

    def summarize_cache(self, cache, input_names):
        if type(cache) is GeluSlope:
            return [
                f"saved the slope Φ({input_names[0]}) + {input_names[0]}·φ({input_names[0]}) "
                f"{np.shape(cache.slope)}"
            ]
        return [f"saved {input_names[0]} {np.shape(cache)}"]


class GeluSlope(NamedTuple):
    """A GELU gate's cache from its forward kernel: df/dx at each entry of x."""

    slope: np.ndarray


@register_gate
class Softplus(UnaryGate):
    """f = ln(1 + e^x), a smooth relu. df/dx = σ(x), from the saved x."""

    op = "softplus"
    formula = "ln(1 + e^{0})"
    rule = "softplus: d{f}/d{0} = σ({0}), a soft version of relu's 0/1 gate"
    derivatives = ("σ({0})",)
    kernel = ("softplus", 0.0)  # as Gelu.kernel

    def forward(self, x):
        if threaded_array(x):
            return _C.pointwise_forward("softplus", x), x
        return np.logaddexp(0, x), x  # never overflows

    def backward(self, dout, cache, needs):
        x = cache
        if threaded_pair(dout, x):
            return (_C.pointwise_backward("softplus", dout, x),)
        e = np.exp(-np.abs(x))  # σ(x) without overflow, as the sigmoid gate computes it
        return (dout * np.where(x >= 0, e.dtype.type(1), e) / (1 + e),)

    def summarize_cache(self, cache, input_names):
        return [f"saved {input_names[0]} {np.shape(cache)}"]
