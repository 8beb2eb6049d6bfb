"""OMBRIA (Drakonakis et al. 2022; no licence stated: research use only): 256x256 chips of the
same places before and after floods, Sentinel-1 (one 8-bit grey band, VV) and Sentinel-2
(8-bit true colour), with the Copernicus EMS flood mask (255 = flooded).

Layout on disk: `ombria/{s1,s2}/<split>/{before,after,mask}/`, splits `train`, `test`,
`2021_albania`, `2021_france`, `2021_guyana`, `2021_timor`. File names differ by split
(`s1_before_0001.jpg` / `s1_mask_0001.png` in train/test, `imbefore_1.jpg` / `gt_1.png` in the
2021 events) and the mask is stored once per sensor (the S1 and S2 masks are identical).

One Sample per (chip, phase). Label rule: an after-image is "flooded" when more than
FLOOD_THRESHOLD (1 %) of its mask pixels are flooded; before-images and after-images at or below
the threshold are "not flooded" (the mask is the event's flood extent, so a before-image shows
no flood water). pair_key = f"{split}/{chip}/{phase}" links the S1 and S2 samples.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from ._text import amount_words, dedupe, percent
from .base import EODataset, Sample, check_sample, sensor_wavelengths

FLOOD_THRESHOLD = 0.01
PHASES = ("before", "after")
_NUM = re.compile(r"(\d+)\.(?:jpg|jpeg|png)$", re.I)


def flooded_fraction(mask_path: Path) -> float:
    with Image.open(mask_path) as im:
        m = np.asarray(im.convert("L"))
    return float((m > 127).mean())


def event_phrase(split: str) -> str:
    if split.startswith("2021_"):
        return f"the 2021 floods in {split.split('_', 1)[1].title()}"
    return "a flood"


def ombria_captions(sensor: str, phase: str, frac: float, split: str) -> list[str]:
    ev = event_phrase(split)
    later = f" in {ev}" if split.startswith("2021_") else ""
    if sensor == "s1":
        what, short = "Sentinel-1 radar image", "Sentinel-1 SAR chip"
    else:
        what, short = "Sentinel-2 true-colour image", "Sentinel-2 optical chip"
    if phase == "before":
        caps = [
            f"a {what} of an area before {ev}",
            f"{short} taken before the flood: no flood water yet",
            f"pre-flood {what} of land that was later flooded{later}",
            f"the same place before flooding, seen in a {what}",
            # MiniLM reads "not flooded" / "before the flood" close to "flooded" (negation and
            # the shared word): phrasings without the word say what the image does show
            f"dry land with rivers in their normal channels, a {what}",
            f"a {what} of dry ground with no standing water",
        ]
    elif frac > FLOOD_THRESHOLD:
        p = percent(frac, fine=True)
        caps = [
            f"a {what} after {ev}: about {p} of the area is flooded",
            f"{short} after the flood, {amount_words(frac)} of the land under water ({p} flooded)",
            f"flooded area after {ev}, {p} of the chip covered by flood water, {what}",
            f"post-flood {what} showing {amount_words(frac)} of the land inundated",
        ]
    else:
        p = percent(frac, fine=True)
        caps = [
            f"a {what} after {ev}, with almost no flooding in this area ({p} flooded)",
            f"{short} after the flood: the land here stayed mostly dry",
            f"post-flood {what} of an area barely touched by the flood water ({p})",
            f"dry land with no standing water, a {what}",
        ]
    return dedupe(caps)


class _Ombria(EODataset):
    modality = ""
    sensor_dir = ""
    sensor = ""
    splits = ("train", "test", "2021_albania", "2021_france", "2021_guyana", "2021_timor")
    classes = ("flooded", "not flooded")
    # The zero-shot prompts say what a dry chip shows, not "land that is not flooded": MiniLM
    # reads negation weakly (the two prompts are 0.85 apart), so the negated wording sat next to
    # "flooded". The wording was chosen on the dev split (`python -m training.prompt_choice`,
    # docs/MODEL_CARD.md), as the training captions of dry chips were.
    class_words = {"flooded": "a flooded area", "not flooded": "dry ground with no standing water"}
    templates = ("{} after heavy rain", "a chip of {}")

    def _index(self):
        base = self.folder("ombria", self.sensor_dir, self.split)
        masks = {}
        for p in (base / "mask").iterdir():
            m = _NUM.search(p.name)
            if m:
                masks[str(int(m.group(1)))] = p
        recs = []
        for phase in PHASES:
            for p in sorted((base / phase).iterdir()):
                m = _NUM.search(p.name)
                if not m:
                    continue
                chip = str(int(m.group(1)))
                if chip not in masks:
                    raise FileNotFoundError(f"{p}: no mask for chip {chip} in {base / 'mask'}")
                recs.append((chip, phase, p, masks[chip]))
        recs.sort(key=lambda r: (int(r[0]), PHASES.index(r[1])))
        return recs

    def _read(self, path: Path) -> np.ndarray:
        raise NotImplementedError

    def _load(self, rec):
        chip, phase, path, mask = rec
        frac = flooded_fraction(mask)
        label = "flooded" if phase == "after" and frac > FLOOD_THRESHOLD else "not flooded"
        return check_sample(Sample(
            pixels=self._read(path),
            wavelengths=sensor_wavelengths(self.sensor),
            modality=self.modality,
            sensor=self.sensor,
            captions=ombria_captions(self.sensor_dir, phase, frac, self.split),
            label=label,
            source=self.name,
            key=self.rel(path),
            pair_key=f"{self.split}/{chip}/{phase}",
            meta={"split": self.split, "chip": chip, "phase": phase, "path": str(path),
                  "mask": str(mask), "flooded_fraction": frac},
        ))


class OmbriaS1(_Ombria):
    name = "ombria_s1"
    modality = "sar"
    sensor_dir = "s1"
    sensor = "sentinel1-vv"

    def _read(self, path):
        with Image.open(path) as im:
            return np.asarray(im.convert("L"), dtype=np.uint8)[None].copy()


class OmbriaS2(_Ombria):
    name = "ombria_s2"
    modality = "rgb"
    sensor_dir = "s2"
    sensor = "sentinel2-rgb"

    def _read(self, path):
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1).copy()
