"""Sen1Floods11 (Bonafilia et al. 2020; CC BY 4.0): hand-labelled 512x512 chips,
`sen1floods11/{S1,S2,Labels}/<event>_<id>_{S1Hand,S2Hand,LabelHand}.tif` (here one chip,
Spain_7370579). S1: VV, VH float32 dB (NaN possible -> filled with the band's median; registry
`sentinel1`); S2: 13 bands int16 in ESA order B1..B8, B8A, B9..B12 (the file names its bands;
registry `sentinel2-l1c`; no-data 0 -> filled the same way). Label: -1 no data, 0 dry, 1 water.

Cut into non-overlapping 64x64 patches (8x8 per chip); patches with under 50 % labelled pixels
are skipped. water fraction = water / labelled pixels. Label rule: "flooded" when the water
fraction is at least WATER_THRESHOLD (5 %), else "not flooded" (hand labels mark all water at the
time of the flood, permanent water included). Split: spatial, by patch column: test = the two
rightmost patch columns (x >= 384, 25 %), train = the rest. pair_key links S1 and S2 patches:
f"sen1floods11/{chip}/r{row}c{col}".
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from engine.raster import fill_invalid

from ._text import amount_words, dedupe, percent
from .base import EODataset, Sample, check_sample, sensor_wavelengths

PATCH = 64
TEST_FROM_COL = 384
WATER_THRESHOLD = 0.05
MIN_LABELLED = 0.5


@lru_cache(maxsize=8)
def read_label(path: str) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


def water_fraction(lab: np.ndarray) -> tuple[float, float]:
    """-> (water fraction of labelled pixels, labelled fraction)."""
    valid = lab >= 0
    nv = int(valid.sum())
    return (float((lab == 1).sum()) / nv if nv else 0.0), nv / lab.size


def place_of(chip: str) -> str:
    return chip.split("_")[0]


def sen1floods11_captions(sensor: str, water: float, place: str) -> list[str]:
    if sensor == "s1":
        what, short = "Sentinel-1 radar image (VV and VH)", "C-band SAR backscatter"
    else:
        what, short = "Sentinel-2 multispectral image", "13-band Sentinel-2 view"
    p = percent(water)
    if water >= WATER_THRESHOLD:
        return dedupe([
            f"a {what} of a flood in {place}: about {p} of the area is under water",
            f"{short} of flooded land, {amount_words(water)} of the patch covered by water ({p})",
            f"flood water over {p} of the ground during a flood event in {place}, {what}",
            f"inundated fields and flood water seen in a {what}",
        ])
    return dedupe([
        f"a {what} of dry land during a flood in {place} ({p} water)",
        f"{short} of land that is not flooded",
        f"no flood water here: dry ground in a {what} taken during a flood event",
    ])


class _Sen1Floods11(EODataset):
    splits = ("train", "test")
    classes = ("flooded", "not flooded")
    class_words = {"flooded": "a flooded area", "not flooded": "dry ground with no standing water"}  # as OMBRIA's
    sensor_key = ""

    def _chips(self) -> list[tuple[str, Path, Path, Path]]:
        base = self.folder("sen1floods11")
        out = []
        for s1 in sorted((base / "S1").glob("*_S1Hand.tif")):
            chip = s1.name[: -len("_S1Hand.tif")]
            s2 = base / "S2" / f"{chip}_S2Hand.tif"
            lab = base / "Labels" / f"{chip}_LabelHand.tif"
            if s2.exists() and lab.exists():
                out.append((chip, s1, s2, lab))
        return out

    def _index(self):
        recs = []
        for chip, s1, s2, lab in self._chips():
            labels = read_label(str(lab))
            h, w = labels.shape
            for r in range(0, h - PATCH + 1, PATCH):
                for c in range(0, w - PATCH + 1, PATCH):
                    if (c >= TEST_FROM_COL) != (self.split == "test"):
                        continue
                    _, valid = water_fraction(labels[r:r + PATCH, c:c + PATCH])
                    if valid >= MIN_LABELLED:
                        recs.append((chip, s1 if self.sensor_key == "s1" else s2, lab, r, c))
        return recs

    def _read(self, path: Path, r: int, c: int) -> tuple[np.ndarray, str]:
        raise NotImplementedError

    def _load(self, rec):
        chip, path, lab, r, c = rec
        arr, sensor = self._read(path, r, c)
        water, valid = water_fraction(read_label(str(lab))[r:r + PATCH, c:c + PATCH])
        label = "flooded" if water >= WATER_THRESHOLD else "not flooded"
        return check_sample(Sample(
            pixels=arr,
            wavelengths=sensor_wavelengths(sensor),
            modality=self.modality,
            sensor=sensor,
            captions=sen1floods11_captions(self.sensor_key, water, place_of(chip)),
            label=label,
            source=self.name,
            key=f"{self.rel(path)}#r{r}c{c}s{PATCH}",
            pair_key=f"sen1floods11/{chip}/r{r}c{c}",
            meta={"path": str(path), "split": self.split, "chip": chip, "row": r, "col": c,
                  "water_fraction": water, "labelled_fraction": valid},
        ))


class Sen1Floods11S1(_Sen1Floods11):
    name = "sen1floods11_s1"
    modality = "sar"
    sensor_key = "s1"

    def _read(self, path, r, c):
        with rasterio.open(path) as ds:
            arr = ds.read(window=Window(c, r, PATCH, PATCH)).astype(np.float32, copy=False)
            nodata = ds.nodata
        bad = ~np.isfinite(arr)
        if nodata is not None and np.isfinite(nodata):
            bad |= arr == nodata
        return fill_invalid(arr, ~bad), "sentinel1"


class Sen1Floods11S2(_Sen1Floods11):
    name = "sen1floods11_s2"
    modality = "multispectral"
    sensor_key = "s2"

    def _read(self, path, r, c):
        with rasterio.open(path) as ds:
            names = tuple(d or "" for d in ds.descriptions)
            arr = ds.read(window=Window(c, r, PATCH, PATCH))
            nodata = ds.nodata
        expected = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11",
                    "B12")
        if any(names) and names != expected:
            raise ValueError(f"{path}: unexpected band order {names}")
        bad = np.zeros(arr.shape, dtype=bool) if nodata is None else (arr == nodata)
        return fill_invalid(arr, ~bad), "sentinel2-l1c"
