"""Load test of the search page: N concurrent real-browser sessions (Debian's chromium through
Playwright, one browser context each, so each is its own Streamlit session) run mixed text
queries against one server for a bounded time. Each session checks that the page shows the
results of its own query (the heading names it) with thumbnails; reports errors and p50/p95
time from Enter to results.

    python -m glb.bench.ui_load --url http://127.0.0.1:8501 --sessions 20 --seconds 120 \
        [--ramp 60] [--json]
    (--user/--password when the page is behind the compose stack's login)

`--ramp S` opens the sessions one after another over S seconds (people arrive over a minute,
not in the same millisecond); the bound counts from the first. Every session must get at least
one answer of its own: a session with none is an error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
QUERIES = ["river", "flooded farmland", "mountains", "forest", "city buildings", "bare soil",
           "lake", "snow", "road", "desert", "coastline", "fields"]
BOX = "Describe what you are looking for"


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


async def _session(i: int, browser, url: str, until: float, out: dict, creds,
                   delay: float = 0.0) -> None:
    rng = random.Random(i)
    if delay:
        await asyncio.sleep(delay)
    answered = 0
    ctx = await browser.new_context(viewport={"width": 1280, "height": 900},
                                    http_credentials=creds)
    page = await ctx.new_page()
    page.set_default_timeout(180_000)
    try:
        t0 = time.perf_counter()
        await page.goto(url)
        box = page.get_by_role("textbox", name=BOX)
        await box.wait_for()
        out["first_page"].append(time.perf_counter() - t0)
        done = 0
        while time.time() < until or done < 1:  # every session asks at least once
            done += 1
            q = rng.choice(QUERIES)
            await box.fill(q)
            t = time.perf_counter()
            await box.press("Enter")
            try:
                await page.get_by_text(f"results for “{q}”").first.wait_for()
                await page.wait_for_function(
                    "() => { const i = [...document.querySelectorAll('img.glb-thumb')];"
                    " return i.length > 0 && i.every(x => x.complete && x.naturalWidth > 0); }")
                out["times"].append(time.perf_counter() - t)
                out["queries"] += 1
                answered += 1
            except Exception as e:  # noqa: BLE001 - counted and reported, the session goes on
                out["errors"].append(f"session {i} query {q!r}: {type(e).__name__}: {str(e)[:120]}")
            await page.wait_for_timeout(rng.randint(200, 1200))  # a person reads the results
    except Exception as e:  # noqa: BLE001
        out["errors"].append(f"session {i}: {type(e).__name__}: {str(e)[:160]}")
    finally:
        out["answered"][i] = answered
        if not answered and not any(e.startswith(f"session {i} ") or e.startswith(f"session {i}:")
                                    for e in out["errors"]):
            out["errors"].append(f"session {i}: no query answered")
        await ctx.close()


async def run(url: str, sessions: int, seconds: float, creds=None, ramp: float = 0.0) -> dict:
    from playwright.async_api import async_playwright

    out = {"times": [], "first_page": [], "errors": [], "queries": 0, "answered": {}}
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        try:
            until = time.time() + seconds
            await asyncio.gather(*(_session(i, browser, url, until, out, creds,
                                            ramp * i / max(1, sessions))
                                   for i in range(sessions)))
        finally:
            await browser.close()
    t = out["times"]
    per = [out["answered"].get(i, 0) for i in range(sessions)]
    return {"url": url, "sessions": sessions, "seconds": seconds, "ramp_s": ramp,
            "queries": out["queries"], "errors": out["errors"],
            "sessions_answered": sum(1 for n in per if n), "answers_per_session": per,
            "p50_s": round(statistics.median(t), 2) if t else None,
            "p95_s": round(_pct(t, 0.95), 2) if t else None,
            "max_s": round(max(t), 2) if t else None,
            "first_page_p50_s": round(statistics.median(out["first_page"]), 2) if out["first_page"] else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m glb.bench.ui_load")
    ap.add_argument("--url", required=True)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--ramp", type=float, default=0.0,
                    help="open the sessions evenly over this many seconds (default: all at once)")
    ap.add_argument("--user")
    ap.add_argument("--password")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    creds = {"username": a.user, "password": a.password} if a.user else None
    r = asyncio.run(run(a.url, a.sessions, a.seconds, creds, a.ramp))
    if a.json:
        print(json.dumps(r))
    else:
        print(f"{r['sessions']} sessions ({r['sessions_answered']} answered), {r['seconds']:.0f} s "
              f"(ramp {r['ramp_s']:.0f} s): {r['queries']} queries answered, "
              f"{len(r['errors'])} errors; time to results p50 {r['p50_s']} s, p95 {r['p95_s']} s, "
              f"max {r['max_s']} s; first page p50 {r['first_page_p50_s']} s")
        for e in r["errors"][:20]:
            print(f"  {e}")
    return 0 if not r["errors"] and r["queries"] else 1


if __name__ == "__main__":
    sys.exit(main())
