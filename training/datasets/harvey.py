"""Hurricane Harvey building chips (Cao & Choe 2018; no licence stated: research use only):
128x128 GeoEye-1 8-bit RGB, `harvey/{train,val,test}/{damage,no_damage}/<lon>_<lat>.jpeg`.

Label rule: folder `damage` -> "damaged" (the source's "flooded/damaged" class), `no_damage` ->
"not damaged". Location (WGS84) comes from the file name.

Deduplication (the files disagree with the README's "balanced 3000/500/500"): 92 files are
byte-identical copies of a file with the same name and class elsewhere (mostly val/test copies
of train files). A file whose (name, class) already occurs in an earlier split (train < val <
test) or earlier in the same split is dropped, so no image is in two splits. Another 250 names
occur with *different* images under both classes (the source's own repeated locations): those
are kept as they are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ._text import dedupe
from .base import EODataset, Sample, check_sample, sensor_wavelengths

FOLDER_LABEL = {"damage": "damaged", "no_damage": "not damaged"}
SPLIT_ORDER = ("train", "val", "test")


def parse_lon_lat(name: str) -> tuple[float, float]:
    lon, lat = Path(name).stem.split("_")
    return float(lon), float(lat)


def harvey_captions(label: str, lon: float, lat: float) -> list[str]:
    where = f"near {abs(lat):.2f}°N {abs(lon):.2f}°W"
    if label == "damaged":
        caps = [
            "a GeoEye-1 satellite image of a flooded or damaged building after Hurricane Harvey "
            "in Texas, 2017",
            "building damaged by hurricane flooding, seen from above after Hurricane Harvey",
            f"aerial view of a flooded house in Texas after the 2017 hurricane, {where}",
            "a very high resolution satellite image of storm damage and flood water around "
            "a building",
        ]
    else:
        caps = [
            "a GeoEye-1 satellite image of an undamaged building after Hurricane Harvey "
            "in Texas, 2017",
            "a building with no flood damage, seen from above after Hurricane Harvey",
            f"aerial view of a dry, intact house in Texas after the 2017 hurricane, {where}",
            "a very high resolution satellite image of a building left undamaged by the storm",
        ]
    return dedupe(caps)


class Harvey(EODataset):
    name = "harvey"
    modality = "rgb"
    splits = SPLIT_ORDER
    classes = ("damaged", "not damaged")
    class_words = {"damaged": "buildings flooded or damaged by a hurricane",
                   "not damaged": "undamaged buildings"}
    templates = ("{} after Hurricane Harvey", "a very high resolution satellite image of {}")

    def _index(self):
        self.folder("harvey", self.split)
        seen: set[tuple[str, str]] = set()
        recs = []
        self.dropped: list[str] = []
        for split in SPLIT_ORDER[: SPLIT_ORDER.index(self.split) + 1]:
            for folder in ("damage", "no_damage"):
                d = self.root / "harvey" / split / folder
                if not d.is_dir():
                    continue
                for p in sorted(d.glob("*.jpeg")):
                    ident = (p.name, folder)
                    if ident in seen:
                        if split == self.split:
                            self.dropped.append(self.rel(p))
                        continue
                    seen.add(ident)
                    if split == self.split:
                        recs.append((p, folder))
        return recs

    def _load(self, rec):
        path, folder = rec
        label = FOLDER_LABEL[folder]
        lon, lat = parse_lon_lat(path.name)
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1).copy()
        return check_sample(Sample(
            pixels=arr,
            wavelengths=sensor_wavelengths("geoeye1-rgb"),
            modality="rgb",
            sensor="geoeye1-rgb",
            captions=harvey_captions(label, lon, lat),
            label=label,
            source=self.name,
            key=self.rel(path),
            meta={"path": str(path), "split": self.split, "lon": lon, "lat": lat, "folder": folder},
        ))
