"""Elevation tiles from the georeferenced scenes (metres, as stored: int16 / uint16 / float32;
sensor `elevation`, wavelength engine.modalities.ELEVATION_UM).

Scenes: `scenes/elevation/{dsm,dtm,hag}.tif` (lidar, 2 m, one grid), `scenes/elevation/
Rome-30m-DEM.tif`, `scenes/zion/srtm.tif`, `scenes/zion/dem.tif`, `scenes/rmnp/rmnp-dem.tif`.
What the files say (differs from the README): `zion/dem.tif` is not Zion: EPSG:32717 (UTM 17 S),
bounds about 78.3 W 9.6 S (north-western Peru), heights 238-1094 m; it is used without a place
name and without land cover. `labels/zion_nlcd.tif` holds NLCD level-I classes 1-8 (palette
colours of NLCD's water, developed, barren, forest, shrubland, herbaceous, planted/cultivated,
wetlands), not the 2-digit level-II codes, so captions say "forest", not "evergreen forest". It
is a label map: never imagery here.

Tiles: non-overlapping 64x64 windows; a tile with more than 10 % no-data is skipped, the rest is
filled with the tile's median. Relief statistics use the pixel size in metres (geographic CRSs:
degrees x 111.32 km x cos(latitude)); slope is measured at >= 10 m (2 m lidar is block-averaged
5x5 first) so kerbs and ditches do not read as hills.

Label rule (terrain products: DEM / SRTM / DTM): "flat" if relief (max - min) < 20 m or mean
slope < 3°; "steep canyon" if mean slope >= 25°, 90th-percentile slope >= 40° and relief >=
300 m; "mountainous" if relief >= 300 m or mean slope >= 15°; else "hilly". Surface products
(DSM, height above ground) describe buildings and trees, not terrain: label None, captions from
the height-above-ground tile of the same window (share of the tile > 2 m above ground, tallest).
Zion SRTM tiles add NLCD land cover reprojected onto the tile (mode resampling).

Split: by a stable hash of the tile's place (scene group + window), 20 % test; dsm/dtm/hag share
one group so the same window is in the same split for all three.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import rasterio
from rasterio.warp import Resampling, reproject
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from engine.modalities import ELEVATION_UM
from engine.raster import fill_invalid

from ._text import article, dedupe, join_words, percent
from .base import AIRBORNE_TEMPLATES, EODataset, Sample, check_sample, hash_split

TILE = 64
MAX_NODATA = 0.10
NLCD_PATH = "labels/zion_nlcd.tif"
NLCD_WORDS = {1: "open water", 2: "developed land", 3: "barren land", 4: "forest",
              5: "shrubland", 6: "grassland", 7: "cultivated land", 8: "wetlands"}


@dataclass(frozen=True)
class ElevationScene:
    path: str      # relative to the data root
    product: str   # dem | srtm | dtm | dsm | hag
    group: str     # split group (same place, same grid)
    place: str | None = None
    nlcd: bool = False


SCENES = (
    ElevationScene("scenes/elevation/dsm.tif", "dsm", "lidar-26918"),
    ElevationScene("scenes/elevation/dtm.tif", "dtm", "lidar-26918"),
    ElevationScene("scenes/elevation/hag.tif", "hag", "lidar-26918"),
    ElevationScene("scenes/elevation/Rome-30m-DEM.tif", "dem", "rome", "Rome, Italy"),
    ElevationScene("scenes/zion/srtm.tif", "srtm", "zion-srtm", "Zion National Park, Utah", True),
    ElevationScene("scenes/zion/dem.tif", "dem", "peru-dem-32717"),
    ElevationScene("scenes/rmnp/rmnp-dem.tif", "dem", "rmnp",
                   "Rocky Mountain National Park, Colorado"),
)
PRODUCT_WORDS = {
    "dem": "digital elevation model",
    "srtm": "SRTM elevation model",
    "dtm": "lidar digital terrain model",
    "dsm": "lidar digital surface model",
    "hag": "lidar height-above-ground model",
}
TERRAIN = ("dem", "srtm", "dtm")
RELIEF_WORDS = {"flat": "flat terrain", "hilly": "hilly terrain",
                "mountainous": "mountainous terrain", "steep canyon": "steep canyons and cliffs"}


def pixel_size_m(ds) -> tuple[float, float]:
    rx, ry = ds.res
    if ds.crs is not None and ds.crs.is_geographic:
        b = ds.bounds
        lat = np.radians((b.top + b.bottom) / 2)
        return rx * 111_320.0 * float(np.cos(lat)), ry * 110_574.0
    return rx, ry


SLOPE_SCALE_M = 10.0


def relief_stats(z: np.ndarray, dx: float, dy: float) -> dict:
    """Height range and slope (degrees). Slope is measured at a scale of at least 10 m (finer
    grids are block-averaged first), so 2 m lidar kerbs and ditches do not read as hills."""
    z = z.astype(np.float64)
    k = int(np.ceil(SLOPE_SCALE_M / min(dx, dy))) if min(dx, dy) < SLOPE_SCALE_M else 1
    zs = z
    if k > 1:
        h, w = (z.shape[0] // k) * k, (z.shape[1] // k) * k
        zs = z[:h, :w].reshape(h // k, k, w // k, k).mean(axis=(1, 3))
    gy, gx = np.gradient(zs, dy * k, dx * k)
    slope = np.degrees(np.arctan(np.hypot(gx, gy)))
    return {"min": float(z.min()), "max": float(z.max()), "range": float(z.max() - z.min()),
            "mean": float(z.mean()), "mean_slope": float(slope.mean()),
            "p90_slope": float(np.percentile(slope, 90))}


def relief_class(st: dict) -> str:
    if st["range"] < 20 or st["mean_slope"] < 3:
        return "flat"
    if st["mean_slope"] >= 25 and st["p90_slope"] >= 40 and st["range"] >= 300:
        return "steep canyon"
    if st["range"] >= 300 or st["mean_slope"] >= 15:
        return "mountainous"
    return "hilly"


def terrain_captions(product: str, st: dict, relief: str, place: str | None,
                     landcover: dict[int, float] | None) -> list[str]:
    pw = PRODUCT_WORDS[product]
    at = f" in {place}" if place else ""
    rw = RELIEF_WORDS[relief]
    lo, hi = round(st["min"]), round(st["max"])
    rng, sl = round(st["range"]), round(st["mean_slope"])
    caps = [
        f"{article(pw)} {pw} of {rw}{at}",
        f"elevation tile: heights from {lo} to {hi} m, {rng} m of relief, "
        f"mean slope {sl} degree{'' if sl == 1 else 's'}",
        f"{rw} with a mean slope of {sl}° in a {pw}",
    ]
    if landcover:
        order = sorted(landcover, key=lambda k: -landcover[k])
        main = [NLCD_WORDS[k] for k in order if landcover[k] >= 0.1] or [NLCD_WORDS[order[0]]]
        parts = [f"{NLCD_WORDS[k]} ({percent(landcover[k])})"
                 for k in order if landcover[k] >= 0.05]
        caps.append(f"{rw} covered mostly by {join_words(main[:2])}{at}")
        caps.append(f"elevation model of {rw}; land cover: {join_words(parts)}")
    else:
        caps.append(f"terrain elevation in metres: {rw}, "
                    f"{rng} m between the lowest and highest point")
    return dedupe(caps)


def surface_captions(product: str, st: dict, hag: np.ndarray) -> list[str]:
    pw = PRODUCT_WORDS[product]
    above = float((hag > 2.0).mean())
    tall = float(np.percentile(hag, 99))
    if above < 0.05:
        what = "open ground with few buildings or trees"
    elif above < 0.3:
        what = "scattered buildings and trees"
    else:
        what = "dense buildings and trees"
    caps = [
        f"{article(pw)} {pw} of {what}",
        f"lidar heights: {percent(above)} of the tile more than 2 m above the ground, "
        f"the tallest objects about {round(tall)} m high",
        f"{what} seen in a 2 m {pw}",
    ]
    if product == "dsm":
        caps.append(f"surface heights from {round(st['min'])} to {round(st['max'])} m "
                    f"including roofs and tree tops")
    else:
        caps.append(f"height of buildings and vegetation above the ground, up to {round(tall)} m")
    return dedupe(caps)


@lru_cache(maxsize=16)
def _read_scene(path: str) -> tuple[np.ndarray, np.ndarray, tuple, dict]:
    """-> (z (H,W) as stored, invalid mask, (dx, dy) metres, georef) for a small scene."""
    with rasterio.open(path) as ds:
        z = ds.read(1)
        nd = ds.nodata
        invalid = ~np.isfinite(z) if z.dtype.kind == "f" else np.zeros(z.shape, bool)
        if nd is not None and np.isfinite(nd):
            invalid |= z == np.asarray(nd).astype(z.dtype) if z.dtype.kind in "ui" else z == nd
            if z.dtype.kind == "f":
                invalid |= z <= -1e30  # float32 rounding of huge negative no-data values
        geo = {"crs": ds.crs, "transform": ds.transform}
        return z, invalid, pixel_size_m(ds), geo


@lru_cache(maxsize=2)
def _read_nlcd(path: str):
    with rasterio.open(path) as ds:
        return ds.read(1), ds.transform, ds.crs, ds.nodata


def nlcd_fractions(nlcd_path: str, geo: dict, r: int, c: int) -> dict[int, float]:
    src, src_t, src_crs, src_nd = _read_nlcd(nlcd_path)
    dst = np.full((TILE, TILE), 255, dtype=np.uint8)
    reproject(src, dst, src_transform=src_t, src_crs=src_crs, src_nodata=src_nd,
              dst_transform=window_transform(Window(c, r, TILE, TILE), geo["transform"]),
              dst_crs=geo["crs"], dst_nodata=255, resampling=Resampling.mode)
    v, n = np.unique(dst[dst != 255], return_counts=True)
    tot = n.sum()
    return {int(a): float(b) / tot for a, b in zip(v, n) if int(a) in NLCD_WORDS} if tot else {}


class Elevation(EODataset):
    generic_templates = AIRBORNE_TEMPLATES
    name = "elevation"
    modality = "elevation"
    splits = ("train", "test")
    classes = ("flat", "hilly", "mountainous", "steep canyon")
    class_words = {"flat": "flat terrain", "hilly": "hilly terrain",
                   "mountainous": "mountainous terrain", "steep canyon": "a steep canyon"}
    templates = ("a height map of {}", "relief of {}")

    def _index(self):
        self.folder("scenes")
        recs = []
        for sc in SCENES:
            p = self.root / sc.path
            if not p.exists():
                continue
            z, invalid, _, _ = _read_scene(str(p))
            h, w = z.shape
            for r in range(0, h - TILE + 1, TILE):
                for c in range(0, w - TILE + 1, TILE):
                    if invalid[r:r + TILE, c:c + TILE].mean() > MAX_NODATA:
                        continue
                    if hash_split(f"{sc.group}/r{r}c{c}") == self.split:
                        recs.append((sc, r, c))
        return recs

    def _tile(self, path: str, r: int, c: int) -> tuple[np.ndarray, tuple, dict]:
        z, invalid, px, geo = _read_scene(path)
        t = z[r:r + TILE, c:c + TILE]
        t = fill_invalid(t[None], ~invalid[r:r + TILE, c:c + TILE][None])
        return t, px, geo

    def _load(self, rec):
        sc, r, c = rec
        path = str(self.root / sc.path)
        pix, (dx, dy), geo = self._tile(path, r, c)
        st = relief_stats(pix[0], dx, dy)
        meta = {"path": path, "split": self.split, "row": r, "col": c, "product": sc.product,
                "place": sc.place, **{f"relief_{k}": v for k, v in st.items()}}
        if sc.product in TERRAIN:
            label = relief_class(st)
            lc = None
            nlcd = self.root / NLCD_PATH
            if sc.nlcd and nlcd.exists():
                lc = nlcd_fractions(str(nlcd), geo, r, c)
                meta["nlcd"] = {NLCD_WORDS[k]: v for k, v in lc.items()}
            captions = terrain_captions(sc.product, st, label, sc.place, lc)
        else:
            label = None
            hag_path = self.root / "scenes/elevation/hag.tif"
            hag = pix if sc.product == "hag" else self._tile(str(hag_path), r, c)[0]
            captions = surface_captions(sc.product, st, hag[0].astype(np.float64))
        return check_sample(Sample(
            pixels=pix,
            wavelengths=(ELEVATION_UM,),
            modality="elevation",
            sensor="elevation",
            captions=captions,
            label=label,
            source=self.name,
            key=f"{sc.path}#r{r}c{c}s{TILE}",
            meta=meta,
        ))
