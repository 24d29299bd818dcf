"""The HTML step player in a real headless Chromium at 1024x768: buttons, keys, counter and
Play; one layout for every frame (the drawing keeps its size and its nodes keep their
places); the active gate always in view, also on a drawing larger than the window; zoom
and pan with the mouse; nothing loaded but the file itself.

Skipped where Playwright or Chromium is missing; CI installs both. With
GRAPHNET_SCREENSHOTS=folder the screenshots are kept there, to look at.
"""

import os
import shutil

import numpy as np
import pytest

import graphnet as gn
from graphnet import viz

from .conftest import CHROMIUM, keep

pytest.importorskip("playwright.sync_api")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no Chromium at {CHROMIUM}"),
    pytest.mark.skipif(not shutil.which("dot"), reason="the Graphviz 'dot' program is missing"),
]
WINDOW = {"width": 1024, "height": 768}


def sigmoid_neuron():
    g = gn.Graph()
    w0, x0, w1, x1, w2 = (g.input(n) for n in ("w0", "x0", "w1", "x1", "w2"))
    products = g.add(g.multiply(w0, x0, name="w0x0"), g.multiply(w1, x1, name="w1x1"), name="sum")
    dot = g.add(products, w2, name="dot")
    g.sigmoid(dot, name="f")
    g.forward(w0=2.0, x0=-1.0, w1=-3.0, x1=-2.0, w2=-3.0)
    return g


def deep_mlp(layers=6):
    """A drawing taller than the window: its first gates sit below the fold."""
    rng = np.random.default_rng(0)
    g = gn.Graph()
    h = g.input("x", shape=(None, 4))
    for i in range(1, layers + 1):
        h = g.relu(
            g.affine(
                h,
                g.param(f"l{i}/W", rng.standard_normal((4, 4))),
                g.param(f"l{i}/b", np.zeros(4)),
                name=f"l{i}/fc",
            ),
            name=f"l{i}/relu",
        )
    g.softmax_loss(h, np.array([0, 1, 2]), name="loss")
    g.forward(x=rng.standard_normal((3, 4)))
    return g


def open_player(browser, path):
    page = browser.new_page(viewport=WINDOW)
    requests, errors = [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri())
    return page, requests, errors


def state(page):
    """The step shown, the drawing's box, where its nodes are, and whether the active
    gate is inside the drawing's area."""
    return page.evaluate("""() => {
        const stage = document.getElementById('stage');
        const box = stage.querySelector('svg').getBoundingClientRect();
        const area = stage.getBoundingClientRect();
        const active = document.getElementById(stage.dataset.active).getBoundingClientRect();
        const nodes = {};
        stage.querySelectorAll('g.node').forEach(g => {
            const r = g.getBBox(); nodes[g.id] = [r.x, r.y, r.width, r.height]; });
        const fill = document.getElementById(stage.dataset.active)
            .querySelector('polygon, path, ellipse').getAttribute('fill');
        return {step: stage.dataset.step, active: stage.dataset.active, fill: fill,
                box: [box.width, box.height], nodes: nodes,
                inView: active.left >= area.left && active.right <= area.right &&
                        active.top >= area.top && active.bottom <= area.bottom};
    }""")


@pytest.mark.slow
def test_player_steps_with_buttons_keys_and_play_on_one_layout(browser, tmp_path):
    g = sigmoid_neuron()
    frames = viz.backward_steps(g)
    count = len(frames)
    page, requests, errors = open_player(
        browser, viz.export_html(frames, tmp_path / "steps.html", interval=0.15)
    )
    counter = page.locator("#counter")
    assert counter.inner_text() == f"Step 1 / {count}"
    first = state(page)
    assert first["active"] == "n_f" and first["fill"] == "#F0E442" and first["inView"]
    assert "Step 1 of" in page.locator("#text").inner_text()
    keep(page, "player_sigmoid_step1.png")
    seen = [first]
    for step in range(2, count + 1):
        page.click("#next")
        assert counter.inner_text() == f"Step {step} / {count}"
        seen.append(state(page))
        assert seen[-1]["step"] == str(step) and seen[-1]["inView"]
        assert f"Step {step} of" in page.locator("#text").inner_text()
    # one layout: the same box and every node in the same place in every frame
    assert all(s["box"] == first["box"] and s["nodes"] == first["nodes"] for s in seen)
    assert [s["active"] for s in seen] == [f"n_{f.node.name}" for f in frames]
    # the gradient fills in: the first input's row reads '?' at step 1, its number at the end
    rows = page.evaluate(
        "() => [...document.querySelectorAll('#n_w0 text')].map(t => t.textContent)"
    )
    assert "grad -0.1966" in rows
    keep(page, "player_sigmoid_last.png")

    page.click("#prev")
    assert counter.inner_text() == f"Step {count - 1} / {count}"
    page.keyboard.press("Home")
    assert counter.inner_text() == f"Step 1 / {count}"
    assert "grad ?" in page.evaluate(
        "() => [...document.querySelectorAll('#n_w0 text')].map(t => t.textContent)"
    )
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    assert counter.inner_text() == f"Step 3 / {count}"
    page.keyboard.press("ArrowLeft")
    assert counter.inner_text() == f"Step 2 / {count}"
    page.keyboard.press("End")
    assert counter.inner_text() == f"Step {count} / {count}"
    for _ in range(count + 2):  # Prev stops at the first frame
        page.click("#prev")
    assert counter.inner_text() == f"Step 1 / {count}"
    page.click("#play")
    assert page.locator("#play").inner_text() == "Pause"
    page.wait_for_function(
        f"document.getElementById('counter').textContent === 'Step {count} / {count}'",
        timeout=10_000,
    )
    assert page.locator("#play").inner_text() == "Play"  # stopped at the end
    assert errors == []
    # Only the file itself was loaded: the player is self-contained.
    assert all(url.startswith("file://") for url in requests), requests


@pytest.mark.slow
def test_the_active_gate_is_brought_into_view_on_a_drawing_larger_than_the_window(
    browser, tmp_path
):
    g = deep_mlp()
    frames = viz.backward_steps(g)
    page, _, errors = open_player(browser, viz.export_html(frames, tmp_path / "deep.html"))
    boxes = []
    for step in range(len(frames)):
        now = state(page)
        assert now["inView"], f"step {step + 1}: {now['active']} is out of view"
        boxes.append(now["box"])
        if step == len(frames) - 1:
            keep(page, "player_deep_last.png")
        page.keyboard.press("ArrowRight")
    assert len({tuple(b) for b in boxes}) == 1
    assert errors == []


@pytest.mark.slow
def test_the_wheel_zooms_dragging_pans_and_0_fits(browser, tmp_path):
    g = sigmoid_neuron()
    page, _, _ = open_player(
        browser, viz.export_html(viz.backward_steps(g), tmp_path / "zoom.html")
    )

    def view_box():
        return [float(v) for v in page.locator("#stage svg").get_attribute("viewBox").split()]

    fitted = view_box()
    page.mouse.move(500, 500)
    page.mouse.wheel(0, -300)
    zoomed = view_box()
    assert zoomed[2] < fitted[2] and zoomed[3] < fitted[3]
    page.mouse.down()
    page.mouse.move(400, 450, steps=5)
    page.mouse.up()
    panned = view_box()
    assert panned[0] > zoomed[0] and panned[2] == zoomed[2]
    page.keyboard.press("0")
    assert view_box() == fitted
