"""The page's session state: defaults, values kept across runs, and the button callbacks
(callbacks run before the page is drawn, so they may set widget values)."""

from __future__ import annotations

from collections import OrderedDict

import streamlit as st

ss = st.session_state

# Widget values, re-asserted at the start of every run: Streamlit drops the value of a widget
# that a run does not draw (another query mode, a run cut short by a newer one).
KEEP = ("mode", "text", "tile_id", "image_sensor", "image_wavelengths", "image_modality",
        "region", "modalities", "sensors", "use_dates", "dates", "k", "web_basemap", "view")

DEFAULTS = {
    # widgets
    "mode": "text", "text": "", "tile_id": "", "region": "", "modalities": [], "sensors": [],
    "use_dates": False, "k": 20, "web_basemap": False, "image_sensor": "",
    "image_wavelengths": "", "image_modality": "", "view": "Gallery",
    # page state
    "selected": None,   # tile id (str) of the result the analyst picked
    "fit": None,        # what the map should show: {key, bounds, max_zoom}; applied once per key
    "fit_for": None,    # the request whose results the map last fitted
    "map_seq": None,    # the last map event handled
    "focus_n": 0,
}


def init(dates) -> None:
    for k in KEEP:
        if k in ss:
            ss[k] = ss[k]
    for k, v in DEFAULTS.items():
        if k not in ss:
            ss[k] = v
    if "memo" not in ss:
        ss.memo = OrderedDict()  # request key -> Outcome, this session's recent searches
    if dates is not None and "dates" not in ss:
        ss.dates = dates
    if "pending_region" in ss:  # drawn on the map in the previous run
        ss.region = ss.pop("pending_region")


def tile_bounds(geom) -> list[list[float]]:
    """A tile's footprint with as much context around it: [[south, west], [north, east]]."""
    x0, y0, x1, y1 = geom.bounds
    dx, dy = max(x1 - x0, 1e-4), max(y1 - y0, 1e-4)
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
