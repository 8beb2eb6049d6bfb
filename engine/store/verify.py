"""Is a generation's every file there and whole? The cheap check every reader and the writer
make before trusting a segment: each file a manifest names exists, its Parquet footer reads and
holds the manifest's row count, and vectors.npy's header and size agree with it. One stat and
one footer read per file, no data read: a missing or truncated file becomes one line naming
the file and the repair (`glb check --repair`), never a traceback, a RecursionError or a
silently short result. `glb check` (engine/check.py) goes further and reads everything.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .layout import Layout
from .manifest import CorruptIndexError, Manifest, SegmentInfo

SEGMENT_FILES = ("tiles.parquet", "vectors.npy", "thumbs.parquet", "overviews.parquet")


class DamagedIndexError(CorruptIndexError):
    """A file of the live generation is missing, truncated or unreadable."""

    def __init__(self, message: str, problems: list[str]):
        super().__init__(message)
        self.problems = problems


def repair_command(root: Path) -> str:
    return f"glb check --repair --index {root}"


def damaged(layout: Layout, problems: list[str]) -> DamagedIndexError:
    more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
    return DamagedIndexError(
        f"{layout.root}: damaged index: {problems[0]}{more}; repair it with "
        f"`{repair_command(layout.root)}` (it drops what cannot be recovered, and the next "
        f"`glb index` run indexes those files again)", problems)


def npy_shape(path: Path) -> tuple[tuple, np.dtype, int]:
    """(shape, dtype, bytes the header promises) of a .npy file, from its header alone."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
            np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
        offset = f.tell()
    return shape, dtype, offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize


def _parquet_rows(path: Path) -> int:
    return pq.read_metadata(path).num_rows


def _why(e: BaseException) -> str:
    if isinstance(e, FileNotFoundError):
        return "is missing"
    text = getattr(e, "strerror", None) or (str(e).splitlines()[0] if str(e) else type(e).__name__)
    return f"is unreadable ({text[:100]})"


def segment_damage(layout: Layout, info: SegmentInfo) -> list[str]:
    """One line per damaged file of one segment ([] = whole)."""
    d = layout.segment(info.name)
    rel = f"segments/{info.name}"
    if not d.is_dir():
        return [f"{rel}/ is missing"]
    out = []
    for fname in ("tiles.parquet", "thumbs.parquet"):
        try:
            n = _parquet_rows(d / fname)
            if n != info.n_rows:
                out.append(f"{rel}/{fname} holds {n} rows, the manifest says {info.n_rows}")
        except (OSError, pa.ArrowException) as e:
            out.append(f"{rel}/{fname} {_why(e)}")
    try:
        pq.read_metadata(d / "overviews.parquet")
    except (OSError, pa.ArrowException) as e:
        out.append(f"{rel}/overviews.parquet {_why(e)}")
    try:
        shape, dtype, want = npy_shape(d / "vectors.npy")
        size = (d / "vectors.npy").stat().st_size
        if len(shape) != 2 or shape[0] != info.n_rows:
            out.append(f"{rel}/vectors.npy has shape {shape}, the manifest says {info.n_rows} rows")
        elif size < want:
            rows = max(0, (size - (want - shape[0] * shape[1] * dtype.itemsize))
                       // max(1, shape[1] * dtype.itemsize))
            out.append(f"{rel}/vectors.npy is truncated ({size} of {want} bytes: {rows} of "
                       f"{shape[0]} rows)")
    except (OSError, ValueError) as e:
        out.append(f"{rel}/vectors.npy {_why(e)}")
    return out


def generation_damage(layout: Layout, m: Manifest, segments: list[SegmentInfo] | None = None) -> list[str]:
    """Damaged files of a generation: its scenes and tombstones files and its segments."""
    out = []
    for name in (m.scenes_file, m.tombstones_file):
        if name:
            try:
                pq.read_metadata(layout.manifests / name)
            except (OSError, pa.ArrowException) as e:
                out.append(f"manifests/{name} {_why(e)}")
    for info in (m.segments if segments is None else segments):
        out += segment_damage(layout, info)
    return out


def require_whole(layout: Layout, segments: list[SegmentInfo], m: Manifest | None = None) -> None:
    """Raise DamagedIndexError naming the first damaged file (and how many more)."""
    problems = generation_damage(layout, m, segments) if m is not None else \
        [p for s in segments for p in segment_damage(layout, s)]
    if problems:
        raise damaged(layout, problems)
