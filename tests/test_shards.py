"""Sharded search on Ray (engine/retrieval/shards.py): an index split by scene into shards,
each served by an actor of the session's local cluster, answers every query like the single
index it came from (same tiles, same scores, same order)."""

import numpy as np
import pytest

import engine
import synthetic
from engine.check import check_index
from engine.retrieval.shards import ShardedIndex, shard_of, split_index


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    src, rows = synthetic.build(root / "single", n_scenes=24, tiles_per_scene=100, seed=9)
    return src, split_index(src, root / "sharded", 3), rows


def test_split_puts_each_scene_in_one_shard(split):
    src, shards, rows = split
    sizes = [engine.Index(p).snapshot.n_tiles for p in shards]
    assert sum(sizes) == len(rows) and min(sizes) > 0
    for i, p in enumerate(shards):
        scenes = engine.Index(p).scenes()
        assert all(shard_of(s, 3) == i for s in scenes["path"])
        problems, _ = check_index(p)
        assert problems == []


def test_fanned_out_search_equals_the_single_index(ray_cluster, split):
    src, shards, rows = split
    single = engine.Index(src)
    sharded = ShardedIndex(shards)
    try:
        assert sharded.n_tiles == single.snapshot.n_tiles
        r0 = rows[150]["geom"].bounds
        cases = [{}, {"modality": "sar"}, {"start": "2017-01-01", "end": "2019-12-31"},
                 {"bbox": (r0[0] - 0.05, r0[1] - 0.05, r0[2] + 0.05, r0[3] + 0.05)},
                 {"bbox": (-180, -90, 0, 90), "modality": ["rgb", "multispectral"]}]
        for q in synthetic.clustered_vectors(np.random.default_rng(4), 4):
            for f in cases:
                want = single.search(vector=q, k=15, **f)
                got = sharded.search(vector=q, k=15, **f)
                assert list(got.tile_id) == list(want.tile_id), f
                np.testing.assert_allclose(got.score, want.score, rtol=1e-5)
                assert list(got["rank"]) == list(range(1, len(want) + 1))
                assert (got.geometry.geom_equals(want.geometry)).all()
        # a box around one scene asks only the shards whose extent it touches
        got = sharded.search(vector=q, k=5, bbox=cases[3]["bbox"])
        assert got.attrs["shards"]["asked"] < 3 and len(got) == 5
        none = sharded.search(vector=q, k=5, bbox=(10, -89.9, 10.1, -89.8))
        assert len(none) == 0 and "tile_id" in none.columns
    finally:
        sharded.close()
