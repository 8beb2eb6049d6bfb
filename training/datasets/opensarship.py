"""OpenSARShip (Huang et al. 2017; no licence stated: research use only): Sentinel-1 IW ship
chips, `opensarship/patches/<scene>/<Type>_x<col>_y<row>.tif`, calibrated linear power float32,
no CRS; the scene's AIS/MarineTraffic record in `opensarship/ais/<scene>.xml`.

What the files say (differs from the README's "2 bands (VV, VH)"): the dual-polarisation scenes
(`1SDV`) give 2-band chips (VV, VH: registry `sentinel1`), the single-polarisation scenes (`1SSV`)
1-band chips (VV: `sentinel1-vv`) — 171 and 180 chips. Chips are 13 to 185 px; the one chip
smaller than 16 px (the encoder's minimum side) is skipped. The AIS XML files end with a
malformed `<\\ShipList>`, repaired before parsing; each chip's ship is the record whose
Center_x/Center_y equal the x/y in the file name (all 351 match).

label = ship type from the file name ("Cargo", "Tanker", "Other Type", "Passenger", "Tug",
"Law Enforcement", "Search"). Split: no official one; whole scenes go to test (no scene in
both), chosen by `base.group_split` (stable hash order, ~20 % of chips).
"""

from __future__ import annotations

import re
import warnings
import xml.etree.ElementTree as ET
from functools import lru_cache
from pathlib import Path

import numpy as np
import rasterio

from ._text import article, dedupe
from .base import EODataset, Sample, check_sample, group_split, sensor_wavelengths

MIN_SIDE = 16
_NAME = re.compile(r"^(?P<type>.+)_x(?P<x>\d+)_y(?P<y>\d+)\.tif$")
TYPE_WORDS = {
    "Cargo": "cargo ship",
    "Tanker": "tanker",
    "Other Type": "ship of another type",
    "Passenger": "passenger ship",
    "Tug": "tug",
    "Law Enforcement": "law enforcement vessel",
    "Search": "search and rescue vessel",
}
_UNINFORMATIVE = {"", "NA", "N/A", "UNSPECIFIED", "RESERVED", "NAN"}


@lru_cache(maxsize=16)
def read_ais(xml_path: str) -> dict[tuple[int, int], dict]:
    """(Center_x, Center_y) -> flat dict of the ship's fields."""
    text = Path(xml_path).read_text(encoding="utf-8", errors="replace")
    text = text.replace("<\\ShipList>", "</ShipList>")
    root = ET.fromstring(text)
    out = {}
    for ship in root.findall("ship"):
        rec = {}
        for section in ship:
            for e in section:
                rec[f"{section.tag}/{e.tag}"] = (e.text or "").strip()
        try:
            key = (int(float(rec["SARShipInformation/Center_x"])),
                   int(float(rec["SARShipInformation/Center_y"])))
        except (KeyError, ValueError):
            continue
        out[key] = rec
    return out


def _num(rec: dict, key: str) -> float | None:
    try:
        v = float(rec.get(key, ""))
    except ValueError:
        return None
    return v if np.isfinite(v) else None


_VESSEL_NOUNS = {"ship", "carrier", "tanker", "vessel", "tug", "dredger", "reefer", "boat", "ferry"}


def vessel_words(elaborated: str) -> str:
    """MarineTraffic 'Elaborated_type' -> a noun phrase: 'Oil/Chemical Tanker' -> 'oil/chemical
    tanker', 'LPG Tanker' -> 'LPG tanker', 'General Cargo' -> 'general cargo ship',
    'Fishing' -> 'fishing vessel'; hazard suffixes ('Tanker - Hazard A (Major)') dropped."""
    base = elaborated.split(" - ")[0].strip()
    if base.lower() == "law enforce":
        return "law enforcement vessel"
    words = ["/".join(p if p.isupper() and len(p) > 1 else p.lower() for p in w.split("/"))
             for w in base.split()]
    if not words:
        return ""
    last = words[-1].split("/")[-1].lower()
    if last not in _VESSEL_NOUNS:
        words.append("vessel" if last in {"fishing", "survey", "supply", "disposal"} else "ship")
    return " ".join(words)


def ship_facts(rec: dict | None) -> dict:
    """Length (m), detailed type, speed (knots), in-port / other ships from the AIS record."""
    if not rec:
        return {}
    facts: dict = {}
    length = _num(rec, "AISShipInformation/Length")
    if not length or length <= 0:
        length = _num(rec, "MarineTrafficInformation/Length_overall")
    if length and 5 <= length <= 500:
        facts["length_m"] = int(round(length))
    et = rec.get("MarineTrafficInformation/Elaborated_type", "")
    if et.upper() not in _UNINFORMATIVE:
        facts["detailed_type"] = vessel_words(et)
    sog = _num(rec, "AISShipInformation/Sog")  # 0.1 knot units; 1023 = not available
    if sog is not None and 0 <= sog < 1023:
        facts["speed_kn"] = round(sog / 10.0, 1)
    if rec.get("ChipNoise/Port") == "1":
        facts["in_port"] = True
    if rec.get("ChipNoise/Multi_ship") == "1":
        facts["other_ships"] = True
    return facts


def opensarship_captions(ship_type: str, n_bands: int, facts: dict) -> list[str]:
    noun = TYPE_WORDS.get(ship_type, ship_type.lower())
    pol = "dual-polarisation VV and VH" if n_bands == 2 else "single-polarisation VV"
    where = "in a port" if facts.get("in_port") else "at sea"
    caps = [
        f"a Sentinel-1 radar image of {article(noun)} {noun} {where}",
        f"{pol} Sentinel-1 SAR chip of {article(noun)} {noun}",
    ]
    detail = []
    if "length_m" in facts:
        detail.append(f"about {facts['length_m']} m long")
    dt = facts.get("detailed_type")
    if dt and dt != noun:
        detail.append(f"{article(dt)} {dt}")
    sp = facts.get("speed_kn")
    if sp is not None:
        detail.append("nearly stationary" if sp < 1 else f"moving at about {round(sp)} knots")
    if detail:
        caps.append(f"C-band synthetic aperture radar image of {article(noun)} {noun}, "
                    + ", ".join(detail))
    else:
        caps.append(f"C-band synthetic aperture radar image of a single {noun} on the water")
    other = " next to other ships" if facts.get("other_ships") else ""
    caps.append(f"a bright ship echo on dark water: {article(noun)} {noun}{other}, "
                f"seen by Sentinel-1")
    return dedupe(caps)


@lru_cache(maxsize=4)
def _scene_split(patch_root: str) -> frozenset[str]:
    root = Path(patch_root)
    sizes = {d.name: len(list(d.glob("*.tif"))) for d in root.iterdir() if d.is_dir()}
    return frozenset(group_split(sizes, 0.2))


class OpenSARShip(EODataset):
    name = "opensarship"
    modality = "sar"
    splits = ("train", "test")
    classes = tuple(TYPE_WORDS)
    class_words = {k: f"{article(v)} {v}" for k, v in TYPE_WORDS.items()}
    templates = ("a Sentinel-1 radar chip of {} at sea", "a ship detected by radar: {}")

    def _index(self):
        patches = self.folder("opensarship", "patches")
        test = _scene_split(str(patches))
        recs = []
        self.skipped: list[str] = []
        for scene in sorted(d for d in patches.iterdir() if d.is_dir()):
            if (scene.name in test) != (self.split == "test"):
                continue
            for p in sorted(scene.glob("*.tif")):
                m = _NAME.match(p.name)
                if not m:
                    continue
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    with rasterio.open(p) as ds:
                        h, w = ds.height, ds.width
                if min(h, w) < MIN_SIDE:
                    self.skipped.append(self.rel(p))
                    continue
                recs.append((p, m.group("type"), int(m.group("x")), int(m.group("y"))))
        return recs

    def _load(self, rec):
        path, ship_type, x, y = rec
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # no geotransform: expected
            with rasterio.open(path) as ds:
                arr = ds.read().astype(np.float32, copy=False)
        bad = ~np.isfinite(arr) | (arr < 0)
        if bad.any():
            arr = np.where(bad, 0.0, arr).astype(np.float32)
        sensor = "sentinel1" if arr.shape[0] == 2 else "sentinel1-vv"
        ais_path = self.root / "opensarship" / "ais" / f"{path.parent.name}.xml"
        ais = read_ais(str(ais_path)).get((x, y)) if ais_path.exists() else None
        facts = ship_facts(ais)
        return check_sample(Sample(
            pixels=arr,
            wavelengths=sensor_wavelengths(sensor),
            modality="sar",
            sensor=sensor,
            captions=opensarship_captions(ship_type, arr.shape[0], facts),
            label=ship_type,
            source=self.name,
            key=self.rel(path),
            meta={"path": str(path), "split": self.split, "scene": path.parent.name,
                  "x": x, "y": y, **facts,
                  "mmsi": (ais or {}).get("AISShipInformation/MMSI")},
        ))
