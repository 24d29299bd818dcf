"""Regenerate the gallery of graphnet drawings in this folder:

    python visualizations/make_gallery.py                 # every picture
    python visualizations/make_gallery.py rnn_bptt ...    # only these (index.md: all)

Each example is built, run forward and backward, drawn with graphnet.viz.draw, and
written as SVG and PNG next to this script, with index.md listing them. Needs the
Graphviz `dot` program. Every random number comes from a fixed seed, so the drawings
only change when the code does.
"""
import sys
from pathlib import Path

import numpy as np
from PIL import Image

import graphnet as gn
from graphnet import viz

HERE = Path(__file__).resolve().parent


def add_multiply_circuit():
    """f = (x + y) * z at x = -2, y = 5, z = -4: the add gate distributes, the
    multiply gate swaps."""
    g = gn.Graph()
    x, y, z = g.input("x"), g.input("y"), g.input("z")
    g.multiply(g.add(x, y, name="q"), z, name="f")
    g.forward(x=-2.0, y=5.0, z=-4.0)
    g.backward()
    return g, {}


def sigmoid_neuron():
    """f = 1 / (1 + exp(-(w0 x0 + w1 x1 + w2))), the 2-D neuron from CS231n's backprop
    notes, gate by gate: the sigmoid's local gradient is f (1 - f) = 0.1966."""
    g = gn.Graph()
    w0, x0, w1, x1, w2 = (g.input(n) for n in ("w0", "x0", "w1", "x1", "w2"))
    dot = g.add(g.add(g.multiply(w0, x0, name="w0*x0"), g.multiply(w1, x1, name="w1*x1"),
                      name="sum"), w2, name="dot")
    negated = g.multiply(dot, g.const(-1.0, name="-1"), name="-dot")
    denominator = g.add(g.exp(negated, name="exp"), g.const(1.0, name="1"), name="1+exp")
    g.divide(g.const(1.0, name="one"), denominator, name="f")
    g.forward(w0=2.0, x0=-1.0, w1=-3.0, x1=-2.0, w2=-3.0)
    g.backward()
    return g, {}


def two_layer_mlp():
    """A two-layer net on a batch of 4: affine - relu - affine - softmax loss, each layer
    a named scope drawn as a cluster. Tensors show mean, std, min, max and L2 norm."""
    rng = np.random.default_rng(0)
    g = gn.Graph()
    x = g.input("x", shape=(None, 5))
    y = g.input("y", shape=(None,), dtype=np.int64)
    h = g.relu(g.affine(x, g.param("layer1/W", rng.standard_normal((5, 8)) * 0.5),
                        g.param("layer1/b", np.zeros(8)), name="layer1/fc"), name="layer1/relu")
    scores = g.affine(h, g.param("layer2/W", rng.standard_normal((8, 3)) * 0.5),
                      g.param("layer2/b", np.zeros(3)), name="layer2/fc")
    g.softmax_loss(scores, y, name="loss")
    g.forward(x=rng.standard_normal((4, 5)), y=np.array([0, 1, 2, 1]))
    g.backward()
    return g, {}


def small_cnn():
    """conv - relu - max pool - affine - softmax loss on two 3x8x8 images, with
    show_cache=True: what each gate saved for its backward pass."""
    rng = np.random.default_rng(0)
    g = gn.Graph()
    x = g.input("x", shape=(None, 3, 8, 8))
    y = g.input("y", shape=(None,), dtype=np.int64)
    conv = g.conv(x, g.param("conv/w", rng.standard_normal((4, 3, 3, 3)) * 0.3),
                  g.param("conv/b", np.zeros(4)), pad=1, name="conv/conv")
    pooled = g.max_pool(g.relu(conv, name="conv/relu"), name="conv/pool")
    scores = g.affine(pooled, g.param("fc/W", rng.standard_normal((64, 5)) * 0.1),
                      g.param("fc/b", np.zeros(5)), name="fc/affine")
    g.softmax_loss(scores, y, name="loss")
    g.forward(x=rng.standard_normal((2, 3, 8, 8)), y=np.array([1, 3]))
    g.backward()
    return g, {"show_cache": True}


def vanishing_sigmoid_stack():
    """20 layers of affine + sigmoid, drawn with the default options: each sigmoid
    multiplies the gradient by at most 0.25, so the early layers' gradients vanish
    (orange borders). Too tall to draw layer by layer, the stack collapses by itself into
    a few pieces, each showing its output, the range of gradient norms inside and how
    many of its nodes are flagged."""
    rng = np.random.default_rng(0)
    g = gn.Graph()
    h = g.input("x", shape=(None, 16))
    for i in range(1, 21):
        w = g.param(f"layer{i}/W", rng.standard_normal((16, 16)) / 4)
        b = g.param(f"layer{i}/b", np.zeros(16))
        h = g.sigmoid(g.affine(h, w, b, name=f"layer{i}/fc"), name=f"layer{i}/sigmoid")
    scores = g.affine(h, g.param("out/W", rng.standard_normal((16, 4)) / 4),
                      g.param("out/b", np.zeros(4)), name="out/fc")
    g.softmax_loss(scores, np.arange(8) % 4, name="loss")
    g.forward(x=rng.standard_normal((8, 16)))
    g.backward()
    return g, {}


def two_layer_net():
    """The course's TwoLayerNet after model.loss(X, y) with reg=0 (every model's
    default): the forward ran only the data loss, so the L2 branch is left out (the legend
    says how many nodes; show_not_run=True draws them, marked), and the loss node shows
    its value and gradient."""
    from graphnet.models import TwoLayerNet
    np.random.seed(0)
    model = TwoLayerNet(input_dim=64, hidden_dim=32, num_classes=10, weight_scale=0.1)
    rng = np.random.default_rng(0)
    model.loss(rng.standard_normal((20, 64)), rng.integers(0, 10, 20))
    return model.graph, {}


def three_layer_convnet():
    """The course's ThreeLayerConvNet on CIFAR-shaped input, reg=1e-3: conv - relu -
    2x2 max pool - affine - relu - affine - softmax, and the L2 penalty's gates. Tensor
    nodes show one number each for value and gradient, their L2 norms; the tooltips of
    the SVG hold the full statistics."""
    from graphnet.models import ThreeLayerConvNet
    np.random.seed(0)
    model = ThreeLayerConvNet(num_filters=8, filter_size=5, hidden_dim=20, reg=1e-3)
    rng = np.random.default_rng(0)
    model.loss(rng.standard_normal((4, 3, 32, 32)), np.array([1, 4, 7, 9]))
    return model.graph, {}


def unrolled_rnn():
    """A vanilla RNN unrolled over 40 time steps, h_t = tanh(x_t Wx + h_(t-1) Wh + b),
    one scope per step: the run of repeated steps collapses into a few pieces, and the
    gradient reaching the early steps vanishes."""
    rng = np.random.default_rng(0)
    g = gn.Graph()
    Wx = g.param("Wx", rng.standard_normal((8, 8)) * 0.3)
    Wh = g.param("Wh", rng.standard_normal((8, 8)) * 0.3)
    b, zero = g.param("b", np.zeros(8)), g.param("zero", np.zeros(8))
    h = g.input("h0", shape=(None, 8))
    feeds = {"h0": rng.standard_normal((2, 8))}
    for t in range(1, 41):
        x = g.input(f"x{t}", shape=(None, 8))
        feeds[f"x{t}"] = rng.standard_normal((2, 8))
        h = g.tanh(g.add(g.affine(x, Wx, b, name=f"t{t}/xWx"),
                         g.affine(h, Wh, zero, name=f"t{t}/hWh"), name=f"t{t}/sum"),
                   name=f"t{t}/h")
    g.sum(h, name="loss")
    g.forward(**feeds)
    g.backward()
    return g, {}


def _last_step_loss(cell, T=40, forget_bias=0.0):
    """A one-layer rnn or lstm over a random sequence of T steps (N=2, D=3, H=5, weights
    0.4 N(0, 1)) whose loss is the sum of its last hidden state, run forward and
    backward; returns the layer's node."""
    rng = np.random.default_rng(0)
    N, D, H, k = 2, 3, 5, 1 if cell == "rnn" else 4
    b = np.zeros(k * H)
    b[H:2 * H] = forget_bias if cell == "lstm" else 0.0  # the LSTM's forget gate block
    g = gn.Graph()
    layer = getattr(g, cell)(g.input("x", shape=(N, T, D)), g.input("h0", shape=(N, H)),
                             g.param("Wx", rng.standard_normal((D, k * H)) * 0.4),
                             g.param("Wh", rng.standard_normal((H, k * H)) * 0.4),
                             g.param("b", b), name=cell)
    g.sum(layer[:, -1], name="loss")
    g.forward(x=rng.standard_normal((N, T, D)), h0=np.zeros((N, H)))
    g.backward()
    return layer


def rnn_bptt():
    """An rnn gate over 40 steps with the loss on the last step, unrolled by
    viz.unroll into one rnn_step per time step (same weights and values): the runs of
    steps collapse into blocks, and the early blocks, where dL/dh_t fell below 1e-6
    (steps 1 to 20), carry the vanishing border."""
    return viz.unroll(_last_step_loss("rnn")), {}


def lstm_bptt():
    """The same with an lstm gate whose forget gate starts near 1 (bias 3): unrolled into
    lstm_step gates, the gradient reaching the first step has an L2 norm of 0.072 (the
    RNN's: 6e-12; both 3.16 at the last step), and no step is flagged."""
    return viz.unroll(_last_step_loss("lstm", forget_bias=3.0)), {}


def nan_anomaly():
    """Under gn.detect_anomaly() the forward stops at the first NaN: log of a negative
    number. The drawing marks that node and its path to the loss in black (the nodes
    after it did not run: they have no value)."""
    g = gn.Graph()
    x, w = g.input("x"), g.input("w")
    logged = g.log(g.multiply(x, w, name="xw"), name="log")
    g.add(g.multiply(logged, 2.0, name="twice"), g.tanh(w, name="tanh_w"), name="loss")
    try:
        with gn.detect_anomaly(), np.errstate(invalid="ignore"):
            g.forward(x=2.0, w=-1.5)
    except gn.AnomalyError as error:
        return g, {"anomaly": error}
    raise AssertionError("the forward should have met a NaN")


def gradient_change():
    """viz.diff(before, after): the MLP again after its second layer's weights were
    scaled by 10; each node is filled by how its gradient's L2 norm changed (brown grew,
    teal shrank, log scale)."""
    g, _ = two_layer_mlp()
    before = viz.snapshot(g, "before")
    g.params["layer2/W"] = g.params["layer2/W"] * 10
    g.forward(x=np.random.default_rng(0).standard_normal((4, 5)), y=np.array([0, 1, 2, 1]))
    g.backward()
    return viz.diff(before, g), None


EXAMPLES = [
    ("add_multiply_circuit", "The (x + y) * z circuit", add_multiply_circuit),
    ("sigmoid_neuron", "A sigmoid neuron", sigmoid_neuron),
    ("two_layer_mlp", "A two-layer MLP", two_layer_mlp),
    ("small_cnn", "A small CNN, with what each gate cached", small_cnn),
    ("vanishing_sigmoid_stack", "Vanishing gradients in a 20-layer sigmoid stack",
     vanishing_sigmoid_stack),
    ("two_layer_net", "A model with reg=0: the branch its forward skipped is left out",
     two_layer_net),
    ("three_layer_convnet", "The ThreeLayerConvNet", three_layer_convnet),
    ("unrolled_rnn", "An RNN unrolled over 40 steps", unrolled_rnn),
    ("rnn_bptt", "Backprop through time in an RNN: the early steps vanish", rnn_bptt),
    ("lstm_bptt", "Backprop through time in an LSTM: the cell path keeps the gradient",
     lstm_bptt),
    ("nan_anomaly", "Where a NaN started, and its path to the loss", nan_anomaly),
    ("gradient_change", "How each gradient changed: viz.diff", gradient_change),
]


def main(only=()):
    unknown = set(only) - {stem for stem, _, _ in EXAMPLES}
    if unknown:
        raise SystemExit(f"no such pictures: {', '.join(sorted(unknown))}")
    entries = []
    for stem, title, build in EXAMPLES:
        description = " ".join(build.__doc__.split())
        entries.append(f"## {title}\n\n{description}\n\n"
                       f"[SVG]({stem}.svg) · [PNG]({stem}.png)\n\n![{title}]({stem}.svg)\n")
        if only and stem not in only:
            continue
        graph, options = build()
        drawing = graph if options is None else viz.draw(graph, **options)
        viz.export(drawing, HERE / f"{stem}.svg")
        png = viz.export(drawing, HERE / f"{stem}.png")
        # A drawing has few colours: a 256-colour palette keeps it sharp at a third the size.
        with Image.open(png) as image:
            small = image.convert("RGB").quantize(256)
        small.save(png, optimize=True)
        if max(small.size) > 4000:
            raise SystemExit(f"{stem}.png is {small.size[0]} x {small.size[1]} pixels: the "
                             "default drawing should stay within 4000 on its long side")
        print(f"wrote {stem}.svg and {stem}.png ({small.size[0]} x {small.size[1]} px)")
    index = ("# graphnet gallery\n\nDrawings made by `graphnet.viz.draw` with its default "
             "options (unless the text says otherwise) after a forward and a backward pass. "
             "Values are blue, gradients vermillion; each edge carries the gradient its "
             "consumer sent back: its width is its size on one log scale, its colour its "
             "sign (purple negative, green positive; grey for a tensor's norm). Borders warn: "
             "orange vanishing, pink exploding, black NaN/Inf. Every PNG stays within 4000 "
             "pixels on its long side. Regenerate them all with "
             "`python visualizations/make_gallery.py`.\n\n"
             + "\n".join(entries))
    (HERE / "index.md").write_text(index, encoding="utf-8")
    print("wrote index.md")


if __name__ == "__main__":
    main(sys.argv[1:])
