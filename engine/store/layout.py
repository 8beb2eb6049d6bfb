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
    # the STAC item and collection a tile's scene came from (`glb index --stac`); null for
    # files indexed from folders. Segments written before these columns existed read them as
    # null (Parquet read with this schema fills missing columns).
    ("stac_collection", pa.string()),
    ("stac_item", pa.string()),
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
    ("stac_collection", pa.string()),   # as in TILE_SCHEMA
    ("stac_item", pa.string()),
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


# --- paths that are not valid UTF-8 --------------------------------------------------------------
# Parquet strings are UTF-8. An indexed path is stored as it is when it is valid UTF-8 (every
# index written before keeps its records); a path whose name is not (Python holds the bytes
# as surrogates) is stored as `bytes:` + its bytes with every byte outside printable ASCII, and
# the backslash, written \\xNN. Indexed paths are absolute, so the prefix cannot be a real path.
NON_UTF8_PREFIX = "bytes:"


def path_to_store(path: str) -> str:
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        raw = path.encode("utf-8", "surrogateescape")
        return NON_UTF8_PREFIX + "".join(chr(b) if 0x20 <= b < 0x7F and b != 0x5C else f"\\x{b:02x}"
                                         for b in raw)


def path_from_store(text: str) -> str:
    if not text or not text.startswith(NON_UTF8_PREFIX):
        return text
    body, raw, i = text[len(NON_UTF8_PREFIX):], bytearray(), 0
    while i < len(body):
        if body[i] == "\\" and body[i + 1:i + 2] == "x":
            raw.append(int(body[i + 2:i + 4], 16))
            i += 4
        else:
            raw += body[i].encode()
            i += 1
    return bytes(raw).decode("utf-8", "surrogateescape")


def stored_scene(record: dict) -> dict:
    p = record.get("path")
    return record if p is None or path_to_store(p) == p else dict(record, path=path_to_store(p))


def display_text(text: str) -> str:
    """Text for a Parquet string column and a screen: bytes that are not UTF-8 as \\xNN."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
