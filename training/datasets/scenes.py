"""Unlabelled imagery for distillation: the non-elevation scenes in `scenes/` as 64x64 tiles with
no captions (source "scenes_unlabelled"). Teachers give these tiles their targets (MaKA); no text.

Band layouts come from the sensor registry (the same ones `indexer/archives/sample.toml` gives):
NAIP R G B NIR (`naip`), the Pucallpa Landsat stack SWIR1 NIR Red Green
(`landsat-swir1-nir-red-green`), Landsat-7 R G B (`landsat7-rgb`), Landsat-5 TM B1-B7
(`landsat5-tm`), Sentinel-1 VV dB (`sentinel1-vv`), the RMNP true-colour image (`rgb`). Each
Sample's modality is its sensor's; the dataset mixes them, so its class attribute `modality` is
"mixed" (the only dataset where it is not one of the six names).

Tiles: non-overlapping 64x64 windows; a pixel is no-data when every band equals the file's
no-data value (NaN for floats); tiles with more than 10 % no-data are skipped, the rest filled
with each band's median. Split: stable hash of (scene group, window), 20 % test; the five NAIP
years share one group, as do the three Landsat years, so a place is in one split only.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import rasterio

from engine.raster import fill_invalid
from engine.sensors import get_sensor

from .base import EODataset, Sample, check_sample, hash_split

TILE = 64
MAX_NODATA = 0.10


@dataclass(frozen=True)
class UnlabelledScene:
    glob: str
    sensor: str
    group: str


SCENES = (
    UnlabelledScene("scenes/naip/*.tif", "naip", "naip-4709963"),
    UnlabelledScene("scenes/landsat_timeseries/*.tif", "landsat-swir1-nir-red-green", "pucallpa"),
    UnlabelledScene("scenes/landsat7_rgb/*.tif", "landsat7-rgb", "landsat7-rgb"),
    UnlabelledScene("scenes/landsat5_tm/*.tif", "landsat5-tm", "landsat5-tm"),
    UnlabelledScene("scenes/sentinel1/*.tif", "sentinel1-vv", "sentinel1"),
    UnlabelledScene("scenes/rmnp/rmnp-rgb.tif", "rgb", "rmnp"),
)


@lru_cache(maxsize=32)
def _invalid(path: str) -> np.ndarray:
    with rasterio.open(path) as ds:
        a = ds.read()
        nd = ds.nodata
    bad = ~np.isfinite(a) if a.dtype.kind == "f" else np.zeros(a.shape, bool)
    if nd is not None and np.isfinite(nd):
        bad |= a == nd
    return bad.all(axis=0)


class ScenesUnlabelled(EODataset):
    name = "scenes_unlabelled"
    modality = "mixed"
    splits = ("train", "test")
    classes = ()

    def _index(self):
        self.folder("scenes")
        recs = []
        for sc in SCENES:
            for p in sorted(self.root.glob(sc.glob)):
                bad = _invalid(str(p))
                h, w = bad.shape
                for r in range(0, h - TILE + 1, TILE):
                    for c in range(0, w - TILE + 1, TILE):
                        if bad[r:r + TILE, c:c + TILE].mean() > MAX_NODATA:
                            continue
                        if hash_split(f"{sc.group}/r{r}c{c}") == self.split:
                            recs.append((p, sc, r, c))
        return recs

    def _load(self, rec):
        p, sc, r, c = rec
        s = get_sensor(sc.sensor)
        with rasterio.open(p) as ds:
            arr = ds.read(window=rasterio.windows.Window(c, r, TILE, TILE))
        if arr.shape[0] != len(s.wavelengths):
            raise ValueError(f"{p}: {arr.shape[0]} bands, sensor {s.name} has {len(s.wavelengths)}")
        arr = fill_invalid(arr, ~_invalid(str(p))[r:r + TILE, c:c + TILE])
        if arr.dtype.kind == "f":
            arr = fill_invalid(arr, np.isfinite(arr))
        return check_sample(Sample(
            pixels=arr,
            wavelengths=s.wavelengths,
            modality=s.modality,
            sensor=s.name,
            captions=[],
            label=None,
            source=self.name,
            key=f"{self.rel(p)}#r{r}c{c}s{TILE}",
            meta={"path": str(p), "split": self.split, "row": r, "col": c, "group": sc.group},
        ))
