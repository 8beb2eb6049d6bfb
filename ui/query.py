"""The page's logic, without Streamlit: widget values -> a validated request -> engine results ->
what the page shows, draws and exports. Uses the engine's public API only.

Every engine error (engine.GLBError) becomes `Outcome.error`, a one-line message for the page.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import math
import re
import time
from dataclasses import dataclass, field

import engine

MODES = ("text", "image", "tile")
MAX_K = 100
# How the list is ordered across sensors (the sidebar's "Order across sensors"; URL `order`):
# "evidence": each sensor's best tiles by the query's evidence against other descriptions
# (engine/retrieval/evidence.py; the default: best of the three in training/rank_bench.py),
# "fair": the per-modality calibrated score (every sensor gets places), "raw": cosine.
ORDERS = {"evidence": "By evidence (the default)", "fair": "A fair share per sensor",
          "raw": "Raw similarity"}


@dataclass(frozen=True)
class Region:
    """A search area: exactly one of bbox (min_lon, min_lat, max_lon, max_lat) or polygon."""

    bbox: tuple[float, float, float, float] | None = None
    polygon: dict | None = None  # GeoJSON geometry

    def engine_kwargs(self) -> dict:
        return {"bbox": self.bbox} if self.bbox is not None else {"region": self.polygon}

    def geojson(self) -> dict:
        if self.polygon is not None:
            return self.polygon
        from shapely.geometry import mapping

        return mapping(engine.bbox_geometry(self.bbox))  # split in two across the antimeridian


def parse_region(text: str | None) -> Region | None:
    """'' -> None; 'min_lon,min_lat,max_lon,max_lat' -> bbox; GeoJSON or WKT polygon -> polygon.
    Raises engine.InputError with a message for the page."""
    import shapely
    from shapely.geometry import mapping, shape

    text = (text or "").strip()
    if not text:
        return None
    parts = [p.strip() for p in text.replace(";", ",").split(",")]
    if _NUMBERS.fullmatch(text):
        if len(parts) != 4:
            raise engine.InputError(f"{_short(text)} has {len(parts)} number(s); a box is four: "
                                    "west, south, east, north (min_lon,min_lat,max_lon,max_lat)")
        try:
            x0, y0, x1, y1 = (float(p) for p in parts)
        except ValueError:
            raise engine.InputError(f"{_short(text)}: a box is four numbers "
                                    "west, south, east, north (min_lon,min_lat,max_lon,max_lat)") from None
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
            raise engine.InputError(f"{_short(text)}: the box has a number that is not finite")
        raise_box_problem(x0, y0, x1, y1)
        # the engine's rule: min_lon > max_lon crosses the antimeridian (at most 180° wide)
        return Region(bbox=engine.parse_bbox((x0, y0, x1, y1)))
    try:
        geom = shape(json.loads(text)) if text.startswith("{") else shapely.from_wkt(text)
    except Exception:  # noqa: BLE001 - json and shapely raise many kinds
        raise engine.InputError(f"{_short(text)} is not a box (west,south,east,north), nor a polygon "
                                "drawn on the map, as GeoJSON or WKT") from None
    if geom.is_empty or geom.geom_type not in ("Polygon", "MultiPolygon"):
        raise engine.InputError(f"a region is an area: this is a {geom.geom_type}; draw a rectangle "
                                "or polygon on the map, or type west,south,east,north")
    x0, y0, x1, y1 = geom.bounds
    if not (-180 <= x0 <= x1 <= 180 and -90 <= y0 <= y1 <= 90):
        raise engine.InputError(f"the polygon reaches {tuple(round(v, 4) for v in geom.bounds)}, off the "
                                "globe (longitude -180..180, latitude -90..90): pan back to the "
                                "main copy of the map and draw it again")
    if geom.area == 0:
        raise engine.InputError("the region has no area")
    # the engine's rule: an edge spanning more than 180° of longitude crosses the antimeridian
    return Region(polygon=mapping(engine.parse_region(geom)))


_NUMBERS = re.compile(r"\s*[-+0-9.eE]+(\s*[,;]\s*[-+0-9.eE]*)*\s*")


def _short(text: str) -> str:
    text = " ".join(text.split())
    return f"“{text[:60]}…”" if len(text) > 60 else f"“{text}”"


def _num(v: float) -> str:
    return f"{v:.6f}".rstrip("0").rstrip(".")


def raise_box_problem(x0: float, y0: float, x1: float, y1: float) -> None:
    """A box that cannot be searched -> engine.InputError saying what to fix, with the box the
    analyst probably meant."""
    def box(*v):
        return ",".join(_num(x) for x in v)

    lon_ok = all(-180 <= v <= 180 for v in (x0, x1))
    lat_ok = all(-90 <= v <= 90 for v in (y0, y1))
    if not lat_ok and all(-90 <= v <= 90 for v in (x0, x1)) and all(-180 <= v <= 180 for v in (y0, y1)):
        a, b, c, d = min(y0, y1), min(x0, x1), max(y0, y1), max(x0, x1)
        raise engine.InputError(f"latitude and longitude look swapped (a latitude is between -90 and "
                                f"90): did you mean {box(a, b, c, d)}?")
    if not lon_ok or not lat_ok:
        raise engine.InputError("the box is off the globe: longitudes go from -180 to 180 and "
                                "latitudes from -90 to 90 (west, south, east, north)")
    if x0 == x1 or y0 == y1:
        raise engine.InputError("the box has no area: west and east (or south and north) are equal")
    # west > east with a narrow span is a box across the antimeridian (the engine's rule,
    # engine.parse_bbox); only a span wider than half the globe means swapped corners
    if y0 > y1 or (x0 > x1 and x1 + 360 - x0 > 180):
        raise engine.InputError(f"the corners look swapped (west, south, east, north): did you mean "
                                f"{box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))}?")


def region_text(geometry: dict | None) -> str:
    """A drawn GeoJSON geometry -> the text the region box shows: a rectangle as a bbox,
    anything else as WKT (6 decimals, ~10 cm)."""
    import shapely
    from shapely.geometry import shape

    if not geometry:
        return ""
    geom = shape(geometry)
    x0, y0, x1, y1 = geom.bounds
    if geom.geom_type == "Polygon" and math.isclose(geom.area, (x1 - x0) * (y1 - y0), rel_tol=1e-9):
        return ",".join(f"{v:.6f}".rstrip("0").rstrip(".") for v in (x0, y0, x1, y1))
    return shapely.to_wkt(geom, rounding_precision=6)


@dataclass(frozen=True)
class Request:
    """Everything that decides a result list (hashable: used as the memo key)."""

    mode: str = "text"
    text: str = ""
    tile_id: str = ""
    image: bytes | None = field(default=None, repr=False)
    image_name: str = ""
    image_sensor: str | None = None
    image_wavelengths: str = ""
    image_modality: str | None = None
    modalities: tuple[str, ...] = ()
    sensors: tuple[str, ...] = ()
    stac_collections: tuple[str, ...] = ()  # scenes indexed from these STAC collections only
    start: dt.date | None = None
    end: dt.date | None = None
    region: str = ""
    k: int = 20
    undated: bool = True           # with a date range: keep tiles that have no date
    order: str = "evidence"        # across sensors: ORDERS (engine/retrieval/evidence.py, ranking.py)
    diversify: int | None = 5      # at most N per scene, one per place; None: plain ranking
    min_relevance: float = 0.0     # relevance floor (percentile)
    positives: tuple[str, ...] = ()   # tile ids marked relevant, once Refine is pressed (ui/feedback.py)
    negatives: tuple[str, ...] = ()

    @property
    def calibrated(self) -> bool:
        return self.order == "fair"

    @property
    def evidence(self) -> bool:
        return self.order == "evidence"

    def is_empty(self) -> bool:
        if self.positives:
            return False
        if self.mode == "image":
            return self.image is None  # an empty upload is a query: it gets its message
        if self.mode == "tile":
            return not self.tile_id.strip()
        return not self.text.strip()

    def key(self) -> str:
        """A short stable id of this request (memo key, map fit key)."""
        parts = [self.mode, self.text.strip(), self.tile_id.strip(),
                 hashlib.sha1(self.image).hexdigest() if self.image else "", self.image_name,
                 self.image_sensor or "", self.image_wavelengths, self.image_modality or "",
                 ",".join(self.modalities), ",".join(self.sensors), ",".join(self.stac_collections),
                 str(self.start), str(self.end),
                 self.region.strip(), str(self.k), str(self.undated), self.order,
                 str(self.diversify), str(self.min_relevance), ",".join(self.positives),
                 ",".join(self.negatives)]
        return hashlib.sha1("\x1f".join(parts).encode()).hexdigest()[:16]

    def describe(self) -> str:
        """For the results header (markdown-safe)."""
        if self.mode == "image":
            return f"image {md(self.image_name or 'upload')}"
        if self.mode == "tile":
            return f"tiles like {md(self.tile_id.strip())}"
        return f"“{md(self.text.strip())}”"


    def slug(self) -> str:
        """The query in a file name: lower-case words joined by '-', at most 40 characters."""
        what = {"image": self.image_name.rsplit(".", 1)[0] or "image",
                "tile": f"like-{self.tile_id.strip()}"}.get(self.mode, self.text)
        words = re.findall(r"[a-z0-9]+", what.lower())
        return ("-".join(words)[:40].strip("-")) or "query"


@dataclass
class Outcome:
    results: object | None = None  # GeoDataFrame
    error: str | None = None
    seconds: float = 0.0  # engine time (query encoding + search)
    note: str = ""  # what the upload was read as
    filters: list = field(default_factory=list)  # engine Index.filter_counts: what each filter removed
    query_footprint: dict | None = None  # GeoJSON of a georeferenced upload (EPSG:4326)
    feedback: dict | None = None  # what relevance feedback did (the plan's "feedback")


def parse_wavelengths(text: str) -> tuple[float, ...] | None:
    """'0.665, 0.56,0.49' -> (0.665, 0.56, 0.49); '' -> None. Band centres in µm."""
    text = (text or "").strip()
    return engine.parse_wavelengths(text, name="band centres") if text else None


def read_upload(req: Request):
    """The uploaded image -> (pixels, layout); engine.RasterError / UnknownSensorError say what
    to pick when the file does not tell its bands."""
    from engine.raster import MAX_UPLOAD_BYTES, read_image

    if len(req.image) > MAX_UPLOAD_BYTES:
        raise engine.InputError(f"{req.image_name or 'upload'}: {len(req.image) / 2**20:.1f} MB is over "
                                f"the {MAX_UPLOAD_BYTES // 2**20} MB upload limit")
    wl = parse_wavelengths(req.image_wavelengths)
    return read_image(req.image, name=req.image_name or "upload", sensor=req.image_sensor or None,
                      wavelengths=wl, modality=req.image_modality or None)


def run(idx, req: Request) -> Outcome:
    """One search. Engine errors become Outcome.error; anything else is a bug and propagates."""
    out = Outcome()
    try:
        if req.mode not in MODES:
            raise engine.InputError(f"unknown query mode {req.mode!r}")
        kw = {"k": engine.check_k(req.k, MAX_K), "modality": list(req.modalities) or None,
              "sensor": list(req.sensors) or None, "start": req.start, "end": req.end,
              "undated": req.undated, "stac_collection": list(req.stac_collections) or None}
        if req.start and req.end and req.start > req.end:
            raise engine.InputError(f"the date range starts ({req.start}) after it ends ({req.end})")
        region = parse_region(req.region)
        if region is not None:
            kw.update(region.engine_kwargs())
        out.filters = idx.filter_counts(**{k: v for k, v in kw.items() if k != "k"})
        kw.update(calibrated=req.calibrated, evidence=req.evidence, diversify=req.diversify,
                  min_relevance=req.min_relevance or None)
        if req.positives or req.negatives:
            kw.update(positives=[int(t) for t in req.positives],
                      negatives=[int(t) for t in req.negatives],
                      exclude=[int(t) for t in req.negatives])  # "not this" is not shown again
        t0 = time.perf_counter()
        if req.mode == "text" and not req.text.strip() and req.positives:
            res = idx.search(**kw)  # marks only
        elif req.mode == "text":
            res = idx.search(req.text.strip(), **kw)
        elif req.mode == "tile":
            try:
                tile_id = int(req.tile_id.strip())
            except ValueError:
                raise engine.InputError(f"tile id {req.tile_id.strip()!r} is not a number") from None
            res = idx.search(tile_id=tile_id, **kw)
        else:
            pixels, layout = read_upload(req)
            out.note = (f"{req.image_name or 'upload'}: {pixels.shape[0]} band(s), "
                        f"{pixels.shape[2]}×{pixels.shape[1]} px, sensor {layout.sensor}, "
                        f"modality {layout.modality}")
            out.query_footprint = upload_footprint(req.image)
            res = idx.search(image=pixels, wavelengths=list(layout.wavelengths),
                             image_modality=layout.modality, **kw)
        out.seconds = time.perf_counter() - t0
        out.results = res
        if req.positives or req.negatives:
            out.feedback = res.attrs.get("plan", {}).get("feedback")
    except engine.UnknownSensorError as e:
        head = re.split(r";\s*pass --sensor", _clean(e))[0]
        out.error = f"{head}: pick the Sensor below the upload, or type the band centres (µm)"
    except engine.GLBError as e:
        out.error = _clean(e)
    return out


_FLAGS = [(re.compile(r"--sensor\b"), "the Sensor"), (re.compile(r"--wavelengths\b"), "the band centres"),
          (re.compile(r"--bbox\b"), "the region"), (re.compile(r"--k\b"), "Results (k)")]


def _clean(e: Exception) -> str:
    """An engine message in the page's words: no in-memory file names (GDAL names uploads
    /vsimem/...), no command-line flags."""
    text = re.sub(r"'?/vsimem/[^\s']*'?", "the file", str(e))
    for pat, words in _FLAGS:
        text = pat.sub(words, text)
    return text


def upload_footprint(data: bytes) -> dict | None:
    """The footprint (EPSG:4326 GeoJSON polygon) of an uploaded GeoTIFF that says where it is;
    None for pictures without a georeference."""
    try:
        import rasterio
        from rasterio.io import MemoryFile
        from rasterio.warp import transform_geom

        with MemoryFile(data) as mf, mf.open() as ds:
            if ds.crs is None or ds.transform == rasterio.Affine.identity():
                return None
            x0, y0, x1, y1 = ds.bounds
            ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
            return transform_geom(ds.crs, "EPSG:4326", {"type": "Polygon", "coordinates": [ring]})
    except Exception:  # noqa: BLE001 - not a raster GDAL can place: no footprint to show
        return None


# --- what the page shows -------------------------------------------------------------------
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!<>|~$:@&])")


def md(text) -> str:
    """Text from users or files, made inert for Streamlit's markdown (no links, images, HTML).
    GitHub-flavoured markdown also links bare http://…, www.… and name@host after escapes are
    resolved, so an invisible word joiner (U+2060) breaks those patterns."""
    out = _MD_SPECIAL.sub(r"\\\1", str(text))
    out = out.replace("\\:", "\\:\u2060").replace("\\@", "\u2060\\@")
    return _WWW.sub("\\1\u2060", out)


_WWW = re.compile(r"(?i)(www)")


def _date(v) -> str:
    try:
        import pandas as pd

        return "" if v is None or pd.isna(v) else str(v)[:10]
    except (TypeError, ValueError):
        return str(v)[:10]


def table(results):
    """Results as the table the page shows (tile ids as text: they exceed JavaScript's 2^53)."""
    import pandas as pd

    return pd.DataFrame({
        "rank": results["rank"].astype(int),
        "relevance": results["relevance"].astype(float).round(1),
        "match": results["match"].astype(str),
        "score": results["score"].astype(float).round(4),
        "cosine": results["score_raw"].astype(float).round(4),
        "modality": results["modality"].astype(str),
        "sensor": results["sensor"].astype(str),
        "acquired": [_date(v) for v in results["acquired"]],
        "scene": results["scene"].astype(str),
        "tile_id": results["tile_id"].astype("int64").astype(str),
    })


def caption(row) -> str:
    """One result in a line (markdown-safe)."""
    return md(f"#{int(row['rank'])} · relevance {relevance_text(row)} · {row['modality']} · "
              f"{row['sensor']} · {_date(row['acquired']) or 'no date'} · {row['scene']}")


def relevance_text(row) -> str:
    """'99.2 (high)': the percentile within the tile's modality, and the band."""
    rel = row.get("relevance")
    if rel is None or rel != rel:
        return f"score {float(row['score']):.3f}"
    return f"{float(rel):.1f} ({row['match']})"


def map_features(results, selected: str | None = None) -> dict:
    """Result footprints for the map (tile ids as strings)."""
    from shapely.geometry import mapping

    feats = []
    for row in results.itertuples(index=False):
        tid = str(int(row.tile_id))
        feats.append({"type": "Feature", "geometry": mapping(row.geometry),
                      "properties": {"tile_id": tid, "rank": int(row.rank),
                                     "score": round(float(row.score), 4),
                                     "relevance": relevance_text(row._asdict()),
                                     "scene_id": str(row.scene_id),
                                     "modality": str(row.modality), "sensor": str(row.sensor),
                                     "scene": str(row.scene), "acquired": _date(row.acquired),
                                     "selected": tid == selected}})
    return {"type": "FeatureCollection", "features": feats}


def bounds(geoms) -> list[list[float]] | None:
    """[[south, west], [north, east]] of some footprints (Leaflet's order), None if none."""
    if geoms is None or len(geoms) == 0:
        return None
    import shapely

    x0, y0, x1, y1 = (float(v) for v in shapely.total_bounds(list(geoms)))
    return [[y0, x0], [y1, x1]]


# --- exports -----------------------------------------------------------------------------
def _query(req: Request | None) -> dict | None:
    if req is None:
        return None
    return {"mode": req.mode, "text": req.text.strip() or None,
            "tile_id": req.tile_id.strip() or None, "image": req.image_name or None,
            "modality": list(req.modalities) or None, "sensor": list(req.sensors) or None,
            "stac_collection": list(req.stac_collections) or None,
            "start": str(req.start) if req.start else None,
            "end": str(req.end) if req.end else None,
            "region": req.region.strip() or None, "k": req.k,
            "undated": req.undated, "order": req.order, "calibrated": req.calibrated,
            "diversify": req.diversify, "min_relevance": req.min_relevance}


def to_geojson(results, req: Request | None = None) -> bytes:
    """The results as a GeoJSON FeatureCollection (same shape as `glb search --json`)."""
    return engine.export_results(results, "geojson", query=_query(req))


def to_csv(results) -> bytes:
    """The results as CSV: attributes, footprint centre (lon, lat) and footprint as WKT."""
    return engine.export_results(results, "csv")


def to_parquet(results, req: Request | None = None) -> bytes:
    """The results as GeoParquet (geopandas, DuckDB spatial, QGIS read it as it is)."""
    return engine.export_results(results, "parquet", query=_query(req))


def file_name(req: Request, ext: str, when: dt.datetime | None = None) -> str:
    """glb-<query>-<UTC timestamp>.<ext>"""
    when = when or dt.datetime.now(dt.timezone.utc)
    return f"glb-{req.slug()}-{when.strftime('%Y%m%d-%H%M%S')}.{ext}"


def preview_jpeg(data: bytes | None, side: int = 160) -> bytes | None:
    """A small JPEG of an uploaded query image (first three bands, 2-98 % stretch for rasters
    that are not 8-bit pictures); None when it cannot be read (its error is shown elsewhere)."""
    if not data:
        return None
    import numpy as np
    from PIL import Image

    try:
        try:
            with Image.open(io.BytesIO(data)) as im:
                im = im.convert("RGB")
                im.thumbnail((side, side))
                buf = io.BytesIO()
                im.save(buf, format="JPEG", quality=85)
                return buf.getvalue()
        except Exception:  # noqa: BLE001 - not a picture PIL reads: try it as a raster
            from rasterio.io import MemoryFile

            with MemoryFile(data) as mf, mf.open() as ds:
                idx = [1, 2, 3] if ds.count >= 3 else [1]
                step = max(1, max(ds.width, ds.height) // side)
                arr = ds.read(idx, out_shape=(len(idx), max(1, ds.height // step),
                                              max(1, ds.width // step))).astype(np.float64)
            lo, hi = np.nanpercentile(arr, 2), np.nanpercentile(arr, 98)
            arr = np.clip((arr - lo) / max(hi - lo, 1e-9) * 255, 0, 255).astype(np.uint8)
            arr = np.repeat(arr, 3, 0) if arr.shape[0] == 1 else arr
            buf = io.BytesIO()
            Image.fromarray(arr.transpose(1, 2, 0)).save(buf, format="JPEG", quality=85)
            return buf.getvalue()
    except Exception:  # noqa: BLE001 - unreadable upload: no preview
        return None
