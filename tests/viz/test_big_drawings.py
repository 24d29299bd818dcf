"""Big graphs draw small: every default drawing stays within about 4000 px on its long
side (deep stacks, a 10,000-node chain, the CNN, an unrolled RNN, a deep fully connected
net), stacks in the rank direction (no staircase of clusters), and keeps its warnings on
collapsed blocks. Rendered by Graphviz, measured on the PNG."""
import io
import re
import shutil

import numpy as np
import pytest

import graphnet as gn
from graphnet import viz
from graphnet.viz.render import to_bytes

pytestmark = [pytest.mark.skipif(not shutil.which("dot"), reason="no Graphviz 'dot'"),
              pytest.mark.slow]
LONG_SIDE = 4000


def png_size(drawing):
    from PIL import Image
    with Image.open(io.BytesIO(to_bytes(drawing, "png"))) as image:
        return image.size


def svg_size(drawing):
    """(width, height) in PNG pixels (Graphviz's bitmaps are 96 dpi, its SVG in points)."""
    svg = to_bytes(drawing, "svg").decode()
    width, height = (float(v) for v in re.search(r'width="([\d.]+)pt" height="([\d.]+)pt"',
                                                 svg).groups())
    return width * 4 / 3, height * 4 / 3


def rows_text(drawing):
    return re.sub(r"<[^>]+>", " ", drawing.source)


def sigmoid_stack(layers=20):
    rng = np.random.default_rng(0)
    g = gn.Graph()
    h = g.input("x", shape=(None, 16))
    for i in range(1, layers + 1):
        w = g.param(f"layer{i}/W", rng.standard_normal((16, 16)) / 4)
        b = g.param(f"layer{i}/b", np.zeros(16))
        h = g.sigmoid(g.affine(h, w, b, name=f"layer{i}/fc"), name=f"layer{i}/sigmoid")
    g.softmax_loss(g.affine(h, g.param("out/W", rng.standard_normal((16, 4)) / 4),
                            g.param("out/b", np.zeros(4)), name="out/fc"),
                   np.arange(8) % 4, name="loss")
    g.forward(x=rng.standard_normal((8, 16)))
    g.backward()
    return g


def unrolled_rnn(steps=40, width=8):
    """h_t = tanh(x_t Wx + h_{t-1} Wh + b), one scope per time step, the loss on the sum
    of the last state: the vanilla RNN of CS231n's assignment 3, unrolled by hand."""
    rng = np.random.default_rng(0)
    g = gn.Graph()
    Wx = g.param("Wx", rng.standard_normal((width, width)) * 0.3)
    Wh = g.param("Wh", rng.standard_normal((width, width)) * 0.3)
    b = g.param("b", np.zeros(width))
    zero = g.param("zero", np.zeros(width))
    h = g.input("h0", shape=(None, width))
    feeds = {"h0": rng.standard_normal((2, width))}
    for t in range(1, steps + 1):
        x = g.input(f"x{t}", shape=(None, width))
        feeds[f"x{t}"] = rng.standard_normal((2, width))
        h = g.tanh(g.add(g.affine(x, Wx, b, name=f"t{t}/xWx"),
                         g.affine(h, Wh, zero, name=f"t{t}/hWh"), name=f"t{t}/sum"),
                   name=f"t{t}/h")
    g.sum(h, name="loss")
    g.forward(**feeds)
    g.backward()
    return g


def test_a_20_layer_stack_fits_and_shows_where_the_gradient_vanishes():
    drawing = viz.draw(sigmoid_stack())
    width, height = png_size(drawing)
    assert max(width, height) <= LONG_SIDE and height > width  # stacked top to bottom
    assert "vanishing" in rows_text(drawing)


def test_clusters_stack_in_the_rank_direction_instead_of_a_staircase():
    width, height = svg_size(viz.draw(sigmoid_stack(), collapse=False))
    assert width < 1000 < height


def test_a_10000_node_chain_fits():
    g = gn.Graph()
    h = g.input("x")
    for _ in range(10_000):
        h = g.tanh(h)
    g.forward(x=0.5)
    g.backward()
    assert max(png_size(viz.draw(g))) <= LONG_SIDE


def test_the_cnn_fits():
    from graphnet.models import ThreeLayerConvNet
    np.random.seed(0)
    model = ThreeLayerConvNet(num_filters=4, filter_size=3, hidden_dim=10, reg=0.1)
    model.loss(np.random.randn(2, 3, 32, 32), np.array([1, 2]))
    assert max(png_size(viz.draw(model.graph))) <= LONG_SIDE


def test_an_unrolled_rnn_fits_and_keeps_its_time_steps_in_order():
    drawing = viz.draw(unrolled_rnn())
    assert max(png_size(drawing)) <= LONG_SIDE
    titles = re.findall(r"<B>([^<]*× \[[^<]*)</B>", drawing.source)
    assert titles and all("affine" in t and "tanh" in t for t in titles)


def test_a_deep_fully_connected_net_with_batchnorm_fits():
    from graphnet.models import FullyConnectedNet
    np.random.seed(0)
    model = FullyConnectedNet([20] * 12, input_dim=30, num_classes=5,
                              normalization="batchnorm", dropout=0.5, reg=0.01, seed=0)
    model.loss(np.random.randn(6, 30), np.arange(6) % 5)
    assert max(png_size(viz.draw(model.graph))) <= LONG_SIDE
