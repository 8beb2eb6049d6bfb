"""One Index serves every UI session: 8 threads x 200 mixed searches while a writer commits
give the same results as the same searches run one after another, and no exceptions. Also the
search configuration as data: `engine.open(path, config=...)`, the plan in `result.attrs`."""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import FrozenInstanceError

import numpy as np
import pytest
import shapely

import engine
import synthetic
from engine import PlannerConfig, SearchConfig, VectorIndexConfig
from engine.errors import InputError
from engine.store.writer import StagedScene, StoreWriter, scene_id_for, tile_id_for

THREADS, PER_THREAD = 8, 200
# thresholds scaled to a 4 800-tile index so that every planner strategy runs
CONFIG = SearchConfig(planner=PlannerConfig(prefilter_max_rows=300, prefilter_max_fraction=0.0,
                                            materialise_min_rows=1500, materialise_max_fraction=0.0))


def _queries(rows) -> list[dict]:
    """Mixed queries: vectors and tile ids; no filter, boxes from a few tiles to half the world,
    attributes, dates. Each matches far more than k tiles or none of the writer's, whose
    random vectors (inner product ~0.05 with anything) never reach a top 10 (scores ~0.5+)."""
    rng = np.random.default_rng(3)
    vecs = synthetic.clustered_vectors(rng, 12)
    r0 = rows[0]["geom"].bounds
    filters = [{}, {"bbox": (r0[0] - 1e-4, r0[1] - 1e-4, r0[0] + 0.05, r0[1] + 0.05)},
               {"bbox": (-60, -40, 60, 40)}, {"bbox": (-180, -90, 0, 90)},
               {"modality": "sar"}, {"modality": ["rgb", "multispectral"], "bbox": (-180, -90, 90, 90)},
               {"start": dt.date(2016, 1, 1), "end": dt.date(2019, 12, 31)},
               {"sensor": "sensor2", "start": dt.date(2015, 6, 1)}]
    out = []
    for i, v in enumerate(vecs):
        out.append({"vector": v, "k": 10, **filters[i % len(filters)]})
    for i, r in enumerate(rows[::997][:12]):
        out.append({"tile_id": int(r["tile_id"]), "k": 7, **filters[(i + 3) % len(filters)]})
    return out


def _writer_scene(s: int, rng) -> StagedScene:
    path = f"/synthetic/written{s:03d}.tif"
    sid = scene_id_for(path, f"sha{s}")
    lon0, lat0 = 170.0 + s * 0.1, -80.0
    tiles = []
    for i in range(40):
        r, c = divmod(i, 8)
        x, y = lon0 + c * 0.01, lat0 + r * 0.01
        tiles.append({"tile_id": tile_id_for(path, r, c, 64, 64), "scene_id": sid, "scene": f"w/{s}",
                      "modality": "rgb", "sensor": "writer", "acquired": None, "row_off": r * 64,
                      "col_off": c * 64, "height": 64, "width": 64, "minx": x, "miny": y,
                      "maxx": x + 0.01, "maxy": y + 0.01,
                      "geometry": shapely.box(x, y, x + 0.01, y + 0.01).wkb,
                      "nodata_frac": 0.0})
    v = rng.normal(size=(40, 384)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    rec = {"scene_id": sid, "path": path, "scene": f"w/{s}", "kind": "scene", "size": 1,
           "mtime_ns": 1, "sha256": f"sha{s}", "sensor": "writer", "modality": "rgb",
           "acquired": None, "n_tiles": 0, "segment": None, "crs": "EPSG:4326",
           "evidence": "synthetic", "minx": lon0, "miny": lat0, "maxx": lon0 + 0.08,
           "maxy": lat0 + 0.05, "indexed_at": None}
    return StagedScene(rec, tiles, v, [b""] * 40)


def _key(res):
    return list(res.tile_id), np.round(res.score.to_numpy(), 5).tolist()


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return synthetic.build(tmp_path_factory.mktemp("conc") / "index", n_scenes=12,
                           tiles_per_scene=400, seed=7)


def test_concurrent_searches_and_refreshes_match_sequential(small):
    path, rows = small
    idx = engine.open(path, config=CONFIG)
    queries = _queries(rows)
    expected = [_key(idx.search(**q)) for q in queries]
    strategies = {idx.search(**q).attrs["plan"]["strategy"] for q in queries}
    assert {"index", "prefilter", "index+selector", "index+postfilter"} <= strategies

    done = [0]
    count_lock = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []
    mismatches: list[str] = []
    generations: set[int] = set()

    def searcher(t: int) -> None:
        order = np.random.default_rng(100 + t).integers(0, len(queries), PER_THREAD)
        try:
            for n, i in enumerate(order):
                res = idx.search(**queries[i])
                generations.add(res.attrs["plan"]["generation"])
                if _key(res) != expected[i]:
                    mismatches.append(f"thread {t} query {i}")
                if n % 25 == 0 and len(res):  # the thumbnail cache and tile records, too
                    idx.thumbnails(res.tile_id[:3])
                    idx.tile(int(res.tile_id.iloc[0]))
                with count_lock:
                    done[0] += 1
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    def writer() -> None:
        rng = np.random.default_rng(9)
        try:
            with StoreWriter(path, synthetic.ENCODER, commit_every=10**9) as w:
                for s in range(6):  # a commit every ~1/7 of the searches
                    while done[0] < (s + 1) * THREADS * PER_THREAD // 7 and not stop.is_set():
                        stop.wait(0.01)
                    w.stage(_writer_scene(s, rng))
                    w.commit()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=searcher, args=(t,)) for t in range(THREADS)]
    w = threading.Thread(target=writer)
    w.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    w.join()
    assert errors == []
    assert mismatches == []
    assert len(generations) >= 3, generations  # the searches really ran across refreshes
    assert idx.info()["tiles"] == len(rows) + 6 * 40


def test_config_is_data(small, monkeypatch):
    path, _ = small
    with pytest.raises(FrozenInstanceError):
        CONFIG.planner.prefilter_max_rows = 1  # type: ignore[misc]
    # the environment is read only when asked, by SearchConfig.from_env
    monkeypatch.setenv("GLB_QUANT_MIN_ROWS", "1000")
    assert SearchConfig().vectors.quant_min_rows == VectorIndexConfig().quant_min_rows
    assert SearchConfig.from_env().vectors.quant_min_rows == 1000
    monkeypatch.setenv("GLB_NLIST", "many")
    with pytest.raises(InputError, match="GLB_NLIST"):
        SearchConfig.from_env()
    with pytest.raises(InputError, match="SearchConfig"):
        engine.open(path, config={"planner": {}})
    # a different config is a different Index; the same config the same one
    assert engine.open(path, config=CONFIG) is engine.open(path, config=CONFIG)
    assert engine.open(path) is not engine.open(path, config=CONFIG)
    quantised = SearchConfig(vectors=VectorIndexConfig(quant_min_rows=1000, nlist=16, pq_m=16,
                                                       train_sample=2000))
    res = engine.open(path, config=quantised).search(vector=np.eye(384, dtype=np.float32)[0], k=3)
    assert res.attrs["plan"]["index"] == "ivfpq" and len(res) == 3
