"""Regenerate the gallery of graphnet drawings in this folder:

    python visualizations/make_gallery.py

Each example is built, run forward and backward, drawn with graphnet.viz.draw, and
written as SVG and PNG next to this script, with index.md listing them. Needs the
Graphviz `dot` program. Every random number comes from a fixed seed, so the drawings
only change when the code does.
"""
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
    """20 layers of affine + sigmoid: each sigmoid multiplies the gradient by at most
    0.25, so the early layers' gradients vanish (orange borders). Each layer is
    collapsed into one block showing its output and the range of gradient norms inside."""
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
    return g, {"collapse": "groups"}


EXAMPLES = [
    ("add_multiply_circuit", "The (x + y) * z circuit", add_multiply_circuit),
    ("sigmoid_neuron", "A sigmoid neuron", sigmoid_neuron),
    ("two_layer_mlp", "A two-layer MLP", two_layer_mlp),
    ("small_cnn", "A small CNN, with what each gate cached", small_cnn),
    ("vanishing_sigmoid_stack", "Vanishing gradients in a 20-layer sigmoid stack",
     vanishing_sigmoid_stack),
]


def main():
    entries = []
    for stem, title, build in EXAMPLES:
        graph, options = build()
        drawing = viz.draw(graph, **options)
        viz.export(drawing, HERE / f"{stem}.svg")
        png = viz.export(drawing, HERE / f"{stem}.png")
        # A drawing has few colours: a 256-colour palette keeps it sharp at a third the size.
        with Image.open(png) as image:
            small = image.convert("RGB").quantize(256)
        small.save(png, optimize=True)
        description = " ".join(build.__doc__.split())
        entries.append(f"## {title}\n\n{description}\n\n"
                       f"[SVG]({stem}.svg) · [PNG]({stem}.png)\n\n![{title}]({stem}.svg)\n")
        print(f"wrote {stem}.svg and {stem}.png")
    index = ("# graphnet gallery\n\nDrawings made by `graphnet.viz.draw` after a forward and "
             "a backward pass. Values are green, gradients red; each edge carries the "
             "gradient its consumer sent back, its width and colour on one log scale. "
             "Regenerate them all with `python visualizations/make_gallery.py`.\n\n"
             + "\n".join(entries))
    (HERE / "index.md").write_text(index, encoding="utf-8")
    print("wrote index.md")


if __name__ == "__main__":
    main()
