"""What the ONNX and torch converters share for recurrent layers: the order of the LSTM's
gate blocks in each convention, the weights in the course's layout, a zero initial state,
and the gates an imported RNN or LSTM layer becomes.

The course (graphnet's rnn and lstm gates) keeps Wx (D, kH), Wh (H, kH) and one bias
(kH,), k = 4 for the LSTM with its blocks in the order i, f, o, g, and the cell state
starts at zero. ONNX and torch keep W (kH, D), R (kH, H), an input and a recurrent bias,
their blocks in the orders below.
"""

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


class Unavailable(Pending):
    """An output of a source op that graphnet's gates do not compute (an LSTM's last cell
    state): an error naming it when something reads it."""

    def __init__(self, op: str, name: str, why: str):
        self.op, self.name, self.why = op, name, why

    def materialize(self, consumer: str):
        raise unsupported(self.op, self.name, f"{self.why}, and {consumer} reads it")


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

    def zero_state(self, x, H: int, dtype):
        """h0 = 0 (N, H) for x (N, T, D) of any batch size: a where gate on a false
        mask takes its shape (N, 1) from x and its zeros from a constant."""
        first = build_gate(
            self.graph, "slice", [x], f"{self.name}/x_first", key=(slice(None), 0, slice(0, 1))
        )
        mask = self.graph.const(np.zeros((1, H), np.int64), name=f"{self.name}/no_state")
        zeros = self.graph.const(np.zeros(H, dtype), name=f"{self.name}/zeros")
        return build_gate(self.graph, "where", [mask, first, zeros], f"{self.name}/h0")

    def build(self, x, h0, Wx, Wh, b, time_first: bool, out_name: str):
        """The gate on x (time first or batch first); returns every hidden state in x's
        layout, (T, N, H) or (N, T, H), as the node `out_name`."""
        if time_first:
            x = build_gate(self.graph, "transpose", [x], f"{self.name}/batch_first", axes=(1, 0, 2))
        if h0 is None:
            h0 = self.zero_state(x, Wh.static_shape[0], x.dtype)
        gate_name = f"{self.name}/{self.op}" if time_first else out_name
        out = build_gate(self.graph, self.op, [x, h0, Wx, Wh, b], gate_name)
        if time_first:
            out = build_gate(self.graph, "transpose", [out], out_name, axes=(1, 0, 2))
        return out

    def last_state(self, out, time_axis: int, directions_axis: int, name: str) -> Sliced:
        """h_T from every hidden state `out` (time on `time_axis`), with an axis of size 1
        (the source's count of directions or layers) inserted at `directions_axis`."""
        key: list = [slice(None)] * 3
        key[time_axis] = -1
        return Sliced(self.graph, out, key, name).unsqueezed(self.source_op, name, directions_axis)
