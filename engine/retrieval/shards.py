"""Search across machines: an archive split into shard indexes, each served by a Ray actor; a
query is encoded once, fanned out to the shards whose extent it can touch, and their top-k
merged into the top-k of the whole.

Sharding key: the scene (a hash of its path). All tiles of a scene live in one shard, so each
shard is an ordinary index with its own writer, lock and manifest: replacing a scene retires
its old tiles in the same commit that adds the new ones, and `glb check` holds per shard.
Hashing spreads every region and every date evenly, so shards are the same size and the same
speed and a query's p99 is one shard's p99 plus the merge, where sharding by region would make
the dense continents hot shards and sharding by time would send every "recent" query to one
machine. What a region key would buy (queries skipping far shards) is kept cheaply: each
shard reports which 1° cells hold its tiles and a bbox query skips shards it cannot touch.

Exactness: each shard returns its own top-k within the filters, so the merge is the global
top-k whenever the shards' answers are exact (flat indexes; prefiltered plans) and has at least
each shard's recall otherwise. Ties are broken by tile id, as in a single index.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..errors import InputError


def shard_of(scene_path: str, n_shards: int) -> int:
    """The shard a scene belongs to (stable across runs, machines and Python versions)."""
    h = hashlib.blake2b(str(scene_path).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") % n_shards


def split_index(src: str | Path, dst: str | Path, n_shards: int) -> list[Path]:
    """Write the live tiles of the index `src` into `n_shards` new indexes `dst/shard-<i>`
    (by `shard_of` of each scene's path): resharding, or sharding an existing archive."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from ..store.layout import Layout
    from ..store.manifest import read_current, read_scenes, read_tombstones
    from ..store.segment import read_thumbs, read_tiles, read_vectors
    from ..store.writer import StoreWriter

    layout = Layout(src)
    m = read_current(layout)
    scenes = read_scenes(layout, m).to_pylist()
    dead = read_tombstones(layout, m)
    shard_by_scene_id = {s["scene_id"]: shard_of(s["path"], n_shards) for s in scenes}
    parts: list[list] = [[] for _ in range(n_shards)]
    for seg in m.segments:
        t = read_tiles(layout, seg.name)
        v = read_vectors(layout, seg.name)
        th = read_thumbs(layout, seg.name)
        jpeg = dict(zip(th.column("tile_id").to_pylist(), th.column("jpeg").to_pylist()))
        gone = dead.filter(pc.equal(dead.column("segment"), seg.name)).column("tile_id").to_numpy()
        live = ~np.isin(t.column("tile_id").to_numpy(), gone)
        shard = np.array([shard_by_scene_id.get(s, -1) for s in t.column("scene_id").to_pylist()])
        for i in range(n_shards):
            keep = np.flatnonzero(live & (shard == i))
            if len(keep):
                tt = t.take(pa.array(keep))
                parts[i].append((tt, v[keep], [jpeg[x] for x in tt.column("tile_id").to_pylist()]))
    out = []
    for i in range(n_shards):
        path = Path(dst) / f"shard-{i}"
        recs = [dict(s, segment=None) for s in scenes if shard_of(s["path"], n_shards) == i]
        with StoreWriter(path, m.encoder) as w:
            if parts[i]:
                tiles = pa.concat_tables([p[0] for p in parts[i]])
                w.commit_bulk(recs, tiles, np.concatenate([p[1] for p in parts[i]]),
                              [j for p in parts[i] for j in p[2]])
            elif recs:
                w.commit_bulk(recs, read_tiles(layout, m.segments[0].name).slice(0, 0),
                              np.zeros((0, int(m.encoder.get("dim", 384))), np.float32), [])
        out.append(path)
    return out


CELL_DEG = 1.0
GRID_SHAPE = (int(180 / CELL_DEG), int(360 / CELL_DEG))


def occupancy(minx, miny, maxx, maxy) -> np.ndarray:
    """(180, 360) booleans: the 1° cells that tiles with these lon/lat envelopes touch."""
    occ = np.zeros(GRID_SHAPE, bool)
    if len(minx) == 0:
        return occ
    ny, nx = GRID_SHAPE

    def col(x):
        return np.clip(np.floor((np.asarray(x, np.float64) + 180) / CELL_DEG), 0, nx - 1).astype(np.int64)

    def row(y):
        return np.clip(np.floor((np.asarray(y, np.float64) + 90) / CELL_DEG), 0, ny - 1).astype(np.int64)

    c0, c1, r0, r1 = col(minx), col(maxx), row(miny), row(maxy)
    small = (c1 - c0 <= 1) & (r1 - r0 <= 1)
    for rr, cc in ((r0, c0), (r0, c1), (r1, c0), (r1, c1)):   # tiles within 2 x 2 cells
        occ[rr[small], cc[small]] = True
    for i in np.flatnonzero(~small):                          # the rare large footprint
        occ[r0[i]:r1[i] + 1, c0[i]:c1[i] + 1] = True
    return occ


def _touches(occ: np.ndarray, box) -> bool:
    x0, y0, x1, y1 = box
    ny, nx = occ.shape
    c0, c1 = (int(np.clip(np.floor((v + 180) / CELL_DEG), 0, nx - 1)) for v in (x0, x1))
    r0, r1 = (int(np.clip(np.floor((v + 90) / CELL_DEG), 0, ny - 1)) for v in (y0, y1))
    return bool(occ[r0:r1 + 1, c0:c1 + 1].any())


class ShardServer:
    """One shard's searcher (a Ray actor in `ShardedIndex`): an ordinary `engine.Index`."""

    def __init__(self, path: str, config=None):
        from .config import DEFAULT
        from .index import Index

        self.index = Index(path, config=config or DEFAULT)

    def info(self) -> dict:
        snap = self.index.snapshot
        return {"tiles": snap.n_tiles, "dim": snap.dim,
                "cells": occupancy(snap.minx, snap.miny, snap.maxx, snap.maxy),
                "encoder": snap.manifest.encoder.get("identity")}

    def search(self, vector: np.ndarray, k: int, filters: dict):
        self.index.refresh()  # a shard's indexer may have committed since the last query
        return self.index.search(vector=vector, k=k, **filters)


class ShardedIndex:
    """`ShardedIndex(["/data/shard-0", ...]).search("flooded farmland", bbox=..., k=20)`: the
    shards searched in parallel by Ray actors (one per shard; `options.address` names the
    cluster, None starts a local one), merged into one GeoDataFrame like `Index.search`'s."""

    def __init__(self, paths: list[str | Path], *, options=None, config=None, encoder=None,
                 actor_options: dict | None = None):
        from ..cluster import RayOptions, connect

        if not paths:
            raise InputError("a sharded index needs at least one shard")
        self.paths = [str(Path(p).resolve()) for p in paths]
        self.ray, self._started = connect(options or RayOptions())
        server = self.ray.remote(**(actor_options or {"num_cpus": 0}))(ShardServer)
        self.servers = [server.remote(p, config) for p in self.paths]
        self.infos = self.ray.get([s.info.remote() for s in self.servers])
        identities = {i["encoder"] for i in self.infos if i["tiles"]}
        if len(identities) > 1:
            raise InputError(f"shards were built with different encoders: {sorted(identities)}")
        self._encoder = encoder

    @property
    def n_tiles(self) -> int:
        return sum(i["tiles"] for i in self.infos)

    def _query_vector(self, text, vector) -> np.ndarray:
        if (text is None) == (vector is None):
            raise InputError("give exactly one query: text or vector")
        if vector is not None:
            return np.asarray(vector, dtype=np.float32).reshape(-1)
        if self._encoder is None:
            from ..encoder import load_encoder

            self._encoder = load_encoder()
        return self._encoder.encode_text([text])[0]

    @staticmethod
    def _may_touch(info: dict, boxes) -> bool:
        if not info["tiles"]:
            return False
        return boxes is None or any(_touches(info["cells"], b) for b in boxes)

    def search(self, text: str | None = None, bbox=None, k: int = 20, modality=None, start=None,
               end=None, *, sensor=None, vector=None):
        import geopandas as gpd
        import pandas as pd

        from .filters import Filters
        from .index import check_k

        k = check_k(k)
        q = self._query_vector(text, vector)
        f = Filters.build(bbox=bbox, modality=modality, sensor=sensor, start=start, end=end)  # checks input once
        boxes = f.boxes if bbox is not None else None
        filters = {"bbox": bbox, "modality": modality, "start": start, "end": end, "sensor": sensor}
        asked = [s for s, info in zip(self.servers, self.infos) if self._may_touch(info, boxes)]
        # an empty answer keeps the columns of a real one: ask one shard when none can match
        results = self.ray.get([s.search.remote(q, k, filters) for s in (asked or self.servers[:1])])
        parts = [r for r in results if len(r)] if asked else []
        if not parts:
            out = results[0].iloc[:0]
        else:
            merged = pd.concat(parts, ignore_index=True)
            merged = merged.sort_values(["score", "tile_id"], ascending=[False, True], kind="stable").head(k)
            merged["rank"] = np.arange(1, len(merged) + 1)
            out = gpd.GeoDataFrame(merged.reset_index(drop=True), geometry="geometry", crs=parts[0].crs)
        out.attrs["shards"] = {"asked": len(asked), "of": len(self.servers)}
        return out

    def close(self) -> None:
        for s in self.servers:
            self.ray.kill(s)
        self.servers = []
        if self._started:
            self.ray.shutdown()
