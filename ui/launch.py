"""`glb ui --index DIR`: start the search page with Streamlit, offline and private by default.

This process becomes `python -m ui.serve run ui/app.py` (exec): Streamlit's own command line,
plus the index and encoder loading from the moment the server starts (ui/preload.py), so the
first visitor sees the map at once. Options are given on its command line, so no config file anywhere changes them: headless, bound to 127.0.0.1
unless --host says otherwise, usage statistics off (no network calls), uploads capped at the
engine's limit, no file watcher, error details hidden from the page (they go to this log).
The index path reaches the page in the GLB_UI_INDEX environment variable.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

APP = Path(__file__).resolve().parent / "app.py"


def server_options(host: str = "127.0.0.1", port: int = 8501) -> list[str]:
    from engine.raster import MAX_UPLOAD_BYTES

    opts = {
        "server.headless": "true",
        "server.address": host,
        "server.port": str(int(port)),
        "server.maxUploadSize": str(max(1, MAX_UPLOAD_BYTES // 2**20)),
        "server.fileWatcherType": "none",
        "server.runOnSave": "false",
        "server.enableStaticServing": "false",
        "browser.gatherUsageStats": "false",
        "global.developmentMode": "false",
        "client.showErrorDetails": "none",
        "client.toolbarMode": "viewer",
        "theme.base": "light",
    }
    return [f"--{k}={v}" for k, v in opts.items()]


def command(index: str | Path, host: str = "127.0.0.1", port: int = 8501) -> list[str]:
    return [sys.executable, "-m", "ui.serve", "run", str(APP), *server_options(host, port)]


def environment(index: str | Path) -> dict[str, str]:
    env = dict(os.environ)
    env["GLB_UI_INDEX"] = str(Path(index).resolve())
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    # One query at a time wants one thread: on a busy 2-core machine torch's default thread
    # pool turns a 20 ms text encoding into 0.5-0.7 s of spinning.
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    env["STREAMLIT_BROWSER_GATHER_USAGE_STATS"] = "false"
    return env


def launch(index: str | Path, host: str = "127.0.0.1", port: int = 8501) -> int:
    """Serve the page until stopped. On POSIX this process becomes the Streamlit server (so it
    returns only where exec is unavailable, with Streamlit's exit status)."""
    from ui import assets

    index = Path(index)
    if not (index / "CURRENT").is_file():
        print(f"glb ui: warning: no index at {index} yet; the page will say so until one is "
              f"built (glb index SCENES... --index {index})", file=sys.stderr)
    still = assets.ensure(echo=lambda m: print(m, file=sys.stderr))
    if still:
        print("glb ui: warning: the map's browser libraries are missing (run `python -m ui.assets` "
              "where the npm registry is reachable); the page will work without the map",
              file=sys.stderr)
    print(f"glb ui: serving {index.resolve()} on http://{host}:{port}", file=sys.stderr)
    cmd, env = command(index, host, port), environment(index)
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "posix":
        # Become the server: signals (Ctrl-C, SIGTERM) reach Streamlit directly, and the memory
        # this process holds (the engine's imports, ~0.6 GB) is given back.
        os.execve(cmd[0], cmd, env)
    return subprocess.call(cmd, env=env)
