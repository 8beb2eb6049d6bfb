"""GeoLangBind search page (Streamlit). Start it with `glb ui --index DIR` (see ui/launch.py).

The index comes from the GLB_UI_INDEX environment variable (or `-- --index DIR` after the
script): the page never opens any other. This file is the layout: sidebar, map, results.
Logic: ui/query.py; map: ui/mapview.py; results area: ui/results.py; session: ui/state.py.
Buttons of other features on each result card: append a function (column, row, tile id) to
ui.results.CARD_BUTTONS before main() runs; the search's URL parameters are ui/state.URL.
Engine errors and bugs alike end as a message in the page, never a traceback.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys

import streamlit as st

import engine
from ui import assets, feedback, mapview, preload, results, state
from ui import query as q
from ui.state import ss
from ui.thumbs import Thumbnails

log = logging.getLogger("glb.ui")

MODE_LABELS = {"text": "Text", "image": "Image", "tile": "Similar tile"}
UPLOAD_TYPES = ["tif", "tiff", "png", "jpg", "jpeg"]
MEMO_SIZE = 16
MAP_HEIGHT = 620

feedback.register(results.CARD_BUTTONS)  # "Relevant" / "Not relevant" on each result card


def index_path() -> str | None:
    path = os.environ.get("GLB_UI_INDEX")
    if path:
        return path
    argv = sys.argv[1:]
    if "--index" in argv and argv.index("--index") + 1 < len(argv):
        return argv[argv.index("--index") + 1]
    return None


# --- loaded once per server process ---------------------------------------------------------
@st.cache_resource(show_spinner="Opening the index and loading the encoder (once per server)…")
def load_index(path: str):
    idx = preload.opened(path)  # `glb ui` loads (and warms) it when the server starts
    if idx is None:
        idx = preload.warm_up(engine.open(path))
    return idx


@st.cache_resource(show_spinner=False)
def thumbnails(path: str) -> Thumbnails:
    return Thumbnails(load_index(path))


@st.cache_resource(show_spinner=False)
def sensors_by_modality(path: str, generation: int) -> dict[str, dict[str, int]]:
    """modality -> {sensor: tiles} of what this index holds (for the filter lists)."""
    scenes = load_index(path).scenes()
    out: dict[str, dict[str, int]] = {}
    for (m, s), n in scenes.groupby(["modality", "sensor"])["n_tiles"].sum().items():
        if n:
            out.setdefault(str(m), {})[str(s)] = int(n)
    return out


@st.cache_resource(show_spinner=False)
def stac_collections(path: str, generation: int) -> dict[str, int]:
    """STAC collection -> tiles, of the scenes indexed from a STAC catalogue (`glb index --stac`)."""
    scenes = load_index(path).scenes()
    if "stac_collection" not in scenes:
        return {}
    per = scenes.dropna(subset=["stac_collection"]).groupby("stac_collection")["n_tiles"].sum()
    return {str(c): int(n) for c, n in per.items() if n}


@st.cache_resource(show_spinner=False)
def date_range(path: str, generation: int) -> tuple[dt.date, dt.date] | None:
    import pandas as pd

    acq = pd.to_datetime(load_index(path).scenes()["acquired"], errors="coerce").dropna()
    return (acq.min().date(), acq.max().date()) if len(acq) else None


# --- page parts -----------------------------------------------------------------------------
def sidebar(info: dict, dates, holdings: dict[str, dict[str, int]],
            collections: dict[str, int]) -> q.Request:
    from engine.raster import MAX_UPLOAD_BYTES
    from engine.sensors import registry

    sb = st.sidebar
    sb.header("Search")
    mode = sb.radio("Query by", list(MODE_LABELS), format_func=MODE_LABELS.get, horizontal=True,
                    key="mode")
    upload = None
    if mode == "text":
        sb.text_input("Describe what you are looking for", key="text",
                      placeholder="flooded farmland", help="Press Enter to search.")
    elif mode == "image":
        mb = MAX_UPLOAD_BYTES // 2**20
        upload = sb.file_uploader(f"Query image (GeoTIFF, PNG, JPEG; up to {mb} MB)",
                                  type=UPLOAD_TYPES, key="upload", max_upload_size=mb)
        reg = registry()
        sb.selectbox("Sensor", [""] + sorted(reg), key="image_sensor",
                     format_func=lambda s: "from the file's metadata" if not s else
                     f"{s} ({reg[s].modality}, {len(reg[s].bands)} bands)",
                     help="Pick one when the file does not say which sensor made it.")
        sb.text_input("…or band centres (µm, comma-separated)", key="image_wavelengths",
                      placeholder="0.665,0.56,0.49")
        sb.selectbox("Modality of those bands", [""] + list(engine.MODALITIES), key="image_modality",
                     format_func=lambda m: m or "from the wavelengths")
    else:
        sb.text_input("Tile id", key="tile_id", help="“More like this” on a result fills this in.")
    sb.button("Search", type="primary", key="search", width="stretch")

    sb.subheader("Where")
    sb.text_input("Region", key="region",
                  placeholder="draw on the map, or min_lon,min_lat,max_lon,max_lat",
                  help="A box min_lon,min_lat,max_lon,max_lat, or a polygon as WKT or GeoJSON. "
                       "Drawing a rectangle or polygon on the map fills this in.")
    sb.button("Clear region", key="clear_region", on_click=state.clear_region)

    sb.subheader("Filters")
    # only what the index holds, with tile counts; the sensor list follows the modality
    mod_counts = {m: n for m, n in info["modalities"].items() if n}
    ss.modalities = [m for m in ss.modalities if m in mod_counts]
    sb.multiselect("Modality", list(mod_counts), key="modalities", placeholder="all",
                   format_func=lambda m: f"{m} ({mod_counts[m]:,})")
    sensor_counts: dict[str, int] = {}
    for m, per in holdings.items():
        if not ss.modalities or m in ss.modalities:
            for s_, n in per.items():
                sensor_counts[s_] = sensor_counts.get(s_, 0) + n
    ss.sensors = [s_ for s_ in ss.sensors if s_ in sensor_counts]
    sb.multiselect("Sensor", sorted(sensor_counts), key="sensors", placeholder="all",
                   format_func=lambda s_: f"{s_} ({sensor_counts[s_]:,})")
    ss.stac_collections = [c for c in ss.stac_collections if c in collections]
    if collections:  # only for an index that holds scenes from a STAC catalogue
        sb.multiselect("STAC collection", sorted(collections), key="stac_collections",
                       placeholder="all", format_func=lambda c: f"{c} ({collections[c]:,})",
                       help="Only tiles of scenes indexed from these collections (glb index --stac).")
    start = end = None
    if dates is not None and sb.checkbox("Only tiles acquired between", key="use_dates"):
        picked = sb.date_input("Dates", key="dates", min_value=dt.date(1900, 1, 1),
                               max_value=dt.date(2100, 1, 1), label_visibility="collapsed")
        picked = picked if isinstance(picked, (tuple, list)) else (picked,)
        start = picked[0] if len(picked) > 0 else None
        end = picked[1] if len(picked) > 1 else None
        sb.checkbox("Keep tiles that have no date", key="undated",
                    help="Many sources carry no acquisition date; they stay in the results "
                         "unless you untick this.")
    sb.slider("Results (k)", 1, q.MAX_K, key="k")

    sb.subheader("Ranking")
    sb.radio("Order across sensors", list(q.ORDERS), key="order", format_func=q.ORDERS.get,
             help="**By evidence**: each sensor's best tiles, ordered by how much better your "
                  "query describes a tile than other descriptions do (land cover, scenes, "
                  "vehicles, ships, floods, terrain), so a sensor whose tiles match nothing "
                  "stays out. **A fair share per sensor**: each sensor's scores measured against "
                  "its own tiles in this index, so every sensor gets places. **Raw similarity**: "
                  "the cosine order.")
    sb.checkbox("Diversify: one result per place, at most", key="diversify",
                help="Revisits of the same footprint show once (the best date), and no scene "
                     "fills the list.")
    sb.number_input("results per scene", 1, 20, key="per_scene", disabled=not ss.diversify)
    sb.slider("Relevance floor (percentile)", 0, 99, key="min_relevance",
              help="Relevance is the percentile of a tile's score among all this index's "
                   "tiles of the same modality, for this query: 99 means it matches better "
                   "than 99 % of them. Results below the floor are left out.")

    sb.subheader("Map")
    sb.checkbox("Web basemap (OpenStreetMap; needs the internet)", key="web_basemap")

    return q.Request(
        mode=mode,
        text=ss.text if mode == "text" else "",
        tile_id=ss.tile_id if mode == "tile" else "",
        image=upload.getvalue() if upload is not None else None,
        image_name=upload.name if upload is not None else "",
        image_sensor=(ss.image_sensor or None) if mode == "image" else None,
        image_wavelengths=ss.image_wavelengths if mode == "image" else "",
        image_modality=(ss.image_modality or None) if mode == "image" else None,
        modalities=tuple(ss.modalities), sensors=tuple(ss.sensors),
        stac_collections=tuple(ss.stac_collections), start=start, end=end,
        region=ss.region, k=int(ss.k), undated=bool(ss.undated),
        order=str(ss.order), diversify=int(ss.per_scene) if ss.diversify else None,
        min_relevance=float(ss.min_relevance))


def search(idx, req: q.Request, generation: int) -> q.Outcome | None:
    if req.is_empty():
        return None
    key = f"{generation}:{req.key()}"
    memo = ss.memo
    if key not in memo:
        memo[key] = q.run(idx, req)
        while len(memo) > MEMO_SIZE:
            memo.popitem(last=False)
    return memo[key]


def draw_map(idx, info: dict, req: q.Request, region, outcome: q.Outcome | None) -> None:
    res = outcome.results if outcome is not None and outcome.error is None else None
    if assets.missing():
        st.warning("The map's browser libraries are not installed: run `make install` (or "
                   "`python -m ui.assets`) once where the npm registry is reachable.")
        return
    root, data_url = mapview.site(idx, info["generation"])
    if ss.fit is None and info["bbox"]:
        x0, y0, x1, y1 = info["bbox"]
        ss.fit = {"key": f"index-{info['generation']}", "bounds": [[y0, x0], [y1, x1]], "max_zoom": 12}
    has = res is not None and len(res) > 0
    if has and ss.fit_for != req.key():
        ss.fit_for = req.key()
        # the results and the region searched: both stay in view
        geoms = res.geometry
        if region is not None:
            from shapely.geometry import shape

            geoms = list(geoms) + [shape(region.geojson())]
        ss.fit = {"key": f"res-{req.key()}", "bounds": q.bounds(geoms), "max_zoom": 15}
    query_fp = outcome.query_footprint if outcome is not None else None
    event = mapview.map_view(
        root=root, data_url=data_url,
        results=feedback.map_marks(q.map_features(res, ss.selected)) if has else None,
        results_key=(f"{req.key()}:{ss.selected}:{hash(tuple(sorted(ss.marks.items())))}"
                     if has else "none"),
        region=region.geojson() if region is not None else None, region_key=ss.region.strip(),
        query_footprint=query_fp, fit=ss.fit, web_basemap=ss.web_basemap, height=MAP_HEIGHT)
    if not isinstance(event, dict) or not event.get("seq") or event["seq"] == ss.map_seq:
        return
    ss.map_seq = event["seq"]
    if event.get("event") == "region":
        try:
            ss.pending_region = q.region_text(event.get("geometry"))
        except Exception:  # noqa: BLE001 - a shape the map should not produce
            st.error("The drawn region could not be read; draw it again.")
            return
        st.rerun()
    elif event.get("event") == "select" and has:
        hit = res[res["tile_id"].astype("int64").astype(str) == str(event.get("tile_id"))]
        if len(hit):
            state.select(str(event["tile_id"]), state.tile_bounds(hit.geometry.iloc[0]))
            st.rerun()


def main() -> None:
    st.set_page_config(page_title="GeoLangBind search", layout="wide")
    path = index_path()
    if not path:
        st.error("No index given: start this page with `glb ui --index DIR`.")
        return
    try:
        idx = load_index(path)
    except engine.IndexNotFoundError:
        st.error(f"No index at {path}. Build one with `glb index SCENES... --index {path}`, "
                 "then reload this page.")
        return
    info = idx.info()
    dates = date_range(path, info["generation"])
    state.init(dates)
    req = sidebar(info, dates, sensors_by_modality(path, info["generation"]),
                  stac_collections(path, info["generation"]))
    st.query_params.from_dict(state.to_url(req))   # the marks stay in the session, not the URL
    req = feedback.apply(req)                      # with the marks once Refine is pressed
    feedback.sidebar(idx)                          # saved searches, new alerts

    st.html("<style>.stMainBlockContainer{padding-top:3rem}</style>")
    st.markdown("#### GeoLangBind · search Earth-observation imagery")
    st.caption(f"{info['tiles']:,} tiles from {info['scenes']:,} scenes · "
               + ", ".join(f"{m} {n:,}" for m, n in info["modalities"].items()))
    if info["encoder"].get("trained") is False:
        st.warning("The encoder is untrained (random weights): rankings mean nothing until a "
                   "trained checkpoint is installed.")
    if info["tiles"] == 0:
        st.warning("The index is empty: add scenes with `glb index`.")

    region = None
    try:
        region = q.parse_region(ss.region)
    except engine.InputError as e:
        # A bad region keeps the page as it was: the previous search, its results and its map.
        msg = str(e) if str(e).endswith(("?", ".")) else f"{e}."
        kept = " The results below are from the previous search." if ss.last_shown else ""
        st.error("Region: " + q.md(f"{msg}{kept}"))  # holds the analyst's text: shown, never rendered
        req, outcome = ss.last_shown or (req, None)
        region = _region_or_none(req.region)
    else:
        outcome = search(idx, req, info["generation"])
        ss.last_shown = (req, outcome) if outcome is not None else None
    res = outcome.results if outcome is not None and outcome.error is None else None
    if res is not None and ss.selected not in set(res["tile_id"].astype("int64").astype(str)):
        ss.selected = None
    # Map and results side by side: picking a result centres the map while both stay in view.
    left, right = st.columns([3, 2], gap="medium")
    with left:
        draw_map(idx, info, req, region, outcome)
    with right:
        feedback.panel(idx, req, outcome)     # marks counter, Refine, Clear, Save search
        results.show(req, outcome, thumbnails(path), height=MAP_HEIGHT)


def _region_or_none(text: str):
    try:
        return q.parse_region(text)
    except engine.InputError:
        return None


try:
    main()
except engine.GLBError as e:
    st.error(q.md(str(e)))
except Exception as e:  # a bug: a message in the page, the traceback in the log
    log.exception("search page failed")
    st.error(f"Something went wrong ({type(e).__name__}: {str(e)[:200]}). The details are in "
             "the server's log.")
