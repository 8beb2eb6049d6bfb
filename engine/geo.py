"""Geometry at the edges of the engine: validating query regions, footprints in EPSG:4326.

One rule for the antimeridian, everywhere (engine, CLI, UI region box): **a region that
crosses it is read the short way round.**
- Boxes follow RFC 7946: (min_lon, min_lat, max_lon, max_lat); min_lon > max_lon means the
  box crosses the antimeridian, and is split in two. A box that would be more than 180° wide
  that way is far more likely swapped coordinates than a real request, so it is refused.
- Polygon edges (GeoJSON or WKT) never span 180° of longitude or more: an edge whose ends
  differ by more than 180° crosses the antimeridian, so POLYGON((170 -10,-170 -10,-170 10,
  170 10,170 -10)) is the 20°-wide band across it, like the box 170,-10,-170,10. A region
  wider than 180° needs vertices in between (every edge shorter than 180°). Longitudes stay
  within [-180, 180] (write -170, not 190).
Footprints are made the same way (`lonlat_polygon`): a tile's edges are densified in its own
CRS, moved to lon/lat, unwrapped, cut at the antimeridian, and a ring that goes round a pole
becomes a polar cap.
"""

from __future__ import annotations

import json
import math

import numpy as np
import shapely
import shapely.affinity
from shapely.geometry import MultiPolygon, Polygon, box, mapping, shape
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
    geom = short_way_round(geom)
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    return geom


def short_way_round(geom: BaseGeometry) -> BaseGeometry:
    """A query polygon under the module's rule: edges spanning more than 180° of longitude
    cross the antimeridian. Polygons with no such edge are returned as they are."""
    parts = list(geom.geoms) if geom.geom_type == "MultiPolygon" else [geom]
    out, changed = [], False
    for poly in parts:
        x = np.asarray(poly.exterior.coords)[:, 0]
        if (np.abs(np.diff(x)) <= 180).all() and x.min() >= -180 and x.max() <= 180:
            out.append(poly)
            continue
        changed = True
        shell = lonlat_polygon(*np.asarray(poly.exterior.coords).T)
        for hole in poly.interiors:
            shell = shell.difference(lonlat_polygon(*np.asarray(hole.coords).T))
        out.append(shell)
    if not changed:
        return geom
    merged = shapely.union_all(out)
    if merged.is_empty or merged.geom_type not in ("Polygon", "MultiPolygon"):
        raise InputError("region has no area once read the short way round the antimeridian")
    return merged


def _wrap180(d: np.ndarray) -> np.ndarray:
    """Longitude differences into (-180, 180]."""
    return d - 360.0 * np.ceil((d - 180.0) / 360.0)


def lonlat_polygon(lon, lat) -> BaseGeometry:
    """A ring of lon/lat points (any longitudes; consecutive points joined the short way
    round) -> a valid Polygon/MultiPolygon within [-180, 180] x [-90, 90]: cut at the
    antimeridian, and closed over the pole when the ring goes round one."""
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.clip(np.asarray(lat, dtype=np.float64), -90.0, 90.0)
    if len(lon) > 1 and lon[0] == lon[-1] and lat[0] == lat[-1]:
        lon, lat = lon[:-1], lat[:-1]
    # a vertex on a pole has no longitude: it becomes the pole seen from both neighbours
    at_pole = np.abs(lat) >= 90.0 - 1e-9
    if at_pole.any() and not at_pole.all():
        px: list[float] = []
        py: list[float] = []
        n = len(lon)
        for i in range(n):
            if at_pole[i]:
                px += [lon[(i - 1) % n], lon[(i + 1) % n]]
                py += [lat[i], lat[i]]
            else:
                px.append(lon[i])
                py.append(lat[i])
        lon, lat = np.asarray(px), np.asarray(py)
    x = lon[0] + np.concatenate([[0.0], np.cumsum(_wrap180(np.diff(lon)))])
    winding = x[-1] + _wrap180(lon[0] - lon[-1]) - x[0]
    if abs(winding) > 180:  # goes round a pole: close it over the pole
        if winding < 0:
            x, lat = x[::-1], lat[::-1]
        pole = 90.0 if lat.mean() > 0 else -90.0
        xs = np.concatenate([x, [x[0] + 360.0, x[0] + 360.0, x[0]]])
        ys = np.concatenate([lat, [lat[0], pole, pole]])
    else:
        xs, ys = x, lat
    poly = Polygon(np.column_stack([xs, ys]))
    if not poly.is_valid:
        poly = shapely.make_valid(poly)
    lo, hi = math.floor((poly.bounds[0] + 180.0) / 360.0), math.floor((poly.bounds[2] + 180.0) / 360.0)
    pieces = []
    for k in range(lo, hi + 1):
        cut = poly.intersection(box(-180.0 + 360.0 * k, -90.0, 180.0 + 360.0 * k, 90.0))
        if not cut.is_empty:
            pieces.append(shapely.affinity.translate(cut, xoff=-360.0 * k))
    polys = [g for p in pieces for g in (p.geoms if hasattr(p, "geoms") else [p])
             if g.geom_type == "Polygon" and g.area > 0]
    if not polys:
        return Polygon()
    return polys[0] if len(polys) == 1 else shapely.union_all(polys)


EDGE_POINTS = 8           # points per tile edge; POLAR_EDGE_POINTS where edges curve hard
POLAR_EDGE_POINTS = 64    # (near a pole, or a tile spanning many degrees of longitude)
POLAR_LAT = 75.0


def densified_ring(bounds, per_edge: int = EDGE_POINTS) -> np.ndarray:
    """The outline of a window's bounds in its own CRS, `per_edge` points an edge."""
    x0, y0, x1, y1 = bounds
    x0, x1 = min(x0, x1), max(x0, x1)  # a flipped geotransform gives left > right
    y0, y1 = min(y0, y1), max(y0, y1)
    t = np.arange(per_edge) / per_edge
    xs = np.concatenate([x0 + (x1 - x0) * t, np.full(per_edge, x1), x1 - (x1 - x0) * t, np.full(per_edge, x0)])
    ys = np.concatenate([np.full(per_edge, y0), y0 + (y1 - y0) * t, np.full(per_edge, y1), y1 - (y1 - y0) * t])
    return np.column_stack([xs, ys])


def needs_more_points(lon: np.ndarray, lat: np.ndarray) -> bool:
    """Edges of this ring bend too much in lon/lat for EDGE_POINTS (near a pole, or spanning
    tens of degrees of longitude)."""
    span = np.abs(_wrap180(np.diff(np.append(lon, lon[0])))).max() if len(lon) else 0
    return bool(np.abs(lat).max() > POLAR_LAT or span > 5.0)


def footprint_4326(crs, bounds: tuple[float, float, float, float]) -> BaseGeometry:
    """A window's bounds in `crs` -> its footprint in EPSG:4326: the edges densified in the
    source CRS (edges of a UTM square are curves in lon/lat; near a pole, strongly), then
    `lonlat_polygon` (unwrapped, cut at the antimeridian, closed over a pole it contains).
    Works for geographic CRSs whose longitudes run past 180 (0..360 grids, -180.125..179.875)."""
    from rasterio.warp import transform

    per_edge = EDGE_POINTS
    while True:
        xy = densified_ring(bounds, per_edge)
        lon, lat = (np.asarray(v) for v in transform(crs, "EPSG:4326", xy[:, 0], xy[:, 1]))
        if per_edge >= POLAR_EDGE_POINTS or not np.isfinite(lat).all() or not needs_more_points(lon, lat):
            break
        per_edge = POLAR_EDGE_POINTS
    ok = np.isfinite(lon) & np.isfinite(lat)
    if ok.sum() < 3:
        return Polygon()
    return lonlat_polygon(lon[ok], lat[ok])


def to_geojson(geom: BaseGeometry) -> dict:
    return mapping(geom)
