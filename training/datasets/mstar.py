"""MSTAR public release (AFRL/DARPA; no licence stated: research use only): 128x128 8-bit grey
X-band SAR chips of ten military vehicles, `mstar/{train,val}/<CLASS>/*.jpeg`; train = 17°
depression angle, val = 15°. label = class folder name. Wavelength: X-band nominal value
(engine.modalities.X_BAND_UM), registry sensor `x-band-sar`.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from engine.modalities import X_BAND_UM

from ._text import article, dedupe
from .base import AIRBORNE_TEMPLATES, EODataset, Sample, check_sample

# class -> (full description, short generic noun)
VEHICLES = {
    "2S1": ("2S1 self-propelled howitzer", "self-propelled artillery gun"),
    "BMP2": ("BMP-2 infantry fighting vehicle", "tracked infantry fighting vehicle"),
    "BRDM2": ("BRDM-2 armoured reconnaissance vehicle", "wheeled armoured scout car"),
    "BTR60": ("BTR-60 armoured personnel carrier", "eight-wheeled armoured personnel carrier"),
    "BTR70": ("BTR-70 armoured personnel carrier", "eight-wheeled armoured personnel carrier"),
    "D7": ("D7 bulldozer", "tracked bulldozer"),
    "T62": ("T-62 tank", "main battle tank"),
    "T72": ("T-72 tank", "main battle tank"),
    "ZIL131": ("ZIL-131 truck", "military cargo truck"),
    "ZSU234": ("ZSU-23-4 self-propelled anti-aircraft gun", "tracked anti-aircraft gun"),
}
DEPRESSION = {"train": 17, "val": 15}


def mstar_captions(cls: str, depression: int) -> list[str]:
    full, generic = VEHICLES[cls]
    return dedupe([
        f"an X-band synthetic aperture radar image of {article(full)} {full}",
        f"X-band SAR chip of {article(generic)} {generic} ({cls})",
        f"airborne radar image of {article(full)} {full} seen at a {depression}° depression angle",
        f"high resolution SAR signature of {article(full)} {full} on the ground",
    ])


class MSTAR(EODataset):
    generic_templates = AIRBORNE_TEMPLATES
    name = "mstar"
    modality = "sar"
    splits = ("train", "val")
    classes = tuple(VEHICLES)
    class_words = {c: f"{article(v[0])} {v[0]}" for c, v in VEHICLES.items()}
    templates = ("an X-band radar chip of {}", "a military vehicle: {}")

    def _index(self):
        base = self.folder("mstar", self.split)
        recs = []
        for cls in self.classes:
            d = base / cls
            if d.is_dir():
                recs += [(p, cls) for p in sorted(d.glob("*.jpeg"))]
        return recs

    def _load(self, rec):
        path, cls = rec
        with Image.open(path) as im:
            arr = np.asarray(im.convert("L"), dtype=np.uint8)[None].copy()
        return check_sample(Sample(
            pixels=arr,
            wavelengths=(X_BAND_UM,),
            modality="sar",
            sensor="x-band-sar",
            captions=mstar_captions(cls, DEPRESSION[self.split]),
            label=cls,
            source=self.name,
            key=self.rel(path),
            meta={"path": str(path), "split": self.split, "depression_deg": DEPRESSION[self.split],
                  "vehicle": VEHICLES[cls][0]},
        ))
