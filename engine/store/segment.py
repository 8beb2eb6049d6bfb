"""Immutable segments: a batch of tiles with their vectors, thumbnails and scene overviews."""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .faults import crash_point
from .files import fsync_dir, fsync_file
from .layout import OVERVIEW_SCHEMA, THUMB_SCHEMA, TILE_SCHEMA, Layout


def new_segment_name(generation: int) -> str:
    return f"{generation:09d}-{secrets.token_hex(4)}"


def write_segment(layout: Layout, name: str, tiles: pa.Table, vectors: np.ndarray,
                  thumbs: pa.Table, overviews: pa.Table) -> Path:
    """Write into a hidden folder, fsync, rename into place. Returns the final folder."""
    tmp = write_segment_files(layout, f".{name}.tmp", tiles, vectors, thumbs, overviews)
    return install_segment(layout, tmp, name)


def write_segment_files(layout: Layout, tmp_name: str, tiles: pa.Table, vectors: np.ndarray,
                        thumbs: pa.Table, overviews: pa.Table) -> Path:
    """Write a segment's files into the hidden folder `segments/<tmp_name>` and fsync them;
    nothing reads it until `install_segment` renames it. A folder of that name left by an
    earlier attempt is replaced, so a retried write leaves one copy."""
    if not tiles.num_rows == vectors.shape[0] == thumbs.num_rows:
        raise ValueError(f"segment {tmp_name}: {tiles.num_rows} tiles, {vectors.shape[0]} vectors, "
                         f"{thumbs.num_rows} thumbnails")
    if not tmp_name.startswith(".") or "/" in tmp_name:
        raise ValueError(f"{tmp_name!r}: an unpublished segment folder is a hidden name in segments/")
    layout.segments.mkdir(parents=True, exist_ok=True)
    tmp = layout.segments / tmp_name
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    crash_point("segment.tmp")
    pq.write_table(tiles.cast(TILE_SCHEMA), tmp / "tiles.parquet", compression="zstd")
    crash_point("segment.tiles")
    np.save(tmp / "vectors.npy", np.ascontiguousarray(vectors, dtype=np.float32))
    crash_point("segment.vectors")
    pq.write_table(thumbs.cast(THUMB_SCHEMA), tmp / "thumbs.parquet", compression="none")
    pq.write_table(overviews.cast(OVERVIEW_SCHEMA), tmp / "overviews.parquet", compression="none")
    crash_point("segment.thumbs")
    for f in tmp.iterdir():
        fsync_file(f)
    fsync_dir(tmp)
    crash_point("segment.synced")
    return tmp


def install_segment(layout: Layout, tmp: Path, name: str) -> Path:
    """Rename a written hidden segment folder to its final name (still unnamed by any manifest
    until the commit publishes one)."""
    final = layout.segment(name)
    os.rename(tmp, final)
    fsync_dir(layout.segments)
    crash_point("segment.renamed")
    return final


def read_tiles(layout: Layout, name: str) -> pa.Table:
    return pq.read_table(layout.segment(name) / "tiles.parquet", schema=TILE_SCHEMA)


def read_vectors(layout: Layout, name: str, mmap: bool = False) -> np.ndarray:
    return np.load(layout.segment(name) / "vectors.npy", mmap_mode="r" if mmap else None)


def advise(vectors: np.ndarray, pattern: str) -> None:
    """Tell the kernel how a memory-mapped vectors file will be read ("random", "sequential" or
    "normal"); no-op for arrays in RAM. Why: a page fault on a mapping with normal advice reads
    around the faulting page by the device's read-ahead window (8 MB on some virtual disks), so
    gathering a few thousand scattered rows of a file larger than the page cache reads most of
    the file; "random" reads only the faulting page, "sequential" reads ahead for whole scans."""
    import mmap as _mmap

    m = getattr(vectors, "_mmap", None)
    if m is None or not hasattr(m, "madvise"):
        return
    flag = {"random": _mmap.MADV_RANDOM, "sequential": _mmap.MADV_SEQUENTIAL,
            "normal": _mmap.MADV_NORMAL}[pattern]
    try:
        m.madvise(flag)
    except (OSError, ValueError):
        pass  # advice only: a platform that refuses it reads as before


def read_thumbs(layout: Layout, name: str, tile_ids: list[int] | None = None) -> pa.Table:
    filters = [("tile_id", "in", list(tile_ids))] if tile_ids is not None else None
    return pq.read_table(layout.segment(name) / "thumbs.parquet", filters=filters)


def read_overviews(layout: Layout, name: str) -> pa.Table:
    return pq.read_table(layout.segment(name) / "overviews.parquet", schema=OVERVIEW_SCHEMA)
