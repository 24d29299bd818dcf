"""graphnet.viz.draw and export: labels and edge gradients against numpy (read back from
the DOT source), the log scale, one meaning per colour, styles, flags, what the last
forward did not run, anomalies, clusters and collapsing, the size of big drawings, and the
files."""

import html
import io
import re
import xml.etree.ElementTree as ET

import graphviz
import numpy as np
import pytest

import graphnet as gn
from graphnet import viz
from graphnet.viz import scale

needs_dot = pytest.mark.skipif(
    not __import__("shutil").which("dot"), reason="the Graphviz 'dot' program is not installed"
)


# ----- reading a drawing back ----------------------------------------------------------

NODE = re.compile(r"^\s*(n_\S+) \[label=<(<TABLE.*?</TABLE>)>\s*(.*)$", re.M)
EDGE = re.compile(r"^\s*(n_\S+) -> (n_\S+) \[(.*)\]$", re.M)


def _text(markup):
    return html.unescape(re.sub(r"<[^>]+>", "", markup)).strip()


def node_rows(drawing):
    """{node name: [row text, ...]}; the first row of a label is the node's name."""
    rows = {}
    for _, label, _ in NODE.findall(drawing.source):
        texts = [_text(r) for r in re.findall(r"<TR>(.*?)</TR>", label)]
        rows[texts[0]] = texts[1:]
    return rows


def node_attrs(drawing):
    """{node name: attribute text after the label}"""
    return {
        _text(re.findall(r"<TR>(.*?)</TR>", label)[0]): rest
        for _, label, rest in NODE.findall(drawing.source)
    }


def ids(drawing):
    """{dot id: node name}"""
    return {
        key: _text(re.findall(r"<TR>(.*?)</TR>", label)[0])
        for key, label, _ in NODE.findall(drawing.source)
    }


def edges(drawing):
    """[(tail name, head name, label text or None, penwidth, colour)]"""
    names, out = ids(drawing), []
    for tail, head, attrs in EDGE.findall(drawing.source):
        if tail not in names or head not in names or "style=invis" in attrs:
            continue
        label = re.search(r'label="([^"]*)"', attrs)
        out.append(
            (
                names[tail],
                names[head],
                label.group(1) if label else None,
                float(re.search(r"penwidth=([\d.]+)", attrs).group(1)),
                re.search(r'color="(#\w+)"', attrs).group(1),
            )
        )
    return out


def tooltips(drawing):
    """{node name: tooltip text}"""
    found = re.finditer(
        r'(n_\S+) \[label=<(<TABLE.*?</TABLE>)>[^\n]*?tooltip="((?:[^"\\]|\\.)*)"',
        drawing.source,
        re.S,
    )
    return {
        _text(re.findall(r"<TR>(.*?)</TR>", label)[0]): html.unescape(tip)
        for _, label, tip in (m.groups() for m in found)
    }


def pieces(rows, ops):
    """How many repeats the blocks '[ops]' of a collapsed run hold together."""
    total = 0
    for name in rows:
        if name.endswith(f"× [{ops}]"):
            counts = re.match(r"(\d+)–(\d+) of \d+|(\d+) ×", name).groups()
            total += int(counts[2]) if counts[2] else int(counts[1]) - int(counts[0]) + 1
    return total


def number(text, key):
    """The number after `key` in a label row: 'value -12' -> -12.0."""
    return float(re.search(re.escape(key) + r"\s+([-+\w.]+)", text).group(1))


def edge_number(label):
    return float(label.split()[-1])


# ----- graphs --------------------------------------------------------------------------


def circuit():
    g = gn.Graph()
    x, y, z = g.input("x"), g.input("y"), g.input("z")
    g.multiply(g.add(x, y, name="q"), z, name="f")
    g.forward(x=-2.0, y=5.0, z=-4.0)
    g.backward()
    return g


def mlp(rng):
    g = gn.Graph()
    x = g.input("x", shape=(None, 5))
    y = g.input("y", shape=(None,), dtype=np.int64)
    w1 = g.param("layer1/W", rng.standard_normal((5, 8)))
    b1 = g.param("layer1/b", rng.standard_normal(8) * 0.1)
    h = g.relu(g.affine(x, w1, b1, name="layer1/fc"), name="layer1/relu")
    w2 = g.param("layer2/W", rng.standard_normal((8, 3)))
    b2 = g.param("layer2/b", np.zeros(3))
    g.softmax_loss(g.affine(h, w2, b2, name="layer2/fc"), y, name="loss")
    g.forward(x=rng.standard_normal((4, 5)), y=np.array([0, 1, 2, 1]))
    g.backward()
    return g


def sigmoid_stack(layers=20, width=16, seed=0):
    rng = np.random.default_rng(seed)
    g = gn.Graph()
    h = g.input("x", shape=(None, width))
    for i in range(1, layers + 1):
        w = g.param(f"layer{i}/W", rng.standard_normal((width, width)) / np.sqrt(width))
        b = g.param(f"layer{i}/b", np.zeros(width))
        h = g.sigmoid(g.affine(h, w, b, name=f"layer{i}/fc"), name=f"layer{i}/sigmoid")
    g.sum(h, name="loss")
    g.forward(x=rng.standard_normal((8, width)))
    g.backward()
    return g


# ----- labels --------------------------------------------------------------------------


def test_scalar_circuit_labels_show_gate_name_shape_value_and_gradient():
    g = circuit()
    drawing = viz.draw(g)
    assert isinstance(drawing, graphviz.Digraph)
    rows = node_rows(drawing)
    for node in g.nodes:
        text = " | ".join(rows[node.name])
        assert node.op in text and "scalar" in text
        assert number(text, "value") == node.value
        assert number(text, "grad") == node.grad
    # value above gradient, as in the course's circuit figures
    assert rows["f"].index("value -12") < rows["f"].index("grad 1")
    assert f'COLOR="{scale.VALUE}"><B>value' in drawing.source
    assert f'COLOR="{scale.GRAD}"><B>grad' in drawing.source


def test_numbers_are_rounded_to_four_significant_digits():
    g = gn.Graph()
    g.sigmoid(g.input("x"), name="s")
    g.forward(x=1.0)
    g.backward()
    rows = node_rows(viz.draw(g))
    assert "value 0.7311" in rows["s"] and "grad 0.1966" in rows["x"]


def test_edges_carry_the_gradient_each_consumer_sent_not_the_total():
    g = gn.Graph()
    x, y = g.input("x"), g.input("y")
    g.add(g.multiply(x, y, name="xy"), x, name="f")  # x fans out to two gates
    g.forward(x=3.0, y=-2.0)
    g.backward()
    found = {(t, h): edge_number(label) for t, h, label, _, _ in edges(viz.draw(g))}
    assert found[("x", "xy")] == -2.0  # d(xy)/dx = y
    assert found[("x", "f")] == 1.0  # the add gate passes 1 straight through
    assert found[("y", "xy")] == 3.0
    assert g["x"].grad == -1.0  # the node shows the sum
    assert number(" ".join(node_rows(viz.draw(g))["x"]), "grad") == -1.0


@pytest.mark.parametrize("detail", ["compact", "full"])
def test_integer_tensors_say_what_they_hold_not_a_norm(detail):
    """A mask (a compare's 0/1) as how many entries are set, labels as their range."""
    g = mlp(np.random.default_rng(0))
    g.where(g.compare(g["layer1/relu"], ">", 0.0, name="active"), 1.0, 0.0, name="on")
    g.forward(x=np.random.default_rng(1).standard_normal((4, 5)), y=np.array([0, 2, 1, 2]))
    rows = node_rows(viz.draw(g, detail=detail, show_not_run=True))
    active = g["active"].value
    assert rows["active"][1] == f"value {np.count_nonzero(active)} of {active.size} set"
    assert rows["y"][1] == "value ints 0 to 2"


def test_tensor_labels_are_compact_with_the_full_statistics_in_tooltip_and_detail_full():
    g = mlp(np.random.default_rng(0))
    compact, full = viz.draw(g), viz.draw(g, detail="full")
    tips = tooltips(compact)
    for name in ("layer1/fc", "layer1/W", "layer2/fc"):
        node = g[name]
        rows = node_rows(compact)[name]
        assert str(node.shape).replace(" ", "") in rows[0].replace(" ", "")
        assert len(rows) == 3  # gate and shape, then one number each
        assert number(rows[1], "value L2") == pytest.approx(np.linalg.norm(node.value), 1e-3)
        assert number(rows[2], "grad L2") == pytest.approx(np.linalg.norm(node.grad), 1e-3)
        text = " | ".join(node_rows(full)[name])
        value_rows, grad_rows = text.split("grad")[0], text.split("grad", 1)[1]
        tip = tips[name]
        for array, part, what in (
            (node.value, value_rows, "value"),
            (node.grad, grad_rows, "grad"),
        ):
            tipped = re.search(f"\n{what}: (.*)", tip).group(1)
            for key, expected in (
                ("mean", array.mean()),
                ("std", array.std()),
                ("min", array.min()),
                ("max", array.max()),
                ("L2", np.linalg.norm(array)),
            ):
                assert number(part, key) == pytest.approx(expected, rel=1e-3, abs=1e-12)
                assert number(tipped, key) == pytest.approx(expected, rel=1e-3, abs=1e-12)
    assert "formula: layer1/fc = " in tips["layer1/fc"] and "rule: " in tips["layer1/fc"]
    with pytest.raises(ValueError, match="detail must be"):
        viz.draw(g, detail="all")


def test_tensor_edges_show_the_norm_of_the_gradient_sent():
    g = mlp(np.random.default_rng(1))
    found = {(t, h): label for t, h, label, _, _ in edges(viz.draw(g))}
    w_grad = g["layer1/W"].grad  # W1 has a single consumer: the edge carries all of it
    assert edge_number(found[("layer1/W", "layer1/fc")]) == pytest.approx(
        np.linalg.norm(w_grad), rel=1e-3
    )
    assert "L2" in found[("layer1/W", "layer1/fc")]
    assert found[("y", "loss")] is None  # labels get no gradient


def test_edge_widths_grow_with_the_gradient_and_share_one_log_scale():
    g = gn.Graph()
    xs = [g.input(f"x{i}") for i in range(4)]
    total = xs[0]
    for i, x in enumerate(xs[1:], 1):
        total = g.add(total, g.multiply(x, 10.0**i, name=f"scaled{i}"), name=f"sum{i}")
    g.forward(**{f"x{i}": 1.0 for i in range(4)})
    g.backward()
    weighted = sorted(
        (abs(edge_number(label)), width)
        for t, h, label, width, _ in edges(viz.draw(g))
        if label and t.startswith("x")
    )
    widths = [w for _, w in weighted]
    assert widths == sorted(widths) and widths[0] < widths[-1]
    assert [m for m, _ in weighted] == [1, 10, 100, 1000]


def test_edge_colour_means_only_the_sign_and_never_the_gradient_colour():
    found = {(t, h): colour for t, h, _, _, colour in edges(viz.draw(circuit()))}

    def rgb(colour):
        return [int(colour[i : i + 2], 16) for i in (1, 3, 5)]

    red, green, blue = rgb(found[("z", "f")])  # +3: green (PRGn)
    assert green > red and green > blue
    red, green, blue = rgb(found[("q", "f")])  # -4: purple
    assert red > green and blue > green
    tensor = {colour for *_, colour in edges(viz.draw(mlp(np.random.default_rng(0))))}
    assert all(len(set(rgb(c))) == 1 for c in tensor)  # norms have no sign: greys
    every_edge_colour = {c for *_, c in edges(viz.draw(circuit()))} | tensor
    assert not every_edge_colour & {
        scale.VALUE.lower(),
        scale.GRAD.lower(),
        scale.VALUE,
        scale.GRAD,
    }
    # one meaning per colour: text, sign, warnings and the active step never share one
    channels = [
        {scale.VALUE, scale.GRAD},
        {scale.GradientScale.NEGATIVE, scale.GradientScale.POSITIVE},
        {scale.FLAG_COLORS["vanishing"], scale.FLAG_COLORS["exploding"]},
        {scale.ACTIVE_FILL},
    ]
    assert len(set().union(*channels)) == sum(map(len, channels))


def test_legend_is_present_and_explains_the_scale():
    drawing = viz.draw(circuit())
    assert re.search(r"^\s*legend \[", drawing.source, re.M)
    legend = _text(re.search(r"legend \[label=<(<TABLE.*?</TABLE>)>", drawing.source).group(1))
    for words in (
        "input",
        "gate",
        "loss / output",
        "value",
        "grad",
        "log scale",
        "its sign",
        "vanishing",
        "exploding",
        "-4",
        "3",
    ):
        assert words in legend
    assert "legend" not in viz.draw(circuit(), legend=False).source


def test_each_role_has_its_own_style():
    g = gn.Graph()
    x = g.input("x", shape=(None, 3))
    w, b = g.param("W", np.ones((3, 2))), g.param("b", np.zeros(2))
    h = g.relu(g.affine(x, w, b, name="fc"), name="relu")
    g.softmax_loss(h, g.const(np.array([0, 1]), name="labels"), name="loss")
    g.forward(x=np.ones((2, 3)))
    g.backward()
    attrs = node_attrs(viz.draw(g))

    def style(name):
        return (
            re.search(r"shape=(\w+)", attrs[name]).group(1),
            re.search(r'fillcolor="(#\w+)"', attrs[name]).group(1),
            re.search(r'style="?([\w,]+)', attrs[name]).group(1),
        )

    styles = [style(n) for n in ("x", "W", "labels", "relu", "loss")]
    assert len(set(styles)) == 5
    assert style("fc") == style("relu")  # every gate that is not the loss looks alike


# ----- flags ---------------------------------------------------------------------------


def test_a_deep_sigmoid_stack_flags_its_early_layers_as_vanishing():
    g = sigmoid_stack()
    drawing = viz.draw(g, collapse=False)
    for i in range(1, 6):
        assert drawing.flags[f"layer{i}/sigmoid"] == "vanishing"
        assert drawing.flags[f"layer{i}/W"] == "vanishing"
    for name in ("layer20/sigmoid", "layer20/W", "loss"):
        assert name not in drawing.flags
    rows = node_rows(drawing)
    assert "⚠ vanishing gradient" in rows["layer1/sigmoid"]
    assert "vanishing" not in " ".join(rows["layer20/sigmoid"])
    assert f'color="{scale.FLAG_COLORS["vanishing"]}"' in node_attrs(drawing)["layer1/sigmoid"]


def test_thresholds_are_configurable_and_exploding_nan_inf_are_flagged():
    g = sigmoid_stack(layers=3)
    assert viz.draw(g).flags == {}
    assert viz.draw(g, vanishing=1e9).flags["layer1/sigmoid"] == "vanishing"
    assert viz.draw(g, exploding=1e-9).flags["loss"] == "exploding"
    g = gn.Graph()
    x = g.input("x")
    g.log(x, name="f")
    g.multiply(g.log(x, name="log"), 0.0, name="h")  # h = -inf * 0 = NaN at x = 0
    with np.errstate(divide="ignore", invalid="ignore"):
        g.forward(x=0.0)
        g.backward("f")  # d ln x / dx = 1/0
        assert viz.draw(g).flags["x"] == "Inf"
        g.backward("h")  # dh/dx = 0 * 1/0
        assert viz.draw(g).flags["x"] == "NaN"
    assert viz.gradient_flag(0.0) is None  # a gradient blocked on purpose is not a warning


# ----- scopes, clusters and collapsing -------------------------------------------------


def test_scopes_become_nested_clusters_and_group_by_is_configurable():
    g = gn.Graph()
    x = g.input("x")
    h = g.tanh(g.multiply(x, 2.0, name="net/layer1/scale"), name="net/layer1/tanh")
    g.sigmoid(h, name="net/out")
    g.forward(x=0.5)
    source = viz.draw(g).source
    assert "subgraph cluster_n_net" in source and "label=net" in source
    assert "subgraph cluster_n_net_2f_layer1" in source and "label=layer1" in source
    assert "cluster_n_" not in viz.draw(g, group_by=None).source
    by_op = viz.draw(g, group_by=lambda node: node.op if node.gate else None).source
    assert "subgraph cluster_n_tanh" in by_op


def test_named_groups_collapse_into_one_block_with_their_weights():
    g = mlp(np.random.default_rng(2))
    drawing = viz.draw(g, collapse=["layer1"])
    rows = node_rows(drawing)
    assert "layer1" in rows and "layer1/fc" not in rows and "layer1/W" not in rows
    assert "layer2/fc" in rows
    assert any("4 nodes" in r for r in rows["layer1"])
    # the block's outgoing edge carries what layer2/fc sent to layer1/relu
    found = {(t, h): label for t, h, label, _, _ in edges(drawing)}
    sent = g["layer2/W"].value  # d layer2/fc / d h = dout @ W2.T
    expected = np.linalg.norm(g["layer2/fc"].grad @ sent.T)
    assert edge_number(found[("layer1", "layer2/fc")]) == pytest.approx(expected, rel=1e-3)


def test_graphs_past_the_size_threshold_collapse_by_scope():
    g = sigmoid_stack(layers=12, width=4)
    rows = node_rows(viz.draw(g, max_nodes=40))
    assert len(rows) <= 16 and "layer1" in rows and "layer12" in rows
    assert any("vanishing" in r for r in rows["layer1"])
    assert len(node_rows(viz.draw(g, collapse=False))) > 45


@pytest.mark.slow
def test_deep_stacks_collapse_into_a_few_pieces_that_keep_their_flags():
    g = sigmoid_stack(layers=200, width=2)
    rows = node_rows(viz.draw(g))
    blocks = [name for name in rows if "× [affine → sigmoid]" in name]
    assert 2 <= len(blocks) <= 6 and len(rows) < 12
    assert pieces(rows, "affine → sigmoid") == 200
    assert any("vanishing" in " ".join(rows[name]) for name in blocks)
    assert "200 × [affine → sigmoid]" in node_rows(viz.draw(g, collapse=True))


def test_large_graphs_without_scopes_or_repeats_still_collapse():
    rng = np.random.default_rng(0)
    g = gn.Graph()
    h = g.input("x")
    for op in rng.choice(["tanh", "sigmoid", "exp", "relu"], size=400):
        h = getattr(g, op)(h) if op != "exp" else g.multiply(g.exp(h), 0.5)
    g.forward(x=0.1)
    assert len(node_rows(viz.draw(g, max_nodes=60))) <= 60
    with pytest.raises(ValueError, match="collapse must be"):
        viz.draw(g, collapse="scope")


@pytest.mark.slow
@needs_dot
def test_a_10000_node_chain_draws_as_a_few_nodes_within_4000_px():
    g = gn.Graph()
    h = g.input("x")
    for _ in range(10_000):
        h = g.tanh(h)
    g.forward(x=0.5)
    g.backward()
    drawing = viz.draw(g)
    rows = node_rows(drawing)
    assert len(rows) < 20
    assert pieces(rows, "tanh") == 10_000
    from PIL import Image

    with Image.open(io.BytesIO(drawing.pipe(format="png"))) as image:
        assert max(image.size) <= 4000


def test_repeated_unscoped_layers_collapse_into_runs():
    rng = np.random.default_rng(0)
    g = gn.Graph()
    h = g.input("x", shape=(None, 4))
    for _ in range(60):
        h = g.tanh(
            g.affine(
                h,
                g.param(f"W{_}", rng.standard_normal((4, 4)) * 0.5),
                g.param(f"b{_}", np.zeros(4)),
            )
        )
    g.sum(h, name="loss")
    g.forward(x=rng.standard_normal((2, 4)))
    g.backward()
    rows = node_rows(viz.draw(g))
    assert len(rows) < 10
    assert pieces(rows, "affine → tanh") == 60
    assert "60 × [affine → tanh]" in node_rows(viz.draw(g, collapse=True))


# ----- the cache -----------------------------------------------------------------------


def test_show_cache_summarizes_what_gates_saved():
    rng = np.random.default_rng(0)
    g = gn.Graph()
    x = g.input("x", shape=(None, 6))
    bn = g.batchnorm(x, g.param("gamma", np.ones(6)), g.param("beta", np.zeros(6)), name="bn")
    d = g.dropout(bn, p=0.5, seed=1, name="drop")
    r = g.relu(d, name="relu")
    g.sum(g.max(r, g.const(np.full((8, 6), 0.5)), name="mx"), name="loss")
    xv = rng.standard_normal((8, 6)) * 3 + 1
    g.forward(x=xv)
    g.backward()
    rows = node_rows(viz.draw(g, show_cache=True))
    bn_text = " ".join(rows["bn"])
    assert "x_hat" in bn_text and "variance" in bn_text and "mode train" in bn_text
    assert number(bn_text.split("variance")[1], "mean") == pytest.approx(
        xv.var(axis=0).mean(), rel=1e-3
    )
    mask = g["drop"].cache[1] != 0
    assert f"mask keeps {mask.sum()}/48 units" in " ".join(rows["drop"])
    assert f"mask drop > 0: {(g['drop'].value > 0).sum()}/48 true" in " ".join(rows["relu"])
    assert f"mask relu >= const_1: {g['mx'].cache.sum()}/48 true" in " ".join(rows["mx"])
    assert "x_hat" not in " ".join(node_rows(viz.draw(g))["bn"])


def test_an_empty_batch_draws_and_steps_without_a_warning(recwarn):
    g = gn.Graph()
    x = g.input("x", shape=(None, 3))
    d = g.dropout(g.relu(x @ g.param("W", np.ones((3, 2))), name="relu"), p=0.5, seed=1)
    g.sum(g.max(d, 0.5, name="mx"))
    g.forward(x=np.zeros((0, 3)))
    g.backward()
    rows = node_rows(viz.draw(g, show_cache=True))
    assert "0/0 true (empty)" in " ".join(rows["mx"])
    assert "mask keeps 0/0 units (empty)" in " ".join(rows["dropout_1"])
    assert [f.text for f in viz.backward_steps(g)] and not recwarn.list


# ----- rendering and export ------------------------------------------------------------


@needs_dot
def test_export_svg_png_dot_html(tmp_path):
    from PIL import Image

    g = circuit()
    svg = viz.export(g, tmp_path / "c.svg")
    assert ET.parse(svg).getroot().tag.endswith("svg")
    png = viz.export(viz.draw(g), tmp_path / "c.png")
    with Image.open(png) as image:
        image.verify()
        assert image.format == "PNG"
    dot = viz.export(g, tmp_path / "c.gv", format="dot")
    assert dot.read_text() == viz.draw(g).source
    page = viz.export(g, tmp_path / "c.html").read_text()
    assert "<svg" in page and "<?xml" not in page and "<!DOCTYPE svg" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)


@needs_dot
def test_jupyter_display_and_graph_render():
    g = circuit()
    assert isinstance(g.render(), graphviz.Digraph)
    bundle = g._repr_mimebundle_()
    assert "<svg" in bundle["image/svg+xml"]


def test_unknown_format_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="unknown export format 'jpg2'"):
        viz.export(circuit(), tmp_path / "c.jpg2")
    with pytest.raises(ValueError, match="unknown export format ''"):
        viz.export(circuit(), tmp_path / "no_suffix")


def test_missing_dot_gives_one_clear_error_and_the_source_still_works(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    g = circuit()
    drawing = viz.draw(g)
    assert "digraph" in drawing.source
    viz.export(g, tmp_path / "c.dot")  # DOT needs no Graphviz program
    for attempt in (
        lambda: viz.export(g, tmp_path / "c.svg"),
        lambda: drawing.pipe(format="png"),
        lambda: g._repr_mimebundle_(),
    ):
        with pytest.raises(viz.GraphvizNotFoundError) as error:
            attempt()
        message = str(error.value)
        assert "apt-get install graphviz" in message and "brew install graphviz" in message
        assert "conda" in message and error.value.__cause__ is None


# ----- what the last forward did not run -----------------------------------------------


def two_layer_net(reg):
    from graphnet.models import TwoLayerNet

    np.random.seed(0)
    model = TwoLayerNet(input_dim=6, hidden_dim=5, num_classes=3, reg=reg)
    X, y = np.random.randn(4, 6), np.array([0, 1, 2, 1])
    model.loss(X, y)
    return model


def test_a_branch_the_last_forward_did_not_run_is_left_out_and_the_loss_shows_its_numbers():
    model = two_layer_net(reg=0.0)  # loss() runs data_loss only: the L2 branch is skipped
    g = model.graph
    drawing = viz.draw(g)
    rows = node_rows(drawing)
    skipped = {
        "loss",
        "reg_loss",
        "half_reg",
        "sum_sq",
        "W1_squared",
        "W1_sum_sq",
        "W2_squared",
        "W2_sum_sq",
    }
    assert not skipped & rows.keys()
    assert number(" ".join(rows["data_loss"]), "value") == pytest.approx(
        g["data_loss"].value, rel=1e-3
    )
    assert number(" ".join(rows["data_loss"]), "grad") == 1.0
    legend = _text(
        re.search(r"legend \[.*?label=<(<TABLE.*?</TABLE>)>", drawing.source, re.S).group(1)
    )
    assert f"{len(skipped)} nodes the last forward did not run" in legend
    shown = node_rows(viz.draw(g, show_not_run=True))
    assert skipped <= shown.keys()
    for name in skipped:
        assert "not run in the last forward" in shown[name]
        assert "value" not in " ".join(shown[name])
    assert "not run" not in " ".join(" ".join(r) for n, r in shown.items() if n not in skipped)


def test_with_reg_every_node_runs_and_a_graph_never_run_is_drawn_whole():
    model = two_layer_net(reg=0.1)
    rows = node_rows(viz.draw(model.graph))
    assert number(" ".join(rows["loss"]), "grad") == 1.0 and "reg_loss" in rows
    fresh = gn.Graph()
    fresh.tanh(fresh.input("x"), name="t")
    assert set(node_rows(viz.draw(fresh))) == {"x", "t"}


# ----- anomalies -----------------------------------------------------------------------


def nan_graph():
    g = gn.Graph()
    x = g.input("x")
    bad = g.log(g.multiply(x, -1.0, name="negated"), name="ln")  # log of a negative: NaN
    g.add(g.exp(bad, name="e"), g.tanh(x, name="side"), name="loss")
    return g


def test_the_first_nan_and_its_path_to_the_loss_are_highlighted():
    g = nan_graph()
    with (
        pytest.raises(gn.AnomalyError) as error,
        gn.detect_anomaly(),
        np.errstate(invalid="ignore"),
    ):
        g.forward(x=2.0)
    assert error.value.node == "ln"
    for drawing in (viz.draw(g), viz.draw(g, anomaly=error.value)):
        attrs = node_attrs(drawing)
        anomaly = f'color="{scale.ANOMALY}"'
        assert anomaly in attrs["ln"] and "penwidth=4" in attrs["ln"]
        assert "⚠ the first NaN/Inf" in node_rows(drawing)["ln"]
        for name in ("e", "loss"):  # downstream of it, on the way to the loss
            assert anomaly in attrs[name]
        for name in ("x", "negated"):  # upstream: not on the path
            assert anomaly not in attrs[name]
        assert "side" not in attrs  # the forward stopped before it: not run
        on_path = {(t, h) for t, h, _, _, colour in edges(drawing) if colour == scale.ANOMALY}
        assert on_path == {("ln", "e"), ("e", "loss")}
    assert f'color="{scale.ANOMALY}"' not in viz.draw(g, anomaly=None).source.split("legend")[0]


def test_a_nan_gradient_is_traced_from_where_the_backward_met_it():
    g = gn.Graph()
    x = g.input("x")
    g.multiply(g.divide(1.0, x, name="inverse"), 0.0, name="loss")  # d(1/x)/dx at 0: -Inf
    with np.errstate(divide="ignore", invalid="ignore"):
        g.forward(x=0.0)
        with pytest.raises(gn.AnomalyError) as error, gn.detect_anomaly():
            g.backward()
    drawing = viz.draw(g, anomaly=error.value)
    assert f'color="{scale.ANOMALY}"' in node_attrs(drawing)[error.value.node]


@needs_dot
@pytest.mark.parametrize(
    "name",
    [
        "w" * gn.core.graph.MAX_NAME_LENGTH,
        "x₁ → ŷ (é)",
        'a "quoted" \\ name',
        "<b>&amp;</b>",
        " ",
        "/a/b:0",
    ],
    ids=["the longest", "unicode", "quotes", "html", "a space", "onnx-like"],
)
def test_every_legal_name_is_drawn_saved_loaded_and_exported(tmp_path, name):
    """The names Graph accepts (printable text of at most MAX_NAME_LENGTH characters) are
    drawn by dot, and come back the same from a checkpoint and from an ONNX round trip."""
    g = gn.Graph()
    g.relu(g.input("x", shape=(None, 3)), name=name)
    g.forward(x=np.ones((1, 3)))
    assert viz.draw(g).pipe(format="svg")
    gn.save(g, tmp_path / "g.npz")
    assert name in gn.load(tmp_path / "g.npz")
    assert name in gn.from_onnx(gn.to_onnx(g))
