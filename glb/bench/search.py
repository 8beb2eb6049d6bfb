"""`glb bench search --vectors N`: filtered search, ours against the alternatives, one run.

Methods, all over the same synthetic archive (glb/bench/data.py) written through the real
store, answering the same queries:
- ours: `engine.open(path).search(vector=..., bbox=..., modality=..., start=..., end=...)`, the
  product's real search path (result GeoDataFrame included), in its own process;
- numpy: brute force over the filtered set (O(n) mask, exact scores, top-k): the ground truth;
- duckdb_vss: one table with FLOAT[384] vectors, GEOMETRY footprints and attributes, an HNSW
  index (VSS, inner product) and an R-tree, one SQL query per search, in its own process.
Latencies are per query, end to end, excluding the text encoder (measured separately); each
figure is the median over `repeats` runs of the whole query set, with its spread.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from . import data
from .common import Timer, loadavg, machine, median_spread, proc_mem

SELECTIVITIES = [("0.001%", 1e-5), ("0.01%", 1e-4), ("0.1%", 1e-3), ("1%", 1e-2), ("10%", 1e-1),
                 ("100%", 1.0)]
FILTER_CASES = ["none", "modality", "date", "bbox+modality+date"]
NONE_DAY = -(2 ** 31)
DEFAULT_ROOT = Path(os.environ.get("GLB_BENCH_DIR", "/tmp/glb-bench"))


def _box_finder(a):
    order = np.argsort(a["minx"], kind="stable")
    xs = a["minx"][order]
    ys = a["miny"][order]
    w = float(np.max(a["maxx"] - a["minx"])) if len(xs) else 0.0
    h = float(np.max(a["maxy"] - a["miny"])) if len(xs) else 0.0

    def count(b):
        lo, hi = np.searchsorted(xs, [b[0] - w, b[2]], side="left")[0], np.searchsorted(xs, b[2], side="right")
        y = ys[lo:hi]
        xx = a["maxx"][order[lo:hi]]
        return int(((y <= b[3]) & (y >= b[1] - h) & (xx >= b[0])).sum())

    def find(cx, cy, target):
        lo, hi = 1e-5, 200.0
        best = None
        for _ in range(40):
            d = (lo * hi) ** 0.5
            b = (max(-180.0, cx - d), max(-90.0, cy - d), min(180.0, cx + d), min(90.0, cy + d))
            c = count(b)
            best = (b, c) if best is None or abs(np.log((c + 0.5) / target)) < abs(np.log((best[1] + 0.5) / target)) else best
            if c < target:
                lo = d
            elif c > target * 1.05:
                hi = d
            else:
                break
            if hi / lo < 1.0005:
                break
        return best

    return find


def make_workload(a: dict, w, n_queries: int, seed: int = 7):
    """Queries and filters per case: bbox at each selectivity around a random tile, plus
    unfiltered, modality, date range and all three combined."""
    from engine.modalities import MODALITIES

    rng = np.random.default_rng(seed)
    n = len(a["minx"])
    find = _box_finder(a)
    cases = [label for label, _ in SELECTIVITIES] + FILTER_CASES
    Q = data.queries(w, n_queries * len(cases), seed=seed)
    rows = []
    for ci, c in enumerate(cases):
        for _ in range(n_queries):
            bbox = (np.nan,) * 4
            mod, start, end = -1, NONE_DAY, NONE_DAY
            if ci < len(SELECTIVITIES):
                target = max(1.0, SELECTIVITIES[ci][1] * n)
                if SELECTIVITIES[ci][1] >= 1.0:
                    bbox = (-180.0, -90.0, 180.0, 90.0)
                else:
                    t = int(rng.integers(0, n))
                    cx = float(a["minx"][t]) + rng.uniform(-0.01, 0.01)
                    cy = float(a["miny"][t]) + rng.uniform(-0.01, 0.01)
                    bbox = find(cx, cy, target)[0]
            elif c == "modality":
                mod = MODALITIES.index("sar")
            elif c == "date":
                y = int(rng.integers(2016, 2025))
                start, end = _day(y, 1, 1), _day(y, 12, 31)
            elif c == "bbox+modality+date":
                t = int(rng.integers(0, n))
                bbox = find(float(a["minx"][t]), float(a["miny"][t]), max(1.0, 0.05 * n))[0]
                mod = MODALITIES.index("multispectral")
                y = int(rng.integers(2016, 2023))
                start, end = _day(y, 1, 1), _day(y + 2, 12, 31)
            rows.append((ci, bbox, mod, start, end))
    return cases, Q, rows


def _day(y, m, d):
    import datetime as dt

    return (dt.date(y, m, d) - dt.date(1970, 1, 1)).days


def filter_mask(a: dict, bbox, mod, start, end, sl=slice(None)) -> np.ndarray:
    n = len(a["minx"][sl])
    m = np.ones(n, bool)
    if not np.isnan(bbox[0]):
        x0, y0, x1, y1 = bbox
        m &= (a["minx"][sl] <= x1) & (a["maxx"][sl] >= x0) & (a["miny"][sl] <= y1) & (a["maxy"][sl] >= y0)
    if mod >= 0:
        m &= a["modality"][sl] == mod
    days = a["days"][sl] + _day(2016, 1, 1)
    if start != NONE_DAY:
        m &= days >= start
    if end != NONE_DAY:
        m &= days <= end
    return m


def ground_truth(path: Path, a: dict, Q: np.ndarray, rows, k: int = 10, echo=print):
    """Exact top-k within each query's filter: one chunked pass over all vectors (memmap)."""
    from engine.store.layout import Layout
    from engine.store.manifest import read_current
    from engine.store.segment import read_vectors

    layout = Layout(path)
    m = read_current(layout)
    nq = len(Q)
    best_s = np.full((nq, k), -np.inf, np.float32)
    best_r = np.full((nq, k), -1, np.int64)
    sel = np.zeros(nq, np.int64)
    off = 0
    t0 = time.perf_counter()
    for s in m.segments:
        vec = read_vectors(layout, s.name, mmap=True)
        for c0 in range(0, len(vec), 65_536):
            c1 = min(len(vec), c0 + 65_536)
            X = np.asarray(vec[c0:c1], dtype=np.float32)
            S = X @ Q.T
            sl = slice(off + c0, off + c1)
            for qi, (_, bbox, mod, start, end) in enumerate(rows):
                msk = filter_mask(a, bbox, mod, start, end, sl)
                cnt = int(msk.sum())
                if not cnt:
                    continue
                sel[qi] += cnt
                idx = np.flatnonzero(msk)
                sc = S[idx, qi]
                if len(sc) > k:
                    top = np.argpartition(-sc, k - 1)[:k]
                    idx, sc = idx[top], sc[top]
                alls = np.concatenate([best_s[qi], sc])
                allr = np.concatenate([best_r[qi], idx + off + c0])
                keep = np.argsort(-alls, kind="stable")[:k]
                best_s[qi], best_r[qi] = alls[keep], allr[keep]
        off += len(vec)
    echo(f"  ground truth for {nq} queries in {time.perf_counter() - t0:.0f} s")
    return best_r, best_s, sel


def numpy_brute_force(path: Path, a: dict, Q, rows, timed, repeats: int, truth_ids, tile_ids,
                      in_ram: bool, budget_s: float, echo=print):
    """The NumPy alternative: O(n) mask, exact scores of the filtered rows, top-k."""
    from engine.store.layout import Layout
    from engine.store.manifest import read_current
    from engine.store.segment import read_vectors

    layout = Layout(path)
    m = read_current(layout)
    before = proc_mem()
    with Timer() as load:
        parts = [read_vectors(layout, s.name, mmap=True) for s in m.segments]
        X = np.concatenate(parts) if in_ram else None  # one copy in RAM (from the mapped files)
    mem = proc_mem()
    offsets = np.cumsum([0] + [len(p) for p in parts])

    def search(i):
        _, bbox, mod, start, end = rows[i]
        msk = filter_mask(a, bbox, mod, start, end)
        r = np.flatnonzero(msk)
        if X is not None:
            s = X[r] @ Q[i]
        else:
            s = np.empty(len(r), np.float32)
            seg = np.searchsorted(offsets, r, side="right") - 1
            for p in np.unique(seg):
                j = seg == p
                s[j] = np.asarray(parts[p][r[j] - offsets[p]]) @ Q[i]
        if len(r) > 10:
            top = np.argpartition(-s, 9)[:10]
            r, s = r[top], s[top]
        return tile_ids[r[np.argsort(-s)]]

    return search, {"load_s": load.s, "rss_anon_delta": mem.get("RssAnon", 0) - before.get("RssAnon", 0),
                    "in_ram": in_ram}


def _run_local(cases, case_of, search, timed, repeats, spec, budget_s):
    from .common import summarise_runs
    from .worker import recall

    out = {}
    for ci, c in enumerate(cases):
        qs = [i for i in np.flatnonzero(timed) if case_of[i] == ci]
        runs, rec = [], []
        t_case = time.perf_counter()
        for r in range(repeats):
            lat = []
            for i in qs:
                t0 = time.perf_counter()
                ids = search(int(i))
                lat.append((time.perf_counter() - t0) * 1000)
                if r == 0:
                    rv = recall(spec, int(i), ids)
                    if rv is not None:
                        rec.append(rv)
                if time.perf_counter() - t_case > budget_s and len(lat) >= 2:
                    break
            runs.append(lat)
            if time.perf_counter() - t_case > budget_s:
                break
        out[c] = {**summarise_runs(runs), "recall_at_10": round(float(np.mean(rec)), 4) if rec else None,
                  "selectivity": float(np.median(spec["selectivity"][qs])) if qs else None}
    return out


def text_encoder_latency(n: int = 40, repeats: int = 3, echo=print) -> dict:
    """Per-query latency of the text tower (distinct strings: its cache never answers)."""
    import torch

    from engine.encoder import load_encoder

    with Timer() as t:
        enc = load_encoder(device="cpu")
    words = ["flooded", "farmland", "harbour", "ships", "forest", "burned", "river", "delta", "city",
             "airport", "glacier", "desert", "dunes", "vineyards", "solar", "farm", "landslide",
             "wetland", "coast", "snow"]
    rng = np.random.default_rng(0)
    runs = []
    enc.encode_text(["warm up the tokenizer"])
    for _ in range(repeats):
        lat = []
        for _ in range(n):
            # a nonce: the text tower caches what it has encoded (also across sizes in one run)
            text = " ".join(rng.choice(words, int(rng.integers(2, 6)))) + f" #{time.perf_counter_ns()}"
            t0 = time.perf_counter()
            enc.encode_text([text])
            lat.append((time.perf_counter() - t0) * 1000)
        runs.append(lat)
    from .common import summarise_runs

    return {**summarise_runs(runs), "load_s": round(t.s, 2), "torch_threads": torch.get_num_threads(),
            "device": "cpu"}


def _rss(pid: int) -> int:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _worker(what: str, spec_file: Path, echo, max_rss: int | None = None,
            max_s: float | None = None) -> dict:
    """Run a worker process; a watchdog stops it past `max_rss` bytes or `max_s` seconds (the
    machine is shared: a baseline that would not fit is reported as such, not run into swap)."""
    out = spec_file.with_suffix(f".{what}.json")
    log = spec_file.with_suffix(f".{what}.log")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    t0 = time.perf_counter()
    peak, why = 0, None
    with open(log, "w") as lf:
        p = subprocess.Popen([sys.executable, "-m", "glb.bench.worker", what, str(spec_file), str(out)],
                             env=env, stdout=lf, stderr=subprocess.STDOUT)
        while p.poll() is None:
            time.sleep(0.5)
            peak = max(peak, _rss(p.pid))
            if max_rss and peak > max_rss:
                why = f"stopped: resident memory passed {max_rss / 2**30:.1f} GiB"
            elif max_s and time.perf_counter() - t0 > max_s:
                why = f"stopped: still running after {max_s:.0f} s"
            if why:
                p.kill()
                p.wait()
                break
    secs = time.perf_counter() - t0
    if why:
        echo(f"  {what}: {why} ({secs:.0f} s, peak {peak / 2**30:.2f} GiB)")
        return {"stopped": why, "seconds": secs, "peak_rss": peak}
    if p.returncode != 0:
        tail = log.read_text().strip().splitlines()[-5:]
        raise RuntimeError(f"bench worker {what} failed: {' | '.join(tail)}")
    echo(f"  {what}: {secs:.0f} s (peak {peak / 2**30:.2f} GiB)")
    return json.loads(out.read_text())


def run(n_vectors: int, **kw) -> dict:
    saved = {k: os.environ.get(k) for k in ("GLB_QUANT_MIN_ROWS", "GLB_PQ_M")}
    try:
        return _run(n_vectors, **kw)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run(n_vectors: int, *, smoke: bool = False, root: Path | None = None, methods=None,
        repeats: int = 3, n_queries: int | None = None, duckdb_max: int = 1_000_000,
        duckdb_max_rss: int = int(float(os.environ.get("GLB_BENCH_DUCKDB_MAX_GIB", "7.5")) * 2**30),
        duckdb_max_s: float = 3600,
        text_encoder: bool = True, echo=print) -> dict:
    import faiss

    root = Path(root or DEFAULT_ROOT)
    methods = list(methods or ["ours", "ours_disk", "numpy", "duckdb_vss"])
    if smoke:
        root = Path(tempfile.mkdtemp(prefix="glb-bench-smoke-"))
        os.environ["GLB_QUANT_MIN_ROWS"] = "2000"  # exercise the quantised path (workers read it
        # through SearchConfig.from_env())
        os.environ["GLB_PQ_M"] = "16"              # ... with a codebook trained in seconds
        repeats, n_queries = 2, n_queries or 4
        text_encoder = False
    n_queries = n_queries or (50 if n_vectors <= 2_000_000 else 30)
    result = {"vectors": n_vectors, "dim": data.DIM, "k": 10, "smoke": smoke, "repeats": repeats,
              "queries_per_case": n_queries, "loadavg_start": loadavg(), "machine": machine(),
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    path = root / f"search-{n_vectors}" / "index"
    path.parent.mkdir(parents=True, exist_ok=True)
    echo(f"search benchmark, {n_vectors} vectors, index {path}")
    chunk = 500_000 if n_vectors > 1_000_000 else max(50_000, min(500_000, n_vectors // 2))
    built = data.build_index(path, n_vectors, chunk=chunk, echo=echo)
    a = built["arrays"]
    n = len(a["minx"])
    result["tiles"] = n
    # the quantised path's derived files (trained quantiser, codes, Arrow tile files)
    with Timer() as prep:
        prepared = subprocess.run([sys.executable, "-c",
                                   "import json,sys; from engine import SearchConfig; "
                                   "from engine.retrieval.snapshot import prepare; "
                                   "print(json.dumps(prepare(sys.argv[1], SearchConfig.from_env().vectors)))",
                                   str(path)],
                                  capture_output=True, text=True)
    if prepared.returncode != 0:
        raise RuntimeError(f"prepare failed: {prepared.stderr.strip().splitlines()[-1:]}")
    prep_info = json.loads(prepared.stdout.strip().splitlines()[-1])
    echo(f"  prepare (train + encode + tile files): {prep.s:.1f} s ({prep_info['kind']})")
    w = data.world(0)
    cases, Q, rows = make_workload(a, w, n_queries)
    truth_r, truth_s, sel = ground_truth(path, a, Q, rows, echo=echo)
    tile_ids = _tile_ids(path)
    n_truth = (truth_r >= 0).sum(1)
    truth_ids = np.where(truth_r >= 0, tile_ids[np.maximum(truth_r, 0)], -1)
    case_of = np.array([r[0] for r in rows])
    duck_timed = np.zeros(len(rows), bool)
    for ci in range(len(cases)):
        duck_timed[np.flatnonzero(case_of == ci)[:max(2, n_queries // 2 if n <= 200_000 else 10)]] = True
    spec = {"index": str(path), "queries": Q, "case": case_of, "cases": json.dumps(cases),
            "bbox": np.array([r[1] for r in rows], np.float64), "modality": np.array([r[2] for r in rows]),
            "start": np.array([r[3] for r in rows]), "end": np.array([r[4] for r in rows]),
            "truth": truth_ids, "n_truth": n_truth, "selectivity": sel / n, "repeats": repeats,
            "open_repeats": 1 if smoke else 3, "duck_rtree": int(n <= 2_000_000),
            "duck_timed": duck_timed, "faiss_threads": faiss.omp_get_max_threads(), "duck_threads": 0}
    spec_file = path.parent / "spec.npz"
    np.savez(spec_file, **spec)
    spec_loaded = {**spec, "cases": cases}
    methods_out = {}
    for m, worker in (("ours", "ours"), ("ours_disk", "ours_disk"), ("ours_gpu", "ours_gpu")):
        if m not in methods:
            continue
        if m == "ours_gpu":
            from engine.retrieval.gpu import gpu_count

            if gpu_count() == 0:
                methods_out[m] = {"skipped": "no GPU: faiss here has no CUDA build or sees no device "
                                             "(pip install '.[gpu]' on a CUDA host)"}
                continue
        result[f"loadavg_{m}"] = loadavg()
        o = _worker(worker, spec_file, echo)
        mem = o["memory"]
        methods_out[m] = {
            "build_s": round(built["write_s"] + prep.s, 2), "data_reused": built["reused"],
            "write_s": round(built["write_s"], 2), "prepare_s": round(prep.s, 2),
            "prepare_reused_files": bool(prep_info.get("reused")),
            "open_s": median_spread(o["open_s"]),
            "bytes_per_vector": {
                "memory": round(mem["rss_anon_delta"] / n, 1),
                "memory_structures": round(sum(mem["structures"].values()) / n, 1),
                "disk": round(o["disk"]["index_dir"] / n, 1),
                "disk_vectors_float32": round(o["disk"]["vectors_npy"] / n, 1),
                "disk_derived": round(o["disk"]["vindex"] / n, 1)},
            "memory_detail": mem, "index": o["build"], "selectivity": {}, "filters": {},
            "spatial_candidates": o["spatial"], "duckdb_rtree_build_s": o["duckdb_rtree_build_s"]}
        _split(methods_out[m], o["cases"])
    if "ours_disk_cold" in methods:
        # cold cache: a separate process (its mappings and page cache are its own to evict)
        result["loadavg_ours_disk_cold"] = loadavg()
        methods_out["ours_disk_cold"] = _worker("ours_disk_cold", spec_file, echo)
    if "numpy" in methods:
        result["loadavg_numpy"] = loadavg()
        in_ram = n * data.DIM * 4 <= 4 * 2 ** 30
        timed = np.ones(len(rows), bool)
        if not in_ram:
            timed = duck_timed.copy()
            for ci in range(len(cases)):
                idx = np.flatnonzero(case_of == ci)
                timed[idx] = False
                timed[idx[:3]] = True
        search, info = numpy_brute_force(path, a, Q, rows, timed, repeats, truth_ids, tile_ids,
                                         in_ram, 120, echo=echo)
        with Timer() as t:
            res = _run_local(cases, case_of, search, timed, repeats if in_ram else 1, spec_loaded,
                             budget_s=60 if not smoke else 5)
        echo(f"  numpy: {t.s:.0f} s")
        del search  # its vectors: freed before the next method starts
        meta_bytes = sum(a[k].nbytes for k in ("minx", "miny", "maxx", "maxy", "modality", "days"))
        methods_out["numpy"] = {"build_s": round(info["load_s"], 2),
                                "bytes_per_vector": {"memory": round((n * data.DIM * 4 + meta_bytes) / n, 1) if in_ram else round(meta_bytes / n, 1),
                                                     "disk": round((n * data.DIM * 4 + meta_bytes) / n, 1)},
                                "vectors_in_ram": in_ram, "selectivity": {}, "filters": {}}
        if not in_ram:
            methods_out["numpy"]["note"] = ("vectors do not fit the memory budget: read from the "
                                            "memory-mapped segment files; 3 queries per case, 1 run")
        _split(methods_out["numpy"], res)
    if "duckdb_vss" in methods:
        d = None
        if n <= duckdb_max:
            result["loadavg_duckdb"] = loadavg()
            d = _worker("duckdb", spec_file, echo, max_rss=duckdb_max_rss, max_s=duckdb_max_s)
            if "stopped" in d:
                log = spec_file.with_suffix(".duckdb.log").read_text().strip().splitlines()
                methods_out["duckdb_vss"] = {"skipped": f"{d['stopped']} after {d['seconds']:.0f} s "
                                                        f"(peak {d['peak_rss'] / 2**30:.2f} GiB); progress: "
                                                        + "; ".join(log[-3:]), **d}
                d = None
        if n <= duckdb_max and d is not None:
            methods_out["duckdb_vss"] = {
                "build_s": round(d["build_s"], 2), "load_s": round(d["load_s"], 2),
                "rtree_build_s": round(d["rtree_build_s"], 2), "hnsw_build_s": round(d["hnsw_build_s"], 2),
                "hnsw_build_vectors_per_s": round(n / max(d["hnsw_build_s"], 1e-9), 1),
                "bytes_per_vector": {"memory": round(d["memory"]["rss_delta"] / n, 1), "disk": None},
                "memory_detail": d["memory"], "selectivity": {}, "filters": {}}
            _split(methods_out["duckdb_vss"], d["cases"])
        elif "duckdb_vss" not in methods_out:
            methods_out["duckdb_vss"] = {"skipped": f"not built at {n} vectors (limit {duckdb_max}); "
                                                    f"see the build rate measured at smaller sizes"}
    result["methods"] = methods_out
    if text_encoder:
        result["loadavg_text_encoder"] = loadavg()
        result["text_encoder"] = text_encoder_latency(echo=echo)
    result["loadavg_end"] = loadavg()
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if smoke:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    return result


def _split(method: dict, cases: dict) -> None:
    for c, v in cases.items():
        (method["filters"] if c in FILTER_CASES else method["selectivity"])[c] = v


def _tile_ids(path: Path) -> np.ndarray:
    import pyarrow.parquet as pq

    from engine.store.layout import Layout
    from engine.store.manifest import read_current

    layout = Layout(path)
    m = read_current(layout)
    return np.concatenate([pq.read_table(layout.segment(s.name) / "tiles.parquet", columns=["tile_id"])
                           .column("tile_id").to_numpy() for s in m.segments])
