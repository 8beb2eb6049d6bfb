"""HRSID mini test set (Wei et al. 2020; no licence stated: research use only): 36 harbour and
sea SAR scenes, 400x400 (downscaled from 800x800), `hrsid/images/*.jpg` + `hrsid/masks/*.png`.

What the files say: the JPEGs are 3-channel grey (identical channels) -> one band; the masks are
RGB PNGs with ships in the green channel (0/255) -> ship pixels = any channel > 127. Ships are
counted as 8-connected components of the mask (4-connectivity splits 3 downscaled ships into
diagonal pieces). The source mixes Sentinel-1 (C-band) and TerraSAR-X/TanDEM-X (X-band) and the
file names do not say which; most HRSID panoramas are Sentinel-1, so the nominal C-band value
(engine.modalities.C_BAND_UM) is used for all, under the descriptive sensor name "hrsid-sar".
Captions give the ship count only (harbour vs open sea cannot be told reliably from the data).
Not a classification source: label None.

Split: crops of one panorama (the `P00NN` prefix) stay together; whole panoramas go to test via
`base.group_split` (stable hash order, ~20 % of images).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from engine.modalities import C_BAND_UM

from ._text import count_phrase, dedupe
from .base import EODataset, Sample, check_sample, group_split


def ship_count(mask_path: Path) -> tuple[int, float]:
    with Image.open(mask_path) as im:
        m = np.asarray(im)
    ships = (m.max(axis=-1) if m.ndim == 3 else m) > 127
    _, n = ndimage.label(ships, structure=np.ones((3, 3), dtype=bool))
    return int(n), float(ships.mean())


def hrsid_captions(n: int) -> list[str]:
    ships = count_phrase(n, "ship")
    ships_w = count_phrase(n, "ship", digits=False)
    if n == 0:
        return dedupe([
            "a high resolution SAR image of the sea with no ships",
            "synthetic aperture radar scene without any ships",
            "radar image of water and coast with no vessels",
        ])
    one = n == 1
    return dedupe([
        f"a high resolution SAR image with {ships}",
        f"synthetic aperture radar scene showing {ships_w} on the water",
        f"{'a single ship' if one else ships} seen as bright {'echo' if one else 'echoes'} "
        "in a radar image",
        f"ship detection SAR image: {ships}",
    ])


@lru_cache(maxsize=4)
def _panorama_split(images: str) -> frozenset[str]:
    sizes: dict[str, int] = {}
    for p in Path(images).glob("*.jpg"):
        g = p.stem.split("_")[0]
        sizes[g] = sizes.get(g, 0) + 1
    return frozenset(group_split(sizes, 0.2))


class HRSID(EODataset):
    name = "hrsid"
    modality = "sar"
    splits = ("train", "test")
    classes = ()

    def _index(self):
        images = self.folder("hrsid", "images")
        masks = self.folder("hrsid", "masks")
        test = _panorama_split(str(images))
        recs = []
        for p in sorted(images.glob("*.jpg")):
            if (p.stem.split("_")[0] in test) != (self.split == "test"):
                continue
            m = masks / f"{p.stem}.png"
            if not m.exists():
                raise FileNotFoundError(f"{p}: no mask {m}")
            recs.append((p, m))
        return recs

    def _load(self, rec):
        path, mask = rec
        with Image.open(path) as im:
            arr = np.asarray(im)
        if arr.ndim == 3:
            arr = arr[..., 0]
        arr = np.ascontiguousarray(arr, dtype=np.uint8)[None]
        n, frac = ship_count(mask)
        return check_sample(Sample(
            pixels=arr,
            wavelengths=(C_BAND_UM,),
            modality="sar",
            sensor="hrsid-sar",
            captions=hrsid_captions(n),
            label=None,
            source=self.name,
            key=self.rel(path),
            meta={"path": str(path), "mask": str(mask), "split": self.split,
                  "panorama": path.stem.split("_")[0], "ships": n, "ship_fraction": frac},
        ))
