"""Hyperspectral cubes in `hsi/` (small: read once and cached), cut into 16x16 patches (the
encoder's minimum side) with stride 4.

Split (all four): spatial, by columns: train = patches entirely in the left 80 % of the columns
(c0 + 16 <= round(0.8 W)), test = patches entirely in the right 20 % (c0 >= round(0.8 W)); no
pixel is in both. The stripes of Salinas-A run diagonally, so its test strip holds only four of
the six crops (no broccoli, no 4-week lettuce).

- salinas_a: AVIRIS, `salinas_a_corrected.mat` (83x86x204 int16) + `salinas_a_gt.mat`.
  Wavelengths: the 224 AVIRIS centres approximated as np.linspace(0.4, 2.5, 224), minus the
  removed water-absorption bands 108-112, 154-167 and 224 (1-based) -> 204 values (the real
  centres are irregular by up to ~10 nm: an approximation). label = majority crop among the
  labelled pixels of the patch; patches with under 50 % labelled pixels are skipped.
- samson: `samson.mat`, Y (156 bands x 9025 pixels, column-major: reshape order="F", checked
  against the abundances), reflectance 0-1 float (float64 -> float32), wavelengths
  np.linspace(0.401, 0.889, 156); abundances S_GT (soil, tree, water). label = the endmember with
  the largest mean abundance in the patch.
- jasper_ridge: `jasper_ridge_r198.mat`, Y (198 x 10000, column-major) uint16; the file lists the
  kept AVIRIS bands (`SlectBands`, 1-based: 1-3, 108-112, 154-166, 220-224 removed), so
  wavelengths = np.linspace(0.38, 2.5, 224)[SlectBands - 1]. Unlabelled: captions [].
- urban: `urban_sub_r162.mat`, im (34x78x162) float reflectance. HYDICE 210 bands
  np.linspace(0.4, 2.5, 210) minus the standard removed bands 1-4, 76, 87, 101-111, 136-153,
  198-210 (exactly 162 remain; the spectrum's jumps fall on those gaps and at the 0.94 µm
  water-vapour band). Unlabelled: captions [].
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import scipy.io as sio

from ._text import dedupe, percent
from .base import AIRBORNE_TEMPLATES, EODataset, Sample, check_sample, patch_starts

PATCH = 16
STRIDE = 4
TRAIN_FRACTION = 0.8
MIN_LABELLED = 0.5

SALINAS_CLASSES = {  # class map value -> (label, words)
    1: ("broccoli_green_weeds_1", "broccoli green weeds"),
    10: ("corn_senesced_green_weeds", "corn with senesced green weeds"),
    11: ("lettuce_romaine_4wk", "romaine lettuce at 4 weeks"),
    12: ("lettuce_romaine_5wk", "romaine lettuce at 5 weeks"),
    13: ("lettuce_romaine_6wk", "romaine lettuce at 6 weeks"),
    14: ("lettuce_romaine_7wk", "romaine lettuce at 7 weeks"),
}
SAMSON_ENDMEMBERS = ("soil", "tree", "water")
SAMSON_WORDS = {"soil": "bare soil", "tree": "trees", "water": "water"}


def salinas_wavelengths() -> tuple[float, ...]:
    removed = set(range(108, 113)) | set(range(154, 168)) | {224}
    full = np.linspace(0.4, 2.5, 224)
    return tuple(float(round(full[b - 1], 5)) for b in range(1, 225) if b not in removed)


def urban_wavelengths() -> tuple[float, ...]:
    removed = (set(range(1, 5)) | {76, 87} | set(range(101, 112)) | set(range(136, 154))
               | set(range(198, 211)))
    full = np.linspace(0.4, 2.5, 210)
    return tuple(float(round(full[b - 1], 5)) for b in range(1, 211) if b not in removed)


@lru_cache(maxsize=8)
def load_cube(path: str, kind: str):
    """-> (cube (B, H, W) as stored, wavelengths, labels or None)."""
    d = sio.loadmat(path)
    if kind == "salinas_a":
        cube = np.ascontiguousarray(d["salinasA_corrected"].transpose(2, 0, 1))
        gt = sio.loadmat(str(Path(path).with_name("salinas_a_gt.mat")))["salinasA_gt"]
        return cube, salinas_wavelengths(), np.asarray(gt)
    if kind == "samson":
        n = int(np.asarray(d["lines"]).item())
        m = int(np.asarray(d["cols"]).item())
        y = np.asarray(d["Y"])
        cube = np.ascontiguousarray(y.reshape((y.shape[0], n, m), order="F").astype(np.float32))
        wl = tuple(float(round(v, 5)) for v in np.linspace(0.401, 0.889, y.shape[0]))
        return cube, wl, np.asarray(d["S_GT"], dtype=np.float32)
    if kind == "jasper_ridge":
        n, m = int(np.asarray(d["nRow"]).item()), int(np.asarray(d["nCol"]).item())
        y = np.asarray(d["Y"])
        cube = np.ascontiguousarray(y.reshape((y.shape[0], n, m), order="F"))
        bands = np.asarray(d["SlectBands"]).ravel().astype(int)
        full = np.linspace(0.38, 2.5, int(np.asarray(d["nBand"]).item()))
        return cube, tuple(float(round(full[b - 1], 5)) for b in bands), None
    if kind == "urban":
        cube = np.ascontiguousarray(np.asarray(d["im"]).transpose(2, 0, 1).astype(np.float32))
        return cube, urban_wavelengths(), None
    raise ValueError(kind)


def salinas_fractions(gt_patch: np.ndarray) -> dict[int, float]:
    v, n = np.unique(gt_patch, return_counts=True)
    return {int(a): float(b) / gt_patch.size for a, b in zip(v, n) if a in SALINAS_CLASSES}


def salinas_captions(fr: dict[int, float]) -> list[str]:
    order = sorted(fr, key=lambda k: -fr[k])
    main = SALINAS_CLASSES[order[0]][1]
    mix = f"{percent(fr[order[0]])} {main}"
    if len(order) > 1 and fr[order[1]] >= 0.1:
        mix += f" and {percent(fr[order[1]])} {SALINAS_CLASSES[order[1]][1]}"
    return dedupe([
        f"an AVIRIS hyperspectral image of fields of {main} in the Salinas Valley, California",
        f"hyperspectral patch of farmland: {mix}",
        f"a crop field of {main} seen by an airborne imaging spectrometer",
        f"{main} in a 204-band hyperspectral image, 0.4 to 2.5 micrometres",
    ])


def samson_captions(ab: dict[str, float]) -> list[str]:
    order = sorted(ab, key=lambda k: -ab[k])
    main = SAMSON_WORDS[order[0]]
    parts = [f"{percent(ab[k])} {SAMSON_WORDS[k]}" for k in order if ab[k] >= 0.05]
    second = SAMSON_WORDS[order[1]] if ab[order[1]] >= 0.15 else None
    mostly = f"mostly {main}" + (f" with some {second}" if second else "")
    return dedupe([
        f"a hyperspectral image of {mostly}",
        f"hyperspectral patch, visible and near infrared: {', '.join(parts)}",
        f"{mostly}, seen by an imaging spectrometer in 156 bands",
        f"a scene dominated by {main} in a hyperspectral image",
    ])


class _HSI(EODataset):
    modality = "hyperspectral"
    generic_templates = AIRBORNE_TEMPLATES  # AVIRIS and HYDICE fly on aircraft
    splits = ("train", "test")
    classes = ()
    file = ""
    sensor = ""

    def _index(self):
        path = self.folder("hsi", self.file)
        cube, _, labels = load_cube(str(path), self.name)
        _, h, w = cube.shape
        cut = int(round(TRAIN_FRACTION * w))
        if self.split == "train":
            cols = patch_starts(cut, PATCH, STRIDE)
        else:
            cols = [cut + c for c in patch_starts(w - cut, PATCH, STRIDE)]
        recs = []
        for r in patch_starts(h, PATCH, STRIDE):
            for c in cols:
                if self._keep(labels, r, c):
                    recs.append((r, c))
        return recs

    def _keep(self, labels, r, c) -> bool:
        return True

    def _describe(self, labels, r, c) -> tuple[str | None, list[str], dict]:
        return None, [], {}

    def _load(self, rec):
        r, c = rec
        path = self.root / "hsi" / self.file
        cube, wl, labels = load_cube(str(path), self.name)
        pix = cube[:, r:r + PATCH, c:c + PATCH].copy()
        label, captions, meta = self._describe(labels, r, c)
        return check_sample(Sample(
            pixels=pix,
            wavelengths=wl,
            modality="hyperspectral",
            sensor=self.sensor,
            captions=captions,
            label=label,
            source=self.name,
            key=f"hsi/{self.file}#r{r}c{c}s{PATCH}",
            meta={"path": str(path), "split": self.split, "row": r, "col": c, **meta},
        ))


class SalinasA(_HSI):
    name = "salinas_a"
    file = "salinas_a_corrected.mat"
    sensor = "aviris-salinas"
    classes = tuple(v[0] for v in SALINAS_CLASSES.values())
    class_words = {v[0]: v[1] for v in SALINAS_CLASSES.values()}
    templates = ("a hyperspectral image of a field of {}", "farmland planted with {}")

    def _keep(self, gt, r, c):
        return (gt[r:r + PATCH, c:c + PATCH] > 0).mean() >= MIN_LABELLED

    def _describe(self, gt, r, c):
        fr = salinas_fractions(gt[r:r + PATCH, c:c + PATCH])
        top = max(fr, key=lambda k: (fr[k], -k))
        return SALINAS_CLASSES[top][0], salinas_captions(fr), {
            "fractions": {SALINAS_CLASSES[k][0]: v for k, v in fr.items()}}


class Samson(_HSI):
    name = "samson"
    file = "samson.mat"
    sensor = "samson-hsi"
    classes = SAMSON_ENDMEMBERS
    class_words = SAMSON_WORDS
    templates = ("a hyperspectral image dominated by {}",)

    def _describe(self, s, r, c):
        mean = s[r:r + PATCH, c:c + PATCH].reshape(-1, 3).mean(0)
        ab = {k: float(v) for k, v in zip(SAMSON_ENDMEMBERS, mean)}
        top = max(ab, key=ab.get)
        return top, samson_captions(ab), {"abundances": ab}


class JasperRidge(_HSI):
    name = "jasper_ridge"
    file = "jasper_ridge_r198.mat"
    sensor = "aviris-jasper-ridge"


class Urban(_HSI):
    name = "urban"
    file = "urban_sub_r162.mat"
    sensor = "hydice-urban"
