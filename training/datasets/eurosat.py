"""EuroSAT (Helber et al. 2019, MIT): Sentinel-2 64x64 tiles, one land-cover class per tile.

- eurosat_rgb: `eurosat_rgb/{train,val}/<Class>/<Class>_<n>.jpg`, 8-bit B4 B3 B2 (5 classes).
- eurosat_ms: `eurosat_ms/{train,test}/<Class>/<Class>_<n>.tif`, 13 bands uint16 in EuroSAT's
  order (B8A last: registry sensor `sentinel2-eurosat`), 10 classes.
label = the folder name exactly. The two share file names for the same EuroSAT patch (73 of them
here, some in different splits of the two folders), so pair_key = "eurosat/<Class>_<n>".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from PIL import Image

from ._text import dedupe
from .base import EODataset, Sample, check_sample, sensor_wavelengths

CLASS_WORDS = {
    "AnnualCrop": "annual crop land",
    "Forest": "forest",
    "HerbaceousVegetation": "herbaceous vegetation",
    "Highway": "highway",
    "Industrial": "industrial buildings",
    "Pasture": "pasture",
    "PermanentCrop": "permanent crop such as orchards or vineyards",
    "Residential": "residential buildings",
    "River": "river",
    "SeaLake": "sea or lake",
}

# A second wording per class, so captions are not all one noun phrase.
_ALT = {
    "AnnualCrop": "fields of annual crops",
    "Forest": "woodland with dense tree cover",
    "HerbaceousVegetation": "land covered by grass and other herbaceous plants",
    "Highway": "a highway or major road crossing the land",
    "Industrial": "an industrial area with large buildings",
    "Pasture": "grazing pasture",
    "PermanentCrop": "orchards or vineyards",
    "Residential": "a residential area with houses",
    "River": "a river flowing through the landscape",
    "SeaLake": "open water of a sea or lake",
}


def eurosat_captions(cls: str, multispectral: bool) -> list[str]:
    w, alt = CLASS_WORDS[cls], _ALT[cls]
    if multispectral:
        caps = [
            f"a Sentinel-2 multispectral image of {w}",
            f"13-band Sentinel-2 satellite tile showing {alt}",
            f"{w} in a multispectral satellite image",
            f"a satellite view of {w}, 10 m resolution, all Sentinel-2 bands",
        ]
    else:
        caps = [
            f"a Sentinel-2 true-colour satellite image of {w}",
            f"a satellite photo of {alt}",
            f"{w} seen from space",
            f"an RGB satellite tile of {w} at 10 m resolution",
        ]
    return dedupe(caps)


class _EuroSAT(EODataset):
    class_words = CLASS_WORDS
    folder_name = ""
    suffix = ""

    def _index(self) -> list[tuple[Path, str]]:
        base = self.folder(self.folder_name, self.split)
        out = []
        for cls in self.classes:
            d = base / cls
            if not d.is_dir():
                continue
            out += [(p, cls) for p in sorted(d.glob(f"*{self.suffix}"))]
        return out

    def _sample(self, path: Path, cls: str, pixels: np.ndarray, sensor: str) -> Sample:
        return check_sample(Sample(
            pixels=pixels,
            wavelengths=sensor_wavelengths(sensor),
            modality=self.modality,
            sensor=sensor,
            captions=eurosat_captions(cls, self.modality == "multispectral"),
            label=cls,
            source=self.name,
            key=self.rel(path),
            pair_key=f"eurosat/{path.stem}",
            meta={"path": str(path), "split": self.split, "class_words": CLASS_WORDS[cls]},
        ))


class EuroSATRGB(_EuroSAT):
    name = "eurosat_rgb"
    modality = "rgb"
    splits = ("train", "val")
    classes = ("Forest", "Industrial", "Pasture", "Residential", "River")
    folder_name = "eurosat_rgb"
    suffix = ".jpg"

    def _load(self, rec):
        path, cls = rec
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1).copy()
        return self._sample(path, cls, arr, "sentinel2-rgb")


class EuroSATMS(_EuroSAT):
    name = "eurosat_ms"
    modality = "multispectral"
    splits = ("train", "test")
    classes = ("AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial",
               "Pasture", "PermanentCrop", "Residential", "River", "SeaLake")
    folder_name = "eurosat_ms"
    suffix = ".tif"

    def _load(self, rec):
        path, cls = rec
        with rasterio.open(path) as ds:
            arr = ds.read()
        if arr.shape[0] != 13:
            raise ValueError(f"{path}: expected 13 bands, found {arr.shape[0]}")
        return self._sample(path, cls, arr, "sentinel2-eurosat")
