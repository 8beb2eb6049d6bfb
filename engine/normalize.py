"""Raw pixels as stored in a file -> the encoder's input scale, one rule per modality.

The encoder is handed pixels "as stored" (uint8, uint16 reflectance, float dB, linear SAR
power, metres) and must put them on one scale so a forest looks like a forest whatever the
product. Rules, in order of precedence:
- a `value_scale` from the sensor registry or the caller: x / value_scale;
- optical (rgb, multispectral, hyperspectral, infrared): uint8 / 255; 16-bit integers are
  reflectance x 10 000 (Sentinel-2, Landsat SR, AVIRIS) and are brightened x 3 (/ 3 333), the
  common true-colour stretch, so 16-bit and 8-bit renderings of a scene land close together;
  floats at most ~2 are reflectance already;
- sar: 8-bit / 255; float with negative values is dB, mapped [-30, 0] dB -> [0, 1]; float
  >= 0 is linear power, converted to dB first;
- elevation: relief only: (z - tile mean) / 50 m through asinh, so flat plains are ~0 and
  mountains saturate gently; absolute height says little about what is on the ground.
Then the encoder's own standardisation (its registry entry's `normalisation`, see `normalise`):
- "glb" (ours): (x - 0.35) / 0.25, clipped to a sane range;
- "siglip" (DOFA-CLIP): the 8-bit-scaled pixels the authors trained on, mapped to [-1, 1]
  (mean = std = 0.5) for every modality: unit values clipped to [0, 1], then 2x - 1. Elevation
  relief (signed) is shown as grey levels around mid-grey first (0.5 + relief / 6).
"""

from __future__ import annotations

import numpy as np

from .errors import InputError

OPTICAL = ("rgb", "multispectral", "hyperspectral", "infrared")
REFLECTANCE_16BIT_SCALE = 10000.0 / 3.0


def to_unit_scale(x: np.ndarray, modality: str, value_scale: float | None = None) -> np.ndarray:
    """(B, C, H, W) raw -> float32 roughly in [0, 1] (elevation: signed relief)."""
    dtype = x.dtype
    if dtype == np.bool_ or dtype.kind not in "uif":
        raise InputError(f"pixels of dtype {dtype} are not imagery (expected integers or floats)")
    xf = x.astype(np.float32, copy=False)
    if modality == "elevation":
        mean = xf.mean(axis=(2, 3), keepdims=True, dtype=np.float64)  # float32 sums overflow near 3e38
        return np.arcsinh((xf - mean) / 50.0).astype(np.float32)
    if value_scale:
        return xf / np.float32(value_scale)
    if modality == "sar":
        if dtype == np.uint8:
            return xf / 255.0
        if dtype.kind in "ui":
            return xf / float(np.iinfo(dtype).max)
        if np.nanmin(xf) < 0:  # decibels
            return (xf + 30.0) / 30.0
        return (10.0 * np.log10(np.maximum(xf, 1e-6)) + 30.0) / 30.0
    if modality in OPTICAL:
        if dtype == np.uint8:
            return xf / 255.0
        if dtype.kind in "ui":
            return xf / REFLECTANCE_16BIT_SCALE
        hi = float(np.nanpercentile(xf, 99)) if xf.size else 0.0
        return xf / (1.0 if hi <= 2.0 else REFLECTANCE_16BIT_SCALE)
    raise InputError(f"modality {modality!r} has no normalisation rule")


def standardise(unit: np.ndarray) -> np.ndarray:
    return np.clip((unit - 0.35) / 0.25, -4.0, 8.0).astype(np.float32)


def siglip_standardise(unit: np.ndarray, modality: str) -> np.ndarray:
    if modality == "elevation":
        unit = 0.5 + unit / 6.0
    return (np.clip(unit, 0.0, 1.0) * 2.0 - 1.0).astype(np.float32)


def normalise(x: np.ndarray, modality: str, value_scale: float | None = None,
              rule: str = "glb") -> np.ndarray:
    """(B, C, H, W) pixels as stored -> the encoder's input values, by the encoder's rule."""
    unit = to_unit_scale(x, modality, value_scale)
    if rule == "glb":
        return standardise(unit)
    if rule == "siglip":
        return siglip_standardise(unit, modality)
    raise InputError(f"normalisation rule {rule!r} is unknown (known: glb, siglip)")
