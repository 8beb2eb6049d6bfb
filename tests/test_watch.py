"""Saved searches and alerts: real indexes, real `glb` processes, real kills (SIGKILL at the
watch crash points of engine/store/faults.py)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, SCENES

NEW_SCENE = SCENES / "elevation" / "hag.tif"   # not in SMALL_SCENES: its tiles are the news


def glb(*args, env=None, timeout=300):
    e = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "glb", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=e)


def alerts(index, name):
    path = index / "watches" / name / "alerts.geojsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def new_tile_ids(index):
    import engine

    idx = engine.open(index)
    fp = idx.footprints()
    return set(int(t) for t in fp.loc[fp["scene"].str.contains("hag"), "tile_id"])


def test_watch_lifecycle_and_alerts_after_indexing(index_copy):
    r = glb("watch", "add", "terrain", "a digital elevation model", "--index", index_copy,
            "--min-score", "-1", "--k", "5")
    assert r.returncode == 0, r.stderr
    assert "saved search 'terrain'" in r.stdout
    r = glb("watch", "add", "radar", "a radar image", "--modality", "sar", "--min-score", "-1",
            "--index", index_copy)
    assert r.returncode == 0, r.stderr
    r = glb("watch", "add", "terrain", "anything", "--index", index_copy)
    assert r.returncode == 2 and "exists" in r.stderr
    r = glb("watch", "add", "../x", "anything", "--index", index_copy)
    assert r.returncode == 2 and "saved search name" in r.stderr
    listed = json.loads(glb("watch", "list", "--index", index_copy, "--json").stdout)
    assert [w["name"] for w in listed] == ["radar", "terrain"] and all(w["alerts"] == 0 for w in listed)

    # A reader polls the alert log while the indexer writes it: every read is a whole file.
    proc = subprocess.Popen([sys.executable, "-m", "glb", "index", str(NEW_SCENE), "--index",
                             str(index_copy), "--quiet"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    counts = []
    while proc.poll() is None:
        counts.append(len(alerts(index_copy, "terrain")))  # json.loads raises on a torn line
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert set(counts) <= {0, 5}
    assert "5 new alerts (radar: 0, terrain: 5)" in out, out
    log = alerts(index_copy, "terrain")
    assert len(log) == 5
    new = new_tile_ids(index_copy)
    scores = [f["properties"]["score"] for f in log]
    assert scores == sorted(scores, reverse=True)
    for f in log:
        p = f["properties"]
        assert p["tile_id"] in new and "hag" in p["scene"] and p["modality"] == "elevation"
        assert f["geometry"]["type"] == "Polygon" and p["time"].endswith("Z") and p["generation"] >= 2
    assert alerts(index_copy, "radar") == []   # new tiles are elevation: outside its filter

    shown = json.loads(glb("watch", "show", "terrain", "--index", index_copy, "--json").stdout)
    assert shown["new"] == 5 and len(shown["features"]) == 5 and shown["query"]["text"] == "a digital elevation model"
    listed = json.loads(glb("watch", "list", "--index", index_copy, "--json").stdout)
    assert {w["name"]: (w["alerts"], w["new"]) for w in listed} == {"radar": (0, 0), "terrain": (5, 0)}
    # Nothing new indexed: nothing new alerted.
    r = glb("index", NEW_SCENE, "--index", index_copy, "--quiet")
    assert r.returncode == 0 and "alerts" not in r.stdout
    assert len(alerts(index_copy, "terrain")) == 5
    r = glb("watch", "remove", "radar", "--index", index_copy)
    assert r.returncode == 0
    assert [w["name"] for w in json.loads(glb("watch", "list", "--index", index_copy, "--json").stdout)] == ["terrain"]
    r = glb("watch", "show", "radar", "--index", index_copy)
    assert r.returncode == 2 and "no saved search named 'radar'" in r.stderr


def test_default_threshold_is_todays_kth_score(small_index, tmp_path):
    import shutil

    import engine

    path = tmp_path / "i"
    shutil.copytree(small_index, path)
    idx = engine.open(path)
    doc = idx.watches.add("forest", "forest", k=3, modality="rgb")
    assert doc["min_score"] == pytest.approx(float(idx.search("forest", k=3, modality="rgb")["score"].min()))
    pos = [int(t) for t in idx.search("forest", k=2)["tile_id"]]
    doc = idx.watches.add("marked", positives=pos, k=4)
    assert doc["query"]["positives"] == pos and doc["feedback"]["weight"] == 1.0
    assert [w["name"] for w in idx.watches.list()] == ["forest", "marked"]


@pytest.mark.parametrize("point", ["publish.done", "watch.alerts_tmp", "watch.alerts", "watch.state_tmp"])
def test_a_killed_run_neither_loses_nor_duplicates_alerts(index_copy, point):
    r = glb("watch", "add", "all", "terrain", "--index", index_copy, "--min-score", "-1", "--k", "1000")
    assert r.returncode == 0, r.stderr
    r = glb("index", NEW_SCENE, "--index", index_copy, "--quiet", env={"GLB_CRASH_AT": point})
    assert r.returncode == -9, (r.returncode, r.stderr)
    partial = alerts(index_copy, "all")
    assert len(partial) in (0, len(new_tile_ids(index_copy)))  # never half a log
    # The next run (nothing new to index) catches up: each new tile alerted exactly once.
    r = glb("index", NEW_SCENE, "--index", index_copy, "--quiet")
    assert r.returncode == 0, r.stderr
    ids = [f["properties"]["tile_id"] for f in alerts(index_copy, "all")]
    assert len(ids) == len(set(ids)) and set(ids) == new_tile_ids(index_copy) and ids
    state = json.loads((index_copy / "watches" / "all" / "state.json").read_text())
    assert state["generation"] == json.loads(glb("info", "--index", index_copy, "--json").stdout)["generation"]
    r = glb("watch", "check", "--index", index_copy)
    assert r.returncode == 0 and len(alerts(index_copy, "all")) == len(ids)


def test_a_bad_saved_search_is_named_skipped_and_never_blocks_indexing(index_copy):
    for name in ("bad", "good", "wrong dim"):
        r = glb("watch", "add", name, "terrain", "--index", index_copy, "--min-score", "-1")
        assert r.returncode == 0, r.stderr
    (index_copy / "watches" / "bad" / "search.json").write_text("{not json")
    p = index_copy / "watches" / "wrong dim" / "search.json"
    doc = json.loads(p.read_text())
    doc["vector"] = doc["vector"][:7]
    p.write_text(json.dumps(doc))
    before = json.loads(glb("info", "--index", index_copy, "--json").stdout)
    r = glb("index", NEW_SCENE, "--index", index_copy, "--quiet")
    assert r.returncode == 1, r.stderr
    err = [line for line in r.stderr.splitlines() if "skipped" in line]
    assert len(err) == 2 and "'bad'" in err[0] and "unreadable" in err[0]
    assert "'wrong dim'" in err[1] and "384 finite numbers" in err[1]
    assert "good: 20" in r.stdout
    after = json.loads(glb("info", "--index", index_copy, "--json").stdout)
    assert after["scenes"] == before["scenes"] + 1 and after["tiles"] > before["tiles"]
    listed = {w["name"]: w for w in json.loads(glb("watch", "list", "--index", index_copy, "--json").stdout)}
    assert "error" in listed["bad"] and listed["good"]["alerts"] == 20


TERRAIN = "a digital elevation model"


def test_saved_ranking_options_are_kept_and_reapplied_to_new_tiles(index_copy):
    """A saved search ranks an alert run's new tiles as the analyst's search did: calibrated
    scores, the relevance floor and diversification are stored and re-applied; a search.json
    from before they existed keeps loading (the plain ranking)."""
    import engine

    idx = engine.open(index_copy)
    doc = idx.watches.add("cal", TERRAIN, k=5, calibrated=True)
    today = idx.search(TERRAIN, k=5, calibrated=True)
    assert doc["ranking"] == {"calibrated": True, "diversify": None, "min_relevance": None,
                              "evidence": False}
    assert doc["min_score"] == pytest.approx(float(today["score"].min()))   # calibrated units
    assert doc["min_score"] != pytest.approx(float(idx.search(TERRAIN, k=5)["score"].min()))
    idx.watches.add("cal", TERRAIN, k=5, calibrated=True, min_score=-1e9, replace=True)
    idx.watches.add("plain", TERRAIN, k=1000, min_score=-1)
    floors = (25, 50, 75, 90)   # where the new tiles fall depends on the encoder: several floors
    for f in floors:
        idx.watches.add(f"floor {f}", TERRAIN, k=1000, min_score=-1, min_relevance=f)
    idx.watches.add("one per scene", TERRAIN, k=1000, min_score=-1, diversify=1)
    idx.watches.add("old", TERRAIN, k=1000, min_score=-1, diversify=1, calibrated=True)
    p = index_copy / "watches" / "old" / "search.json"
    old = json.loads(p.read_text())
    del old["ranking"], old["query"]["undated"]      # as written before the options existed
    p.write_text(json.dumps(old))
    shown = idx.watches.show("old")
    assert "ranking" not in shown and shown["query"]["text"] == TERRAIN

    r = glb("index", NEW_SCENE, "--index", index_copy, "--quiet")
    assert r.returncode == 0, r.stderr
    new = new_tile_ids(index_copy)
    plain = alerts(index_copy, "plain")
    assert {f["properties"]["tile_id"] for f in plain} == new and len(new) > 1
    assert "relevance" not in plain[0]["properties"]           # plain alerts as before
    assert [f["properties"]["tile_id"] for f in alerts(index_copy, "old")] == \
        [f["properties"]["tile_id"] for f in plain]

    # Calibrated: the score is the calibrated one the search gives those tiles now.
    idx = engine.open(index_copy)
    n = int(idx.info()["tiles"])
    ranked = idx.search(TERRAIN, k=min(n, 1000), calibrated=True)
    by_id = {int(t): (float(s), float(rv)) for t, s, rv in
             zip(ranked["tile_id"], ranked["score"], ranked["relevance"])}
    assert new <= set(by_id)
    cal = alerts(index_copy, "cal")
    want = sorted(new, key=lambda t: (-by_id[t][0], t))[:5]
    assert [f["properties"]["tile_id"] for f in cal] == want
    for f in cal:
        pr = f["properties"]
        assert pr["score"] == pytest.approx(by_id[pr["tile_id"]][0], abs=1e-4)
        assert pr["relevance"] == pytest.approx(by_id[pr["tile_id"]][1], abs=0.01)  # shown to 2 places
        assert pr["score_raw"] != pytest.approx(pr["score"], abs=1e-3)

    # The relevance floor: exactly the new tiles at or above that percentile (and at least one
    # floor keeps some new tiles and drops others, so the floor is seen doing something).
    kept = []
    for f in floors:
        got = {a["properties"]["tile_id"] for a in alerts(index_copy, f"floor {f}")}
        assert got == {t for t in new if by_id[t][1] >= f - 0.005}, f
        kept.append(len(got))
    assert any(0 < n < len(new) for n in kept), kept
    # Diversified: one tile per scene (the new scene's best), however many matched.
    div = alerts(index_copy, "one per scene")
    assert [f["properties"]["tile_id"] for f in div] == [plain[0]["properties"]["tile_id"]]


def test_a_search_saved_in_the_evidence_order_alerts_by_the_evidence(index_copy):
    """The page's default order survives saving: the saved search keeps the prompt bank it was
    saved with, its default min_score is today's k-th evidence, and an alert run scores the new
    tiles with the evidence a search gives them. A damaged bank file is named and skipped."""
    import engine

    idx = engine.open(index_copy)
    doc = idx.watches.add("ev", TERRAIN, k=5, evidence=True)
    today = idx.search(TERRAIN, k=5, evidence=True)
    assert doc["ranking"]["evidence"] is True and doc["bank"]["scale"] == idx.bank().scale
    assert doc["bank"]["null"] == idx.bank().null
    assert doc["min_score"] == pytest.approx(float(today["score"].min()), abs=1e-5)   # evidence units
    assert doc["min_score"] != pytest.approx(float(idx.search(TERRAIN, k=5)["score"].min()), abs=1e-3)
    bank = index_copy / "watches" / "ev" / "bank.npy"
    import numpy as np
    np.testing.assert_array_equal(np.load(bank), idx.bank().vectors)
    idx.watches.add("ev", TERRAIN, k=1000, min_score=-1e9, evidence=True, replace=True)
    idx.watches.add("ev broken", TERRAIN, k=1000, min_score=-1e9, evidence=True)
    (index_copy / "watches" / "ev broken" / "bank.npy").write_bytes(b"not a bank")
    r = glb("watch", "add", "both", TERRAIN, "--index", index_copy, "--evidence", "--calibrated")
    assert r.returncode == 2 and "choose one" in r.stderr
    r = glb("watch", "add", "ev cli", TERRAIN, "--index", index_copy, "--evidence", "--k", "3")
    assert r.returncode == 0, r.stderr

    r = glb("index", NEW_SCENE, "--index", index_copy, "--quiet")
    assert r.returncode == 1 and "ev broken" in r.stderr and "bank.npy" in r.stderr, r.stderr
    new = new_tile_ids(index_copy)
    idx = engine.open(index_copy)
    n = int(idx.info()["tiles"])
    ranked = idx.search(TERRAIN, k=min(n, 1000), evidence=True)
    by_id = {int(t): float(s) for t, s in zip(ranked["tile_id"], ranked["score"])}
    assert new <= set(by_id)
    got = alerts(index_copy, "ev")
    assert [f["properties"]["tile_id"] for f in got] == sorted(new, key=lambda t: (-by_id[t], t))
    for f in got:
        assert f["properties"]["score"] == pytest.approx(by_id[f["properties"]["tile_id"]], abs=1e-4)
    cli = alerts(index_copy, "ev cli")   # today's 3rd best evidence: only new tiles above it
    floor = json.loads((index_copy / "watches" / "ev cli" / "search.json").read_text())["min_score"]
    assert {f["properties"]["tile_id"] for f in cli} == set(
        sorted((t for t in new if by_id[t] >= floor - 1e-5), key=lambda t: (-by_id[t], t))[:3])
    assert alerts(index_copy, "ev broken") == []


def test_watch_add_ranking_options_on_the_cli_and_bad_ones(index_copy):
    r = glb("watch", "add", "fair", TERRAIN, "--index", index_copy, "--calibrated", "--diversify", "2",
            "--min-relevance", "50", "--start", "2000-01-01", "--undated")
    assert r.returncode == 0, r.stderr
    doc = json.loads(glb("watch", "show", "fair", "--index", index_copy, "--json").stdout)
    assert doc["ranking"] == {"calibrated": True, "diversify": 2, "min_relevance": 50.0,
                              "evidence": False}
    assert doc["query"]["undated"] is True and doc["query"]["start"] == "2000-01-01"
    r = glb("watch", "add", "bad", TERRAIN, "--index", index_copy, "--diversify", "0")
    assert r.returncode == 2 and "diversify" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = glb("watch", "add", "bad", TERRAIN, "--index", index_copy, "--min-relevance", "120")
    assert r.returncode == 2 and "min_relevance" in r.stderr
    assert not (index_copy / "watches" / "bad").exists()
    # A hand-edited ranking that cannot run is named and skipped; the others still alert.
    p = index_copy / "watches" / "fair" / "search.json"
    d = json.loads(p.read_text())
    d["ranking"]["diversify"] = "many"
    p.write_text(json.dumps(d))
    r = glb("watch", "add", "ok", TERRAIN, "--index", index_copy, "--min-score", "-1")
    assert r.returncode == 0, r.stderr
    r = glb("index", NEW_SCENE, "--index", index_copy, "--quiet")
    assert r.returncode == 1
    err = [line for line in r.stderr.splitlines() if "skipped" in line]
    assert len(err) == 1 and "'fair'" in err[0] and "ranking is invalid" in err[0]
    assert len(alerts(index_copy, "ok")) == 20
