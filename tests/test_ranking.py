"""Ranking across modalities and scenes (engine/retrieval/ranking.py through Index.search) and the
filters' report, checked against brute force over the small index's own vectors. Queries are
random vectors and tile ids, so nothing here depends on one encoder's particular ranking."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import shapely

import engine
from engine.modalities import MODALITIES
from engine.retrieval.ranking import REFERENCE_ROWS, Ranking, Reference, same_place


@pytest.fixture(scope="module")
def world(small_index):
    idx = engine.open(small_index)
    snap = idx.snapshot
    vec = snap.vectors.take(np.arange(snap.n_tiles))
    fp = idx.footprints().set_index("tile_id")
    assert snap.n_tiles < REFERENCE_ROWS  # every tile is its modality's reference: exact checks
    return idx, snap, vec, fp


def brute_calibrated(snap, vec, q):
    """Calibrated score of every tile from first principles: (s - mean_m) / std_m."""
    raw = vec @ q
    codes = snap.modality_code
    z = np.zeros(len(raw))
    for c in np.unique(codes):
        m = codes == c
        z[m] = (raw[m] - raw[m].mean()) / raw[m].std()
    return raw, z


def queries(dim, n=4, seed=0):
    rng = np.random.default_rng(seed)
    out = rng.standard_normal((n, dim)).astype(np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_calibrated_top_k_is_brute_force_and_raw_scores_stay(world):
    idx, snap, vec, fp = world
    assert len(set(snap.modality_code.tolist())) >= 3
    for q in queries(snap.dim):
        raw, z = brute_calibrated(snap, vec, q)
        got = idx.search(vector=q, k=15, calibrated=True)
        order = np.lexsort((snap.tile_ids, -z))[:15]
        assert got["tile_id"].tolist() == snap.tile_ids[order].tolist()
        np.testing.assert_allclose(got["score"], z[order], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(got["score_raw"], raw[order], rtol=1e-5, atol=1e-5)
        # relevance: the percentile among the tile's own modality
        for r in got.itertuples():
            m = snap.modality_code == MODALITIES.index(r.modality)
            s = raw[m]
            pct = 100 * ((s < r.score_raw).sum() + (s <= r.score_raw).sum()) / (2 * len(s))
            assert abs(r.relevance - pct) < 0.6, (r.relevance, pct)
        # the plain ranking is the cosine order, and reports relevance too
        plain = idx.search(vector=q, k=15)
        assert plain["tile_id"].tolist() == snap.tile_ids[np.lexsort((snap.tile_ids, -raw))[:15]].tolist()
        assert (plain["score"] == plain["score_raw"]).all() and plain["relevance"].notna().all()


def test_calibration_evens_out_a_modality_that_sits_closer_to_the_query(world):
    """A query nearer to one modality's mean (as text often is) fills the raw top-k with that
    modality; calibrated, each modality gets places by how far its tiles stand out."""
    idx, snap, vec, fp = world
    codes = snap.modality_code
    big = np.bincount(codes).argmax()
    q = vec[codes == big].mean(0) + 0.3 * queries(snap.dim, 1, seed=5)[0]
    q = (q / np.linalg.norm(q)).astype(np.float32)
    raw = idx.search(vector=q, k=20)
    cal = idx.search(vector=q, k=20, calibrated=True)
    assert (raw["modality"] == MODALITIES[big]).mean() == 1.0
    assert cal["modality"].nunique() > 1
    # within one modality calibration never reorders
    for m, g in cal.groupby("modality"):
        assert g["score_raw"].is_monotonic_decreasing


def test_calibrated_with_filters_and_tile_query(world):
    idx, snap, vec, fp = world
    tid = int(snap.tile_ids[3])
    got = idx.search(tile_id=tid, k=10, calibrated=True, modality=["sar", "elevation"])
    assert tid not in set(got["tile_id"]) and set(got["modality"]) <= {"sar", "elevation"}
    q = vec[3]
    raw, z = brute_calibrated(snap, vec, q)
    allowed = np.isin(codes := snap.modality_code, [MODALITIES.index("sar"), MODALITIES.index("elevation")])
    allowed &= snap.tile_ids != tid
    order = [i for i in np.lexsort((snap.tile_ids, -z)) if allowed[i]][:10]
    assert got["tile_id"].tolist() == snap.tile_ids[order].tolist()
    assert codes is snap.modality_code


def test_diversify_caps_scenes_and_places(world):
    idx, snap, vec, fp = world
    for q in queries(snap.dim, 3, seed=1):
        for calibrated in (False, True):
            got = idx.search(vector=q, k=12, diversify=2, calibrated=calibrated)
            assert got["scene_id"].value_counts().max() <= 2
            boxes = np.array([g.bounds for g in got.geometry])
            for i in range(len(boxes)):  # no two results on one place
                assert not same_place(boxes[i], np.delete(boxes, i, 0)).any()
            # greedy over the undiversified order: the first result is the best, and the
            # skipped count is what lies above the last result but was left out
            full = idx.search(vector=q, k=200, calibrated=calibrated)
            assert got["tile_id"].iloc[0] == full["tile_id"].iloc[0]
            last = full["tile_id"].tolist().index(got["tile_id"].iloc[-1])
            assert got.attrs["ranking"]["hidden_by_diversify"] == last + 1 - len(got)
            assert got["tile_id"].tolist() == [t for t in full["tile_id"].tolist()[:last + 1]
                                               if t in set(got["tile_id"])]


def test_relevance_floor(world):
    idx, snap, vec, fp = world
    q = queries(snap.dim, 1, seed=2)[0]
    full = idx.search(vector=q, k=200, calibrated=True)
    got = idx.search(vector=q, k=200, calibrated=True, min_relevance=90)
    assert len(got) == int((full["relevance"] >= 90).sum()) and len(got) < len(full)
    assert (got["relevance"] >= 90).all()
    with pytest.raises(engine.InputError, match="percentile"):
        idx.search(vector=q, min_relevance=101)
    with pytest.raises(engine.InputError, match="diversify"):
        idx.search(vector=q, diversify=0)


def test_undated_tiles_and_filter_counts(world):
    idx, snap, vec, fp = world
    q = queries(snap.dim, 1, seed=3)[0]
    undated = int((fp["acquired"].isna()).sum())
    assert 0 < undated < len(fp)
    lo, hi = fp["acquired"].min().date(), fp["acquired"].max().date()
    n = len(fp)
    excl = idx.search(vector=q, k=1000, start=lo, end=hi)
    incl = idx.search(vector=q, k=1000, start=lo, end=hi, undated=True)
    assert len(excl) == n - undated and len(incl) == n
    assert incl["acquired"].isna().sum() == undated

    # the report: what each filter removed, in order, against brute force
    x0, y0, x1, y1 = fp.total_bounds
    box = (x0, y0, (x0 + x1) / 2, y1)
    mods = ["sar", "elevation", "multispectral"]
    rep = idx.filter_counts(bbox=box, modality=mods, start=dt.date(2000, 1, 1), end=hi, undated=True)
    assert [r["filter"] for r in rep] == ["region", "modality", "dates"]
    inside = fp.geometry.intersects(shapely.box(*box))
    mod = fp["modality"].isin(mods)
    acq = fp["acquired"]
    dated = (acq >= np.datetime64("2000-01-01")) & (acq <= np.datetime64(hi))
    assert rep[0]["removed"] == int((~inside).sum()) and rep[0]["left"] == int(inside.sum())
    assert rep[1]["left"] == int((inside & mod).sum())
    keep = inside & mod & (dated | acq.isna())
    assert rep[2]["left"] == int(keep.sum())
    assert rep[2]["undated_kept"] == int((inside & mod & acq.isna()).sum())
    assert idx.filter_counts() == []


def test_reference_from_vectors_matches_definition():
    rng = np.random.default_rng(0)
    v = rng.standard_normal((300, 8)).astype(np.float32)
    codes = np.repeat([0, 3, 5], [200, 90, 10]).astype(np.uint8)  # 10 < MIN_REFERENCE: pooled
    q = rng.standard_normal(8).astype(np.float32)
    st = Reference.from_vectors(v, codes).stats(q)
    raw = v @ q
    z = st.calibrate(raw, codes)
    for c, pool in ((0, raw[codes == 0]), (3, raw[codes == 3]), (5, raw)):
        np.testing.assert_allclose(z[codes == c], (raw[codes == c] - pool.mean()) / pool.std(), rtol=1e-4)
    assert Ranking().plain and not Ranking.build(calibrated=True).plain


def test_revisits_of_one_place_are_one_place():
    a = np.array([-99.18559, 47.03371, -99.18137, 47.03660])  # NAIP 2009 and 2012, one window
    b = np.array([[-99.18559, 47.03369, -99.18137, 47.03658], [-99.18137, 47.03371, -99.17715, 47.03660]])
    assert same_place(a, b).tolist() == [True, False]  # the same window; its neighbour


def test_bank_evidence_orders_as_the_querys_probability_among_the_bank():
    """evidence.Bank: scale * cos(q, x) - logsumexp(scale * cos(b, x), scale * null) must order
    tiles exactly as p(q | x) among the bank, the null entry and the query does, and be finite for
    scores far apart."""
    from engine.retrieval.evidence import BANK_NULL, BANK_SCALE, Bank

    rng = np.random.default_rng(3)
    unit = lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True)
    x, bank, q = unit(rng.normal(size=(300, 16))), unit(rng.normal(size=(40, 16))), unit(rng.normal(size=16))
    raw = x @ q
    ev = Bank(bank.astype(np.float32)).evidence(raw, x)
    logits = np.concatenate([raw[:, None], x @ bank.T, np.full((len(x), 1), BANK_NULL)], 1) * BANK_SCALE
    logits -= logits.max(1, keepdims=True)
    p = np.exp(logits[:, 0]) / np.exp(logits).sum(1)
    assert np.all(np.isfinite(ev))
    assert np.array_equal(np.argsort(-ev, kind="stable"), np.argsort(-p, kind="stable"))
    # at equal cosine with the query, a tile that a bank prompt explains ranks below one it does not
    b0 = unit(bank[0] - (bank[0] @ q) * q)            # a prompt orthogonal to the query
    r = rng.normal(size=16)
    u = unit(r - (r @ q) * q - (r @ b0) * b0)         # orthogonal to both
    a, b = unit(q + 0.5 * u), unit(q + 0.5 * b0)
    two = np.stack([a, b])
    assert np.isclose(a @ q, b @ q)
    ev2 = Bank(b0[None, :].astype(np.float32)).evidence(two @ q, two)
    assert ev2[0] > ev2[1]
    # a tile no prompt describes is not rewarded for it: "far" matches the query weakly (cos 0.1)
    # and the bank's prompt not at all (-0.5); "near" matches the query (0.3) and the prompt (0.3).
    # Without the null entry far's small denominator puts it first; with it, near ranks first.
    far = 0.1 * q - 0.5 * b0 + np.sqrt(1 - 0.26) * u
    near = 0.3 * q + 0.3 * b0 + np.sqrt(1 - 0.18) * u
    pair = np.stack([far, near])
    one = b0[None, :].astype(np.float32)
    without = Bank(one, null=None).evidence(pair @ q, pair)
    with_null = Bank(one).evidence(pair @ q, pair)
    assert without[0] > without[1] and with_null[1] > with_null[0]


def brute_evidence(enc, vec, q):
    """The evidence of every tile from first principles: 30 cos(q, x) - logsumexp over the
    prompt bank, embedded here by the index's encoder, and the null entry."""
    from scipy.special import logsumexp

    from engine.retrieval.evidence import BANK_NULL, BANK_SCALE, PROMPT_BANK

    bank = enc.encode_text(list(PROMPT_BANK))
    raw = vec @ q
    z = np.concatenate([vec @ bank.T, np.full((len(vec), 1), BANK_NULL)], 1).astype(np.float64)
    return raw, BANK_SCALE * raw.astype(np.float64) - logsumexp(BANK_SCALE * z, axis=1)


def test_evidence_orders_each_modalitys_top_tiles_by_the_bank_score(world, encoder):
    idx, snap, vec, fp = world
    codes = snap.modality_code
    texts = ["a river", "mountains", "a radar image of a flooded field", "a forest"]
    for text in texts:
        q = encoder.encode_text([text])[0]
        raw, ev = brute_evidence(encoder, vec, q)
        k = 12
        got = idx.search(text, k=k, evidence=True)
        # the candidates are each modality's cosine top k; among them, the evidence order
        cand = np.concatenate([np.flatnonzero(codes == c)[np.lexsort((snap.tile_ids[codes == c],
                                                                       -raw[codes == c]))[:k]]
                               for c in np.unique(codes)])
        order = cand[np.lexsort((snap.tile_ids[cand], -ev[cand]))][:k]
        assert got["tile_id"].tolist() == snap.tile_ids[order].tolist(), text
        np.testing.assert_allclose(got["score"], ev[order], rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(got["score_raw"], raw[order], rtol=1e-5, atol=1e-5)
        assert got.attrs["ranking"]["evidence"] is True and got["relevance"].notna().all()
    # with filters, a diversification and a floor the list keeps to them
    got = idx.search("a river", k=8, evidence=True, modality=["sar", "elevation"], diversify=2,
                     min_relevance=50)
    assert set(got["modality"]) <= {"sar", "elevation"} and (got["relevance"] >= 50).all()
    assert got.groupby("scene").size().max() <= 2


def test_evidence_and_calibrated_are_one_choice(world):
    idx = world[0]
    with pytest.raises(engine.InputError, match="choose one"):
        idx.search("a river", k=5, evidence=True, calibrated=True)
