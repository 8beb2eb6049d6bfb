"""Results (and any other GeoDataFrame of tiles, e.g. feedback marks) out of the engine, in one
place for the CLI, the UI and Python users:

    engine.export_results(gdf, "geojson" | "csv" | "parquet", query=None) -> bytes
    engine.write_results(gdf, "out.parquet")           # format from the suffix

GeoJSON: a FeatureCollection (the shape of `glb search --json`), with the query under "query".
CSV: attributes, the footprint's centre (lon, lat) and the footprint as WKT.
GeoParquet: the attributes and the footprint (WKB, EPSG:4326) with GeoParquet metadata, so
geopandas (`read_parquet`), DuckDB spatial (`read_parquet` gives a GEOMETRY column), GDAL/QGIS
and Arrow readers take it as it is; the query travels as JSON in the file's key-value metadata
under `glb:query`.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from .errors import InputError

FORMATS = ("geojson", "csv", "parquet")
SUFFIXES = {".geojson": "geojson", ".json": "geojson", ".csv": "csv", ".parquet": "parquet",
            ".geoparquet": "parquet"}
MEDIA_TYPES = {"geojson": "application/geo+json", "csv": "text/csv",
               "parquet": "application/vnd.apache.parquet"}


def _dates(values) -> list:
    import pandas as pd

    out = []
    for v in values:
        out.append(None if v is None or pd.isna(v) else pd.Timestamp(v).strftime("%Y-%m-%d"))
    return out


def export_results(results, fmt: str, *, query: dict | None = None) -> bytes:
    """`results`: a GeoDataFrame in EPSG:4326 with a `geometry` column (what `Index.search`
    returns). `query`: what produced it (kept in GeoJSON and GeoParquet)."""
    fmt = (fmt or "").lower()
    if fmt not in FORMATS:
        raise InputError(f"export format {fmt!r}: choose from {', '.join(FORMATS)}")
    out = results.copy()
    out.attrs = {}  # the search plan rides in attrs; the query argument says what to keep
    if "acquired" in out.columns:
        out["acquired"] = _dates(out["acquired"])
    if "tile_id" in out.columns:
        out["tile_id"] = out["tile_id"].astype("int64")
    if fmt in ("geojson", "csv"):
        # ids as text: 64-bit ids lose digits as JavaScript numbers and in spreadsheets
        if "tile_id" in out.columns:
            out["tile_id"] = out["tile_id"].astype(str)
        if "scene_id" in out.columns:
            out["scene_id"] = out["scene_id"].astype(str)
    if fmt == "geojson":
        fc = json.loads(out.to_json(drop_id=True, na="null"))
        if query is not None:
            fc["query"] = query
        return json.dumps(fc).encode()
    if fmt == "csv":
        import shapely

        df = out.drop(columns="geometry")
        c = shapely.centroid(results.geometry.to_numpy())  # lon/lat centre of each small footprint
        df["lon"] = [round(float(p.x), 7) for p in c]
        df["lat"] = [round(float(p.y), 7) for p in c]
        df["footprint_wkt"] = [g.wkt for g in results.geometry]
        text = io.StringIO()
        # text columns quoted, so readers keep the 19-digit ids as text
        df.to_csv(text, index=False, quoting=csv.QUOTE_NONNUMERIC)
        return text.getvalue().encode()
    # GeoParquet: acquired as a real date column, not text
    import pandas as pd
    import pyarrow.parquet as pq

    if "acquired" in out.columns:
        out["acquired"] = pd.to_datetime(out["acquired"], errors="coerce").dt.date
    for c in ("stac_collection", "stac_item"):  # text even when every value is null
        if c in out.columns:
            out[c] = out[c].astype("string")
    if out.crs is None:
        out = out.set_crs("EPSG:4326")
    first = io.BytesIO()
    out.to_parquet(first, index=False)  # geopandas writes the GeoParquet "geo" metadata
    table = pq.read_table(io.BytesIO(first.getvalue()))
    meta = dict(table.schema.metadata or {})
    if query is not None:
        meta[b"glb:query"] = json.dumps(query, default=str).encode()
    table = table.replace_schema_metadata(meta)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def format_for(path: str | Path, fmt: str | None = None) -> str:
    if fmt:
        return fmt.lower()
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(f"{path}: cannot tell the format from the suffix; use one of "
                         f"{', '.join(SUFFIXES)} or give the format")
    return SUFFIXES[suffix]


def write_results(results, path: str | Path, fmt: str | None = None, *,
                  query: dict | None = None) -> Path:
    """Write `results` to `path` (format from the suffix unless given), atomically."""
    path = Path(path)
    data = export_results(results, format_for(path, fmt), query=query)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path
