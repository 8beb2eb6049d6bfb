"""Benchmark workers, each run in its own process so that its memory is its own:

    python -m glb.bench.worker ours   SPEC.npz OUT.json
    python -m glb.bench.worker duckdb SPEC.npz OUT.json
    python -m glb.bench.worker ours_disk_cold SPEC.npz OUT.json   (page cache evicted per query)

SPEC holds the index path, the queries with their filters, the ground truth (tile ids) and
how many times to repeat. Each worker times every query end to end, and scores recall@10.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np

import engine  # before any command loads torch or FAISS: it sets OMP_WAIT_POLICY

from .common import Timer, dir_bytes, proc_mem, summarise_runs

EPOCH = dt.date(1970, 1, 1)
NONE_DAY = -(2 ** 31)


def _trim() -> None:
    """Collect garbage and hand freed heap back to the OS, so that resident memory measures
    what is held, not what malloc keeps for later."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def load_spec(path):
    z = np.load(path, allow_pickle=False)
    spec = {k: z[k] for k in z.files}
    spec["cases"] = json.loads(str(spec["cases"]))
    spec["index"] = str(spec["index"])
    return spec


def query_kwargs(spec, i: int) -> dict:
    from engine.modalities import MODALITIES

    kw = {}
    b = spec["bbox"][i]
    if not np.isnan(b[0]):
        kw["bbox"] = tuple(float(x) for x in b)
    m = int(spec["modality"][i])
    if m >= 0:
        kw["modality"] = MODALITIES[m]
    if int(spec["start"][i]) != NONE_DAY:
        kw["start"] = EPOCH + dt.timedelta(days=int(spec["start"][i]))
    if int(spec["end"][i]) != NONE_DAY:
        kw["end"] = EPOCH + dt.timedelta(days=int(spec["end"][i]))
    return kw


def recall(spec, i: int, got_ids) -> float | None:
    n = int(spec["n_truth"][i])
    if n == 0:
        return None if len(got_ids) == 0 else 0.0
    truth = set(int(t) for t in spec["truth"][i][:n])
    return len(truth & set(int(g) for g in got_ids)) / n


def _run_cases(spec, search_one, timed) -> dict:
    """search_one(i) -> tile ids. Repeats the whole set `repeats` times (cases interleaved)."""
    cases = spec["cases"]
    case_of = spec["case"]
    per_case_runs = {c: [] for c in cases}
    rec = {c: [] for c in cases}
    extra = {c: {} for c in cases}
    for r in range(int(spec["repeats"])):
        lat = {c: [] for c in cases}
        for i in np.flatnonzero(timed):
            c = cases[int(case_of[i])]
            t0 = time.perf_counter()
            ids, info = search_one(int(i))
            lat[c].append((time.perf_counter() - t0) * 1000)
            if r == 0:
                rv = recall(spec, int(i), ids)
                if rv is not None:
                    rec[c].append(rv)
                for k, v in (info or {}).items():
                    extra[c].setdefault(k, {})
                    extra[c][k][v] = extra[c][k].get(v, 0) + 1
        for c in cases:
            per_case_runs[c].append(lat[c])
    out = {}
    for c in cases:
        sel = spec["selectivity"][[j for j in range(len(case_of)) if cases[int(case_of[j])] == c]]
        out[c] = {**summarise_runs(per_case_runs[c]),
                  "recall_at_10": round(float(np.mean(rec[c])), 4) if rec[c] else None,
                  "recall_min": round(float(np.min(rec[c])), 4) if rec[c] else None,
                  "selectivity": float(np.median(sel)) if len(sel) else None, **extra[c]}
    return out


def ours(spec_path, out_path, lists_on_disk: bool = False, gpu: bool = False) -> None:
    """`lists_on_disk`: the IVF lists memory-mapped from disk (engine/retrieval/ondisk.py)
    whatever their size; `gpu`: the vector index on the GPU (engine/retrieval/gpu.py), else
    always the CPU path. The spatial comparison is left to the plain run."""
    import dataclasses

    import faiss

    from engine.retrieval.filters import Filters

    spec = load_spec(spec_path)
    n_threads = int(spec.get("faiss_threads", 0) or 0)
    if n_threads:
        faiss.omp_set_num_threads(n_threads)
    path = spec["index"]
    config = engine.SearchConfig.from_env()
    config = dataclasses.replace(config, vectors=dataclasses.replace(config.vectors, use_gpu=int(gpu)))
    if lists_on_disk:
        config = dataclasses.replace(config, vectors=dataclasses.replace(config.vectors, lists_ram_budget=1))
        _ = engine.Index(path, config=config).snapshot.vector_index  # the lists file: built once, not timed
    _trim()
    before = proc_mem()
    opens = []
    for _ in range(int(spec["open_repeats"])):
        with Timer() as t:
            idx = engine.Index(path, config=config)
            snap = idx.snapshot
            vi = snap.vector_index
        opens.append(t.s)
        if _ < int(spec["open_repeats"]) - 1:
            del idx, snap, vi
            _trim()
    # warm-up: a few queries of every case (page cache, FAISS buffers)
    q = spec["queries"]
    for i in range(min(len(q), 20)):
        idx.search(vector=q[i], k=10, **query_kwargs(spec, i))
    _trim()
    after_open = proc_mem()

    def one(i):
        res = idx.search(vector=q[i], k=10, **query_kwargs(spec, i))
        return res.tile_id.to_numpy(), {"strategy": res.attrs["plan"].get("strategy")}

    cases = _run_cases(spec, one, np.ones(len(q), bool))
    _trim()
    after = proc_mem()
    n = snap.n_tiles
    mem_struct = snap.memory_bytes()
    disk = dir_bytes(path)
    vindex = dir_bytes(Path(path) / "vindex")
    vec_files = sum((Path(path) / "segments" / s / "vectors.npy").stat().st_size for s in snap.segments)
    # spatial candidates: grid vs O(n) numpy mask vs DuckDB R-tree, per bbox case
    spatial = {}
    case_of = spec["case"]
    duck_build = None
    want_duck = bool(int(spec["duck_rtree"])) and not lists_on_disk and not gpu
    if want_duck:
        with Timer() as t:
            con = snap.duck
        duck_build = t.s
    for ci, c in enumerate([] if lists_on_disk or gpu else spec["cases"]):
        qs = [i for i in range(len(q)) if int(case_of[i]) == ci and not np.isnan(spec["bbox"][i][0])
              and int(spec["modality"][i]) < 0 and int(spec["start"][i]) == NONE_DAY][:20]
        if not qs:
            continue
        g, m, d, counts = [], [], [], []
        for i in qs:
            f = Filters.build(bbox=tuple(spec["bbox"][i]))
            t0 = time.perf_counter()
            rows = np.sort(snap.grid.rows(f.boxes[0], snap))  # the grid alone
            g.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            mask = f.env_mask(snap)
            rows2 = np.flatnonzero(mask)
            m.append((time.perf_counter() - t0) * 1000)
            assert len(rows) == len(rows2), (len(rows), len(rows2))
            counts.append(len(rows))
            if want_duck:
                cur = con.cursor()
                t0 = time.perf_counter()
                cur.execute(f"SELECT row FROM tiles WHERE {f.sql()[0]}").fetchnumpy()
                d.append((time.perf_counter() - t0) * 1000)
                cur.close()
        spatial[c] = {"candidates_p50": int(np.median(counts)), "grid_p50_ms": round(float(np.median(g)), 3),
                      "numpy_mask_p50_ms": round(float(np.median(m)), 3),
                      "duckdb_rtree_p50_ms": round(float(np.median(d)), 3) if d else None}
    out = {"open_s": opens, "build": vi.describe(), "vector_index_build_s": vi.build_s,
           "tiles": n, "cases": cases,
           "memory": {"rss_anon_delta": after["RssAnon"] - before["RssAnon"],
                      "rss_anon_after_open_delta": after_open["RssAnon"] - before["RssAnon"],
                      "rss_file_delta": after["RssFile"] - before["RssFile"],
                      "structures": mem_struct, "peak_rss": after.get("VmHWM")},
           "disk": {"index_dir": disk, "vindex": vindex, "vectors_npy": vec_files},
           "spatial": spatial, "duckdb_rtree_build_s": duck_build}
    Path(out_path).write_text(json.dumps(out))


def ours_disk_cold(spec_path, out_path, per_case: int = 5) -> None:
    """Cold-cache latency with the IVF lists on disk: before each timed query every file of the
    index is evicted from the page cache (glb/bench/pagecache.py), so the query reads its lists,
    float32 vectors and tile files from storage; the same query is then run again warm. Records
    the bytes each cold query read from storage (/proc/self/io)."""
    import dataclasses

    from . import pagecache

    spec = load_spec(spec_path)
    path = spec["index"]
    config = engine.SearchConfig.from_env()
    config = dataclasses.replace(config, vectors=dataclasses.replace(config.vectors, lists_ram_budget=1,
                                                                     use_gpu=0))
    idx = engine.Index(path, config=config)
    _ = idx.snapshot.vector_index  # opened (in-RAM structures built) before the first eviction
    q = spec["queries"]
    case_of = spec["case"]
    cases = {}
    for ci, c in enumerate(spec["cases"]):
        cold, warm, mb, rec = [], [], [], []
        for i in np.flatnonzero(case_of == ci)[:per_case]:
            i = int(i)
            kw = query_kwargs(spec, i)
            pagecache.evict(path)
            r0 = pagecache.read_bytes()
            t0 = time.perf_counter()
            res = idx.search(vector=q[i], k=10, **kw)
            cold.append((time.perf_counter() - t0) * 1000)
            mb.append((pagecache.read_bytes() - r0) / 2**20)
            t0 = time.perf_counter()
            idx.search(vector=q[i], k=10, **kw)
            warm.append((time.perf_counter() - t0) * 1000)
            rv = recall(spec, i, res.tile_id.to_numpy())
            if rv is not None:
                rec.append(rv)
        if cold:
            cases[c] = {"queries": len(cold),
                        "cold_p50_ms": round(float(np.median(cold)), 2), "cold_max_ms": round(max(cold), 2),
                        "warm_p50_ms": round(float(np.median(warm)), 2), "warm_max_ms": round(max(warm), 2),
                        "read_mib_p50": round(float(np.median(mb)), 1), "read_mib_max": round(max(mb), 1),
                        "recall_at_10": round(float(np.mean(rec)), 4) if rec else None}
    Path(out_path).write_text(json.dumps({"tiles": idx.snapshot.n_tiles, "per_case": per_case,
                                          "cases": cases}))


def duckdb_vss(spec_path, out_path) -> None:
    """The all-in-DuckDB alternative: vectors, footprints and attributes in one table, an HNSW
    index (VSS, metric ip) and an R-tree, one SQL query per search."""
    import pyarrow as pa

    from engine.store.duck import connect
    from engine.store.layout import Layout
    from engine.store.manifest import read_current
    from engine.store.segment import read_tiles, read_vectors

    spec = load_spec(spec_path)
    layout = Layout(spec["index"])
    m = read_current(layout)
    before = proc_mem()
    con = connect(extensions=("spatial", "vss"))
    threads = int(spec.get("duck_threads", 0) or 0)
    if threads:
        con.execute(f"SET threads = {threads}")
    con.execute("CREATE TABLE t (tile_id BIGINT, vec FLOAT[384], geom GEOMETRY, modality VARCHAR, acquired DATE)")
    with Timer() as load:
        for s in m.segments:
            tiles = read_tiles(layout, s.name).select(["tile_id", "geometry", "modality", "acquired"])
            vec = read_vectors(layout, s.name, mmap=True)
            for a in range(0, tiles.num_rows, 100_000):
                b = min(tiles.num_rows, a + 100_000)
                v = np.ascontiguousarray(vec[a:b], dtype=np.float32)
                chunk = tiles.slice(a, b - a).append_column(
                    "vec", pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), 384))
                con.register("chunk", chunk)
                con.execute("INSERT INTO t SELECT tile_id, vec, ST_GeomFromWKB(geometry), modality, acquired FROM chunk")
                con.unregister("chunk")
    n = con.execute("SELECT count(*) FROM t").fetchone()[0]
    print(f"loaded {n} rows in {load.s:.1f} s, rss {proc_mem().get('VmRSS', 0) / 2**30:.2f} GiB", flush=True)
    with Timer() as rtree:
        con.execute("CREATE INDEX t_geom ON t USING RTREE (geom)")
    print(f"R-tree in {rtree.s:.1f} s; HNSW started at {time.strftime('%H:%M:%S')}", flush=True)
    with Timer() as hnsw:
        con.execute("CREATE INDEX t_vec ON t USING HNSW (vec) WITH (metric = 'ip')")
    print(f"HNSW in {hnsw.s:.1f} s, rss {proc_mem().get('VmRSS', 0) / 2**30:.2f} GiB", flush=True)
    after_build = proc_mem()
    q = spec["queries"]

    def sql_of(i):
        kw = query_kwargs(spec, i)
        where, params = [], []
        if "bbox" in kw:
            x0, y0, x1, y1 = kw["bbox"]
            where.append(f"ST_Intersects(geom, ST_MakeEnvelope({x0!r}, {y0!r}, {x1!r}, {y1!r}))")
        if "modality" in kw:
            where.append("modality = ?")
            params.append(kw["modality"])
        if "start" in kw:
            where.append("acquired >= ?")
            params.append(kw["start"])
        if "end" in kw:
            where.append("acquired <= ?")
            params.append(kw["end"])
        w = ("WHERE " + " AND ".join(where)) if where else ""
        return (f"SELECT tile_id FROM t {w} ORDER BY array_negative_inner_product(vec, ?::FLOAT[384]) "
                f"LIMIT 10"), params

    plans = {}
    for ci, c in enumerate(spec["cases"]):
        i = int(np.flatnonzero(spec["case"] == ci)[0])
        sql, params = sql_of(i)
        plan = con.execute("EXPLAIN " + sql, params + [q[i].tolist()]).fetchall()[0][1]
        plans[c] = "hnsw" if "HNSW_INDEX_SCAN" in plan else ("rtree" if "RTREE" in plan.upper() else "scan")

    def one(i):
        sql, params = sql_of(i)
        ids = con.execute(sql, params + [q[i].tolist()]).fetchnumpy()["tile_id"]
        return ids, None

    cases = _run_cases(spec, one, spec["duck_timed"].astype(bool))
    for c in cases:
        cases[c]["plan"] = plans.get(c)
    after = proc_mem()
    out = {"tiles": int(n), "load_s": load.s, "rtree_build_s": rtree.s, "hnsw_build_s": hnsw.s,
           "build_s": load.s + rtree.s + hnsw.s, "cases": cases,
           "memory": {"rss_delta": after_build["VmRSS"] - before["VmRSS"],
                      "rss_anon_delta": after["RssAnon"] - before["RssAnon"], "peak_rss": after.get("VmHWM")}}
    Path(out_path).write_text(json.dumps(out))


if __name__ == "__main__":
    what, spec_path, out_path = sys.argv[1:4]
    {"ours": ours, "ours_disk": lambda s, o: ours(s, o, lists_on_disk=True),
     "ours_gpu": lambda s, o: ours(s, o, gpu=True),
     "ours_disk_cold": ours_disk_cold,
     "duckdb": duckdb_vss}[what](spec_path, out_path)
