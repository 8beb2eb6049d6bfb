"""The analyst's loop on the search page: mark results relevant / not relevant (on each card;
the map colours marked footprints), Refine, a counter, Clear, export the marks, save the search,
and the saved searches with "new since you last looked". Engine side: engine/retrieval/feedback.py,
engine/retrieval/watch.py. Hooks in app.py: `apply` (the request carries the marks once Refine is
pressed), `panel` (above the results), `sidebar` (saved searches); in results.py: `card`.

Marks live in the session (`ss.marks`: tile id -> True relevant / False not relevant) and
persist across queries until cleared. A search uses them only after Refine: marking does not
re-run the search on every click.
"""

from __future__ import annotations

import dataclasses

import streamlit as st

import engine
from ui import query as q
from ui.state import ss

LABEL = {True: "relevant", False: "not relevant"}


def init() -> None:
    if "marks" not in ss:
        ss.marks = {}          # tile id (str) -> True / False
    if "refine_marks" not in ss:
        ss.refine_marks = None  # the marks a Refine froze into the request, or None
    if "saved_note" not in ss:
        ss.saved_note = None


def counts() -> tuple[int, int]:
    m = ss.get("marks", {})
    return sum(1 for v in m.values() if v), sum(1 for v in m.values() if not v)


def apply(req: q.Request) -> q.Request:
    """The request as the page runs it: with the marks frozen by the last Refine."""
    init()
    frozen = ss.refine_marks
    if not frozen:
        return req
    pos = tuple(t for t, v in frozen if v)
    neg = tuple(t for t, v in frozen if not v)
    return dataclasses.replace(req, positives=pos, negatives=neg)


# --- callbacks (run before the page is drawn) ---------------------------------------------------
def toggle(tile_id: str, relevant: bool) -> None:
    init()
    if ss.marks.get(tile_id) is relevant:
        del ss.marks[tile_id]
    else:
        ss.marks[tile_id] = relevant


def refine() -> None:
    ss.refine_marks = tuple(sorted(ss.marks.items()))


def clear() -> None:
    ss.marks = {}
    ss.refine_marks = None


# --- page parts ------------------------------------------------------------------------------
def card(tid: str) -> None:
    """Two toggles under a result card: relevant / not relevant (the active one is filled)."""
    init()
    mark = ss.marks.get(tid)
    a, b = st.columns(2)
    a.button("✓ Relevant", key=f"rel_{tid}", on_click=toggle, args=(tid, True), width="stretch",
             type="primary" if mark is True else "secondary", help="Mark as what you are looking for")
    b.button("✗ Not relevant", key=f"irr_{tid}", on_click=toggle, args=(tid, False), width="stretch",
             type="primary" if mark is False else "secondary", help="Mark as not what you are looking for")


def card_button(col, row, tid: str) -> None:
    """The marks' entry in ui.results.CARD_BUTTONS."""
    with col:
        card(tid)


def register(buttons: list) -> None:
    """Puts the marks on every result card once (the page script reruns; this module may be
    reloaded, so an earlier copy of card_button is replaced, not doubled)."""
    buttons[:] = [f for f in buttons if getattr(f, "__module__", None) != __name__] + [card_button]


def map_marks(features: dict) -> dict:
    """Adds each result's mark to its map feature (the map colours marked footprints)."""
    m = ss.get("marks", {})
    for f in features.get("features", []):
        v = m.get(f["properties"]["tile_id"])
        f["properties"]["mark"] = None if v is None else LABEL[v]
    return features


def panel(idx, req: q.Request, outcome) -> None:
    """Counter, Refine, Clear, marks export and Save search, above the results."""
    init()
    npos, nneg = counts()
    if outcome is None and not (npos or nneg):
        return  # nothing searched, nothing marked: the start page stays as it is
    c1, c2, c3 = st.columns([2, 1, 1], vertical_alignment="center")
    c1.markdown(f"**Marks:** {npos} relevant · {nneg} not relevant"
                + (" · *refined*" if req.positives or req.negatives else ""),
                help="Mark results on their cards; Refine searches again from the query plus "
                     "the marks. The marks stay for this session until cleared.")
    c2.button("Refine", key="fb_refine", type="primary", on_click=refine, disabled=not (npos or nneg),
              width="stretch")
    c3.button("Clear marks", key="fb_clear", on_click=clear, disabled=not (npos or nneg or ss.refine_marks),
              width="stretch")
    if outcome is not None and getattr(outcome, "feedback", None):
        fb = outcome.feedback
        rr = fb.get("rerank")
        st.caption(q.md(f"Refined with {fb['method']}: weight {fb['weight']:.2f} on the marks "
                        f"({fb['reason']})"
                        + (f"; its top {rr['candidates']} re-ranked by their neighbours and the marks"
                           if rr else "")))
    with st.expander("Save this search · export marks", expanded=False):
        name = st.text_input("Name", key="fb_save_name", placeholder="flooded farmland, Sept.")
        if st.button("Save search", key="fb_save", disabled=req.is_empty()):
            ss.saved_note = save(idx, req, name)
        if ss.saved_note:
            (st.error if ss.saved_note.startswith("!") else st.success)(ss.saved_note.lstrip("!"))
        if npos or nneg:
            pos = [int(t) for t, v in ss.marks.items() if v]
            neg = [int(t) for t, v in ss.marks.items() if not v]
            try:
                df = idx.marks(pos, neg, query=req.text or None)
            except engine.GLBError as e:
                st.error(str(e))
                return
            query = {"text": req.text or None, "like": pos, "unlike": neg}
            a, b = st.columns(2)
            a.download_button("Marks GeoJSON", engine.export_results(df, "geojson", query=query),
                              file_name="glb-marks.geojson", mime="application/geo+json",
                              on_click="ignore", key="fb_dl_geojson", width="stretch")
            b.download_button("Marks GeoParquet", engine.export_results(df, "parquet", query=query),
                              file_name="glb-marks.parquet",
                              mime="application/vnd.apache.parquet", on_click="ignore",
                              key="fb_dl_parquet", width="stretch")


def save(idx, req: q.Request, name: str) -> str:
    """Save the current search (query, marks, region, filters) under `name`: a message."""
    try:
        # The search as the page ranked it: every alert run re-applies these (a saved search keeps
        # calibrated / diversify / min_relevance; the evidence order alerts by cosine:
        # docs/RANKING.md).
        kw = {"modality": list(req.modalities) or None, "sensor": list(req.sensors) or None,
              "stac_collection": list(req.stac_collections) or None, "start": req.start, "end": req.end, "k": req.k, "undated": req.undated,
              "calibrated": req.calibrated, "evidence": req.evidence, "diversify": req.diversify,
              "min_relevance": req.min_relevance or None}
        region = q.parse_region(req.region)
        if region is not None:
            kw.update(region.engine_kwargs())
        pos = [int(t) for t, v in ss.marks.items() if v]
        neg = [int(t) for t, v in ss.marks.items() if not v]
        text = req.text.strip() if req.mode == "text" and req.text.strip() else None
        tile = int(req.tile_id.strip()) if req.mode == "tile" and req.tile_id.strip() else None
        if req.mode == "image":
            return "!Saving an image query is not supported on this page yet: use its tile id."
        doc = idx.watches.add((name or "").strip(), text, tile_id=tile, positives=pos or None,
                              negatives=neg or None, **kw)
    except engine.GLBError as e:
        return f"!{e}"
    except ValueError as e:
        return f"!{e}"
    return (f"Saved “{doc['name']}”: new tiles scoring at least {doc['min_score']:.3f} will be "
            f"alerted after each indexing run." if doc["min_score"] is not None else
            f"Saved “{doc['name']}”.")


def sidebar(idx) -> None:
    """Saved searches, each with its alerts new since you last looked."""
    try:
        watches = idx.watches.list()
    except engine.GLBError:
        return
    if not watches:
        return
    sb = st.sidebar
    sb.subheader("Saved searches")
    for w in watches:
        if "error" in w:
            sb.caption(q.md(f"{w['name']}: {w['error']}"))
            continue
        new = w.get("new", 0)
        label = f"{w['name']} · {w['alerts']} alerts" + (f" · **{new} new since you last looked**" if new else "")
        with sb.expander(label, expanded=False):
            items = idx.watches.alerts(w["name"])
            if not items:
                st.caption("No alerts yet: they come after indexing runs that add matching tiles.")
            for i, f in enumerate(reversed(items[-20:])):
                p = f["properties"]
                fresh = len(items) - 1 - i >= len(items) - new
                st.markdown(q.md(f"{'🆕 ' if fresh else ''}{p['score']:.3f} · {p['modality']} · "
                                 f"{p['scene']} · {p['time']}"))
                st.button("Show", key=f"alert_{w['name']}_{p['tile_id']}", on_click=_show_tile,
                          args=(str(p["tile_id"]),))
            if new:
                st.button("Mark as seen", key=f"seen_{w['name']}", on_click=_seen, args=(idx, w["name"]))


def _show_tile(tile_id: str) -> None:
    from ui import state

    state.more_like(tile_id)


def _seen(idx, name: str) -> None:
    try:
        idx.watches.mark_seen(name)
    except engine.GLBError:
        pass

