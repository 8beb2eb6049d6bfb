"""The manifest: the one file that says which segments, scenes and tombstones make the index.

Commit = write every new file, then the manifest, then swap CURRENT to name it. Everything a
manifest names was durable before CURRENT pointed at it, so a crash at any moment leaves the
previous generation whole; files of an unfinished commit are orphans that the next writer
removes.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import CorruptIndexError, IndexNotFoundError
from .faults import crash_point
from .files import atomic_write_bytes, fsync_file
from .layout import FORMAT_VERSION, SCENE_SCHEMA, Layout


@dataclass
class SegmentInfo:
    name: str
    n_rows: int


@dataclass
class Manifest:
    generation: int
    encoder: dict
    segments: list[SegmentInfo] = field(default_factory=list)
    scenes_file: str | None = None
    tombstones_file: str | None = None
    n_tiles: int = 0
    created: str = ""
    format: int = FORMAT_VERSION

    @classmethod
    def empty(cls, encoder: dict) -> "Manifest":
        return cls(generation=0, encoder=encoder)

    def to_json(self) -> bytes:
        d = asdict(self)
        return json.dumps(d, indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> "Manifest":
        d = json.loads(raw)
        d["segments"] = [SegmentInfo(**s) for s in d.get("segments", [])]
        return cls(**d)


MANIFEST_NAME = re.compile(r"[0-9]{9}\.json")
SEGMENT_NAME = re.compile(r"[0-9]{9}-[0-9a-f]{8}")
DATA_FILE_NAME = re.compile(r"[0-9]{9}\.(scenes|tombstones)\.parquet")


def read_current(layout: Layout) -> Manifest:
    if not layout.root.exists():
        raise IndexNotFoundError(f"{layout.root}: no index here (the folder does not exist)")
    if not layout.current.is_file():
        raise IndexNotFoundError(f"{layout.root}: no index here (no CURRENT file); build one with `glb index`")
    try:
        name = layout.current.read_text().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise CorruptIndexError(f"{layout.current}: unreadable ({e})") from None
    # Names come from files anyone may have edited: never let one leave the index folder.
    if not MANIFEST_NAME.fullmatch(name):
        raise CorruptIndexError(f"{layout.current}: does not name a manifest ({name[:60]!r})")
    path = layout.manifests / name
    try:
        m = Manifest.from_json(path.read_bytes())
    except FileNotFoundError:
        raise CorruptIndexError(f"{layout.root}: CURRENT names {name}, which does not exist") from None
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise CorruptIndexError(f"{path}: unreadable manifest ({str(e)[:160]})") from None
    except OSError as e:
        raise CorruptIndexError(f"{path}: unreadable manifest ({e.strerror})") from None
    if isinstance(m.format, int) and m.format < FORMAT_VERSION:
        raise CorruptIndexError(f"{layout.root}: written by an older GeoLangBind (store format {m.format}; "
                                f"this version reads {FORMAT_VERSION}): index the scenes again into a new folder")
    if m.format != FORMAT_VERSION:
        raise CorruptIndexError(f"{path}: index format {m.format!r}, this version reads {FORMAT_VERSION}")
    for seg in m.segments:
        if not isinstance(seg.name, str) or not SEGMENT_NAME.fullmatch(seg.name):
            raise CorruptIndexError(f"{path}: bad segment name {str(seg.name)[:60]!r}")
    for f in (m.scenes_file, m.tombstones_file):
        if f is not None and (not isinstance(f, str) or not DATA_FILE_NAME.fullmatch(f)):
            raise CorruptIndexError(f"{path}: bad file name {str(f)[:60]!r}")
    return m


def read_scenes(layout: Layout, m: Manifest) -> pa.Table:
    if not m.scenes_file:
        return SCENE_SCHEMA.empty_table()
    return pq.read_table(layout.manifests / m.scenes_file, schema=SCENE_SCHEMA)


TOMBSTONE_SCHEMA = pa.schema([("segment", pa.string()), ("tile_id", pa.int64())])


def read_tombstones(layout: Layout, m: Manifest) -> pa.Table:
    """(segment, tile_id) rows deleted from still-live segments. Keyed by segment too, so
    a tile id re-added later (same file content back again) does not revive the old row."""
    if not m.tombstones_file:
        return TOMBSTONE_SCHEMA.empty_table()
    return pq.read_table(layout.manifests / m.tombstones_file, schema=TOMBSTONE_SCHEMA)


def write_tombstones(layout: Layout, name: str, rows: set[tuple[str, int]]) -> None:
    segs, ids = zip(*sorted(rows)) if rows else ((), ())
    pq.write_table(pa.table({"segment": pa.array(segs, pa.string()),
                             "tile_id": pa.array(ids, pa.int64())}, schema=TOMBSTONE_SCHEMA),
                   layout.manifests / name)


def publish(layout: Layout, m: Manifest) -> None:
    """Make the files the manifest names durable, write the manifest, then point CURRENT at it
    (the commit point)."""
    for name in (m.scenes_file, m.tombstones_file):
        if name:
            fsync_file(layout.manifests / name)
    crash_point("publish.begin")
    m.created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    path = layout.manifest(m.generation)
    atomic_write_bytes(path, m.to_json(), crash="publish.manifest")
    crash_point("publish.manifest")
    atomic_write_bytes(layout.current, path.name.encode() + b"\n", crash="publish.current")
    crash_point("publish.done")
