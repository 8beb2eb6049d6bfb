"""A read-only view of one generation of an index, for searching.

Loaded from the segments the manifest names. Kept in RAM: compact column arrays for filtering
(tile ids, conservative float32 envelopes, modality/sensor codes, acquisition days), a lon/lat
grid over the tiles (spatial candidates and cheap selectivity estimates, see
`engine/retrieval/filters.py`), and the vector index (`engine/retrieval/vectors.py`: exact Flat with the vectors in
RAM for small indexes; IVF-PQ codes with the float32 vectors memory-mapped from the segments for
large ones). Large indexes also keep the full tile records on disk: each segment's
tiles.parquet is copied once into an uncompressed Arrow file in `<index>/vindex/` that is
memory-mapped, so a result reads only its own rows.

Never touches the writer's lock, so searches run while an indexer writes; a newer generation is
picked up by building a new Snapshot (reusing already-loaded segments) and swapping it in.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..modalities import MODALITIES
from ..store.files import try_atomic_write
from ..store.layout import TILE_SCHEMA, Layout
from ..store.manifest import Manifest, read_current, read_scenes, read_tombstones
from ..store.segment import advise, read_tiles, read_vectors
from ..store.verify import damaged, generation_damage, require_whole
from . import vectors as vec
from .config import DEFAULT, VectorIndexConfig
from .filters import SpatialGrid

log = logging.getLogger("glb.store")

NULL_DAY = -(2 ** 31)


def _f32_down(x: np.ndarray) -> np.ndarray:
    a = x.astype(np.float32)
    bad = a.astype(np.float64) > x
    a[bad] = np.nextafter(a[bad], np.float32(-np.inf))
    return a


def _f32_up(x: np.ndarray) -> np.ndarray:
    a = x.astype(np.float32)
    bad = a.astype(np.float64) < x
    a[bad] = np.nextafter(a[bad], np.float32(np.inf))
    return a


@dataclass
class LoadedSegment:
    name: str
    tiles: pa.Table           # in RAM (small index) or memory-mapped Arrow (large index)
    vectors: np.ndarray       # in RAM (small) or memory-mapped float32 (large)
    cols: dict | None         # compact columns, physical rows (None: dropped, see Snapshot)
    _batches: tuple | None = None

    def batches(self):
        """The tile records as record batches (zero-copy) and their first rows."""
        if self._batches is None:
            bs = self.tiles.to_batches()
            offs = np.cumsum([0] + [b.num_rows for b in bs]).astype(np.int64)
            self._batches = (bs, offs)
        return self._batches


def _compact(tiles: pa.Table) -> dict:
    n = tiles.num_rows
    cols = {"tile_id": tiles.column("tile_id").to_numpy().astype(np.int64)}
    for c, f in (("minx", _f32_down), ("miny", _f32_down), ("maxx", _f32_up), ("maxy", _f32_up)):
        cols[c] = f(tiles.column(c).to_numpy(zero_copy_only=False).astype(np.float64))
    mod = pc.index_in(tiles.column("modality"), value_set=pa.array(MODALITIES)).to_numpy(zero_copy_only=False)
    cols["modality"] = np.where(np.isnan(mod.astype(float)), 255, mod).astype(np.uint8) if n else np.zeros(0, np.uint8)
    cols["sensor_names"], cols["sensor_local"] = [], np.zeros(0, np.int32)
    if n:
        sens = tiles.column("sensor").combine_chunks().dictionary_encode()
        cols["sensor_names"] = [str(s) for s in sens.dictionary.to_pylist()]
        cols["sensor_local"] = sens.indices.to_numpy(zero_copy_only=False).astype(np.int32)
    for c in STAC_COLUMNS:
        cols[c + "_names"], cols[c] = _codes(tiles.column(c))
    acq = pc.cast(tiles.column("acquired"), pa.int32()).fill_null(NULL_DAY)
    cols["acquired"] = acq.to_numpy().astype(np.int32) if n else np.zeros(0, np.int32)
    return cols


STAC_COLUMNS = ("stac_collection", "stac_item")


def _codes(column: pa.ChunkedArray) -> tuple[list[str], np.ndarray | None]:
    """A string column as (its distinct values, int32 codes into them, -1 where null); codes
    None when every value is null (a segment not from STAC holds no array for it)."""
    if len(column) == 0 or column.null_count == len(column):
        return [], None
    enc = column.combine_chunks().dictionary_encode()
    codes = enc.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32)
    return [str(v) for v in enc.dictionary.to_pylist()], codes


def _merge_codes(seg_cols: list[dict], key: str) -> tuple[list[str], np.ndarray | None]:
    """Per-segment codes of one column -> one sorted dictionary for the snapshot and the
    codes of every physical row (-1: null); None when no segment has a value."""
    names = sorted({n for c in seg_cols for n in c[key + "_names"]})
    if not names:
        return [], None
    pos = {n: i for i, n in enumerate(names)}
    parts = []
    for c in seg_cols:
        if c[key] is None:
            parts.append(np.full(len(c["tile_id"]), -1, np.int32))
            continue
        remap = np.asarray([pos[n] for n in c[key + "_names"]] + [-1], np.int32)
        parts.append(remap[c[key]])  # code -1 picks the appended -1
    return names, np.concatenate(parts)


class Snapshot:
    def __init__(self, layout: Layout, manifest: Manifest, current_name: str,
                 cache: dict[str, LoadedSegment] | None = None,
                 config: VectorIndexConfig = DEFAULT.vectors):
        self.layout = layout
        self.config = config
        self.manifest = manifest
        self.current_name = current_name
        cache = cache or {}
        damage = generation_damage(layout, manifest, segments=[])  # its scenes, tombstones files
        if damage:
            raise damaged(layout, damage)
        total = sum(int(s.n_rows) for s in manifest.segments)
        self.large = total >= config.quant_min_rows
        self.segments: dict[str, LoadedSegment] = {}
        for info in manifest.segments:
            seg = cache.get(info.name)
            if seg is None or (isinstance(seg.vectors, np.memmap) != self.large):
                seg = self._load_segment(info.name)
                if seg.tiles.num_rows != seg.vectors.shape[0] or seg.tiles.num_rows != info.n_rows:
                    raise damaged(layout, [f"segments/{info.name}: {seg.tiles.num_rows} tiles, "
                                           f"{seg.vectors.shape[0]} vectors, manifest says {info.n_rows}"])
            if seg.cols is None:  # dropped after the last snapshot was built (large index)
                seg.cols = _compact(seg.tiles)
            self.segments[info.name] = seg
        self.dim = dim = int(manifest.encoder.get("dim", 384))
        segs = list(self.segments.values())
        seg_cols: list[dict] = [c for s in segs if (c := s.cols) is not None]  # all, set above
        self.seg_names = [s.name for s in segs]
        self.seg_offsets = np.cumsum([0] + [s.tiles.num_rows for s in segs]).astype(np.int64)
        n_phys = int(self.seg_offsets[-1])

        # Tombstones: live -> physical row map (None when every row is live).
        try:
            dead = read_tombstones(layout, manifest)
        except (OSError, pa.ArrowException) as e:
            raise damaged(layout, [f"manifests/{manifest.tombstones_file}: unreadable "
                                   f"({str(e).splitlines()[0][:120]})"]) from None
        self.live_phys = None
        live_masks: list[np.ndarray | None] = [None] * len(segs)
        if dead.num_rows and n_phys:
            alive = np.ones(n_phys, dtype=bool)
            for i, s in enumerate(segs):
                ids = dead.filter(pc.equal(dead.column("segment"), s.name)).column("tile_id").to_numpy()
                if len(ids):
                    m = ~np.isin(seg_cols[i]["tile_id"], ids)
                    live_masks[i] = m
                    alive[self.seg_offsets[i]:self.seg_offsets[i + 1]] = m
            if not alive.all():
                self.live_phys = np.flatnonzero(alive).astype(np.int64)
        self._live_masks = live_masks

        def cat(key, dtype):
            parts = [c[key] for c in seg_cols]
            a = np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype)
            return a if self.live_phys is None else a[self.live_phys]

        self.tile_ids = cat("tile_id", np.int64)
        self.minx, self.miny = cat("minx", np.float32), cat("miny", np.float32)
        self.maxx, self.maxy = cat("maxx", np.float32), cat("maxy", np.float32)
        self.modality_code = cat("modality", np.uint8)
        self.acquired_days = cat("acquired", np.int32)
        # sensors: one dictionary for the snapshot
        names = sorted({n for c in seg_cols for n in c["sensor_names"]})
        self.sensor_names = names
        pos = {n: i for i, n in enumerate(names)}
        sparts = [np.asarray([pos[n] for n in c["sensor_names"]], np.int32)[c["sensor_local"]]
                  if len(c["sensor_local"]) else np.zeros(0, np.int32) for c in seg_cols]
        sc = np.concatenate(sparts).astype(np.uint16 if len(names) < 65535 else np.int32) if sparts \
            else np.zeros(0, np.uint16)
        self.sensor_code = sc if self.live_phys is None else sc[self.live_phys]
        # STAC collection / item: one dictionary each for the snapshot, code -1 for tiles not
        # from STAC; no array at all for an index without STAC tiles
        self.stac_names: dict[str, list[str]] = {}
        self.stac_code: dict[str, np.ndarray | None] = {}
        self.stac_counts: dict[str, np.ndarray] = {}
        for column in STAC_COLUMNS:
            cnames, codes = _merge_codes(seg_cols, column)
            if codes is not None and self.live_phys is not None:
                codes = codes[self.live_phys]
            self.stac_names[column], self.stac_code[column] = cnames, codes
            self.stac_counts[column] = (np.bincount(codes[codes >= 0], minlength=len(cnames))
                                        if codes is not None else np.zeros(0, np.int64))
        # tile id -> row
        self._id_order = np.argsort(self.tile_ids, kind="stable").astype(
            np.int32 if len(self.tile_ids) < 2 ** 31 else np.int64)
        self._id_sorted = self.tile_ids[self._id_order]
        # per-value counts for selectivity estimates
        self.modality_counts = np.bincount(self.modality_code, minlength=256)
        self.sensor_counts = np.bincount(self.sensor_code, minlength=len(names)) if len(names) else np.zeros(0, np.int64)
        days = self.acquired_days[self.acquired_days != NULL_DAY]
        self.day0 = int(days.min()) if len(days) else 0
        self.day_cum = np.concatenate([[0], np.cumsum(np.bincount(days - self.day0))]) if len(days) \
            else np.zeros(1, np.int64)
        # vectors (float32) of live rows
        self.vectors = vec.RowVectors([s.vectors for s in segs] or [np.zeros((0, dim), np.float32)],
                                      dim, self.live_phys)
        self.grid = SpatialGrid(self.minx, self.miny, self.maxx, self.maxy)
        if self.large:  # the per-segment columns were copied into the arrays above: ~35 B a
            for seg in segs:  # tile at 10 M; recomputed from the mapped files on refresh
                seg.cols = None
        self._duck = None
        self._duck_lock = threading.Lock()
        self._vindex = None
        self._vindex_lock = threading.Lock()

    def _load_segment(self, name: str) -> LoadedSegment:
        """A segment's files, checked whole first (a missing or truncated file is one line
        naming it and the repair, never a traceback from numpy or Arrow)."""
        info = next(s for s in self.manifest.segments if s.name == name)
        require_whole(self.layout, [info])
        try:
            if not self.large:
                tiles = read_tiles(self.layout, name)
                return LoadedSegment(name, tiles, read_vectors(self.layout, name), _compact(tiles))
            tiles = self._arrow_tiles(name)
            vectors = read_vectors(self.layout, name, mmap=True)
            advise(vectors, "random")  # searches gather scattered rows (re-rank, exact scoring)
            return LoadedSegment(name, tiles, vectors, _compact(tiles))
        except (OSError, ValueError, pa.ArrowException) as e:
            raise damaged(self.layout, [f"segments/{name}: unreadable ({str(e).splitlines()[0][:120]})"]) from None

    def _arrow_tiles(self, name: str) -> pa.Table:
        """The segment's tile records as a memory-mapped Arrow file (made once, from the
        immutable tiles.parquet; kept in memory if the index folder is not writable). The file
        is derived data: it is used only while it matches its source (segment name, row count
        and tile ids, recorded when written and compared with tiles.parquet's), and rebuilt
        otherwise."""
        import pyarrow.ipc as ipc

        path = arrow_tiles_path(self.layout, name)
        source_ids = read_tile_ids(self.layout, name)
        if path.is_file():
            try:
                t = ipc.open_file(pa.memory_map(str(path))).read_all()
                why = arrow_tiles_mismatch(t, name, source_ids)
                if why is None:
                    return t
                log.warning("%s: %s; rebuilding it from the segment", path, why)
            except (OSError, pa.ArrowException) as e:
                log.warning("%s: unreadable (%s); rebuilding it from the segment", path, e)
        t = read_tiles(self.layout, name)
        t = t.replace_schema_metadata(arrow_tiles_metadata(name, source_ids))

        def write(p):
            with pa.OSFile(str(p), "wb") as f, ipc.new_file(f, t.schema) as w:
                w.write_table(t, max_chunksize=65_536)

        if try_atomic_write(path, write):
            del t
            return ipc.open_file(pa.memory_map(str(path))).read_all()
        return t

    # --- lazily built search structures ------------------------------------------------
    @property
    def vector_index(self):
        """Exact Flat (small) or IVF-PQ with exact re-ranking (large); see engine/retrieval/vectors.py."""
        with self._vindex_lock:
            if self._vindex is None:
                from . import gpu

                # on a GPU, exact search stays fastest up to gpu_flat_max_rows (gpu.py)
                gpu_flat = bool(self.config.use_gpu) and self.n_tiles <= self.config.gpu_flat_max_rows \
                    and gpu.gpu_count() > 0
                if self.large and not gpu_flat:
                    segs = [(s.name, s.vectors, m) for s, m in zip(self.segments.values(), self._live_masks)]
                    self._vindex = vec.build_ivfpq(self.layout.root, segs, self.vectors, self.dim,
                                                   self.config)
                else:
                    self._vindex = vec.FlatIndex(self.vectors)
                self._vindex = gpu.to_gpu(self._vindex, self.config)
            return self._vindex

    def take(self, rows, columns: list[str] | None = None) -> pa.Table:
        """Tile records of live rows, in the order given, with a `segment` column."""
        rows = np.asarray(rows, dtype=np.int64)
        phys = rows if self.live_phys is None else self.live_phys[rows]
        segs = list(self.segments.values())
        if not segs:
            t = TILE_SCHEMA.empty_table()
            t = t.select(columns) if columns else t
            return t.append_column("segment", pa.array([], pa.string()))
        seg = np.searchsorted(self.seg_offsets, phys, side="right") - 1
        parts, order = [], []
        for si in np.unique(seg):
            m = np.flatnonzero(seg == si)
            local = phys[m] - self.seg_offsets[si]
            # per record batch: Table.take on a chunked column concatenates every chunk first
            # (a full copy of the segment, per query)
            batches, offs = segs[si].batches()
            b = np.searchsorted(offs, local, side="right") - 1
            for bi in np.unique(b):
                j = np.flatnonzero(b == bi)
                rb = batches[bi]
                rb = rb.select(columns) if columns else rb
                t = pa.Table.from_batches([rb.take(pa.array(local[j] - offs[bi]))])
                parts.append(t.append_column("segment", pa.array([segs[si].name] * len(j), pa.string())))
                order.append(m[j])
        if not parts:
            t = segs[0].tiles.select(columns) if columns else segs[0].tiles
            return t.slice(0, 0).append_column("segment", pa.array([], pa.string()))
        out = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
        if len(parts) > 1:
            inv = np.empty(len(rows), np.int64)
            inv[np.concatenate(order)] = np.arange(len(rows))
            out = out.take(pa.array(inv))
        return out

    def segment_of(self, row: int) -> str:
        phys = int(row if self.live_phys is None else self.live_phys[row])
        return self.seg_names[int(np.searchsorted(self.seg_offsets, phys, side="right") - 1)]

    @property
    def duck(self):
        """In-memory DuckDB: table `tiles` (row, tile_id, modality, sensor, acquired, stac_collection,
        stac_item, geom) with
        an R-tree on geom. Built on first use (not used by the planner: see filters.py)."""
        with self._duck_lock:
            if self._duck is None:
                from ..store.duck import connect

                con = connect()
                meta = self.take(np.arange(self.n_tiles),
                                 ["tile_id", "modality", "sensor", "acquired", "geometry", *STAC_COLUMNS]
                                 ).drop_columns(["segment"])
                meta = meta.append_column("row", pa.array(np.arange(meta.num_rows, dtype=np.int64)))
                con.register("meta_arrow", meta)
                con.execute("""CREATE TABLE tiles AS SELECT row, tile_id, modality, sensor, acquired,
                               stac_collection, stac_item, ST_GeomFromWKB(geometry) AS geom
                               FROM meta_arrow""")
                con.unregister("meta_arrow")
                con.execute("CREATE INDEX tiles_geom ON tiles USING RTREE (geom)")
                self._duck = con
            return self._duck

    # --- lookups ---------------------------------------------------------------------------
    @property
    def n_tiles(self) -> int:
        return len(self.tile_ids)

    def row_of(self, tile_id: int) -> int | None:
        t = int(tile_id)
        i = int(np.searchsorted(self._id_sorted, t))
        if i < len(self._id_sorted) and self._id_sorted[i] == t:
            return int(self._id_order[i])
        return None

    def memory_bytes(self) -> dict:
        """What this snapshot holds in RAM (not counting memory-mapped files)."""
        arrays = [self.tile_ids, self.minx, self.miny, self.maxx, self.maxy, self.modality_code,
                  self.acquired_days, self.sensor_code, self._id_order, self._id_sorted,
                  *(c for c in self.stac_code.values() if c is not None)]
        if self.live_phys is not None:
            arrays.append(self.live_phys)
        cols = sum(a.nbytes for a in arrays)
        tiles = sum(s.tiles.nbytes for s in self.segments.values()) if not self.large else 0
        vi = self._vindex.memory_bytes() if self._vindex is not None else 0
        return {"columns": int(cols), "grid": int(self.grid.nbytes), "tiles": int(tiles),
                "vector_index": int(vi), "vectors_in_ram": int(self.vectors.in_ram_bytes()) if not self.large else 0}

    def scenes(self) -> pa.Table:
        try:
            return read_scenes(self.layout, self.manifest)
        except (OSError, pa.ArrowException) as e:
            raise damaged(self.layout, [f"manifests/{self.manifest.scenes_file}: unreadable "
                                        f"({str(e).splitlines()[0][:120]})"]) from None

    @classmethod
    def load(cls, root, previous: Snapshot | None = None,
             config: VectorIndexConfig = DEFAULT.vectors) -> Snapshot:
        """The generation CURRENT names; segments `previous` already loaded are reused."""
        layout = Layout(root)
        m = read_current(layout)
        cache = previous.segments if previous is not None else None
        return cls(layout, m, layout.manifest(m.generation).name, cache, config)

    def is_current(self) -> bool:
        try:
            return self.layout.current.read_text().strip() == self.current_name
        except FileNotFoundError:
            return True  # index removed under us: keep serving what we have


def prepare(path: str | Path, config: VectorIndexConfig = DEFAULT.vectors) -> dict:
    """Build (or check) the derived search files of an index: what `engine.open` would do on
    first load, done ahead of time (after a bulk write, say). Returns a short description."""
    t0 = time.perf_counter()
    folder = Path(path) / "vindex"
    before = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    snap = Snapshot.load(path, config=config)
    vi = snap.vector_index
    after = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    return {"tiles": snap.n_tiles, "kind": vi.kind, "seconds": time.perf_counter() - t0,
            "reused": bool(before) and not (after - before), **vi.describe()}


# --- the derived tile records (vindex/<segment>.tiles.arrow) -----------------------------------
def arrow_tiles_path(layout: Layout, name: str):
    return layout.root / "vindex" / f"{name}.tiles.arrow"


def read_tile_ids(layout: Layout, name: str) -> np.ndarray:
    import pyarrow.parquet as pq

    return pq.read_table(layout.segment(name) / "tiles.parquet", columns=["tile_id"]) \
        .column("tile_id").to_numpy().astype(np.int64)


def _ids_digest(ids: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(ids, dtype="<i8").tobytes(), digest_size=16).hexdigest()


def arrow_tiles_metadata(name: str, ids: np.ndarray) -> dict:
    return {b"glb.segment": name.encode(), b"glb.rows": str(len(ids)).encode(),
            b"glb.tile_ids": _ids_digest(ids).encode()}


def arrow_tiles_mismatch(t: pa.Table, name: str, source_ids: np.ndarray) -> str | None:
    """Why a tiles.arrow cannot stand for segment `name` (None: it can): cheap checks, done on
    every load (names, recorded segment, rows, the tile ids against tiles.parquet's)."""
    if t.schema.names != TILE_SCHEMA.names:
        return "columns differ from the store's tile schema"
    meta = t.schema.metadata or {}
    seg = meta.get(b"glb.segment", b"").decode(errors="replace")
    if seg != name:
        return f"made from segment {seg or '(not recorded)'}, not {name}"
    if t.num_rows != len(source_ids) or meta.get(b"glb.rows") != str(len(source_ids)).encode():
        return f"{t.num_rows} rows, the segment holds {len(source_ids)}"
    ids = t.column("tile_id").to_numpy().astype(np.int64)
    if not np.array_equal(ids, source_ids) or meta.get(b"glb.tile_ids") != _ids_digest(ids).encode():
        return "its tile ids differ from the segment's"
    return None


def arrow_tiles_problem(layout: Layout, name: str) -> str | None:
    """Full check of an existing tiles.arrow (for `glb check`): the cheap checks, then every
    column equal to tiles.parquet's."""
    import pyarrow.ipc as ipc

    path = arrow_tiles_path(layout, name)
    try:
        t = ipc.open_file(pa.memory_map(str(path))).read_all()
        names = t.schema.names
        if len(names) < len(TILE_SCHEMA.names) and names == TILE_SCHEMA.names[:len(names)]:
            return None  # made before the newer tile columns: the next load rebuilds it, no damage
        why = arrow_tiles_mismatch(t, name, read_tile_ids(layout, name))
        if why is None and not t.replace_schema_metadata(None).equals(read_tiles(layout, name)):
            why = "its records differ from the segment's tiles.parquet"
    except (OSError, pa.ArrowException) as e:
        why = f"unreadable ({str(e).splitlines()[0][:100]})"
    return why
