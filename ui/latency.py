"""Measure the search page's text-query latency in a real browser (needs the `dev` extra's
playwright and Debian's chromium):

    python -m ui.latency --index .glb/sample-index [--queries 10]

Starts `glb ui` on a free 127.0.0.1 port, opens the page in headless chromium and, for each
query, times from pressing Enter to (1) the 20 result cards of the engine's top 20 being in the
page and (2) all their thumbnails decoded. Also times the engine call alone in this process
(same index, one thread, warm). Prints one line per query and the medians.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

QUERIES = ["flooded farmland", "ships in a harbour", "dense forest", "river meanders",
           "city with roads", "snow on mountains", "airport runway", "green fields",
           "desert dunes", "harbour cranes"]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
K = 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_up(url: str, proc, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                return
        except OSError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"glb ui exited with status {proc.returncode}")
        time.sleep(0.3)
    raise SystemExit("the server did not come up")


def measure(index: str, queries: list[str], chromium: str = "/usr/bin/chromium") -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # as the server runs (ui/launch.py)
    from playwright.sync_api import sync_playwright

    import engine

    idx = engine.open(index)
    idx.search("warm-up", k=1)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "glb", "ui", "--index", index, "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    eng, shown, pictures = [], [], []
    try:
        _wait_up(url, proc)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(url)
            box = page.get_by_role("textbox", name="Describe what you are looking for")
            box.wait_for(timeout=180_000)
            page.frame_locator('iframe[title="ui.mapview.glb_map"]').locator(
                "path.glb-scene").first.wait_for(state="attached")
            for q in queries:
                t0 = time.perf_counter()
                ids = [str(t) for t in idx.search(q, k=K)["tile_id"]]
                eng.append(time.perf_counter() - t0)
                cards = ",".join(f".st-key-card_{t}" for t in ids)
                box.fill(q)
                t0 = time.perf_counter()
                box.press("Enter")
                page.wait_for_function(f"s => document.querySelectorAll(s).length == {len(ids)}",
                                       arg=cards, polling=20)
                shown.append(time.perf_counter() - t0)
                page.wait_for_function(
                    "s => [...document.querySelectorAll(s)].every(c => {"
                    " const i = c.querySelector('img.glb-thumb');"
                    " return i && i.complete && i.naturalWidth > 0; })", arg=cards, polling=20)
                pictures.append(time.perf_counter() - t0)
                print(f"{q!r:24} results shown {shown[-1]:.2f} s, thumbnails {pictures[-1]:.2f} s, "
                      f"engine alone {eng[-1] * 1000:.0f} ms", flush=True)
            browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    med = lambda v: f"median {statistics.median(v):.2f} s, max {max(v):.2f} s"
    print(f"engine alone:            {med(eng)}")
    print(f"results shown (20 cards): {med(shown)}")
    print(f"all thumbnails:          {med(pictures)}")
    print(f"load average: {' '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} cores")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", required=True)
    ap.add_argument("--queries", type=int, default=len(QUERIES))
    args = ap.parse_args(argv)
    return measure(args.index, QUERIES[: max(1, args.queries)])


if __name__ == "__main__":
    sys.exit(main())
