"""The HTML step player in a real headless Chromium: buttons, keys, counter and Play.

Skipped where Playwright or Chromium is missing; CI installs both.
"""
import os
import shutil

import pytest

import graphnet as gn
from graphnet import viz

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = "/usr/bin/chromium"
pytestmark = [
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no Chromium at {CHROMIUM}"),
    pytest.mark.skipif(not shutil.which("dot"), reason="the Graphviz 'dot' program is missing"),
]


@pytest.fixture(scope="module")
def player(tmp_path_factory):
    g = gn.Graph()
    w0, x0, w1, x1, w2 = (g.input(n) for n in ("w0", "x0", "w1", "x1", "w2"))
    dot = w0 * x0 + w1 * x1 + w2
    g.divide(1.0, 1.0 + g.exp(-dot), name="f")
    g.forward(w0=2.0, x0=-1.0, w1=-3.0, x1=-2.0, w2=-3.0)
    frames = viz.backward_steps(g)
    path = viz.export_html(frames, tmp_path_factory.mktemp("player") / "steps.html",
                           interval=0.15)
    return path, len(frames)


def visible_step(page):
    return page.locator(".frame:not([hidden])").get_attribute("data-step")


def visible_svg(page):
    return page.locator(".frame:not([hidden]) svg").inner_html()


def test_player_steps_with_buttons_keys_and_play(player, tmp_path):
    path, count = player
    requests = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("request", lambda r: requests.append(r.url))
        page.goto(path.as_uri())
        counter = page.locator("#counter")
        assert counter.inner_text() == f"Step 1 / {count}"
        assert page.locator(".frame:not([hidden])").count() == 1
        first_svg = visible_svg(page)

        for step in (2, 3, 4):
            page.click("#next")
            assert counter.inner_text() == f"Step {step} / {count}"
            assert visible_step(page) == str(step)
        assert visible_svg(page) != first_svg
        assert "Step 4 of" in page.locator(".frame:not([hidden]) pre").inner_text()

        page.click("#prev")
        assert counter.inner_text() == f"Step 3 / {count}"
        page.keyboard.press("ArrowRight")
        page.keyboard.press("ArrowRight")
        assert counter.inner_text() == f"Step 5 / {count}"
        page.keyboard.press("ArrowLeft")
        assert counter.inner_text() == f"Step 4 / {count}"
        for _ in range(10):  # Prev stops at the first frame
            page.click("#prev")
        assert counter.inner_text() == f"Step 1 / {count}"

        page.click("#play")
        assert page.locator("#play").inner_text() == "Pause"
        page.wait_for_function(
            f"document.getElementById('counter').textContent === 'Step {count} / {count}'",
            timeout=10_000)
        assert page.locator("#play").inner_text() == "Play"  # stopped at the end
        shot = tmp_path / "player.png"
        page.click("#prev")
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert shot.stat().st_size > 10_000
    if os.environ.get("GRAPHNET_SCREENSHOT"):  # keep the screenshot, to look at it
        shutil.copy(shot, os.environ["GRAPHNET_SCREENSHOT"])
    # Only the file itself was loaded: the player is self-contained.
    assert all(url.startswith("file://") for url in requests), requests
