"""The page's session state: defaults, values kept across runs, and the button callbacks
(callbacks run before the page is drawn, so they may set widget values)."""

from __future__ import annotations

from collections import OrderedDict

import streamlit as st

ss = st.session_state

# Widget values, re-asserted at the start of every run: Streamlit drops the value of a widget
# that a run does not draw (another query mode, a run cut short by a newer one).
KEEP = ("mode", "text", "tile_id", "image_sensor", "image_wavelengths", "image_modality",
        "region", "modalities", "sensors", "stac_collections", "use_dates", "dates", "undated", "k", "web_basemap",
        "view", "order", "diversify", "per_scene", "min_relevance")

DEFAULTS = {
    # widgets
    "mode": "text", "text": "", "tile_id": "", "region": "", "modalities": [], "sensors": [],
    "stac_collections": [],
    "use_dates": False, "k": 20, "web_basemap": False, "image_sensor": "",
    "image_wavelengths": "", "image_modality": "", "view": "Gallery", "undated": True,
    "order": "evidence", "diversify": True, "per_scene": 5, "min_relevance": 0,
    # page state
    "selected": None,   # tile id (str) of the result the analyst picked
    "fit": None,        # what the map should show: {key, bounds, max_zoom}; applied once per key
    "fit_for": None,    # the request whose results the map last fitted
    "map_seq": None,    # the last map event handled
    "focus_n": 0,
    "last_shown": None,  # (request, outcome) last shown: kept on the page while the region is bad
}


def init(dates) -> None:
    for k in KEEP:
        if k in ss:
            ss[k] = ss[k]
    first = "memo" not in ss
    for k, v in DEFAULTS.items():
        if k not in ss:
            ss[k] = v
    if first:
        from_url(st.query_params)
    if "memo" not in ss:
        ss.memo = OrderedDict()  # request key -> Outcome, this session's recent searches
    if dates is not None and "dates" not in ss:
        ss.dates = dates
    if "pending_region" in ss:  # drawn on the map in the previous run
        ss.region = ss.pop("pending_region")


def tile_bounds(geom) -> list[list[float]]:
    """A tile's footprint with as much context around it: [[south, west], [north, east]]."""
    x0, y0, x1, y1 = geom.bounds
    # at least ~400 m around it: a chip's neighbours and surroundings stay in view
    dx, dy = max(x1 - x0, 0.004), max(y1 - y0, 0.004)
    return [[y0 - dy, x0 - dx], [y1 + dy, x1 + dx]]


def more_like(tile_id: str) -> None:
    """'More like this': a tile-id query, with the filters as they are."""
    ss.mode, ss.tile_id, ss.selected = "tile", tile_id, None


def select(tile_id: str, bounds) -> None:
    """Pick a result: highlight it and centre the map on it (again, if already picked)."""
    ss.selected = tile_id
    ss.focus_n = ss.get("focus_n", 0) + 1
    ss.fit = {"key": f"sel-{tile_id}-{ss.focus_n}", "bounds": bounds, "max_zoom": 17}


def clear_region() -> None:
    ss.region = ""


# --- the search in the page URL (reload or send the link: the same search) -------------------
# URL parameter -> (session key, parse). Only what decides the result list travels.
def _bool(v: str) -> bool:
    return v not in ("0", "false", "no", "")


def _date(v: str):
    import datetime as dt

    return dt.date.fromisoformat(v)


URL = {"mode": ("mode", str), "q": ("text", str), "tile": ("tile_id", str), "region": ("region", str),
       "k": ("k", int), "undated": ("undated", _bool), "order": ("order", str),
       "div": ("per_scene", int), "floor": ("min_relevance", int)}


def from_url(params) -> None:
    """Session values from the URL's parameters (first run of a session). A value that does
    not parse is ignored: the page's own default stands."""
    for name, (key, parse) in URL.items():
        if name in params:
            try:
                ss[key] = parse(params[name])
            except (TypeError, ValueError):
                pass
    if "fair" in params and "order" not in params:  # links made before the evidence order
        ss.order = "fair" if _bool(params["fair"]) else "raw"
    from .query import ORDERS

    if ss.order not in ORDERS:
        ss.order = DEFAULTS["order"]
    if "div" in params:
        ss.diversify = ss.per_scene > 0
        ss.per_scene = max(1, ss.per_scene)
    for name, key in (("mod", "modalities"), ("sensor", "sensors"), ("stac", "stac_collections")):
        if name in params:
            ss[key] = [v for v in params.get_all(name) if v]
    if "from" in params or "to" in params:
        try:
            ss.dates = (_date(params["from"]), _date(params["to"]))
            ss.use_dates = True
        except (KeyError, TypeError, ValueError):
            pass
    if ss.mode not in ("text", "image", "tile"):
        ss.mode = "text"
    if not 1 <= int(ss.k) <= 100:
        ss.k = DEFAULTS["k"]
    ss.min_relevance = min(99, max(0, int(ss.min_relevance)))
    ss.per_scene = min(20, max(1, int(ss.per_scene)))


def to_url(req) -> dict:
    """The URL parameters of a request (an uploaded image cannot travel: its mode does)."""
    p = {"mode": req.mode}
    if req.mode == "text" and req.text.strip():
        p["q"] = req.text.strip()
    if req.mode == "tile" and req.tile_id.strip():
        p["tile"] = req.tile_id.strip()
    if req.region.strip():
        p["region"] = req.region.strip()
    if req.modalities:
        p["mod"] = list(req.modalities)
    if req.sensors:
        p["sensor"] = list(req.sensors)
    if req.stac_collections:
        p["stac"] = list(req.stac_collections)
    if req.start:
        p["from"] = str(req.start)
    if req.end:
        p["to"] = str(req.end)
    p["undated"] = "1" if req.undated else "0"
    p["k"] = str(req.k)
    p["order"] = req.order
    p["div"] = str(req.diversify or 0)
    p["floor"] = str(int(req.min_relevance))
    return p


def plain_ranking() -> None:
    """'Plain ranking': raw cosine order, no diversification."""
    ss.order, ss.diversify = "raw", False
