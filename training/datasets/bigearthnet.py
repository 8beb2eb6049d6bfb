"""BigEarthNet examples (bigearthnet-common wheel: Apache-2.0, data CDLA-Permissive): 6 matching
Sentinel-1 / Sentinel-2 patch pairs, 1.2 km x 1.2 km, with CORINE land-cover labels in
`<patch>/<patch>_labels_metadata.json`.

- bigearthnet_s2: one GeoTIFF per band (10 m: 120x120; 20 m: 60x60; 60 m: 20x20), uint16 L2A.
  Stacked in registry `sentinel2-l2a` order (B1 B2 B3 B4 B5 B6 B7 B8 B8A B9 B11 B12; no B10) and
  brought to 120x120 by nearest-neighbour repetition (each 20 m pixel -> 2x2, each 60 m pixel ->
  6x6), so values stay as stored.
- bigearthnet_s1: VV and VH float32 dB, 120x120 (registry `sentinel1`).
Multi-label, so not a zero-shot classification source: label None, the CORINE labels in
meta["labels"] and in the captions. pair_key = the S2 patch name (the S1 json names it).
Only 6 places: one split, "train".
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import rasterio

from engine.raster import fill_invalid

from ._text import dedupe, join_words
from .base import EODataset, Sample, check_sample, sensor_wavelengths

S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
SIZE = 120

# CORINE level-3 names -> plainer words for captions (the rest are lower-cased as they are).
CORINE_WORDS = {
    "Land principally occupied by agriculture, with significant areas of natural vegetation":
        "farmland mixed with natural vegetation",
    "Non-irrigated arable land": "non-irrigated arable land",
    "Transitional woodland/shrub": "transitional woodland and shrub",
    "Complex cultivation patterns": "a patchwork of small fields",
    "Water bodies": "water bodies",
    "Peatbogs": "peat bogs",
}
SEASONS = {12: "winter", 1: "winter", 2: "winter", 3: "spring", 4: "spring", 5: "spring",
           6: "summer", 7: "summer", 8: "summer", 9: "autumn", 10: "autumn", 11: "autumn"}


def corine_words(labels: list[str]) -> list[str]:
    return [CORINE_WORDS.get(lab, lab.lower()) for lab in labels]


def bigearthnet_captions(sensor: str, labels: list[str], when: dt.date | None) -> list[str]:
    words = corine_words(labels)
    allw = join_words(words)
    main = words[0] if words else "land"
    what = ("Sentinel-2 multispectral image" if sensor == "s2"
            else "Sentinel-1 radar image (VV and VH)")
    season = f" in {SEASONS[when.month]} {when.year}" if when else ""
    return dedupe([
        f"a {what} of {allw}",
        f"land cover: {allw}, seen from space{season}",
        f"{'C-band SAR' if sensor == 's1' else '12-band Sentinel-2'} patch of {main} in Europe",
        f"a 1.2 km {what} patch with {allw}{season}",
    ])


def _date(meta: dict) -> dt.date | None:
    for k in ("acquisition_date", "acquisition_time"):
        v = meta.get(k)
        if v:
            try:
                return dt.date.fromisoformat(v[:10])
            except ValueError:
                pass
    return None


class _BigEarthNet(EODataset):
    splits = ("train",)
    classes = ()
    sub = ""

    def _index(self):
        base = self.folder("bigearthnet", self.sub)
        return sorted(d for d in base.iterdir() if d.is_dir())

    def _meta(self, d: Path) -> dict:
        with open(d / f"{d.name}_labels_metadata.json") as f:
            return json.load(f)


class BigEarthNetS2(_BigEarthNet):
    name = "bigearthnet_s2"
    modality = "multispectral"
    sub = "BigEarthNet-S2-Example"

    def _load(self, d):
        bands = []
        for b in S2_BANDS:
            with rasterio.open(d / f"{d.name}_{b}.tif") as ds:
                a = ds.read(1)
            f = SIZE // a.shape[0]
            if f * a.shape[0] != SIZE or a.shape[0] != a.shape[1]:
                raise ValueError(f"{d.name}_{b}.tif: {a.shape} does not divide {SIZE}")
            bands.append(np.repeat(np.repeat(a, f, axis=0), f, axis=1) if f > 1 else a)
        arr = np.stack(bands)
        meta = self._meta(d)
        return check_sample(Sample(
            pixels=arr,
            wavelengths=sensor_wavelengths("sentinel2-l2a"),
            modality="multispectral",
            sensor="sentinel2-l2a",
            captions=bigearthnet_captions("s2", meta["labels"], _date(meta)),
            label=None,
            source=self.name,
            key=self.rel(d),
            pair_key=d.name,
            meta={"path": str(d), "split": self.split, "labels": list(meta["labels"]),
                  "acquired": str(_date(meta))},
        ))


class BigEarthNetS1(_BigEarthNet):
    name = "bigearthnet_s1"
    modality = "sar"
    sub = "BigEarthNet-S1-Example"

    def _load(self, d):
        bands = []
        for pol in ("VV", "VH"):
            with rasterio.open(d / f"{d.name}_{pol}.tif") as ds:
                bands.append(ds.read(1).astype(np.float32, copy=False))
        arr = np.stack(bands)
        arr = fill_invalid(arr, np.isfinite(arr))
        meta = self._meta(d)
        return check_sample(Sample(
            pixels=arr,
            wavelengths=sensor_wavelengths("sentinel1"),
            modality="sar",
            sensor="sentinel1",
            captions=bigearthnet_captions("s1", meta["labels"], _date(meta)),
            label=None,
            source=self.name,
            key=self.rel(d),
            pair_key=meta.get("corresponding_s2_patch"),
            meta={"path": str(d), "split": self.split, "labels": list(meta["labels"]),
                  "acquired": str(_date(meta))},
        ))
