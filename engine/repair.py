"""`glb check --repair`: bring a damaged index back to a consistent generation.

Runs as the index's one writer (engine/store/lock.py) and publishes through the writer's own
commit steps (`StoreWriter.commit_generation`: new segment, scenes and tombstones files,
manifest, then CURRENT swapped atomically), so a crash during a repair leaves the damaged
generation as it was and a searcher sees the old generation or the repaired one, never a mix.

What it does, in order:
- CURRENT that names no readable manifest, or a manifest whose scenes or tombstones file does
  not read: CURRENT is pointed at the newest generation whose files all read (what later
  generations added is gone; their files are indexed again by the next `glb index`).
- per segment, every tile row is kept only if it has its vector (float32, finite, unit
  length), its thumbnail (JPEG), a readable footprint, a unique id, and belongs to a scene
  recorded in that segment with the same sensor and modality. Re-derived, not dropped: the
  lon/lat envelope (from the footprint), float64 vectors (cast), a missing overviews file
  (basemap images only: written empty), tombstones naming tiles a segment does not hold,
  a segment listed twice, scene and manifest tile counts.
- a scene with any tile that cannot be kept, or whose tile count does not match its live
  tiles, is dropped whole (its record and its tiles): the next `glb index` over its folder
  indexes it again from the file, all of it. Nothing is half-kept.
- segments with damage are rewritten into one new segment holding their kept rows; whole ones
  stay as they are (dropped rows become tombstones).
- derived search files in vindex/ that do not match their segments are deleted (searches
  build them again).
Afterwards `glb check` runs on the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import IndexNotFoundError
from .store.files import atomic_write_bytes
from .store.layout import OVERVIEW_SCHEMA, SCENE_SCHEMA, THUMB_SCHEMA, TILE_SCHEMA, Layout
from .store.lock import WriterLock
from .store.manifest import MANIFEST_NAME, CorruptIndexError, Manifest, read_current
from .store.verify import npy_shape, segment_damage

JPEG_MAGIC = b"\xff\xd8\xff"  # engine/render.py's; not imported (PIL) for a store-only repair


@dataclass
class RepairReport:
    index: str
    generation_before: int | None = None
    generation_after: int | None = None
    actions: list[str] = field(default_factory=list)
    dropped_scenes: list[str] = field(default_factory=list)
    problems_after: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.actions)


def _first(e: BaseException) -> str:
    return (str(e).splitlines()[0] if str(e) else type(e).__name__)[:120]


def _manifest_files_read(layout: Layout, m: Manifest) -> str | None:
    for name in (m.scenes_file, m.tombstones_file):
        if name:
            try:
                pq.read_table(layout.manifests / name)
            except (OSError, pa.ArrowException) as e:
                return f"manifests/{name} is unreadable ({_first(e)})"
    return None


def _usable_manifest(layout: Layout, report: RepairReport) -> Manifest:
    """CURRENT's manifest if it and its scenes/tombstones files read; else the newest that does,
    CURRENT pointed at it."""
    why = None
    try:
        m = read_current(layout)
        why = _manifest_files_read(layout, m)
        if why is None:
            return m
        bad_gen = m.generation
    except IndexNotFoundError:
        if not layout.root.is_dir() or not any(layout.manifests.glob("*.json")):
            raise
        why, bad_gen = "CURRENT is missing", None
    except CorruptIndexError as e:
        if "format" in str(e):  # another store format is not damage: never "repair" it
            raise
        why, bad_gen = str(e).removeprefix(f"{layout.root}: "), None
    names = sorted((p.name for p in layout.manifests.glob("*.json") if MANIFEST_NAME.fullmatch(p.name)),
                   reverse=True)
    for name in names:
        if bad_gen is not None and int(name[:9]) >= bad_gen:
            continue
        try:
            m = Manifest.from_json((layout.manifests / name).read_bytes())
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            continue
        if _manifest_files_read(layout, m) is None:
            atomic_write_bytes(layout.current, name.encode() + b"\n")
            report.actions.append(f"{why}: CURRENT now names generation {m.generation}, the newest "
                                  f"whose manifest, scenes and tombstones files read (later "
                                  f"generations are lost; `glb index` indexes their files again)")
            return read_current(layout)
    raise CorruptIndexError(f"{layout.root}: cannot repair: {why}, and no earlier generation "
                            f"reads; index the scenes again into a new folder")


@dataclass
class _Segment:
    name: str
    tiles: Any = None                                  # pa.Table, None when unreadable
    vectors: Any = None                                # float32 (n, dim), None when unreadable
    thumbs: Any = None                                 # tile id -> JPEG, None when unreadable
    overviews: Any = None                              # pa.Table
    geoms: Any = None                                  # shapely geometries or None, per row
    rewrite: list[str] = field(default_factory=list)   # why it must be rewritten
    bad: dict = field(default_factory=dict)            # row -> why it cannot be kept


def _read_vectors(path: Path, dim: int, report_why: list[str]) -> np.ndarray | None:
    """The complete rows of vectors.npy, even of a truncated one; float32."""
    try:
        v = np.load(path)
    except FileNotFoundError:
        report_why.append("vectors.npy is missing")
        return None
    except (OSError, ValueError) as e:
        try:
            shape, dtype, want = npy_shape(path)
            size = path.stat().st_size
            row = int(np.prod(shape[1:])) * dtype.itemsize
            header = want - shape[0] * row
            rows = max(0, (size - header) // row) if row else 0
            v = np.fromfile(path, dtype=dtype, count=rows * int(np.prod(shape[1:])), offset=header)
            v = v.reshape((rows, *shape[1:]))
            report_why.append(f"vectors.npy is truncated ({rows} of {shape[0]} rows left)")
        except (OSError, ValueError):
            report_why.append(f"vectors.npy is unreadable ({_first(e)})")
            return None
    if v.ndim != 2 or v.shape[1] != dim:
        report_why.append(f"vectors.npy has shape {v.shape}, not (n, {dim})")
        return None
    if v.dtype != np.float32:
        report_why.append(f"vectors.npy is {v.dtype}, cast to float32")
        v = v.astype(np.float32)
    return v


def _load(layout: Layout, name: str, dim: int) -> _Segment:
    import shapely

    s = _Segment(name)
    d = layout.segment(name)
    try:
        s.tiles = pq.read_table(d / "tiles.parquet", schema=TILE_SCHEMA)
    except (OSError, pa.ArrowException) as e:
        s.rewrite.append(f"tiles.parquet is {'missing' if isinstance(e, FileNotFoundError) else 'unreadable'}")
        return s
    s.vectors = _read_vectors(d / "vectors.npy", dim, s.rewrite)
    try:
        th = pq.read_table(d / "thumbs.parquet", schema=THUMB_SCHEMA)
        s.thumbs = dict(zip(th.column("tile_id").to_pylist(), th.column("jpeg").to_pylist()))
    except (OSError, pa.ArrowException) as e:
        s.rewrite.append(f"thumbs.parquet is {'missing' if isinstance(e, FileNotFoundError) else 'unreadable'}")
    try:
        s.overviews = pq.read_table(d / "overviews.parquet", schema=OVERVIEW_SCHEMA)
    except (OSError, pa.ArrowException) as e:
        s.overviews = OVERVIEW_SCHEMA.empty_table()
        s.rewrite.append(f"overviews.parquet is {'missing' if isinstance(e, FileNotFoundError) else 'unreadable'}"
                         f" (written empty: the map loses those scenes' basemap images until they are "
                         f"indexed again)")
    try:
        s.geoms = list(shapely.from_wkb(s.tiles.column("geometry").to_pylist(), on_invalid="ignore"))
    except Exception:  # noqa: BLE001 - shapely raises several types on bad WKB
        s.geoms = [None] * s.tiles.num_rows
    return s


def repair_index(path: str | Path, *, lock: WriterLock | None = None) -> RepairReport:
    from .check import check_index, derived_problems
    from .store.writer import StoreWriter

    layout = Layout(path)
    report = RepairReport(str(path))
    if not layout.root.is_dir():
        raise IndexNotFoundError(f"{layout.root}: no index here (the folder does not exist)")
    lock = lock if lock is not None else WriterLock(layout.root).acquire()
    try:
        m = _usable_manifest(layout, report)
    except BaseException:
        lock.release()
        raise
    writer = StoreWriter(path, m.encoder, lock=lock, verify=False)
    try:
        report.generation_before = writer.manifest.generation
        _repair(layout, writer, report)
        report.generation_after = writer.manifest.generation
        m = writer.manifest
        for p, why in derived_problems(layout, m, m.segments, int(m.encoder.get("dim", 0) or 0)):
            p.unlink(missing_ok=True)
            p.with_name(p.name.removesuffix(".npy") + ".json").unlink(missing_ok=True) \
                if p.name.endswith(".codes.npy") else None
            report.actions.append(f"vindex/{p.name}: {why}: deleted (searches build it again)")
    finally:
        writer.close()
    report.problems_after = check_index(path)[0]
    return report


def _repair(layout: Layout, writer, report: RepairReport) -> None:
    m = writer.manifest
    dim = int(m.encoder.get("dim", 0) or 0)
    actions = report.actions
    # scene records, duplicates found from the file itself (the writer's dict hides them)
    rows = pq.read_table(layout.manifests / m.scenes_file, schema=SCENE_SCHEMA).to_pylist() \
        if m.scenes_file else []
    seg_names: list[str] = []
    for s in m.segments:
        if s.name in seg_names:
            actions.append(f"the manifest named segment {s.name} twice: listed once")
        else:
            seg_names.append(s.name)
    seg_set = set(seg_names)
    scenes: dict[str, dict] = {}
    by_id: dict[str, str] = {}
    drop: dict[str, str] = {}                 # scene path -> why it is dropped
    for r in rows:
        if r["path"] in scenes or r["scene_id"] in by_id:
            actions.append(f"scene {r['path']} was recorded twice: one record kept")
            continue
        scenes[r["path"]] = r
        by_id[r["scene_id"]] = r["path"]
        if r["n_tiles"] and r["segment"] not in seg_set:
            drop[r["path"]] = f"its segment {r['segment']} is not in the index"

    dead = writer.state.tombstones
    segs = {name: _load(layout, name, dim) for name in seg_names}
    live_count: dict[str, int] = {}
    plan: dict[str, np.ndarray] = {}          # segment -> mask of live rows that stay
    for name, s in segs.items():
        if s.tiles is None:
            for p, r in scenes.items():
                if r["segment"] == name and r["n_tiles"]:
                    drop.setdefault(p, f"segment {name}: {s.rewrite[0]}")
            continue
        info_rows = next(i.n_rows for i in m.segments if i.name == name)
        if info_rows != s.tiles.num_rows:
            s.rewrite.append(f"holds {s.tiles.num_rows} tiles, the manifest said {info_rows}")
        ids = s.tiles.column("tile_id").to_numpy()
        sids = s.tiles.column("scene_id").to_pylist()
        sens, mods = s.tiles.column("sensor").to_pylist(), s.tiles.column("modality").to_pylist()
        uniq, counts = np.unique(ids, return_counts=True)
        dup = set(uniq[counts > 1].tolist())
        keep = np.ones(len(ids), bool)
        n_vec = 0 if s.vectors is None else len(s.vectors)
        norms = np.linalg.norm(s.vectors, axis=1) if n_vec else np.zeros(0)
        finite = np.isfinite(s.vectors).all(axis=1) if n_vec else np.zeros(0, bool)
        for i, (tid, sid) in enumerate(zip(ids.tolist(), sids)):
            if (name, tid) in dead:
                keep[i] = False
                continue
            rec = scenes.get(by_id.get(sid, ""), None)
            if rec is None:
                keep[i] = False
                s.bad[i] = "of no indexed scene"
                continue
            if rec["segment"] != name:
                keep[i] = False
                s.bad[i] = "a copy of a tile of another segment"
                continue
            why = None
            if i >= n_vec:
                why = "its vector is missing"
            elif not finite[i] or abs(norms[i] - 1) > 1e-3:
                why = "its vector is not finite or not unit length"
            elif s.thumbs is None or tid not in s.thumbs:
                why = "its thumbnail is missing"
            elif s.thumbs[tid] and bytes(s.thumbs[tid][:3]) != JPEG_MAGIC:
                why = "its thumbnail is not a JPEG image"
            elif s.geoms[i] is None:
                why = "its footprint is unreadable"
            elif tid in dup:
                why = "its tile id is repeated in the segment"
            elif rec["sensor"] != sens[i] or rec["modality"] != mods[i]:
                why = "its sensor or modality differs from its scene's"
            if why:
                drop.setdefault(rec["path"], f"segment {name}: tile {tid}: {why}")
            live_count[rec["path"]] = live_count.get(rec["path"], 0) + 1
        if s.bad:
            s.rewrite.append(f"{len(s.bad)} tiles belonged to no scene recorded there")
        # a damaged row anywhere in the files (tombstoned ones included) means a rewrite:
        # segments are immutable, and `glb check` reads every row
        whole = np.zeros(len(ids), bool)
        whole[:n_vec] = finite[:len(ids)] & (np.abs(norms[:len(ids)] - 1) <= 1e-3)
        thumbs_ok = np.array([s.thumbs is not None and t in s.thumbs and
                              (not s.thumbs[t] or bytes(s.thumbs[t][:3]) == JPEG_MAGIC) for t in ids.tolist()], bool)
        n_bad = int((~(whole & thumbs_ok)).sum())
        if n_bad and not s.rewrite:
            s.rewrite.append(f"{n_bad} rows with a missing or damaged vector or thumbnail")
        plan[name] = keep
    for p, r in scenes.items():
        if p not in drop and live_count.get(p, 0) != (r["n_tiles"] or 0):
            drop[p] = f"its record says {r['n_tiles']} tiles, {live_count.get(p, 0)} are live"
    for p, why in drop.items():
        report.dropped_scenes.append(p)
        actions.append(f"scene {p} dropped ({why}); `glb index` indexes it again")
    kept_scenes = {p: r for p, r in scenes.items() if p not in drop}
    kept_ids = {r["scene_id"] for r in kept_scenes.values()}

    # which segments stay as they are, which are rewritten
    import shapely

    keep_infos: list = []
    tombstones: set[tuple[str, int]] = set()
    new_tiles, new_vecs, new_thumbs, new_ovs, rewritten = [], [], [], [], []
    for name in seg_names:
        s = segs[name]
        if s.tiles is None:
            actions.append(f"segment {name} dropped ({s.rewrite[0]})")
            continue
        mask = plan[name] & np.array([sid in kept_ids for sid in s.tiles.column("scene_id").to_pylist()], bool)
        env = np.stack([s.tiles.column(c).to_numpy(zero_copy_only=False) for c in ("minx", "miny", "maxx", "maxy")], 1)
        b = shapely.bounds(np.array([g if g is not None else shapely.Point() for g in s.geoms], dtype=object))
        env_off = mask & ~(np.abs(b - env) <= 1e-6).all(axis=1)
        if env_off.any():
            s.rewrite.append(f"{int(env_off.sum())} tile envelopes re-derived from their footprints")
        damage = segment_damage(layout, next(i for i in m.segments if i.name == name))
        if not s.rewrite and not damage:
            keep_infos.append(next(i for i in m.segments if i.name == name))
            ids = s.tiles.column("tile_id").to_pylist()
            tombstones.update((name, ids[i]) for i in np.flatnonzero(~mask))
            continue
        rewritten.append(name)
        actions.append(f"segment {name} rewritten ({'; '.join(s.rewrite or damage)}): "
                       f"{int(mask.sum())} of {s.tiles.num_rows} tiles kept")
        t = s.tiles.filter(pa.array(mask))
        if env_off.any():
            for j, c in enumerate(("minx", "miny", "maxx", "maxy")):
                t = t.set_column(t.schema.get_field_index(c), c, pa.array(b[mask][:, j], pa.float64()))
        new_tiles.append(t)
        new_vecs.append(s.vectors[np.flatnonzero(mask)] if mask.any() else np.zeros((0, dim), np.float32))
        new_thumbs += [s.thumbs[tid] for tid in t.column("tile_id").to_pylist()]
        ov = s.overviews
        new_ovs.append(ov.filter(pa.array([sid in kept_ids for sid in ov.column("scene_id").to_pylist()], pa.bool_())))
    new_segment = None
    name_new = writer.segment_name(m.generation + 1)
    if new_tiles and sum(t.num_rows for t in new_tiles):
        tiles = pa.concat_tables(new_tiles)
        thumbs = pa.table({"tile_id": tiles.column("tile_id"), "jpeg": pa.array(new_thumbs, pa.binary())},
                          schema=THUMB_SCHEMA)
        new_segment = (tiles, np.concatenate(new_vecs), thumbs,
                       pa.concat_tables(new_ovs) if new_ovs else OVERVIEW_SCHEMA.empty_table())
    for p, r in kept_scenes.items():
        if r["segment"] in rewritten and r["n_tiles"]:
            kept_scenes[p] = dict(r, segment=name_new)
    held = {(i.name, t) for i in keep_infos
            for t in segs[i.name].tiles.column("tile_id").to_pylist()}
    stale = {x for x in dead if x[0] in {i.name for i in keep_infos}} - held
    if stale:
        actions.append(f"{len(stale)} tombstones named tiles their segment does not hold: dropped")
    tombstones |= ({x for x in dead if x[0] in {i.name for i in keep_infos}} & held)
    n_live = sum(int(r["n_tiles"] or 0) for r in kept_scenes.values())
    if n_live != m.n_tiles and not drop and not rewritten:
        actions.append(f"the manifest said {m.n_tiles} tiles, {n_live} are live: recounted")
    if actions or tombstones != set(dead):
        if not actions:
            actions.append("tombstones rewritten")
        writer.commit_generation(keep_infos, new_segment, kept_scenes, tombstones)
        actions.append(f"published generation {writer.manifest.generation} "
                       f"({writer.manifest.n_tiles} tiles, {len(kept_scenes)} scenes)")
