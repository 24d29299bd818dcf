"""What the ONNX and torch converters share for recurrent layers: the order of the LSTM's
gate blocks in each convention, the weights in the course's layout, a zero initial state,
and the gates an imported RNN or LSTM layer becomes.

The course (graphnet's rnn and lstm gates) keeps Wx (D, kH), Wh (H, kH) and one bias
(kH,), k = 4 for the LSTM with its blocks in the order i, f, o, g, and the cell state
starts at zero. ONNX and torch keep W (kH, D), R (kH, H), an input and a recurrent bias,
their blocks in the orders below.
"""

from typing import Optional

import numpy as np

from ._common import Pending, Sliced, build_gate, unsupported

#: The LSTM's gate blocks in each convention's order (ONNX calls g 'c').
LSTM_ORDER = {"course": "ifog", "onnx": "iofg", "torch": "ifgo"}


def block_order(source: str, target: str):
    """For each block of `target`'s order, its position in `source`'s."""
    return [LSTM_ORDER[source].index(gate) for gate in LSTM_ORDER[target]]


class Zeros(Pending):
    """A tensor of zeros (torch's zeros, zeros_like): read as an absent initial state or
    bias by a recurrent layer; graphnet has no gate that makes it anywhere else."""

    def __init__(self, op: str, name: str):
        self.op, self.name = op, name

    def materialize(self, consumer: str):
        raise unsupported(
            self.op,
            self.name,
            f"graphnet reads a tensor of zeros only as the initial state or bias of an "
            f"RNN or LSTM, not as an input of {consumer}",
        )


class Lazy(Pending):
    """A node built by `make()` only when a consumer reads it (an unrolled LSTM's hidden
    states, when only its last cell state is read), so that nothing dangles."""

    def __init__(self, make):
        self.make, self.node = make, None

    def materialize(self, consumer: str = ""):
        if self.node is None:
            self.node = self.make()
        return self.node


class Weight:
    """A recurrent weight or bias as the source holds it: a constant array (made a param
    named `name`, as training changes it) or a node of the graph (gates rearrange it)."""

    def __init__(self, value, name: str):
        self.value, self.name = value, name

    @property
    def constant(self) -> bool:
        return isinstance(self.value, np.ndarray)


class RecurrentLayer:
    """One RNN or LSTM layer from a source node `name` (for errors and node names):
    `op` is the gate ('rnn' or 'lstm'), `order` the source's convention ('onnx' or
    'torch')."""

    def __init__(self, graph, source_op: str, name: str, op: str, order: str):
        self.graph, self.source_op, self.name = graph, source_op, name
        self.op, self.order = op, order
        self.blocks = 4 if op == "lstm" else 1
        self.last_hidden: Optional[Lazy] = None
        self.last_cell: Optional[Lazy] = None

    def refuse(self, why: str):
        return unsupported(self.source_op, self.name, why)

    def _reordered(self, value, H: int, axis: int, suffix: str):
        """The source's gate blocks along `axis` put in the course's order."""
        if self.blocks == 1:
            return value
        order = block_order(self.order, "course")
        if isinstance(value, np.ndarray):
            blocks = np.split(value, 4, axis=axis)
            return np.concatenate([blocks[k] for k in order], axis=axis)
        parts = [
            build_gate(
                self.graph,
                "slice",
                [value],
                f"{self.name}/{suffix}_{gate}",
                key=(slice(None),) * axis + (slice(k * H, (k + 1) * H),),
            )
            for gate, k in zip(LSTM_ORDER["course"], order)
        ]
        return build_gate(self.graph, "concat", parts, f"{self.name}/{suffix}", axis=axis)

    def matrix(self, weight: Weight, H: int, what: str):
        """W (kH, D) or R (kH, H) in the source's layout -> (D, kH) in the course's."""
        # H comes from the source's attributes: checked against the weight it describes
        # before anything (the zero bias, the zero state) is sized by it.
        shape = weight.value.shape if weight.constant else weight.value.static_shape
        rows = shape[0] if shape else None
        if not isinstance(H, int) or H < 1 or rows not in (None, self.blocks * H):
            raise self.refuse(
                f"hidden size {H!r} does not describe {weight.name}'s {rows} rows "
                f"({self.blocks} x the hidden size)"
            )
        if weight.constant:
            value = self._reordered(weight.value.T, H, 1, what)
            return self.graph.param(weight.name, value, dtype=value.dtype)
        transposed = build_gate(
            self.graph, "transpose", [weight.value], f"{self.name}/{what}_T", axes=(1, 0)
        )
        return self._reordered(transposed, H, 1, what)

    def bias(self, biases, H: int, dtype):
        """The course's one bias (kH,): the sum of the source's input and recurrent
        biases (Weights of shape (kH,); none for a layer without), one param when they
        are constants."""
        if not biases:
            return self.graph.const(np.zeros(self.blocks * H, dtype), name=f"{self.name}/b")
        if all(b.constant for b in biases):
            value = self._reordered(sum(b.value for b in biases), H, 0, "b")
            return self.graph.param(biases[0].name, value, dtype=value.dtype)
        total = biases[0].value if not biases[0].constant else self.graph.const(biases[0].value)
        for i, b in enumerate(biases[1:]):
            other = b.value if not b.constant else self.graph.const(b.value)
            total = build_gate(self.graph, "add", [total, other], f"{self.name}/b_sum{i}")
        return self._reordered(total, H, 0, "b")

    def zero_state(self, x, H: int, dtype, what: str = "h0"):
        """h0 (or c0) = 0 (N, H) for x (N, T, D) of any batch size: a where gate on a
        false mask takes its shape (N, 1) from x and its zeros from a constant."""
        first = build_gate(
            self.graph, "slice", [x], f"{self.name}/{what}_x", key=(slice(None), 0, slice(0, 1))
        )
        mask = self.graph.const(np.zeros((1, H), np.int64), name=f"{self.name}/no_{what}")
        zeros = self.graph.const(np.zeros(H, dtype), name=f"{self.name}/{what}_zeros")
        return build_gate(self.graph, "where", [mask, first, zeros], f"{self.name}/{what}")

    def build(self, x, h0, Wx, Wh, b, time_first: bool, out_name: str, cell=None, steps=None):
        """The gate on x (time first or batch first); returns every hidden state in x's
        layout, (T, N, H) or (N, T, H), as the node `out_name`. An LSTM whose initial
        cell state `cell` is given (None: zero) or whose last one is read (`cell` True)
        is unrolled into lstm_step gates over the `steps` steps (None: x's length); then
        the hidden states, and `self.last_hidden` and `self.last_cell` (N, H), are Lazy:
        built only if something reads them."""
        if time_first:
            x = build_gate(self.graph, "transpose", [x], f"{self.name}/batch_first", axes=(1, 0, 2))
        H = Wh.static_shape[0]
        if h0 is None:
            h0 = self.zero_state(x, H, x.dtype)
        gate_name = f"{self.name}/{self.op}" if time_first else out_name

        def batch_first_to_x(out):
            if not time_first:
                return out
            return build_gate(self.graph, "transpose", [out], out_name, axes=(1, 0, 2))

        if cell is None:
            return batch_first_to_x(build_gate(self.graph, self.op, [x, h0, Wx, Wh, b], gate_name))
        c0 = self.zero_state(x, H, x.dtype, "c0") if cell is True else cell
        if steps is None and x.static_shape is not None:
            steps = x.static_shape[1]
        state = self._unrolled(x, h0, c0, Wx, Wh, b, steps)
        self.last_hidden = Lazy(lambda: state(steps - 1, 0))
        self.last_cell = Lazy(lambda: state(steps - 1, 1))

        def every_hidden_state():  # each h_t (N, H) as (N, 1, H), concatenated
            hidden = [
                build_gate(
                    self.graph,
                    "slice",
                    [state(t, 0)],
                    f"{self.name}/h_{t + 1}_at_t",
                    key=(slice(None), None),
                )
                for t in range(steps)
            ]
            return build_gate(self.graph, "concat", hidden, gate_name, axis=1)

        return Lazy(lambda: batch_first_to_x(every_hidden_state()))

    def _unrolled(self, x, h, c, Wx, Wh, b, steps):
        """lstm_step gates, one per step (graphnet's lstm gate starts the cell state at
        zero and outputs no cell state); returns state(t, k): h (k = 0) or c (k = 1)
        after step t, a slice gate built once, when first asked for."""
        if not steps:
            raise self.refuse(
                f"a cell state given or read, on {steps if steps == 0 else 'an unknown number of'} "
                "steps: graphnet's lstm gate starts the cell state at zero and outputs the "
                "hidden states only, and its lstm_step gates need the number of steps"
            )
        g, made = self.graph, {}

        def state(t, k):
            if (t, k) not in made:
                made[t, k] = build_gate(
                    g, "slice", [steps_made[t]], f"{self.name}/{'hc'[k]}_{t + 1}", key=(k,)
                )
            return made[t, k]

        steps_made = []
        for t in range(steps):
            x_t = build_gate(g, "slice", [x], f"{self.name}/x_{t}", key=(slice(None), t))
            inputs = [x_t, h, c] if t == 0 else [x_t, state(t - 1, 0), state(t - 1, 1)]
            steps_made.append(
                build_gate(g, "lstm_step", [*inputs, Wx, Wh, b], f"{self.name}/step_{t}")
            )
        return state

    def last_state(self, out, time_axis: int, directions_axis: int, name: str):
        """h_T from every hidden state `out` (time on `time_axis`), with an axis of size 1
        (the source's count of directions or layers) inserted at `directions_axis`."""
        if self.last_hidden is not None:
            return self.with_new_axis(self.last_hidden, directions_axis, name)
        key: list = [slice(None)] * 3
        key[time_axis] = -1
        return Sliced(self.graph, out, key, name).unsqueezed(self.source_op, name, directions_axis)

    def with_new_axis(self, value, axis: int, name: str):
        """`value` (a node or a Lazy one) with a new axis of size 1 at `axis`: a Sliced
        (which folds with later indexing), or for a Lazy a Lazy."""
        if isinstance(value, Lazy):
            return Lazy(
                lambda: self.with_new_axis(value.materialize(name), axis, name).materialize()
            )
        return Sliced.of(self.graph, value, self.source_op, name).unsqueezed(
            self.source_op, name, axis
        )
