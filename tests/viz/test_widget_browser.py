"""graphnet.viz.Widget in a real JupyterLab 4 (and Notebook 7), driven by Playwright in
headless Chromium: the notebook runs, the widget shows the nodes, hovering a node shows
its tooltip, clicking it shows histograms, the slider changes the active step, and the
live mode updates while a short training runs.

The server runs on 127.0.0.1 with a token, in a temporary folder, and is stopped at the
end. With GRAPHNET_SCREENSHOTS=folder the screenshots are kept there, to look at.
"""

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from .conftest import CHROMIUM, keep

pytest.importorskip("playwright.sync_api")
pytest.importorskip("anywidget")
pytest.importorskip("jupyterlab")
nbformat = pytest.importorskip("nbformat")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no Chromium at {CHROMIUM}"),
    pytest.mark.skipif(not shutil.which("dot"), reason="the Graphviz 'dot' program is missing"),
]

SETUP = """\
import numpy as np
from graphnet import Solver, viz
from graphnet.models import TwoLayerNet
np.random.seed(0)
model = TwoLayerNet(input_dim=64, hidden_dim=32, num_classes=10, weight_scale=0.1)
rng = np.random.default_rng(0)
X, y = rng.standard_normal((400, 64)), rng.integers(0, 10, 400)
model.loss(X[:20], y[:20])
w = viz.Widget(model)
w"""
TRAIN = """\
solver = Solver(model, dict(X_train=X, y_train=y, X_val=X[:50], y_val=y[:50]),
                num_epochs=40, batch_size=20, verbose=False, seed=0)
with w.live(every=5, budget=0.5):
    solver.train()
print("trained", solver.iteration, "iterations")"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, this_python_kernel):
    """A Jupyter server (JupyterLab and Notebook 7 both serve from it) on 127.0.0.1: its
    address, its token and the display name of the notebooks' kernel."""
    home = tmp_path_factory.mktemp("jupyter")
    root = home / "notebooks"
    root.mkdir()
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(SETUP), nbformat.v4.new_code_cell(TRAIN)]
    notebook.metadata["kernelspec"] = this_python_kernel
    nbformat.write(notebook, root / "widget.ipynb")
    nbformat.write(notebook, root / "classic.ipynb")
    # no news, no update checks: nothing but the page itself to look at
    settings = home / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    port, token = free_port(), secrets.token_hex(16)
    env = dict(
        os.environ,
        JUPYTERLAB_SETTINGS_DIR=str(home / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
    )
    log = open(home / "server.log", "w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",  # this interpreter's, where `jupyter lab` runs the first on PATH
            "--no-browser",
            "--allow-root",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError as error:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(
                        "the Jupyter server did not start: "
                        + (home / "server.log").read_text()[-2000:]
                    ) from error
                time.sleep(0.5)
        yield base, token, this_python_kernel["display_name"]
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def run_cells(page, count):
    """Run the notebook's first `count` cells, in order, from the keyboard."""
    page.locator(".jp-Cell").first.click()
    page.keyboard.press("Escape")
    for _ in range(count):
        page.keyboard.press("Shift+Enter")


def stage(page):
    return page.evaluate("""() => { const s = document.querySelector('.gn-stage');
        const a = s.dataset.active ? document.getElementById(s.dataset.active) : null;
        return {step: s.dataset.step, active: s.dataset.active || '',
                iteration: s.dataset.iteration || '',
                fill: a ? a.querySelector('polygon, path').getAttribute('fill') : null}; }""")


def test_the_widget_in_jupyterlab(server, browser):
    base, token, kernel = server
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{base}/lab/tree/widget.ipynb?token={token}")
    page.wait_for_selector(f"text={kernel} | Idle", timeout=90_000)
    run_cells(page, 1)
    page.wait_for_selector(".gn-widget .gn-stage svg g.node", timeout=90_000)

    # the nodes: the model's, without the L2 branch its reg=0 forward skipped
    ids = set(
        page.evaluate("() => [...document.querySelectorAll('.gn-stage g.node')].map(g => g.id)")
    )
    assert {
        "n_X",
        "n_y",
        "n_W1",
        "n_b1",
        "n_affine1",
        "n_relu1",
        "n_W2",
        "n_b2",
        "n_scores",
        "n_data_5f_loss",
    } <= ids
    assert "n_reg_5f_loss" not in ids
    keep(page, "widget_jupyterlab.png")

    # hovering a node shows its tooltip
    page.hover("#n_affine1")
    tooltip = page.locator(".gn-tooltip")
    tooltip.wait_for(state="visible")
    text = tooltip.inner_text()
    for part in (
        "affine1: affine",
        "formula: affine1 = ",
        "rule: ",
        "value: shape (20, 32)",
        "grad: shape (20, 32)",
        "cache: ",
    ):
        assert part in text, text
    keep(page, "widget_tooltip.png")

    # clicking a node shows its histograms
    page.click("#n_W1")
    page.wait_for_selector(".gn-panel svg.gn-hist")
    assert page.locator(".gn-panel .gn-hist-title").inner_text() == "W1"
    assert page.locator(".gn-panel svg.gn-hist").count() == 2
    keep(page, "widget_histograms.png")

    # the slider walks the steps: the active gate moves, in yellow
    last = stage(page)
    assert last["active"] == ""  # the graph's own state: no step is active
    page.evaluate("""() => { const s = document.querySelector('.gn-slider');
        s.value = 0; s.dispatchEvent(new Event('input')); }""")
    page.wait_for_function("document.querySelector('.gn-stage').dataset.step === '1'")
    first = stage(page)
    assert first["active"] == "n_affine1" and first["fill"] == "#F0E442"
    page.click(".gn-next")
    page.wait_for_function("document.querySelector('.gn-stage').dataset.step === '2'")
    second = stage(page)
    assert second["active"] not in ("", "n_affine1") and second["fill"] == "#F0E442"
    assert (
        page.locator("#n_affine1 path, #n_affine1 polygon").first.get_attribute("fill") != "#F0E442"
    )
    assert "Step 2 of" in page.locator(".gn-text").inner_text()
    keep(page, "widget_step2.png")

    # the live mode redraws while the next cell trains
    page.click(".gn-next")
    run_cells_from = page.locator(".jp-Cell").nth(1)
    run_cells_from.click()
    page.keyboard.press("Escape")
    page.keyboard.press("Shift+Enter")
    seen, deadline = set(), time.monotonic() + 120
    done = page.locator(".jp-OutputArea-output", has_text="trained 800 iterations")
    while not done.count() and time.monotonic() < deadline:
        seen.add(stage(page)["iteration"])
        if len(seen - {""}) == 3:
            page.locator(".gn-widget").first.evaluate("e => e.scrollIntoView()")
            keep(page, "widget_live.png")
        time.sleep(0.1)
    assert done.count(), "the training cell did not finish"
    during = seen - {"", "800"}
    assert len(during) >= 2, seen  # updates arrived while it trained
    page.wait_for_function("document.querySelector('.gn-stage').dataset.iteration === '800'")
    assert stage(page)["step"] == "9"  # live updates show the graph's state: the last step
    assert "live: iteration 800" in page.locator(".gn-status").inner_text()
    assert errors == []


def test_the_widget_in_notebook_7(server, browser):
    base, token, _ = server
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e.stack)))
    page.goto(f"{base}/notebooks/classic.ipynb?token={token}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
    page.wait_for_function(
        "!!document.querySelector('.jp-Notebook-ExecutionIndicator') ||"
        "document.body.innerText.includes('Idle')",
        timeout=90_000,
    )
    time.sleep(2)  # the kernel connects
    run_cells(page, 1)
    page.wait_for_selector(".gn-widget .gn-stage svg g.node", timeout=90_000)
    assert page.locator(".gn-stage g.node").count() >= 10
    page.hover("#n_scores")
    page.locator(".gn-tooltip").wait_for(state="visible")
    assert "formula: scores = " in page.locator(".gn-tooltip").inner_text()
    keep(page, "widget_notebook7.png")
    # Notebook 7's own settings loader reports one error in its bundle; none may be ours
    assert [e for e in errors if "/static/notebook/" not in e] == []
