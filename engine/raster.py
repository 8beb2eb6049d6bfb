"""Opening imagery files safely: every way a file can be bad becomes one RasterError line that
names the file. Used by the indexer for scenes and by the UI for uploaded query images."""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError, RasterError, UnknownSensorError
from .sensors import BandLayout, detect, explicit_layout

MAX_BANDS = 256
MAX_SCENE_PIXELS = 4_000_000_000       # 63k x 63k: a whole Sentinel-2 tile is 0.12e9
MAX_UPLOAD_BYTES = 32 * 1024 * 1024
SUPPORTED_KINDS = "uif"
MIN_TILE_FOR_EXTENT = 16                # a tile this many pixels wide must have a width
# Uploaded bytes may only be one of these: a VRT (or any format that references other files)
# would let an upload read the server's files or the network.
UPLOAD_DRIVERS = ["GTiff", "PNG", "JPEG"]
# A GeoTIFF declaring this many times more pixel bytes than the file holds (and over 1 GB) is
# corrupt or a decompression bomb: deflate tops out near 1000:1 on real imagery.
MAX_DECLARED_RATIO = 2000
MIN_BOMB_BYTES = 1 << 30


@dataclass
class RasterInfo:
    path: str
    count: int
    dtype: str
    width: int
    height: int
    crs: object | None
    transform: object
    nodata: float | None
    georeferenced: bool


def _rasterio():
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)
    return rasterio


def _gdal_path(p: Path):
    """GDAL takes paths as UTF-8 text: a file name that is not valid UTF-8 (bytes Python holds
    as surrogates) is opened through a symlink with a plain name in a private temporary folder.
    -> (path to open, folder to delete afterwards or None)."""
    try:
        str(p).encode("utf-8")
        return p, None
    except UnicodeEncodeError:
        import tempfile

        folder = tempfile.mkdtemp(prefix="glb-open-")
        suffix = "".join(c for c in p.suffix if c.isascii() and (c.isalnum() or c == "."))
        alias = Path(folder) / f"scene{suffix}"
        os.symlink(os.fsencode(p.resolve()), os.fsencode(alias))
        return alias, folder


@contextmanager
def open_raster(source: str | Path | bytes, *, name: str | None = None, remote: bool = False):
    """Yield (dataset, RasterInfo) or raise RasterError naming the file and what is wrong.
    remote: a `/vsicurl/` URL may be read (the indexer's STAC assets); anywhere else (a query
    image's path) such a string is just a file name that does not exist, so a query can never
    make the server fetch a URL."""
    rasterio = _rasterio()
    from rasterio.errors import RasterioError

    label = name or (str(source) if not isinstance(source, (bytes, bytearray)) else "upload")
    memfile = alias_dir = None
    if isinstance(source, (bytes, bytearray)):
        if len(source) == 0:
            raise RasterError(f"{label}: empty file (0 bytes)")
        if len(source) > MAX_UPLOAD_BYTES:
            raise RasterError(f"{label}: {len(source) / 1e6:.1f} MB is over the {MAX_UPLOAD_BYTES // 2**20} MB upload limit")
        from rasterio.io import MemoryFile

        memfile = MemoryFile(bytes(source))
        opener = lambda: memfile.open(driver=UPLOAD_DRIVERS)
        size = len(source)
    elif remote and isinstance(source, str) and source.startswith("/vsicurl/"):
        # a remote cloud-optimised GeoTIFF: GDAL reads it with HTTP range requests
        size = None
        opener = lambda: rasterio.open(source)
    else:
        p = Path(source)
        if not p.exists():
            raise RasterError(f"{label}: no such file")
        if p.is_dir():
            raise RasterError(f"{label}: is a folder, not a raster file")
        if not p.is_file():  # opening a FIFO blocks forever; a device never ends
            raise RasterError(f"{label}: not a regular file (a pipe, socket or device)")
        size = p.stat().st_size
        if size == 0:
            raise RasterError(f"{label}: empty file (0 bytes)")
        if not os.access(p, os.R_OK):
            raise RasterError(f"{label}: not readable (permission denied)")
        gdal_path, alias_dir = _gdal_path(p)
        opener = lambda: rasterio.open(gdal_path)
    try:
        try:
            ds = opener()
        except RasterioError as e:
            msg = str(e).split("\n")[0][:200]
            if memfile is not None:
                msg = f"uploads must be {', '.join(UPLOAD_DRIVERS)}"
            raise RasterError(f"{label}: not a readable raster ({msg})") from None
        with ds:
            if ds.driver == "VRT":
                _check_vrt(ds, label)
            info = _check(ds, label, size)
            yield ds, info
    finally:
        if alias_dir is not None:
            import shutil

            shutil.rmtree(alias_dir, ignore_errors=True)
        if memfile is not None:
            memfile.close()


REMOTE_PREFIXES = ("/vsicurl", "/vsis3", "/vsigs", "/vsiaz", "/vsiadls", "/vsioss", "/vsiswift",
                   "/vsiwebhdfs", "/vsihdfs", "http://", "https://", "ftp://")


def _check_vrt(ds, label: str) -> None:
    """A VRT's "raw raster band" reads any file as pixels (/etc/passwd, /dev/zero, a FIFO) and
    its sources may be on the network: refused (this GDAL build cannot switch raw bands off)."""
    files = [str(f) for f in (ds.files or [])]
    if any(f.lower().startswith(REMOTE_PREFIXES) for f in files):
        raise RasterError(f"{label}: not a readable raster (a VRT reading from the network)")
    for f in files:
        if f.lower().endswith(".vrt"):
            try:
                with open(f, "rb") as fh:
                    text = fh.read(16 * 2**20).lower()
            except OSError:
                continue
            if b"vrtrawrasterband" in text:
                raise RasterError(f"{label}: not a readable raster (VRT raw raster bands, which "
                                  f"read any file as pixels, are not supported)")


def _check(ds, label: str, size: int | None = None) -> RasterInfo:
    if ds.count < 1:
        raise RasterError(f"{label}: has no bands")
    if ds.count > MAX_BANDS:
        raise RasterError(f"{label}: {ds.count} bands; at most {MAX_BANDS} are supported")
    if ds.width < 1 or ds.height < 1:
        raise RasterError(f"{label}: has no pixels ({ds.width}x{ds.height})")
    if ds.width * ds.height > MAX_SCENE_PIXELS:
        raise RasterError(f"{label}: declares {ds.width}x{ds.height} pixels, over the "
                          f"{MAX_SCENE_PIXELS:.0e}-pixel limit")
    dtypes = set(ds.dtypes)
    if len(dtypes) != 1:
        raise RasterError(f"{label}: bands of different data types {sorted(dtypes)}")
    dtype = ds.dtypes[0]
    if np.dtype(dtype).kind not in SUPPORTED_KINDS:
        raise RasterError(f"{label}: data type {dtype} is not supported (integers or floats only)")
    declared = ds.width * ds.height * ds.count * np.dtype(dtype).itemsize
    if size and ds.driver == "GTiff" and declared > MIN_BOMB_BYTES and declared > MAX_DECLARED_RATIO * size:
        raise RasterError(f"{label}: declares {ds.width}x{ds.height}x{ds.count} {dtype} pixels "
                          f"({declared / 1e9:.1f} GB) in a {size / 1e6:.2f} MB file; refused as "
                          f"corrupt or a decompression bomb")
    georef = ds.crs is not None and not ds.transform.is_identity
    return RasterInfo(str(label), ds.count, dtype, ds.width, ds.height, ds.crs, ds.transform,
                      ds.nodata, georef)


def check_georeferenced(ds, info: RasterInfo) -> None:
    """Scenes need a CRS and a geotransform that lands on the Earth."""
    from rasterio.warp import transform_bounds

    if ds.crs is None:
        raise RasterError(f"{info.path}: has no CRS; a scene needs one to be placed on the map")
    if ds.transform.is_identity:
        raise RasterError(f"{info.path}: has no geotransform; a scene needs one to be placed on the map")
    t = ds.transform
    if not all(np.isfinite([t.a, t.b, t.c, t.d, t.e, t.f])) or t.a == 0 or t.e == 0:
        raise RasterError(f"{info.path}: geotransform {tuple(t)[:6]} is degenerate")
    # Pixels below the resolution of the coordinates (x + pixel == x) give tiles no extent.
    if t.c + t.a * MIN_TILE_FOR_EXTENT == t.c or t.f + t.e * MIN_TILE_FOR_EXTENT == t.f:
        raise RasterError(f"{info.path}: geotransform {tuple(t)[:6]} is degenerate (pixels too "
                          f"small to tell apart at that origin)")
    try:
        b = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds, densify_pts=21)
    except Exception as e:  # noqa: BLE001 - PROJ errors come in several types
        why = str(e).split("{")[0].strip(" '") or type(e).__name__  # not PROJ's JSON dump
        raise RasterError(f"{info.path}: its bounds cannot be put in longitude/latitude ({why[:120]}; "
                          f"CRS {' '.join(ds.crs.to_string().split())[:80]})") from None
    if not all(np.isfinite(b)) or not on_the_earth(b, ds.crs, t):
        raise RasterError(f"{info.path}: geotransform puts it outside the Earth (bounds {tuple(round(v, 3) for v in b)})")


def on_the_earth(b, crs, t) -> bool:
    """Lon/lat bounds that land on the Earth. Geographic grids may run past 180° (0..360
    grids, tiles across the antimeridian such as 179..181, half-pixel-shifted global grids
    -180.125..179.875, -90.125..90.125): up to one full turn wide and one pixel beyond a
    pole; their footprints are wrapped and cut (engine/geo.py)."""
    if b[1] >= -90.001 and b[3] <= 90.001 and b[0] >= -180.001 and b[2] <= 180.001:
        return True
    if crs is None or not crs.is_geographic:
        return False
    px, py = abs(t.a) + abs(t.b), abs(t.d) + abs(t.e)
    return (b[2] - b[0] <= 360.0 + px + 1e-9 and -540.0 <= b[0] and b[2] <= 540.0
            and b[1] >= -90.0 - py - 1e-9 and b[3] <= 90.0 + py + 1e-9)


def scene_bounds(b) -> tuple[float, float, float, float]:
    """A scene's lon/lat bounds as stored: within [-180, 180] x [-90, 90]; a scene whose
    longitudes run past 180° (geographic grids: 179..181, 0..360) gets the full longitude
    range when it crosses the antimeridian (its tiles' footprints are exact)."""
    x0, y0, x1, y1 = (float(v) for v in b)
    y0, y1 = max(-90.0, y0), min(90.0, y1)
    if x0 >= -180.0 and x1 <= 180.0:
        return x0, y0, x1, y1
    shift = 360.0 * np.floor((x0 + 180.0) / 360.0)
    x0, x1 = x0 - shift, x1 - shift
    if x1 <= 180.0:
        return x0, y0, x1, y1
    return -180.0, y0, 180.0, y1


def layout_of(ds, info: RasterInfo, override: dict | None = None) -> BandLayout:
    """Band layout from an override (sensor / wavelengths / modality) or the file's metadata."""
    override = {k: v for k, v in (override or {}).items() if v is not None}
    if override.get("sensor") or override.get("wavelengths"):
        lay = explicit_layout(info.count, sensor=override.get("sensor"),
                              wavelengths=override.get("wavelengths"),
                              modality=override.get("modality"),
                              value_scale=override.get("value_scale"), source=info.path)
        found = None
        try:
            found = _detect(ds, info)
        except UnknownSensorError:
            pass
        acquired = override.get("acquired") or (found.acquired if found else None)
        return BandLayout(lay.sensor, lay.modality, lay.wavelengths, lay.value_scale, acquired,
                          lay.evidence)
    lay = _detect(ds, info)
    if override.get("acquired"):
        lay = BandLayout(lay.sensor, lay.modality, lay.wavelengths, lay.value_scale,
                         override["acquired"], lay.evidence, lay.band_indexes)
    if override.get("modality") and override["modality"] != lay.modality:
        from .modalities import check_modality

        lay = BandLayout(lay.sensor, check_modality(override["modality"]), lay.wavelengths,
                         lay.value_scale, lay.acquired, lay.evidence, lay.band_indexes)
    return lay


def _detect(ds, info: RasterInfo) -> BandLayout:
    band_tags = []
    for i in range(1, ds.count + 1):
        tags = dict(ds.tags(i))
        try:
            tags.update(ds.tags(i, ns="IMAGERY"))
        except Exception:  # noqa: BLE001 - drivers without that domain
            pass
        band_tags.append(tags)
    return detect(info.path, count=ds.count, dtype=info.dtype,
                  descriptions=tuple(ds.descriptions), colorinterp=tuple(c.name for c in ds.colorinterp),
                  tags=dict(ds.tags()), band_tags=band_tags)


def read_window(ds, info: RasterInfo, window, indexes=None) -> tuple[np.ndarray, np.ndarray]:
    """-> (pixels (C,h,w) in the file's dtype, valid (h,w) bool). A pixel is invalid when any
    band is no-data, masked, NaN or infinite."""
    from rasterio.errors import RasterioError

    try:
        data = ds.read(indexes, window=window, masked=True)
    except RasterioError as e:
        raise RasterError(f"{info.path}: read failed at window {window} ({gdal_reason(e)})") from None
    arr = np.asarray(data.data)
    invalid = np.ma.getmaskarray(data).any(axis=0)
    if arr.dtype.kind == "f":
        invalid |= ~np.isfinite(arr).all(axis=0)
        if arr.dtype.itemsize > 4:  # the encoder computes in float32: 1e300 would become Inf
            with np.errstate(invalid="ignore"):
                invalid |= (np.abs(arr) > np.finfo(np.float32).max).any(axis=0)
    return arr, np.asarray(~invalid)


def gdal_reason(e: BaseException) -> str:
    """The first line of GDAL's own message: rasterio's "Read failed. See previous exception"
    keeps the reason in the exception it was raised from."""
    msgs: list[str] = []
    cur: BaseException | None = e
    while cur is not None and len(msgs) < 5:
        msgs.append(str(cur).splitlines()[0] if str(cur) else type(cur).__name__)
        cur = cur.__cause__ or cur.__context__
    useful = [m for m in msgs if "See previous exception" not in m] or msgs
    return useful[0][:160]


def fill_invalid(arr: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """A copy of `arr` (C,H,W) whose invalid pixels take their band's median over its valid
    ones (0 where a band has none), keeping the dtype (integers rounded): keeps statistics sane
    for the encoder. `valid` is True where a pixel is good, (H,W) for all bands or (C,H,W) per
    band. The one owner of this rule: the indexer, query images and training all use it."""
    out = np.array(arr, copy=True)
    if valid.ndim == 2:
        valid = np.broadcast_to(valid, arr.shape)
    if valid.all():
        return out
    for b in range(arr.shape[0]):
        bad = ~valid[b]
        if bad.any():
            good = arr[b][~bad]
            fill = np.median(good) if good.size else 0
            if arr.dtype.kind in "ui":
                fill = np.round(fill)
            out[b][bad] = np.asarray(fill).astype(arr.dtype)
    return out


def read_image(source: str | Path | bytes, *, name: str | None = None, sensor: str | None = None,
               wavelengths=None, modality: str | None = None) -> tuple[np.ndarray, BandLayout]:
    """A whole small image (a query upload) -> (pixels (C,H,W), layout). Needs the band layout
    from the file or from sensor / wavelengths."""
    with open_raster(source, name=name) as (ds, info):
        if info.width * info.height > 4096 * 4096:
            raise InputError(f"{info.path}: {info.width}x{info.height} is too large for a query image (max 4096x4096)")
        lay = layout_of(ds, info, {"sensor": sensor, "wavelengths": wavelengths, "modality": modality})
        arr, valid = read_window(ds, info, None, list(lay.band_indexes) if lay.band_indexes else None)
        if not valid.any():
            raise RasterError(f"{info.path}: every pixel is no-data")
        return fill_invalid(arr, valid), lay
