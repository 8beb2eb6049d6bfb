"""Reader: files -> batches of tiles ready for the encoder (clip-retrieval's reader stage).

`UnitReader(units, encoder, options)` is the stage the runner takes: called with a stop event
it yields, per work unit (sources.plan_work), that unit's `TileBatch`es and then one `UnitDone`
carrying each file's record or error. `read_unit` reads one unit on its own (what a distributor
would run elsewhere). A work unit is one scene, or a group of chips. Scenes are read a strip of tiles at a time
(never the whole raster), tiles that are mostly no-data are dropped, the rest are filled,
preprocessed for the encoder, given an EPSG:4326 footprint and a thumbnail.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from shapely.geometry import Polygon, box

from engine.errors import GLBError, RasterError
from engine.geo import densified_ring, footprint_4326, needs_more_points
from engine.raster import (
    check_georeferenced,
    fill_invalid,
    gdal_reason,
    layout_of,
    open_raster,
    read_window,
    scene_bounds,
)
from engine.render import jpeg_bytes, png_bytes, stretch_limits, to_rgb8
from engine.sensors import BandLayout
from engine.store.layout import display_text
from engine.store.writer import scene_id_for, tile_id_for

from .sources import Source, content_change, file_fingerprint, sha256_of
from .tiling import MIN_TILE, plan_windows

THUMB_SIDE = 128
OVERVIEW_SIDE = 512


@dataclass
class TileOptions:
    size: int = 64
    stride: int = 64
    max_nodata: float = 0.5          # drop tiles with more than this fraction of no-data pixels
    batch_size: int = 64


@dataclass
class TileBatch:
    unit: int
    layout: BandLayout
    x: torch.Tensor                  # (n, C, S, S) preprocessed
    wavelengths: torch.Tensor
    tiles: list[dict]                # TILE_SCHEMA rows
    thumbs: list[bytes]
    scene_keys: list[str]            # path of the scene each tile belongs to
    read_s: float = 0.0              # seconds the reader spent on this batch (set by UnitReader)


@dataclass
class SceneResult:
    source: Source
    record: dict | None = None       # SCENE_SCHEMA row, None when it failed
    error: str | None = None
    overview: dict | None = None
    n_tiles: int = 0
    restamp: dict | None = None      # same content, new size/mtime: update the record only


@dataclass
class UnitDone:
    unit: int
    scenes: list[SceneResult] = field(default_factory=list)


def display_name(path: Path) -> str:
    return display_text("/".join(path.parts[-2:]))  # a name that is not UTF-8: its bytes as \xNN


def _scene_record(source: Source, sha: str, lay: BandLayout, crs: str | None, bounds) -> dict:
    size, mtime = file_fingerprint(source)
    return {
        "scene_id": scene_id_for(source.key, sha), "path": source.key,
        "scene": source.display or display_name(source.path), "kind": source.kind, "size": size,
        "mtime_ns": mtime, "sha256": sha, "sensor": lay.sensor, "modality": lay.modality,
        "acquired": lay.acquired, "n_tiles": 0, "segment": None, "crs": crs,
        "evidence": lay.evidence,
        "minx": bounds[0], "miny": bounds[1], "maxx": bounds[2], "maxy": bounds[3],
        "indexed_at": None,
        "stac_collection": (source.stac or {}).get("collection") or None,
        "stac_item": (source.stac or {}).get("item"),
    }


def _tile_row(scene_key: str, record: dict, lay: BandLayout, win, geom,
              nodata_frac: float) -> dict:
    x0, y0, x1, y1 = geom.bounds
    return {
        "tile_id": tile_id_for(scene_key, win.row_off, win.col_off, win.height, win.width),
        "scene_id": record["scene_id"], "scene": record["scene"], "modality": lay.modality,
        "sensor": lay.sensor, "stac_collection": record["stac_collection"],
        "stac_item": record["stac_item"],
        "acquired": lay.acquired, "row_off": win.row_off, "col_off": win.col_off,
        "height": win.height, "width": win.width, "minx": x0, "miny": y0, "maxx": x1, "maxy": y1,
        "geometry": geom.wkb, "nodata_frac": float(nodata_frac),
    }


def _overview(ds, info, lay: BandLayout, indexes) -> tuple[dict, list]:
    """A decimated read (GDAL reads block by block; only the small output is held) rendered
    to RGBA, with the scene's corners in lon/lat for the map."""
    from rasterio.enums import Resampling
    from rasterio.warp import transform as warp_transform

    scale = min(1.0, OVERVIEW_SIDE / max(info.width, info.height))
    oh, ow = max(1, round(info.height * scale)), max(1, round(info.width * scale))
    from rasterio.errors import RasterioError

    try:
        data = ds.read(indexes, out_shape=(len(indexes) if indexes else info.count, oh, ow),
                       masked=True, resampling=Resampling.nearest)
    except RasterioError as e:  # truncated or corrupt data: one line naming the file
        raise RasterError(f"{info.path}: read failed ({gdal_reason(e)})") from None
    arr = np.asarray(data.data)
    valid = ~np.ma.getmaskarray(data).any(axis=0)
    if arr.dtype.kind == "f":
        valid &= np.isfinite(arr).all(axis=0)
    limits = stretch_limits(np.where(valid, arr, 0) if valid.any() else arr, lay.wavelengths,
                            lay.modality, valid)
    rgb = to_rgb8(arr, lay.wavelengths, lay.modality, valid, limits)
    b = ds.bounds
    xs, ys = [b.left, b.right, b.right, b.left], [b.top, b.top, b.bottom, b.bottom]
    lons, lats = warp_transform(ds.crs, "EPSG:4326", xs, ys)
    corners = [[round(x, 7), round(y, 7)] for x, y in zip(lons, lats)]  # TL, TR, BR, BL
    return {"png": png_bytes(rgb, alpha=valid), "corners": corners}, limits


def read_scene(unit: int, source: Source, encoder, opts: TileOptions, result: SceneResult,
               sha: str | None = None):
    """Yield TileBatch for one scene; fill `result` (record or error)."""
    import json

    from rasterio.warp import transform_bounds

    with open_raster(source.key, name=source.label, remote=source.remote is not None) as (ds, info):
        check_georeferenced(ds, info)
        lay = layout_of(ds, info, source.override)
        indexes = list(lay.band_indexes) if lay.band_indexes else None
        if min(info.width, info.height) < MIN_TILE:
            raise RasterError(f"{source.label}: {info.width}x{info.height} pixels is smaller than "
                              f"the {MIN_TILE}-pixel minimum tile side")
        sha = sha or sha256_of(source)
        bounds = scene_bounds(transform_bounds(ds.crs, "EPSG:4326", *ds.bounds, densify_pts=21))
        record = _scene_record(source, sha, lay, ds.crs.to_string(), bounds)
        scene_key = f"{source.key}|{sha}"
        overview, limits = _overview(ds, info, lay, indexes)
        overview = {"scene_id": record["scene_id"], "png": overview["png"],
                    "corners": json.dumps(overview["corners"])}
        pending_x, pending_tiles, pending_thumbs = [], [], []
        n_tiles = 0

        def flush():
            x, wl = encoder.preprocess(np.stack(pending_x), lay.wavelengths, lay.modality,
                                       lay.value_scale)
            batch = TileBatch(unit, lay, x, wl, list(pending_tiles), list(pending_thumbs),
                              [source.key] * len(pending_tiles))
            pending_x.clear(), pending_tiles.clear(), pending_thumbs.clear()
            return batch

        from rasterio.windows import Window

        n_windows = _n_windows(info.width, opts.size, opts.stride) * _n_windows(info.height, opts.size, opts.stride)
        if n_windows > MAX_TILES_PER_SCENE:
            raise RasterError(f"{source.label}: {info.width}x{info.height} pixels at tile size "
                              f"{opts.size} and stride {opts.stride} is {n_windows:,} tiles, over the "
                              f"{MAX_TILES_PER_SCENE:,} limit; use a larger --stride")
        pixel_bytes = (len(indexes) if indexes else info.count) * np.dtype(info.dtype).itemsize
        for row in plan_windows(info.width, info.height, opts.size, opts.stride):
            for group in _strip_groups(row, pixel_bytes):
                # A strip of tiles per read, cut into column groups when a whole strip of a
                # wide, many-band scene would not fit in MAX_STRIP_BYTES.
                r0, h, c0 = group[0].row_off, group[0].height, group[0].col_off
                c1 = max(w.col_off + w.width for w in group)
                strip, strip_valid = read_window(ds, info, Window(c0, r0, c1 - c0, h), indexes)
                kept = []
                for win in group:
                    valid = strip_valid[:, win.col_off - c0:win.col_off - c0 + win.width]
                    nodata = 1.0 - float(valid.mean())
                    if nodata <= opts.max_nodata:
                        kept.append((win, valid, nodata))
                geoms = footprints_4326(ds.crs, [ds.window_bounds(Window(w.col_off, w.row_off, w.width, w.height))
                                                 for w, _, _ in kept])
                for (win, valid, nodata), geom in zip(kept, geoms):
                    arr = fill_invalid(strip[:, :, win.col_off - c0:win.col_off - c0 + win.width], valid)
                    pending_x.append(arr)
                    pending_tiles.append(_tile_row(scene_key, record, lay, win, geom, nodata))
                    rgb = to_rgb8(arr, lay.wavelengths, lay.modality, valid, limits)
                    pending_thumbs.append(jpeg_bytes(rgb, THUMB_SIDE, valid=valid if nodata else None))
                    n_tiles += 1
                    if len(pending_x) >= opts.batch_size:
                        yield flush()
        if pending_x:
            yield flush()
        result.record, result.overview, result.n_tiles = record, overview, n_tiles


MAX_STRIP_BYTES = 256 * 2**20
MAX_TILES_PER_SCENE = 10_000_000


def _n_windows(n: int, size: int, stride: int) -> int:
    return 1 if n <= size else (n - size) // stride + 1 + ((n - size) % stride != 0)


def _strip_groups(row: list, pixel_bytes: int) -> list[list]:
    """Consecutive windows of one tile row, grouped so one read stays under MAX_STRIP_BYTES."""
    groups, cur = [], []
    for win in row:
        if cur:
            cols = win.col_off + win.width - cur[0].col_off
            if cols * win.height * pixel_bytes > MAX_STRIP_BYTES:
                groups.append(cur)
                cur = []
        cur.append(win)
    if cur:
        groups.append(cur)
    return groups


def footprints_4326(crs, bounds_list: list[tuple]) -> list:
    """`engine.geo.footprint_4326` for many windows of one scene with one GDAL transform call
    (the per-tile call was the reader's largest cost): the same densified rings, their points
    moved together. A ring that leaves [-180, 180], would cross the antimeridian, bends hard
    (near a pole) or comes out invalid takes footprint_4326 itself (which handles all of it)."""
    from rasterio.warp import transform

    if not bounds_list:
        return []
    rings = [densified_ring(b) for b in bounds_list]
    sizes = [len(r) for r in rings]
    xy = np.concatenate(rings)
    lon, lat = (np.asarray(v) for v in transform(crs, "EPSG:4326", xy[:, 0], xy[:, 1]))
    out, start = [], 0
    for bounds, n in zip(bounds_list, sizes):
        lo, la = lon[start:start + n], lat[start:start + n]
        start += n
        geom = None
        if np.isfinite(lo).all() and np.isfinite(la).all() and lo.min() >= -180 and lo.max() <= 180 \
                and lo.max() - lo.min() <= 180 and not needs_more_points(lo, la):
            geom = Polygon(np.column_stack([lo, la]))
        out.append(geom if geom is not None and geom.is_valid else footprint_4326(crs, bounds))
    return out


def chip_footprint(lon: float, lat: float, side_m: float):
    half = side_m / 2.0
    dlat = half / 111_320.0
    dlon = half / (111_320.0 * max(math.cos(math.radians(lat)), 1e-6))
    return box(max(-180.0, lon - dlon), max(-90.0, lat - dlat), min(180.0, lon + dlon), min(90.0, lat + dlat))


def read_chip(source: Source, sha: str | None = None):
    """One chip file -> (pixels, valid, layout, scene record, tile row, thumbnail, overview)."""
    import json

    from .tiling import TileWindow

    with open_raster(source.path) as (ds, info):
        lay = layout_of(ds, info, source.override)
        indexes = list(lay.band_indexes) if lay.band_indexes else None
        if min(info.width, info.height) < MIN_TILE:
            raise RasterError(f"{source.path}: {info.width}x{info.height} pixels is smaller than "
                              f"the {MIN_TILE}-pixel minimum tile side")
        arr, valid = read_window(ds, info, None, indexes)
    if not valid.any():
        raise RasterError(f"{source.path}: every pixel is no-data")
    arr = fill_invalid(arr, valid)
    lon, lat, side = source.location
    geom = chip_footprint(lon, lat, side)
    sha = sha or sha256_of(source.path)
    record = _scene_record(source, sha, lay, "EPSG:4326", geom.bounds)
    win = TileWindow(0, 0, arr.shape[1], arr.shape[2])
    tile = _tile_row(f"{source.path}|{sha}", record, lay, win, geom, 1.0 - float(valid.mean()))
    rgb = to_rgb8(arr, lay.wavelengths, lay.modality, valid)
    thumb = jpeg_bytes(rgb, THUMB_SIDE)
    record["n_tiles"] = 1
    # the map overlay stays PNG (the UI's scene pictures are PNG files); a chip is small
    overview = {"scene_id": record["scene_id"], "png": png_bytes(rgb, THUMB_SIDE),
                "corners": json.dumps([[geom.bounds[0], geom.bounds[3]], [geom.bounds[2], geom.bounds[3]],
                                       [geom.bounds[2], geom.bounds[1]], [geom.bounds[0], geom.bounds[1]]])}
    return arr, valid, lay, record, tile, thumb, overview


def read_chips(unit: int, sources: list[Source], encoder, opts: TileOptions,
               results: list[SceneResult], shas: list[str | None]):
    """Yield TileBatch for a group of chips, batched by band layout; per-chip errors go to
    that chip's result only."""
    groups: dict[tuple, list] = {}
    for src, res, sha in zip(sources, results, shas):
        try:
            arr, valid, lay, record, tile, thumb, overview = read_chip(src, sha)
        except GLBError as e:
            res.error = str(e)
            continue
        except Exception as e:  # noqa: BLE001 - a broken file must not stop the others
            res.error = f"{src.path}: unexpected {type(e).__name__}: {str(e)[:160]}"
            continue
        res.record, res.overview, res.n_tiles = record, overview, 1
        key = (lay.wavelengths, lay.modality, lay.value_scale, arr.shape[0])
        groups.setdefault(key, []).append((arr, lay, tile, thumb, str(src.path)))
    for (_, _, _, _), items in groups.items():
        lay = items[0][1]
        for i in range(0, len(items), opts.batch_size):
            chunk = items[i:i + opts.batch_size]
            by_size: dict[int, list[int]] = {}
            xs = []
            for j, (arr, *_) in enumerate(chunk):  # chips differ in size: the encoder picks
                x, wl = encoder.preprocess(arr, lay.wavelengths, lay.modality, lay.value_scale)
                xs.append(x)                       # one of its input sizes for each
                by_size.setdefault(x.shape[-1], []).append(j)
            for size, rows in by_size.items():
                want = encoder.input_size(*chunk[rows[0]][0].shape[-2:])
                if size != want:  # the encoder's contract, not the data's
                    raise RuntimeError(f"the encoder preprocessed a chip to {size} pixels, "
                                       f"not its input size {want}")
                yield TileBatch(unit, lay, torch.cat([xs[j] for j in rows]), wl,
                                [chunk[j][2] for j in rows], [chunk[j][3] for j in rows],
                                [chunk[j][4] for j in rows])


def read_unit(unit: int, items: list[tuple[Source, dict | None]], encoder,
              opts: TileOptions) -> Iterator[TileBatch | UnitDone]:
    """One work unit: its TileBatches, then its UnitDone. A file that cannot be read becomes
    that file's error (never an exception); a file whose content is unchanged is re-stamped."""
    results = [SceneResult(src) for src, _ in items]
    live, shas = [], []
    for (src, prev), r in zip(items, results):
        change = content_change(src, prev)
        r.error, r.restamp = change.error, change.restamp
        if change.sha is not None:
            live.append((src, r))
            shas.append(change.sha)
    if items and items[0][0].kind == "chip":
        yield from read_chips(unit, [s for s, _ in live], encoder, opts, [r for _, r in live], shas)
    elif live:
        src, r = live[0]
        try:
            yield from read_scene(unit, src, encoder, opts, r, shas[0])
        except GLBError as e:
            r.error = str(e)
        except Exception as e:  # noqa: BLE001 - a broken file must not stop the run
            r.error = f"{src.path}: unexpected {type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]}"
    yield UnitDone(unit, results)


class UnitReader:
    """The reader stage: every unit in order, each batch stamped with its read time."""

    def __init__(self, units: list[list[tuple[Source, dict | None]]], encoder, opts: TileOptions):
        self.units, self.encoder, self.opts = units, encoder, opts

    def __call__(self, stop: threading.Event) -> Iterator[TileBatch | UnitDone]:
        for u, items in enumerate(self.units):
            if stop.is_set():
                return
            t0 = time.perf_counter()
            for item in read_unit(u, items, self.encoder, self.opts):
                if isinstance(item, TileBatch):
                    item.read_s = time.perf_counter() - t0
                yield item
                t0 = time.perf_counter()
