"""Open the index and load the encoder when the server starts, not when the first analyst
arrives: `glb ui` starts `warm(index)` in a thread beside the Streamlit server (ui/serve.py),
and the page's once-per-server loader takes the result from `opened(path)`.

The loaded index lives in this module (one per server process, shared by every session); a
page started some other way (`streamlit run ui/app.py`, AppTest) finds nothing here and opens
the index itself, as before.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import engine

log = logging.getLogger("glb.ui")

_lock = threading.Lock()
_started: dict[str, threading.Event] = {}
_loaded: dict[str, object] = {}


def _key(path: str | Path) -> str:
    return str(Path(path).resolve())


def warm_up(idx):
    """Load the index's encoder and open its thumbnail store with one query in the page's default
    order (which embeds the evidence bank once), so the analyst's first query is fast. Returns
    `idx`."""
    first = idx.search("warm-up", k=1, evidence=True)
    if len(first):
        try:
            idx.thumbnail(int(first["tile_id"].iloc[0]))
        except engine.GLBError:
            pass
    return idx


def warm(path: str | Path, echo=None) -> object | None:
    """Open the index at `path`, load its encoder, run one query and read one thumbnail (the
    first analyst's query then finds everything loaded). Returns the index, or None when it
    cannot be opened yet (no index there: the page says so itself)."""
    key = _key(path)
    with _lock:
        done = _started.setdefault(key, threading.Event())
    t0 = time.perf_counter()
    try:
        idx = warm_up(engine.open(key))
        _loaded[key] = idx
        if echo:
            echo(f"glb ui: index and encoder loaded in {time.perf_counter() - t0:.1f} s")
        return idx
    except Exception as e:  # noqa: BLE001 - the page reports the same problem to the visitor
        log.warning("preloading %s failed: %s", key, e)
        if echo:
            echo(f"glb ui: not preloaded ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})")
        return None
    finally:
        done.set()


def opened(path: str | Path, timeout: float = 600.0):
    """The index `warm` loaded for this path (waiting for it if it is still loading), or None
    when no warm-up was started here or it failed."""
    key = _key(path)
    done = _started.get(key)
    if done is None or not done.wait(timeout):
        return None
    return _loaded.get(key)
