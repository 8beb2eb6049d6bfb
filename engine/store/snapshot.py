"""A read-only, in-memory view of one generation of an index, for searching.

Loaded from the segments the manifest names: tile metadata into an in-memory DuckDB table
with an R-tree on the footprints, vectors into one float32 matrix (row = position), and
column arrays for fast vectorised filtering. Never touches the writer's lock, so searches
run while an indexer writes; a newer generation is picked up by building a new Snapshot
(reusing already-loaded segments) and swapping it in.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .duck import connect
from .layout import Layout
from .manifest import Manifest, read_current, read_scenes, read_tombstones
from .segment import read_tiles, read_vectors


@dataclass
class LoadedSegment:
    name: str
    tiles: pa.Table
    vectors: np.ndarray


class Snapshot:
    def __init__(self, layout: Layout, manifest: Manifest, current_name: str,
                 cache: dict[str, LoadedSegment] | None = None):
        self.layout = layout
        self.manifest = manifest
        self.current_name = current_name
        cache = cache or {}
        self.segments: dict[str, LoadedSegment] = {}
        for info in manifest.segments:
            seg = cache.get(info.name)
            if seg is None:
                seg = LoadedSegment(info.name, read_tiles(layout, info.name),
                                    read_vectors(layout, info.name))
                if seg.tiles.num_rows != seg.vectors.shape[0] or seg.tiles.num_rows != info.n_rows:
                    from .manifest import CorruptIndexError
                    raise CorruptIndexError(
                        f"segment {info.name}: {seg.tiles.num_rows} tiles, {seg.vectors.shape[0]} "
                        f"vectors, manifest says {info.n_rows}")
            self.segments[info.name] = seg
        dim = int(manifest.encoder.get("dim", 384))
        parts = [s.tiles.append_column("segment", pa.array([s.name] * s.tiles.num_rows, pa.string()))
                 for s in self.segments.values()]
        if parts:
            tiles = pa.concat_tables(parts)
            vectors = np.concatenate([s.vectors for s in self.segments.values()])
        else:
            from .layout import TILE_SCHEMA
            tiles = TILE_SCHEMA.empty_table().append_column("segment", pa.array([], pa.string()))
            vectors = np.zeros((0, dim), np.float32)
        dead = read_tombstones(layout, manifest)
        alive = np.ones(tiles.num_rows, dtype=bool)
        if dead.num_rows:
            key = pc.binary_join_element_wise(tiles.column("segment"),
                                              pc.cast(tiles.column("tile_id"), pa.string()), ":")
            dead_key = pc.binary_join_element_wise(dead.column("segment"),
                                                   pc.cast(dead.column("tile_id"), pa.string()), ":")
            alive = ~pc.is_in(key, value_set=dead_key).to_numpy(zero_copy_only=False)
        rows = np.flatnonzero(alive)
        self.tiles = tiles.take(pa.array(rows)) if len(rows) != tiles.num_rows else tiles
        self.vectors = np.ascontiguousarray(vectors[rows], dtype=np.float32)
        self.dim = dim
        self.tile_ids = self.tiles.column("tile_id").to_numpy()
        self._row_of = {int(t): i for i, t in enumerate(self.tile_ids)}
        # Column arrays for vectorised filters (envelopes, categorical codes, dates).
        self.minx, self.miny, self.maxx, self.maxy = (
            self.tiles.column(c).to_numpy() for c in ("minx", "miny", "maxx", "maxy"))
        self.modality = np.asarray(self.tiles.column("modality").to_pylist(), dtype=object)
        self.sensor = np.asarray(self.tiles.column("sensor").to_pylist(), dtype=object)
        acq = pc.cast(self.tiles.column("acquired"), pa.int32()).to_numpy(zero_copy_only=False)
        self.acquired_days = np.where(np.isnan(acq.astype(float)), -10**9, acq).astype(np.int64) \
            if self.tiles.num_rows else np.zeros(0, np.int64)
        self._duck = None
        self._duck_lock = threading.Lock()
        self._faiss = None

    # --- lazily built search structures ------------------------------------------------
    @property
    def duck(self):
        """In-memory DuckDB: table `tiles` (row, tile_id, modality, sensor, acquired, geom) with
        an R-tree on geom. Built on first filtered query."""
        with self._duck_lock:
            if self._duck is None:
                con = connect()
                meta = self.tiles.select(["tile_id", "modality", "sensor", "acquired", "geometry"])
                meta = meta.append_column("row", pa.array(np.arange(meta.num_rows, dtype=np.int64)))
                con.register("meta_arrow", meta)
                con.execute("""CREATE TABLE tiles AS SELECT row, tile_id, modality, sensor, acquired,
                               ST_GeomFromWKB(geometry) AS geom FROM meta_arrow""")
                con.unregister("meta_arrow")
                con.execute("CREATE INDEX tiles_geom ON tiles USING RTREE (geom)")
                self._duck = con
            return self._duck

    @property
    def faiss_index(self):
        if self._faiss is None:
            import faiss

            index = faiss.IndexFlatIP(self.dim)
            if len(self.vectors):
                index.add(self.vectors)
            self._faiss = index
        return self._faiss

    # --- lookups ---------------------------------------------------------------------------
    @property
    def n_tiles(self) -> int:
        return len(self.tile_ids)

    def row_of(self, tile_id: int) -> int | None:
        return self._row_of.get(int(tile_id))

    def scenes(self) -> pa.Table:
        return read_scenes(self.layout, self.manifest)

    @classmethod
    def load(cls, root, previous: "Snapshot | None" = None) -> "Snapshot":
        layout = Layout(root)
        m = read_current(layout)
        cache = previous.segments if previous is not None else None
        return cls(layout, m, layout.manifest(m.generation).name, cache)

    def is_current(self) -> bool:
        try:
            return self.layout.current.read_text().strip() == self.current_name
        except FileNotFoundError:
            return True  # index removed under us: keep serving what we have
