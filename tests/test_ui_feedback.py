"""The analyst's loop on the search page (ui/feedback.py), headless with Streamlit's AppTest on a
private copy of the real small index: mark results on their cards, the counter, Refine (the
engine's feedback runs, "not relevant" tiles are not shown again), Save search (a real saved
search in the index folder), the saved searches in the sidebar, Clear."""

from __future__ import annotations

from pathlib import Path

import pytest

import engine
from ui.query import Request

APP = str(Path(__file__).resolve().parents[1] / "ui" / "app.py")


@pytest.fixture
def at(index_copy, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("GLB_UI_INDEX", str(index_copy))
    a = AppTest.from_file(APP, default_timeout=180)
    a.run()
    assert not a.exception, a.exception
    return a


def _card_ids(at) -> list[str]:
    return [b.key[4:] for b in at.button if b.key and b.key.startswith("rel_")]


def _marks_line(at) -> str:
    return next(m.value for m in at.markdown if m.value.startswith("**Marks:**"))


def test_mark_refine_save_and_clear(at, index_copy):
    at.sidebar.text_input(key="text").input("mountains")
    at.run()
    ids = _card_ids(at)
    assert len(ids) == 20 and _marks_line(at).startswith("**Marks:** 0 relevant · 0 not relevant")
    assert at.button(key="fb_refine").disabled
    for key in (f"rel_{ids[0]}", f"rel_{ids[1]}", f"irr_{ids[2]}", f"irr_{ids[3]}"):
        at.button(key=key).click()
        at.run()
    at.button(key=f"irr_{ids[3]}").click()   # a second click takes the mark back
    at.run()
    assert at.session_state["marks"] == {ids[0]: True, ids[1]: True, ids[2]: False}
    assert _marks_line(at).startswith("**Marks:** 2 relevant · 1 not relevant")
    assert at.button(key=f"rel_{ids[0]}").proto.type == "primary"   # the active mark is filled

    at.button(key="fb_refine").click()
    at.run()
    assert not at.exception, at.exception
    assert "refined" in _marks_line(at)
    assert any(c.value.startswith("Refined with probe") for c in at.caption)
    shown = _card_ids(at)
    assert ids[2] not in shown and len(shown) == 20
    page = Request()  # the page's ranking defaults (order, diversified) apply to marks too
    ref = engine.open(index_copy).search("mountains", positives=[int(ids[0]), int(ids[1])],
                                         negatives=[int(ids[2])], exclude=[int(ids[2])], k=20,
                                         calibrated=page.calibrated, evidence=page.evidence,
                                         diversify=page.diversify,
                                         undated=page.undated)
    assert shown == [str(int(t)) for t in ref["tile_id"]]

    at.text_input(key="fb_save_name").input("peaks")
    at.button(key="fb_save").click()
    at.run()
    assert any("Saved “peaks”" in s.value for s in at.success), [e.value for e in at.error]
    doc = engine.open(index_copy).watches.show("peaks")
    assert doc["query"]["text"] == "mountains" and doc["query"]["positives"] == [int(ids[0]), int(ids[1])]
    assert doc["query"]["negatives"] == [int(ids[2])]
    # saved as the page ranked it: alert runs re-apply the page's ranking options
    assert doc["ranking"] == {"calibrated": page.calibrated, "diversify": page.diversify,
                              "min_relevance": None, "evidence": page.evidence}
    assert page.evidence and (index_copy / "watches" / "peaks" / "bank.npy").is_file()
    assert doc["query"]["undated"] is page.undated
    at.run()
    assert any("peaks · 0 alerts" in e.label for e in at.sidebar.expander)

    at.button(key="fb_clear").click()
    at.run()
    assert at.session_state["marks"] == {} and _marks_line(at).startswith("**Marks:** 0 relevant")
    assert "refined" not in _marks_line(at)
    assert _card_ids(at) == ids                   # back to the plain query's results
