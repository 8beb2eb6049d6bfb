"""The training data layer's two types: `Sample` (one tile with its labels and captions) and
`EODataset` (one source, one split), TorchGeo style: datasets only read and describe; sampling,
batching and augmentation live elsewhere.

Pixels travel exactly as stored in the file (uint8, uint16/int16 reflectance, float32 dB or
linear power, metres), with one wavelength per band in µm (registry values from
`engine/sensors.toml`, radar and elevation nominal values from `engine/modalities.py`):
`engine.Encoder.preprocess(sample.pixels, sample.wavelengths, sample.modality)` takes them as is.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.modalities import MODALITIES
from engine.sensors import get_sensor

# Zero-shot prompt templates, over a class's human name ("{}"). Generic ones for every
# source, plus phrasings that say which kind of sensor made the image.
GENERIC_TEMPLATES = (
    "a satellite image of {}",
    "{} seen from space",
    "an aerial view of {}",
    "a remote sensing image of {}",
)
# For drone, aircraft and mixed sources ("seen from space" would be false).
AIRBORNE_TEMPLATES = (
    "an aerial image of {}",
    "{} seen from above",
    "an aerial view of {}",
    "a remote sensing image of {}",
)
MODALITY_TEMPLATES = {
    "rgb": ("a true-colour image of {}", "a colour photo of {} taken from above"),
    "multispectral": ("a multispectral satellite image of {}", "a multispectral image of {}"),
    "sar": ("a radar image of {}", "a synthetic aperture radar image of {}", "a SAR image of {}"),
    "hyperspectral": ("a hyperspectral image of {}", "an imaging spectrometer scene of {}"),
    "infrared": ("a thermal infrared image of {}", "a thermal image of {}"),
    "elevation": ("an elevation model of {}", "a digital elevation model of {}"),
}


@dataclass
class Sample:
    pixels: np.ndarray             # (C, H, W) as stored in the file; no NaN
    wavelengths: tuple[float, ...]  # µm, one per band
    modality: str                  # one of engine.modalities.MODALITIES
    sensor: str                    # registry name where one fits, else a descriptive name
    captions: list[str]            # >= 3 phrasings; [] only for unlabelled sources
    label: str | None              # class name for zero-shot classification, or None
    source: str                    # dataset name, e.g. "eurosat_rgb"
    key: str                       # stable unique id (relative path [+ crop offsets])
    pair_key: str | None = None    # same place across sensors (e.g. OMBRIA S1 <-> S2)
    meta: dict = field(default_factory=dict)


class EODataset:
    """One source, one split. Subclasses set the class attributes and implement `_index`
    (cheap: list files / records) and `_load` (read one record into a `Sample`)."""

    name: str = ""
    modality: str = ""             # a MODALITIES name ("mixed" only for scenes_unlabelled)
    splits: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()
    # class name -> human words used in prompts (defaults to the class name itself)
    class_words: dict[str, str] = {}
    templates: tuple[str, ...] = ()  # extra, source-specific prompt templates
    generic_templates: tuple[str, ...] = GENERIC_TEMPLATES  # AIRBORNE_TEMPLATES for non-satellite

    def __init__(self, root: Path | str, split: str, seed: int = 0):
        if split not in self.splits:
            raise ValueError(
                f"{self.name}: unknown split {split!r}; valid splits: {', '.join(self.splits)}"
            )
        self.root = Path(root)
        self.split = split
        self.seed = seed  # datasets are deterministic; kept for samplers built on top
        self._records: list[Any] = self._index()

    # -- subclass hooks ------------------------------------------------------------------
    def _index(self) -> list[Any]:
        raise NotImplementedError

    def _load(self, record: Any) -> Sample:
        raise NotImplementedError

    # -- public --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, i: int) -> Sample:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"{self.name}[{self.split}]: index {i} out of range ({len(self)})")
        return self._load(self._records[i])

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} split={self.split!r} n={len(self)}>"

    def prompts(self) -> dict[str, list[str]]:
        """class -> zero-shot prompt phrasings (evaluation only)."""
        templates = list(self.generic_templates) + list(MODALITY_TEMPLATES.get(self.modality, ()))
        templates += list(self.templates)
        out = {}
        for c in self.classes:
            words = self.class_words.get(c, c)
            seen: list[str] = []
            for t in templates:
                p = t.format(words)
                if p not in seen:
                    seen.append(p)
            out[c] = seen
        return out

    # -- helpers for subclasses ----------------------------------------------------------
    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def folder(self, *parts: str) -> Path:
        p = self.root.joinpath(*parts)
        if not p.exists():
            raise FileNotFoundError(f"{self.name}: {p} not found (is the data root {self.root}?)")
        return p


# --- small shared helpers ------------------------------------------------------------------

def sensor_wavelengths(sensor: str) -> tuple[float, ...]:
    return get_sensor(sensor).wavelengths


def stable_hash(text: str) -> int:
    """A hash that does not change between runs or machines (unlike `hash`)."""
    return int(hashlib.md5(text.encode("utf-8")).hexdigest()[:12], 16)


def hash_split(key: str, test_percent: int = 20) -> str:
    """'test' for about `test_percent` % of keys, 'train' for the rest; deterministic."""
    return "test" if stable_hash(key) % 100 < test_percent else "train"


def group_split(sizes: dict[str, int], test_fraction: float = 0.2,
                tolerance: float = 0.05) -> set[str]:
    """Choose whole groups (scenes, panoramas) for the test split: walk the groups in
    stable-hash order, taking each one that keeps the test share at most test_fraction +
    tolerance, until it reaches test_fraction - tolerance. Deterministic; returns test groups."""
    total = sum(sizes.values())
    test: set[str] = set()
    n = 0
    for g in sorted(sizes, key=lambda g: (stable_hash(g), g)):
        if n >= (test_fraction - tolerance) * total:
            break
        if n + sizes[g] <= (test_fraction + tolerance) * total:
            test.add(g)
            n += sizes[g]
    return test


def patch_starts(length: int, size: int, stride: int) -> list[int]:
    """Start offsets of windows of `size` covering [0, length) with `stride` (last one flush)."""
    if length < size:
        return []
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


def check_sample(s: Sample) -> Sample:
    """Cheap invariants every dataset's samples must meet (used in _load and in tests)."""
    assert s.pixels.ndim == 3, (s.key, s.pixels.shape)
    assert len(s.wavelengths) == s.pixels.shape[0], (s.key, len(s.wavelengths), s.pixels.shape)
    assert s.modality in MODALITIES, (s.key, s.modality)
    if s.pixels.dtype.kind == "f":
        assert np.isfinite(s.pixels).all(), s.key
    return s
