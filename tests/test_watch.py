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
