"""Big graphs draw small: every default drawing stays within about 4000 px on its long
side (deep stacks, the CNN, an unrolled RNN, a deep fully connected net; the 10,000-node
chain is in test_draw.py), stacks in the rank direction (no staircase of clusters), and
keeps its warnings on collapsed blocks. Rendered by Graphviz, measured on the PNG. The
stack and the RNN are the gallery's (visualizations/make_gallery.py)."""

import io
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from graphnet import viz
from graphnet.viz.render import to_bytes

pytestmark = [
    pytest.mark.skipif(not shutil.which("dot"), reason="no Graphviz 'dot'"),
    pytest.mark.slow,
]
LONG_SIDE = 4000
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "visualizations"))
import make_gallery as gallery  # noqa: E402  (the folder just put on the path)


def png_size(drawing):
    from PIL import Image

    with Image.open(io.BytesIO(to_bytes(drawing, "png"))) as image:
        return image.size


def svg_size(drawing):
    """(width, height) in PNG pixels (Graphviz's bitmaps are 96 dpi, its SVG in points)."""
    svg = to_bytes(drawing, "svg").decode()
    width, height = (
        float(v) for v in re.search(r'width="([\d.]+)pt" height="([\d.]+)pt"', svg).groups()
    )
    return width * 4 / 3, height * 4 / 3


def rows_text(drawing):
    return re.sub(r"<[^>]+>", " ", drawing.source)


def test_a_20_layer_stack_fits_and_shows_where_the_gradient_vanishes():
    drawing = viz.draw(gallery.vanishing_sigmoid_stack()[0])
    width, height = png_size(drawing)
    assert max(width, height) <= LONG_SIDE and height > width  # stacked top to bottom
    assert "vanishing" in rows_text(drawing)


def test_clusters_stack_in_the_rank_direction_instead_of_a_staircase():
    stack, _ = gallery.vanishing_sigmoid_stack()
    width, height = svg_size(viz.draw(stack, collapse=False))
    assert width < 1000 < height


def test_the_cnn_fits():
    from graphnet.models import ThreeLayerConvNet

    np.random.seed(0)
    model = ThreeLayerConvNet(num_filters=4, filter_size=3, hidden_dim=10, reg=0.1)
    model.loss(np.random.randn(2, 3, 32, 32), np.array([1, 2]))
    assert max(png_size(viz.draw(model.graph))) <= LONG_SIDE


def test_an_unrolled_rnn_fits_and_keeps_its_time_steps_in_order():
    drawing = viz.draw(gallery.unrolled_rnn()[0])
    assert max(png_size(drawing)) <= LONG_SIDE
    titles = re.findall(r"<B>([^<]*× \[[^<]*)</B>", drawing.source)
    assert titles and all("affine" in t and "tanh" in t for t in titles)


def test_a_deep_fully_connected_net_with_batchnorm_fits():
    from graphnet.models import FullyConnectedNet

    np.random.seed(0)
    model = FullyConnectedNet(
        [20] * 12,
        input_dim=30,
        num_classes=5,
        normalization="batchnorm",
        dropout=0.5,
        reg=0.01,
        seed=0,
    )
    model.loss(np.random.randn(6, 30), np.arange(6) % 5)
    assert max(png_size(viz.draw(model.graph))) <= LONG_SIDE
