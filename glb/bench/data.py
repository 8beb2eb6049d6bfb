"""Synthetic archives for the search benchmark, written through the real store.

Layout: scenes (32 x 32 tiles of ~640 m, Sentinel-2-like 64 px at 10 m) scattered around land
centres (dense where scenes are, empty oceans), revisited at several dates, six modalities.
Embeddings are clustered like real ones and correlated with place: 2048 global "concepts";
each land region has a palette of 24; each scene mixes 4 of its region's; a tile is its main
concept + 0.35 x a second one + a per-modality offset + noise, L2-normalised. Queries are
"text-like": a concept plus a fixed modality-gap direction and noise, so that they sit apart
from every tile (cosine ~0.5 at best, as text-to-image similarities do).

Everything is generated in chunks of whole scenes (at most `chunk` tiles each) and committed
as one segment per chunk through `StoreWriter.commit_bulk`, so 10 M x 384 float32 (15 GB) never
sits in memory at once.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DIM = 384
TILE_DEG = 0.00576          # 64 px x 10 m at mid latitudes, in degrees
SCENE_SIDE = 32             # tiles per scene side
N_CONCEPTS = 2048
PALETTE = 24
ENCODER = {"name": "bench-synthetic", "identity": "bench-synthetic@v1", "dim": DIM, "trained": False}
MODALITY_P = {"multispectral": 0.38, "sar": 0.25, "rgb": 0.2, "elevation": 0.07,
              "infrared": 0.05, "hyperspectral": 0.05}
SENSOR_OF = {"multispectral": "sentinel2-l2a", "sar": "sentinel1-grd", "rgb": "naip",
             "elevation": "copernicus-dem", "infrared": "landsat8-tirs", "hyperspectral": "enmap"}
# Land centres (lon, lat) and spreads (degrees): where scenes are.
LAND = [(-120, 45, 6), (-100, 40, 8), (-85, 35, 6), (-75, 42, 4), (-100, 55, 8), (-100, 22, 5),
        (-60, -10, 8), (-47, -20, 5), (-65, -35, 5), (-75, 5, 4), (0, 47, 4), (10, 50, 4),
        (20, 47, 4), (-4, 40, 3), (12, 43, 3), (30, 55, 6), (60, 55, 8), (90, 58, 8),
        (45, 28, 5), (55, 33, 5), (10, 12, 6), (25, 5, 6), (35, 0, 4), (28, -25, 5),
        (78, 22, 6), (85, 27, 3), (110, 32, 6), (116, 40, 4), (120, 25, 3), (105, 15, 4),
        (138, 36, 3), (127, 37, 2), (115, -2, 4), (135, -25, 8), (147, -35, 3), (174, -40, 2),
        (-3, 54, 2), (19, 52, 3), (70, 40, 4), (150, 60, 6)]


def _engine_codes():
    from engine.modalities import MODALITIES

    return np.array([MODALITIES.index(m) for m in MODALITY_P], np.uint8)


ENGINE_CODE = _engine_codes()


@dataclass
class World:
    concepts: np.ndarray        # (N_CONCEPTS, DIM)
    palettes: np.ndarray        # (len(LAND), PALETTE) concept ids
    mod_offsets: np.ndarray     # (6, DIM)
    gap: np.ndarray             # (DIM,)


def _unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def world(seed: int = 0) -> World:
    rng = np.random.default_rng(seed)
    c = _unit(rng.standard_normal((N_CONCEPTS, DIM), dtype=np.float32))
    pal = np.stack([rng.choice(N_CONCEPTS, PALETTE, replace=False) for _ in LAND])
    mo = _unit(rng.standard_normal((len(MODALITY_P), DIM), dtype=np.float32)) * 0.3
    gap = _unit(rng.standard_normal(DIM, dtype=np.float32))
    return World(c, pal, mo, gap)


def _splitmix(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
    return (x & np.uint64(0x7FFF_FFFF_FFFF_FFFF)).astype(np.int64)


def scenes_chunk(w: World, first_scene: int, n_scenes: int, seed: int):
    """-> dict of per-tile arrays + per-scene records for scenes [first, first + n)."""
    rng = np.random.default_rng([seed, first_scene])
    mods = list(MODALITY_P)
    per = SCENE_SIDE * SCENE_SIDE
    region = rng.integers(0, len(LAND), n_scenes)
    lon_c = np.array([LAND[r][0] for r in region]) + rng.normal(0, 1, n_scenes) * np.array([LAND[r][2] for r in region])
    lat_c = np.array([LAND[r][1] for r in region]) + rng.normal(0, 0.6, n_scenes) * np.array([LAND[r][2] for r in region])
    lon0 = np.clip(lon_c, -179, 178)
    lat0 = np.clip(lat_c, -70, 75)
    mod = rng.choice(len(mods), n_scenes, p=list(MODALITY_P.values()))
    days = rng.integers(0, 3650, n_scenes)
    acquired = [dt.date(2016, 1, 1) + dt.timedelta(days=int(d)) for d in days]
    sc_concepts = np.stack([rng.choice(w.palettes[r], 4, replace=False) for r in region])
    sc_weights = rng.dirichlet(np.ones(4) * 0.7, n_scenes)
    n = n_scenes * per
    scene_of = np.repeat(np.arange(n_scenes), per)
    i = np.tile(np.arange(per), n_scenes)
    r_, c_ = i // SCENE_SIDE, i % SCENE_SIDE
    minx = lon0[scene_of] + c_ * TILE_DEG
    miny = lat0[scene_of] + r_ * TILE_DEG
    # vectors: main concept by the scene's weights, plus a second, modality offset, noise
    cum = np.cumsum(sc_weights, axis=1)[scene_of]
    u = rng.random(n)[:, None]
    k1 = np.minimum((u > cum).sum(1), 3)
    k2 = rng.integers(0, 4, n)
    c1 = sc_concepts[scene_of, k1]
    c2 = sc_concepts[scene_of, k2]
    v = np.empty((n, DIM), np.float32)
    step = 65_536
    for a in range(0, n, step):
        b = min(n, a + step)
        x = w.concepts[c1[a:b]] + 0.35 * w.concepts[c2[a:b]] + w.mod_offsets[mod[scene_of[a:b]]]
        x += rng.standard_normal((b - a, DIM), dtype=np.float32) * np.float32(0.75 / np.sqrt(DIM))
        v[a:b] = _unit(x)
    gid = (first_scene + scene_of).astype(np.int64) * per + i
    return {
        "n": n, "tile_id": _splitmix(gid), "scene_of": first_scene + scene_of,
        "minx": minx, "miny": miny, "maxx": minx + TILE_DEG, "maxy": miny + TILE_DEG,
        "modality": mod[scene_of].astype(np.uint8), "days": days[scene_of].astype(np.int32),
        "vectors": v, "row": r_, "col": c_,
        "scenes": [{"i": first_scene + s, "lon": float(lon0[s]), "lat": float(lat0[s]),
                    "modality": mods[mod[s]], "acquired": acquired[s]} for s in range(n_scenes)],
    }


def queries(w: World, n: int, seed: int = 1) -> np.ndarray:
    """Mostly about things the archive holds (a concept of some region's palette), some not."""
    rng = np.random.default_rng([seed, 99])
    used = np.unique(w.palettes)
    c1 = np.where(rng.random(n) < 0.85, rng.choice(used, n), rng.integers(0, N_CONCEPTS, n))
    c2 = rng.integers(0, N_CONCEPTS, n)
    x = w.concepts[c1] + 0.35 * w.concepts[c2] + 0.9 * w.gap
    x += rng.standard_normal((n, DIM), dtype=np.float32) * np.float32(0.5 / np.sqrt(DIM))
    return _unit(x)


def box_wkb(x0, y0, x1, y1):
    """WKB polygons of boxes (as shapely.box(...).wkb writes them), built with numpy."""
    import pyarrow as pa

    n = len(x0)
    head = np.frombuffer(b"\x01" + (3).to_bytes(4, "little") + (1).to_bytes(4, "little")
                         + (5).to_bytes(4, "little"), np.uint8)
    # shapely.box ring: (x1 y0) (x1 y1) (x0 y1) (x0 y0) (x1 y0)
    pts = np.stack([x1, y0, x1, y1, x0, y1, x0, y0, x1, y0], axis=1).astype("<f8")
    rec = np.concatenate([np.broadcast_to(head, (n, 13)), pts.view(np.uint8).reshape(n, 80)], axis=1)
    offsets = np.arange(0, 93 * (n + 1), 93, dtype=np.int32)
    return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets),
                                                  pa.py_buffer(np.ascontiguousarray(rec))])


def _tables(chunk: dict):
    import pyarrow as pa

    from engine.store.layout import TILE_SCHEMA

    n = chunk["n"]
    mods = list(MODALITY_P)
    sc = chunk["scenes"]
    local = pa.array((chunk["scene_of"] - sc[0]["i"]).astype(np.int32))

    def dictionary(idx, names):
        return pa.DictionaryArray.from_arrays(idx, pa.array(names, pa.string())).cast(pa.string())

    sid = dictionary(local, [f"{s['i']:016x}" for s in sc])
    name = dictionary(local, [f"bench/scene{s['i']:07d}.tif" for s in sc])
    mcode = pa.array(chunk["modality"].astype(np.int32))
    mod_names = dictionary(mcode, mods)
    sensors = dictionary(mcode, [SENSOR_OF[m] for m in mods])
    acq = (np.datetime64("2016-01-01") + chunk["days"].astype("timedelta64[D]"))
    t = pa.table({
        "tile_id": chunk["tile_id"], "scene_id": sid, "scene": name,
        "modality": mod_names, "sensor": sensors, "acquired": pa.array(acq, pa.date32()),
        "row_off": (chunk["row"] * 64).astype(np.int32), "col_off": (chunk["col"] * 64).astype(np.int32),
        "height": np.full(n, 64, np.int32), "width": np.full(n, 64, np.int32),
        "minx": chunk["minx"], "miny": chunk["miny"], "maxx": chunk["maxx"], "maxy": chunk["maxy"],
        "geometry": box_wkb(chunk["minx"], chunk["miny"], chunk["maxx"], chunk["maxy"]),
        "nodata_frac": np.zeros(n, np.float32),
        "stac_collection": pa.nulls(n, pa.string()), "stac_item": pa.nulls(n, pa.string()),
    }, schema=TILE_SCHEMA)
    per = SCENE_SIDE * SCENE_SIDE
    records = [{"scene_id": f"{s['i']:016x}", "path": f"/bench/scene{s['i']:07d}.tif",
                "scene": f"bench/scene{s['i']:07d}.tif", "kind": "scene", "size": 1, "mtime_ns": 1,
                "sha256": "synthetic", "sensor": SENSOR_OF[s["modality"]], "modality": s["modality"],
                "acquired": s["acquired"], "n_tiles": per, "segment": None, "crs": "EPSG:4326",
                "evidence": "synthetic", "minx": s["lon"], "miny": s["lat"],
                "maxx": s["lon"] + SCENE_SIDE * TILE_DEG, "maxy": s["lat"] + SCENE_SIDE * TILE_DEG,
                "indexed_at": None} for s in sc]
    return records, t


def build_index(path: Path, n_vectors: int, *, chunk: int = 500_000, seed: int = 0, echo=print) -> dict:
    """Write the archive through the real store. Returns per-tile metadata arrays (for ground
    truth and query boxes) and timings. Re-uses an index already built with the same
    parameters (a `bench.json` beside it says which)."""
    from engine.store.writer import StoreWriter

    per = SCENE_SIDE * SCENE_SIDE
    n_scenes = max(1, n_vectors // per)
    meta_file = path / "bench.json"
    arrays_file = path / "bench-meta.npz"
    want = {"n_scenes": n_scenes, "seed": seed, "chunk": chunk, "version": 2}
    if meta_file.is_file() and arrays_file.is_file():
        got = json.loads(meta_file.read_text())
        if {k: got.get(k) for k in want} == want:
            a = dict(np.load(arrays_file))
            echo(f"  reusing {path} ({len(a['minx'])} tiles, written in {got['write_s']:.1f} s)")
            return {"arrays": a, "write_s": got["write_s"], "reused": True}
    if path.exists():
        import shutil

        shutil.rmtree(path)
    w = world(seed)
    scenes_per_chunk = max(1, chunk // per)
    keep = {k: [] for k in ("minx", "miny", "maxx", "maxy", "modality", "days")}
    t0 = time.perf_counter()
    with StoreWriter(path, ENCODER) as wr:
        for s0 in range(0, n_scenes, scenes_per_chunk):
            c = scenes_chunk(w, s0, min(scenes_per_chunk, n_scenes - s0), seed)
            records, t = _tables(c)
            wr.commit_bulk(records, t, c["vectors"])
            c["modality"] = ENGINE_CODE[c["modality"]]   # engine.modalities order, for filters
            for k in keep:
                keep[k].append(c[k])
            echo(f"  wrote scenes {s0}..{s0 + len(records)} ({(s0 + len(records)) * per} tiles, "
                 f"{time.perf_counter() - t0:.0f} s)")
            del c, t
    write_s = time.perf_counter() - t0
    a = {k: np.concatenate(v) for k, v in keep.items()}
    np.savez(arrays_file, **a)
    meta_file.write_text(json.dumps({**want, "write_s": write_s}))
    return {"arrays": a, "write_s": write_s, "reused": False}
