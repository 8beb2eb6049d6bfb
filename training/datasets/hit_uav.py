"""HIT-UAV (Suo et al., Scientific Data 2023; CC BY 4.0): 8-bit thermal frames from a drone's
long-wave infrared camera, downscaled to 320x256, with boxes and per-image metadata in
`hit_uav/annotations.json` (split, scenario day/night, altitude_m, camera_angle_deg, weather).

The JPEGs on disk are single-channel ("L") already; any 3-channel grey copy would be reduced to
one band. Sensor `thermal-lwir` (engine.modalities.LWIR_UM). label = scenario ("day"/"night").
Captions: time of day, altitude, camera angle, weather, and object counts by type ("3 people and
12 cars"); DontCare boxes are not counted.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
from PIL import Image

from engine.modalities import LWIR_UM

from ._text import count_phrase, dedupe, join_words
from .base import AIRBORNE_TEMPLATES, EODataset, Sample, check_sample

OBJECT_NOUNS = {  # annotation label -> (singular, plural)
    "Person": ("person", "people"),
    "Car": ("car", "cars"),
    "Bicycle": ("bicycle", "bicycles"),
    "OtherVehicle": ("other vehicle", "other vehicles"),
}


def object_counts(objects: list[dict]) -> dict[str, int]:
    c = Counter(o["label"] for o in objects)
    return {k: c[k] for k in OBJECT_NOUNS if c.get(k)}


def objects_phrase(counts: dict[str, int]) -> str:
    if not counts:
        return "no people or vehicles"
    return join_words([count_phrase(n, *OBJECT_NOUNS[k]) for k, n in counts.items()])


def hit_uav_captions(rec: dict) -> list[str]:
    counts = object_counts(rec["objects"])
    objs = objects_phrase(counts)
    night = rec["scenario"] == "night"
    tod = "night-time" if night else "daytime"
    when = "at night" if night else "during the day"
    alt, ang = rec["altitude_m"], rec["camera_angle_deg"]
    weather = rec.get("weather")
    if weather:
        wx = "in clear weather" if (night and weather == "sunny") else f"in {weather} weather"
    else:
        wx = ""
    return dedupe([
        f"a {tod} thermal infrared image taken by a drone at {alt} m altitude showing {objs}",
        f"UAV thermal camera view {when}, {alt} m above the ground, camera angle {ang}°: {objs}",
        f"{objs} seen in a long-wave infrared drone image {when} {wx}",
        f"thermal image from a drone flying at {alt} m {when}, with {objs}",
    ])


class HitUAV(EODataset):
    generic_templates = AIRBORNE_TEMPLATES
    name = "hit_uav"
    modality = "infrared"
    splits = ("train", "val", "test")
    classes = ("day", "night")
    class_words = {"day": "a scene during the day", "night": "a scene at night"}
    templates = ("a thermal infrared drone image of {}", "a UAV thermal camera image of {}")

    def _index(self):
        path = self.folder("hit_uav", "annotations.json")
        with open(path) as f:
            recs = [r for r in json.load(f) if r["split"] == self.split]
        recs.sort(key=lambda r: r["image"])
        return recs

    def _load(self, rec):
        path = self.root / "hit_uav" / rec["image"]
        with Image.open(path) as im:
            arr = np.asarray(im)
        if arr.ndim == 3:  # grey stored as RGB: one band is enough
            arr = arr[..., 0]
        arr = np.ascontiguousarray(arr, dtype=np.uint8)[None]
        counts = object_counts(rec["objects"])
        return check_sample(Sample(
            pixels=arr,
            wavelengths=(LWIR_UM,),
            modality="infrared",
            sensor="thermal-lwir",
            captions=hit_uav_captions(rec),
            label=rec["scenario"],
            source=self.name,
            key=self.rel(path),
            meta={"path": str(path), "split": self.split, "altitude_m": rec["altitude_m"],
                  "camera_angle_deg": rec["camera_angle_deg"], "weather": rec.get("weather"),
                  "counts": counts},
        ))
