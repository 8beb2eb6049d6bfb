"""Pixels of any modality -> an 8-bit RGB picture for people (thumbnails, overviews, uploads).

Optical: the bands nearest 0.665/0.56/0.49 µm (true colour) when the visible range is covered,
else the first three bands (false colour); SAR: grey from dB; elevation: hillshade tinted by
height; single bands: grey. Each channel is stretched between its 2nd and 98th percentiles.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from .normalize import to_unit_scale


def _limits(x: np.ndarray, valid: np.ndarray | None = None) -> tuple[float, float]:
    vals = x[valid] if valid is not None and valid.any() else x.reshape(-1)
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(vals, [2, 98])
    return float(lo), float(hi)


def _stretch(x: np.ndarray, valid: np.ndarray | None = None, limits=None) -> np.ndarray:
    lo, hi = limits if limits is not None else _limits(x, valid)
    if hi <= lo:
        hi = lo + 1e-6
    with np.errstate(invalid="ignore", over="ignore"):  # no-data (NaN, Inf) is painted over
        y = np.clip((x - lo) / (hi - lo), 0, 1)
    return (np.nan_to_num(y, nan=0.0) * 255).astype(np.uint8)


def _hillshade(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float32)
    ok = np.isfinite(z)
    if not ok.all():  # no-data is painted over; a flat fill keeps it from shading its neighbours
        fill = float(np.median(z[ok].astype(np.float64))) if ok.any() else 0.0  # float64: no overflow at 3e38
        z = np.where(ok, z, np.float32(fill))
    with np.errstate(over="ignore", invalid="ignore"):
        gy, gx = np.gradient(z)
    slope = np.pi / 2 - np.arctan(np.hypot(gx, gy))
    aspect = np.arctan2(-gx, gy)
    az, alt = np.radians(315), np.radians(45)
    shade = np.sin(alt) * np.sin(slope) + np.cos(alt) * np.cos(slope) * np.cos(az - aspect)
    return np.clip(shade, 0, 1)


def display_channels(arr: np.ndarray, wavelengths, modality: str) -> np.ndarray:
    """(C, H, W) raw -> (3, H, W) float32 display values before stretching (float64 beyond
    float32's range becomes Inf, which counts as no-data, without a warning)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return _display_channels(np.asarray(arr), wavelengths, modality)


def _display_channels(arr: np.ndarray, wavelengths, modality: str) -> np.ndarray:
    wl = np.asarray(wavelengths, dtype=float)
    if modality == "elevation":
        z = arr[0].astype(np.float32)
        return np.stack([z, z, z])
    if modality == "sar":
        unit = to_unit_scale(arr[None, :1], "sar")[0, 0]
        return np.stack([unit, unit, unit])
    if arr.shape[0] >= 3 and wl.min() <= 0.5 and wl.max() >= 0.62:
        idx = [int(np.argmin(np.abs(wl - t))) for t in (0.665, 0.56, 0.49)]
    elif arr.shape[0] >= 3:
        idx = [0, 1, 2]
    else:
        idx = [0, 0, 0]
    return arr[idx].astype(np.float32)


def stretch_limits(arr: np.ndarray, wavelengths, modality: str, valid=None) -> list[tuple[float, float]]:
    """Per display channel (lo, hi), e.g. from a scene overview so all its tiles match."""
    d = display_channels(arr, wavelengths, modality)
    return [_limits(c, valid) for c in d]


def to_rgb8(arr: np.ndarray, wavelengths, modality: str, valid: np.ndarray | None = None,
            limits: list[tuple[float, float]] | None = None) -> np.ndarray:
    """(C, H, W) raw -> (H, W, 3) uint8."""
    d = display_channels(arr, wavelengths, modality)
    if modality == "elevation":
        shade = _hillshade(d[0])
        h = _stretch(d[0], valid, limits[0] if limits else None).astype(np.float32) / 255.0
        ramp = np.stack([0.35 + 0.6 * h, 0.55 + 0.35 * h * (1 - h) * 2, 0.35 + 0.3 * (1 - h)], -1)
        return (np.clip(ramp * (0.35 + 0.65 * shade[..., None]), 0, 1) * 255).astype(np.uint8)
    return np.stack([_stretch(d[i], valid, limits[i] if limits else None) for i in range(3)], -1)


# Thumbnails are JPEG: at 64-128 px a q90 JPEG is several times smaller than the PNG and faster
# to encode (the reader's profile in docs/BENCHMARKS.md, where PNG thumbnails were a large share
# of its time). JPEG has no alpha, so no-data pixels are painted this grey (the UI's placeholder colour).
NODATA_RGB = (238, 241, 244)
JPEG_MAGIC = b"\xff\xd8\xff"


def jpeg_bytes(rgb: np.ndarray, max_side: int | None = None, valid: np.ndarray | None = None,
               quality: int = 90) -> bytes:
    if valid is not None and not valid.all():
        rgb = np.where(valid[..., None], rgb, np.asarray(NODATA_RGB, dtype=np.uint8))
    img = Image.fromarray(np.ascontiguousarray(rgb))
    if max_side and max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def png_bytes(rgb: np.ndarray, max_side: int | None = None, alpha: np.ndarray | None = None) -> bytes:
    img = Image.fromarray(rgb)
    if alpha is not None:
        img.putalpha(Image.fromarray(alpha.astype(np.uint8) * 255))
    if max_side and max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)  # much faster than the default 6, a little larger
    return buf.getvalue()
