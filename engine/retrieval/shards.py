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
from ..modalities import MODALITIES


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
    """One shard's searcher (a Ray actor in `ShardedIndex`): an ordinary `engine.Index`, asked for
    the parts of a search the router merges (pipeline.py): candidates, a background sample,
    mark vectors, its share of the ranking reference, and finally the result rows."""

    KEEP_SNAPSHOTS = 4  # generations kept for `results` (a search's rows come from its snapshot)

    def __init__(self, path: str, config=None):
        from collections import OrderedDict

        from .config import DEFAULT
        from .index import Index

        self.index = Index(path, config=config or DEFAULT)
        self._snaps: OrderedDict = OrderedDict()

    def _snapshot(self):
        snap = self.index.snapshot  # a shard's indexer may have committed since the last query
        gen = snap.manifest.generation
        self._snaps[gen] = snap
        self._snaps.move_to_end(gen)
        while len(self._snaps) > self.KEEP_SNAPSHOTS:
            self._snaps.popitem(last=False)
        return snap

    def info(self) -> dict:
        snap = self._snapshot()
        return {"tiles": snap.n_tiles, "dim": snap.dim, "generation": snap.manifest.generation,
                "cells": occupancy(snap.minx, snap.miny, snap.maxx, snap.maxy),
                "encoder": snap.manifest.encoder.get("identity"), "encoder_record": snap.manifest.encoder}

    def inputs(self, ids: list[int], filters: dict, background: int, seed: int):
        """-> ({tile id: vector} of the given ids this shard holds, the background sample's
        keys and vectors: its `background` smallest-key tiles inside the filters)."""
        from .filters import Filters

        snap = self._snapshot()
        found = {}
        for t in ids:
            r = snap.row_of(t)
            if r is not None:
                found[t] = snap.vectors[r]
        rows, keys = self.index.background_rows(snap, Filters.build(**filters), background, seed)
        return found, keys, snap.vectors[rows]

    def reference(self, known: int | None):
        """-> (generation, tiles, this shard's part of the ranking reference
        (ranking.Reference.merged), or None when its generation is still `known`)."""
        from .ranking import reference_sample, sample_order

        snap = self._snapshot()
        gen = snap.manifest.generation
        if gen == known:
            return gen, snap.n_tiles, None
        keys = sample_order(snap.tile_ids)
        part = {c: (n, keys[r], snap.vectors[r])
                for c, (n, r) in reference_sample(snap.modality_code, keys).items()}
        return gen, snap.n_tiles, part

    def candidates(self, q: np.ndarray, depth: int, filters: dict, calibrated: bool,
                   vectors: bool, places: bool) -> dict:
        """This shard's top `depth` inside the filters (per modality when calibrated), as
        `Index.search` fetches them, with their vectors / scenes and envelopes when asked."""
        from .filters import Filters

        snap = self._snapshot()
        c = self.index._fetch(snap, np.asarray(q, np.float32), Filters.build(**filters), calibrated)(depth)
        out = {"generation": snap.manifest.generation, "tiles": snap.n_tiles, "ids": c.ids,
               "raw": np.asarray(c.raw, np.float32), "codes": np.asarray(c.codes),
               "scope": [MODALITIES.index(m) for m in c.plans] if calibrated else None,
               "plans": c.plans}
        if vectors:
            out["vectors"] = c.vectors_of(c.handle)
        if places:
            out["scenes"], out["boxes"] = c.places_of(c.handle)
        return out

    def results(self, generation: int, ids, score, raw, relevance):
        """The result rows of these tiles (the snapshot their candidates came from)."""
        snap = self._snaps.get(generation) or self._snapshot()
        rows = np.array([snap.row_of(int(t)) for t in ids], np.int64)
        return self.index._results(snap, rows, np.asarray(score, np.float32),
                                   raw=np.asarray(raw, np.float32), relevance=relevance)


class ShardedIndex:
    """`ShardedIndex(["/data/shard-0", ...]).search("flooded farmland", bbox=..., k=20)`: the
    shards searched in parallel by Ray actors (one per shard; `options.address` names the
    cluster, None starts a local one), merged into one GeoDataFrame like `Index.search`'s, with
    a `shard` column (the position of the tile's shard in `paths`).

    Tile ids are one namespace across shards: an id hashes its scene's path and content and a
    window (store/writer.py `tile_id_for`), and `shard_of` puts each path in one shard, so marks,
    `exclude` and `tile_id` take the ids results show, wherever their tile lives."""

    def __init__(self, paths: list[str | Path], *, options=None, config=None, encoder=None,
                 actor_options: dict | None = None):
        from ..cluster import RayOptions, connect
        from .config import DEFAULT

        if not paths:
            raise InputError("a sharded index needs at least one shard")
        self.paths = [str(Path(p).resolve()) for p in paths]
        self.config = config or DEFAULT
        self.ray, self._started = connect(options or RayOptions())
        server = self.ray.remote(**(actor_options or {"num_cpus": 0}))(ShardServer)
        self.servers = [server.remote(p, config) for p in self.paths]
        self.infos = self.ray.get([s.info.remote() for s in self.servers])
        identities = {i["encoder"] for i in self.infos if i["tiles"]}
        if len(identities) > 1:
            raise InputError(f"shards were built with different encoders: {sorted(identities)}")
        self._encoder = encoder
        self._reference = None   # (generations of the shards, their parts, ranking.Reference)
        self._bank_of = None     # evidence.Bank of the router's encoder

    @property
    def n_tiles(self) -> int:
        return sum(i["tiles"] for i in self.infos)

    @property
    def dim(self) -> int:
        return next((i["dim"] for i in self.infos if i["tiles"]), self.infos[0]["dim"])

    def _text_encoder(self):
        """The encoder the shards were built with (their manifests' record, as `Index` loads
        it), or the one given, which must be that encoder: a query embedded by another encoder
        would be scored in the wrong space without any error."""
        built = next((i for i in self.infos if i["tiles"]), None)
        if self._encoder is None:
            from ..encoder import load_encoder
            from ..encoder.factory import load_encoder_for_index

            self._encoder = (load_encoder() if built is None else
                             load_encoder_for_index(built["encoder_record"], index=self.paths[0]))
        if built is not None and built["encoder"] and built["encoder"] != self._encoder.identity:
            raise InputError(f"the shards were built with encoder {built['encoder']} but the router's "
                             f"encoder is {self._encoder.identity}; give ShardedIndex the matching "
                             f"encoder (or none: it loads the shards' own)")
        return self._encoder

    def _text_vector(self, text: str) -> np.ndarray:
        return self._text_encoder().encode_text([text])[0]

    def _bank(self):
        """The prompt bank (evidence.py) embedded by the router's encoder, once."""
        from .evidence import Bank

        if self._bank_of is None:
            self._bank_of = Bank.of(self._text_encoder())
        return self._bank_of

    @staticmethod
    def _may_touch(info: dict, boxes) -> bool:
        if not info["tiles"]:
            return False
        return boxes is None or any(_touches(info["cells"], b) for b in boxes)

    def _reference_of(self, futures):
        """The whole archive's ranking reference (every shard's part merged; rebuilt when a
        shard's generation moved) and its tile count."""
        from .ranking import Reference

        answers = self.ray.get(futures)
        gens = tuple(a[0] for a in answers)
        cached = self._reference
        if cached is None or cached[0] != gens:
            old = cached[1] if cached is not None else [None] * len(answers)
            parts = [a[2] if a[2] is not None else o for a, o in zip(answers, old)]
            if any(p is None for p in parts):  # a part this router never had: ask afresh
                answers = self.ray.get([s.reference.remote(None) for s in self.servers])
                gens, parts = tuple(a[0] for a in answers), [a[2] for a in answers]
            cached = (gens, parts, Reference.merged(parts))
            self._reference = cached
        return cached[2], sum(a[1] for a in answers)

    def search(self, text: str | None = None, bbox=None, k: int = 20, modality=None, start=None,
               end=None, *, sensor=None, region=None, vector=None, tile_id: int | None = None,
               positives=None, negatives=None, exclude=None, feedback=None, undated: bool = False,
               calibrated: bool = False, diversify: int | None = None,
               min_relevance: float | None = None, stac_collection=None, stac_item=None,
               evidence: bool = False):
        """As `Index.search` on the unsplit archive (same tiles, order, scores, relevance), for a
        text, vector or tile query and/or marks: the marks' vectors, the background sample and
        the ranking reference are gathered from the shards, the refined vector is fitted here,
        every shard returns its candidates, and the ranking (re-rank with the marks, calibration,
        floor, diversification) runs here on their union (pipeline.py)."""
        import geopandas as gpd
        import pandas as pd

        from . import pipeline
        from .feedback import refine
        from .filters import Filters
        from .index import (
            MAX_EXCLUDE,
            RANKED_MAX_DEPTH,
            _id_list,
            as_tile_id,
            check_k,
            check_one_query,
            mark_ids,
            query_vector,
            ranking_attrs,
        )
        from .ranking import Ranking

        k = check_k(k)
        fkw = {"bbox": bbox, "region": region, "modality": modality, "sensor": sensor,
               "start": start, "end": end, "undated": undated,
               "stac_collection": stac_collection, "stac_item": stac_item}
        f = Filters.build(**fkw)  # checks input once
        ranking = Ranking.build(calibrated, diversify, min_relevance, evidence)
        pos_ids, neg_ids = mark_ids(positives, negatives)
        check_one_query((text, tile_id, vector), pos_ids)
        boxes = f.boxes if f.region is not None else None
        asked = [i for i, info in enumerate(self.infos) if self._may_touch(info, boxes)]
        ref_futures = [s.reference.remote(self._reference[0][i] if self._reference else None)
                       for i, s in enumerate(self.servers)]
        skip: set[int] = set()
        if tile_id is not None:
            skip.add(as_tile_id(tile_id))
        cfg = (feedback or self.config.feedback).check()
        marked = pos_ids or neg_ids
        wanted = list(dict.fromkeys(pos_ids + neg_ids + list(skip)))
        vec_of: dict[int, np.ndarray] = {}
        bg = np.zeros((0, self.dim), np.float32)
        if wanted:
            # marks and a tile query may live in any shard; the background only in shards the
            # filters can touch (the others hold no tile inside them)
            answers = self.ray.get([s.inputs.remote(wanted, fkw, cfg.background if (marked and i in asked) else 0,
                                                    cfg.seed) for i, s in enumerate(self.servers)])
            for i, (found, _, _) in enumerate(answers):
                for t, v in found.items():
                    if t in vec_of:
                        raise InputError(f"tile {t} is in more than one shard ({self.paths[i]} and "
                                         f"another): each scene must be indexed in one shard")
                    vec_of[t] = v
            if marked:
                keys = np.concatenate([a[1] for a in answers]).astype(np.uint64)
                vecs = np.concatenate([a[2].reshape(-1, self.dim) for a in answers])
                from .ranking import smallest

                bg = vecs[smallest(keys, cfg.background)] if len(keys) else bg
        q = None
        if text is not None:
            q = self._text_vector(text)
        elif vector is not None:
            q = query_vector(vector, self.dim)
        elif tile_id is not None:
            t = as_tile_id(tile_id)
            if t not in vec_of:
                raise InputError(f"tile_id {t} is not in this index")
            q = vec_of[t]
        refined = None
        if marked:
            def marks(ids, what):
                for t in ids:
                    if t not in vec_of:
                        raise InputError(f"tile {t} (marked {what}) is not in this index")
                return (np.stack([vec_of[t] for t in ids]) if ids else np.zeros((0, self.dim), np.float32))

            refined = refine(q, marks(pos_ids, "relevant"), marks(neg_ids, "not relevant"), bg, cfg)
            q = refined.vector
        if exclude is not None:
            skip |= {as_tile_id(t) for t in _id_list(exclude, "exclude")}
            if len(skip) > MAX_EXCLUDE:
                raise InputError(f"{len(skip)} tiles to exclude: at most {MAX_EXCLUDE}")
        skip_ids = np.fromiter(skip, np.int64, len(skip))
        rerank = refined is not None and refined.reranks
        merged: dict = {}

        def fetch(depth: int) -> pipeline.Candidates:
            answers = self.ray.get([self.servers[i].candidates.remote(
                q, depth, fkw, ranking.per_modality, rerank or ranking.evidence,
                ranking.diversify is not None) for i in asked])
            merged.clear()
            merged.update(gens={i: a["generation"] for i, a in zip(asked, answers)})
            cat = lambda key, empty: (np.concatenate([a[key] for a in answers]) if answers else empty)
            ids, raw = cat("ids", np.zeros(0, np.int64)), cat("raw", np.zeros(0, np.float32))
            codes = cat("codes", np.zeros(0, np.int64))
            shard = np.concatenate([np.full(len(a["ids"]), i) for i, a in zip(asked, answers)]) \
                if answers else np.zeros(0, np.int64)
            if ranking.per_modality:  # the union's top `depth` of each modality
                scope = sorted({c for a in answers for c in a["scope"]})
                sel = [np.flatnonzero(codes == c)[pipeline.merge_parts(
                    [(ids[codes == c], raw[codes == c])], depth)] for c in scope]
                exhausted = all(len(p) < depth for p in sel)
                take = np.concatenate(sel) if sel else np.zeros(0, np.int64)
            else:
                take = pipeline.merge_parts([(ids, raw)], depth)
                exhausted = len(take) < depth
            # what the ranking will ask for (the shards sent it only when it would)
            vecs = (cat("vectors", np.zeros((0, self.dim), np.float32)) if rerank or ranking.evidence
                    else np.zeros((0, self.dim)))
            div = ranking.diversify is not None
            scenes = np.array([s for a in answers for s in a["scenes"]] if div else [], dtype=object)
            boxes = cat("boxes", np.zeros((0, 4))) if div else np.zeros((0, 4))
            merged["shard"] = shard
            return pipeline.Candidates(
                ids[take], raw[take], codes[take], take, exhausted,
                {"shards": {self.paths[i]: a["plans"] for i, a in zip(asked, answers)}},
                vectors_of=lambda h: vecs[h], places_of=lambda h: (scenes[h], boxes[h]))

        ref: list = []   # (ranking.Reference, tiles in all shards), once the shards answered

        def reference():
            if not ref:
                ref.extend(self._reference_of(ref_futures))
            return ref

        ranked = pipeline.rank(fetch, lambda: reference()[0].stats(q), k, skip_ids, ranking,
                               refined if rerank else None, lambda: reference()[1], RANKED_MAX_DEPTH,
                               self._bank() if ranking.evidence else None)
        shard_of_result = merged["shard"][ranked.cands.handle] if len(ranked.cands) else np.zeros(0, np.int64)
        frames = []
        for i in sorted(set(shard_of_result.tolist())) or [asked[0] if asked else 0]:
            m = shard_of_result == i
            frames.append((i, m, self.servers[i].results.remote(
                merged.get("gens", {}).get(i, -1), ranked.cands.ids[m], ranked.key[m],
                ranked.cands.raw[m], ranked.relevance[m])))
        got = self.ray.get([fr[2] for fr in frames])
        if len(ranked.cands):
            parts = []
            for (i, m, _), df in zip(frames, got):
                df = df.copy()
                df["shard"] = i
                df["_pos"] = np.flatnonzero(m)
                parts.append(df)
            out = pd.concat(parts, ignore_index=True).sort_values("_pos").drop(columns="_pos")
            out["rank"] = np.arange(1, len(out) + 1)
            out = gpd.GeoDataFrame(out.reset_index(drop=True), geometry="geometry", crs=got[0].crs)
        else:
            out = got[0].iloc[:0].copy()
            out["shard"] = np.zeros(0, np.int64)
        out.attrs["plan"] = {"strategy": "sharded", **ranked.plans,
                             **({"depth": ranked.depth} if not ranking.plain else {})}
        if refined is not None:
            out.attrs["plan"]["feedback"] = refined.describe()
        out.attrs["ranking"] = ranking_attrs(ranking, ranked)
        out.attrs["shards"] = {"asked": len(asked), "of": len(self.servers)}
        return out

    def close(self) -> None:
        for s in self.servers:
            self.ray.kill(s)
        self.servers = []
        if self._started:
            self.ray.shutdown()
