"""The only code that changes an index. It owns the store's consistency rule:

    a tile is live  <=>  its row is in a segment named by CURRENT's manifest
                         and its id is not in that manifest's tombstones;
    every live tile has exactly one vector (same segment, same row) and one thumbnail.

Vectors, metadata and thumbnails of a batch are written together into one new segment
before the manifest that names it is published, so no reader and no crash can see one
without the others. Tile ids are derived from (path, content hash, window): re-running
after a crash recreates the same ids, and replacing a scene tombstones its old tiles in the
same commit that adds the new ones.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import CorruptIndexError, EncoderMismatchError, GLBError
from .files import fsync_dir
from .layout import OVERVIEW_SCHEMA, SCENE_SCHEMA, THUMB_SCHEMA, TILE_SCHEMA, Layout, path_from_store, stored_scene
from .lock import WriterLock
from .manifest import (
    Manifest,
    SegmentInfo,
    publish,
    read_current,
    read_scenes,
    read_tombstones,
    write_tombstones,
)
from .segment import install_segment, new_segment_name, read_tiles, write_segment
from .verify import damaged, generation_damage

log = logging.getLogger("glb.store")

ORPHAN_GRACE_S = 600  # unreferenced files younger than this may still be read by a searcher


def _path_bytes(text: str) -> bytes:
    """The bytes a path string stands for: its UTF-8 for ordinary paths (so the ids of every
    existing index stay as they were), the file system's own bytes for names that are not
    valid UTF-8 (Python holds those bytes as surrogates)."""
    return text.encode("utf-8", "surrogateescape")


def tile_id_for(scene_key: str, row_off: int, col_off: int, height: int, width: int) -> int:
    h = hashlib.blake2b(_path_bytes(f"{scene_key}|{row_off}|{col_off}|{height}|{width}"), digest_size=8)
    return int.from_bytes(h.digest(), "little") & 0x7FFF_FFFF_FFFF_FFFF


def scene_id_for(path: str, sha256: str) -> str:
    return hashlib.blake2b(_path_bytes(f"{path}|{sha256}"), digest_size=8).hexdigest()


@dataclass
class StagedScene:
    record: dict                       # a SCENE_SCHEMA row (segment filled at commit)
    tiles: list[dict]                  # TILE_SCHEMA rows
    vectors: np.ndarray                # (n, d) float32
    thumbs: list[bytes]
    overview: dict | None = None       # OVERVIEW_SCHEMA row


@dataclass
class WrittenSegment:
    """Scenes whose tiles another process already wrote into a hidden, fsynced segment folder
    (`segment.write_segment_files`), for this writer to commit: the distributed indexer's
    writers run on workers, the commit stays here. `folder` is None for scenes without tiles."""
    folder: str | None
    n_rows: int
    scenes: list[dict]                 # SCENE_SCHEMA rows, n_tiles set (segment filled at commit)


@dataclass
class CommitResult:
    generation: int
    scenes_added: int
    tiles_added: int
    tiles_deleted: int


@dataclass
class _State:
    scenes: dict[str, dict] = field(default_factory=dict)   # path -> scene row
    tombstones: set[tuple[str, int]] = field(default_factory=set)  # (segment, tile_id)


class StoreWriter:
    def __init__(self, root: str | Path, encoder: dict, *, commit_every: int = 2048,
                 lock: WriterLock | None = None, verify: bool = True):
        """`lock`: the index's writer lock, already acquired (the caller took it before a slow
        start); the writer releases it on close. `verify`: refuse a live generation with a
        missing, truncated or unreadable file (DamagedIndexError naming it): a new generation
        is never published on top of damage. Only the repair (engine/repair.py) opens a
        damaged index, to publish the repaired generation."""
        self.layout = Layout(root)
        self._next_segment: str | None = None
        self.lock = lock if lock is not None else WriterLock(self.layout.root).acquire()
        try:
            self.encoder = encoder
            self.commit_every = commit_every
            if self.layout.exists():
                self.manifest = read_current(self.layout)
                if self.manifest.encoder.get("identity") != encoder.get("identity"):
                    raise EncoderMismatchError(
                        f"{root}: index was built with encoder {self.manifest.encoder.get('identity')}, "
                        f"this run uses {encoder.get('identity')}; index into a new folder "
                        f"(vectors of two encoders cannot be compared)")
                if verify:
                    damage = generation_damage(self.layout, self.manifest)
                    if damage:
                        raise damaged(self.layout, damage)
                try:
                    scenes = read_scenes(self.layout, self.manifest).to_pylist()
                    t = read_tombstones(self.layout, self.manifest)
                except (OSError, pa.ArrowException) as e:
                    raise CorruptIndexError(f"{root}: generation {self.manifest.generation}'s scenes "
                                            f"or tombstones file is unreadable ({str(e)[:160]})") from None
                self.state = _State({path_from_store(s["path"]): dict(s, path=path_from_store(s["path"]))
                                     for s in scenes},
                                    set(zip(t.column("segment").to_pylist(),
                                            t.column("tile_id").to_pylist())))
            else:
                self.manifest = Manifest.empty(encoder)
                self.state = _State()
            self.removed_orphans = self._remove_orphans()
        except BaseException:
            self.lock.release()
            raise
        self.staged: list[StagedScene] = []
        self.removed: list[str] = []
        self.touched: dict[str, dict] = {}
        self.written: list[WrittenSegment] = []
        self._staged_tiles = 0

    # --- queries -------------------------------------------------------------------
    def scene(self, path: str) -> dict | None:
        return self.state.scenes.get(path)

    def scene_paths(self) -> list[str]:
        return list(self.state.scenes)

    @property
    def pending_tiles(self) -> int:
        return self._staged_tiles

    # --- changes -------------------------------------------------------------------
    def stage(self, scene: StagedScene) -> None:
        if not len(scene.tiles) == scene.vectors.shape[0] == len(scene.thumbs):
            raise GLBError(f"{scene.record['path']}: {len(scene.tiles)} tiles, {scene.vectors.shape[0]} "
                           f"vectors and {len(scene.thumbs)} thumbnails; not indexed")
        if not np.isfinite(scene.vectors).all():  # one NaN row would poison every search
            raise GLBError(f"{scene.record['path']}: its embeddings contain NaN or Inf; not indexed")
        self.staged = [s for s in self.staged if s.record["path"] != scene.record["path"]]
        self.staged.append(scene)
        self._staged_tiles = sum(len(s.tiles) for s in self.staged)

    def stage_written(self, seg: WrittenSegment) -> None:
        """Stage a segment written elsewhere; the next commit renames it into place under a
        name of its generation and publishes it with everything else staged."""
        if seg.folder is not None and (not seg.folder.startswith(".") or "/" in seg.folder
                                       or not (self.layout.segments / seg.folder).is_dir()):
            raise GLBError(f"{self.layout.segments / str(seg.folder)}: not a written segment folder")
        if seg.n_rows != sum(int(r["n_tiles"] or 0) for r in seg.scenes):
            raise GLBError(f"{seg.folder}: {seg.n_rows} rows but its scenes count "
                           f"{sum(int(r['n_tiles'] or 0) for r in seg.scenes)} tiles")
        pending = {s.record["path"] for s in self.staged} | \
            {r["path"] for w in self.written for r in w.scenes}
        dup = [r["path"] for r in seg.scenes if r["path"] in pending]
        if dup:  # its rows cannot be dropped from a written segment: refuse rather than duplicate
            raise GLBError(f"{dup[0]}: staged twice in one commit")
        self.written.append(seg)
        self._staged_tiles += seg.n_rows

    def remove(self, path: str) -> None:
        if path in self.state.scenes:
            self.removed.append(path)

    def touch(self, path: str, **fields) -> None:
        """Same content, new size/mtime (e.g. copied back): update the record, keep the tiles."""
        if path in self.state.scenes:
            self.touched[path] = fields

    def should_commit(self) -> bool:
        return self._staged_tiles >= self.commit_every

    def commit(self) -> CommitResult | None:
        if not self.staged and not self.removed and not self.touched and not self.written:
            return None
        gen = self.manifest.generation + 1
        scenes = dict(self.state.scenes)
        tombstones = set(self.state.tombstones)
        deleted = 0
        segments = list(self.manifest.segments)

        def retire(path: str) -> None:
            nonlocal deleted
            old = scenes.pop(path, None)
            if old is not None and old["n_tiles"]:
                ids = self._tile_ids_of(old)
                tombstones.update((old["segment"], i) for i in ids)
                deleted += len(ids)

        for path in self.removed:
            retire(path)
        for path, fields in self.touched.items():
            if path in scenes:
                scenes[path] = dict(scenes[path], **fields)
        staged_with_tiles = [s for s in self.staged if s.tiles]
        if staged_with_tiles:
            name = new_segment_name(gen)
            tiles = pa.Table.from_pylist([t for s in staged_with_tiles for t in s.tiles], schema=TILE_SCHEMA)
            vectors = np.concatenate([s.vectors for s in staged_with_tiles]).astype(np.float32)
            thumbs = pa.Table.from_pydict(
                {"tile_id": tiles.column("tile_id"),
                 "jpeg": [p for s in staged_with_tiles for p in s.thumbs]}, schema=THUMB_SCHEMA)
            overviews = pa.Table.from_pylist([s.overview for s in staged_with_tiles if s.overview],
                                             schema=OVERVIEW_SCHEMA)
            write_segment(self.layout, name, tiles, vectors, thumbs, overviews)
            segments.append(SegmentInfo(name=name, n_rows=tiles.num_rows))
        else:
            name = None
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        added_tiles = 0
        for s in self.staged:
            retire(s.record["path"])
            rec = dict(s.record, segment=name if s.tiles else None, indexed_at=now,
                       n_tiles=len(s.tiles))
            scenes[rec["path"]] = rec
            added_tiles += len(s.tiles)
        for w in self.written:
            wname = None
            if w.folder is not None and w.n_rows:
                wname = new_segment_name(gen)
                install_segment(self.layout, self.layout.segments / w.folder, wname)
                segments.append(SegmentInfo(name=wname, n_rows=w.n_rows))
            for r in w.scenes:
                retire(r["path"])
                n = int(r["n_tiles"] or 0)
                scenes[r["path"]] = dict(r, segment=wname if n else None, indexed_at=now)
                added_tiles += n

        m = self._publish(gen, segments, scenes, tombstones)
        result = CommitResult(gen, len(self.staged) + sum(len(w.scenes) for w in self.written),
                              added_tiles, deleted)
        self.manifest = m
        self.state = _State(scenes, tombstones)
        self.staged, self.removed, self.touched, self._staged_tiles = [], [], {}, 0
        self.written = []
        log.info("committed generation %d: +%d tiles, -%d tiles", gen, added_tiles, deleted)
        return result

    def commit_bulk(self, records: list[dict], tiles: pa.Table, vectors: np.ndarray,
                    thumbs: list[bytes] | None = None) -> CommitResult:
        """Bulk path (benchmarks, imports of pre-embedded archives): new scenes given as column
        data become one segment, committed at once by the same steps as `commit` (segment,
        scenes file, tombstones carried over, manifest, CURRENT). `records` are SCENE_SCHEMA
        rows whose `n_tiles` count their rows in `tiles`; no scene may already be indexed."""
        if self.staged or self.removed or self.touched or self.written:
            raise GLBError("commit the staged changes before a bulk commit")
        dup = [r["path"] for r in records if r["path"] in self.state.scenes]
        if dup:
            raise GLBError(f"bulk commit: {len(dup)} scenes are already indexed (e.g. {dup[0]})")
        n = tiles.num_rows
        if vectors.shape[0] != n or sum(int(r["n_tiles"] or 0) for r in records) != n:
            raise GLBError("bulk commit: tiles, vectors and the scenes' n_tiles disagree")
        gen = self.manifest.generation + 1
        segments = list(self.manifest.segments)
        name = new_segment_name(gen) if n else None
        if name is not None:
            th = pa.Table.from_pydict({"tile_id": tiles.column("tile_id"),
                                       "jpeg": thumbs if thumbs is not None else [b""] * n},
                                      schema=THUMB_SCHEMA)
            write_segment(self.layout, name, tiles.cast(TILE_SCHEMA), vectors, th,
                          OVERVIEW_SCHEMA.empty_table())
            segments.append(SegmentInfo(name=name, n_rows=n))
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        scenes = dict(self.state.scenes)
        for r in records:
            scenes[r["path"]] = dict(r, segment=name if r["n_tiles"] else None, indexed_at=now)
        m = Manifest(generation=gen, encoder=self.encoder, segments=segments,
                     n_tiles=sum(int(r["n_tiles"] or 0) for r in scenes.values()))
        m.scenes_file = f"{gen:09d}.scenes.parquet"
        pq.write_table(pa.Table.from_pylist([stored_scene(r) for r in scenes.values()], schema=SCENE_SCHEMA),
                       self.layout.manifests / m.scenes_file)
        if self.state.tombstones:
            m.tombstones_file = f"{gen:09d}.tombstones.parquet"
            write_tombstones(self.layout, m.tombstones_file, self.state.tombstones)
        fsync_dir(self.layout.manifests)
        publish(self.layout, m)
        self.manifest = m
        self.state = _State(scenes, set(self.state.tombstones))
        return CommitResult(gen, len(records), n, 0)

    def _tile_ids_of(self, scene: dict) -> list[int]:
        seg = scene.get("segment")
        if not seg:
            return []
        t = read_tiles(self.layout, seg).select(["tile_id", "scene_id"])
        mask = pa.compute.equal(t.column("scene_id"), scene["scene_id"])
        return t.filter(mask).column("tile_id").to_pylist()

    # --- housekeeping ---------------------------------------------------------------
    def discard_unfinished(self) -> list[str]:
        """After a failed commit (disk full, read-only): delete what it left behind, judging
        what is live from CURRENT on disk. Best effort; the next writer does it anyway."""
        try:
            live = read_current(self.layout) if self.layout.exists() else Manifest.empty(self.encoder)
            if live.generation != self.manifest.generation:
                return []  # CURRENT moved before the failure: the commit landed, keep its files
            return self._remove_orphans()
        except (OSError, GLBError):
            return []

    def _remove_orphans(self) -> list[str]:
        """Delete files no live manifest names: leftovers of a crashed commit (always) and
        of older generations (once no searcher can still be reading them)."""
        self.layout.manifests.mkdir(parents=True, exist_ok=True)
        self.layout.segments.mkdir(parents=True, exist_ok=True)
        m = self.manifest
        keep_segments = {s.name for s in m.segments}
        keep_manifest = {f"{m.generation:09d}.json", m.scenes_file, m.tombstones_file}
        removed = []
        now = time.time()

        def mtime(path) -> float:
            try:
                return path.stat().st_mtime
            except FileNotFoundError:
                return 0.0

        # The grace period runs from when a file stopped being live, not from when it was
        # written: a file of generation g was live until generation g + 1 was published
        # (segments: until the last commit, at the latest).
        last_commit = mtime(self.layout.current)
        for p in list(self.layout.segments.iterdir()):
            if p.name in keep_segments:
                continue
            seg_gen = int(p.name.lstrip(".").split("-")[0]) if p.name.lstrip(".")[:9].isdigit() else -1
            crashed = p.name.startswith(".") or seg_gen > m.generation
            if crashed or now - last_commit > ORPHAN_GRACE_S:
                shutil.rmtree(p, ignore_errors=True)
                removed.append(str(p))
        for p in list(self.layout.manifests.iterdir()):
            if p.name in keep_manifest:
                continue
            gen = int(p.name.lstrip(".")[:9]) if p.name.lstrip(".")[:9].isdigit() else -1
            crashed = p.name.startswith(".") or gen > m.generation
            if crashed or now - mtime(self.layout.manifest(gen + 1)) > ORPHAN_GRACE_S:
                p.unlink(missing_ok=True)
                removed.append(str(p))
        for p in list(self.layout.root.iterdir()):  # CURRENT's temporary file of a crashed commit
            if p.name.startswith(".CURRENT.tmp-"):
                p.unlink(missing_ok=True)
                removed.append(str(p))
        if removed:
            log.info("removed %d files of unfinished or superseded commits", len(removed))
        return removed

    def compact(self) -> CommitResult | None:
        """Rewrite all live tiles into one segment, dropping tombstoned rows."""
        from .segment import read_overviews, read_thumbs, read_vectors

        if len(self.manifest.segments) <= 1 and not self.state.tombstones:
            return None
        if self.staged or self.removed:
            raise RuntimeError("commit staged changes before compacting")
        n_dead = len(self.state.tombstones)
        tiles_parts, vec_parts, thumb_parts, ov_parts = [], [], [], []
        live_scene_ids = {s["scene_id"] for s in self.state.scenes.values()}
        for seg in self.manifest.segments:
            dead = np.array([i for s, i in self.state.tombstones if s == seg.name], dtype=np.int64)
            t = read_tiles(self.layout, seg.name)
            keep = ~np.isin(t.column("tile_id").to_numpy(), dead)
            tiles_parts.append(t.filter(pa.array(keep)))
            vec_parts.append(read_vectors(self.layout, seg.name)[keep])
            th = read_thumbs(self.layout, seg.name)
            thumb_parts.append(th.filter(pa.array(~np.isin(th.column("tile_id").to_numpy(), dead))))
            ov = read_overviews(self.layout, seg.name)
            ov_parts.append(ov.filter(pa.array([sid in live_scene_ids for sid in ov.column("scene_id").to_pylist()], type=pa.bool_())))
        gen = self.manifest.generation + 1
        name = new_segment_name(gen)
        tiles = pa.concat_tables(tiles_parts)
        write_segment(self.layout, name, tiles, np.concatenate(vec_parts),
                      pa.concat_tables(thumb_parts), pa.concat_tables(ov_parts))
        scenes = {p: dict(s, segment=name if s["n_tiles"] else None) for p, s in self.state.scenes.items()}
        m = Manifest(generation=gen, encoder=self.encoder,
                     segments=[SegmentInfo(name, tiles.num_rows)] if tiles.num_rows else [],
                     n_tiles=tiles.num_rows)
        m.scenes_file = f"{gen:09d}.scenes.parquet"
        pq.write_table(pa.Table.from_pylist([stored_scene(r) for r in scenes.values()], schema=SCENE_SCHEMA),
                       self.layout.manifests / m.scenes_file)
        fsync_dir(self.layout.manifests)
        publish(self.layout, m)
        self.manifest, self.state = m, _State(scenes, set())
        return CommitResult(gen, 0, 0, n_dead)

    def _publish(self, gen: int, segments: list, scenes: dict, tombstones) -> Manifest:
        """Write generation `gen`'s scenes and tombstones files and its manifest, then swap
        CURRENT to it (the commit point): the one way both commits publish."""
        m = Manifest(generation=gen, encoder=self.encoder, segments=segments,
                     n_tiles=sum(int(r["n_tiles"] or 0) for r in scenes.values()))
        m.scenes_file = f"{gen:09d}.scenes.parquet"
        pq.write_table(pa.Table.from_pylist([stored_scene(r) for r in scenes.values()], schema=SCENE_SCHEMA),
                       self.layout.manifests / m.scenes_file)
        if tombstones:
            m.tombstones_file = f"{gen:09d}.tombstones.parquet"
            write_tombstones(self.layout, m.tombstones_file, tombstones)
        fsync_dir(self.layout.manifests)
        publish(self.layout, m)
        return m

    def commit_generation(self, keep: list[SegmentInfo], new_segment: tuple | None,
                          scenes: dict[str, dict], tombstones: set[tuple[str, int]]) -> CommitResult:
        """Publish a generation made of segments kept as they are, at most one new segment
        (tiles, vectors, thumbs, overviews) and the given scene records and tombstones, by the
        same steps as every commit (segment, scenes file, tombstones, manifest, CURRENT). The
        repair's way to write (engine/repair.py); scene records of tiles in the new
        segment must already name it (`segment_name` gives its name)."""
        if self.staged or self.removed or self.touched:
            raise GLBError("commit the staged changes before publishing a generation")
        gen = self.manifest.generation + 1
        segments = list(keep)
        if new_segment is not None:
            tiles, vectors, thumbs, overviews = new_segment
            name = self.segment_name(gen)
            write_segment(self.layout, name, tiles, vectors, thumbs, overviews)
            segments.append(SegmentInfo(name=name, n_rows=tiles.num_rows))
        m = self._publish(gen, segments, scenes, tombstones)
        deleted = len(self.state.scenes) - len(scenes)
        self.manifest, self.state = m, _State(dict(scenes), set(tombstones))
        return CommitResult(gen, 0, 0, deleted)

    def segment_name(self, generation: int) -> str:
        if self._next_segment is None or not self._next_segment.startswith(f"{generation:09d}-"):
            self._next_segment = new_segment_name(generation)
        return self._next_segment

    def close(self) -> None:
        self.lock.release()

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
