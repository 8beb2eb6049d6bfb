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


def _same(got, want, what):
    assert list(got.tile_id) == list(want.tile_id), what
    np.testing.assert_allclose(got.score, want.score, rtol=1e-4, atol=1e-5, err_msg=str(what))
    np.testing.assert_allclose(got.score_raw, want.score_raw, rtol=1e-5, atol=1e-6, err_msg=str(what))
    np.testing.assert_allclose(got.relevance, want.relevance, atol=0.6, err_msg=str(what))
    assert list(got["rank"]) == list(range(1, len(want) + 1))
    assert got.attrs["ranking"] == want.attrs["ranking"], what
    fg, fw = got.attrs["plan"].get("feedback"), want.attrs["plan"].get("feedback")
    assert (fg is None) == (fw is None), what
    if fw is not None:
        assert fg["weight"] == fw["weight"] and fg["method"] == fw["method"], what
        assert fg.get("rerank") == fw.get("rerank"), what
        assert fg["cv_auc"] == fw["cv_auc"], what


def test_marks_and_ranking_options_in_sharded_search_equal_the_single_index(ray_cluster, split):
    """Relevance feedback and the ranking options across shards: the same refined vector (marks
    gathered from whichever shard holds them, the same background sample), the same re-ranked
    candidates, calibration, floor and diversification, as the unsplit index."""
    src, shards, rows = split
    single = engine.Index(src)
    sharded = ShardedIndex(shards)
    holder = {t: i for i, p in enumerate(shards) for t in engine.Index(p).snapshot.tile_ids.tolist()}
    seen = {"weights": set(), "hidden": 0, "below": 0}
    try:
        r0 = rows[150]["geom"].bounds
        near = (r0[0] - 0.3, r0[1] - 0.3, r0[2] + 0.3, r0[3] + 0.3)
        for qi, q in enumerate(synthetic.clustered_vectors(np.random.default_rng(5), 3)):
            top = [int(t) for t in single.search(vector=q, k=40).tile_id]
            pos, neg = top[0:40:3], [t for t in top if t not in top[0:40:3]][:12]
            assert len({holder[t] for t in pos + neg}) == 3   # marks from every shard
            cases = [dict(vector=q, positives=pos, negatives=neg),
                     dict(vector=q, positives=pos, negatives=neg, exclude=pos + neg),
                     dict(positives=pos[:4]),                                   # marks only
                     dict(vector=q, negatives=neg[:3]),                         # "not this" only
                     dict(tile_id=pos[0], positives=pos[1:5], negatives=neg[:5]),
                     dict(vector=q, positives=pos, negatives=neg, modality="sar"),
                     dict(vector=q, positives=pos, negatives=neg, bbox=near),
                     dict(vector=q, positives=pos, negatives=neg, calibrated=True),
                     dict(vector=q, positives=pos, negatives=neg, diversify=2, exclude=pos),
                     dict(vector=q, positives=pos, negatives=neg, calibrated=True,
                          min_relevance=90, start="2016-01-01", end="2020-12-31", undated=True),
                     dict(vector=q, calibrated=True, diversify=1),              # no marks
                     dict(vector=q, min_relevance=99.5, exclude=top[:5])]
            for c in cases:
                want = single.search(k=15, **c)
                got = sharded.search(k=15, **c)
                _same(got, want, (qi, sorted(c)))
                seen["weights"].add((want.attrs["plan"].get("feedback") or {}).get("weight"))
                seen["hidden"] += want.attrs["ranking"]["hidden_by_diversify"]
                seen["below"] += want.attrs["ranking"]["below_floor"]
                # the frame says where each tile lives
                assert all(holder[int(t)] == s for t, s in zip(got.tile_id, got["shard"]))
        # the cases did what they are there for: blends chosen by the marks, results hidden
        assert {0.0, 0.25, 1.0} <= seen["weights"] and seen["hidden"] > 0 and seen["below"] > 0
        with pytest.raises(engine.InputError, match="marked relevant. is not in this index"):
            sharded.search(vector=q, positives=[12345])
        with pytest.raises(engine.InputError, match="marked both"):
            sharded.search(vector=q, positives=pos[:1], negatives=pos[:1])
    finally:
        sharded.close()
    # one scene indexed into two shards by hand: its ids are no longer one tile each
    twice = ShardedIndex([shards[0], shards[0]])
    try:
        t0 = int(engine.Index(shards[0]).snapshot.tile_ids[0])
        with pytest.raises(engine.InputError, match=f"tile {t0} is in more than one shard"):
            twice.search(vector=q, positives=[t0])
    finally:
        twice.close()


def test_background_and_reference_samples_do_not_depend_on_the_sharding(split):
    """What makes the equality above exact, not statistical: the feedback background and the
    ranking reference are "the smallest keys of the tile ids", drawn per shard and merged."""
    from engine.retrieval.filters import Filters
    from engine.retrieval.index import background_sample
    from engine.retrieval.ranking import REFERENCE_ROWS, Reference, reference_sample, sample_order, smallest

    src, shards, rows = split
    index = engine.Index(src)
    single = index.snapshot
    parts = [engine.Index(p).snapshot for p in shards]
    ids = np.concatenate([s.tile_ids for s in parts])
    assert len(np.unique(ids)) == len(ids) == single.n_tiles     # one id namespace
    r0 = rows[150]["geom"].bounds
    for f in [Filters(), Filters.build(modality="sar"), Filters.build(bbox=(r0[0] - 1, r0[1] - 1, r0[2] + 1, r0[3] + 1))]:
        for seed in (0, 3):
            want_rows, want_keys = background_sample(single, f, 512, seed)
            got = [background_sample(s, f, 512, seed) for s in parts]
            keys = np.concatenate([g[1] for g in got])
            ids_got = np.concatenate([s.tile_ids[g[0]] for s, g in zip(parts, got)])[smallest(keys, 512)]
            assert ids_got.tolist() == single.tile_ids[want_rows].tolist()
            assert 0 < len(want_rows) <= 512
            for _ in range(2):   # the Index's per-snapshot first draw gives the same sample
                assert index.background_rows(single, f, 512, seed)[0].tolist() == want_rows.tolist()
    # another seed, another sample
    a, _ = background_sample(single, Filters(), 512, 0)
    b, _ = background_sample(single, Filters(), 512, 1)
    assert len(set(a.tolist()) & set(b.tolist())) < 256
    # the reference, on a pool larger than its sample: merged from parts = drawn whole
    rng = np.random.default_rng(1)
    n = 3 * REFERENCE_ROWS
    tid = rng.integers(0, 2**63 - 1, n, dtype=np.int64)
    vec = synthetic.clustered_vectors(rng, n, dim=16)
    code = rng.integers(0, 2, n)
    keys = sample_order(tid)
    whole = Reference(code, lambda r: vec[r], keys=keys)
    split_at = rng.integers(0, 3, n)
    merged = Reference.merged([
        {c: (cnt, keys[m][r], vec[m][r]) for c, (cnt, r) in reference_sample(code[m], keys[m]).items()}
        for m in (split_at == i for i in range(3))])
    assert whole.counts == merged.counts and whole.codes == merged.codes
    for i in range(len(whole.codes)):
        a = whole.matrix[whole.offsets[i]:whole.offsets[i + 1]]
        b = merged.matrix[merged.offsets[i]:merged.offsets[i + 1]]
        assert len(a) == REFERENCE_ROWS
        assert sorted(map(bytes, a)) == sorted(map(bytes, b))      # the same tiles
    q = vec[0]
    np.testing.assert_allclose(list(whole.stats(q).mean.values()), list(merged.stats(q).mean.values()), rtol=1e-5)


def test_evidence_ranking_in_sharded_search_equals_the_single_index(ray_cluster, small_index, encoder,
                                                                   tmp_path):
    """Ranking by evidence (evidence.py) across shards: each shard sends its modalities' top
    tiles with their vectors, the router scores them against the prompt bank as the unsplit
    index does (with marks too: the re-rank then starts from the evidence)."""
    shards = split_index(small_index, tmp_path / "sharded", 2)
    single = engine.open(small_index, encoder=encoder)
    sharded = ShardedIndex(shards, encoder=encoder)
    try:
        top = [int(t) for t in single.search("a river", k=30).tile_id]
        cases = [dict(text="a river", evidence=True),
                 dict(text="mountains", evidence=True, diversify=1),
                 dict(text="a forest", evidence=True, modality=["rgb", "sar"], min_relevance=60),
                 dict(text="a river", evidence=True, positives=top[:6], negatives=top[20:26])]
        for c in cases:
            want = single.search(k=10, **c)
            got = sharded.search(k=10, **c)
            _same(got, want, sorted(c))
            assert want.attrs["ranking"]["evidence"] is True
    finally:
        sharded.close()


def test_router_embeds_text_with_the_shards_encoder(ray_cluster, small_index, encoder, tmp_path):
    """Text queries across shards are embedded by the encoder the shards were built with (read
    from their manifests when none is given); another encoder is refused by name, never used
    to score silently in the wrong space."""
    from engine.encoder import load_encoder

    shards = split_index(small_index, tmp_path / "sharded", 2)
    want = engine.open(small_index, encoder=encoder).search("a river", k=8)
    own = ShardedIndex(shards)               # no encoder given: the shards' own is loaded
    try:
        got = own.search("a river", k=8)
        assert got["tile_id"].tolist() == want["tile_id"].tolist()
    finally:
        own.close()
    other = load_encoder("glb-vit-s8")
    assert other.identity != encoder.identity and other.dim == encoder.dim   # same width: no shape error
    wrong = ShardedIndex(shards, encoder=other)
    try:
        with pytest.raises(engine.InputError, match="built with encoder"):
            wrong.search("a river", k=8)
        # vector queries need no encoder and keep working
        v = engine.open(small_index).snapshot.vectors.take(np.arange(1))[0]
        assert len(wrong.search(vector=v, k=3)) == 3
    finally:
        wrong.close()
