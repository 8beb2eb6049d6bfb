"""The large-index search path (IVF-PQ codes in RAM, float32 vectors memory-mapped, exact
re-ranking, grid candidates, filter-aware probing, post-filtering), forced on a small synthetic
index by lowering the threshold, compared with brute force at every selectivity."""

import datetime as dt

import numpy as np
import pytest
import shapely

import engine
import synthetic
from engine import PlannerConfig, SearchConfig, VectorIndexConfig
from engine.check import check_index
from test_search import boxes_by_selectivity, brute_force

# the quantised path on a small index, with a codebook trained in seconds
VECTORS = VectorIndexConfig(quant_min_rows=1000, nlist=64, pq_m=48, train_sample=16_000)


def _index(path, **planner) -> engine.Index:
    return engine.Index(path, config=SearchConfig(planner=PlannerConfig(**planner), vectors=VECTORS))


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    # tighter clusters than tests/synthetic.py's default (near-uniform noise within a cluster,
    # where no quantised index can rank well): closer to real embeddings
    orig = synthetic.clustered_vectors
    mp.setattr(synthetic, "clustered_vectors", lambda rng, n, **kw: orig(rng, n, **{"spread": 0.15, **kw}))
    path, rows = synthetic.build(tmp_path_factory.mktemp("scale") / "index", n_scenes=40,
                                 tiles_per_scene=400, seed=5)
    idx = _index(path)
    yield idx, rows, path
    mp.undo()


def test_large_path_is_used_and_persisted(large):
    idx, rows, path = large
    snap = idx.snapshot
    assert snap.large and snap.vector_index.kind == "ivfpq"
    files = {p.name for p in (path / "vindex").iterdir()}
    assert any(f.startswith("quantizer-ivf64-pq48") for f in files)
    assert sum(f.endswith(".codes.npy") for f in files) == len(snap.segments)
    assert sum(f.endswith(".tiles.arrow") for f in files) == len(snap.segments)
    mem = snap.memory_bytes()
    assert mem["vectors_in_ram"] == 0 and mem["tiles"] == 0
    # a second reader reuses the persisted quantiser and codes (same digest)
    again = _index(path).snapshot.vector_index
    assert again.digest == snap.vector_index.digest
    problems, _ = check_index(path)
    assert problems == []


def test_recall_at_10_at_every_selectivity(large):
    _, rows, path = large
    # thresholds scaled to this small index so that every strategy is exercised
    idx = _index(path, prefilter_max_rows=1500, materialise_min_rows=4000)
    queries = synthetic.clustered_vectors(np.random.default_rng(11), 10)
    strategies = set()
    for name, bbox in list(boxes_by_selectivity(rows)) + [("none", None)]:
        region = shapely.box(*bbox) if bbox else None
        hits = total = 0
        for q in queries:
            truth = brute_force(rows, q, 10, region=region)
            got = idx.search(vector=q, bbox=bbox, k=10)
            strategies.add(got.attrs["plan"]["strategy"])
            if region is not None:
                assert all(g.intersects(region) for g in got.geometry), name
            assert len(got) == len(truth), name
            # scores are exact inner products, best first
            vec = {r["tile_id"]: r["vector"] for r in rows}
            exact = np.array([vec[t] @ q for t in got.tile_id])
            assert np.allclose(exact, got.score.to_numpy(), atol=1e-5)
            assert (np.diff(got.score.to_numpy()) <= 1e-6).all()
            hits += len(set(got.tile_id) & set(truth))
            total += len(truth)
        assert hits / total >= 0.95, f"{name}: recall {hits / total:.3f}"
    assert {"prefilter", "index", "index+selector", "index+postfilter"} <= strategies


def test_selector_and_postfilter_paths(large):
    _, rows, path = large
    q = synthetic.clustered_vectors(np.random.default_rng(12), 1)[0]
    bbox = (-180, -90, 0, 90)
    truth = brute_force(rows, q, 10, region=shapely.box(*bbox))
    got = _index(path, prefilter_max_rows=100, materialise_min_rows=10**9).search(vector=q, bbox=bbox, k=10)
    assert got.attrs["plan"]["strategy"] == "index+selector"
    assert got.attrs["plan"]["nprobe"] >= VECTORS.min_nprobe
    assert len(set(got.tile_id) & set(truth)) >= 9
    got = _index(path, materialise_min_rows=10, materialise_max_fraction=0.0).search(vector=q, bbox=bbox, k=10)
    assert got.attrs["plan"]["strategy"] == "index+postfilter"
    assert len(set(got.tile_id) & set(truth)) >= 9


def test_attribute_filters_are_exact_on_the_large_path(large):
    idx, rows, _ = large
    q = synthetic.clustered_vectors(np.random.default_rng(13), 1)[0]
    start, end = dt.date(2017, 1, 1), dt.date(2019, 12, 31)
    got = idx.search(vector=q, k=20, modality="sar", start=start, end=end)
    truth = brute_force(rows, q, 20, modality="sar", start=start, end=end)
    assert set(got.modality) == {"sar"}
    assert all(start <= d.date() <= end for d in got.acquired)
    assert len(set(got.tile_id) & set(truth)) >= 19
    got = idx.search(vector=q, k=10, modality=["rgb", "sar"])
    assert set(got.modality) <= {"rgb", "sar"} and len(got) == 10


def test_tombstones_and_new_segments_on_the_large_path(large, tmp_path):
    import shutil

    from engine.store.writer import StoreWriter

    _, rows, path = large
    dst = tmp_path / "copy"
    shutil.copytree(path, dst)
    with StoreWriter(dst, synthetic.ENCODER) as w:
        w.remove("/synthetic/scene000.tif")
        w.commit()
    idx = engine.Index(dst)
    gone = {r["tile_id"] for r in rows if r["scene_id"] == rows[0]["scene_id"]}
    q = rows[0]["vector"]
    got = idx.search(vector=q, k=50)
    assert not (set(got.tile_id) & gone)
    truth = brute_force([r for r in rows if r["tile_id"] not in gone], q, 50)
    assert len(set(got.tile_id) & set(truth)) >= 47
    assert idx.snapshot.row_of(rows[0]["tile_id"]) is None
    t = rows[500]
    assert idx.tile(t["tile_id"])["tile_id"] == t["tile_id"]
    assert np.allclose(idx.tile_vector(t["tile_id"]), t["vector"])
