"""Results out: GeoJSON, CSV and GeoParquet from one exporter (engine/export.py), through the
API and `glb search --format/--out`; the GeoParquet is read back by geopandas and by DuckDB
spatial (the real extension, loaded from its wheel)."""

import io
import json
import subprocess
import sys

import geopandas as gpd
import pandas as pd
import pyarrow.parquet as pq
import pytest
import shapely

import engine
from conftest import ROOT


@pytest.fixture(scope="module")
def results(small_index, encoder):
    res = engine.open(small_index, encoder=encoder).search("mountains", k=15)
    assert len(res) == 15
    return res


def test_geoparquet_round_trip_geopandas(results, small_index, encoder, tmp_path):
    dated = engine.open(small_index, encoder=encoder).search("mountains", k=5, modality="multispectral")
    assert dated["acquired"].notna().all()   # Landsat 5, 1988: the dates must survive the trip
    back = gpd.read_parquet(engine.write_results(dated, tmp_path / "d.parquet"))
    assert [str(d) for d in back["acquired"]] == [d.strftime("%Y-%m-%d") for d in dated["acquired"]]
    path = engine.write_results(results, tmp_path / "r.parquet", query={"text": "mountains"})
    back = gpd.read_parquet(path)
    assert back.crs.to_epsg() == 4326
    assert back["tile_id"].tolist() == results["tile_id"].tolist()
    assert back["scene"].tolist() == results["scene"].tolist()
    assert all(a.equals_exact(b, 1e-12) for a, b in zip(back.geometry, results.geometry))
    # dates come back as dates, missing ones as missing (an all-undated column reads back as
    # NaT, a mixed one as None: both are "no date")
    def day(d):
        return None if pd.isna(d) else pd.Timestamp(d).strftime("%Y-%m-%d")

    assert [day(d) for d in back["acquired"]] == [day(d) for d in results["acquired"]]
    meta = pq.read_schema(path).metadata
    assert b"geo" in meta and json.loads(meta[b"glb:query"])["text"] == "mountains"


def test_geoparquet_read_by_duckdb_spatial(results, tmp_path):
    from engine.store.duck import connect

    path = engine.write_results(results, tmp_path / "r.parquet")
    con = connect()
    rows = con.execute(
        f"SELECT tile_id, ST_GeometryType(geometry)::VARCHAR, ST_XMin(geometry), ST_YMax(geometry), "
        f"typeof(geometry) FROM read_parquet('{path}') ORDER BY rank").fetchall()
    assert [r[0] for r in rows] == results["tile_id"].tolist()
    assert {r[1] for r in rows} == {"POLYGON"} and rows[0][4].startswith("GEOMETRY")
    for r, g in zip(rows, results.geometry):
        assert r[2] == pytest.approx(g.bounds[0]) and r[3] == pytest.approx(g.bounds[3])
    # spatial SQL on it: which results meet the first result's footprint
    first = results.geometry.iloc[0]
    n = con.execute(f"SELECT count(*) FROM read_parquet('{path}') WHERE "
                    f"ST_Intersects(geometry, ST_GeomFromText('{first.wkt}'))").fetchone()[0]
    assert n == int(results.geometry.intersects(first).sum())


def test_geojson_and_csv_from_the_same_exporter(results):
    fc = json.loads(engine.export_results(results, "geojson", query={"k": 15}))
    assert fc["query"] == {"k": 15} and len(fc["features"]) == 15
    # ids travel as text (64-bit ids lose digits as JavaScript numbers)
    assert [f["properties"]["tile_id"] for f in fc["features"]] == [str(t) for t in results["tile_id"]]
    import pandas as pd

    raw = engine.export_results(results, "csv")
    assert all(f'"{t}"' in raw.decode() for t in results["tile_id"])  # quoted: text, not a number
    df = pd.read_csv(io.BytesIO(raw), dtype={"tile_id": str})
    assert df["tile_id"].tolist() == [str(t) for t in results["tile_id"]]
    assert all(shapely.from_wkt(w).equals_exact(g, 1e-9)
               for w, g in zip(df["footprint_wkt"], results.geometry))
    with pytest.raises(engine.InputError, match="choose from geojson, csv, parquet"):
        engine.export_results(results, "xlsx")


def test_cli_format_and_out(small_index, tmp_path):
    base = [sys.executable, "-m", "glb", "search", "mountains", "--index", str(small_index),
            "--k", "7"]
    r = subprocess.run(base + ["--out", str(tmp_path / "o.parquet")], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert len(gpd.read_parquet(tmp_path / "o.parquet")) == 7
    r = subprocess.run(base + ["--format", "parquet"], cwd=ROOT, capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert len(gpd.read_parquet(io.BytesIO(r.stdout))) == 7
    r = subprocess.run(base + ["--format", "csv"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and r.stdout.splitlines()[0].startswith('"rank","tile_id"')
    assert len(r.stdout.strip().splitlines()) == 8
    r = subprocess.run(base + ["--out", str(tmp_path / "o.xlsx")], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 2 and "cannot tell the format" in r.stderr
