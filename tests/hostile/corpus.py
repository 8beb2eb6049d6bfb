"""The hostile input corpus, generated at test time (nothing binary is committed).

FILES: bad imagery for `glb index`. Each case writes its file(s) into a folder and says what
must happen: "fail" with a substring of the one-line reason, "empty" (recorded, 0 tiles: every
tile is no-data), or "ok" (odd but valid: indexed, every vector finite).

QUERIES: bad arguments for the process that serves searches: each must raise a GLBError (an
InputError or RasterError: one line, naming the argument) or, for the valid-but-odd ones,
answer correctly. None may change the index.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from conftest import write_tif

RNG_SEED = 7


@dataclass
class FileCase:
    name: str
    what: str
    make: Callable[[Path], Path]
    outcome: str                      # "fail" | "empty" | "ok"
    match: str | None = None          # substring of the failure line
    override: dict = field(default_factory=dict)   # like --sensor / --wavelengths
    posix_only: bool = False


_write_tif = write_tif  # one GeoTIFF writer for all tests (tests/conftest.py)


def _rgb(n=64, seed=RNG_SEED):
    return np.random.default_rng(seed).integers(0, 255, (3, n, n), dtype=np.uint8)


def _valid_bytes(tmp: Path, **kw) -> bytes:
    p = _write_tif(tmp / ".src.tif", _rgb(), photometric="RGB", **kw)
    raw = p.read_bytes()
    p.unlink()
    return raw


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _cog(d: Path, name: str, size=512) -> Path:
    """A noisy (incompressible) tiled RGB COG: IFD first, then the tiles."""
    import rasterio.shutil

    src = _write_tif(d / f".{name}.src.tif", _rgb(size), photometric="RGB", tiled=True,
                     blockxsize=128, blockysize=128, compress="deflate")
    dst = d / name
    rasterio.shutil.copy(src, dst, driver="COG", blocksize=128, compress="deflate", overviews="none")
    src.unlink()
    return dst


def _truncated_cog(d: Path) -> Path:
    p = _cog(d, "truncated_cog.tif")
    raw = p.read_bytes()
    p.write_bytes(raw[: int(len(raw) * 0.6)])  # header and the first tiles intact, the rest gone
    return p


def _bitflipped(d: Path) -> Path:
    p = _cog(d, "bitflipped.tif")
    raw = bytearray(p.read_bytes())
    rng = np.random.default_rng(RNG_SEED)
    start = len(raw) // 2
    for i in rng.integers(start, len(raw), 400):  # corrupt the compressed tiles of the lower half
        raw[int(i)] ^= 0xFF
    p.write_bytes(bytes(raw))
    return p


def _ifd_entries(raw: bytes):
    assert raw[:4] == b"II*\x00", "little-endian classic TIFF expected"
    off = struct.unpack_from("<I", raw, 4)[0]
    n = struct.unpack_from("<H", raw, off)[0]
    for k in range(n):
        e = off + 2 + 12 * k
        tag, typ, count = struct.unpack_from("<HHI", raw, e)
        yield e, tag, typ, count


def _lying_dimensions(d: Path) -> Path:
    """A small tiled GeoTIFF whose header claims 50000 x 50000 pixels."""
    p = _write_tif(d / "lying_dimensions.tif", _rgb(256), photometric="RGB", tiled=True,
                   blockxsize=128, blockysize=128, compress="deflate")
    raw = bytearray(p.read_bytes())
    for e, tag, typ, count in _ifd_entries(bytes(raw)):
        if tag in (256, 257):
            fmt = "<H" if typ == 3 else "<I"
            struct.pack_into(fmt, raw, e + 8, 50000)
    p.write_bytes(bytes(raw))
    return p


def _sparse_giant(d: Path) -> Path:
    """60000 x 60000 declared, no tile written (GDAL's SPARSE_OK): 3.6 GB of pixels in 0.4 MB."""
    import rasterio
    from rasterio.transform import from_origin

    p = d / "sparse_giant.tif"
    with rasterio.open(p, "w", driver="GTiff", count=1, width=60000, height=60000, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(500000, 5000000, 10, 10), tiled=True,
                       sparse_ok=True, compress="deflate"):
        pass
    return p


def _header_only(d: Path) -> Path:
    return _write(d / "header_only.tif", _valid_bytes(d)[:8])


def _random_ifd(d: Path) -> Path:
    rng = np.random.default_rng(RNG_SEED)
    return _write(d / "random_ifd.tif", b"II*\x00\x08\x00\x00\x00" + bytes(rng.integers(0, 255, 3000, dtype=np.uint8)))


def _bigtiff_garbage(d: Path) -> Path:
    return _write(d / "bigtiff_garbage.tif", b"II+\x00\x08\x00\x00\x00" + b"\xff" * 64)


def _png_magic(d: Path) -> Path:
    return _write(d / "png_magic.tif", b"\x89PNG\r\n\x1a\n" + _valid_bytes(d)[8:])


def _pdf(d: Path) -> Path:
    return _write(d / "document.tif", b"%PDF-1.7\n" + b"1 0 obj << >> endobj\n" * 50)


def _html(d: Path) -> Path:
    return _write(d / "error_page.tif", b"<html><body><h1>404 Not Found</h1></body></html>\n")


def _zero(d: Path) -> Path:
    return _write(d / "zero_bytes.tif", b"")


def _fifo(d: Path) -> Path:
    p = d / "named_pipe.tif"
    os.mkfifo(p)
    return p


def _symlink_passwd(d: Path) -> Path:
    p = d / "passwd_link.tif"
    p.symlink_to("/etc/passwd")
    return p


def _dangling(d: Path) -> Path:
    p = d / "dangling_link.tif"
    p.symlink_to(d / "no-such-target.tif")
    return p


def _newline_name(d: Path) -> Path:
    return _write(d / "new\nline\x1b[31m.tif", b"not an image\n")


def _vrt_raw_passwd(d: Path) -> Path:
    """A VRT that would read /etc/passwd as pixels (GDAL's raw raster band), georeferenced."""
    xml = ('<VRTDataset rasterXSize="64" rasterYSize="16"><SRS>EPSG:4326</SRS>'
           '<GeoTransform>10, 0.001, 0, 50, 0, -0.001</GeoTransform>'
           '<VRTRasterBand dataType="Byte" band="1" subClass="VRTRawRasterBand">'
           '<SourceFilename relativetoVRT="0">/etc/passwd</SourceFilename><ImageOffset>0</ImageOffset>'
           '<PixelOffset>1</PixelOffset><LineOffset>64</LineOffset></VRTRasterBand></VRTDataset>')
    return _write(d / "raw_passwd.vrt", xml.encode())


def _vrt_dev_zero_giant(d: Path) -> Path:
    xml = ('<VRTDataset rasterXSize="60000" rasterYSize="60000"><SRS>EPSG:32633</SRS>'
           '<GeoTransform>500000, 10, 0, 5000000, 0, -10</GeoTransform>'
           '<VRTRasterBand dataType="Byte" band="1" subClass="VRTRawRasterBand">'
           '<SourceFilename relativetoVRT="0">/dev/zero</SourceFilename><ImageOffset>0</ImageOffset>'
           '<PixelOffset>1</PixelOffset><LineOffset>60000</LineOffset></VRTRasterBand></VRTDataset>')
    return _write(d / "dev_zero_giant.vrt", xml.encode())


def FILES() -> list[FileCase]:
    from rasterio.transform import Affine, from_origin

    rgb = dict(photometric="RGB")
    dem = {"sensor": "elevation"}
    f = []
    add = f.append
    # --- not a GeoTIFF at all, or a broken one ---
    add(FileCase("zero_bytes", "0-byte file", _zero, "fail", "empty file"))
    add(FileCase("header_only", "the first 8 bytes of a GeoTIFF", _header_only, "fail", "not a readable raster"))
    add(FileCase("random_ifd", "TIFF magic, random directory", _random_ifd, "fail", "not a readable raster"))
    add(FileCase("bigtiff_garbage", "BigTIFF magic, garbage", _bigtiff_garbage, "fail", "not a readable raster"))
    add(FileCase("png_magic", "PNG magic on a TIFF body", _png_magic, "fail", "not a readable raster"))
    add(FileCase("document", "a PDF named .tif", _pdf, "fail", "not a readable raster"))
    add(FileCase("error_page", "an HTML error page named .tif", _html, "fail", "not a readable raster"))
    add(FileCase("truncated_cog", "COG cut at 60%: header fine, tiles missing", _truncated_cog, "fail", "read failed"))
    add(FileCase("bitflipped", "COG with corrupted compressed tiles", _bitflipped, "fail", "read failed"))
    add(FileCase("lying_dimensions", "header claims 50000x50000, 256x256 of data", _lying_dimensions, "fail", "decompression bomb"))
    add(FileCase("sparse_giant", "60000x60000 declared in 0.4 MB (sparse)", _sparse_giant, "fail", "decompression bomb"))
    # --- odd places in the file system ---
    add(FileCase("named_pipe", "a FIFO named .tif (open() would block forever)", _fifo, "fail", "not a regular file", posix_only=True))
    add(FileCase("passwd_link", "symlink to /etc/passwd", _symlink_passwd, "fail", "not a readable raster", posix_only=True))
    add(FileCase("dangling_link", "symlink to nothing", _dangling, "fail", "cannot stat", posix_only=True))
    add(FileCase("newline_name", "newline and an escape sequence in the file name", _newline_name, "fail", "not a readable raster"))
    add(FileCase("raw_passwd_vrt", "VRT reading /etc/passwd as pixels", _vrt_raw_passwd, "fail", "not a readable raster",
                 override={"sensor": "elevation"}))
    add(FileCase("dev_zero_vrt", "VRT of 60000x60000 pixels from /dev/zero", _vrt_dev_zero_giant, "fail", "not a readable raster"))
    # --- georeferencing ---
    add(FileCase("gcps_only", "GCPs, no CRS or geotransform", lambda d: _write_tif(d / "gcps_only.tif", _rgb(), gcps=True, crs=None, **rgb), "fail", "no CRS"))
    add(FileCase("local_crs", "an engineering (local) CRS", lambda d: _write_tif(d / "local_crs.tif", _rgb(), crs='LOCAL_CS["site grid",UNIT["metre",1]]', **rgb), "fail", "longitude/latitude"))
    add(FileCase("huge_pixels", "1e10-degree pixels", lambda d: _write_tif(d / "huge_pixels.tif", _rgb(), crs="EPSG:4326", transform=from_origin(-180, 90, 1e10, 1e10), **rgb), "fail", "outside the Earth"))
    add(FileCase("tiny_pixels", "1e-300-degree pixels", lambda d: _write_tif(d / "tiny_pixels.tif", _rgb(), crs="EPSG:4326", transform=from_origin(10, 10, 1e-300, 1e-300), **rgb), "fail", "degenerate"))
    add(FileCase("nan_transform", "NaN in the geotransform", lambda d: _write_tif(d / "nan_transform.tif", _rgb(), crs="EPSG:4326", transform=Affine(float("nan"), 0, 0, 0, -1, 0), **rgb), "fail", "degenerate"))
    add(FileCase("far_easting", "UTM easting of 1e9 m", lambda d: _write_tif(d / "far_easting.tif", _rgb(), transform=from_origin(1e9, 1e9, 10, 10), **rgb), "fail", "outside the Earth"))
    add(FileCase("flipped_x", "negative pixel width (mirrored)", lambda d: _write_tif(d / "flipped_x.tif", _rgb(), transform=Affine(-10, 0, 500640, 0, -10, 5000000), **rgb), "ok"))
    add(FileCase("sheared", "rotated and sheared geotransform", lambda d: _write_tif(d / "sheared.tif", _rgb(), transform=Affine(10, 5, 500000, 5, -10, 5000000), **rgb), "ok"))
    add(FileCase("south_pole", "polar stereographic over the South Pole", lambda d: _write_tif(d / "south_pole.tif", _rgb(), crs="EPSG:3031", transform=from_origin(-3200, 3200, 100, 100), **rgb), "ok"))
    add(FileCase("north_pole", "polar stereographic centred on the North Pole", lambda d: _write_tif(d / "north_pole.tif", _rgb(), crs="EPSG:3413", transform=from_origin(-3200, 3200, 100, 100), **rgb), "ok"))
    add(FileCase("across_180", "EPSG:4326, longitudes 179..181", lambda d: _write_tif(d / "across_180.tif", _rgb(), crs="EPSG:4326", transform=from_origin(179.0, 1.0, 2 / 64, 2 / 64), **rgb), "ok"))
    add(FileCase("grid_0_360", "EPSG:4326 global grid, longitudes 0..360", lambda d: _write_tif(d / "grid_0_360.tif", _rgb(), crs="EPSG:4326", transform=from_origin(0.0, 90.0, 360 / 64, 180 / 64), **rgb), "ok"))
    add(FileCase("half_pixel_grid", "EPSG:4326 global grid shifted half a pixel (-182.8..177.2)", lambda d: _write_tif(d / "half_pixel_grid.tif", _rgb(), crs="EPSG:4326", transform=from_origin(-180 - 180 / 64, 90 + 90 / 64, 360 / 64, 180 / 64), **rgb), "ok"))
    # --- shapes and band counts ---
    add(FileCase("one_pixel", "1x1 pixel, 4 float bands", lambda d: _write_tif(d / "one_pixel.tif", np.ones((4, 1, 1), np.float32)), "fail", "smaller than",
                 override={"wavelengths": (0.49, 0.56, 0.665, 0.842)}))
    add(FileCase("sliver", "4000x15 pixels", lambda d: _write_tif(d / "sliver.tif", _rgb(4000)[:, :15, :], **rgb), "fail", "smaller than"))
    add(FileCase("bands_257", "257 bands", lambda d: _write_tif(d / "bands_257.tif", np.zeros((257, 16, 16), np.uint8)), "fail", "at most 256"))
    add(FileCase("bands_300_hsi", "300 bands with wavelengths given", lambda d: _write_tif(d / "bands_300_hsi.tif", np.zeros((300, 32, 32), np.uint16)), "fail", "at most 256",
                 override={"wavelengths": tuple(np.linspace(0.4, 2.5, 300).round(4))}))
    add(FileCase("wavelengths_mismatch", "3 bands, --wavelengths gives 2", lambda d: _write_tif(d / "wavelengths_mismatch.tif", _rgb()), "fail", "gives 2 values but the file has 3 bands",
                 override={"wavelengths": (0.66, 0.56)}))
    add(FileCase("sensor_band_mismatch", "3 bands, --sensor naip (4 bands)", lambda d: _write_tif(d / "sensor_band_mismatch.tif", _rgb()), "fail", "has 4 bands but the file has 3",
                 override={"sensor": "naip"}))
    add(FileCase("complex_sar", "complex64 pixels", lambda d: _write_tif(d / "complex_sar.tif", np.ones((1, 32, 32), np.complex64)), "fail", "not supported", override=dem))
    # --- pixel values ---
    add(FileCase("all_nan", "float32, every pixel NaN", lambda d: _write_tif(d / "all_nan.tif", np.full((1, 64, 64), np.nan, np.float32)), "empty", override=dem))
    add(FileCase("all_inf", "float32, every pixel +Inf", lambda d: _write_tif(d / "all_inf.tif", np.full((1, 64, 64), np.inf, np.float32)), "empty", override=dem))
    add(FileCase("nan_nodata", "nodata=NaN declared, all NaN", lambda d: _write_tif(d / "nan_nodata.tif", np.full((1, 64, 64), np.nan, np.float32), nodata=float("nan")), "empty", override=dem))
    add(FileCase("f64_beyond_f32", "float64 values of 1e300 (Inf once in float32)", lambda d: _write_tif(d / "f64_beyond_f32.tif", np.random.default_rng(1).normal(size=(1, 64, 64)) * 1e300), "empty", override=dem))
    add(FileCase("half_nan", "left half NaN, right half valid", lambda d: _write_tif(d / "half_nan.tif", np.where(np.arange(128)[None, None, :] < 64, np.nan, 100.0).repeat(64, 1).astype(np.float32)), "ok", override=dem))
    add(FileCase("f64_part_nan", "float64, a third of the pixels NaN (numpy warnings must not leak)", lambda d: _write_tif(d / "f64_part_nan.tif", np.where(np.arange(64)[None, None, :] < 20, np.nan, np.random.default_rng(4).uniform(0, 3000, (1, 64, 64)))), "ok", override=dem))
    add(FileCase("speckled_inf", "30% of pixels -Inf", lambda d: _write_tif(d / "speckled_inf.tif", np.where(np.random.default_rng(2).random((1, 64, 64)) < 0.3, -np.inf, 5.0).astype(np.float32)), "ok", override=dem))
    add(FileCase("float32_max", "every pixel 3e38", lambda d: _write_tif(d / "float32_max.tif", np.full((1, 64, 64), 3e38, np.float32)), "ok", override=dem))
    add(FileCase("int64_extremes", "int64 at its limits", lambda d: _write_tif(d / "int64_extremes.tif", np.where(np.random.default_rng(3).random((1, 64, 64)) < .5, np.iinfo(np.int64).min + 1, np.iinfo(np.int64).max).astype(np.int64)), "ok", override=dem))
    add(FileCase("constant", "every pixel 0", lambda d: _write_tif(d / "constant.tif", np.zeros((3, 64, 64), np.uint8), **rgb), "ok"))
    return f


# --- arguments to the process that serves searches ------------------------------------------

@dataclass
class QueryCase:
    name: str
    call: Callable                    # (index, ctx) -> result
    match: str | None                 # substring of the GLBError; None = must answer
    check: Callable | None = None     # (result, ctx) -> bool, for the valid ones


VRT_UPLOAD = (b'<VRTDataset rasterXSize="64" rasterYSize="16"><VRTRasterBand dataType="Byte" band="1" '
              b'subClass="VRTRawRasterBand"><SourceFilename relativetoVRT="0">/etc/passwd</SourceFilename>'
              b'<ImageOffset>0</ImageOffset><PixelOffset>1</PixelOffset><LineOffset>64</LineOffset>'
              b'</VRTRasterBand></VRTDataset>')


def _upload(data: bytes, name="upload.tif", **kw):
    def call(idx, ctx):
        from engine.raster import read_image

        arr, lay = read_image(data() if callable(data) else data, name=name, **kw)
        return idx.search(image=arr, wavelengths=lay.wavelengths, image_modality=lay.modality, k=5)
    return call


def _giant_header_tif() -> bytes:
    """A valid tiny GeoTIFF whose header is patched to claim 100000 x 100000."""
    import tempfile

    with tempfile.TemporaryDirectory() as t:
        p = _lying_dimensions(Path(t))
        raw = bytearray(p.read_bytes())
    for e, tag, typ, count in _ifd_entries(bytes(raw)):
        if tag in (256, 257):
            struct.pack_into("<I" if typ == 4 else "<H", raw, e + 8, 60000)
    return bytes(raw)


def _unit(dim=384, seed=0):
    v = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
    return v / np.linalg.norm(v)


def QUERIES() -> list[QueryCase]:
    u = _unit()
    img = lambda: np.random.default_rng(0).integers(0, 255, (3, 64, 64), dtype=np.uint8)
    rgb_wl = [0.665, 0.56, 0.49]
    q = []
    add = q.append
    # text
    add(QueryCase("empty text", lambda i, c: i.search(""), "empty"))
    add(QueryCase("whitespace text", lambda i, c: i.search(" \t\n "), "empty"))
    add(QueryCase("1 MB text", lambda i, c: i.search("flood " * ((1 << 20) // 6)), "limit"))
    add(QueryCase("text 2001 chars", lambda i, c: i.search("x" * 2001), "limit"))
    add(QueryCase("bytes as text", lambda i, c: i.search(b"river"), "must be a string"))
    add(QueryCase("no query at all", lambda i, c: i.search(), "exactly one"))
    add(QueryCase("lone surrogate in text", lambda i, c: i.search("river \ud800"), "Unicode"))
    add(QueryCase("NUL and escapes in text", lambda i, c: i.search("river\x00\x1b[31m"), None,
                  lambda r, c: len(r) > 0))
    add(QueryCase("SQL as text", lambda i, c: i.search("'; DROP TABLE tiles; --"), None, lambda r, c: len(r) > 0))
    add(QueryCase("path as text", lambda i, c: i.search("../../etc/passwd"), None, lambda r, c: len(r) > 0))
    # bbox
    add(QueryCase("bbox crossing the antimeridian", lambda i, c: i.search(vector=u, bbox=(170, -60, -170, 60), k=50), None,
                  lambda r, c: all(g.intersects(c["antimeridian_box"]) for g in r.geometry)))
    add(QueryCase("polygon crossing the antimeridian (read the short way round)",
                  lambda i, c: i.search(vector=u, region="POLYGON((170 -60,-170 -60,-170 60,170 60,170 -60))", k=50),
                  None, lambda r, c: len(r) > 0 and all(g.intersects(c["antimeridian_box"]) for g in r.geometry)))
    add(QueryCase("bbox swapped (>180 deg)", lambda i, c: i.search(vector=u, bbox=(10, 0, -10, 1)), "swap"))
    add(QueryCase("bbox lat out of range", lambda i, c: i.search(vector=u, bbox=(0, -91, 1, 1)), "outside"))
    add(QueryCase("bbox NaN", lambda i, c: i.search(vector=u, bbox=(0, 0, float("nan"), 1)), "finite"))
    add(QueryCase("bbox SQL string", lambda i, c: i.search(vector=u, bbox="0,0,1,1); DROP TABLE tiles; --"), "4 numbers"))
    add(QueryCase("bbox of words", lambda i, c: i.search(vector=u, bbox=["a", "b", "c", "d"]), "4 numbers"))
    add(QueryCase("bbox a point", lambda i, c: i.search(vector=u, bbox=c["point_box"], k=5), None, lambda r, c: len(r) >= 1))
    # filters that look like SQL
    add(QueryCase("sensor SQL", lambda i, c: i.search(vector=u, sensor="naip' OR '1'='1"), "not a sensor"))
    add(QueryCase("modality SQL", lambda i, c: i.search(vector=u, modality="rgb'; DROP TABLE tiles; --"), "modality"))
    add(QueryCase("start date SQL", lambda i, c: i.search(vector=u, start="2020-01-01'; DROP TABLE tiles; --"), "not a date"))
    add(QueryCase("end date garbage suffix", lambda i, c: i.search(vector=u, end="2020-01-01 OR 1=1"), "not a date"))
    add(QueryCase("region WKT + SQL", lambda i, c: i.search(vector=u, region="POLYGON((0 0,1 0,1 1,0 0))'); DROP TABLE tiles; --"), "region"))
    add(QueryCase("region GeoJSON SQL", lambda i, c: i.search(vector=u, region={"type": "Polygon", "coordinates": "'; DROP"}), "GeoJSON"))
    add(QueryCase("region 20000 vertices", lambda i, c: i.search(vector=u, region="POLYGON((" + ",".join(
        f"{np.cos(a):.6f} {np.sin(a):.6f}" for a in np.linspace(0, 6.28, 20000)) + ",1 0))"), "vertices"))
    # k and ids
    add(QueryCase("k infinite", lambda i, c: i.search(vector=u, k=float("inf")), "not an integer"))
    add(QueryCase("k SQL", lambda i, c: i.search(vector=u, k="10; DROP TABLE tiles"), "not an integer"))
    add(QueryCase("k a million", lambda i, c: i.search(vector=u, k=10**6), "maximum"))
    add(QueryCase("tile id a path", lambda i, c: i.search(tile_id="../../etc/passwd"), "not an integer"))
    add(QueryCase("tile id 2**70", lambda i, c: i.search(tile_id=2**70), "not in this index"))
    add(QueryCase("thumbnail of a path", lambda i, c: i.thumbnail("../../etc/passwd"), "not an integer"))
    add(QueryCase("tile of a path", lambda i, c: i.tile("../../etc/passwd; rm -rf /"), "not an integer"))
    add(QueryCase("vector of text", lambda i, c: i.search(vector="abc"), "finite numbers"))
    add(QueryCase("vector of NaN", lambda i, c: i.search(vector=np.full(384, np.nan)), "finite numbers"))
    # query images (arrays) and uploads (bytes) and paths
    add(QueryCase("image wavelengths mismatch", lambda i, c: i.search(image=img(), wavelengths=[0.66, 0.56], image_modality="rgb"), "wavelength"))
    add(QueryCase("image NaN pixels", lambda i, c: i.search(image=np.full((3, 64, 64), np.nan, np.float32), wavelengths=rgb_wl, image_modality="rgb"), "NaN"))
    add(QueryCase("image 300 bands", lambda i, c: i.search(image=np.zeros((300, 32, 32), np.uint8), wavelengths=list(np.linspace(.4, 2.5, 300)), image_modality="hyperspectral"), "at most"))
    add(QueryCase("image 1x1", lambda i, c: i.search(image=np.zeros((3, 1, 1), np.uint8), wavelengths=rgb_wl, image_modality="rgb"), "at least"))
    add(QueryCase("upload: VRT reading /etc/passwd", _upload(VRT_UPLOAD, "evil.vrt", sensor="elevation"), "uploads must be"))
    add(QueryCase("upload: 0 bytes", _upload(b""), "empty"))
    add(QueryCase("upload: 33 MB", _upload(lambda: b"\0" * (33 << 20)), "upload limit"))
    add(QueryCase("upload: header claims 60000x60000", _upload(_giant_header_tif), "decompression bomb"))
    add(QueryCase("upload named ../../etc/passwd", _upload(b"II*\x00garbage", name="../../etc/passwd"), "not a readable raster"))
    add(QueryCase("image path ../../etc/passwd", _upload_path("../../../../../../etc/passwd"), "not a readable raster"))
    add(QueryCase("image path /dev/zero", _upload_path("/dev/zero"), "not a regular file"))
    add(QueryCase("image path a folder", _upload_path("/etc"), "folder"))
    add(QueryCase("image path GDAL /vsicurl/", _upload_path("/vsicurl/http://169.254.169.254/latest"), "no such file"))
    return q


def _upload_path(path):
    def call(idx, ctx):
        from engine.raster import read_image

        arr, lay = read_image(path)
        return idx.search(image=arr, wavelengths=lay.wavelengths, image_modality=lay.modality, k=5)
    return call
