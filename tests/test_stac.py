"""`glb index --stac`: a real STAC catalogue made here from sample scenes (as cloud-optimised
GeoTIFFs with `eo:bands`), read from disk and from a loopback HTTP server that answers range
requests; unreachable assets reported, the rest indexed; hrefs escaping the catalogue refused."""

from __future__ import annotations

import datetime as dt
import email.utils
import functools
import http.server
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, SCENES

pystac = pytest.importorskip("pystac")

# Landsat bands SWIR1, NIR, Red, Green (data README): files with no sensor metadata, which a
# plain `glb index` refuses without --sensor or rules.
BANDS = [("swir16", 1.61), ("nir", 0.865), ("red", 0.655), ("green", 0.56)]
YEARS = ["1985", "2000", "2020"]
COLLECTION = "pucallpa-landsat"


def _cog(src: Path, dst: Path) -> Path:
    import rasterio
    from rasterio.shutil import copy as rio_copy

    dst.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(src) as ds:
        rio_copy(ds, dst, driver="COG", blocksize=128)
    return dst


def _item(year: str, href: str, bbox) -> "pystac.Item":
    item = pystac.Item(id=f"pucallpa-{year}", geometry={
        "type": "Polygon", "coordinates": [[[bbox[0], bbox[1]], [bbox[2], bbox[1]],
                                            [bbox[2], bbox[3]], [bbox[0], bbox[3]],
                                            [bbox[0], bbox[1]]]]},
        bbox=list(bbox), datetime=dt.datetime(int(year), 7, 15, tzinfo=dt.timezone.utc),
        properties={})
    asset = pystac.Asset(href=href, media_type=pystac.MediaType.COG, roles=["data"])
    asset.extra_fields["eo:bands"] = [{"name": n, "center_wavelength": w} for n, w in BANDS]
    item.add_asset("image", asset)
    item.add_asset("thumbnail", pystac.Asset(href="thumb.png", media_type=pystac.MediaType.PNG,
                                             roles=["thumbnail"]))
    return item


def make_catalog(root: Path, hrefs: dict[str, str] | None = None, collection: str = COLLECTION,
                 years: list[str] = YEARS) -> Path:
    """catalog.json -> collection -> one item per year, each asset a COG under root/data
    (or the href given for that year)."""
    import rasterio
    from rasterio.warp import transform_bounds

    root.mkdir(parents=True, exist_ok=True)
    items = []
    for year in years:
        cog = _cog(SCENES / "landsat_timeseries" / f"{year}.tif", root / "data" / f"{year}.tif")
        with rasterio.open(cog) as ds:
            bbox = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
        items.append(_item(year, (hrefs or {}).get(year, str(cog)), bbox))
    ext = pystac.Extent(pystac.SpatialExtent([[-180, -90, 180, 90]]),
                        pystac.TemporalExtent([[None, None]]))
    coll = pystac.Collection(collection, "Landsat over Pucallpa", ext)
    coll.add_items(items)
    cat = pystac.Catalog("test-catalog", "made by the test")
    cat.add_child(coll)
    cat.normalize_hrefs(str(root))
    cat.make_all_asset_hrefs_relative()
    cat.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    # remote and deliberately bad hrefs are kept as given
    for year, href in (hrefs or {}).items():
        p = root / collection / f"pucallpa-{year}" / f"pucallpa-{year}.json"
        d = json.loads(p.read_text())
        d["assets"]["image"]["href"] = href
        p.write_text(json.dumps(d))
    return root / "catalog.json"


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """http.server plus what a COG reader needs: Range requests (206), and an ETag."""

    log: list = []

    def log_message(self, *a):
        pass

    def send_head(self):
        path = Path(self.translate_path(self.path))
        RangeHandler.log.append((self.command, self.path, self.headers.get("Range")))
        if not path.is_file():
            self.send_error(404)
            return None
        data = path.read_bytes()
        st = path.stat()
        etag = f'"{st.st_size:x}-{st.st_mtime_ns:x}"'
        m = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
        if m:
            a = int(m.group(1))
            b = min(int(m.group(2)) if m.group(2) else len(data) - 1, len(data) - 1)
            body = data[a:b + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {a}-{b}/{len(data)}")
        else:
            body = data
            self.send_response(200)
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))
        self.end_headers()
        import io

        return io.BytesIO(body)


@pytest.fixture
def http_root(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    RangeHandler.log = []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                          functools.partial(RangeHandler, directory=str(root)))
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield root, f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def _index(stac, path, encoder):
    from indexer.runner import IndexOptions, run_index

    return run_index([], path, stac=[str(s) for s in stac], options=IndexOptions(progress=False),
                     encoder=encoder, echo=lambda m: None)


def test_cli_indexes_a_catalogue_on_disk_with_no_rules(tmp_path):
    cat = make_catalog(tmp_path / "cat")
    idx = tmp_path / "index"
    cmd = [sys.executable, "-m", "glb", "index", "--stac", str(cat), "--index", str(idx),
           "--quiet", "--json"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout[r.stdout.index("{"):])
    assert rep["indexed"] == 3 and rep["failed"] == [] and rep["tiles_added"] > 0
    assert rep["skipped"].get("STAC assets that are not images") == 3  # the thumbnails
    import engine

    ix = engine.open(idx)
    scenes = ix.scenes()
    assert sorted(scenes["scene"]) == [f"{COLLECTION}/pucallpa-{y}" for y in YEARS]
    assert sorted(str(d) for d in scenes["acquired"]) == [f"{y}-07-15" for y in YEARS]
    assert set(scenes["modality"]) == {"multispectral"}
    res = ix.search("forest", k=50)
    assert set(res["scene"]) <= {f"{COLLECTION}/pucallpa-{y}" for y in YEARS} and len(res) == 50
    assert {d.year for d in res["acquired"]} <= {1985, 2000, 2020}
    # the same files without the catalogue: refused for want of a sensor
    r = subprocess.run([sys.executable, "-m", "glb", "index", str(tmp_path / "cat" / "data"),
                        "--index", str(tmp_path / "plain"), "--quiet"], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 1 and "--sensor" in r.stderr
    # incremental: nothing changed, nothing read
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    rep = json.loads(r.stdout[r.stdout.index("{"):])
    assert r.returncode == 0 and rep["unchanged"] == 3 and rep["tiles_added"] == 0


def test_catalogue_over_http_with_range_requests(tmp_path, http_root, encoder):
    www, url = http_root
    make_catalog(www / "cat")
    local = _index([www / "cat" / "catalog.json"], tmp_path / "local", encoder)
    assert local.ok and local.indexed == 3
    RangeHandler.log = []
    rep = _index([f"{url}/cat/catalog.json"], tmp_path / "remote", encoder)
    assert rep.ok, rep.failed
    assert rep.indexed == 3 and rep.tiles_added == local.tiles_added
    gets = [(p, rng) for c, p, rng in RangeHandler.log if c == "GET" and p.endswith(".tif")]
    assert gets and all(rng for _, rng in gets), gets  # GDAL read the COGs by ranges
    import engine

    a = engine.open(tmp_path / "local", encoder=encoder).search("forest", k=20)
    b = engine.open(tmp_path / "remote", encoder=encoder).search("forest", k=20)
    assert list(a["scene"]) == list(b["scene"])
    np.testing.assert_allclose(a["score"], b["score"], atol=1e-5)
    assert (a[["row_off", "col_off"]].to_numpy() == b[["row_off", "col_off"]].to_numpy()).all()
    paths = engine.open(tmp_path / "remote", encoder=encoder).scenes()["path"].tolist()
    assert all(p.startswith(f"/vsicurl/{url}/cat/data/") for p in paths)

    # incremental: one HEAD per asset, no pixels read
    RangeHandler.log = []
    again = _index([f"{url}/cat/catalog.json"], tmp_path / "remote", encoder)
    assert again.unchanged == 3 and again.indexed == 0 and again.tiles_added == 0
    assert not [1 for c, p, _ in RangeHandler.log if c == "GET" and p.endswith(".tif")]
    # a changed asset (new ETag) is indexed again, its old tiles replaced
    f = www / "cat" / "data" / "2020.tif"
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    changed = _index([f"{url}/cat/catalog.json"], tmp_path / "remote", encoder)
    assert changed.indexed == 1 and changed.unchanged == 2
    assert changed.tiles_deleted == changed.tiles_added > 0


def test_unreachable_and_bad_assets_reported_the_rest_indexed(tmp_path, http_root, encoder):
    www, url = http_root
    (www / "junk.tif").write_bytes(b"not a tiff at all" * 100)
    cat = make_catalog(tmp_path / "cat", hrefs={
        "1985": f"{url}/missing.tif",                 # 404
        "2000": f"{url}/junk.tif",                    # reachable, not a raster
    })
    rep = _index([cat], tmp_path / "index", encoder)
    assert rep.indexed == 1 and len(rep.failed) == 2, rep.failed
    missing = [f for f in rep.failed if "missing.tif" in f]
    junk = [f for f in rep.failed if "junk.tif" in f]
    assert missing and "cannot be reached" in missing[0] and "pucallpa-1985" in missing[0]
    assert junk and "not a readable raster" in junk[0]
    import engine

    assert engine.open(tmp_path / "index", encoder=encoder).scenes()["scene"].tolist() == \
        [f"{COLLECTION}/pucallpa-2020"]


def test_hrefs_escaping_the_catalogue_are_refused(tmp_path, http_root, encoder):
    outside = _cog(SCENES / "landsat_timeseries" / "1985.tif", tmp_path / "secret" / "x.tif")
    link_root = tmp_path / "cat"
    link_root.mkdir()
    (link_root / "link.tif").symlink_to(outside)
    cat = make_catalog(link_root, hrefs={
        "1985": "../../../secret/x.tif",              # relative, climbs out
        "2000": str(outside),                         # absolute, elsewhere
        "2020": "../../link.tif",                      # inside by name, a symlink out
    })
    rep = _index([cat], tmp_path / "index", encoder)
    assert rep.indexed == 0 and len(rep.failed) == 3, rep.failed
    assert all("outside the catalogue's folder" in f and "refused" in f for f in rep.failed)
    # a remote catalogue may not name local files at all
    www, url = http_root
    make_catalog(www / "cat", hrefs={"1985": f"file://{outside}"})
    rep = _index([f"{url}/cat/catalog.json"], tmp_path / "index2", encoder)
    assert rep.indexed == 2 and len(rep.failed) == 1
    assert "remote catalogue" in rep.failed[0] and "refused" in rep.failed[0]


def test_stac_collection_and_item_are_search_filters(tmp_path, encoder):
    """Two catalogues (two collections sharing the item id pucallpa-2000) and a plain folder in
    one index: each filter keeps exactly the tiles of that collection / item, the results carry
    both ids, and `glb search --stac-collection/--stac-item` does the same from the shell."""
    import engine
    from indexer.runner import IndexOptions, run_index

    a = make_catalog(tmp_path / "a", years=["1985", "2000"])
    b = make_catalog(tmp_path / "b", collection="pucallpa-archive", years=["2000", "2020"])
    idx = tmp_path / "index"
    rep = run_index([SCENES / "elevation" / "dsm.tif"], idx, stac=[str(a), str(b)],
                    options=IndexOptions(progress=False), encoder=encoder, echo=lambda m: None)
    assert rep.ok and rep.indexed == 5, rep.failed
    ix = engine.open(idx, encoder=encoder)
    every = ix.footprints()  # every tile, with its STAC columns
    by_scene = every.groupby("scene")[["stac_collection", "stac_item"]].first()
    assert by_scene.loc[f"{COLLECTION}/pucallpa-1985"].tolist() == [COLLECTION, "pucallpa-1985"]
    assert by_scene.loc["pucallpa-archive/pucallpa-2020"].tolist() == ["pucallpa-archive", "pucallpa-2020"]
    plain = every[~every["scene"].str.startswith("pucallpa")]
    assert len(plain) and plain["stac_collection"].isna().all() and plain["stac_item"].isna().all()
    scenes = ix.scenes().set_index("scene")
    assert scenes.loc["pucallpa-archive/pucallpa-2000", "stac_item"] == "pucallpa-2000"

    def ids(df):
        return set(df["tile_id"].tolist())

    want_a = ids(every[every["stac_collection"] == COLLECTION])
    want_2000 = ids(every[every["stac_item"] == "pucallpa-2000"])
    assert want_a and want_2000 and want_a != want_2000
    n = len(every)
    got = ix.search("forest", k=n, stac_collection=COLLECTION)
    assert ids(got) == want_a and (got["stac_collection"] == COLLECTION).all()
    got = ix.search("forest", k=n, stac_item="pucallpa-2000")  # in both collections
    assert ids(got) == want_2000
    assert set(got["scene"]) == {f"{COLLECTION}/pucallpa-2000", "pucallpa-archive/pucallpa-2000"}
    got = ix.search("forest", k=n, stac_collection="pucallpa-archive", stac_item="pucallpa-2000")
    assert ids(got) == want_2000 - want_a and len(got) > 0
    got = ix.search("forest", k=n, stac_collection=[COLLECTION, "pucallpa-archive"])
    assert ids(got) == ids(every) - ids(plain)
    assert ix.search("forest", k=10, stac_collection="no-such-collection").empty
    # the top 5 inside a filter are the top 5 of everything, filtered (the planner's prefilter)
    top = ix.search("forest", k=n)
    first5 = top[top["stac_item"] == "pucallpa-2000"]["tile_id"].tolist()[:5]
    assert ix.search("forest", k=5, stac_item="pucallpa-2000")["tile_id"].tolist() == first5
    counts = ix.filter_counts(stac_collection=COLLECTION, stac_item="pucallpa-2000")
    assert [c["filter"] for c in counts] == ["stac_collection", "stac_item"]
    assert counts[-1]["left"] == len(want_a & want_2000)
    # a saved search keeps the STAC filters: its alert threshold is today's k-th score inside them
    doc = ix.watches.add("archive-2000", "forest", k=3, stac_collection="pucallpa-archive",
                         stac_item="pucallpa-2000")
    assert doc["query"]["stac_collection"] == "pucallpa-archive"
    inside = ix.search("forest", k=3, stac_collection="pucallpa-archive", stac_item="pucallpa-2000")
    assert doc["min_score"] == pytest.approx(float(inside["score"].min()))
    for bad in ("  ", "a\x1b[2Jb", ["ok", 5]):
        with pytest.raises(engine.InputError, match="STAC collection"):
            ix.search("forest", stac_collection=bad)

    r = subprocess.run([sys.executable, "-m", "glb", "search", "forest", "--index", str(idx),
                        "--k", "500", "--stac-item", "pucallpa-2000", "--stac-collection",
                        COLLECTION, "--format", "geojson"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    feats = json.loads(r.stdout)["features"]
    assert {int(f["properties"]["tile_id"]) for f in feats} == want_a & want_2000
    assert {(f["properties"]["stac_collection"], f["properties"]["stac_item"]) for f in feats} == \
        {(COLLECTION, "pucallpa-2000")}
    r = subprocess.run([sys.executable, "-m", "glb", "search", "forest", "--index", str(idx),
                        "--k", "3", "--stac-collection", "pucallpa-archive"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "stac_item" in r.stdout and r.stdout.count("pucallpa-archive/pucallpa-") == 3


def test_an_index_written_before_the_stac_columns_still_searches_and_checks(tmp_path, encoder):
    """Segments and scenes files without stac_collection / stac_item (written before they
    existed, same store format) read them as null: searches return them empty, the STAC filters
    keep nothing, `glb check` finds nothing wrong, and the next `glb index` run works."""
    import pyarrow.parquet as pq

    import engine
    from engine.check import check_index
    from indexer.runner import IndexOptions, run_index

    idx = tmp_path / "index"
    rep = run_index([SCENES / "elevation" / "dsm.tif"], idx, options=IndexOptions(progress=False),
                    encoder=encoder, echo=lambda m: None)
    assert rep.ok and rep.tiles_added > 0
    rewritten = 0
    for f in [*idx.glob("segments/*/tiles.parquet"), *idx.glob("manifests/*.parquet")]:
        t = pq.read_table(f)
        if "stac_item" in t.schema.names:
            pq.write_table(t.drop_columns(["stac_collection", "stac_item"]), f)
            rewritten += 1
    assert rewritten >= 2  # the segment's tiles and the scenes file
    ix = engine.open(idx, encoder=encoder)
    res = ix.search("hills", k=5)
    assert len(res) == 5 and res["stac_collection"].isna().all() and res["stac_item"].isna().all()
    assert ix.search("hills", k=5, stac_collection=COLLECTION).empty
    problems, _ = check_index(idx)
    assert problems == []
    again = run_index([SCENES / "elevation"], idx, options=IndexOptions(progress=False),
                      encoder=encoder, echo=lambda m: None)
    assert again.ok and again.indexed >= 1 and again.unchanged == 1
    assert len(engine.open(idx, encoder=encoder).search("hills", k=5)) == 5


def test_ui_offers_the_stac_collections_the_index_holds(tmp_path, encoder, monkeypatch):
    """The page's sidebar lists the index's STAC collections with their tile counts (only for an
    index that holds some), and picking one keeps exactly that collection's tiles."""
    from streamlit.testing.v1 import AppTest

    import engine
    from indexer.runner import IndexOptions, run_index

    a = make_catalog(tmp_path / "a", years=["1985"])
    b = make_catalog(tmp_path / "b", collection="pucallpa-archive", years=["2020"])
    idx = tmp_path / "index"
    rep = run_index([SCENES / "elevation" / "dsm.tif"], idx, stac=[str(a), str(b)],
                    options=IndexOptions(progress=False), encoder=encoder, echo=lambda m: None)
    assert rep.ok, rep.failed
    every = engine.open(idx, encoder=encoder).footprints()
    per = every.dropna(subset=["stac_collection"]).groupby("stac_collection").size()
    monkeypatch.setenv("GLB_UI_INDEX", str(idx))
    at = AppTest.from_file(str(ROOT / "ui" / "app.py"), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    ms = at.sidebar.multiselect(key="stac_collections")
    assert list(ms.options) == [f"{c} ({n:,})" for c, n in sorted(per.items())]
    at.sidebar.checkbox(key="diversify").uncheck()
    at.sidebar.text_input(key="text").input("forest")
    at.run()
    ms = at.sidebar.multiselect(key="stac_collections")
    ms.select("pucallpa-archive")
    at.sidebar.slider(key="k").set_value(100)
    at.run()
    assert not at.exception, at.exception
    assert not [e.value for e in at.error]
    assert dict(at.query_params)["stac"] in ("pucallpa-archive", ["pucallpa-archive"])  # in the URL too
    at.selectbox(key="view").set_value("Table")
    at.run()
    shown = at.dataframe[0].value
    want = set(every[every["stac_collection"] == "pucallpa-archive"]["tile_id"])
    got = set(shown["tile_id"].astype(int)) if "tile_id" in shown else set(shown.index.astype(int))
    assert got == want


def test_ui_has_no_stac_filter_without_stac_scenes(small_index, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("GLB_UI_INDEX", str(small_index))
    at = AppTest.from_file(str(ROOT / "ui" / "app.py"), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    assert "stac_collections" not in [m.key for m in at.sidebar.multiselect]
