"""Readers during writes, and cron: searches never fail or see half a commit while an indexer
adds scenes; two indexers started at once never both write; a killed indexer's lock is
recognised and its leftovers recovered; superseded files outlive the searchers that may read
them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import engine
from conftest import SCENES
from engine.check import check_index, leftovers
from engine.store.layout import Layout
from hostile import storekit
from hostile.tools import ROOT, RULES, committed_tiles, popen_glb, read_state, stop
from indexer.runner import IndexOptions, run_index

MIN_SEARCHES = int(os.environ.get("GLB_MIN_SEARCHES", "500"))
# what the indexer adds while the searches run: 14 scenes, ~470 tiles, ~8 commits
WRITER_SCENES = [SCENES / d for d in ("landsat5_tm", "landsat7_rgb", "landsat_timeseries", "rmnp",
                                      "sentinel1", "zion")]
REPORT = os.environ.get("GLB_RELIABILITY_REPORT")

SEARCHER = r'''
import json, os, sys, time, traceback
import numpy as np
import engine
index, ready, done, out = sys.argv[1:5]
rng = np.random.default_rng(0)
idx = engine.open(index)
texts = ["a river", "forest", "farmland", "a city", "mountains", "a lake", "desert", "snow",
         "flooded fields", "a road", "clouds", "coast"]
stats = {"queries": 0, "during_write": 0, "failed": 0, "inconsistent": 0, "errors": [],
         "generations": [], "kinds": {}}
last_ids, max_tiles = [], 0
def fail(kind, msg):
    stats[kind] += 1
    if len(stats["errors"]) < 20:
        stats["errors"].append(msg[:500])
q = 0
while True:
    writing = not os.path.exists(done)
    if not writing and stats["queries"] >= 20:
        break
    kind = ["text", "vector", "bbox", "tile", "filters", "region"][q % 6]
    q += 1
    try:
        info = idx.info()
        if info["tiles"] != info["vectors"]:
            fail("inconsistent", f"info: {info['tiles']} tiles, {info['vectors']} vectors")
        if info["tiles"] < max_tiles:
            fail("inconsistent", f"tiles went down {max_tiles} -> {info['tiles']}")
        max_tiles = max(max_tiles, info["tiles"])
        if not stats["generations"] or stats["generations"][-1] != info["generation"]:
            stats["generations"].append(info["generation"])
        x0, y0, x1, y1 = info["bbox"]
        if kind == "text":
            res = idx.search(texts[q % len(texts)], k=10)
        elif kind == "vector":
            v = rng.normal(size=384).astype(np.float32)
            res = idx.search(vector=v / np.linalg.norm(v), k=20)
        elif kind == "bbox":
            cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
            w = rng.uniform(0.01, 5)
            b = (max(-180, cx - w), max(-90, cy - w), min(180, cx + w), min(90, cy + w))
            res = idx.search(texts[q % len(texts)], bbox=b, k=15)
        elif kind == "tile" and last_ids:
            res = idx.search(tile_id=int(rng.choice(last_ids)), k=10)
        elif kind == "filters":
            res = idx.search(texts[q % len(texts)], modality=["rgb", "multispectral", "elevation"],
                             start="1980-01-01", end="2030-12-31", k=10)
        else:
            res = idx.search(texts[q % len(texts)], region=f"POLYGON(({x0} {y0}, {x1} {y0}, {x0} {y1}, {x0} {y0}))", k=10)
        stats["kinds"][kind] = stats["kinds"].get(kind, 0) + 1
        # every answer is consistent: each tile has its metadata, a scene of the index, a
        # thumbnail, and is still there when asked for by id (this run only adds scenes)
        if len(res):
            scenes = set(idx.scenes()["scene_id"])
            for _, r in res.iterrows():
                if r.geometry is None or r.geometry.is_empty or not r.scene or not r.modality:
                    fail("inconsistent", f"tile {r.tile_id} without metadata")
                if r.scene_id not in scenes:
                    fail("inconsistent", f"tile {r.tile_id} of scene {r.scene_id}, not an indexed scene")
            top = int(res.tile_id.iloc[0])
            if int(idx.tile(top)["tile_id"]) != top:
                fail("inconsistent", f"tile {top} looked up by id is another tile")
            if q % 3 == 0 and not idx.thumbnail(top).startswith(b"\xff\xd8\xff"):
                fail("inconsistent", f"tile {top} has no JPEG thumbnail")
            last_ids = [int(t) for t in res.tile_id]
        stats["queries"] += 1
        stats["during_write"] += writing
        if stats["queries"] == 1:
            open(ready, "w").close()
    except Exception as e:
        fail("failed", f"{kind}: {type(e).__name__}: {e} | {traceback.format_exc()[-600:]}")
        if stats["failed"] > 50:
            break
open(out, "w").write(json.dumps(stats))
'''


def test_searches_during_indexing_never_fail_nor_see_half_a_commit(tmp_path, encoder):
    index = tmp_path / "index"
    r = run_index([SCENES / "elevation"], index, encoder=encoder,
                  options=IndexOptions(progress=False), echo=lambda m: None)
    assert r.ok and r.tiles_added > 0
    script = tmp_path / "searcher.py"
    script.write_text(SEARCHER)
    ready, done, out = tmp_path / "ready", tmp_path / "writer-done", tmp_path / "searcher.json"
    searcher = subprocess.Popen([sys.executable, str(script), str(index), str(ready), str(done), str(out)],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "searcher.err", "w"),
                                start_new_session=True)
    writer = None
    try:
        t0 = time.monotonic()
        while not ready.exists():
            assert searcher.poll() is None, (tmp_path / "searcher.err").read_text()[-3000:]
            assert time.monotonic() - t0 < 300
            time.sleep(0.1)
        errfile = tmp_path / "writer.err"
        with open(errfile, "w") as err:
            t1 = time.monotonic()
            writer = popen_glb("index", *WRITER_SCENES, "--rules", RULES, "--index", index,
                               "--quiet", "--commit-every", 64, stderr=err)
            rc = writer.wait(timeout=1200)
            write_seconds = time.monotonic() - t1
        done.touch()
        searcher.wait(timeout=300)
    finally:
        if writer is not None:
            stop(writer)
        stop(searcher)
    assert rc == 0, errfile.read_text()[-3000:]
    stats = json.loads(out.read_text())
    summary = {"searches": stats["queries"], "during_write": stats["during_write"],
               "failed": stats["failed"], "inconsistent": stats["inconsistent"],
               "generations_seen": len(stats["generations"]), "by_kind": stats["kinds"],
               "write_seconds": round(write_seconds, 1), "errors": stats["errors"][:5]}
    if REPORT:
        _append_report("readers_during_writes", summary)
    assert stats["failed"] == 0 and stats["inconsistent"] == 0, summary
    assert stats["during_write"] >= MIN_SEARCHES, summary
    assert len(stats["generations"]) >= 3, summary  # it really searched across commits
    assert check_index(index)[0] == []


def _append_report(key, value):
    p = Path(REPORT)
    data = json.loads(p.read_text()) if p.exists() else {}
    data[key] = value
    p.write_text(json.dumps(data, indent=1, default=str))


# --- cron ------------------------------------------------------------------------------------

def test_two_runs_at_once_then_a_killed_one_is_recovered(tmp_path):
    """Cron: two runs started together: one works, the other exits at once (before loading a
    model or reading a file) naming the holder, exit 2. Then the worker is killed while it
    writes a segment: its lock is recognised as left by a dead run, and the next run says so,
    discards the unfinished commit and finishes the job."""
    index = tmp_path / "index"
    errs = [tmp_path / "a.err", tmp_path / "b.err"]
    args = ("index", SCENES / "naip", SCENES / "elevation", "--index", index, "--quiet",
            "--commit-every", 64)
    procs = [popen_glb(*args, stderr=open(e, "w")) for e in errs]
    try:
        t0 = time.monotonic()
        while all(p.poll() is None for p in procs) and time.monotonic() - t0 < 600:
            time.sleep(0.02)
        loser = next(i for i, p in enumerate(procs) if p.poll() is not None)
        loser_s = time.monotonic() - t0
        winner = 1 - loser
        w = procs[winner]
        # let the winner commit once, then kill it while it writes its next segment
        while w.poll() is None and committed_tiles(index) == 0 and time.monotonic() - t0 < 900:
            time.sleep(0.02)
        while w.poll() is None and time.monotonic() - t0 < 900 and \
                not any(p.name.startswith(".") for p in (index / "segments").iterdir()):
            time.sleep(0.002)
        assert w.poll() is None, "the winner finished before it could be killed"
        os.kill(w.pid, signal.SIGKILL)
        w.wait(timeout=60)
    finally:
        for p in procs:
            stop(p)
    assert procs[loser].returncode == 2, errs[loser].read_text()
    err = errs[loser].read_text()
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, lines
    assert "another indexer is writing this index" in lines[0] and f"pid {w.pid}" in lines[0]
    assert "UNTRAINED" not in err  # the encoder's load prints this: it gave up before
    lock = json.loads((index / "LOCK").read_text())
    assert lock["state"] == "held" and lock["pid"] == w.pid  # what the dead run left
    before = read_state(index)
    n_left = len(leftovers(Layout(index), before.generation))
    assert n_left >= 1
    assert check_index(index)[0] == []
    r = subprocess.run([sys.executable, "-m", "glb", *map(str, args)], cwd=ROOT, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    note = next(x for x in r.stderr.splitlines() if x.startswith("note:"))
    assert f"pid {w.pid}" in note and "did not finish" in note
    assert f"({n_left} files)" in note and f"from generation {before.generation}" in note
    after = read_state(index)
    assert leftovers(Layout(index), after.generation) == []
    assert check_index(index)[0] == []
    assert len(after.scenes) == 9  # 5 NAIP + 4 elevation scenes
    assert json.loads((index / "LOCK").read_text())["state"] == "released"
    if REPORT:
        _append_report("cron", {"loser_exit_s": round(loser_s, 1), "loser_message": lines[0],
                                "recovery_note": note, "leftovers_discarded": n_left})


def test_a_garbage_or_foreign_lock_file_does_not_block(tmp_path):
    """LOCK is only advisory text beside the flock: garbage, or a note naming a live process
    that does not hold the flock (a reused pid), must not stop a run."""
    from engine.store.lock import WriterLock

    idx = tmp_path / "index"
    storekit.build_base(idx)
    for content in (b"\x00\xff garbage {", json.dumps({"pid": 1, "host": os.uname().nodename,
                                                        "state": "held"}).encode(), b""):
        (idx / "LOCK").write_bytes(content)
        with WriterLock(idx) as lk:
            assert lk.recovered_from is None
        assert json.loads((idx / "LOCK").read_text())["state"] == "released"


def test_superseded_files_outlive_searchers_for_the_grace_period(tmp_path):
    """The grace period runs from when a file stopped being live. A writer starting right
    after a commit must keep the generation that was live until that commit, however old its
    files are (a searcher may be reading it), and may delete generations superseded long ago."""
    from engine.store.writer import ORPHAN_GRACE_S, StoreWriter

    idx = tmp_path / "index"
    storekit.build_base(idx)  # generations 1..3, written "an hour ago"
    old = time.time() - 6 * ORPHAN_GRACE_S
    for p in idx.rglob("*"):
        os.utime(p, (old, old))
    searcher = engine.Index(idx)
    v = read_state(idx).vectors
    q = next(iter(v.values()))
    storekit.run_scenario(idx, "add")  # generation 4, now
    with StoreWriter(idx, storekit.ENCODER):
        pass
    names = {p.name for p in (idx / "manifests").iterdir()}
    assert {"000000003.json", "000000003.scenes.parquet", "000000003.tombstones.parquet"} <= names
    assert "000000001.json" not in names and "000000002.scenes.parquet" not in names
    assert len(searcher.search(vector=q, k=5)) == 5  # the searcher moves on without a failure
    assert check_index(idx)[0] == []
