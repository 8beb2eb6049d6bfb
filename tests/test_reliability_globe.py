"""The whole globe: geographic grids that run past 180° (179..181, half-pixel-shifted global
grids, 0..360), polar-stereographic scenes over a pole, and query regions across the
antimeridian, read the short way round with one rule in the engine, the CLI and the UI's
region box (engine/geo.py)."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from rasterio.transform import from_origin

import engine
from conftest import write_tif
from engine.check import check_index
from indexer.runner import IndexOptions, run_index

CROSSING_WKT = "POLYGON((170 -10,-170 -10,-170 10,170 10,170 -10))"
POLE_BOX = (-5, 89.99, 5, 89.999)


def _rgb(h, w, seed):
    return np.random.default_rng(seed).integers(0, 255, (3, h, w), dtype=np.uint8)


SCENES = {
    # name: (crs, transform, height, width)
    "across_180": ("EPSG:4326", from_origin(179.0, 1.0, 2 / 192, 2 / 192), 192, 192),
    "global_half_pixel": ("EPSG:4326", from_origin(-180.25, 90.25, 0.5, 0.5), 361, 720),
    "global_0_360": ("EPSG:4326", from_origin(0.0, 90.0, 0.5, 0.5), 360, 720),
    "north_pole_corner": ("EPSG:3413", from_origin(-64000, 64000, 500, 500), 256, 256),
    "north_pole_inside": ("EPSG:3413", from_origin(-48000, 48000, 500, 500), 192, 192),
}


@pytest.fixture(scope="module")
def globe(tmp_path_factory, encoder):
    d = tmp_path_factory.mktemp("globe")
    paths = {}
    for i, (name, (crs, transform, h, w)) in enumerate(SCENES.items()):
        paths[name] = write_tif(d / f"{name}.tif", _rgb(h, w, i), crs=crs, transform=transform,
                                photometric="RGB")
    index = d / "index"
    r = run_index(list(paths.values()), index, encoder=encoder, options=IndexOptions(progress=False),
                  echo=lambda m: None)
    assert r.failed == [] and r.indexed == len(SCENES), r.failed
    idx = engine.Index(index, encoder=encoder)
    fp = idx.footprints()
    return index, idx, fp, paths


def _scene_tiles(fp, name):
    return fp[fp.scene.str.endswith(f"{name}.tif")]


def _search(idx, **kw):
    q = np.ones(idx.snapshot.dim, np.float32) / np.sqrt(idx.snapshot.dim)
    return idx.search(vector=q, k=1000, **kw)


def test_geographic_grids_past_180_are_indexed_on_the_earth(globe):
    index, idx, fp, _ = globe
    assert check_index(index)[0] == []  # every envelope a lon/lat box matching its footprint
    for g in fp.geometry:
        x0, y0, x1, y1 = g.bounds
        assert -180 <= x0 <= x1 <= 180 and -90 <= y0 <= y1 <= 90 and g.is_valid and g.area > 0
    # 179..181: the middle tile column is cut in two at the antimeridian, the others moved
    t = _scene_tiles(fp, "across_180")
    assert len(t) == 9
    cut = [g for g in t.geometry if g.geom_type == "MultiPolygon"]
    assert len(cut) == 3 and all(g.bounds[0] == -180 and g.bounds[2] == 180 for g in cut)
    assert np.isclose(sum(g.area for g in t.geometry), 4.0, atol=1e-6)  # 2° x 2°, nothing lost
    east = [g for g in t.geometry if g.geom_type == "Polygon" and g.bounds[2] < 0]
    assert len(east) == 3 and all(np.isclose(g.bounds[2], -179.0) for g in east)
    # global grids: their footprints cover the globe once (area of the lon/lat plane)
    for name in ("global_half_pixel", "global_0_360"):
        geoms = list(_scene_tiles(fp, name).geometry)
        union = shapely.union_all(geoms)
        assert np.isclose(union.area, 360 * 180, rtol=1e-3), (name, union.area)
    # and no tile lost a piece when cut and moved (0.5° pixels, all within ±90° latitude)
    t = _scene_tiles(fp, "global_0_360")
    assert np.allclose([g.area for g in t.geometry], t.height * t.width * 0.25)


def test_a_box_across_the_antimeridian_finds_the_tiles_there(globe):
    _, idx, fp, _ = globe
    res = _search(idx, bbox=(179.5, -0.5, -179.5, 0.5))
    names = {s.split("/")[-1] for s in res.scene}
    assert "across_180.tif" in names
    region = shapely.union(shapely.box(179.5, -0.5, 180, 0.5), shapely.box(-180, -0.5, -179.5, 0.5))
    truth = {t for t, g in zip(fp.tile_id, fp.geometry) if g.intersects(region)}
    assert set(res.tile_id) == truth
    # a 0..360 grid's tile at lon 200..232 answers at -160..-128
    res = _search(idx, bbox=(-150, 10, -149, 11))
    assert any(s.endswith("global_0_360.tif") for s in res.scene)


def test_a_polygon_across_the_antimeridian_is_read_the_short_way_round(globe, capsys):
    _, idx, fp, _ = globe
    by_box = _search(idx, bbox=(170, -10, -170, 10))
    by_polygon = _search(idx, region=CROSSING_WKT)
    band = shapely.union(shapely.box(170, -10, 180, 10), shapely.box(-180, -10, -170, 10))
    truth = {t for t, g in zip(fp.tile_id, fp.geometry) if g.intersects(band)}
    assert set(by_box.tile_id) == truth and list(by_polygon.tile_id) == list(by_box.tile_id)
    assert all(g.intersects(band) for g in by_polygon.geometry)
    # a polygon with every edge shorter than 180° is read as written (the rule has no exceptions)
    wide = "POLYGON((-100 -10,0 -10,100 -10,100 10,0 10,-100 10,-100 -10))"
    assert all(g.intersects(shapely.box(-100, -10, 100, 10)) for g in _search(idx, region=wide).geometry)
    # GeoJSON the same
    gj = {"type": "Polygon", "coordinates": [[[170, -10], [-170, -10], [-170, 10], [170, 10], [170, -10]]]}
    assert list(_search(idx, region=gj).tile_id) == list(by_box.tile_id)


def test_the_cli_and_the_ui_region_box_follow_the_same_rule(globe, capsys):
    import json

    from glb.cli import main
    from ui import query as q

    index, idx, _, _ = globe
    tid = int(_scene_tiles(idx.footprints(), "across_180").tile_id.iloc[0])
    outs = []
    for flag in (["--bbox", "170,-10,-170,10"], ["--region", CROSSING_WKT]):
        assert main(["search", "--tile-id", str(tid), "--k", "50", "--json", "--index", str(index), *flag]) == 0
        # GeoJSON carries ids as text (64-bit ids lose digits as JavaScript numbers)
        outs.append([int(f["properties"]["tile_id"]) for f in json.loads(capsys.readouterr().out)["features"]])
    assert outs[0] == outs[1] and outs[0]
    box = q.parse_region("170,-10,-170,10")
    assert box.bbox == (170, -10, -170, 10)
    assert q.parse_region(" 170, -10 ,-170,10").geojson()["type"] == "MultiPolygon"
    poly = q.parse_region(CROSSING_WKT)
    a = idx.search(tile_id=tid, k=50, **box.engine_kwargs())
    b = idx.search(tile_id=tid, k=50, **poly.engine_kwargs())
    assert list(a.tile_id) == list(b.tile_id) == outs[0]


@pytest.mark.parametrize("name", ["north_pole_corner", "north_pole_inside"])
def test_a_polar_scene_answers_for_boxes_at_the_pole(globe, name):
    """Footprints from tile edges densified in the polar-stereographic CRS, closed over the
    pole: the tiles that hold a box near the pole are exactly the ones returned."""
    import rasterio
    from rasterio.warp import transform

    from engine.geo import densified_ring

    _, idx, fp, paths = globe
    res = _search(idx, bbox=POLE_BOX)
    got = set(res[res.scene.str.endswith(f"{name}.tif")].tile_id)
    # truth in the scene's own CRS: which windows does the box (densified) touch?
    with rasterio.open(paths[name]) as ds:
        ring = densified_ring(POLE_BOX, 64)
        x, y = transform("EPSG:4326", ds.crs, ring[:, 0], ring[:, 1])
        box_src = shapely.Polygon(np.column_stack([x, y]))
        tiles = _scene_tiles(fp, name)
        want = set()
        for tid, r, c, h, w in zip(tiles.tile_id, tiles.row_off, tiles.col_off, tiles.height, tiles.width):
            b = ds.window_bounds(rasterio.windows.Window(c, r, w, h))
            if shapely.box(*b).intersects(box_src):
                want.add(tid)
    assert want and got == want
    # the pole itself is inside the footprints' union, and nothing collapsed
    union = shapely.union_all(list(_scene_tiles(fp, name).geometry))
    assert union.contains(shapely.box(-179, 89.999, 179, 89.9999))
    assert all(g.area > 0 for g in _scene_tiles(fp, name).geometry)
