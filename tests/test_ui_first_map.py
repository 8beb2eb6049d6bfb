"""`glb ui` loads the index and encoder when the server starts: the first visitor's page shows
the map without waiting for them. Real server, real chromium; time to first map printed."""

from __future__ import annotations

import re
import time

import pytest

from test_ui_browser import ARGS, CHROMIUM, MAP, browser_index, server  # noqa: F401 - the fixtures

pytestmark = pytest.mark.browser

LOADED = "glb ui: index and encoder loaded in"


def test_first_visitor_sees_the_map_at_once(server, tmp_path):  # noqa: F811
    from playwright.sync_api import sync_playwright

    log = server.log
    deadline = time.time() + 180
    while LOADED not in log.read_text():
        assert "not preloaded" not in log.read_text(), log.read_text()[-2000:]
        assert time.time() < deadline, "the server did not preload in 180 s"
        time.sleep(0.2)
    line = next(x for x in log.read_text().splitlines() if LOADED in x)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            t0 = time.perf_counter()
            page.goto(server)
            page.frame_locator(MAP).locator("path.glb-scene").first.wait_for(
                state="attached", timeout=60_000)
            first_map = time.perf_counter() - t0
            page.get_by_role("textbox", name="Describe what you are looking for").wait_for()
            assert page.get_by_text("Opening the index and loading the encoder").count() == 0
        finally:
            browser.close()
    print(f"\nfirst visitor: map with coverage drawn {first_map:.2f} s after opening the page; "
          f"server start-up: {line.split('glb ui: ')[1]}")
    # Measured against the same machine's load at the same moment: the first visitor no longer
    # pays for opening the index and loading the encoder (before the preload it waited for all
    # of that, then for the page).
    loaded = float(re.search(r"loaded in ([\d.]+) s", line).group(1))
    assert first_map < loaded, (first_map, loaded)
