"""Cutting a scene into tile windows (TorchGeo's GridGeoSampler, in pixels of the scene's own
CRS). The last row and column are shifted back to end at the scene's edge, so every pixel is
covered and no tile hangs off the raster."""

from __future__ import annotations

from dataclasses import dataclass

MIN_TILE = 16


@dataclass(frozen=True)
class TileWindow:
    row_off: int
    col_off: int
    height: int
    width: int


def _offsets(n: int, size: int, stride: int) -> tuple[list[int], int]:
    if n <= size:
        return [0], n
    offs = list(range(0, n - size + 1, stride))
    if offs[-1] + size < n:
        offs.append(n - size)
    return offs, size


def plan_windows(width: int, height: int, size: int, stride: int) -> list[list[TileWindow]]:
    """Rows of windows (one list per tile row, so a reader can fetch a strip at a time)."""
    if size < MIN_TILE:
        raise ValueError(f"tile size {size} is below the minimum of {MIN_TILE}")
    if stride < 1:
        raise ValueError(f"stride {stride} must be at least 1")
    rows, h = _offsets(height, size, stride)
    cols, w = _offsets(width, size, stride)
    return [[TileWindow(r, c, h, w) for c in cols] for r in rows]
