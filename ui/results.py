"""The results area of the page: header, exports, the picked result, gallery or table."""

from __future__ import annotations

import base64
import html

import streamlit as st

from ui import query as q
from ui import state
from ui.state import ss
from ui.thumbs import Thumbnails

PLACEHOLDER = ('<div class="glb-thumb-wait" style="width:100%;aspect-ratio:1;border-radius:4px;'
               'background:#eef1f4"></div>')


def thumb_html(jpeg: bytes | None, alt: str, css: str = "glb-thumb") -> str:
    """A thumbnail inlined as a data: URL. (st.image serves pictures from /media/, and a quick
    rerun retires those files while the browser may still be fetching them: 404s.)"""
    if not jpeg:
        return '<div style="font-size:0.8em;color:#888">(no thumbnail)</div>'
    src = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
    return (f'<img class="{css}" src="{src}" alt="{html.escape(alt)}" '
            'style="width:100%;height:auto;object-fit:fill;border-radius:4px;image-rendering:pixelated">')


# Extra buttons on each result card: functions (column, result row, tile id as str) -> None,
# drawn after "Show on map" and "More like this" (other modules add theirs here, e.g. marks).
CARD_BUTTONS: list = []

FILTER_NAMES = {"region": "the region", "modality": "the modality filter",
                "sensor": "the sensor filter", "dates": "the dates"}


def show(req: q.Request, outcome: q.Outcome | None, thumbs: Thumbnails, height: int = 620) -> None:
    """Everything right of the map; the gallery scrolls inside `height` pixels."""
    if outcome is None:
        st.info("Describe what you are looking for in the sidebar (for example “flooded "
                "farmland”), upload an image, or use “More like this” on a result. Draw a "
                "rectangle or polygon on the map to search only inside it.")
        return
    query_box(req, outcome, thumbs)
    if outcome.error:
        st.error(q.md(outcome.error))  # may hold a file name: shown as text
        return
    filter_report(outcome)
    res = outcome.results
    if len(res) == 0:
        st.warning("No tiles match this search: widen the region or the dates, lower the "
                   "relevance floor, or remove filters.")
        return
    st.markdown(f"**{len(res)} results** for {req.describe()} · engine {outcome.seconds * 1000:.0f} ms")
    ranking_note(req, res)
    # One view at a time: the table's grid is a large script the browser need not load (or
    # build) until the analyst asks for it.
    view_col, dl1, dl2, dl3 = st.columns([1, 1, 1, 1], vertical_alignment="center")
    view = view_col.selectbox("View", ["Gallery", "Table"], key="view",
                              label_visibility="collapsed")
    dl1.download_button("GeoJSON", q.to_geojson(res, req), file_name=q.file_name(req, "geojson"),
                        mime="application/geo+json", on_click="ignore", key="dl_geojson",
                        width="stretch")
    dl2.download_button("CSV", q.to_csv(res), file_name=q.file_name(req, "csv"), mime="text/csv",
                        on_click="ignore", key="dl_csv", width="stretch")
    dl3.download_button("GeoParquet", q.to_parquet(res, req), file_name="glb-results.parquet",
                        mime="application/vnd.apache.parquet", on_click="ignore",
                        key="dl_parquet", width="stretch")
    if ss.selected:
        picked(res, thumbs)
    with st.container(height=max(300, height - (260 if ss.selected else 150)), border=False):
        if view == "Table":
            table_view(res)
        else:
            gallery(res, thumbs)


def query_box(req: q.Request, outcome: q.Outcome, thumbs: Thumbnails) -> None:
    """The query itself, above its results: the text, the uploaded picture, or the tile."""
    with st.container(border=True, key="query_box"):
        if req.mode == "text":
            st.markdown(f"Query: **{q.md(req.text.strip())}**")
            return
        left, right = st.columns([1, 4], vertical_alignment="center")
        if req.mode == "image":
            left.markdown(thumb_html(q.preview_jpeg(req.image), f"query image {req.image_name}",
                                     css="glb-query-thumb"), unsafe_allow_html=True)
            where = ("its footprint is outlined on the map" if outcome.query_footprint
                     else "it says nothing about where it is")
            right.markdown(f"Query image: {q.md(req.image_name or 'upload')} · {where}")
            if outcome.note:
                right.caption(f"Read as: {q.md(outcome.note)}")
        else:
            tid = req.tile_id.strip()
            jpeg = None
            try:
                jpeg = thumbs.get([int(tid)]).get(int(tid))
            except (ValueError, Exception):  # noqa: BLE001 - a bad id gets its message below
                jpeg = None
            left.markdown(thumb_html(jpeg, f"query tile {tid}", css="glb-query-thumb"),
                          unsafe_allow_html=True)
            right.markdown(f"More like tile {q.md(tid)}")


def filter_report(outcome: q.Outcome) -> None:
    """What each filter did: '7 tiles removed by the dates (48 without a date kept)'."""
    parts = []
    for f in outcome.filters:
        text = f"{FILTER_NAMES.get(f['filter'], f['filter'])} removed {f['removed']:,}"
        if f["filter"] == "dates":
            text += f" (kept {f.get('undated_kept', 0):,} without a date)" if f.get("undated_kept") \
                else " (tiles without a date excluded)" if not ss.undated else ""
        parts.append(text)
    if parts:
        st.caption("Filters: " + " · ".join(parts) + f" · {outcome.filters[-1]['left']:,} tiles left",
                   help=None)


def ranking_note(req: q.Request, res) -> None:
    info = res.attrs.get("ranking", {})
    bits = ["**Relevance** = percentile of a tile's score among this index's tiles of the same "
            "modality for this query (99 = better than 99 %); high/medium/low says how far it "
            "stands out."]
    bits.append({"evidence": "Ordered by evidence across sensors.",
                 "fair": "Ranked fairly across sensors."}.get(req.order, "Ranked by raw similarity (cosine)."))
    if req.diversify:
        hidden = info.get("hidden_by_diversify", 0)
        bits.append(f"Diversified: one per place, at most {req.diversify} per scene"
                    + (f" ({hidden} similar tiles skipped)." if hidden else "."))
    if req.min_relevance:
        bits.append(f"Floor: relevance ≥ {req.min_relevance:g}.")
    cols = st.columns([3, 2], vertical_alignment="center")
    cols[0].caption(" ".join(bits))
    if req.order != "raw" or req.diversify:
        cols[1].button("Plain ranking", key="plain_ranking", on_click=state.plain_ranking,
                       help="Raw similarity order, no diversification (one click back: the order "
                            "and the diversify box under Ranking).")


def picked(res, thumbs: Thumbnails) -> None:
    """The selected result, bigger, with 'More like this'."""
    rows = res[res["tile_id"].astype("int64").astype(str) == ss.selected]
    if not len(rows):
        return
    row = rows.iloc[0]
    tid = str(int(row["tile_id"]))
    with st.container(border=True, key="selected_panel"):
        left, right = st.columns([2, 3])
        jpeg = thumbs.get([int(tid)]).get(int(tid))
        left.markdown(thumb_html(jpeg, f"selected tile {tid}"), unsafe_allow_html=True)
        right.markdown(f"**Selected: #{int(row['rank'])}** · relevance {q.md(q.relevance_text(row))} · "
                       f"cosine {float(row['score_raw']):.4f}")
        right.caption(q.md(f"{row['modality']} · {row['sensor']} · "
                           f"{q.table(rows)['acquired'].iloc[0] or 'no date'} · {row['scene']} · tile {tid}"))
        right.button("More like this", key=f"sel_more_{tid}", type="primary",
                     on_click=state.more_like, args=(tid,),
                     help="Tiles like this one, in every modality unless the modality filter "
                          "says otherwise.")


def gallery(res, thumbs: Thumbnails) -> None:
    """The ranked list: one card per result (thumbnail; rank, score, modality, sensor, date,
    scene; 'Show on map' and 'More like this'). Cards are drawn first; each picture fills in
    as soon as it is read."""
    slots = {}
    for _, row in res.iterrows():
        tid = str(int(row["tile_id"]))
        with st.container(border=True, key=f"card_{tid}"):
            pic, text = st.columns([2, 3])
            slots[int(tid)] = (pic.empty(), f"result {int(row['rank'])}: {row['scene']}")
            slots[int(tid)][0].markdown(PLACEHOLDER, unsafe_allow_html=True)
            text.caption(("▶ " if tid == ss.selected else "") + q.caption(row))
            text.button("Show on map", key=f"map_{tid}", on_click=state.select,
                        args=(tid, state.tile_bounds(row["geometry"])), width="stretch")
            text.button("More like this", key=f"more_{tid}", on_click=state.more_like,
                        args=(tid,), width="stretch")
            for extra in CARD_BUTTONS:
                extra(text, row, tid)
    for tile_id, png in thumbs.iter(slots):
        slot, alt = slots[tile_id]
        slot.markdown(thumb_html(png, alt), unsafe_allow_html=True)


def table_view(res) -> None:
    """The results as a table; clicking a row selects that result (and centres the map on it)."""
    shown = q.table(res)
    event = st.dataframe(shown, hide_index=True, key="results_table", on_select="rerun",
                         selection_mode="single-row")
    rows = list(getattr(getattr(event, "selection", None), "rows", []) or [])
    if rows == ss.get("table_pick"):  # handled already (a map click may have picked another since)
        return
    ss.table_pick = rows
    if rows and 0 <= rows[0] < len(res):
        tid = shown["tile_id"].iloc[rows[0]]
        if tid != ss.selected:
            state.select(tid, state.tile_bounds(res.geometry.iloc[rows[0]]))
            st.rerun()
