"""The course's Transformer captioning model and its layers (CS231n assignment 3,
Transformer_Captioning, 2021-2024 editions), built as graphs of graphnet's gates.

The course writes them in PyTorch; here they take and return numpy arrays, keep the
course's names, arguments and parameter layout (`model.params` keyed as the course's
`named_parameters()`, in its order; a Linear's weight is (out, in)), and are graphs a
student can draw and step through, every node with its value and gradient:

    nn.Linear(x)          x @ weightᵀ + bias: a transpose node "<name>.weight_T" and a
                          temporal_affine (or affine) node "<name>"
    MultiHeadAttention    query, key and value through their Linear; the heads sliced
                          from the features and stacked on a leading axis (H, N, L, E/H)
                          (slices and a concat: a reshape could not follow the data's
                          varying N and L); scores = q·kᵀ / √(E/H); where(mask, scores,
                          -1e30); softmax; where(mask, softmax, 0) (a query allowed no
                          key gets zero weights, not NaN); dropout on the attention
                          weights; weights·v; the heads side by side again (N, S, E),
                          through "proj"
    decoder layer         norm1(x + dropout1(self_attn(x, x, x, causal mask))),
                          norm2(x + dropout2(multihead_attn(x, memory, memory))),
                          norm3(x + dropout3(linear2(dropout(relu(linear1(x)))))):
                          the course's post-norm layer

Dropout has PyTorch's meaning (p = the probability of dropping a unit); the models start
in training mode, as a torch module does (dropout on); `.eval()` turns it off.
"""

import math
from typing import Any, Dict, Iterator, List, Mapping, NamedTuple, Optional, Tuple

import numpy as np

from ..core.graph import Graph
from ..core.node import Node
from ..errors import GraphError
from ..kernels.geometry import MEMORY_BYTES
from .classifiers import GraphModel

__all__ = [
    "positional_encoding",
    "PositionalEncoding",
    "MultiHeadAttention",
    "TransformerDecoderLayer",
    "CaptioningTransformer",
]

#: The feedforward width of the course's TransformerDecoderLayer.
DIM_FEEDFORWARD = 2048

#: A masked attention score. The course's masked_fill puts -inf there; a finite score gives
#: the same weights (its exponential underflows to 0) and keeps every value finite, for
#: anomaly mode and the drawing's statistics. A query allowed no key at all (where the
#: course's -inf gives NaN) gets zero weights, as from the attention gate and torch's
#: F.scaled_dot_product_attention: the mask applied again after the softmax.
MASKED_SCORE = -1e30


def positional_encoding(max_len: int, embed_dim: int) -> np.ndarray:
    """The course's sinusoid table (max_len, embed_dim), float64: row t alternates
    sin(t · 10000^(-i / D)) and cos(t · 10000^(-i / D)) for i = 0, 2, 4, ... (columns 2j
    and 2j + 1 share the exponent i = 2j)."""
    exponents = np.arange(0, embed_dim, 2) / embed_dim
    angles = np.arange(max_len)[:, None] * 10000.0**-exponents
    table = np.empty((max_len, embed_dim))
    table[:, 0::2] = np.sin(angles)
    table[:, 1::2] = np.cos(angles)
    return table


# ----- the course's parameter layout ----------------------------------------------------


def _join(prefix: str, name: str) -> str:
    """A param or node name inside a module, as named_parameters() spells it."""
    return f"{prefix}.{name}" if prefix else name


#: One param: its name, shape, kind ("linear.weight", "linear.bias", "norm.weight",
#: "norm.bias" or "embedding") and the fan-in of its layer (for nn.Linear's default init).
ParamSpec = Tuple[str, tuple, str, int]


def _linear_params(name: str, fan_in: int, fan_out: int) -> List[ParamSpec]:
    return [
        (f"{name}.weight", (fan_out, fan_in), "linear.weight", fan_in),
        (f"{name}.bias", (fan_out,), "linear.bias", fan_in),
    ]


def _norm_params(name: str, dim: int) -> List[ParamSpec]:
    return [
        (f"{name}.weight", (dim,), "norm.weight", dim),
        (f"{name}.bias", (dim,), "norm.bias", dim),
    ]


def _attention_params(name: str, embed_dim: int) -> List[ParamSpec]:
    # The course's order of the four nn.Linear: key, query, value, proj.
    return [
        spec
        for part in ("key", "query", "value", "proj")
        for spec in _linear_params(_join(name, part), embed_dim, embed_dim)
    ]


class Layout(NamedTuple):
    """The names one edition of the course gives a transformer layer's modules: its
    cross-attention, the feedforward's two Linears, activation (a gate) and dropout, and
    the suffixes that name, per sublayer (self-attention, cross-attention, feedforward),
    the dropout before the residual sum ("dropout" + suffix) and the norm after it
    ("norm" + suffix). The layers are built in the same order in every edition; only
    these names and the activation differ."""

    cross_attn: str
    fc1: str
    fc2: str
    activation: str
    ffn_dropout: str
    suffixes: Tuple[str, str, str]

    def dropout(self, sublayer: int) -> str:
        return "dropout" + self.suffixes[sublayer]

    def norm(self, sublayer: int) -> str:
        return "norm" + self.suffixes[sublayer]


#: The layouts by edition: 2021 (2021-2024: nn.TransformerDecoderLayer's names, ReLU) and
#: 2025 (its FeedForwardNetwork "ffn" with GELU, cross_attn, norm_self, ...).
LAYOUTS = {
    2021: Layout("multihead_attn", "linear1", "linear2", "relu", "dropout", ("1", "2", "3")),
    2025: Layout(
        "cross_attn", "ffn.fc1", "ffn.fc2", "gelu", "ffn.dropout", ("_self", "_cross", "_ffn")
    ),
}

#: The sublayers of a decoder layer (self-attention, cross-attention, feedforward) and of
#: an encoder layer (no cross-attention), as indices into a Layout's suffixes.
DECODER_SUBLAYERS = (0, 1, 2)
ENCODER_SUBLAYERS = (0, 2)


def _layer_params(
    name: str, dim: int, dim_feedforward: int, layout: Layout, decoder: bool
) -> List[ParamSpec]:
    """A decoder (or encoder) layer's params in the course's order: self-attention,
    cross-attention (decoder only), the feedforward's two Linears, the norms."""
    attentions = ("self_attn", layout.cross_attn) if decoder else ("self_attn",)
    sublayers = DECODER_SUBLAYERS if decoder else ENCODER_SUBLAYERS
    return [
        *(spec for attn in attentions for spec in _attention_params(_join(name, attn), dim)),
        *_linear_params(_join(name, layout.fc1), dim, dim_feedforward),
        *_linear_params(_join(name, layout.fc2), dim_feedforward, dim),
        *(spec for k in sublayers for spec in _norm_params(_join(name, layout.norm(k)), dim)),
    ]


def _initial_value(spec: ParamSpec, small_normal: bool) -> np.ndarray:
    """A param's first value from numpy's random state: norms at 1 and 0; with
    small_normal (CaptioningTransformer._init_weights) N(0, 0.02) weights and zero
    biases, else nn.Linear's default, U(-1/√fan_in, 1/√fan_in) for weight and bias."""
    _, shape, kind, fan_in = spec
    if kind.startswith("norm."):
        return np.ones(shape) if kind == "norm.weight" else np.zeros(shape)
    if small_normal:
        return np.zeros(shape) if kind == "linear.bias" else 0.02 * np.random.randn(*shape)
    bound = 1 / math.sqrt(fan_in)
    return np.random.uniform(-bound, bound, size=shape)


def _check_memory(shapes: List[tuple], where: str) -> None:
    """Refuse, before anything is drawn, arrays beyond the machine's memory."""
    drawn = sum(math.prod(shape) for shape in shapes) * 8  # drawn as float64
    if drawn > MEMORY_BYTES:
        raise ValueError(
            f"{where}: its arrays would take {drawn / 2**30:.3g} GiB, more than this "
            f"machine's {MEMORY_BYTES / 2**30:.3g} GiB of memory; choose smaller sizes"
        )


def _draw_params(g: Graph, specs: List[ParamSpec], small_normal: bool) -> None:
    """The params of `specs`, in order, their first values as _initial_value draws them."""
    for spec in specs:
        g.param(spec[0], _initial_value(spec, small_normal))


def _positive(where: str, arg: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{where}: {arg} must be a positive integer, got {value!r}")
    return int(value)


class Sizes(NamedTuple):
    """What every attention layer of a model shares: the embedding size E, the number of
    heads H (each takes E // H features) and the dropout probability."""

    embed_dim: int
    num_heads: int
    dropout: float


def _checked_sizes(embed_dim: Any, num_heads: Any, dropout: Any, where: str) -> Sizes:
    """embed_dim, num_heads (dividing it) and dropout, checked; a ValueError names the
    argument."""
    embed_dim = _positive(where, "embed_dim", embed_dim)
    num_heads = _positive(where, "num_heads", num_heads)
    if embed_dim % num_heads:
        raise ValueError(
            f"{where}: num_heads={num_heads} must divide the embedding size "
            f"{embed_dim} (each head takes embed_dim // num_heads features)"
        )
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(
            f"{where}: dropout (the probability of dropping a unit) must be in [0, 1), "
            f"got {dropout!r}"
        )
    return Sizes(embed_dim, num_heads, float(dropout))


# ----- the layers as gates ----------------------------------------------------------------


def _dropout(g: Graph, x: Node, p: float, name: str) -> Node:
    """nn.Dropout(p): no node at all when p is 0."""
    return g.dropout(x, p, name=name) if p else x


def _add_positions(g: Graph, x: Node, rows: Node, dropout: float, out: str) -> Node:
    """PositionalEncoding: dropout(x + the table's rows), the last node named `out`."""
    summed = g.add(x, rows, name=out if not dropout else f"{out}_sum")
    return _dropout(g, summed, dropout, out)


def _linear(g: Graph, x: Node, name: str, node: Optional[str] = None) -> Node:
    """nn.Linear on (N, D) or (N, T, D): x @ weightᵀ + bias, weight (out, in)."""
    weight_t = g.transpose(g[f"{name}.weight"], name=f"{name}.weight_T")
    layer = g.temporal_affine if len(x.static_shape or ()) == 3 else g.affine
    return layer(x, weight_t, g[f"{name}.bias"], name=node or name)


def _multi_head_attention(
    g: Graph,
    name: str,
    query: Node,
    key: Node,
    value: Node,
    mask: Optional[Node],
    sizes: Sizes,
    out: Optional[str] = None,
) -> Node:
    """The course's MultiHeadAttention `name` on (N, S, E) queries and (N, T, E) keys and
    values; mask (S, T), 0 where query s may not attend to key t. The output node is
    named `out` (default: `name`)."""
    E, H = sizes.embed_dim, sizes.num_heads
    d = E // H

    def heads(x: Node, part: str) -> Node:
        # One product for all heads, x @ weightᵀ + bias (N, L, E); head h takes features
        # h·d ... h·d + d - 1, stacked on a new leading axis: (H, N, L, d).
        part = _join(name, part)
        projected = _linear(g, x, part)
        per_head = [
            g.index(projected, (None, Ellipsis, slice(h * d, (h + 1) * d)), name=f"{part}.head{h}")
            for h in range(H)
        ]
        return g.concat(per_head, axis=0, name=f"{part}_heads")

    q, k, v = heads(query, "query"), heads(key, "key"), heads(value, "value")
    k_t = g.transpose(k, (0, 1, 3, 2), name=_join(name, "key_T"))
    qk = g.matmul(q, k_t, name=_join(name, "qk"))
    scores = g.divide(qk, math.sqrt(d), name=_join(name, "scores"))  # (H, N, S, T)
    if mask is None:
        weights = g.softmax(scores, name=_join(name, "weights"))
    else:
        scores = g.where(mask, scores, MASKED_SCORE, name=_join(name, "masked_scores"))
        softmax = g.softmax(scores, name=_join(name, "softmax"))
        # Where a query may attend to some key its masked weights are 0 already; where it
        # may attend to none, the softmax of its -1e30s is uniform: zero weights instead.
        weights = g.where(mask, softmax, 0.0, name=_join(name, "weights"))
    weights = _dropout(g, weights, sizes.dropout, _join(name, "attn_drop"))
    attended = g.matmul(weights, v, name=_join(name, "attended"))  # (H, N, S, d)
    # The heads side by side again, (N, S, E), and one product with proj.
    joined = g.concat(
        [g.index(attended, h, name=_join(name, f"attended{h}")) for h in range(H)],
        axis=-1,
        name=_join(name, "joined"),
    )
    return _linear(g, joined, _join(name, "proj"), node=out)


def _feedforward(
    g: Graph, name: str, x: Node, dropout: float, layout: Layout, out: Optional[str] = None
) -> Node:
    """fc2(dropout(activation(fc1(x)))): the layer's feedforward (the 2025 edition's
    FeedForwardNetwork), the last node named `out` (default: fc2's name)."""
    hidden = _linear(g, x, _join(name, layout.fc1))
    # The activation node sits in the Linears' module: "relu" (2021), "ffn.gelu" (2025).
    module = layout.fc1.rpartition(".")[0]
    activation = _join(name, _join(module, layout.activation))
    hidden = getattr(g, layout.activation)(hidden, name=activation)
    hidden = _dropout(g, hidden, dropout, _join(name, layout.ffn_dropout))
    return _linear(g, hidden, _join(name, layout.fc2), node=out)


def _transformer_layer(
    g: Graph,
    name: str,
    x: Node,
    memory: Optional[Node],
    mask: Optional[Node],
    sizes: Sizes,
    layout: Layout,
    out: Optional[str] = None,
) -> Node:
    """The course's post-norm layer `name`: with a memory its TransformerDecoderLayer
    (self-attention under `mask`, attention to the memory, feedforward), without one its
    TransformerEncoderLayer (self-attention, feedforward); each sublayer s as
    norm(x + dropout(s(x))). The output node is named `out` (default: the last norm's
    name)."""

    def add_norm(x: Node, sublayer: Node, k: int, last: bool = False) -> Node:
        dropped = _dropout(g, sublayer, sizes.dropout, _join(name, layout.dropout(k)))
        norm = _join(name, layout.norm(k))
        summed = g.add(x, dropped, name=f"{norm}_residual")
        weight, bias = g[f"{norm}.weight"], g[f"{norm}.bias"]
        return g.layernorm(summed, weight, bias, name=(out if last and out else norm))

    attn = _multi_head_attention
    self_attended = attn(g, _join(name, "self_attn"), x, x, x, mask, sizes)
    x = add_norm(x, self_attended, 0)
    if memory is not None:
        cross = attn(g, _join(name, layout.cross_attn), x, memory, memory, None, sizes)
        x = add_norm(x, cross, 1)
    return add_norm(x, _feedforward(g, name, x, sizes.dropout, layout), 2, last=True)


# ----- the course's layers as objects --------------------------------------------------------


class TorchModes:
    """A torch module's modes and parameter listing, for a class with a `.graph`: it
    starts in training mode (dropout on), `eval()` turns dropout off, and
    named_parameters() lists the params in the course's order."""

    graph: Graph

    def train(self, mode: bool = True):
        """Training mode (dropout on), as a torch module starts; train(False) is eval()."""
        self.graph.train(mode)
        return self

    def eval(self):
        """Evaluation mode: dropout is the identity."""
        return self.train(False)

    @property
    def training(self) -> bool:
        return self.graph.training

    def named_parameters(self) -> Iterator[Tuple[str, np.ndarray]]:
        """(name, array) in the course's order, as torch's named_parameters()."""
        return iter(self.graph.params.items())


class _Layer(TorchModes):
    """What the course's layers share here: a graph with the params in the course's
    layout, training mode at first (as a torch module), and a call that feeds it."""

    def __init__(self, dtype: Any) -> None:
        self.dtype = np.dtype(dtype)
        if self.dtype.kind != "f":
            raise ValueError(f"dtype must be a float type, got {self.dtype}")
        self.graph = Graph(dtype=self.dtype)

    @property
    def params(self):
        """The params, name -> array, as the course's named_parameters()."""
        return self.graph.params

    def _run(self, feeds: Dict[str, Any]) -> np.ndarray:
        return self.graph.run("out", feeds)

    def backward(self, dout: Any) -> Dict[str, np.ndarray]:
        """Backprop dout (the output's shape) from the last call: the gradients of the
        inputs and params, by name (also each node's .grad)."""
        g = self.graph
        g.backward("out", dout)
        return {n.name: n.grad for n in g.nodes if n.kind in ("input", "param") and n.requires_grad}

    def _sequence(self, x: Any, what: str, width: int) -> np.ndarray:
        array = np.asarray(x)
        if (
            array.dtype.kind not in "fiu"
            or array.ndim != 3
            or array.shape[2] != width
            or 0 in array.shape
        ):
            raise GraphError(
                f"{type(self).__name__}: {what} must be a non-empty array of numbers "
                f"(N, length, {width}), got {array.dtype} {array.shape}"
            )
        return array.astype(self.dtype, copy=False)


class PositionalEncoding(_Layer):
    """PositionalEncoding(embed_dim, dropout=0.1, max_len=5000): x (N, S, D) plus the first
    S rows of the course's sinusoid table, then dropout. `pe` is the table (1, max_len, D)."""

    def __init__(
        self, embed_dim: int, dropout: float = 0.1, max_len: int = 5000, *, dtype: Any = np.float32
    ) -> None:
        super().__init__(dtype)
        embed_dim, _, dropout = _checked_sizes(embed_dim, 1, dropout, "PositionalEncoding")
        if embed_dim % 2:
            raise ValueError(
                "PositionalEncoding: embed_dim must be even (sine and cosine pairs), "
                f"got {embed_dim}"
            )
        self.embed_dim, self.max_len = (
            embed_dim,
            _positive("PositionalEncoding", "max_len", max_len),
        )
        _check_memory([(self.max_len, embed_dim)], "PositionalEncoding")
        self.pe = positional_encoding(self.max_len, embed_dim)[None].astype(self.dtype)
        g = self.graph
        x = g.input("x", shape=(None, None, embed_dim))
        rows = g.input("pe", shape=(None, embed_dim), requires_grad=False)
        _add_positions(g, x, rows, dropout, out="out")

    def __call__(self, x: Any) -> np.ndarray:
        x = self._sequence(x, "x", self.embed_dim)
        return self._run({"x": x, "pe": self._rows(x.shape[1])})

    forward = __call__

    def _rows(self, steps: int) -> np.ndarray:
        if steps > self.max_len:
            raise GraphError(
                f"{type(self).__name__}: a sequence of {steps} steps is longer than "
                f"max_len={self.max_len}, the rows of the positional encoding"
            )
        return self.pe[0, :steps]


class MultiHeadAttention(_Layer):
    """MultiHeadAttention(embed_dim, num_heads, dropout=0.1): the course's attention layer,
    params key, query, value, proj (nn.Linear(embed_dim, embed_dim) each, drawn with
    nn.Linear's default initialisation from numpy's random state, in that order).
    attn(query, key, value, attn_mask=None): query (N, S, E), key and value (N, T, E),
    attn_mask (S, T), 0 where query s may not attend to key t (a query that may attend to
    no key gets zero attention weights, so its output is proj's bias); returns (N, S, E)."""

    def __init__(
        self, embed_dim: int, num_heads: int, dropout: float = 0.1, *, dtype: Any = np.float32
    ) -> None:
        super().__init__(dtype)
        sizes = _checked_sizes(embed_dim, num_heads, dropout, "MultiHeadAttention")
        E = self.embed_dim = sizes.embed_dim
        self.num_heads = sizes.num_heads
        g = self.graph
        specs = _attention_params("", E)
        _check_memory([spec[1] for spec in specs], "MultiHeadAttention")
        _draw_params(g, specs, small_normal=False)
        query, key, value = (
            g.input(n, shape=(None, None, E)) for n in ("query_in", "key_in", "value_in")
        )
        mask = g.input("attn_mask", shape=(None, None), dtype=np.int64)
        _multi_head_attention(g, "", query, key, value, mask, sizes, out="out")

    def __call__(self, query: Any, key: Any, value: Any, attn_mask: Any = None) -> np.ndarray:
        feeds = self._queries_and_keys(query, key, value)
        feeds["attn_mask"] = _mask(
            attn_mask, feeds["query_in"].shape[1], feeds["key_in"].shape[1], self
        )
        return self._run(feeds)

    forward = __call__

    def _queries_and_keys(self, query: Any, key: Any, value: Any) -> Dict[str, np.ndarray]:
        E = self.embed_dim
        query, key, value = (
            self._sequence(a, n, E) for a, n in ((query, "query"), (key, "key"), (value, "value"))
        )
        if key.shape != value.shape or key.shape[0] != query.shape[0]:
            raise GraphError(
                f"{type(self).__name__}: key {key.shape} and value {value.shape} must have "
                f"the same shape (N, T, E), with query's N = {query.shape[0]}"
            )
        return {"query_in": query, "key_in": key, "value_in": value}


class _TransformerLayer(_Layer):
    """What the decoder and encoder layers share: the course's arguments (input_dim,
    num_heads, dim_feedforward=2048, dropout=0.1), params in its order for the class's
    edition (nn.Linear's default initialisation, norms at 1 and 0), and a graph from the
    sequence input `sequence` (and, for a decoder, "memory") to "out"."""

    decoder: bool
    sequence: str
    #: The edition whose names (LAYOUTS) the params and nodes take.
    edition = 2021

    def __init__(
        self,
        input_dim: int,
        num_heads: int,
        dim_feedforward: int = DIM_FEEDFORWARD,
        dropout: float = 0.1,
        *,
        dtype: Any = np.float32,
    ) -> None:
        super().__init__(dtype)
        where = type(self).__name__
        sizes = _checked_sizes(input_dim, num_heads, dropout, where)
        F = _positive(where, "dim_feedforward", dim_feedforward)
        D = self.embed_dim = sizes.embed_dim
        self.num_heads = sizes.num_heads
        layout = LAYOUTS[self.edition]
        g = self.graph
        specs = _layer_params("", D, F, layout, self.decoder)
        _check_memory([spec[1] for spec in specs], where)
        _draw_params(g, specs, small_normal=False)
        x = g.input(self.sequence, shape=(None, None, D))
        memory = g.input("memory", shape=(None, None, D)) if self.decoder else None
        mask = g.input(f"{self.sequence}_mask", shape=(None, None), dtype=np.int64)
        _transformer_layer(g, "", x, memory, mask, sizes, layout, out="out")

    def _feeds(self, x: Any, mask: Any) -> Dict[str, np.ndarray]:
        x = self._sequence(x, self.sequence, self.embed_dim)
        T = x.shape[1]
        return {self.sequence: x, f"{self.sequence}_mask": _mask(mask, T, T, self)}


class TransformerDecoderLayer(_TransformerLayer):
    """TransformerDecoderLayer(input_dim, num_heads, dim_feedforward=2048, dropout=0.1):
    the course's post-norm decoder layer, params in its order (2021-2024: self_attn,
    multihead_attn, linear1, linear2, norm1, norm2, norm3, a ReLU feedforward).
    layer(tgt, memory, tgt_mask=None): tgt (N, T, D), memory (N, S, D), tgt_mask (T, T);
    returns (N, T, D)."""

    decoder, sequence = True, "tgt"

    def __call__(self, tgt: Any, memory: Any, tgt_mask: Any = None) -> np.ndarray:
        feeds = self._feeds(tgt, tgt_mask)
        N = feeds["tgt"].shape[0]
        feeds["memory"] = self._sequence(memory, "memory", self.embed_dim)
        if feeds["memory"].shape[0] != N:
            raise GraphError(
                f"{type(self).__name__}: memory {feeds['memory'].shape} must have tgt's N = {N}"
            )
        return self._run(feeds)

    forward = __call__


class TransformerEncoderLayer(_TransformerLayer):
    """TransformerEncoderLayer(input_dim, num_heads, dim_feedforward=2048, dropout=0.1),
    the 2025 edition's: src = norm_self(src + dropout_self(self_attn(src, src, src,
    src_mask))), then norm_ffn(src + dropout_ffn(ffn(src))), ffn = fc2(dropout(gelu(
    fc1(src)))); params self_attn.{key,query,value,proj}, ffn.fc1, ffn.fc2, norm_self,
    norm_ffn. layer(src, src_mask=None): src (N, S, D), src_mask (S, S); returns
    (N, S, D)."""

    decoder, sequence = False, "src"
    edition = 2025

    def __call__(self, src: Any, src_mask: Any = None) -> np.ndarray:
        return self._run(self._feeds(src, src_mask))

    forward = __call__


def _mask(mask: Any, rows: int, cols: int, layer: Any) -> np.ndarray:
    """An attention mask (rows, cols) as 0/1 integers; None: every key for every query."""
    if mask is None:
        return np.ones((rows, cols), np.int64)
    mask = np.asarray(mask)
    if mask.shape != (rows, cols) or mask.dtype.kind not in "biuf":
        raise GraphError(
            f"{type(layer).__name__}: the attention mask must be numbers of shape "
            f"({rows}, {cols}) (queries, keys), got {mask.dtype} {mask.shape}"
        )
    return (mask != 0).astype(np.int64)


# ----- the model -------------------------------------------------------------------------


class CaptioningTransformer(TorchModes, GraphModel):
    """CaptioningTransformer(word_to_idx, input_dim, wordvec_dim, num_heads=4, num_layers=2,
    max_length=50), the course's model: the image features projected to one memory
    vector, the caption's word vectors plus positional encoding, num_layers decoder
    layers (causal self-attention, attention to the memory, feedforward), and a linear
    layer to scores over the vocabulary at every step.

    word_to_idx: a dict word -> index over V words, with '<NULL>' (padding: its word
    vector gets no gradient, as nn.Embedding(padding_idx=...), and its targets count for
    no loss) and, for sampling, '<START>'. graphnet's additions, keyword only:
    dim_feedforward (the course's 2048), dropout (the course's 0.1 everywhere), dtype,
    edition (2021: the 2021-2024 layer names, ReLU; 2025: the 2025 edition's, GELU).

    Params (model.params), named and shaped as the course's named_parameters(), in its
    order, and initialised as its _init_weights does (from numpy's random state):
    visual_projection.weight (W, D), .bias, embedding.weight (V, W), then per layer i
    transformer.layers.i.self_attn.{key,query,value,proj}.{weight,bias},
    ...multihead_attn..., ...linear1 (F, W), ...linear2 (W, F), ...norm{1,2,3}, and
    output.weight (V, W), output.bias.

    The graph, `model.graph`: inputs "features" (N, D), "captions" (N, T) (the words
    in), "positions" (T, W) (rows of the sinusoid table), "tgt_mask" (T, T) (the causal
    mask), "not_null" (N, T, 1) and "null_vector" (W,) (the <NULL> word's vector, fed
    so that it gets no gradient), and, for the loss, "targets" (N, T), "loss_mask"
    (N, T) and "num_steps"; nodes "memory" (N, 1, W), "word_vectors", "embedded",
    "positional_encoding", the layers' nodes under "transformer.layers.i.", "scores"
    (N, T, V) and "loss".
    """

    input_name = "features"
    #: The edition whose names (LAYOUTS) the decoder layers take, unless `edition=` says.
    edition = 2021

    def __init__(
        self,
        word_to_idx: Mapping[str, int],
        input_dim: int,
        wordvec_dim: int,
        num_heads: int = 4,
        num_layers: int = 2,
        max_length: int = 50,
        *,
        dim_feedforward: int = DIM_FEEDFORWARD,
        dropout: float = 0.1,
        dtype: Any = np.float32,
        edition: Optional[int] = None,
    ) -> None:
        where = "CaptioningTransformer"
        word_to_idx = {str(w): int(i) for w, i in dict(word_to_idx).items()}
        if "<NULL>" not in word_to_idx:
            raise ValueError(f"{where}: word_to_idx must hold '<NULL>', the padding word")
        V = len(word_to_idx)  # as in the course (captions are checked to fit)
        D = _positive(where, "input_dim", input_dim)
        W, H, p = _checked_sizes(wordvec_dim, num_heads, dropout, where)
        if W % 2:
            raise ValueError(
                f"{where}: wordvec_dim must be even (the positional encoding's sine and "
                f"cosine pairs), got {W}"
            )
        layers = _positive(where, "num_layers", num_layers)
        edition = self.edition if edition is None else edition
        if edition not in LAYOUTS:
            raise ValueError(f"{where}: edition must be one of {sorted(LAYOUTS)}, got {edition!r}")
        F = _positive(where, "dim_feedforward", dim_feedforward)
        config = dict(
            word_to_idx=word_to_idx,
            input_dim=D,
            wordvec_dim=W,
            num_heads=H,
            num_layers=layers,
            max_length=_positive(where, "max_length", max_length),
            dim_feedforward=F,
            dropout=p,
            dtype=np.dtype(dtype).name,
            edition=edition,
        )
        super().__init__(config, 0.0, dtype)
        self.word_to_idx = word_to_idx
        self.idx_to_word = {i: w for w, i in word_to_idx.items()}
        self.vocab_size = V
        self._null = word_to_idx["<NULL>"]
        self._start = word_to_idx.get("<START>")
        self._end = word_to_idx.get("<END>")
        specs = [
            *_linear_params("visual_projection", D, W),
            ("embedding.weight", (V, W), "embedding", W),
            *(
                spec
                for i in range(layers)
                for spec in _layer_params(
                    f"transformer.layers.{i}", W, F, LAYOUTS[edition], decoder=True
                )
            ),
        ]
        output = _linear_params("output", W, V)
        table = (config["max_length"], W)
        _check_memory([spec[1] for spec in specs + output] + [table], where)
        self.pe = positional_encoding(*table).astype(self.dtype)
        # The course's _init_weights covers all but the output layer, made after it ran.
        _draw_params(self.graph, specs, small_normal=True)
        _draw_params(self.graph, output, small_normal=False)
        self._build()

    def _build(self) -> None:
        g, c = self.graph, self.config
        D, W = c["input_dim"], c["wordvec_dim"]
        features = g.input("features", shape=(None, D), requires_grad=False)
        captions = g.input("captions", shape=(None, None), dtype=np.int64)
        positions = g.input("positions", shape=(None, W), requires_grad=False)
        tgt_mask = g.input("tgt_mask", shape=(None, None), dtype=np.int64)
        not_null = g.input("not_null", shape=(None, None, 1), dtype=np.int64)
        null_vector = g.input("null_vector", shape=(W,), requires_grad=False)
        projected = _linear(g, features, "visual_projection")
        memory = g.reshape(projected, (-1, 1, W), name="memory")
        words = g.word_embedding(captions, g["embedding.weight"], name="word_vectors")
        embedded = g.where(not_null, words, null_vector, name="embedded")
        x = _add_positions(g, embedded, positions, c["dropout"], out="positional_encoding")
        sizes = Sizes(W, c["num_heads"], c["dropout"])
        layout = LAYOUTS[c["edition"]]
        for i in range(c["num_layers"]):
            name = f"transformer.layers.{i}"
            x = _transformer_layer(g, name, x, memory, tgt_mask, sizes, layout)
        scores = _linear(g, x, "output", node="scores")
        # The course's CaptioningSolverTransformer: cross-entropy where the target is not
        # <NULL>, averaged over all N·T steps (masked ones count as 0).
        targets = g.input("targets", shape=(None, None), dtype=np.int64)
        loss_mask = g.input("loss_mask", shape=(None, None), dtype=np.int64)
        num_steps = g.input("num_steps", shape=(), requires_grad=False)
        summed = g.temporal_softmax_loss(scores, targets, loss_mask, name="summed_loss")
        g.divide(summed, num_steps, name="loss")

    # ----- the course's methods ------------------------------------------------------

    def forward(self, features: Any, captions: Any) -> np.ndarray:
        """Scores (N, T, V) for image features (N, D) and the caption words (N, T): step t
        sees the words up to t and the image."""
        features = self.check_input(features, "features", "forward")
        captions = self._check_captions(captions, features.shape[0], "captions", 1)
        with self.graph.lock:
            return self.graph.run("scores", self._feeds(features, captions))

    __call__ = forward

    # The course's solver computes the loss from forward's scores; here the model does,
    # in the graph, with the Solvers' signature.
    def loss(  # type: ignore[override]
        self, features: Any, captions: Any
    ) -> Tuple[float, Dict[str, np.ndarray]]:
        """The course's training loss on a minibatch: features (N, D), captions (N, T + 1)
        (each starts with <START>; <NULL> pads); the words in are captions[:, :-1], the
        targets captions[:, 1:]. Returns (loss, grads), grads a dict param -> gradient."""
        features = self.check_input(features, "features")
        captions = self._check_captions(captions, features.shape[0], "captions", 2)
        targets = captions[:, 1:]
        feeds = self._feeds(features, captions[:, :-1])
        feeds.update(
            targets=targets,
            loss_mask=(targets != self._null).astype(np.int64),
            num_steps=np.asarray(targets.size / len(targets), self.dtype),
        )
        g = self.graph
        with g.lock:
            loss = g.run("loss", feeds)
            g.backward("loss")
            return float(loss), g.grads

    def sample(self, features: Any, max_length: int = 30) -> np.ndarray:
        """Greedy captions (N, max_length) of int32 word indices for features (N, D), as
        the course's: from <START>, each step feeds the caption so far and appends the
        highest-scoring last word (decoding does not stop at <END>). In training mode
        dropout is on, as in the course's sample; call eval() first to decode without it."""
        if self._start is None:
            raise GraphError("CaptioningTransformer.sample needs '<START>' in word_to_idx")
        max_length = _positive("CaptioningTransformer.sample", "max_length", max_length)
        if max_length > self.config["max_length"]:
            raise GraphError(
                f"CaptioningTransformer.sample: max_length={max_length} is longer than "
                f"the model's max_length={self.config['max_length']}, the rows of its "
                "positional encoding"
            )
        features = self.check_input(features, "features", "sample")
        N = features.shape[0]
        captions = np.full((N, max_length), self._null, dtype=np.int32)
        partial = np.full((N, 1), self._start, dtype=np.int64)
        with self.graph.lock:
            for t in range(max_length):
                scores = self.graph.run("scores", self._feeds(features, partial))
                word = np.argmax(scores[:, -1, :], axis=1)
                captions[:, t] = word
                partial = np.concatenate([partial, word[:, None]], axis=1)
        return captions

    # ----- feeds and checks ------------------------------------------------------------

    def _feeds(self, features: np.ndarray, words: np.ndarray) -> Dict[str, Any]:
        T = words.shape[1]
        return {
            "features": features,
            "captions": words,
            "positions": self.pe[:T],
            "tgt_mask": np.tril(np.ones((T, T), np.int64)),
            "not_null": (words != self._null).astype(np.int64)[:, :, None],
            "null_vector": self.graph.params["embedding.weight"][self._null],
        }

    @property
    def input_shape(self):
        return (self.config["input_dim"],)

    def _check_captions(self, captions: Any, num_samples: int, what: str, least: int) -> np.ndarray:
        captions = np.asarray(captions)
        longest = self.config["max_length"] + least - 1
        if (
            captions.dtype.kind not in "iu"
            or captions.ndim != 2
            or captions.shape[0] != num_samples
            or not least <= captions.shape[1] <= longest
        ):
            raise GraphError(
                f"CaptioningTransformer: {what} must be integer word indices of shape "
                f"({num_samples}, {'T + 1' if least == 2 else 'T'}) for the {num_samples} "
                f"features, with 1 <= T <= max_length={self.config['max_length']}, got "
                f"{captions.dtype} {captions.shape}"
            )
        V = self.vocab_size
        if captions.min() < 0 or captions.max() >= V:
            raise GraphError(
                f"CaptioningTransformer: {what} hold word indices from {captions.min()} "
                f"to {captions.max()}, outside the vocabulary [0, {V})"
            )
        return captions.astype(np.int64)
