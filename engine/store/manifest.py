"""The manifest: the one file that says which segments, scenes and tombstones make the index.

Commit = write every new file, then the manifest, then swap CURRENT to name it. Everything a
manifest names was durable before CURRENT pointed at it, so a crash at any moment leaves the
previous generation whole; files of an unfinished commit are orphans that the next writer
removes.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import GLBError, IndexNotFoundError
from .files import atomic_write_bytes
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


class CorruptIndexError(GLBError):
    pass


def read_current(layout: Layout) -> Manifest:
    if not layout.root.exists():
        raise IndexNotFoundError(f"{layout.root}: no index here (the folder does not exist)")
    if not layout.current.is_file():
        raise IndexNotFoundError(f"{layout.root}: no index here (no CURRENT file); build one with `glb index`")
    name = layout.current.read_text().strip()
    path = layout.manifests / name
    try:
        m = Manifest.from_json(path.read_bytes())
    except FileNotFoundError:
        raise CorruptIndexError(f"{layout.root}: CURRENT names {name}, which does not exist") from None
    except (ValueError, TypeError, KeyError) as e:
        raise CorruptIndexError(f"{path}: unreadable manifest ({e})") from None
    if m.format != FORMAT_VERSION:
        raise CorruptIndexError(f"{path}: index format {m.format}, this version reads {FORMAT_VERSION}")
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
    """Write the manifest, then point CURRENT at it (the commit point)."""
    m.created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    path = layout.manifest(m.generation)
    atomic_write_bytes(path, m.to_json())
    atomic_write_bytes(layout.current, path.name.encode() + b"\n")
