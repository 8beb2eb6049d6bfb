"""Filtered search returns the true top-k within the filter at every selectivity, through
both planner strategies, compared with brute force over the filtered set."""

import datetime as dt

import geopandas as gpd
import numpy as np
import pytest
import shapely

import engine
import synthetic
from engine.errors import InputError

REQUIRED = ["tile_id", "score", "modality", "sensor", "scene", "acquired", "geometry"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    path, rows = synthetic.build(tmp_path_factory.mktemp("synth") / "index")
    return engine.open(path), rows


def brute_force(rows, q, k, region=None, modality=None, start=None, end=None):
    keep = [r for r in rows
            if (region is None or r["geom"].intersects(region))
            and (modality is None or r["modality"] == modality)
            and (start is None or r["acquired"] >= start)
            and (end is None or r["acquired"] <= end)]
    if not keep:
        return []
    v = np.stack([r["vector"] for r in keep])
    s = v @ q
    order = np.argsort(-s)[:k]
    return [keep[i]["tile_id"] for i in order]


def boxes_by_selectivity(rows):
    """Boxes holding ~5 tiles, one scene, several scenes, half the world, everything."""
    r0 = rows[0]["geom"].bounds
    yield "5 tiles", (r0[0] - 1e-4, r0[1] - 1e-4, r0[0] + 0.015, r0[1] + 0.005)
    yield "one scene", (r0[0] - 0.001, r0[1] - 0.001, r0[0] + 0.3, r0[1] + 0.3)
    yield "a continent", (-60, -40, 60, 40)
    yield "half", (-180, -90, 0, 90)
    yield "all", (-180, -90, 180, 90)


def test_recall_at_10_against_brute_force_at_every_selectivity(synth):
    idx, rows = synth
    rng = np.random.default_rng(1)
    queries = synthetic.clustered_vectors(rng, 8)
    strategies = set()
    for name, bbox in boxes_by_selectivity(rows):
        region = shapely.box(*bbox)
        hits = total = 0
        for q in queries:
            truth = brute_force(rows, q, 10, region=region)
            got = idx.search(vector=q, bbox=bbox, k=10)
            strategies.add(got.attrs["plan"]["strategy"])
            assert all(g.intersects(region) for g in got.geometry), name
            hits += len(set(got.tile_id) & set(truth))
            total += len(truth)
            assert len(got) == len(truth)
        assert hits / total >= 0.99, f"{name}: recall {hits / total:.3f}"
    assert {"prefilter", "index+selector"} <= strategies


def test_attribute_filters_are_exact(synth):
    idx, rows = synth
    q = synthetic.clustered_vectors(np.random.default_rng(2), 1)[0]
    start, end = dt.date(2017, 1, 1), dt.date(2019, 12, 31)
    got = idx.search(vector=q, k=20, modality="sar", start=start, end=end)
    truth = brute_force(rows, q, 20, modality="sar", start=start, end=end)
    assert list(got.tile_id) == truth
    assert set(got.modality) == {"sar"}
    assert all(start <= d.date() <= end for d in got.acquired)


def test_polygon_region(synth):
    idx, rows = synth
    q = synthetic.clustered_vectors(np.random.default_rng(3), 1)[0]
    r0 = rows[0]["geom"].bounds
    tri = shapely.Polygon([(r0[0], r0[1]), (r0[0] + 0.2, r0[1]), (r0[0], r0[1] + 0.2)])
    got = idx.search(vector=q, region=tri.wkt, k=10)
    assert list(got.tile_id) == brute_force(rows, q, 10, region=tri)
    got2 = idx.search(vector=q, region=shapely.geometry.mapping(tri), k=10)
    assert list(got2.tile_id) == list(got.tile_id)


def test_more_like_this_excludes_the_tile_and_crosses_modalities(synth):
    idx, rows = synth
    tid = rows[123]["tile_id"]
    got = idx.search(tile_id=tid, k=30)
    assert tid not in set(got.tile_id)
    assert len(got) == 30
    assert len(set(got.modality)) > 1  # clusters span scenes of every modality


def test_results_are_a_geodataframe_with_the_design_columns(small_index):
    res = engine.open(small_index).search("a river", k=5)
    assert isinstance(res, gpd.GeoDataFrame)
    assert res.crs.to_epsg() == 4326
    assert all(c in res.columns for c in REQUIRED)
    assert list(res["rank"]) == [1, 2, 3, 4, 5]
    assert (np.diff(res.score.to_numpy()) <= 1e-6).all()


def test_engine_search_one_call(small_index):
    info = engine.open(small_index).info()
    x0, y0, x1, y1 = info["bbox"]
    res = engine.search("mountains", bbox=(x0, y0, x1, y1), index=small_index, k=3)
    assert len(res) == 3


def test_image_query_in_one_modality_returns_others(small_index, encoder):
    from conftest import SCENES
    from engine.raster import read_image

    arr, lay = read_image(SCENES / "elevation/dtm.tif")
    res = engine.open(small_index).search(image=arr[:, :64, :64], wavelengths=lay.wavelengths,
                                          image_modality=lay.modality, k=50)
    assert len(res) == 50 and len(set(res.modality)) > 1


@pytest.mark.parametrize("kwargs, match", [
    (dict(bbox=(0, 10, 1, 5)), "min_lat"),
    (dict(bbox=(0, -95, 1, 5)), "outside"),
    (dict(bbox=(10, 0, 5, 1)), "swap"),
    (dict(bbox=(0, 0, 1)), "4 numbers"),
    (dict(bbox=(0, 0, 1, float("nan"))), "finite"),
    (dict(k=0), "positive"),
    (dict(k=-3), "positive"),
    (dict(k=10**6), "maximum"),
    (dict(modality="lidar"), "modality"),
    (dict(sensor="x'; DROP TABLE tiles; --"), "not a sensor"),
    (dict(start="2020-01-01", end="2019-01-01"), "after"),
    (dict(start="yesterday"), "not a date"),
    (dict(region="POLYGON((0 0, 1 0, 1 1))"), "region"),
    (dict(region={"type": "Point", "coordinates": [0, 0]}), "Polygon"),
])
def test_bad_arguments_are_clear_errors(small_index, kwargs, match):
    with pytest.raises(InputError, match=match):
        engine.open(small_index).search(vector=np.ones(384, np.float32), **kwargs)


def test_bad_queries(small_index):
    idx = engine.open(small_index)
    with pytest.raises(InputError, match="characters"):
        idx.search("x" * 100_000)
    with pytest.raises(InputError, match="empty"):
        idx.search("")
    with pytest.raises(InputError, match="not in this index"):
        idx.search(tile_id=12345)
    with pytest.raises(InputError, match="exactly one"):
        idx.search("a", tile_id=1)


def test_open_missing_index(tmp_path):
    with pytest.raises(engine.IndexNotFoundError):
        engine.open(tmp_path / "nothing")
