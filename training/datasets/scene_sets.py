"""Aerial scene sets with many concepts (RGB, 96x96 JPEG here): AID, UC Merced (+ UCM-captions),
UAVIC. They add airports, bridges, harbours, parking lots, storage tanks, solar panels, ... and
~14,000 human-written sentences to the label-made captions elsewhere.

- aid: `aid/{train,val}/<Class>/*.jpg`, 30 classes (Xia et al. 2017; Google Earth imagery,
  research use only). Captions: several remote-sensing phrasings of the class name (no human
  captions exist). Evaluate on `val` only.
- ucm: `ucm/{train,test}/<class>/<class>NN.jpg`, 21 classes (USGS orthoimagery, dataset "for
  research purposes"); `ucm/captions.tsv` holds ~5 human captions per *train* image (Qu et al.
  2016, no licence stated). Captions: the human ones plus two class phrasings (so class prompts
  and sentences meet). Evaluate on `test` only (it has no captions).
- uavic: `uavic/images/<NN>/<n>.jpg` + `uavic/captions.tsv` (drone photos over India, some
  oblique; no licence stated: research use). No class labels: the folders are scene types
  without names, so samples carry only their human captions (label None); uncaptioned images
  are skipped. Split: stable hash of the path, 20 % test (not used for evaluation; kept out of
  training so a held-out sample exists).
Registry sensor `rgb` (nominal R, G, B centres).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from ._text import dedupe
from .base import EODataset, Sample, check_sample, hash_split, sensor_wavelengths

# Remote-sensing phrasings for classes without human captions ("{}" = the class words).
SCENE_TEMPLATES = (
    "an aerial image of {}",
    "a satellite photo of {}",
    "a remote sensing image of {}",
    "an aerial photograph showing {}",
    "{} seen from above",
    "a high resolution satellite image of {}",
)

AID_WORDS = {
    "Airport": "an airport", "BareLand": "bare land", "BaseballField": "a baseball field",
    "Beach": "a beach", "Bridge": "a bridge over water", "Center": "a city centre",
    "Church": "a church", "Commercial": "a commercial area", "DenseResidential":
    "a dense residential area", "Desert": "a desert", "Farmland": "farmland",
    "Forest": "a forest", "Industrial": "an industrial area", "Meadow": "a meadow",
    "MediumResidential": "a medium density residential area", "Mountain": "mountains",
    "Park": "a park", "Parking": "a parking lot", "Playground": "a playground",
    "Pond": "a pond", "Port": "a port with ships", "RailwayStation": "a railway station",
    "Resort": "a resort", "River": "a river", "School": "a school",
    "SparseResidential": "a sparse residential area", "Square": "a city square",
    "Stadium": "a stadium", "StorageTanks": "storage tanks", "Viaduct": "a viaduct",
}
UCM_WORDS = {
    "agricultural": "agricultural fields", "airplane": "airplanes at an airport",
    "baseballdiamond": "a baseball diamond", "beach": "a beach", "buildings": "buildings",
    "chaparral": "chaparral shrubland", "denseresidential": "a dense residential area",
    "forest": "a forest", "freeway": "a freeway", "golfcourse": "a golf course",
    "harbor": "a harbour with boats", "intersection": "a road intersection",
    "mediumresidential": "a medium density residential area",
    "mobilehomepark": "a mobile home park", "overpass": "a highway overpass",
    "parkinglot": "a parking lot", "river": "a river", "runway": "an airport runway",
    "sparseresidential": "a sparse residential area", "storagetanks": "storage tanks",
    "tenniscourt": "a tennis court",
}


def class_captions(words: str) -> list[str]:
    return dedupe([t.format(words) for t in SCENE_TEMPLATES])


def _read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1).copy()


def _read_captions(tsv: Path, name: str) -> dict[str, list[str]]:
    if not tsv.is_file():
        raise FileNotFoundError(f"{name}: {tsv} not found; it holds the captions (path, caption) "
                                f"that come with the images: copy the dataset folder whole")
    out: dict[str, list[str]] = {}
    with open(tsv, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            out.setdefault(row["path"], []).append(row["caption"].strip())
    return out


class _SceneFolders(EODataset):
    """`<folder>/<split>/<class>/*.jpg`, one class per folder."""

    folder_name = ""
    generic_templates = SCENE_TEMPLATES
    split_dirs: dict[str, str] = {}

    def _index(self):
        base = self.folder(self.folder_name, self.split_dirs.get(self.split, self.split))
        recs = []
        for cls in self.classes:
            d = base / cls
            if d.is_dir():
                recs += [(p, cls) for p in sorted(d.glob("*.jpg"))]
        if not recs:
            raise FileNotFoundError(f"{self.name}: no <class>/*.jpg images under {base}; "
                                    f"expected the layout in ../shared/data/README.md")
        return recs

    def captions_of(self, path: Path, cls: str) -> list[str]:
        return class_captions(self.class_words[cls])

    def _load(self, rec):
        path, cls = rec
        return check_sample(Sample(
            pixels=_read_rgb(path),
            wavelengths=sensor_wavelengths("rgb"),
            modality="rgb",
            sensor="rgb",
            captions=self.captions_of(path, cls),
            label=cls,
            source=self.name,
            key=self.rel(path),
            meta={"path": str(path), "split": self.split},
        ))


class AID(_SceneFolders):
    name = "aid"
    modality = "rgb"
    folder_name = "aid"
    splits = ("train", "val")
    classes = tuple(AID_WORDS)
    class_words = AID_WORDS


class UCM(_SceneFolders):
    name = "ucm"
    modality = "rgb"
    folder_name = "ucm"
    splits = ("train", "test")
    classes = tuple(UCM_WORDS)
    class_words = UCM_WORDS

    def _index(self):
        recs = super()._index()
        self._human = _read_captions(self.root / "ucm" / "captions.tsv", self.name) \
            if self.split == "train" else {}
        return recs

    def captions_of(self, path: Path, cls: str) -> list[str]:
        rel = path.relative_to(self.root / "ucm").as_posix()
        human = self._human.get(rel, [])
        if not human:  # test images (and any uncaptioned one): the class phrasings, as AID
            return class_captions(self.class_words[cls])
        return dedupe(human + class_captions(self.class_words[cls])[:2])


class UAVIC(EODataset):
    name = "uavic"
    modality = "rgb"
    splits = ("train", "test")
    classes = ()
    generic_templates = SCENE_TEMPLATES

    def _index(self):
        self.folder("uavic", "images")
        caps = _read_captions(self.root / "uavic" / "captions.tsv", self.name)
        return [(self.root / "uavic" / p, c) for p, c in sorted(caps.items())
                if hash_split(f"uavic/{p}") == self.split and (self.root / "uavic" / p).is_file()]

    def _load(self, rec):
        path, caps = rec
        return check_sample(Sample(
            pixels=_read_rgb(path),
            wavelengths=sensor_wavelengths("rgb"),
            modality="rgb",
            sensor="rgb",
            captions=dedupe([f"a drone photo: {c}" if i == 0 else c for i, c in enumerate(caps)]),
            label=None,
            source=self.name,
            key=self.rel(path),
            meta={"path": str(path), "split": self.split, "folder": path.parent.name},
        ))


__all__ = ["AID", "UCM", "UAVIC"]
