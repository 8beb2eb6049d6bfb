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


def thumb_html(jpeg: bytes | None, alt: str) -> str:
    """A thumbnail inlined as a data: URL. (st.image serves pictures from /media/, and a quick
    rerun retires those files while the browser may still be fetching them: 404s.)"""
    if not jpeg:
        return '<div style="font-size:0.8em;color:#888">(no thumbnail)</div>'
    src = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
    return (f'<img class="glb-thumb" src="{src}" alt="{html.escape(alt)}" '
            'style="width:100%;height:auto;object-fit:fill;border-radius:4px;image-rendering:pixelated">')


def show(req: q.Request, outcome: q.Outcome | None, thumbs: Thumbnails, height: int = 620) -> None:
    """Everything right of the map; the gallery scrolls inside `height` pixels."""
    if outcome is None:
        st.info("Describe what you are looking for in the sidebar (for example “flooded "
                "farmland”), upload an image, or use “More like this” on a result. Draw a "
                "rectangle or polygon on the map to search only inside it.")
        return
    if outcome.error:
        st.error(outcome.error)
        return
    if outcome.note:
        st.caption(f"Query image read as: {q.md(outcome.note)}")
    res = outcome.results
    if len(res) == 0:
        st.warning("No tiles match this search: widen the region or the dates, or remove filters.")
        return
    st.markdown(f"**{len(res)} results** for {req.describe()} · engine {outcome.seconds * 1000:.0f} ms")
    # One view at a time: the table's grid is a large script the browser need not load (or
    # build) until the analyst asks for it.
    view_col, dl1, dl2, dl3 = st.columns([1, 1, 1, 1], vertical_alignment="center")
    view = view_col.selectbox("View", ["Gallery", "Table"], key="view",
                              label_visibility="collapsed")
    dl1.download_button("GeoJSON", q.to_geojson(res, req), file_name="glb-results.geojson",
                        mime="application/geo+json", on_click="ignore", key="dl_geojson",
                        width="stretch")
    dl2.download_button("CSV", q.to_csv(res), file_name="glb-results.csv", mime="text/csv",
                        on_click="ignore", key="dl_csv", width="stretch")
    dl3.download_button("GeoParquet", q.to_parquet(res, req), file_name="glb-results.parquet",
                        mime="application/vnd.apache.parquet", on_click="ignore",
                        key="dl_parquet", width="stretch")
    if ss.selected:
        picked(res, thumbs)
    with st.container(height=max(300, height - (220 if ss.selected else 110)), border=False):
        if view == "Table":
            st.dataframe(q.table(res), hide_index=True, key="results_table")
        else:
            gallery(res, thumbs)


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
        right.markdown(f"**Selected: #{int(row['rank'])}** · score {float(row['score']):.4f}")
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
    for tile_id, png in thumbs.iter(slots):
        slot, alt = slots[tile_id]
        slot.markdown(thumb_html(png, alt), unsafe_allow_html=True)
