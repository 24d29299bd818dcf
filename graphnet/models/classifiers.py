"""The course's classifiers, each built once as a graph of gates.

Every model owns a `Graph` (`model.graph`) with an input "X" (no gradient: it is data),
an integer input "y", the learnable params W1, b1, ..., gamma1, beta1, a node "scores",
the softmax loss "data_loss", the L2 penalty "reg_loss" (built from gates, so a drawing
shows it) and their sum "loss". `model.params` IS the graph's ParamDict, so
`model.params[name] = next_w` (what a Solver does) writes straight into the graph, and
`model.params = {...}` (how the course's Solver ends `train()`) assigns every param.

`loss(X, y=None)` has the course's contract: with y=None it returns the scores (computed
in eval mode: batchnorm uses its running averages, dropout is off); with y it runs forward
and backward in train mode and returns (loss, grads), grads a dict name -> gradient of
the loss including the L2 term 0.5 * reg * sum(W**2) on the weights (never on biases,
gammas or betas). The graph's mode is restored afterwards.

Weights are drawn with np.random.randn (numpy's global state, as in the course, so
np.random.seed(...) before building a model makes it repeatable).
"""

import math
import numbers
from collections.abc import Mapping
from typing import Any, List, Optional, Sequence

import numpy as np

from ..errors import GraphError
from ..core.graph import Graph, ParamDict
from ..core.node import Node

__all__ = [
    "GraphModel",
    "GraphClassifier",
    "TwoLayerNet",
    "FullyConnectedNet",
    "ThreeLayerConvNet",
    "classifier_loss",
]


class GraphModel:
    """What the three models share: the graph, the loss contract, the L2 term as gates.

    Subclasses build the layers in `_build(X)` and return the scores node. They record
    their constructor arguments in `self.config` (JSON-able), which is what a checkpoint
    stores to rebuild the model.
    """

    #: The graph's input node of the data, as error messages name it.
    input_name = "X"

    def __init__(self, config: dict, reg: float, dtype: Any) -> None:
        self.config = config
        self.dtype = np.dtype(dtype)
        self.graph = Graph(dtype=self.dtype)
        self._reg = float(reg)
        self._reg_const: Optional[Node] = None
        # for fully connected models: the features an input flattens to
        self._features: Optional[int] = None
        self._weights: List[str] = []  # names of the params the L2 term covers
        # the shape of one sample of the last input check_input took whole
        self._sample_shape: Optional[tuple] = None

    # ----- building ---------------------------------------------------------------------

    def _finish(self, input_shape):
        """Build the graph on an input of shape (N, *input_shape); input_shape None
        means any (N, d1, ..., dk) that flattens to `self._features` features."""
        g = self.graph
        X = g.input(
            "X", shape=None if input_shape is None else (None, *input_shape), requires_grad=False
        )
        y = g.input("y", shape=(None,), dtype=np.int64)
        scores = self._build(X)
        if scores.name != "scores":
            raise AssertionError("_build must name its output node 'scores'")
        self._add_reg_gates(g.softmax_loss(scores, y, name="data_loss"))

    def _weight(self, name, shape, weight_scale):
        self._weights.append(name)
        value = weight_scale * np.random.randn(*shape)
        return self.graph.param(name, value.astype(self.dtype))

    def _zeros(self, name, size):
        return self.graph.param(name, np.zeros(size, dtype=self.dtype))

    def _ones(self, name, size):
        return self.graph.param(name, np.ones(size, dtype=self.dtype))

    def _add_reg_gates(self, data_loss):
        """loss = data_loss + reg_loss, reg_loss = (0.5 * reg) * sum over weights of sum(W*W)."""
        g = self.graph
        squares = [
            g.sum(g.multiply(g[w], g[w], name=f"{w}_squared"), name=f"{w}_sum_sq")
            for w in self._weights
        ]
        total = squares[0]
        for i, term in enumerate(squares[1:], 2):
            total = g.add(total, term, name=f"sum_sq_{i}" if i < len(squares) else "sum_sq")
        self._reg_const = g.const(0.5 * self._reg, name="half_reg")
        reg_loss = g.multiply(self._reg_const, total, name="reg_loss")
        g.add(data_loss, reg_loss, name="loss")

    @property
    def params(self) -> ParamDict:
        """The graph's params, name -> array (the graph's ParamDict): `model.params[name] =
        w` writes into the graph, with its shape checked."""
        return self.graph.params

    @params.setter
    def params(self, values: Mapping[str, Any]) -> None:
        """`model.params = {name: array}` assigns every param of the model at once, as the
        course's Solver does at the end of train(). The names must be exactly the model's
        and every array a float array of its param's shape; if not, a GraphError says
        which, and no param is changed."""
        current = self.graph.params
        if values is current:
            return
        name = type(self).__name__
        if not isinstance(values, Mapping):
            raise GraphError(
                f"{name}.params must be assigned a dict name -> array, got {type(values).__name__}"
            )
        missing = [k for k in current if k not in values]
        unknown = [k for k in values if k not in current]
        if missing or unknown:
            raise GraphError(
                f"{name}.params = ...: the dict must hold exactly the model's "
                f"params ({', '.join(current)}); missing: "
                f"{', '.join(missing) or 'none'}; not params of the model: "
                f"{', '.join(map(str, unknown)) or 'none'}"
            )
        for key, value in values.items():
            array = np.asarray(value)
            if array.shape != np.shape(current[key]) or array.dtype.kind != "f":
                raise GraphError(
                    f"{name}.params = ...: param {key!r} is a float array of "
                    f"shape {np.shape(current[key])}, got {array.dtype} "
                    f"{array.shape}; no param was changed"
                )
        for key, value in values.items():
            current[key] = value

    @property
    def reg(self):
        """The L2 strength; assigning it (as the course's notebooks do) updates the
        constant "half_reg" in the graph."""
        return self._reg

    @reg.setter
    def reg(self, value):
        value = float(value)
        self._reg_const.value = np.asarray(0.5 * value, dtype=self.dtype)[()]
        self._reg = value
        self.config["reg"] = value

    # ----- running ----------------------------------------------------------------------

    def loss(self, X: Any, y: Any = None) -> Any:
        """Scores (N, C) for y=None (eval mode), else (loss, grads) (train mode)."""
        X = self.check_input(X)
        labels = None if y is None else {"y": self.check_labels(y, X.shape[0])}
        # With reg = 0 the L2 branch adds nothing: run and differentiate only the data
        # loss, so no time goes into squaring weights that are then multiplied by 0.
        return classifier_loss(
            self.graph, {"X": X}, labels, "scores", "loss" if self._reg else "data_loss"
        )

    # ----- validation -------------------------------------------------------------------

    @property
    def input_shape(self):
        """The shape of one sample: (C, H, W) for the convnet, (input_dim,) otherwise
        (a fully connected model also takes any (d1, ..., dk) with that many features)."""
        shape = self.graph["X"].static_shape
        return (self._features,) if shape is None else tuple(shape[1:])

    def check_input(self, X: Any, what: str = "X", method: str = "loss") -> np.ndarray:
        """X as an array the model can take, or a GraphError naming the model's `method`
        that was called, saying what is wrong and how to fix it. Integer images (uint8
        pixels, say) and float16 are accepted and converted exactly to the model's dtype;
        bool, complex, object and string arrays, empty batches and wrongly shaped samples
        are refused. (NaN and Inf are refused by the graph's feed check.)"""
        # An array of the model's dtype shaped as the last one taken: nothing left to check
        # (0.3 us, where the checks below take 0.8 at one sample).
        if type(X) is np.ndarray and X.dtype is self.dtype:
            shape = X.shape
            if len(shape) > 1 and shape[0] and shape[1:] == self._sample_shape:
                return X
        name, node = type(self).__name__, self.input_name
        try:
            X = np.asarray(X)
        except (ValueError, TypeError) as err:
            raise GraphError(
                f"{name}.{method}: {what} (input {node!r}) is not an array of numbers: {err}"
            ) from None
        if X.dtype.kind not in "fiu":
            raise GraphError(
                f"{name}.{method}: {what} (input {node!r}, shape {X.shape}) has dtype "
                f"{X.dtype}; the model takes real numbers: convert it with "
                f"{what}.astype(np.{self.dtype.name})"
            )
        if self._features is not None:
            ok = X.ndim >= 2 and math.prod(X.shape[1:]) == self._features
        else:
            ok = X.shape[1:] == self.input_shape
        if not ok:
            expected = self.input_shape
            hint = (
                f"each sample must flatten to {self._features} features (input_dim)"
                if self._features is not None
                else f"each sample must have shape {expected} (input_dim)"
            )
            raise GraphError(
                f"{name}.{method}: {what} (input {node!r}) of shape {X.shape} does not "
                f"fit the model: it takes (N, {', '.join(map(str, expected))}); "
                f"{hint}; reshape the data or build the model with the right "
                "input_dim"
            )
        if X.shape[0] == 0:
            raise GraphError(
                f"{name}.{method}: {what} (input {node!r}) is an empty batch (shape "
                f"{X.shape}); pass at least one sample"
            )
        self._sample_shape = X.shape[1:]
        return X

    def check_labels(self, y: Any, num_samples: int, what: str = "y") -> np.ndarray:
        """y as integer class labels for num_samples samples, or a GraphError naming the
        labels' shape, range and the model's num_classes."""
        name, classes = type(self).__name__, self.config["num_classes"]
        try:
            y = np.asarray(y)
        except (ValueError, TypeError) as err:
            raise GraphError(
                f"{name}.loss: {what} (input 'y') is not an array of labels: {err}"
            ) from None
        if y.dtype.kind not in "iu" and not (
            y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(np.mod(y, 1) == 0)
        ):
            raise GraphError(
                f"{name}.loss: labels {what} (input 'y' of node 'data_loss', gate "
                f"'softmax_loss') have dtype {y.dtype}, shape {y.shape}; they must "
                f"be integer class indices: convert with {what}.astype(np.int64)"
            )
        if y.shape != (num_samples,):
            raise GraphError(
                f"{name}.loss: labels {what} (input 'y') have shape {y.shape} but X "
                f"holds {num_samples} samples; pass one label per sample, shape "
                f"({num_samples},)"
            )
        low, high = y.min(), y.max()
        if low < 0 or high >= classes:
            raise GraphError(
                f"{name}.loss: labels {what} (input 'y', shape {y.shape}) range "
                f"over [{low:g}, {high:g}] but the softmax_loss gate of node "
                f"'data_loss' takes classes 0..{classes - 1} (num_classes="
                f"{classes}); remap the labels or build the model with "
                f"num_classes={int(high) + 1}"
            )
        return y

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"{type(self).__name__}({args})"


def classifier_loss(graph, inputs, labels, scores, loss):
    """The course's loss contract on a graph: with labels None, the `scores` node's value
    for the feeds `inputs`, in eval mode (batchnorm's running averages, no dropout); else
    the `loss` node's value after a forward and backward in train mode, and the params'
    gradients. The graph's mode is restored afterwards, and its lock held throughout:
    another thread's forward between this forward and backward would mix its batch into
    these gradients."""
    with graph.lock:
        was_training = graph.training
        try:
            if labels is None:
                return graph.eval().run(scores, inputs)
            value = graph.train().run(loss, {**inputs, **labels})
            graph.backward(loss)
            return value, graph.grads
        finally:
            graph.train(was_training)


class GraphClassifier:
    """A graph you built or imported, as a model the Solver trains: `params` (the graph's)
    and `loss(X, y=None)` with the course's contract (see classifier_loss), for a graph
    with an input `x`, a `scores` node, a labels input `y` and a scalar `loss` node.

        g = gn.from_onnx("cnn.onnx")
        y = g.input("y", shape=(None,), dtype=np.int64)
        g.softmax_loss(g["scores"], y, name="loss")
        gn.Solver(GraphClassifier(g, x="x", scores="scores"), data).train()
    """

    def __init__(self, graph: Graph, *, x: str, scores: str, y: str = "y", loss: str = "loss"):
        for role, name in (("x", x), ("scores", scores), ("y", y), ("loss", loss)):
            if name not in graph:
                raise GraphError(f"GraphClassifier: {role}={name!r} is not a node of the graph")
        self.graph, self.params = graph, graph.params
        self.names = {"x": x, "scores": scores, "y": y, "loss": loss}

    def loss(self, X: Any, y: Any = None) -> Any:
        """As GraphModel.loss: scores for y=None, else (loss, grads)."""
        names = self.names
        labels = None if y is None else {names["y"]: np.asarray(y)}
        return classifier_loss(self.graph, {names["x"]: X}, labels, names["scores"], names["loss"])


class TwoLayerNet(GraphModel):
    """affine - relu - affine - softmax, on inputs of input_dim features.

    Params W1 (D, H), b1 (H,), W2 (H, C), b2 (C,). `dtype` is an addition to the course's
    arguments; the default float64 matches the course's TwoLayerNet.
    """

    def __init__(
        self,
        input_dim: int = 3 * 32 * 32,
        hidden_dim: int = 100,
        num_classes: int = 10,
        weight_scale: float = 1e-3,
        reg: float = 0.0,
        dtype: Any = np.float64,
    ) -> None:
        config = dict(
            input_dim=int(input_dim),
            hidden_dim=int(hidden_dim),
            num_classes=int(num_classes),
            weight_scale=float(weight_scale),
            reg=float(reg),
            dtype=np.dtype(dtype).name,
        )
        super().__init__(config, reg, dtype)
        self._dims = (int(input_dim), int(hidden_dim), int(num_classes))
        self._weight_scale = weight_scale
        self._features = int(input_dim)
        self._finish(None)

    def _build(self, X):
        g, (D, H, C), ws = self.graph, self._dims, self._weight_scale
        W1, b1 = self._weight("W1", (D, H), ws), self._zeros("b1", H)
        W2, b2 = self._weight("W2", (H, C), ws), self._zeros("b2", C)
        hidden = g.relu(g.affine(X, W1, b1, name="affine1"), name="relu1")
        return g.affine(hidden, W2, b2, name="scores")


class FullyConnectedNet(GraphModel):
    """[affine - [batchnorm | layernorm] - relu - [dropout]] x (L - 1) - affine - softmax,
    with the 2017 edition's arguments (this class is graphnet.cs231n.v2017's too).

    dropout: the probability of DROPPING a unit (0: no dropout layers), as in the 2017
    edition; use_batchnorm=True adds batchnorm after every hidden affine. The later
    editions' unambiguous spellings work too: dropout_keep_ratio (the probability of
    KEEPING a unit; 1: no dropout) and normalization=None, 'batchnorm' or 'layernorm'
    (layernorm after every hidden affine, as in the later editions). (The 2018+
    editions' `dropout=`, the keep probability, is graphnet.cs231n's FullyConnectedNet.)
    seed fixes the dropout masks (the same mask on every call, for gradient checks);
    without it each dropout node draws new masks from its own random stream, seeded from
    numpy's global state when the model is built.
    """

    def __init__(
        self,
        hidden_dims: Sequence[int],
        input_dim: int = 3 * 32 * 32,
        num_classes: int = 10,
        dropout: float = 0,
        use_batchnorm: bool = False,
        reg: float = 0.0,
        weight_scale: float = 1e-2,
        dtype: Any = np.float32,
        seed: Optional[int] = None,
        dropout_keep_ratio: Optional[float] = None,
        normalization: Optional[str] = None,
    ) -> None:
        if not (_is_number(dropout) and 0 <= dropout < 1):
            raise ValueError(
                f"dropout={dropout!r}: in graphnet.models and graphnet.cs231n.v2017 (the 2017 "
                "edition) dropout is the probability of DROPPING a unit, in [0, 1) (0: no "
                "dropout). For the probability of keeping one, pass dropout_keep_ratio= or "
                "use graphnet.cs231n's FullyConnectedNet (the 2018+ editions)"
            )
        if dropout_keep_ratio is None:
            dropout_keep_ratio = 1 - dropout
        elif dropout and not np.isclose(dropout_keep_ratio, 1 - dropout, rtol=0, atol=1e-12):
            raise ValueError(
                f"dropout={dropout!r} (the probability of dropping a unit) and "
                f"dropout_keep_ratio={dropout_keep_ratio!r} disagree; pass one"
            )
        if use_batchnorm:
            if normalization not in (None, "batchnorm"):
                raise ValueError(
                    f"use_batchnorm=True and normalization={normalization!r} disagree; pass one"
                )
            normalization = "batchnorm"
        self._setup(
            hidden_dims,
            input_dim,
            num_classes,
            dropout_keep_ratio,
            normalization,
            reg,
            weight_scale,
            dtype,
            seed,
        )

    def _setup(
        self,
        hidden_dims,
        input_dim,
        num_classes,
        dropout_keep_ratio,
        normalization,
        reg,
        weight_scale,
        dtype,
        seed,
    ):
        """Build the net from the arguments both editions agree on. The config records
        them in that form, which every edition's class reads the same way."""
        if not (_is_number(dropout_keep_ratio) and 0 < dropout_keep_ratio <= 1):
            raise ValueError(
                f"dropout_keep_ratio={dropout_keep_ratio!r}: the probability of "
                "keeping a unit must be in (0, 1] (1: no dropout)"
            )
        if normalization not in (None, "batchnorm", "layernorm"):
            raise ValueError(
                f"normalization must be None, 'batchnorm' or 'layernorm', got {normalization!r}"
            )
        hidden_dims = [int(h) for h in hidden_dims]
        config = dict(
            hidden_dims=hidden_dims,
            input_dim=int(input_dim),
            num_classes=int(num_classes),
            dropout_keep_ratio=float(dropout_keep_ratio),
            normalization=normalization,
            reg=float(reg),
            weight_scale=float(weight_scale),
            dtype=np.dtype(dtype).name,
            seed=None if seed is None else int(seed),
        )
        super().__init__(config, reg, dtype)
        self.normalization = normalization
        self.use_dropout = dropout_keep_ratio < 1
        self.use_batchnorm = normalization == "batchnorm"
        self.num_layers = 1 + len(hidden_dims)
        self._dims = [int(input_dim), *hidden_dims, int(num_classes)]
        self._dropout, self._seed = 1 - float(dropout_keep_ratio), seed
        self._weight_scale = weight_scale
        self._features = int(input_dim)
        self._finish(None)

    def _build(self, X):
        g, dims, ws = self.graph, self._dims, self._weight_scale
        h = X
        for i in range(1, self.num_layers + 1):
            W = self._weight(f"W{i}", (dims[i - 1], dims[i]), ws)
            b = self._zeros(f"b{i}", dims[i])
            if i == self.num_layers:
                return g.affine(h, W, b, name="scores")
            h = g.affine(h, W, b, name=f"affine{i}")
            if self.normalization is not None:
                gamma, beta = self._ones(f"gamma{i}", dims[i]), self._zeros(f"beta{i}", dims[i])
                norm = g.batchnorm if self.use_batchnorm else g.layernorm
                h = norm(h, gamma, beta, name=f"{self.normalization}{i}")
            h = g.relu(h, name=f"relu{i}")
            if self.use_dropout:
                h = g.dropout(h, self._dropout, seed=self._seed, name=f"dropout{i}")
                if self._seed is None:
                    # The node's own stream, created now rather than at the first forward,
                    # so a freshly built model already has a state a checkpoint can hold.
                    h.state["rng"] = np.random.default_rng(np.random.randint(2**31))


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


class ThreeLayerConvNet(GraphModel):
    """conv - relu - 2x2 max pool - affine - relu - affine - softmax.

    The conv keeps the spatial size (stride 1, pad (filter_size - 1) // 2). Params W1
    (F, C, filter_size, filter_size), b1 (F,), W2 (F * H/2 * W/2, hidden_dim), b2,
    W3 (hidden_dim, num_classes), b3.
    """

    def __init__(
        self,
        input_dim: Sequence[int] = (3, 32, 32),
        num_filters: int = 32,
        filter_size: int = 7,
        hidden_dim: int = 100,
        num_classes: int = 10,
        weight_scale: float = 1e-3,
        reg: float = 0.0,
        dtype: Any = np.float32,
    ) -> None:
        input_dim = tuple(int(d) for d in input_dim)
        if len(input_dim) != 3:
            raise ValueError(f"input_dim must be (C, H, W), got {input_dim}")
        config = dict(
            input_dim=list(input_dim),
            num_filters=int(num_filters),
            filter_size=int(filter_size),
            hidden_dim=int(hidden_dim),
            num_classes=int(num_classes),
            weight_scale=float(weight_scale),
            reg=float(reg),
            dtype=np.dtype(dtype).name,
        )
        super().__init__(config, reg, dtype)
        self._finish(input_dim)

    def _build(self, X):
        g, c = self.graph, self.config
        C = c["input_dim"][0]
        F, fs, H, K, ws = (
            c["num_filters"],
            c["filter_size"],
            c["hidden_dim"],
            c["num_classes"],
            c["weight_scale"],
        )
        W1, b1 = self._weight("W1", (F, C, fs, fs), ws), self._zeros("b1", F)
        conv = g.conv(X, W1, b1, stride=1, pad=(fs - 1) // 2, name="conv1")
        pool = g.max_pool(g.relu(conv, name="relu1"), 2, 2, 2, name="pool1")
        features = int(np.prod(pool.static_shape[1:]))
        W2, b2 = self._weight("W2", (features, H), ws), self._zeros("b2", H)
        hidden = g.relu(g.affine(pool, W2, b2, name="affine2"), name="relu2")
        W3, b3 = self._weight("W3", (H, K), ws), self._zeros("b3", K)
        return g.affine(hidden, W3, b3, name="scores")
