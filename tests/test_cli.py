"""The `glb` command line as a user runs it: real processes, real files, exit statuses."""

import json
import subprocess
import sys

import shapely

from conftest import ROOT, SCENES, SMALL_SCENES


def glb(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "glb", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_index_search_info_round_trip(tmp_path):
    idx = tmp_path / "x"
    r = glb("index", SCENES / "sentinel1", SCENES / "elevation", "--index", idx, "--quiet")
    assert r.returncode == 0, r.stderr
    info = json.loads(glb("info", "--index", idx, "--json").stdout)
    assert info["scenes"] == 5 and info["tiles"] == info["vectors"] > 0
    assert {"sar", "elevation"} == set(info["modalities"])
    assert info["encoder"]["embedding_dim"] == 384
    x0, y0, x1, y1 = info["bbox"]
    assert -180 <= x0 < x1 <= 180 and -90 <= y0 < y1 <= 90
    # a box around the Sentinel-1 scene only
    assert "sentinel1-vv" in info["sensors"]
    import rasterio
    from rasterio.warp import transform_bounds

    with rasterio.open(next((SCENES / "sentinel1").glob("*.tif"))) as ds:
        b = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
    box = (b[0] - 0.01, b[1] - 0.01, b[2] + 0.01, b[3] + 0.01)
    r = glb("search", "river", "--index", idx, "--bbox", ",".join(map(str, box)), "--k", 50, "--json")
    assert r.returncode == 0, r.stderr
    fc = json.loads(r.stdout)
    assert fc["type"] == "FeatureCollection" and len(fc["features"]) > 0
    region = shapely.box(*box)
    for f in fc["features"]:
        assert shapely.geometry.shape(f["geometry"]).within(region)
        assert f["properties"]["sensor"] == "sentinel1-vv"
    # the plain table
    r = glb("search", "river", "--index", idx, "--k", 3)
    assert r.returncode == 0 and "rank" in r.stdout


def test_exit_statuses_and_one_line_errors(tmp_path, small_index):
    r = glb("search", "river", "--index", small_index, "--bbox", "0,100,1,101")
    assert r.returncode == 2
    err = [line for line in r.stderr.splitlines() if "error" in line]
    assert len(err) == 1 and "min_lat 100.0 is outside" in err[0]
    r = glb("search", "river", "--index", tmp_path / "none")
    assert r.returncode == 2 and "no index here" in r.stderr
    r = glb("index", SCENES / "landsat_timeseries" / "1985.tif", "--index", tmp_path / "y", "--quiet")
    assert r.returncode == 1 and "--sensor" in r.stderr
    r = glb("index", SCENES / "landsat_timeseries" / "1985.tif", "--index", tmp_path / "y",
            "--sensor", "landsat-swir1-nir-red-green", "--quiet")
    assert r.returncode == 0, r.stderr
    r = glb("index", SMALL_SCENES[0], "--index", tmp_path / "z", "--sensor", "no-such", "--quiet")
    assert r.returncode == 2 and "unknown sensor" in r.stderr


def test_check_reports_a_broken_index(index_copy):
    assert glb("check", "--index", index_copy).returncode == 0
    seg = next((index_copy / "segments").iterdir())
    (seg / "vectors.npy").write_bytes(b"garbage")
    r = glb("check", "--index", index_copy)
    assert r.returncode == 1 and "unreadable" in r.stderr


def test_search_ranking_options_match_the_api_and_watch_add(small_index):
    """`glb search --calibrated --diversify N --min-relevance P --undated`: the ranking options a
    saved search keeps (`glb watch add`), with the same names, giving what `Index.search` gives."""
    import engine

    idx = engine.open(small_index)
    for argv, kw in ((["--calibrated", "--diversify", 2], dict(calibrated=True, diversify=2)),
                     (["--evidence", "--diversify", 3], dict(evidence=True, diversify=3)),
                     (["--min-relevance", 90], dict(min_relevance=90.0)),
                     (["--diversify", 1, "--start", "1900-01-01", "--undated"],
                      dict(diversify=1, start="1900-01-01", undated=True))):
        r = glb("search", "river", "--index", small_index, "--k", 12, "--json", *argv)
        assert r.returncode == 0, r.stderr
        fc = json.loads(r.stdout)
        ref = idx.search("river", k=12, **kw)
        got = [int(f["properties"]["tile_id"]) for f in fc["features"]]
        assert got == ref["tile_id"].tolist() and len(got) > 0, argv
        assert [round(f["properties"]["score"], 4) for f in fc["features"]] == \
            [round(float(s), 4) for s in ref["score"]]
        ranking = fc["query"]["ranking"]
        assert ranking["calibrated"] == kw.get("calibrated", False)
        assert ranking["evidence"] == kw.get("evidence", False)
        assert ranking["diversify"] == kw.get("diversify") and ranking["min_relevance"] == kw.get("min_relevance")
        if "min_relevance" in kw:
            assert all(f["properties"]["relevance"] >= 90 for f in fc["features"])
        if "diversify" in kw:
            scenes = [f["properties"]["scene"] for f in fc["features"]]
            assert max(scenes.count(s) for s in scenes) <= kw["diversify"]
    plain = glb("search", "river", "--index", small_index, "--k", 12, "--json")
    cal = glb("search", "river", "--index", small_index, "--k", 12, "--json", "--calibrated")
    # calibrated scores are z-scores per modality, not cosines: the option reaches the engine
    assert [f["properties"]["score"] for f in json.loads(plain.stdout)["features"]] != \
        [f["properties"]["score"] for f in json.loads(cal.stdout)["features"]]
    # the table shows what the ranking ordered and floored by
    r = glb("search", "river", "--index", small_index, "--k", 5, "--calibrated")
    assert r.returncode == 0 and "score_raw" in r.stdout and "relevance" in r.stdout
    # the names are the ones `glb watch add` takes
    for opt in ("--calibrated", "--diversify", "--min-relevance", "--undated"):
        assert opt in glb("watch", "add", "--help").stdout and opt in glb("search", "--help").stdout
    for argv, word in ((["--diversify", 0], "diversify"), (["--min-relevance", 150], "min_relevance"),
                       (["--evidence", "--calibrated"], "choose one")):
        r = glb("search", "river", "--index", small_index, *argv)
        err = [line for line in r.stderr.splitlines() if line.strip()]
        assert r.returncode == 2 and len(err) == 1 and word in err[0], r.stderr
