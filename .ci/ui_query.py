"""Drive the search page at $GLB_UI_URL with Debian's chromium: wait for the map, ask a text
query, and require result cards with loaded thumbnails. Prints the time to first map and to
results. Used by .ci/containers against the UI container's published port."""

import os
import sys
import time

from playwright.sync_api import sync_playwright

URL = os.environ["GLB_UI_URL"]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
MAP = 'iframe[title="ui.mapview.glb_map"]'


def main() -> int:
    import urllib.request

    deadline = time.time() + 300
    while True:  # the server is up when Streamlit's health endpoint says so
        try:
            if urllib.request.urlopen(f"{URL}/_stcore/health", timeout=3).read() == b"ok":
                break
        except OSError:
            pass
        if time.time() > deadline:
            print(f"ui_query: {URL} did not come up in 300 s", file=sys.stderr)
            return 1
        time.sleep(0.5)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(180_000)
            t0 = time.perf_counter()
            page.goto(URL)
            page.frame_locator(MAP).locator("path.glb-scene").first.wait_for(state="attached")
            first_map = time.perf_counter() - t0
            box = page.get_by_role("textbox", name="Describe what you are looking for")
            box.fill("river")
            t1 = time.perf_counter()
            box.press("Enter")
            page.get_by_text("results for “river”").first.wait_for()
            page.wait_for_function(
                "() => { const i = [...document.querySelectorAll('img.glb-thumb')];"
                " return i.length > 0 && i.every(x => x.complete && x.naturalWidth > 0); }")
            shown = time.perf_counter() - t1
            n = page.locator("img.glb-thumb").count()
        finally:
            browser.close()
    print(f"   first map {first_map:.1f} s after opening the page; {n} results with thumbnails "
          f"{shown:.1f} s after Enter")
    return 0 if n > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
