"""Where things live in an index folder, and what the records look like.

    index/
      CURRENT                     name of the live manifest; replaced atomically = the commit
      LOCK                        writer lock (engine/store/lock.py)
      manifests/<gen>.json        generation, encoder, segment list, scenes and tombstone files
      manifests/<gen>.scenes.parquet   one row per indexed file (path, fingerprint, sensor, ...)
      manifests/<gen>.tombstones.parquet  (segment, tile id) rows deleted from live segments
      segments/<name>/            immutable once renamed into place:
          tiles.parquet           tile metadata, footprint WKB in EPSG:4326
          vectors.npy             float32 (n, d), same row order as tiles.parquet
          thumbs.parquet          tile_id -> JPEG thumbnail (no-data painted grey)
          overviews.parquet       scene_id -> PNG overview + corner coordinates (UI basemap)
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

FORMAT_VERSION = 2  # 2: thumbnails are JPEG (column `jpeg`), were PNG

TILE_SCHEMA = pa.schema([
    ("tile_id", pa.int64()),
    ("scene_id", pa.string()),
    ("scene", pa.string()),
    ("modality", pa.string()),
    ("sensor", pa.string()),
    ("acquired", pa.date32()),
    ("row_off", pa.int32()),
    ("col_off", pa.int32()),
    ("height", pa.int32()),
    ("width", pa.int32()),
    ("minx", pa.float64()),
    ("miny", pa.float64()),
    ("maxx", pa.float64()),
    ("maxy", pa.float64()),
    ("geometry", pa.binary()),
    ("nodata_frac", pa.float32()),
])

SCENE_SCHEMA = pa.schema([
    ("scene_id", pa.string()),
    ("path", pa.string()),
    ("scene", pa.string()),
    ("kind", pa.string()),
    ("size", pa.int64()),
    ("mtime_ns", pa.int64()),
    ("sha256", pa.string()),
    ("sensor", pa.string()),
    ("modality", pa.string()),
    ("acquired", pa.date32()),
    ("n_tiles", pa.int32()),
    ("segment", pa.string()),
    ("crs", pa.string()),
    ("evidence", pa.string()),
    ("minx", pa.float64()),
    ("miny", pa.float64()),
    ("maxx", pa.float64()),
    ("maxy", pa.float64()),
    ("indexed_at", pa.timestamp("s", tz="UTC")),
])

THUMB_SCHEMA = pa.schema([("tile_id", pa.int64()), ("jpeg", pa.binary())])
OVERVIEW_SCHEMA = pa.schema([("scene_id", pa.string()), ("png", pa.binary()),
                             ("corners", pa.string())])


class Layout:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.current = self.root / "CURRENT"
        self.manifests = self.root / "manifests"
        self.segments = self.root / "segments"

    def manifest(self, gen: int) -> Path:
        return self.manifests / f"{gen:09d}.json"

    def segment(self, name: str) -> Path:
        return self.segments / name

    def exists(self) -> bool:
        return self.current.is_file()
