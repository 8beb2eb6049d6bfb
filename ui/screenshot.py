"""The README's screenshot, taken the way an analyst sees the page: `glb ui` over an index,
Debian's chromium (driven by Playwright; nothing is downloaded), a search given by the page's
own URL parameters (`ui/state.py: URL`).

    python -m ui.screenshot --index .glb/sample-index --query "flooded farmland" \
        --out docs/ui-screenshot.png
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def take(index: Path, query: str, out: Path, *, k: int = 20, width: int = 1400,
         height: int = 1000, timeout_s: float = 180) -> Path:
    from playwright.sync_api import sync_playwright

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "glb", "ui", "--index", str(index), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout_s
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise SystemExit(f"ui.screenshot: `glb ui --index {index}` did not come up")
            time.sleep(0.5)
        params = urllib.parse.urlencode({"mode": "text", "q": query, "k": k})
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(int(timeout_s * 1000))
            page.goto(f"{url}/?{params}")
            page.wait_for_selector("img.glb-thumb")  # the result gallery is drawn
            page.wait_for_timeout(3000)  # the map's tiles and footprints settle
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out))
            browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ui.screenshot", description=__doc__.splitlines()[0])
    ap.add_argument("--index", required=True, type=Path)
    ap.add_argument("--query", default="flooded farmland")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--out", type=Path, default=Path("docs/ui-screenshot.png"))
    args = ap.parse_args(argv)
    print(take(args.index, args.query, args.out, k=args.k))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
