"""A synthetic index written through the real store (DuckDB, FAISS, Parquet): tiles laid out
like an archive (dense clusters where scenes are, empty oceans), vectors clustered like real
embeddings. For exercising search at selectivities the sample data cannot reach."""

from __future__ import annotations

import datetime as dt

import numpy as np
from shapely.geometry import box

from engine.modalities import MODALITIES
from engine.store.writer import StagedScene, StoreWriter, scene_id_for, tile_id_for

ENCODER = {"name": "synthetic", "identity": "synthetic@test", "dim": 384, "trained": False}


def clustered_vectors(rng, n, dim=384, centres=64, spread=0.35):
    c = rng.normal(size=(centres, dim)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    v = c[rng.integers(0, centres, n)] + spread * rng.normal(size=(n, dim)).astype(np.float32) / np.sqrt(dim) * 4
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def build(path, n_scenes=60, tiles_per_scene=500, seed=0, scenes_per_commit=20):
    """-> (index path, all tile rows as dicts incl. geometry object). One segment per
    `scenes_per_commit` scenes."""
    rng = np.random.default_rng(seed)
    rows_all = []
    with StoreWriter(path, ENCODER, commit_every=10**9) as w:
        vecs = clustered_vectors(rng, n_scenes * tiles_per_scene)
        k = 0
        for s in range(n_scenes):
            lon0, lat0 = rng.uniform(-170, 160), rng.uniform(-60, 60)
            side = int(np.sqrt(tiles_per_scene))
            path_s = f"/synthetic/scene{s:03d}.tif"
            sid = scene_id_for(path_s, "sha")
            modality = MODALITIES[s % len(MODALITIES)]
            acquired = dt.date(2015, 1, 1) + dt.timedelta(days=int(rng.integers(0, 3000)))
            tiles = []
            for i in range(tiles_per_scene):
                r, c = divmod(i, side)
                g = box(lon0 + c * 0.01, lat0 + r * 0.01, lon0 + (c + 1) * 0.01, lat0 + (r + 1) * 0.01)
                t = {"tile_id": tile_id_for(path_s, r, c, 64, 64), "scene_id": sid, "scene": f"s/{s}",
                     "modality": modality, "sensor": f"sensor{s % 4}", "acquired": acquired,
                     "row_off": r * 64, "col_off": c * 64, "height": 64, "width": 64,
                     "minx": g.bounds[0], "miny": g.bounds[1], "maxx": g.bounds[2], "maxy": g.bounds[3],
                     "geometry": g.wkb, "nodata_frac": 0.0}
                tiles.append(t)
                rows_all.append(dict(t, geom=g, vector=vecs[k]))
                k += 1
            rec = {"scene_id": sid, "path": path_s, "scene": f"s/{s}", "kind": "scene", "size": 1,
                   "mtime_ns": 1, "sha256": "sha", "sensor": f"sensor{s % 4}", "modality": modality,
                   "acquired": acquired, "n_tiles": 0, "segment": None, "crs": "EPSG:4326",
                   "evidence": "synthetic", "minx": lon0, "miny": lat0, "maxx": lon0 + side * 0.01,
                   "maxy": lat0 + side * 0.01, "indexed_at": None}
            w.stage(StagedScene(rec, tiles, vecs[k - tiles_per_scene:k], [b""] * tiles_per_scene))
            if s % scenes_per_commit == scenes_per_commit - 1:
                w.commit()
        w.commit()
    return path, rows_all
