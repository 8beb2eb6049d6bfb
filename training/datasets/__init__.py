"""Training data: one small dataset class per source in ../shared/data (TorchGeo style: datasets
apart from samplers and transforms). See README.md here for split, label and caption rules.

    from training.datasets import DATASETS, load
    ds = load("ombria_s1", "train")          # root: $GLB_DATA or <repo>/../shared/data
    s = ds[0]                                # Sample: pixels as stored, wavelengths (µm), captions
"""

from __future__ import annotations

import os
from pathlib import Path

from .base import EODataset, Sample
from .bigearthnet import BigEarthNetS1, BigEarthNetS2
from .elevation import Elevation
from .eurosat import EuroSATMS, EuroSATRGB
from .harvey import Harvey
from .hit_uav import HitUAV
from .hrsid import HRSID
from .hsi import JasperRidge, SalinasA, Samson, Urban
from .mstar import MSTAR
from .ombria import OmbriaS1, OmbriaS2
from .opensarship import OpenSARShip
from .scene_sets import AID, UAVIC, UCM
from .scenes import ScenesUnlabelled
from .sen1floods11 import Sen1Floods11S1, Sen1Floods11S2

_CLASSES: tuple[type[EODataset], ...] = (
    EuroSATRGB, EuroSATMS, OmbriaS1, OmbriaS2, Harvey, MSTAR, HitUAV, OpenSARShip, HRSID,
    SalinasA, Samson, JasperRidge, Urban, Sen1Floods11S1, Sen1Floods11S2, BigEarthNetS1,
    BigEarthNetS2, Elevation, ScenesUnlabelled, AID, UCM, UAVIC,
)
DATASETS: dict[str, type[EODataset]] = {c.name: c for c in _CLASSES}


def default_root() -> Path:
    env = os.environ.get("GLB_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def load(name: str, split: str, root: str | Path | None = None, seed: int = 0) -> EODataset:
    try:
        cls = DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None
    return cls(Path(root) if root is not None else default_root(), split, seed=seed)


__all__ = ["DATASETS", "EODataset", "Sample", "default_root", "load"]
