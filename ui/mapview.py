"""The map: a Leaflet page run as a Streamlit component, served by Streamlit from one folder.

That folder (a private temporary folder per server process) holds the page (`static/map`),
the browser libraries fetched at install time (`static/vendor`, see `ui.assets`) and what the
index provides: each scene's overview picture and a scenes list with their corners. So the
browser loads nothing from outside this server, and the basemap is the indexed imagery itself.
Only this index's files are ever put there.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import shutil
import tempfile
import threading
from pathlib import Path

import engine
from ui import assets

FRONTEND = Path(__file__).resolve().parent / "static" / "map"
COMPONENT = "glb_map"

_lock = threading.Lock()
_site: dict = {}  # "root": Path, "index": resolved index path, "data": {generation: relative url}


def _root(index: str) -> Path:
    """The served folder of `index`. A server serves one index; a process that opens another
    (tests, a relaunch in one interpreter) gets a new folder, so no other index's files or
    generation numbers are ever served with it."""
    root = _site.get("root")
    if root is None or not root.is_dir() or _site.get("index") != index:
        root = Path(tempfile.mkdtemp(prefix="glb-ui-map-"))
        atexit.register(shutil.rmtree, root, True)
        _site.clear()
        _site["root"], _site["index"], _site["data"] = root, index, {}
    return root


def _install_frontend(root: Path) -> None:
    for src in (FRONTEND, assets.VENDOR):
        dst = root if src == FRONTEND else root / "vendor"
        shutil.copytree(src, dst, dirs_exist_ok=True)


def site(idx, generation: int) -> tuple[Path, str]:
    """The served folder and the URL (relative to it) of this generation's scenes list;
    writes overview pictures that are not there yet. Thread-safe; once per generation."""
    with _lock:
        root = _root(str(Path(idx.path).resolve()))
        data = _site["data"]
        if generation in data:
            return root, data[generation]
        if not data:
            _install_frontend(root)
        scenes = idx.scenes().set_index("scene_id")
        out, ov_dir = [], root / "ov"
        ov_dir.mkdir(exist_ok=True)
        for ov in idx.overviews():
            sid = str(ov["scene_id"])
            name = hashlib.sha1(sid.encode()).hexdigest()[:20] + ".png"  # no user text in paths
            path = ov_dir / name
            if not path.exists():  # sessions write these concurrently: one atomic writer
                engine.try_atomic_write(path, lambda p, png=ov["png"]: p.write_bytes(png))
            rec = scenes.loc[sid] if sid in scenes.index else None
            acquired = rec["acquired"] if rec is not None else None
            out.append({
                "scene_id": sid, "img": f"ov/{name}", "corners": ov["corners"],
                "scene": str(rec["scene"]) if rec is not None else sid,
                "sensor": str(rec["sensor"]) if rec is not None else "",
                "modality": str(rec["modality"]) if rec is not None else "",
                "acquired": "" if acquired is None or str(acquired) in ("NaT", "None", "nan") else str(acquired)[:10],
                "n_tiles": int(rec["n_tiles"]) if rec is not None else 0,
            })
        url = f"g{int(generation)}/scenes.json"
        (root / url).parent.mkdir(exist_ok=True)
        (root / url).write_text(json.dumps(out))
        data[generation] = url
        return root, url


def map_view(*, root: Path, data_url: str, results: dict | None, results_key: str,
             region: dict | None, region_key: str, fit: dict | None, web_basemap: bool = False,
             height: int = 540, key: str = "map", query_footprint: dict | None = None):
    """Draw the map (results, the region searched, an uploaded query image's footprint);
    returns the last event the analyst made on it (or None):
    {"event": "region", "geometry": GeoJSON | None, "seq": ...} or
    {"event": "select", "tile_id": "...", "seq": ...}."""
    import streamlit.components.v1 as components

    component = components.declare_component(COMPONENT, path=str(root))
    return component(data=data_url, results=results, results_key=results_key, region=region,
                     region_key=region_key, query_footprint=query_footprint, fit=fit, web_basemap=bool(web_basemap), height=height,
                     key=key, default=None)
