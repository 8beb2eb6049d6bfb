"""The search page's logic, run headless with Streamlit's AppTest on a real (small) index:
query -> results table, filters, region, "more like this", uploads, exports and every error
as a message in the page. The map itself is a browser component: see test_ui_browser.py."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from PIL import Image

import engine
from tests.conftest import write_tif
from ui import launch, mapview
from ui import query as q

APP = str(Path(__file__).resolve().parents[1] / "ui" / "app.py")
TIMEOUT = 120  # the first run loads the encoder


@pytest.fixture
def app(small_index, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("GLB_UI_INDEX", str(small_index))

    def make():
        at = AppTest.from_file(APP, default_timeout=TIMEOUT)
        at.run()
        assert not at.exception, at.exception
        return at

    return make


def errors(at) -> list[str]:
    return [e.value for e in at.error]


def results_table(at) -> pd.DataFrame:
    """The results as the page's table (switching to the table view and back)."""
    at.selectbox(key="view").set_value("Table")
    at.run()
    assert len(at.dataframe) == 1, f"no results table; errors: {errors(at)}"
    df = at.dataframe[0].value
    at.selectbox(key="view").set_value("Gallery")
    at.run()
    return df


def has_table(at) -> bool:
    """Whether the page shows results (the gallery/table switch comes with them)."""
    return any(s.key == "view" for s in at.selectbox)


def text_query(at, text: str):
    at.sidebar.text_input(key="text").input(text)
    at.run()
    assert not at.exception, at.exception
    return at


def png_bytes(bands: int = 3) -> bytes:
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 255, (64, 64, bands) if bands > 1 else (64, 64), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


# --- the page ------------------------------------------------------------------------------
def test_start_page_explains_and_draws_no_results(app):
    at = app()
    assert not errors(at)
    assert any("Describe what you are looking for" in i.value for i in at.info)
    assert not has_table(at)
    import engine

    # the page flags a random (untrained) encoder, and only then
    flagged = any("untrained" in w.value for w in at.warning)
    assert flagged == (not engine.load_encoder().trained)


def test_text_query_gives_ranked_results_table(app, small_index):
    at = text_query(app(), "flooded farmland")
    assert not errors(at)
    df = results_table(at)
    assert list(df.columns) == ["rank", "relevance", "match", "score", "cosine", "modality",
                                "sensor", "acquired", "scene", "tile_id"]
    assert len(df) == 20
    assert df["rank"].tolist() == list(range(1, 21))
    assert df["score"].is_monotonic_decreasing
    # the same tiles, in the same order, as the engine gives for the same query with the
    # page's defaults: ordered by evidence across sensors, diversified (5 a scene, one per place)
    ref = engine.open(small_index).search("flooded farmland", k=20, evidence=True, diversify=5)
    assert df["tile_id"].tolist() == [str(t) for t in ref["tile_id"]]
    assert df.groupby("scene").size().max() <= 5
    assert ((df["relevance"] >= 0) & (df["relevance"] <= 100)).all()
    assert any("20 results" in m.value for m in at.markdown)
    # gallery: one card with two buttons per result, and both exports
    assert len([b for b in at.button if b.key and b.key.startswith("more_")]) == 20
    labels = [b.label for b in at.get("download_button")]
    assert labels == ["GeoJSON", "CSV", "GeoParquet"], labels


def test_k_and_modality_and_sensor_filters(app, small_index):
    at = app()
    at.sidebar.slider(key="k").set_value(5)
    at.sidebar.multiselect(key="modalities").select("elevation")
    text_query(at, "mountains")
    df = results_table(at)
    assert len(df) == 5
    assert set(df["modality"]) == {"elevation"}

    sensors = sorted(engine.open(small_index).info()["sensors"])
    assert "sentinel1-vv" in sensors or "sentinel1" in sensors
    sar = "sentinel1-vv" if "sentinel1-vv" in sensors else "sentinel1"
    at.sidebar.multiselect(key="modalities").unselect("elevation")
    at.sidebar.multiselect(key="sensors").select(sar)
    at.run()
    df = results_table(at)
    assert set(df["sensor"]) == {sar} and 0 < len(df) <= 5


def test_date_range_with_no_tiles_says_so(app):
    at = app()
    at.sidebar.checkbox(key="use_dates").check()
    at.run()
    at.sidebar.date_input(key="dates").set_value((dt.date(1960, 1, 1), dt.date(1960, 12, 31)))
    text_query(at, "river")
    assert set(results_table(at)["acquired"]) == {""}  # only the tiles without a date are left
    at.sidebar.checkbox(key="undated").uncheck()
    at.run()
    assert not has_table(at)
    assert any("No tiles match" in w.value for w in at.warning)
    assert not errors(at)


def test_region_restricts_results_and_bad_region_is_a_message(app, small_index):
    scenes = engine.open(small_index).scenes()
    one = scenes[scenes["modality"] == "sar"].iloc[0]
    box = f"{one.minx},{one.miny},{one.maxx},{one.maxy}"
    at = app()
    at.sidebar.text_input(key="region").input(box)
    text_query(at, "ships")
    df = results_table(at)
    region = shapely.box(one.minx, one.miny, one.maxx, one.maxy)
    fp = engine.open(small_index).footprints().set_index(
        engine.open(small_index).footprints()["tile_id"].astype(str))
    assert len(df) > 0
    assert all(fp.loc[t, "geometry"].intersects(region) for t in df["tile_id"])

    shown = df["tile_id"].tolist()
    for bad, says in [("1,2,3", "four"), ("200,0,210,10", "off the globe"),
                      ("POLYGON((0 0, 1 1))", "not a box"), ("{\"type\": \"Point\"}", "not a box"),
                      ("LINESTRING(0 0, 1 1)", "area"),
                      (f"{one.maxx},{one.maxy},{one.minx},{one.miny}", "did you mean")]:
        at.sidebar.text_input(key="region").input(bad)
        at.run()
        assert not at.exception
        errs = errors(at)
        assert len(errs) == 1 and errs[0].startswith("Region:") and says in errs[0], (bad, errs)
        assert "--" not in errs[0]
        # the previous results stay, as they were
        assert results_table(at)["tile_id"].tolist() == shown

    at.sidebar.button(key="clear_region").click()
    at.run()
    assert not errors(at) and len(results_table(at)) == 20


def test_more_like_this_is_a_tile_query_across_modalities(app, small_index):
    at = text_query(app(), "forest")
    first = results_table(at)["tile_id"].iloc[0]
    # k as large as the page allows (more than the small index's tiles of any one modality), so
    # a filter on the query tile's own modality would show: a trained encoder ranks a tile's own
    # modality first, and a top 20 can be all of it
    at.sidebar.slider(key="k").set_value(100)
    at.button(key=f"more_{first}").click()
    at.run()
    assert at.session_state["mode"] == "tile"
    assert at.sidebar.text_input(key="tile_id").value == first
    df = results_table(at)
    assert first not in set(df["tile_id"])  # the query tile itself is left out
    ref = engine.open(small_index).search(tile_id=int(first), k=100, evidence=True, diversify=5)
    assert df["tile_id"].tolist() == [str(t) for t in ref["tile_id"]]
    assert df["modality"].nunique() > 1  # across modalities when no filter says otherwise
    assert any("tiles like" in m.value for m in at.markdown)

    at.sidebar.multiselect(key="modalities").select("sar")
    at.run()
    assert set(results_table(at)["modality"]) == {"sar"}


def test_selecting_a_result_shows_it_with_more_like_this(app):
    at = text_query(app(), "forest")
    second = results_table(at)["tile_id"].iloc[1]
    at.button(key=f"map_{second}").click()
    at.run()
    assert at.session_state["selected"] == second
    fit = at.session_state["fit"]
    assert fit["key"].startswith(f"sel-{second}")  # the map is told to centre on it
    assert any(m.value.startswith("**Selected: #2**") for m in at.markdown)
    at.button(key=f"sel_more_{second}").click()
    at.run()
    assert at.session_state["mode"] == "tile" and at.session_state["tile_id"] == second


def test_bad_tile_id_is_a_message(app):
    at = app()
    at.sidebar.radio(key="mode").set_value("tile")
    at.run()
    at.sidebar.text_input(key="tile_id").input("12345")
    at.run()
    assert not at.exception
    assert any("not in this index" in e for e in errors(at))
    at.sidebar.text_input(key="tile_id").input("abc")
    at.run()
    assert any("not a number" in e for e in errors(at))


def test_image_upload_query(app, tmp_path):
    at = app()
    at.sidebar.radio(key="mode").set_value("image")
    at.run()
    at.sidebar.file_uploader(key="upload").upload("query.png", png_bytes(3), "image/png")
    at.run()
    assert not at.exception and not errors(at)
    assert len(results_table(at)) == 20
    assert any("sensor rgb" in c.value for c in at.caption)

    # a GeoTIFF that does not say which sensor made it: a message, then pick one
    data = np.random.default_rng(2).integers(0, 3000, (4, 64, 64), dtype=np.uint16)
    tif = write_tif(tmp_path / "four.tif", data).read_bytes()
    at.sidebar.file_uploader(key="upload").set_value(("four.tif", tif, "image/tiff"))
    at.run()
    errs = errors(at)
    assert len(errs) == 1 and "pick the Sensor" in errs[0], errs
    at.sidebar.selectbox(key="image_sensor").set_value("naip")
    at.run()
    assert not errors(at) and len(results_table(at)) == 20

    # or give band centres instead
    at.sidebar.selectbox(key="image_sensor").set_value("")
    at.sidebar.text_input(key="image_wavelengths").input("0.64,0.56,0.48,0.83")
    at.run()
    assert not errors(at) and len(results_table(at)) == 20
    at.sidebar.text_input(key="image_wavelengths").input("0.64,0.56")
    at.run()
    assert any("2 values but the file has 4 bands" in e for e in errors(at)), errors(at)


@pytest.mark.parametrize("name,content,expect", [
    ("broken.tif", b"this is not a GeoTIFF", "not a readable raster"),
    ("empty.png", b"", "empty"),
])
def test_bad_upload_is_a_message(app, name, content, expect):
    at = app()
    at.sidebar.radio(key="mode").set_value("image")
    at.run()
    at.sidebar.file_uploader(key="upload").set_value((name, content, "application/octet-stream"))
    at.run()
    assert not at.exception
    errs = errors(at)
    assert len(errs) == 1 and expect in errs[0], errs
    assert "/vsimem/" not in errs[0]
    assert not has_table(at)


def test_no_index_is_a_message(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("GLB_UI_INDEX", str(tmp_path / "nowhere"))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception
    assert any("No index at" in e and "glb index" in e for e in errors(at))
    assert len(at.sidebar.text_input) == 0

    monkeypatch.delenv("GLB_UI_INDEX")
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception
    assert any("glb ui --index" in e for e in errors(at))


def test_filter_lists_hold_what_the_index_holds(app, small_index):
    at = app()
    info = engine.open(small_index).info()
    ms = at.sidebar.multiselect(key="modalities")
    assert list(ms.options) == [f"{m} ({n:,})" for m, n in info["modalities"].items()]
    all_sensors = list(at.sidebar.multiselect(key="sensors").options)
    assert len(all_sensors) == len(info["sensors"])
    ms.select("sar")
    at.run()
    scenes = engine.open(small_index).scenes()
    sar = scenes[scenes["modality"] == "sar"].groupby("sensor")["n_tiles"].sum()
    assert list(at.sidebar.multiselect(key="sensors").options) == [f"{s} ({n:,})" for s, n in sar.items()]


def test_dates_keep_undated_tiles_and_say_what_each_filter_removed(app, small_index):
    fp = engine.open(small_index).footprints()
    undated = int(fp["acquired"].isna().sum())
    assert undated > 0
    at = app()
    at.sidebar.slider(key="k").set_value(100)
    at.sidebar.checkbox(key="diversify").uncheck()
    at.sidebar.checkbox(key="use_dates").check()
    text_query(at, "river")  # the full default range: nothing may disappear
    df = results_table(at)
    assert len(df) == min(100, len(fp)) and (df["acquired"] == "").sum() > 0
    report = [c.value for c in at.caption if c.value.startswith("Filters:")]
    assert report and f"kept {undated:,} without a date" in report[0], report
    at.sidebar.checkbox(key="undated").uncheck()
    at.run()
    df = results_table(at)
    assert (df["acquired"] == "").sum() == 0 and len(df) == min(100, len(fp) - undated)
    report = [c.value for c in at.caption if c.value.startswith("Filters:")][0]
    assert f"the dates removed {undated:,}" in report, report


def test_ranking_controls_and_plain_ranking_in_one_click(app, small_index):
    idx = engine.open(small_index)
    at = text_query(app(), "a river")
    assert any("Relevance" in c.value and "percentile" in c.value for c in at.caption)
    at.button(key="plain_ranking").click()
    at.run()
    assert at.session_state["order"] == "raw" and at.session_state["diversify"] is False
    df = results_table(at)
    ref = idx.search("a river", k=20)
    assert df["tile_id"].tolist() == [str(t) for t in ref["tile_id"]]
    assert (df["score"] == df["cosine"]).all()
    at.sidebar.slider(key="min_relevance").set_value(95)
    at.run()
    df = results_table(at)
    assert (df["relevance"] >= 95).all() and len(df) < 20


def test_search_lives_in_the_url(app, small_index):
    at = app()
    at.sidebar.slider(key="k").set_value(7)
    at.sidebar.multiselect(key="modalities").select("elevation")
    text_query(at, "mountains")
    params = dict(at.query_params)
    assert params["q"] == ["mountains"] or params["q"] == "mountains", params
    shown = results_table(at)["tile_id"].tolist()

    # a new session opened from that link: the same search, the same results
    from streamlit.testing.v1 import AppTest

    at2 = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for key, value in params.items():
        at2.query_params[key] = value
    at2.run()
    assert not at2.exception
    assert at2.sidebar.text_input(key="text").value == "mountains"
    assert at2.session_state["k"] == 7 and at2.session_state["modalities"] == ["elevation"]
    assert results_table(at2)["tile_id"].tolist() == shown


# --- the logic module ------------------------------------------------------------------------
def test_parse_region_forms():
    assert q.parse_region("") is None
    assert q.parse_region(" -1, 2.5 ,3,4 ").bbox == (-1.0, 2.5, 3.0, 4.0)
    poly = q.parse_region("POLYGON((0 0, 1 0, 1 1, 0 0))")
    assert poly.bbox is None and poly.polygon["type"] == "Polygon"
    gj = q.parse_region(json.dumps({"type": "Polygon", "coordinates": [[[0, 0], [2, 0], [2, 2], [0, 0]]]}))
    assert gj.engine_kwargs()["region"]["type"] == "Polygon"
    for bad in ["1,2,3", "3,0,1,1", "0,-91,1,1", "nan,0,1,1", "LINESTRING(0 0, 1 1)",
                "POLYGON((170 0, 190 0, 190 1, 170 0))", "hello"]:
        with pytest.raises(engine.InputError):
            q.parse_region(bad)
    # what to fix, with the box the analyst probably meant
    with pytest.raises(engine.InputError, match="corners look swapped.*did you mean 0,0,10,10\\?"):
        q.parse_region("10,10,0,0")
    with pytest.raises(engine.InputError, match="latitude and longitude look swapped.*did you mean -95.4,29.7,-95.3,29.8\\?"):
        q.parse_region("29.7,-95.4,29.8,-95.3")  # Houston typed latitude first


def test_user_text_is_not_markdown(app):
    at = text_query(app(), "![x](http://example.com/x.png) **river** <b>")
    head = [m.value for m in at.markdown if "results" in m.value][0]
    assert "\\!\\[x\\]\\(http\\:\u2060//example\\.com/x\\.png\\)" in head  # escaped: shown, not loaded
    assert "\\*\\*river\\*\\*" in head and "\\<b\\>" in head
    assert q.md("a_b*c") == "a\\_b\\*c"


def test_parse_wavelengths():
    assert q.parse_wavelengths("") is None
    assert q.parse_wavelengths(" 0.665, 0.56,0.49 ") == (0.665, 0.56, 0.49)
    for bad in ["red,green", "0.5,-1", "0.5,nan"]:
        with pytest.raises(engine.InputError):
            q.parse_wavelengths(bad)


def test_drawn_region_text_round_trips():
    rect = {"type": "Polygon", "coordinates": [[[-77.1, 38.8], [-77.0, 38.8], [-77.0, 38.9],
                                                [-77.1, 38.9], [-77.1, 38.8]]]}
    assert q.region_text(rect) == "-77.1,38.8,-77,38.9"
    assert q.parse_region(q.region_text(rect)).bbox == (-77.1, 38.8, -77.0, 38.9)
    tri = {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [0.5, 1], [0, 0]]]}
    text = q.region_text(tri)
    assert text.startswith("POLYGON") and q.parse_region(text).polygon is not None
    assert q.region_text(None) == ""


def test_exports_and_map_features(small_index):
    idx = engine.open(small_index)
    req = q.Request(text="river", k=7)
    out = q.run(idx, req)
    assert out.error is None and len(out.results) == 7
    res = out.results

    gj = json.loads(q.to_geojson(res, req))
    assert gj["type"] == "FeatureCollection" and len(gj["features"]) == 7
    assert gj["query"]["text"] == "river" and gj["query"]["k"] == 7
    back = gpd.read_file(io.BytesIO(q.to_geojson(res, req)))
    assert back["tile_id"].astype("int64").tolist() == res["tile_id"].tolist()
    # tile ids are strings (64-bit ids lose digits as JavaScript or spreadsheet numbers)
    assert all(isinstance(f["properties"]["tile_id"], str) for f in gj["features"])
    assert [f["properties"]["tile_id"] for f in gj["features"]] == [str(t) for t in res["tile_id"]]
    assert all(a.equals_exact(b, 1e-9) for a, b in zip(back.geometry, res.geometry))

    raw_csv = q.to_csv(res).decode()
    assert all(f'"{t}"' in raw_csv for t in res["tile_id"])  # quoted: text, not a number
    csv = pd.read_csv(io.BytesIO(q.to_csv(res)), dtype={"tile_id": str})
    assert len(csv) == 7 and csv["tile_id"].tolist() == [str(t) for t in res["tile_id"]]
    when = dt.datetime(2026, 3, 4, 5, 6, 7)
    assert q.file_name(req, "csv", when) == "glb-river-20260304-050607.csv"
    assert q.file_name(q.Request(text="Flooded *farm*land / [x](y)"), "geojson", when) == \
        "glb-flooded-farm-land-x-y-20260304-050607.geojson"
    assert {"lon", "lat", "footprint_wkt", "score", "scene", "acquired"} <= set(csv.columns)
    assert shapely.from_wkt(csv["footprint_wkt"][0]).equals_exact(res.geometry.iloc[0], 1e-9)

    sel = str(res["tile_id"].iloc[3])
    fc = q.map_features(res, selected=sel)
    ids = [f["properties"]["tile_id"] for f in fc["features"]]
    assert ids == [str(t) for t in res["tile_id"]]  # strings: JavaScript numbers lose int64 digits
    assert [f["properties"]["selected"] for f in fc["features"]] == [i == sel for i in ids]
    (s, w), (n, e) = q.bounds(res.geometry)
    assert s < n and w < e


def test_run_turns_engine_errors_into_messages(small_index):
    idx = engine.open(small_index)
    assert "k must be a positive integer" in q.run(idx, q.Request(text="x", k=0)).error
    assert "starts" in q.run(idx, q.Request(text="x", start=dt.date(2020, 1, 2),
                                            end=dt.date(2020, 1, 1))).error
    assert q.run(idx, q.Request(text="x" * 3000)).error  # over the engine's text limit
    big = q.Request(mode="image", image=b"\0" * (33 * 2**20), image_name="big.tif")
    assert "upload limit" in q.run(idx, big).error


# --- the map's files and the launcher -------------------------------------------------------
def test_map_site_serves_only_this_index(small_index):
    idx = engine.open(small_index)
    gen = idx.info()["generation"]
    root, url = mapview.site(idx, gen)
    listed = json.loads((root / url).read_text())
    scenes = idx.scenes()
    assert sorted(s["scene_id"] for s in listed) == sorted(scenes["scene_id"])
    pngs = sorted(p.name for p in (root / "ov").iterdir())
    assert sorted(Path(s["img"]).name for s in listed) == pngs
    for s in listed:
        assert len(s["corners"]) == 4
        assert (root / s["img"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (root / "index.html").is_file() and (root / "vendor" / "leaflet" / "leaflet.js").is_file()
    # everything the page loads is a relative URL into this folder
    html = (root / "index.html").read_text()
    assert "http://" not in html and "https://" not in html and "//" not in html.replace("<!doctype", "")
    assert mapview.site(idx, gen) == (root, url)  # once per generation


def test_launcher_options(tmp_path):
    cmd = launch.command(tmp_path / "idx", host="127.0.0.1", port=8599)
    assert cmd[1:4] == ["-m", "ui.serve", "run"] and cmd[4].endswith("ui/app.py")
    opts = dict(o[2:].split("=", 1) for o in cmd[5:])
    assert opts["browser.gatherUsageStats"] == "false"
    assert opts["server.headless"] == "true"
    assert opts["server.address"] == "127.0.0.1" and opts["server.port"] == "8599"
    from engine.raster import MAX_UPLOAD_BYTES

    assert int(opts["server.maxUploadSize"]) * 2**20 == MAX_UPLOAD_BYTES
    assert opts["client.showErrorDetails"] == "none"
    env = launch.environment(tmp_path / "idx")
    assert env["GLB_UI_INDEX"] == str((tmp_path / "idx").resolve())
    assert env["HF_HUB_OFFLINE"] == "1"


def test_map_site_of_another_index_is_its_own_folder(small_index, tmp_path):
    """One process that serves two indexes in turn (a relaunch, or the tests) never lists one
    index's scenes for the other, even at the same generation number."""
    import shutil

    other = tmp_path / "other"
    shutil.copytree(small_index, other)
    a = engine.open(small_index)
    b = engine.open(other)
    gen = a.info()["generation"]
    root_a, _ = mapview.site(a, gen)
    root_b, url_b = mapview.site(b, b.info()["generation"])
    assert root_b != root_a
    assert len(json.loads((root_b / url_b).read_text())) == len(b.scenes())
    root_a2, url_a2 = mapview.site(a, gen)
    assert root_a2 != root_b
    assert sorted(s["scene_id"] for s in json.loads((root_a2 / url_a2).read_text())) == sorted(a.scenes()["scene_id"])
