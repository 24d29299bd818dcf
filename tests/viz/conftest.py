"""What the browser tests share: one headless Chromium per module, and screenshots kept
in GRAPHNET_SCREENSHOTS=folder when it is set, to look at."""

import os
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"


def keep(page, name):
    """Save a screenshot of `page` as `name` in $GRAPHNET_SCREENSHOTS, if set."""
    folder = os.environ.get("GRAPHNET_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / name))


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()
