"""dropout -> mean over the trailing axes (a student's conv -> activation -> dropout ->
global average pool): one backward step.

Gate by gate, the mean's backward writes dout / n to every averaged unit, an array of the
dropout's size, and the dropout's backward reads it back with its mask and writes its own
gradient. The fused backward step has one C++ pass read the mask and dout / n, one number
per row (Mean.divided: the numbers the mean's backward spreads), and write the dropout's
gradient (`_C.dropout_backward_rows`): the same products of the same numbers, bit for bit,
and no array of the dropout's size but that gradient. The mean's gradient (the dropout's
output's) is deferred to the mean's gate.

The forward runs the two gates: a kernel that drew the mask and averaged each row of the
output in cache, never writing the output, took the two kernels' time (the hash behind
each unit's draw, not memory, bounds the dropout's pass).

Where the kernel does not apply, the step runs the two gates: eval mode (no mask: the
dropout's gradient is the mean's), a mean over other axes, a gradient that is not a float
array or not of the mask's dtype.
"""

import numpy as np

from ..gates.tensor import _kept_leading_axes
from ..kernels import _C
from ..kernels.norm import native
from .base import PairPass, register_pass


@register_pass
class DropoutMean(PairPass):
    def takes(self, steps):
        return lambda mean, dropout: mean.op == "mean" and dropout.op == "dropout"

    def fuse_forward(self, steps):
        return steps

    def backward_run(self, dropout, mean):
        def run(store, needs):
            dout, shape = store.grads[mean.index], store.cache(mean.index)
            divided, cache = mean.gate.divided(dout, shape), store.cache(dropout.index)
            if not _kernel_takes(mean, divided, cache[1]):
                store.grads[dropout.index] = mean.gate.backward(dout, shape, (True,))[0]
                return dropout.gate.backward(store.grads[dropout.index], cache, needs)
            store.defer("grad", dropout.index, lambda: mean.gate.backward(dout, shape, (True,))[0])
            return (_C.dropout_backward_rows(divided, cache[1]),)

        return run


def _kernel_takes(mean, divided, mask):
    """Whether _C.dropout_backward_rows computes the dropout's gradient from the mean's
    dout / n (`divided`, None if not a float array) and the dropout's mask (None in eval
    mode)."""
    return (
        divided is not None
        and type(mask) is np.ndarray
        and mask.flags.c_contiguous
        and mask.dtype == divided.dtype
        and native(mask)
        and _kept_leading_axes(mean.gate.axis, mask.ndim) is not None
    )
