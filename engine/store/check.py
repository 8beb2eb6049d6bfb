"""`glb check`: verify the store's invariants from the files alone.

- CURRENT names a readable manifest; every file it names exists and is readable;
- per segment: tiles, vectors and thumbnails have the same rows (same tile ids), the manifest's
  row count, finite unit-length vectors of the encoder's dimension;
- live tiles (segments minus tombstones) have unique ids; each belongs to a live scene, and
  each scene's tile count matches its live tiles (no orphans either way);
- the index opens for searching and answers a query.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from ..errors import GLBError
from .layout import Layout
from .manifest import read_current, read_scenes, read_tombstones
from .segment import read_tiles, read_vectors


def check_index(path: str | Path) -> tuple[list[str], dict]:
    layout = Layout(path)
    problems: list[str] = []
    stats: dict = {}
    try:
        m = read_current(layout)
    except GLBError as e:
        return [str(e)], stats
    stats["generation"] = m.generation
    dim = int(m.encoder.get("dim", 0))
    try:
        scenes = read_scenes(layout, m).to_pylist()
        dead_t = read_tombstones(layout, m)
    except Exception as e:  # noqa: BLE001 - any unreadable file is a finding
        return [f"manifest {m.generation}: scenes or tombstones unreadable ({e})"], stats
    dead = set(zip(dead_t.column("segment").to_pylist(), dead_t.column("tile_id").to_pylist()))
    live_ids: list[int] = []
    live_scene_of: list[str] = []
    seg_names = {s.name for s in m.segments}
    for seg, tid in dead:
        if seg not in seg_names:
            problems.append(f"tombstone ({seg}, {tid}) names a segment not in the manifest")
    for info in m.segments:
        d = layout.segment(info.name)
        try:
            tiles = read_tiles(layout, info.name)
            vec = read_vectors(layout, info.name, mmap=True)
            thumbs = pq.read_table(d / "thumbs.parquet", columns=["tile_id"])
            pq.read_metadata(d / "overviews.parquet")
        except Exception as e:  # noqa: BLE001
            problems.append(f"segment {info.name}: unreadable ({str(e).splitlines()[0][:160]})")
            continue
        ids = tiles.column("tile_id").to_numpy()
        if not (len(ids) == vec.shape[0] == info.n_rows):
            problems.append(f"segment {info.name}: {len(ids)} tiles, {vec.shape[0]} vectors, "
                            f"manifest says {info.n_rows}")
        if vec.ndim != 2 or vec.shape[1] != dim:
            problems.append(f"segment {info.name}: vectors of shape {vec.shape}, encoder dim {dim}")
        else:
            v = np.asarray(vec, dtype=np.float32)
            if not np.isfinite(v).all():
                problems.append(f"segment {info.name}: vectors contain NaN or Inf")
            elif len(v) and np.abs(np.linalg.norm(v, axis=1) - 1).max() > 1e-3:
                problems.append(f"segment {info.name}: vectors are not unit length")
        tids = thumbs.column("tile_id").to_numpy()
        if len(tids) != len(ids) or not np.array_equal(np.sort(tids), np.sort(ids)):
            problems.append(f"segment {info.name}: thumbnails do not match its tiles")
        if len(np.unique(ids)) != len(ids):
            problems.append(f"segment {info.name}: duplicate tile ids within the segment")
        seg_dead = {t for s, t in dead if s == info.name}
        missing_dead = seg_dead - set(ids.tolist())
        if missing_dead:
            problems.append(f"segment {info.name}: {len(missing_dead)} tombstones name tiles it does not hold")
        for tid, sid in zip(ids.tolist(), tiles.column("scene_id").to_pylist()):
            if tid not in seg_dead:
                live_ids.append(tid)
                live_scene_of.append(sid)
    dup = [t for t, c in Counter(live_ids).items() if c > 1]
    if dup:
        problems.append(f"{len(dup)} tile ids are live more than once (e.g. {dup[0]})")
    per_scene = Counter(live_scene_of)
    scene_ids = {s["scene_id"]: s for s in scenes}
    orphans = [sid for sid in per_scene if sid not in scene_ids]
    if orphans:
        problems.append(f"{sum(per_scene[s] for s in orphans)} live tiles belong to no indexed scene "
                        f"(e.g. scene {orphans[0]})")
    for s in scenes:
        if per_scene.get(s["scene_id"], 0) != (s["n_tiles"] or 0):
            problems.append(f"scene {s['path']}: record says {s['n_tiles']} tiles, "
                            f"{per_scene.get(s['scene_id'], 0)} are live")
        if s["n_tiles"] and s["segment"] not in seg_names:
            problems.append(f"scene {s['path']}: its segment {s['segment']} is not in the manifest")
    if m.n_tiles != len(live_ids):
        problems.append(f"manifest says {m.n_tiles} tiles, {len(live_ids)} are live")
    stats.update(tiles=len(live_ids), scenes=len(scenes), segments=len(m.segments),
                 tombstones=len(dead))
    if not problems and live_ids:
        try:
            from ..index import Index

            idx = Index(path)
            q = idx.snapshot.vectors[0]
            res = idx.search(vector=q, k=1)
            if len(res) != 1:
                problems.append("a search over the index returned no result")
        except Exception as e:  # noqa: BLE001
            problems.append(f"the index does not open for search ({type(e).__name__}: {e})")
    return problems, stats
