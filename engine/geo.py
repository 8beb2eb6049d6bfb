"""Geometry at the edges of the engine: validating query regions, footprints in EPSG:4326.

Boxes follow RFC 7946: (min_lon, min_lat, max_lon, max_lat); min_lon > max_lon means the box
crosses the antimeridian, and is split in two. A box that would be more than 180° wide that
way is far more likely swapped coordinates than a real request, so it is refused.
"""

from __future__ import annotations

import json
import math

import shapely
from shapely.geometry import MultiPolygon, box, mapping, shape
from shapely.geometry.base import BaseGeometry

from .errors import InputError

MAX_QUERY_VERTICES = 10_000


def parse_bbox(bbox) -> tuple[float, float, float, float]:
    if isinstance(bbox, str):
        parts = bbox.replace(" ", "").split(",")
    else:
        parts = list(bbox)
    if len(parts) != 4:
        raise InputError(f"bbox {bbox!r}: expected 4 numbers min_lon,min_lat,max_lon,max_lat")
    try:
        x0, y0, x1, y1 = (float(p) for p in parts)
    except (TypeError, ValueError):
        raise InputError(f"bbox {bbox!r}: expected 4 numbers min_lon,min_lat,max_lon,max_lat") from None
    for v in (x0, y0, x1, y1):
        if not math.isfinite(v):
            raise InputError(f"bbox {bbox!r}: values must be finite numbers")
    for name, v in (("min_lat", y0), ("max_lat", y1)):
        if not -90 <= v <= 90:
            raise InputError(f"bbox {name} {v} is outside [-90, 90]")
    for name, v in (("min_lon", x0), ("max_lon", x1)):
        if not -180 <= v <= 180:
            raise InputError(f"bbox {name} {v} is outside [-180, 180]")
    if y0 > y1:
        raise InputError(f"bbox min_lat {y0} > max_lat {y1}")
    if x0 > x1 and (x1 + 360 - x0) > 180:
        raise InputError(
            f"bbox min_lon {x0} > max_lon {x1}: as an antimeridian-crossing box it would be "
            f"{x1 + 360 - x0:g}° wide; swap them if that was not meant")
    return x0, y0, x1, y1


def bbox_geometry(bbox) -> BaseGeometry:
    x0, y0, x1, y1 = parse_bbox(bbox)
    if x0 > x1:
        return MultiPolygon([box(x0, y0, 180.0, y1), box(-180.0, y0, x1, y1)])
    return box(x0, y0, x1, y1)


def parse_region(region) -> BaseGeometry:
    """A polygon as shapely geometry, GeoJSON (dict or text) or WKT; in EPSG:4326."""
    if isinstance(region, BaseGeometry):
        geom = region
    elif isinstance(region, dict):
        try:
            g = region.get("geometry", region) if region.get("type") == "Feature" else region
            geom = shape(g)
        except Exception as e:  # noqa: BLE001 - shapely raises many kinds
            raise InputError(f"region is not valid GeoJSON: {e}") from None
    elif isinstance(region, str):
        text = region.strip()
        try:
            geom = parse_region(json.loads(text)) if text.startswith("{") else shapely.from_wkt(text)
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001
            raise InputError(f"region is neither GeoJSON nor WKT: {str(e)[:120]}") from None
    else:
        raise InputError(f"region must be a polygon (shapely, GeoJSON or WKT), got {type(region).__name__}")
    if geom.is_empty or geom.geom_type not in ("Polygon", "MultiPolygon"):
        raise InputError(f"region must be a non-empty Polygon or MultiPolygon, got {geom.geom_type}")
    if shapely.get_num_coordinates(geom) > MAX_QUERY_VERTICES:
        raise InputError(f"region has more than {MAX_QUERY_VERTICES} vertices")
    minx, miny, maxx, maxy = geom.bounds
    if not (-180 <= minx <= maxx <= 180 and -90 <= miny <= maxy <= 90):
        raise InputError(f"region bounds {geom.bounds} are outside longitude/latitude range")
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    return geom


def footprint_4326(crs, bounds: tuple[float, float, float, float]) -> BaseGeometry:
    """A window's bounds in `crs` -> its footprint in EPSG:4326, densified (edges of a UTM
    square are curves in lon/lat) and cut at the antimeridian when it crosses it."""
    from rasterio.warp import transform_geom

    x0, y0, x1, y1 = bounds
    x0, x1 = min(x0, x1), max(x0, x1)  # a flipped geotransform gives left > right
    y0, y1 = min(y0, y1), max(y0, y1)
    step = max(x1 - x0, y1 - y0) / 8.0
    ring = shapely.segmentize(box(x0, y0, x1, y1), step) if step > 0 else box(x0, y0, x1, y1)
    g = transform_geom(crs, "EPSG:4326", mapping(ring), antimeridian_cutting=True,
                       antimeridian_offset=10.0, precision=-1)
    geom = shape(g)
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    return geom


def to_geojson(geom: BaseGeometry) -> dict:
    return mapping(geom)
