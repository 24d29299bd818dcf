"""The model zoo: networks of the kinds students build in the course's last assignment,
each described once as a list of layers and built from that description twice, as a
graphnet graph and as a PyTorch module holding the same weights.

A description is a tuple of layers, each a tuple (kind, *arguments), followed implicitly
by the classifier's last affine layer to `CLASSES` scores and the softmax loss:

    ("conv", F, k, stride[, pad])
                             k x k convolution to F channels, with bias; pad (k - 1) // 2
                             unless given
    ("sbn",) ("bn",) ("ln",) spatial batchnorm, batchnorm, layernorm (gamma, beta)
    ("relu",) ("tanh",) ("sigmoid",)
    ("pool",)                2x2 max pool, stride 2
    ("maxpool", k, stride)   k x k max pool (no padding)
    ("dropout", p)           inverted dropout, p = the probability of dropping a unit
    ("res",)                 residual block: conv3x3-sbn-relu-conv3x3-sbn, plus the block's
                             input, then relu (the channels stay)
    ("bneck", M)             bottleneck residual block: conv1x1(M)-sbn-relu-conv3x3(M)-sbn-
                             relu-conv1x1(back to the channels)-sbn, plus the block's input,
                             then relu
    ("affine", M)            fully connected to M features (flattening images)
    ("gn", G)                spatial groupnorm in G groups of channels (gamma, beta)
    ("gelu",) ("leaky", a)   GELU (erf form), leaky relu with slope a below 0
    ("avgpool",)             2x2 average pool, stride 2
    ("avgpool", k, stride)   k x k average pool (no padding)
    ("gmean",)               global average pooling: each channel's mean over its pixels

A description that starts with ("embed", D[, V]) takes T words (input shape (T,)): word
vectors of D features for its V words (`classes` unless given). A language model's
classifier is then the same affine map at every step to scores over the words, each
predicting the next word; a sequence classifier (one with a ("seqmean",) layer) gives one
set of `classes` scores per sequence:

    ("embed", D[, V])        word embedding (V x D)
    ("lstm", H)              an LSTM over the T steps from a zero state (PyTorch: nn.LSTM,
                             its gates reordered and its second bias held at zero)
    ("positions",)           plus a learned vector per step (T x D)
    ("encoder", heads)       a post-norm transformer encoder block: x = ln(x + attention(x)),
                             attention over `heads` heads of D / heads features (q, k, v and
                             output projections D x D with biases; PyTorch:
                             scaled_dot_product_attention), then x = ln(x + ffn(x)) with
                             ffn = temporal affine(4D)-gelu-temporal affine(D)
    ("seqmean",)             the mean over the steps: (N, T, D) -> (N, D)

The course's three models (TwoLayerNet, FullyConnectedNet, ThreeLayerConvNet) are built
by their graphnet.models classes; their description says what the PyTorch twin is. Params
are created in the order of the description on both sides, which is how the weights are
copied across. torch is imported only by `build_torch`.
"""
import numbers
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

import graphnet as gn
from graphnet.models import FullyConnectedNet, GraphClassifier, ThreeLayerConvNet, TwoLayerNet
from graphnet.models.classifiers import classifier_loss

CLASSES = 10
IMAGE = (3, 32, 32)
FLAT = (3 * 32 * 32,)


@dataclass(frozen=True)
class ZooModel:
    name: str
    what: str                       # one line for the table's legend
    input_shape: tuple              # one sample
    layers: tuple                   # the description (see the module's docstring)
    dtypes: tuple = ("float32",)    # the dtypes the course uses it in
    course: Optional[Callable] = None  # builds the graphnet.models class instead (dtype ->)
    classes: int = CLASSES          # the scores per sample (per step: the words)

    @property
    def words(self):
        """Words in: an (N, T) batch of indices into the embedding's vocabulary."""
        return bool(self.layers) and self.layers[0][0] == "embed"

    @property
    def vocabulary(self):
        embed = self.layers[0]
        return embed[2] if len(embed) > 2 else self.classes

    @property
    def sequence(self):
        """A language model: words in, next-word scores at every step out."""
        return self.words and all(layer[0] != "seqmean" for layer in self.layers)


def _vgg_unit(F):
    return (("conv", F, 3, 1), ("sbn",), ("relu",))


ZOO = (
    ZooModel("twolayer", "course TwoLayerNet 3072-100-10", FLAT,
             (("affine", 100), ("relu",)), ("float32", "float64"),
             course=lambda dtype: TwoLayerNet(hidden_dim=100, weight_scale=1e-2, dtype=dtype)),
    ZooModel("fc", "course FullyConnectedNet [100]*4", FLAT,
             (("affine", 100), ("relu",)) * 4, ("float32", "float64"),
             course=lambda dtype: FullyConnectedNet([100] * 4, weight_scale=5e-2, dtype=dtype)),
    ZooModel("convnet", "course ThreeLayerConvNet: conv7x7(32)-relu-pool-affine(100)-relu",
             IMAGE, (("conv", 32, 7, 1), ("relu",), ("pool",), ("affine", 100), ("relu",)),
             course=lambda dtype: ThreeLayerConvNet(weight_scale=1e-2, dtype=dtype)),
    ZooModel("vgg", "[conv3x3-sbn-relu]x2(32)-pool-[conv3x3-sbn-relu]x2(64)-pool-dropout",
             IMAGE, _vgg_unit(32) * 2 + (("pool",),) + _vgg_unit(64) * 2
             + (("pool",), ("dropout", 0.5))),
    ZooModel("resnet", "conv3x3(32)-sbn-relu, res(32), pool, conv3x3(64)-sbn-relu, res(64), "
             "pool", IMAGE, _vgg_unit(32) + (("res",), ("pool",)) + _vgg_unit(64)
             + (("res",), ("pool",))),
    ZooModel("strided", "conv3x3(32)-sbn-relu, conv3x3 stride 2-sbn-relu (64), "
             "conv3x3 stride 2-sbn-relu (128)", IMAGE,
             _vgg_unit(32) + (("conv", 64, 3, 2), ("sbn",), ("relu",),
                              ("conv", 128, 3, 2), ("sbn",), ("relu",))),
    ZooModel("conv1x1", "[conv3x3(64)-relu-conv1x1(32)-relu-pool]x2 (network in network)",
             IMAGE, (("conv", 64, 3, 1), ("relu",), ("conv", 32, 1, 1), ("relu",),
                     ("pool",)) * 2),
    ZooModel("conv5x5", "conv5x5(32)-relu-pool-conv5x5(64)-relu-pool-affine(256)-relu",
             IMAGE, (("conv", 32, 5, 1), ("relu",), ("pool",), ("conv", 64, 5, 1), ("relu",),
                     ("pool",), ("affine", 256), ("relu",))),
    ZooModel("fc_bn", "FullyConnectedNet [100]*5, batchnorm", FLAT,
             (("affine", 100), ("bn",), ("relu",)) * 5, ("float32", "float64"),
             course=lambda dtype: FullyConnectedNet([100] * 5, use_batchnorm=True,
                                                    weight_scale=5e-2, dtype=dtype)),
    ZooModel("fc_ln", "FullyConnectedNet [100]*5, layernorm", FLAT,
             (("affine", 100), ("ln",), ("relu",)) * 5, ("float32", "float64"),
             course=lambda dtype: FullyConnectedNet([100] * 5, normalization="layernorm",
                                                    weight_scale=5e-2, dtype=dtype)),
    ZooModel("fc_dropout", "FullyConnectedNet [512]*2, dropout 0.5", FLAT,
             (("affine", 512), ("relu",), ("dropout", 0.5)) * 2, ("float32", "float64"),
             course=lambda dtype: FullyConnectedNet([512] * 2, dropout=0.5, weight_scale=5e-2,
                                                    dtype=dtype)),
    ZooModel("mlp_tanh", "[affine(256)-tanh]x6", FLAT, (("affine", 256), ("tanh",)) * 6),
    ZooModel("mlp_sigmoid", "[affine(256)-sigmoid]x6", FLAT,
             (("affine", 256), ("sigmoid",)) * 6),
    # Narrow layers (16 channels: filters fill one vector, the kernels' smallest tile) and a
    # residual net that downsamples with strided convs instead of pools.
    ZooModel("narrow_deep", "[conv3x3(16)-sbn-relu]x6 at 32x32, pool", IMAGE,
             _vgg_unit(16) * 6 + (("pool",),)),
    ZooModel("res_strided", "conv3x3(16)-sbn-relu, res(16), conv3x3 stride 2 (32)-sbn-relu, "
             "res(32), conv3x3 stride 2 (64)-sbn-relu, res(64)", IMAGE,
             _vgg_unit(16) + (("res",), ("conv", 32, 3, 2), ("sbn",), ("relu",), ("res",),
                              ("conv", 64, 3, 2), ("sbn",), ("relu",), ("res",))),
    # A CIFAR VGG-11-like stack: wide layers (256-512 channels) on 8, 4 and 2 px images.
    ZooModel("vgg_wide", "[conv3x3-sbn-relu] 64-pool-128-pool-256x2-pool-512x2-pool-"
             "affine(256)-relu", IMAGE,
             _vgg_unit(64) + (("pool",),) + _vgg_unit(128) + (("pool",),) + _vgg_unit(256) * 2
             + (("pool",),) + _vgg_unit(512) * 2 + (("pool",), ("affine", 256), ("relu",))),
    # Not a course shape: the general gates (groupnorm, GELU, average pooling, leaky relu,
    # the global mean) a student reaches for in a network of their own.
    ZooModel("modern", "conv3x3(32)-gn(8)-gelu-avgpool, conv3x3 stride 2 (64)-leaky(0.1), "
             "global mean", IMAGE,
             (("conv", 32, 3, 1), ("gn", 8), ("gelu",), ("avgpool",), ("conv", 64, 3, 2),
              ("leaky", 0.1), ("gmean",))),
    ZooModel("lstm_lm", "character LSTM language model: embed(65 x 32)-lstm(128)-"
             "temporal affine(65), T = 50", (50,), (("embed", 32), ("lstm", 128)), classes=65),
    ZooModel("lstm_lm256", "character LSTM language model: embed(65 x 64)-lstm(256)-"
             "temporal affine(65), T = 50", (50,), (("embed", 64), ("lstm", 256)), classes=65),
    # A student's transformer encoder (the course's assignment 3 builds one): attention
    # over 4 heads of 16 features, layernorms over (N, T, D), a GELU feed-forward.
    ZooModel("transformer", "transformer encoder classifier: embed(100 x 64)+positions-"
             "[attention(4 heads)-add-ln, affine(256)-gelu-affine(64)-add-ln]x2-mean over "
             "steps, T = 32", (32,), (("embed", 64, 100), ("positions",), ("encoder", 4),
                                     ("encoder", 4), ("seqmean",))),
)

# Networks students build that the zoo's table leaves out (bench_zoo.py --models NAME runs
# them; the default run is the ZOO): other inputs (1x28x28, 3x24x40, 3x64x64), global
# average pooling and average-pool heads, 7x7 convs, 1x1 bottlenecks, overlapping 3x3
# stride-2 max pools, dropout without batchnorm, very deep narrow and very wide MLPs.
STUDENT_NETS = (
    ZooModel("gap", "[conv3x3(32)-relu]x2-pool-[conv3x3(64)-relu]x2-global mean", IMAGE,
             (("conv", 32, 3, 1), ("relu",)) * 2 + (("pool",),)
             + (("conv", 64, 3, 1), ("relu",)) * 2 + (("gmean",),)),
    ZooModel("lenet_avg", "LeNet-5 with average pools: conv5x5(6) pad 0-relu-avgpool-conv5x5(16) "
             "pad 0-relu-avgpool-affine(120)-relu-affine(84)-relu", IMAGE,
             (("conv", 6, 5, 1, 0), ("relu",), ("avgpool",), ("conv", 16, 5, 1, 0), ("relu",),
              ("avgpool",), ("affine", 120), ("relu",), ("affine", 84), ("relu",)),
             ("float32", "float64")),
    ZooModel("mnist_cnn", "1x28x28: conv3x3(32) pad 0-relu-conv3x3(64) pad 0-relu-pool-"
             "dropout(0.25)-affine(128)-relu-dropout(0.5)", (1, 28, 28),
             (("conv", 32, 3, 1, 0), ("relu",), ("conv", 64, 3, 1, 0), ("relu",), ("pool",),
              ("dropout", 0.25), ("affine", 128), ("relu",), ("dropout", 0.5))),
    ZooModel("wide_image", "3x24x40: conv3x3(32)-sbn-relu-pool-conv3x3(64)-sbn-relu-pool",
             (3, 24, 40), _vgg_unit(32) + (("pool",),) + _vgg_unit(64) + (("pool",),)),
    ZooModel("conv7x7", "conv7x7(16)-relu-pool-conv7x7(32)-relu-pool", IMAGE,
             (("conv", 16, 7, 1), ("relu",), ("pool",), ("conv", 32, 7, 1), ("relu",),
              ("pool",))),
    ZooModel("image64", "3x64x64: [conv3x3-sbn-relu-pool] 32, 64, 128, global mean", (3, 64, 64),
             _vgg_unit(32) + (("pool",),) + _vgg_unit(64) + (("pool",),) + _vgg_unit(128)
             + (("pool",), ("gmean",))),
    ZooModel("bottleneck", "conv3x3(64)-sbn-relu, bneck(16)x2, pool, bneck(16), global mean",
             IMAGE, _vgg_unit(64) + (("bneck", 16), ("bneck", 16), ("pool",), ("bneck", 16),
                                     ("gmean",))),
    ZooModel("dropout_cnn", "[conv3x3(32)-relu]x2-pool-dropout(0.25)-[conv3x3(64)-relu]x2-pool-"
             "dropout(0.25)-affine(512)-relu-dropout(0.5)", IMAGE,
             (("conv", 32, 3, 1), ("relu",)) * 2 + (("pool",), ("dropout", 0.25))
             + (("conv", 64, 3, 1), ("relu",)) * 2
             + (("pool",), ("dropout", 0.25), ("affine", 512), ("relu",), ("dropout", 0.5))),
    ZooModel("alexnet_pool", "conv5x5(32)-relu-maxpool3x3 stride 2-conv5x5(64)-relu-maxpool3x3 "
             "stride 2-affine(256)-relu", IMAGE,
             (("conv", 32, 5, 1), ("relu",), ("maxpool", 3, 2), ("conv", 64, 5, 1), ("relu",),
              ("maxpool", 3, 2), ("affine", 256), ("relu",))),
    ZooModel("alexnet_bn", "[conv3x3(64)-sbn-relu-maxpool3x3 stride 2]x2, conv3x3(128)-sbn-relu-"
             "global mean", IMAGE,
             (_vgg_unit(64) + (("maxpool", 3, 2),)) * 2 + _vgg_unit(128) + (("gmean",),)),
    ZooModel("mlp_deep", "[affine(50)-relu]x10", FLAT, (("affine", 50), ("relu",)) * 10,
             ("float32", "float64")),
    ZooModel("mlp_wide", "[affine(4096)-relu]x2", FLAT, (("affine", 4096), ("relu",)) * 2),
    ZooModel("mnist_mlp", "784: affine(512)-relu-dropout(0.2)-affine(512)-relu-dropout(0.2)",
             (784,), (("affine", 512), ("relu",), ("dropout", 0.2)) * 2),
)

BY_NAME = {m.name: m for m in ZOO + STUDENT_NETS}

# ----- random networks ------------------------------------------------------------------

# The pools' (k, stride) a random network draws: the zoo's 2x2 stride 2, overlapping 3x3
# stride 2, and the stride-1 windows.
RANDOM_POOLS = ((2, 2), (3, 2), (3, 1), (2, 1))


def random_network(seed, index=0, widest=48):
    """The `index`-th random student network of `seed`: a ZooModel named random-SEED-INDEX
    (model_named rebuilds it from the name). A stack of conv stages on an image of 1-3
    channels and 16-40 px a side (not square as a rule), each a k x k conv (k 1, 3, 5 or 7,
    stride 1 or 2, any padding up to (k - 1) // 2) to 3-`widest` channels (odd counts
    too), then a spatial batchnorm, a groupnorm or nothing, an activation (relu, leaky
    relu, GELU, tanh, sigmoid), and maybe dropout, a max or average pool (RANDOM_POOLS)
    and a residual or bottleneck block; then a global mean or not, and 0-2 affine layers,
    each maybe with batchnorm or layernorm, an activation and dropout. Valid by
    construction: every window fits its image, and no conv, pool or norm is left with
    fewer than 2x2 pixels."""
    rng = np.random.default_rng((seed, index))

    def pick(options):
        return options[int(rng.integers(len(options)))]

    def chance(p):
        return bool(rng.random() < p)

    def activation():
        kind = pick(("relu", "relu", "leaky", "gelu", "tanh", "sigmoid"))
        return ("leaky", float(pick((0.01, 0.1, 0.2)))) if kind == "leaky" else (kind,)

    def dropout():
        return ("dropout", float(pick((0.1, 0.25, 0.5))))

    def smaller(size, k, stride, pad=0):
        return 1 + (size + 2 * pad - k) // stride

    C, H, W = int(rng.integers(1, 4)), int(rng.integers(16, 41)), int(rng.integers(16, 41))
    image, layers = (C, H, W), []
    for _ in range(int(rng.integers(1, 5))):
        if min(H, W) < 4:
            break
        k = pick([k for k in (1, 3, 5, 7) if smaller(min(H, W), k, 1) >= 2])
        pad = int(rng.integers(0, (k - 1) // 2 + 1))
        stride = 2 if chance(0.3) and smaller(min(H, W), k, 2, pad) >= 2 else 1
        F = int(rng.integers(3, widest + 1))
        layers.append(("conv", F, k, stride, pad))
        H, W = smaller(H, k, stride, pad), smaller(W, k, stride, pad)
        norm = pick(("none", "sbn", "sbn", "gn"))
        if norm == "sbn":
            layers.append(("sbn",))
        elif norm == "gn":
            layers.append(("gn", pick([g for g in range(1, F + 1) if F % g == 0])))
        layers.append(activation())
        if chance(0.2):
            layers.append(dropout())
        windows = [(k, s) for k, s in RANDOM_POOLS if smaller(min(H, W), k, s) >= 2]
        if windows and chance(0.5):
            k, stride = pick(windows)
            layers.append((pick(("maxpool", "avgpool")), k, stride))
            H, W = smaller(H, k, stride), smaller(W, k, stride)
        if chance(0.3):
            layers.append(pick((("res",), ("bneck", int(rng.integers(2, F + 1))))))
    if chance(0.5):
        layers.append(("gmean",))
    for _ in range(int(rng.integers(0, 3))):
        layers.append(("affine", int(rng.integers(5, 129))))
        norm = pick(("none", "bn", "ln"))
        if norm != "none":
            layers.append((norm,))
        layers.append(activation())
        if chance(0.3):
            layers.append(dropout())
    return ZooModel(f"random-{seed}-{index}", describe(image, layers), image, tuple(layers))


def describe(image, layers):
    """A description's layers in one line, as the table's legend names them."""
    def words(layer):
        kind, *args = layer
        if kind == "conv":
            F, k, stride, pad = conv_layer(layer)
            return f"conv{k}x{k}({F})" + (f" s{stride}" if stride > 1 else "") + f" p{pad}"
        if kind in ("maxpool", "avgpool", "pool"):
            k, stride = pool_window(layer)
            return f"{'avg' if kind == 'avgpool' else 'max'}{k}x{k} s{stride}"
        return kind + "".join(f"({a})" for a in args)

    return "x".join(map(str, image)) + ": " + "-".join(map(words, layers))


def model_named(name):
    """The ZooModel of a name: a zoo or student network's, or random-SEED-INDEX's."""
    if name in BY_NAME:
        return BY_NAME[name]
    kind, *numbers = name.split("-")
    if kind != "random" or len(numbers) != 2 or not all(n.isdigit() for n in numbers):
        raise ValueError(f"no network {name!r}: one of {', '.join(BY_NAME)} or "
                         "random-SEED-INDEX")
    return random_network(*map(int, numbers))


def conv_layer(layer):
    """(F, k, stride, pad) of a ("conv", F, k, stride[, pad]) layer."""
    _, F, k, stride, *pad = layer
    return F, k, stride, pad[0] if pad else (k - 1) // 2


def pool_window(layer):
    """(k, stride) of a ("pool",), ("maxpool", k, stride) or ("avgpool"[, k, stride]) layer."""
    return layer[1:] if len(layer) > 1 else (2, 2)


def head_size(D, heads):
    """The features of each head of an ("encoder", heads) block on D features: D / heads,
    refused unless whole (as PyTorch's nn.MultiheadAttention and the course's
    MultiHeadAttention refuse it): a split into unequal heads would otherwise fail only
    when the first batch reaches the reshape, with numpy's message."""
    if not (isinstance(heads, numbers.Integral) and heads >= 1 and D % heads == 0):
        raise ValueError(f"an encoder of {heads!r} heads on {D} features: the heads must "
                         f"divide the features evenly (each head takes D / heads of them)")
    return D // heads


def shapes(model, batch):
    """[(layer, its input's shape)] for a batch, the final affine included, and the scores'
    shape. (One place for the geometry the floor needs: graphnet.kernels.geometry's rule.)"""
    shape, walk = (batch, *model.input_shape), []
    last = ("temporal_affine" if model.sequence else "affine", model.classes)
    for layer in model.layers + (last,):
        walk.append((layer, shape))
        kind = layer[0]
        if kind in ("embed", "lstm", "temporal_affine"):
            shape = (batch, shape[1], layer[1])
        elif kind == "conv":
            F, k, stride, pad = conv_layer(layer)
            shape = (batch, F, 1 + (shape[2] + 2 * pad - k) // stride,
                     1 + (shape[3] + 2 * pad - k) // stride)
        elif kind in ("pool", "avgpool", "maxpool"):
            k, stride = pool_window(layer)
            shape = (batch, shape[1], 1 + (shape[2] - k) // stride, 1 + (shape[3] - k) // stride)
        elif kind == "gmean":
            shape = (batch, shape[1])
        elif kind == "seqmean":
            shape = (batch, shape[2])
        elif kind == "affine":
            shape = (batch, layer[1])
    return walk, shape


def batch_of(model, batch, dtype, rng):
    """(X, y), a synthetic batch: standard normal samples and class labels, or for a
    language model `batch` sequences of random words, y each X's next words (a sequence
    classifier: random words and class labels)."""
    if model.sequence:
        words = rng.integers(model.classes, size=(batch, model.input_shape[0] + 1))
        return words[:, :-1], words[:, 1:]
    if model.words:
        X = rng.integers(model.vocabulary, size=(batch, *model.input_shape))
        return X, rng.integers(model.classes, size=batch).astype(np.int64)
    X = rng.standard_normal((batch, *model.input_shape)).astype(dtype)
    return X, rng.integers(model.classes, size=batch).astype(np.int64)


# ----- graphnet -------------------------------------------------------------------------

class LanguageModel:
    """A language-model graph as a model the Solver could train: `params` and the course's
    loss(X, y=None) on words X (N, T) and their next words y (N, T) (classifier_loss's
    contract: scores (N, T, V) for y=None, else (loss, grads)). It feeds the LSTM's zero
    initial state and a mask counting every step."""

    def __init__(self, graph, hidden):
        self.graph, self.params, self.hidden = graph, graph.params, hidden

    def feeds(self, X, y=None):
        """(inputs, labels) of the graph for words X and their next words y (None: no
        labels)."""
        X = np.asarray(X)
        inputs = {"x": X, "h0": np.zeros((X.shape[0], self.hidden), self.graph.dtype)}
        labels = None if y is None else {"y": np.asarray(y), "mask": np.ones(X.shape, np.int64)}
        return inputs, labels

    def loss(self, X, y=None):
        return classifier_loss(self.graph, *self.feeds(X, y), "scores", "loss")


def build_language_model(model, dtype, rng):
    (_, D), (_, H) = model.layers
    V, T = model.classes, model.input_shape[0]
    g = gn.Graph(dtype=dtype)
    x = g.input("x", shape=(None, T), dtype=np.int64)
    h0 = g.input("h0", shape=(None, H), requires_grad=False)

    def param(name, shape, scale):
        return g.param(name, (rng.standard_normal(shape) * scale).astype(dtype))

    words = g.word_embedding(x, param("W_embed", (V, D), 1.0), name="words")
    h = g.lstm(words, h0, param("Wx", (D, 4 * H), 1 / np.sqrt(D)),
               param("Wh", (H, 4 * H), 1 / np.sqrt(H)), param("b", (4 * H,), 0.0), name="h")
    scores = g.temporal_affine(h, param("W_vocab", (H, V), 1 / np.sqrt(H)),
                               param("b_vocab", (V,), 0.0), name="scores")
    y = g.input("y", shape=(None, T), dtype=np.int64)
    mask = g.input("mask", shape=(None, T), dtype=np.int64)
    g.temporal_softmax_loss(scores, y, mask, name="loss")
    return LanguageModel(g, H)


def build_graphnet(model, dtype, seed=0):
    """A graphnet model of `model` (a GraphModel, a GraphClassifier or a LanguageModel:
    .params, .graph and the course's loss(X, y=None)); weights drawn from `seed`."""
    dtype = np.dtype(dtype)
    if model.course is not None:
        np.random.seed(seed)
        return model.course(dtype)
    rng = np.random.default_rng(seed)
    if model.sequence:
        return build_language_model(model, dtype, rng)
    g = gn.Graph(dtype=dtype)
    if model.words:
        h = g.input("x", shape=(None, *model.input_shape), dtype=np.int64)
    else:
        h = g.input("x", shape=(None, *model.input_shape), requires_grad=False)
    counts = {}

    def name(kind):
        counts[kind] = counts.get(kind, 0) + 1
        return f"{kind}{counts[kind]}"

    def weight(shape, fan_in, outputs, gain):
        w = rng.standard_normal(shape) * np.sqrt(gain / fan_in)  # He / Xavier scale
        return g.param(name("W"), w.astype(dtype)), g.param(name("b"), np.zeros(outputs, dtype))

    def norm(kind, x, size, *groups):
        gamma = g.param(name("gamma"), np.ones(size, dtype))
        beta = g.param(name("beta"), np.zeros(size, dtype))
        build = {"sbn": g.spatial_batchnorm, "bn": g.batchnorm, "ln": g.layernorm,
                 "gn": g.spatial_groupnorm}[kind]
        return build(x, gamma, beta, *groups, name=name(kind))

    def conv(x, F, k, stride, pad):
        C = x.static_shape[1]
        W, b = weight((F, C, k, k), C * k * k, F, 2.0)
        return g.conv(x, W, b, stride=stride, pad=pad, name=name("conv"))

    def encoder(x, heads):
        T, D = x.static_shape[1:]
        size = head_size(D, heads)

        def temporal_affine(x, outputs):
            W, b = weight((x.static_shape[2], outputs), x.static_shape[2], outputs, 1.0)
            return g.temporal_affine(x, W, b, name=name("temporal_affine"))

        def split(x):  # (N, T, D) -> (N, heads, T, D / heads)
            return g.transpose(g.reshape(x, (-1, T, heads, size)), (0, 2, 1, 3))

        q, k, v = (split(temporal_affine(x, D)) for _ in "qkv")
        merged = g.reshape(g.transpose(g.attention(q, k, v, name=name("attention")),
                                       (0, 2, 1, 3)), (-1, T, D))
        x = norm("ln", g.add(x, temporal_affine(merged, D), name=name("skip")), D)
        ffn = temporal_affine(g.gelu(temporal_affine(x, 4 * D), name=name("gelu")), D)
        return norm("ln", g.add(x, ffn, name=name("skip")), D)

    squashing = any(layer[0] in ("tanh", "sigmoid") for layer in model.layers)
    layers = model.layers + (("affine", model.classes),)
    for i, layer in enumerate(layers):
        kind = layer[0]
        if kind == "conv":
            h = conv(h, *conv_layer(layer))
        elif kind == "embed":
            W = (rng.standard_normal((model.vocabulary, layer[1]))).astype(dtype)
            h = g.word_embedding(h, g.param(name("W_embed"), W), name="words")
        elif kind == "positions":
            P = (rng.standard_normal(h.static_shape[1:]) * 0.1).astype(dtype)
            h = g.add(h, g.param(name("positions"), P), name=name("positioned"))
        elif kind == "encoder":
            h = encoder(h, layer[1])
        elif kind == "seqmean":
            h = g.mean(h, axis=1, name=name("seqmean"))
        elif kind in ("sbn", "bn", "ln", "gn"):
            h = norm(kind, h, h.static_shape[1], *layer[1:])
        elif kind in ("relu", "tanh", "sigmoid", "gelu"):
            h = g.apply(kind, h, name=name(kind))
        elif kind == "leaky":
            h = g.leaky_relu(h, layer[1], name=name("leaky"))
        elif kind == "avgpool":
            k, stride = pool_window(layer)
            h = g.avg_pool(h, k, k, stride, name=name("avgpool"))
        elif kind == "gmean":
            h = g.mean(h, axis=(2, 3), name=name("gmean"))
        elif kind in ("pool", "maxpool"):
            k, stride = pool_window(layer)
            h = g.max_pool(h, k, k, stride, name=name("pool"))
        elif kind == "dropout":
            h = g.dropout(h, layer[1], name=name("dropout"))
        elif kind == "bneck":
            F, M = h.static_shape[1], layer[1]
            inner = g.relu(norm("sbn", conv(h, M, 1, 1, 0), M), name=name("relu"))
            inner = g.relu(norm("sbn", conv(inner, M, 3, 1, 1), M), name=name("relu"))
            inner = norm("sbn", conv(inner, F, 1, 1, 0), F)
            h = g.relu(g.add(inner, h, name=name("skip")), name=name("relu"))
        elif kind == "res":
            F = h.static_shape[1]
            inner = g.relu(norm("sbn", conv(h, F, 3, 1, 1), F), name=name("relu"))
            inner = norm("sbn", conv(inner, F, 3, 1, 1), F)
            h = g.relu(g.add(inner, h, name=name("skip")), name=name("relu"))
        elif kind == "affine":
            D = int(np.prod(h.static_shape[1:]))
            W, b = weight((D, layer[1]), D, layer[1], 1.0 if squashing else 2.0)
            last = i == len(layers) - 1
            h = g.affine(h, W, b, name="scores" if last else name("affine"))
        else:
            raise ValueError(f"unknown layer {layer!r}")
    y = g.input("y", shape=(None,), dtype=np.int64)
    g.softmax_loss(h, y, name="loss")
    return GraphClassifier(g, x="x", scores="scores")


# ----- PyTorch --------------------------------------------------------------------------

def build_torch(model, graphnet_model):
    """(module, dropouts): the PyTorch twin of `model` holding `graphnet_model`'s current
    weights and batchnorm running averages, in graphnet's dtype. `dropouts` are its dropout
    layers: each is torch's, unless given a mask (`layer.mask = tensor`), which it then
    applies in train mode instead of drawing one (so a test can replay graphnet's masks)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Dropout(nn.Dropout):
        mask = None

        def forward(self, x):
            if self.training and self.mask is not None:
                return x * self.mask
            return super().forward(x)

    class Residual(nn.Module):
        def __init__(self, F):
            super().__init__()
            self.inner = nn.Sequential(nn.Conv2d(F, F, 3, padding=1), nn.BatchNorm2d(F),
                                       nn.ReLU(), nn.Conv2d(F, F, 3, padding=1),
                                       nn.BatchNorm2d(F))

        def forward(self, x):
            return torch.relu(self.inner(x) + x)

    class Bottleneck(nn.Module):
        def __init__(self, F, M):
            super().__init__()
            self.inner = nn.Sequential(nn.Conv2d(F, M, 1), nn.BatchNorm2d(M), nn.ReLU(),
                                       nn.Conv2d(M, M, 3, padding=1), nn.BatchNorm2d(M),
                                       nn.ReLU(), nn.Conv2d(M, F, 1), nn.BatchNorm2d(F))

        def forward(self, x):
            return torch.relu(self.inner(x) + x)

    class GlobalMean(nn.Module):
        def forward(self, x):
            return x.mean((2, 3))

    class Positions(nn.Module):
        def __init__(self, T, D):
            super().__init__()
            self.vectors = nn.Parameter(torch.zeros(T, D))

        def forward(self, x):
            return x + self.vectors

    class Encoder(nn.Module):
        def __init__(self, D, heads):
            super().__init__()
            self.heads, self.size = heads, head_size(D, heads)
            self.q, self.k, self.v, self.o = (nn.Linear(D, D) for _ in range(4))
            self.ln1 = nn.LayerNorm(D, eps=1e-5)
            self.ffn = nn.Sequential(nn.Linear(D, 4 * D), nn.GELU(), nn.Linear(4 * D, D))
            self.ln2 = nn.LayerNorm(D, eps=1e-5)

        def forward(self, x):
            N, T, D = x.shape

            def split(t):
                return t.reshape(N, T, self.heads, self.size).transpose(1, 2)

            a = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)),
                                               split(self.v(x)))
            x = self.ln1(x + self.o(a.transpose(1, 2).reshape(N, T, D)))
            return self.ln2(x + self.ffn(x))

    class SequenceMean(nn.Module):
        def forward(self, x):
            return x.mean(1)

    class LanguageModelNet(nn.Module):
        def __init__(self, V, D, H):
            super().__init__()
            self.embed, self.lstm = nn.Embedding(V, D), nn.LSTM(D, H, batch_first=True)
            self.vocab = nn.Linear(H, V)
            nn.init.zeros_(self.lstm.bias_hh_l0)  # graphnet's LSTM has one bias
            self.lstm.bias_hh_l0.requires_grad_(False)

        def forward(self, x):
            return self.vocab(self.lstm(self.embed(x))[0])

    dtype = getattr(torch, np.dtype(graphnet_model.graph.dtype).name)
    if model.sequence:
        (_, D), (_, H) = model.layers
        net = LanguageModelNet(model.classes, D, H).to(dtype)
        copy_weights(model, graphnet_model, net)
        return net, []
    walk, _ = shapes(model, 1)
    modules, dropouts = [], []
    for layer, shape in walk:
        kind = layer[0]
        if kind == "conv":
            filters, k, stride, pad = conv_layer(layer)
            modules.append(nn.Conv2d(shape[1], filters, k, stride=stride, padding=pad))
        elif kind == "embed":
            modules.append(nn.Embedding(model.vocabulary, layer[1]))
        elif kind == "positions":
            modules.append(Positions(*shape[1:]))
        elif kind == "encoder":
            modules.append(Encoder(shape[2], layer[1]))
        elif kind == "seqmean":
            modules.append(SequenceMean())
        elif kind == "sbn":
            modules.append(nn.BatchNorm2d(shape[1], eps=1e-5, momentum=0.1))
        elif kind == "bn":
            modules.append(nn.BatchNorm1d(shape[1], eps=1e-5, momentum=0.1))
        elif kind == "ln":
            modules.append(nn.LayerNorm(shape[1], eps=1e-5))
        elif kind == "gn":
            modules.append(nn.GroupNorm(layer[1], shape[1], eps=1e-5))
        elif kind in ("relu", "tanh", "sigmoid", "gelu"):
            modules.append({"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
                            "gelu": nn.GELU}[kind]())
        elif kind == "leaky":
            modules.append(nn.LeakyReLU(layer[1]))
        elif kind == "avgpool":
            modules.append(nn.AvgPool2d(*pool_window(layer)))
        elif kind == "gmean":
            modules.append(GlobalMean())
        elif kind in ("pool", "maxpool"):
            modules.append(nn.MaxPool2d(*pool_window(layer)))
        elif kind == "dropout":
            dropouts.append(Dropout(layer[1]))
            modules.append(dropouts[-1])
        elif kind == "res":
            modules.append(Residual(shape[1]))
        elif kind == "bneck":
            modules.append(Bottleneck(shape[1], layer[1]))
        elif kind == "affine":
            if len(shape) > 2:
                modules.append(nn.Flatten())
            modules.append(nn.Linear(int(np.prod(shape[1:])), layer[1]))
    net = nn.Sequential(*modules).to(dtype)
    copy_weights(model, graphnet_model, net)
    return net, dropouts


def torch_loss(model, scores, y):
    """PyTorch's loss of the scores against the labels y, as graphnet's loss node computes
    it: the softmax loss averaged over the batch, for a language model summed over the
    steps and averaged over the sequences (the course's temporal softmax loss)."""
    from torch.nn.functional import cross_entropy

    if model.sequence:
        return cross_entropy(scores.reshape(-1, model.classes), y.reshape(-1),
                             reduction="sum") / y.shape[0]
    return cross_entropy(scores, y)


def _swap_o_g(W):
    """The LSTM's gate blocks (last axis) from the course's order i, f, o, g to PyTorch's
    i, f, g, o, and back (the same swap)."""
    i, f, a, b = np.split(W, 4, axis=-1)
    return np.concatenate([i, f, b, a], axis=-1)


def _transposed(w):
    return w.T if w.ndim == 2 else w


def _same(w):
    return w


def _param_pairs(model, net):
    """[(torch parameter, its value as graphnet's param, graphnet's param as its value)] in
    graphnet's params' order: affine weights (D, M) are Linear's (M, D); an LSTM's Wx (D,
    4H) is weight_ih's (4H, D) with its gate blocks reordered, likewise Wh and b."""
    from torch import nn

    if not model.sequence:
        linear = {id(m.weight) for m in net.modules() if isinstance(m, nn.Linear)}
        return [(p, _transposed, _transposed) if id(p) in linear else (p, _same, _same)
                for p in net.parameters()]
    lstm = net.lstm
    same = _same

    def gates_of_torch(w):
        return _swap_o_g(_transposed(w))

    def gates_of_graphnet(w):
        return _transposed(_swap_o_g(w))

    gates = (gates_of_torch, gates_of_graphnet)
    return [(net.embed.weight, same, same), (lstm.weight_ih_l0, *gates),
            (lstm.weight_hh_l0, *gates), (lstm.bias_ih_l0, *gates),
            (net.vocab.weight, _transposed, _transposed), (net.vocab.bias, same, same)]


def graphnet_view(model, net, grads=False):
    """The module's parameters (grads=True: their gradients) as graphnet's params: numpy
    arrays in graphnet's order and layout."""
    return [as_graphnet((p.grad if grads else p).detach().numpy())
            for p, as_graphnet, _ in _param_pairs(model, net)]


def copy_weights(model, graphnet_model, net):
    """graphnet's params (in building order) into the module's parameters (_param_pairs
    says which and in what layout). Batchnorm running averages too (graphnet's momentum
    0.9 is torch's 0.1)."""
    import torch

    ours = list(graphnet_model.params.values())
    pairs = _param_pairs(model, net)
    if [np.shape(to_torch(w)) for w, (_, _, to_torch) in zip(ours, pairs)] != \
            [tuple(p.shape) for p, _, _ in pairs] or len(ours) != len(pairs):
        raise AssertionError("graphnet's and torch's params do not line up: "
                             f"{[np.shape(w) for w in ours]} vs "
                             f"{[tuple(p.shape) for p, _, _ in pairs]}")
    with torch.no_grad():
        for w, (p, _, to_torch) in zip(ours, pairs):
            p.copy_(torch.from_numpy(np.ascontiguousarray(to_torch(w))))
    norms = [n for n in graphnet_model.graph.nodes if n.op in ("batchnorm", "spatial_batchnorm")]
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for node, bn in zip(norms, bns):
        running = node.state
        if "running_mean" in running:
            with torch.no_grad():
                bn.running_mean.copy_(torch.from_numpy(np.asarray(running["running_mean"])))
                bn.running_var.copy_(torch.from_numpy(np.asarray(running["running_var"])))
