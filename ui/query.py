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
        x0, y0, x1, y1 = self.bbox
        return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


def parse_region(text: str | None) -> Region | None:
    """'' -> None; 'min_lon,min_lat,max_lon,max_lat' -> bbox; GeoJSON or WKT polygon -> polygon.
    Raises engine.InputError with a message for the page."""
    import shapely
    from shapely.geometry import mapping, shape

    text = (text or "").strip()
    if not text:
        return None
    parts = [p.strip() for p in text.replace(";", ",").split(",")]
    if len(parts) == 4 and not text.lstrip().startswith(("{", "P", "p", "M", "m")):
        try:
            x0, y0, x1, y1 = (float(p) for p in parts)
        except ValueError:
            raise engine.InputError(f"region {text!r}: a box is four numbers "
                                    "min_lon,min_lat,max_lon,max_lat") from None
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
            raise engine.InputError(f"region {text!r}: the box has a non-finite number")
        if not (-180 <= x0 < x1 <= 180 and -90 <= y0 < y1 <= 90):
            raise engine.InputError(f"region {text!r}: need -180 <= min_lon < max_lon <= 180 and "
                                    "-90 <= min_lat < max_lat <= 90")
        return Region(bbox=(x0, y0, x1, y1))
    try:
        geom = shape(json.loads(text)) if text.startswith("{") else shapely.from_wkt(text)
    except Exception:  # noqa: BLE001 - json and shapely raise many kinds
        raise engine.InputError("region is not a box (min_lon,min_lat,max_lon,max_lat), a GeoJSON "
                                "polygon or a WKT polygon") from None
    if geom.is_empty or geom.geom_type not in ("Polygon", "MultiPolygon"):
        raise engine.InputError(f"region must be a polygon, got {geom.geom_type}")
    x0, y0, x1, y1 = geom.bounds
    if not (-180 <= x0 <= x1 <= 180 and -90 <= y0 <= y1 <= 90):
        raise engine.InputError(f"region {tuple(round(v, 4) for v in geom.bounds)} is outside "
                                "longitude -180..180 / latitude -90..90 (pan back to the main map copy)")
    if geom.area == 0:
        raise engine.InputError("region has no area")
    return Region(polygon=mapping(geom))


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
    start: dt.date | None = None
    end: dt.date | None = None
    region: str = ""
    k: int = 20

    def is_empty(self) -> bool:
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
                 ",".join(self.modalities), ",".join(self.sensors), str(self.start), str(self.end),
                 self.region.strip(), str(self.k)]
        return hashlib.sha1("\x1f".join(parts).encode()).hexdigest()[:16]

    def describe(self) -> str:
        """For the results header (markdown-safe)."""
        if self.mode == "image":
            return f"image {md(self.image_name or 'upload')}"
        if self.mode == "tile":
            return f"tiles like {md(self.tile_id.strip())}"
        return f"“{md(self.text.strip())}”"


@dataclass
class Outcome:
    results: object | None = None  # GeoDataFrame
    error: str | None = None
    seconds: float = 0.0  # engine time (query encoding + search)
    note: str = ""  # what the upload was read as


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
              "sensor": list(req.sensors) or None, "start": req.start, "end": req.end}
        if req.start and req.end and req.start > req.end:
            raise engine.InputError(f"the date range starts ({req.start}) after it ends ({req.end})")
        region = parse_region(req.region)
        if region is not None:
            kw.update(region.engine_kwargs())
        t0 = time.perf_counter()
        if req.mode == "text":
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
            res = idx.search(image=pixels, wavelengths=list(layout.wavelengths),
                             image_modality=layout.modality, **kw)
        out.seconds = time.perf_counter() - t0
        out.results = res
    except engine.UnknownSensorError as e:
        out.error = (f"{_clean(e)} — in this page: pick the Sensor, or type the band centres "
                     "(µm), in the sidebar")
    except engine.GLBError as e:
        out.error = _clean(e)
    return out


def _clean(e: Exception) -> str:
    """An engine message without the in-memory file names GDAL gives uploads."""
    return re.sub(r"'?/vsimem/[^\s']*'?", "the file", str(e))


# --- what the page shows -------------------------------------------------------------------
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!<>|~$])")


def md(text) -> str:
    """Text from users or files, made inert for Streamlit's markdown (no links, images, HTML)."""
    return _MD_SPECIAL.sub(r"\\\1", str(text))


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
        "score": results["score"].astype(float).round(4),
        "modality": results["modality"].astype(str),
        "sensor": results["sensor"].astype(str),
        "acquired": [_date(v) for v in results["acquired"]],
        "scene": results["scene"].astype(str),
        "tile_id": results["tile_id"].astype("int64").astype(str),
    })


def caption(row) -> str:
    """One result in a line (markdown-safe)."""
    return md(f"#{int(row['rank'])} · {float(row['score']):.3f} · {row['modality']} · "
              f"{row['sensor']} · {_date(row['acquired']) or 'no date'} · {row['scene']}")


def map_features(results, selected: str | None = None) -> dict:
    """Result footprints for the map (tile ids as strings)."""
    from shapely.geometry import mapping

    feats = []
    for row in results.itertuples(index=False):
        tid = str(int(row.tile_id))
        feats.append({"type": "Feature", "geometry": mapping(row.geometry),
                      "properties": {"tile_id": tid, "rank": int(row.rank),
                                     "score": round(float(row.score), 4),
                                     "modality": str(row.modality), "sensor": str(row.sensor),
                                     "scene": str(row.scene), "acquired": _date(row.acquired),
                                     "selected": tid == selected}})
    return {"type": "FeatureCollection", "features": feats}


def bounds(geoms) -> list[list[float]] | None:
    """[[south, west], [north, east]] of some footprints (Leaflet's order), None if none."""
    if geoms is None or len(geoms) == 0:
        return None
    x0, y0, x1, y1 = (float(v) for v in geoms.total_bounds)
    return [[y0, x0], [y1, x1]]


# --- exports -----------------------------------------------------------------------------
def to_geojson(results, req: Request | None = None) -> bytes:
    """The results as a GeoJSON FeatureCollection (same shape as `glb search --json`)."""
    out = results.copy()
    out["acquired"] = [_date(v) or None for v in out["acquired"]]
    out["tile_id"] = out["tile_id"].astype("int64")
    fc = json.loads(out.to_json(drop_id=True, na="null"))
    if req is not None:
        fc["query"] = {"mode": req.mode, "text": req.text.strip() or None,
                       "tile_id": req.tile_id.strip() or None, "image": req.image_name or None,
                       "modality": list(req.modalities) or None, "sensor": list(req.sensors) or None,
                       "start": str(req.start) if req.start else None,
                       "end": str(req.end) if req.end else None,
                       "region": req.region.strip() or None, "k": req.k}
    return json.dumps(fc).encode()


def to_csv(results) -> bytes:
    """The results as CSV: attributes, footprint centre (lon, lat) and footprint as WKT."""
    df = results.drop(columns="geometry").copy()
    df["acquired"] = [_date(v) for v in df["acquired"]]
    import shapely

    c = shapely.centroid(results.geometry.to_numpy())  # lon/lat centre of each small footprint
    df["lon"] = [round(float(p.x), 7) for p in c]
    df["lat"] = [round(float(p.y), 7) for p in c]
    df["footprint_wkt"] = [g.wkt for g in results.geometry]
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    return buf.getvalue().encode()
