"""Relevance feedback: the engine API on a real index, the CLI, the marks export, and the
fallback that keeps feedback from making a search worse than its query."""

import json

import geopandas as gpd
import numpy as np
import pytest

from conftest import ROOT  # noqa: F401  (the repository root; tests run the real CLI from it)
from test_cli import glb


@pytest.fixture(scope="module")
def idx(small_index):
    import engine

    return engine.open(small_index)


def _ids(res):
    return [int(t) for t in res["tile_id"]]


def test_search_with_marks_changes_the_ranking_within_filters(idx):
    base = idx.search("mountains", k=30)
    assert "feedback" not in base.attrs["plan"]
    sar = idx.search("mountains", k=5, modality="sar")
    pos = _ids(sar)[:2]               # a SAR tile marked relevant to a text query: cross-modal
    neg = _ids(base)[:3]
    neg = [t for t in neg if t not in pos]
    res = idx.search("mountains", positives=pos, negatives=neg, k=30)
    fb = res.attrs["plan"]["feedback"]
    assert fb["method"] == "probe" and 0.0 <= fb["weight"] <= 1.0 and fb["reason"]
    assert _ids(res) != _ids(base)
    # inside the query's filters: every result is SAR, and the marks came from the index
    res = idx.search("mountains", positives=pos, negatives=neg, k=10, modality="sar")
    assert set(res["modality"]) == {"sar"}
    # marks only: more like the marked tiles; their own modality ranks first
    res = idx.search(positives=pos, k=5)
    assert res.attrs["plan"]["feedback"]["weight"] == 1.0
    assert set(res["modality"]) == {"sar"}
    # exclude: the marked tiles are not shown again
    res = idx.search("mountains", positives=pos, negatives=neg, k=20, exclude=pos + neg)
    assert not set(_ids(res)) & set(pos + neg) and len(res) == 20


def test_marks_are_checked(idx):
    import engine

    t = _ids(idx.search("river", k=2))
    with pytest.raises(engine.InputError, match="marked both"):
        idx.search("river", positives=[t[0]], negatives=[t[0]])
    with pytest.raises(engine.InputError, match="tile 12345 .marked relevant. is not in this index"):
        idx.search("river", positives=[12345])
    with pytest.raises(engine.InputError, match="exactly one query"):
        idx.search(negatives=[t[0]])
    with pytest.raises(engine.InputError, match="list of tile ids"):
        idx.search("river", positives=t[0])


def test_feedback_falls_back_to_the_query_when_marks_do_not_separate():
    """Marks drawn from one distribution carry no signal: the query alone. Marks that separate
    along a direction the query lacks: the blend leans on them."""
    from engine.retrieval.feedback import FeedbackConfig, refine

    rng = np.random.default_rng(1)
    d = 64
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
    q = unit(rng.standard_normal(d))
    bg = unit(rng.standard_normal((300, d)))
    noise = unit(q + 0.3 * rng.standard_normal((40, d)))
    r = refine(q, noise[:20], noise[20:], bg)
    assert r.weight == 0.0 and np.allclose(r.vector, q, atol=1e-6), r.describe()
    assert "query alone" in r.reason
    # on these marks a blend scores a (chance) higher CV AUC than the query: the paired
    # bootstrap is what keeps the query
    assert max(r.cv_auc.values()) > r.cv_auc["0.0"]
    assert refine(q, noise[:20], noise[20:], bg, FeedbackConfig(confidence=0)).weight > 0
    signal = unit(rng.standard_normal(d))
    pos = unit(q + 0.6 * signal + 0.3 * rng.standard_normal((12, d)))
    neg = unit(q - 0.6 * signal + 0.3 * rng.standard_normal((12, d)))
    r = refine(q, pos, neg, bg)
    assert r.weight > 0 and float(r.vector @ signal) > 0.3, r.describe()
    held_pos = unit(q + 0.6 * signal + 0.3 * rng.standard_normal((50, d)))
    held_neg = unit(q - 0.6 * signal + 0.3 * rng.standard_normal((50, d)))
    assert (held_pos @ r.vector).mean() - (held_neg @ r.vector).mean() > \
        (held_pos @ q).mean() - (held_neg @ q).mean()
    # the textbook Rocchio has no fallback: it moves even on noise (what the issue warned of)
    r = refine(q, noise[:20], noise[20:], bg, FeedbackConfig(method="rocchio-classic"))
    assert not np.allclose(r.vector, q, atol=1e-3)


def test_rerank_follows_a_class_no_single_vector_separates():
    """Relevant tiles in two clusters on either side of the query, not-relevant ones in two
    others: no linear direction separates them (the refined vector stays near the query), the
    diffusion over the candidates and the marks does."""
    from engine.retrieval.feedback import FeedbackConfig, diffuse, refine

    rng = np.random.default_rng(3)
    d = 64
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
    q = unit(rng.standard_normal(d))
    u, w = np.linalg.qr(np.stack([q, rng.standard_normal(d), rng.standard_normal(d)], 1))[0][:, 1:].T
    centres = [q + 0.5 * u, q - 0.5 * u, q + 0.5 * w, q - 0.5 * w]      # relevant: the first two

    def draw(c, n):
        return unit(c + 0.04 * rng.standard_normal((n, d))).astype(np.float32)

    marks = [draw(c, 5) for c in centres]
    cand = np.concatenate([draw(c, 40) for c in centres])
    rel = np.repeat([True, True, False, False], 40)
    bg = unit(rng.standard_normal((300, d)))
    r = refine(q, np.concatenate(marks[:2]), np.concatenate(marks[2:]), bg)
    assert r.reranks and r.positives.shape == (10, d) and r.negatives.shape == (10, d)
    by_vector = np.argsort(-(cand @ r.vector))[:40]
    by_graph = np.argsort(-diffuse(r, cand, cand @ r.vector))[:40]
    assert r.weight == 0.0   # the guard keeps the query: no direction beats it on these marks
    assert rel[by_vector].mean() < 0.7 and rel[by_graph].mean() >= 0.9, \
        (rel[by_vector].mean(), rel[by_graph].mean())
    # off: no re-ranking
    assert not refine(q, marks[0], marks[2], bg, FeedbackConfig(rerank_candidates=0)).reranks
    import engine

    with pytest.raises(engine.InputError, match="rerank_mix"):
        FeedbackConfig(rerank_mix=1.0).check()


def test_search_reranks_the_candidates_within_filters_and_exclusions(idx):
    """Index.search with marks: the refined vector's top candidates (filters and exclusions
    applied) re-ranked by diffusion, in the plain and the calibrated + diversified ranking;
    `score` is the re-ranked score, `score_raw` the cosine with the refined vector."""
    from engine.retrieval.feedback import FeedbackConfig

    base = _ids(idx.search("mountains", k=20))
    pos, neg = base[:3], base[3:8]
    res = idx.search("mountains", positives=pos, negatives=neg, exclude=pos + neg, k=15)
    rr = res.attrs["plan"]["feedback"]["rerank"]
    assert rr["candidates"] >= 15 and not set(_ids(res)) & set(pos + neg) and len(res) == 15
    assert list(res["score"]) == sorted(res["score"], reverse=True)
    v, _ = idx.query_vector("mountains", positives=pos, negatives=neg)
    snap = idx.snapshot
    rows = [snap.row_of(t) for t in _ids(res)]
    np.testing.assert_allclose(res["score_raw"], snap.vectors[np.array(rows)] @ v, atol=1e-5)
    off = idx.search("mountains", positives=pos, negatives=neg, exclude=pos + neg, k=15,
                     feedback=FeedbackConfig(rerank_candidates=0))
    assert "rerank" not in off.attrs["plan"]["feedback"]
    np.testing.assert_allclose(off["score"], off["score_raw"])
    # every re-ranked result is one of the vector's top candidates, none outside them
    top = _ids(idx.search(vector=v, k=FeedbackConfig().rerank_candidates + 8, exclude=pos + neg))
    assert set(_ids(res)) <= set(top)
    # inside filters, with the ranking options: SAR only, <= 2 per scene, marks excluded
    res = idx.search("mountains", positives=pos, negatives=neg, exclude=pos + neg, k=10,
                     modality="sar", calibrated=True, diversify=2)
    assert "rerank" in res.attrs["plan"]["feedback"] and set(res["modality"]) == {"sar"}
    assert not set(_ids(res)) & set(pos + neg)
    assert max(list(res["scene"]).count(s) for s in set(res["scene"])) <= 2


def test_marks_export_geojson_and_geoparquet(idx, tmp_path):
    t = _ids(idx.search("forest", k=4))
    df = idx.marks(t[:2], t[2:], query="forest")
    assert list(df["label"]) == ["relevant", "relevant", "not relevant", "not relevant"]
    assert set(df["query"]) == {"forest"} and df.crs.to_epsg() == 4326
    df.to_parquet(tmp_path / "m.parquet")
    back = gpd.read_parquet(tmp_path / "m.parquet")
    assert list(back["tile_id"]) == t and back.geometry.equals(df.geometry)


def test_cli_like_unlike_and_export(small_index, tmp_path):
    r = glb("search", "forest", "--index", small_index, "--k", 6, "--json")
    assert r.returncode == 0, r.stderr
    ids = [f["properties"]["tile_id"] for f in json.loads(r.stdout)["features"]]
    out = tmp_path / "marks.geojson"
    r = glb("search", "forest", "--index", small_index, "--k", 10, "--json", "--like", ids[0],
            "--like", ids[1], "--unlike", ids[2], "--exclude-marked", "--export-marks", out)
    assert r.returncode == 0, r.stderr
    fc = json.loads(r.stdout)
    got = [f["properties"]["tile_id"] for f in fc["features"]]
    assert len(got) == 10 and not set(got) & set(ids[:3])
    assert fc["query"]["plan"]["feedback"]["method"] == "probe"
    marks = json.loads(out.read_text())
    assert [f["properties"]["label"] for f in marks["features"]] == ["relevant", "relevant", "not relevant"]
    assert all(f["geometry"]["type"] == "Polygon" and f["properties"]["query"] == "forest"
               for f in marks["features"])
    pq = tmp_path / "marks.parquet"
    r = glb("search", "--index", small_index, "--like", ids[0], "--export-marks", pq, "--k", 3)
    assert r.returncode == 0, r.stderr
    assert len(gpd.read_parquet(pq)) == 1
    r = glb("search", "forest", "--index", small_index, "--like", 99)
    assert r.returncode == 2 and "tile 99 (marked relevant) is not in this index" in r.stderr
    r = glb("search", "forest", "--index", small_index, "--like", ids[0], "--export-marks", tmp_path / "m.txt")
    assert r.returncode == 2 and ".geojson or .parquet" in r.stderr
