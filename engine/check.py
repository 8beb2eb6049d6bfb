"""`glb check`: verify the store's invariants from the files alone, then through a searcher.

Findings are one line each; an empty list means the index is sound:
- CURRENT names a readable manifest; every file it names exists and is readable (by pyarrow and
  by DuckDB, the two readers the engine uses);
- scenes: unique paths and ids; a scene with tiles names a segment of the manifest;
- per segment: tiles, vectors and thumbnails hold the same rows (same tile ids), the manifest's
  row count; vectors are finite, unit length, float32 of the encoder's dimension; thumbnails
  are JPEG; every tombstone names a tile the segment holds;
- per live tile (segments minus tombstones): its id is unique in the index, it belongs to a
  live scene stored in that segment and agrees with the scene's sensor and modality, its
  envelope is finite, in lon/lat range and matches its footprint polygon;
- each scene's tile count equals its live tiles; the manifest's count equals the live tiles;
- counted again in DuckDB: every live tile has exactly one vector and every vector one tile;
- the index opens for searching, reports the same counts, and a tile's own vector finds it.

Leftovers of an unfinished commit (hidden temporary files, files of a generation after
CURRENT's) are not problems: nothing reads them, and the next writer deletes them. They are
counted in the stats as `leftovers`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .errors import GLBError
from .render import JPEG_MAGIC
from .store.layout import Layout
from .store.manifest import read_current, read_scenes, read_tombstones
from .store.segment import read_tiles, read_vectors
from .store.verify import segment_damage

MAX_EXAMPLES = 3


def _first_line(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text[:160]


def _gen_of(name: str) -> int:
    head = name.lstrip(".")[:9]
    return int(head) if head.isdigit() else -1


def leftovers(layout: Layout, generation: int) -> list[str]:
    """Files of unfinished commits: never read, deleted by the next writer."""
    out = []
    for folder in (layout.segments, layout.manifests):
        if folder.is_dir():
            out += [str(p) for p in folder.iterdir()
                    if p.name.startswith(".") or _gen_of(p.name) > generation]
    if layout.root.is_dir():
        out += [str(p) for p in layout.root.iterdir() if p.name.startswith(".CURRENT.tmp-")]
    return sorted(out)


def check_index(path: str | Path, *, search: bool = True) -> tuple[list[str], dict]:
    layout = Layout(path)
    problems: list[str] = []
    stats: dict = {}
    try:
        m = read_current(layout)
    except GLBError as e:
        return [str(e)], stats
    stats["generation"] = m.generation
    stats["leftovers"] = len(leftovers(layout, m.generation))
    dim = int(m.encoder.get("dim", 0) or 0)
    try:
        scenes = read_scenes(layout, m)
        dead_t = read_tombstones(layout, m)
    except Exception as e:  # noqa: BLE001 - any unreadable file is a finding
        return [f"manifest {m.generation}: scenes or tombstones file unreadable ({_first_line(e)})"], stats

    seg_names = [s.name for s in m.segments]
    if len(set(seg_names)) != len(seg_names):
        problems.append("the manifest names a segment more than once")
    seg_set = set(seg_names)
    paths = scenes.column("path").to_pylist()
    sids = scenes.column("scene_id").to_pylist()
    if len(set(paths)) != len(paths):
        problems.append(f"{len(paths) - len(set(paths))} scene paths are recorded more than once")
    if len(set(sids)) != len(sids):
        problems.append(f"{len(sids) - len(set(sids))} scene ids are recorded more than once")
    scene_of = {r["scene_id"]: r for r in scenes.select(
        ["scene_id", "path", "segment", "n_tiles", "sensor", "modality"]).to_pylist()}
    for r in scene_of.values():
        if r["n_tiles"] and r["segment"] not in seg_set:
            problems.append(f"scene {r['path']}: its segment {r['segment']} is not in the manifest")

    dead_by_seg: dict[str, np.ndarray] = {}
    for seg, ids in _group(dead_t.column("segment").to_pylist(), dead_t.column("tile_id").to_numpy()):
        if seg not in seg_set:
            problems.append(f"{len(ids)} tombstones name segment {seg}, which is not in the manifest")
        dead_by_seg[seg] = ids
    if dead_t.num_rows != len({(s, int(t)) for s, t in zip(dead_t.column("segment").to_pylist(),
                                                          dead_t.column("tile_id").to_numpy())}):
        problems.append("the tombstones file repeats rows")

    live_ids, live_sids, first_vec = [], [], None
    readable = []
    for info in m.segments:
        name = info.name
        d = layout.segment(name)
        problems += segment_damage(layout, info)  # the lines every command prints (verify.py)
        try:
            tiles = read_tiles(layout, name)
            vec = read_vectors(layout, name, mmap=True)
            thumbs = pq.read_table(d / "thumbs.parquet", columns=["tile_id", "jpeg"])
            pq.read_metadata(d / "overviews.parquet")
        except Exception as e:  # noqa: BLE001
            problems.append(f"segment {name}: unreadable ({_first_line(e)})")
            continue
        readable.append(info)
        ids = tiles.column("tile_id").to_numpy()
        if not (len(ids) == vec.shape[0] == info.n_rows):
            problems.append(f"segment {name}: {len(ids)} tiles, {vec.shape[0]} vectors, "
                            f"manifest says {info.n_rows}")
        if vec.ndim != 2 or vec.shape[1] != dim or vec.dtype != np.float32:
            problems.append(f"segment {name}: vectors of shape {vec.shape} and type {vec.dtype}, "
                            f"the encoder's are ({dim},) float32")
        else:
            v = np.asarray(vec, dtype=np.float32)
            bad = ~np.isfinite(v).all(axis=1)
            if bad.any():
                problems.append(f"segment {name}: {int(bad.sum())} vectors contain NaN or Inf")
            elif len(v) and np.abs(np.linalg.norm(v, axis=1) - 1).max() > 1e-3:
                problems.append(f"segment {name}: vectors are not unit length")
        tids = thumbs.column("tile_id").to_numpy()
        if len(tids) != len(ids) or not np.array_equal(np.sort(tids), np.sort(ids)):
            problems.append(f"segment {name}: thumbnails do not match its tiles "
                            f"({len(tids)} thumbnails, {len(ids)} tiles)")
        jpegs = thumbs.column("jpeg")
        lens = pc.binary_length(jpegs).to_numpy(zero_copy_only=False)
        heads = pc.binary_slice(jpegs, 0, len(JPEG_MAGIC)) if hasattr(pc, "binary_slice") else None
        if heads is not None:
            not_jpeg = int(((lens > 0) & ~pc.equal(heads, pa.scalar(JPEG_MAGIC)).to_numpy(
                zero_copy_only=False)).sum())
            if not_jpeg:
                problems.append(f"segment {name}: {not_jpeg} thumbnails are not JPEG images")
        if len(np.unique(ids)) != len(ids):
            problems.append(f"segment {name}: duplicate tile ids within the segment")
        seg_dead = dead_by_seg.get(name, np.zeros(0, np.int64))
        missing_dead = np.setdiff1d(seg_dead, ids)
        if len(missing_dead):
            problems.append(f"segment {name}: {len(missing_dead)} tombstones name tiles it does not hold")
        live = ~np.isin(ids, seg_dead)
        problems += _check_tiles(name, tiles.filter(pa.array(live)), scene_of)
        live_ids.append(ids[live])
        live_sids += [s for s, keep in zip(tiles.column("scene_id").to_pylist(), live) if keep]
        if first_vec is None and live.any() and vec.ndim == 2 and vec.shape[1] == dim:
            row = int(np.flatnonzero(live)[0])
            first_vec = (int(ids[row]), np.asarray(vec[row], dtype=np.float32))

    all_live = np.concatenate(live_ids) if live_ids else np.zeros(0, np.int64)
    uniq, counts = np.unique(all_live, return_counts=True)
    if (counts > 1).any():
        problems.append(f"{int((counts > 1).sum())} tile ids are live more than once "
                        f"(e.g. {int(uniq[counts > 1][0])})")
    per_scene: dict[str, int] = {}
    for s in live_sids:
        per_scene[s] = per_scene.get(s, 0) + 1
    orphans = [s for s in per_scene if s not in scene_of]
    if orphans:
        problems.append(f"{sum(per_scene[s] for s in orphans)} live tiles belong to no indexed "
                        f"scene (e.g. scene {orphans[0]})")
    wrong = [r for r in scene_of.values() if per_scene.get(r["scene_id"], 0) != (r["n_tiles"] or 0)]
    for r in wrong[:MAX_EXAMPLES]:
        problems.append(f"scene {r['path']}: record says {r['n_tiles']} tiles, "
                        f"{per_scene.get(r['scene_id'], 0)} are live")
    if len(wrong) > MAX_EXAMPLES:
        problems.append(f"... and {len(wrong) - MAX_EXAMPLES} more scenes whose tile count is wrong")
    if m.n_tiles != len(all_live):
        problems.append(f"manifest says {m.n_tiles} tiles, {len(all_live)} are live")
    stats.update(tiles=int(len(all_live)), scenes=scenes.num_rows, segments=len(m.segments),
                 tombstones=dead_t.num_rows)

    if readable and len(readable) == len(m.segments):
        problems += _check_in_duckdb(layout, m, readable, dead_t)
    derived = derived_problems(layout, m, readable, dim)
    stats["derived_damaged"] = len(derived)
    problems += [f"vindex/{p.name}: search cache out of step with the store ({why}); searches "
                 f"rebuild it, `glb check --repair` does now" for p, why in derived]
    if search and not problems and len(all_live):
        problems += _check_search(path, len(all_live), first_vec)
    return problems, stats


def derived_problems(layout: Layout, m, segments, dim: int) -> list[tuple[Path, str]]:
    """Derived search files in vindex/ (tile records, quantiser, codes) that do not match
    the segments they are made from, checked in full."""
    from .retrieval import vectors
    from .retrieval.snapshot import arrow_tiles_path, arrow_tiles_problem

    out = []
    for info in segments:
        path = arrow_tiles_path(layout, info.name)
        if path.is_file():
            why = arrow_tiles_problem(layout, info.name)
            if why:
                out.append((path, why))
    if dim:
        out += vectors.derived_problems(layout.root, [(s.name, s.n_rows) for s in segments], dim)
    return out


def _group(keys: list, values: np.ndarray):
    order: dict = {}
    for i, k in enumerate(keys):
        order.setdefault(k, []).append(i)
    for k, idx in order.items():
        yield k, values[np.asarray(idx, dtype=np.int64)]


def _check_tiles(name: str, tiles: pa.Table, scene_of: dict) -> list[str]:
    """Metadata of a segment's live tiles agrees with their scenes and their footprints."""
    out: list[str] = []
    if tiles.num_rows == 0:
        return out
    sids = tiles.column("scene_id").to_pylist()
    sens = tiles.column("sensor").to_pylist()
    mods = tiles.column("modality").to_pylist()
    elsewhere = mismatch = 0
    for sid, se, mo in zip(sids, sens, mods):
        s = scene_of.get(sid)
        if s is None:
            continue  # counted once, globally, as tiles of no scene
        if s["segment"] != name:
            elsewhere += 1
        elif s["sensor"] != se or s["modality"] != mo:
            mismatch += 1
    if elsewhere:
        out.append(f"segment {name}: {elsewhere} live tiles belong to scenes recorded in another segment")
    if mismatch:
        out.append(f"segment {name}: {mismatch} tiles disagree with their scene's sensor or modality")
    env = np.stack([tiles.column(c).to_numpy(zero_copy_only=False).astype(np.float64)
                    for c in ("minx", "miny", "maxx", "maxy")], axis=1)
    ok = np.isfinite(env).all(axis=1) & (env[:, 0] <= env[:, 2]) & (env[:, 1] <= env[:, 3]) \
        & (env[:, 0] >= -180) & (env[:, 2] <= 180) & (env[:, 1] >= -90) & (env[:, 3] <= 90)
    if not ok.all():
        out.append(f"segment {name}: {int((~ok).sum())} tiles have an envelope that is not a "
                   f"lon/lat box")
    try:
        import shapely

        geoms = shapely.from_wkb(tiles.column("geometry").to_pylist())
        b = shapely.bounds(geoms)
        far = ~(np.abs(b - env) <= 1e-6).all(axis=1)
        if far.any():
            out.append(f"segment {name}: {int(far.sum())} tiles' envelopes do not match their "
                       f"footprint polygons")
    except Exception as e:  # noqa: BLE001 - shapely raises several types on bad WKB
        out.append(f"segment {name}: footprints unreadable ({_first_line(e)})")
    return out


def _check_in_duckdb(layout: Layout, m, segments, dead_t: pa.Table) -> list[str]:
    """The same counts through DuckDB's own Parquet reader."""
    from .store.duck import connect

    try:
        con = connect(extensions=())
        files = [str(layout.segment(s.name) / "tiles.parquet") for s in segments]
        con.register("dead", dead_t)
        rows = con.execute(
            """SELECT regexp_extract(filename, '([0-9]{9}-[0-9a-f]{8})', 1) AS segment,
                      count(*) AS n,
                      count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM dead d
                          WHERE d.segment = regexp_extract(filename, '([0-9]{9}-[0-9a-f]{8})', 1)
                            AND d.tile_id = t.tile_id)) AS live
               FROM read_parquet(?, filename = true) t GROUP BY 1""", [files]).fetchall()
        live_total, live_distinct = con.execute(
            """SELECT count(*), count(DISTINCT tile_id) FROM read_parquet(?, filename = true) t
               WHERE NOT EXISTS (SELECT 1 FROM dead d
                   WHERE d.segment = regexp_extract(t.filename, '([0-9]{9}-[0-9a-f]{8})', 1)
                     AND d.tile_id = t.tile_id)""", [files]).fetchone()
        con.close()
    except Exception as e:  # noqa: BLE001
        return [f"DuckDB cannot read the segments ({_first_line(e)})"]
    out = []
    counted = {seg: (int(n), int(live)) for seg, n, live in rows}
    for s in segments:
        n, _ = counted.get(s.name, (0, 0))
        n_vec = read_vectors(layout, s.name, mmap=True).shape[0]
        if n != n_vec:
            out.append(f"DuckDB: segment {s.name} holds {n} tiles but {n_vec} vectors")
    if live_total != live_distinct:
        out.append(f"DuckDB: {live_total - live_distinct} live tiles share a tile id with another")
    if live_total != m.n_tiles:
        out.append(f"DuckDB: {live_total} live tiles, the manifest says {m.n_tiles}")
    return out


def _check_search(path, n_live: int, first_vec) -> list[str]:
    try:
        from .retrieval.index import Index

        idx = Index(path)
        info = idx.info()
        out = []
        if info.get("tiles") != n_live or info.get("vectors") != n_live:
            out.append(f"the searcher loads {info.get('tiles')} tiles and {info.get('vectors')} "
                       f"vectors, the files hold {n_live} live tiles")
        if first_vec is not None:
            tid, q = first_vec
            res = idx.search(vector=q, k=1)
            if len(res) != 1:
                out.append("a search over the index returned no result")
            elif float(res.score.iloc[0]) < 0.999:
                out.append(f"tile {tid}'s own vector does not find it (best score "
                           f"{float(res.score.iloc[0]):.3f})")
            else:
                idx.tile(int(res.tile_id.iloc[0]))
                idx.thumbnail(int(res.tile_id.iloc[0]))
        return out
    except Exception as e:  # noqa: BLE001
        return [f"the index does not open for search ({type(e).__name__}: {_first_line(e)})"]
