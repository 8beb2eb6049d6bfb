"""Crash safety: a writer killed at any instant loses nothing that was committed, publishes
nothing half-written, and a re-run finishes the job exactly as an uninterrupted run would.

Two harnesses:
- every step of a commit, for every kind of commit (add, replace, remove, compact), killed by
  SIGKILL at that step (GLB_CRASH_AT, engine/store/faults.py) in a small child process;
- `glb index ../shared/data/scenes` killed again and again while it works: SIGKILL at random
  times, at file-system events seen from outside (a segment being written, its vectors, a new
  manifest, CURRENT moving) and at named commit steps, plus SIGINT and SIGTERM; after every
  stop the index is checked and searched, and at the end it must equal an uninterrupted build.

GLB_KILL_POINTS sets the number of stops (default 4, for CI; docs/RELIABILITY.md records a run
with 24), GLB_KILL_SEED the random choices, GLB_RELIABILITY_REPORT a JSON file for the results.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import engine
from conftest import SCENES
from engine.check import check_index, leftovers
from engine.store.faults import POINTS
from engine.store.layout import Layout
from engine.store.lock import WriterLock
from hostile import storekit
from hostile.tools import ROOT, RULES, committed_tiles, diff_states, popen_glb, read_state, stop

KILL_POINTS = int(os.environ.get("GLB_KILL_POINTS", "4"))
SEED = int(os.environ.get("GLB_KILL_SEED", "20240606"))
REPORT = os.environ.get("GLB_RELIABILITY_REPORT")
COMMIT_EVERY = 64
RUN_TIMEOUT = 900


# --- 1. every step of every kind of commit ---------------------------------------------------

@pytest.fixture(scope="module")
def store_base(tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "base"
    storekit.build_base(path)
    return path


def _expected_after(base: Path, scenario: str, tmp: Path):
    dst = tmp / f"after-{scenario}"
    shutil.copytree(base, dst)
    storekit.run_scenario(dst, scenario)
    return read_state(dst)


def test_every_commit_step_is_atomic(store_base, tmp_path):
    """48 cases: 4 kinds of commit x 12 crash points. Killed before CURRENT moves, the index
    is exactly the previous generation; after, exactly the new one; never anything between.
    The next writer says it recovered, removes the leftovers and redoes the commit."""
    before = read_state(store_base)
    results = []
    for scenario in storekit.SCENARIOS:
        after = _expected_after(store_base, scenario, tmp_path)
        assert after.generation == before.generation + 1, scenario
        for point in POINTS:
            idx = tmp_path / f"{scenario}-{point}"
            shutil.copytree(store_base, idx)
            env = dict(os.environ, GLB_CRASH_AT=point)
            r = subprocess.run([sys.executable, str(Path(storekit.__file__)), str(ROOT), str(idx), scenario],
                               env=env, capture_output=True, text=True, timeout=120)
            killed = r.returncode == -signal.SIGKILL
            assert killed or r.returncode == 0, (scenario, point, r.stderr[-2000:])
            # a step the commit never reaches (a removal writes no segment) lets it finish
            want = after if (not killed or point == "publish.done") else before
            got = read_state(idx)
            assert diff_states(got, want) == [], (scenario, point, diff_states(got, want))
            assert got.generation == want.generation, (scenario, point)
            problems, _ = check_index(idx, search=(point == "publish.done"))
            assert problems == [], (scenario, point, problems)
            left = leftovers(Layout(idx), got.generation)
            # the next writer notices the dead one, cleans up, and the commit can be redone
            from engine.store.writer import StoreWriter

            with StoreWriter(idx, storekit.ENCODER) as w:
                assert (w.lock.recovered_from is not None) == killed, (scenario, point)
                assert len(w.removed_orphans) >= len(left)
            assert leftovers(Layout(idx), got.generation) == []
            if want is before:
                storekit.run_scenario(idx, scenario)
            redone = read_state(idx)
            assert diff_states(redone, after) == [] and redone.generation == after.generation, (scenario, point)
            assert check_index(idx, search=False)[0] == []
            results.append((scenario, point, "killed" if killed else "not reached", len(left)))
    assert sum(1 for r in results if r[2] == "killed") >= 40
    if REPORT:
        _append_report("commit_steps", [dict(zip(("scenario", "point", "outcome", "leftovers"), r))
                                        for r in results])


# --- 2. glb index, killed anywhere -----------------------------------------------------------

@pytest.fixture(scope="session")
def reference(tmp_path_factory, encoder):
    """The sample scenes indexed without interruption (the state every crash run must reach)."""
    from indexer.runner import IndexOptions, run_index

    path = tmp_path_factory.mktemp("reference") / "index"
    t0 = time.monotonic()
    report = run_index([SCENES], path, rules_file=RULES, encoder=encoder,
                       options=IndexOptions(progress=False, commit_every=COMMIT_EVERY),
                       echo=lambda m: None)
    assert report.ok, report.failed
    return path, read_state(path), time.monotonic() - t0


CRASH_ORDER = ["segment.vectors", "publish.manifest", "publish.begin", "segment.renamed",
               "publish.current_tmp", "segment.tiles", "lock.acquired", "segment.synced",
               "segment.tmp", "segment.thumbs", "publish.manifest_tmp", "publish.done"]
PROGRESS_ORDER = ["time", "fs:vectors", "sigint", "fs:manifest", "time", "sigterm", "fs:seg_tmp",
                  "time", "fs:current", "time", "fs:vectors", "time"]
# what the issue calls the phases of a run, for the report
PHASE_OF_POINT = {"lock.acquired": "start (lock taken)", "segment.tmp": "tile writing",
                  "segment.tiles": "tile writing", "segment.thumbs": "tile writing",
                  "segment.vectors": "vector-index save", "segment.synced": "vector-index save",
                  "segment.renamed": "vector-index save", "publish.begin": "metadata commit",
                  "publish.manifest_tmp": "metadata commit", "publish.manifest": "metadata commit",
                  "publish.current_tmp": "metadata commit", "publish.done": "metadata commit (done)"}


def plan(n: int) -> list[tuple[str, float | None]]:
    """Stops alternate: one that lets the job progress to a target fraction of its tiles and
    stops it there (time / file event / signal), then one at a named commit step of the next
    run's first commit. Targets are spread evenly over the job."""
    n_crash = n // 2
    n_prog = n - n_crash
    prog = [(PROGRESS_ORDER[i % len(PROGRESS_ORDER)], 0.9 * (i + 1) / (n_prog + 1)) for i in range(n_prog)]
    crash = [(f"crash:{CRASH_ORDER[i % len(CRASH_ORDER)]}", None) for i in range(n_crash)]
    out = []
    for i in range(n_prog):
        out.append(prog[i])
        if i < n_crash:
            out.append(crash[i])
    return out


def _fs_event(index: Path, event: str, current0: str) -> bool:
    seg, man = index / "segments", index / "manifests"
    try:
        if event == "seg_tmp":
            return any(p.name.startswith(".") for p in seg.iterdir())
        if event == "vectors":
            return any((p / "vectors.npy").exists() for p in seg.iterdir() if p.name.startswith("."))
        if event == "manifest":
            gen = int(current0[:9]) if current0 else 0
            return any(p.suffix == ".json" and p.name[:9].isdigit() and int(p.name[:9]) > gen
                       for p in man.iterdir())
        if event == "current":
            return (index / "CURRENT").read_text().strip() != current0
    except (FileNotFoundError, ValueError):
        return False
    raise ValueError(event)


def _current(index: Path) -> str:
    try:
        return (index / "CURRENT").read_text().strip()
    except FileNotFoundError:
        return ""


def _phase_from_leftovers(index: Path) -> str:
    state_gen = int(_current(index)[:9] or 0)
    names = [Path(p) for p in leftovers(Layout(index), state_gen)]
    if any(p.parent.name == "segments" and p.name.startswith(".") for p in names):
        return "tile writing / vector-index save (segment folder unfinished)"
    if any(p.name.startswith(".CURRENT") for p in names):
        return "metadata commit (CURRENT being swapped)"
    if any(p.parent.name == "manifests" for p in names):
        return "metadata commit (manifest files written, CURRENT not moved)"
    if any(p.parent.name == "segments" for p in names):
        return "vector-index save (segment renamed, not yet published)"
    return "reading / embedding (between commits)"


def _wait_marker(proc, errfile: Path, timeout: float) -> bool:
    t0 = time.monotonic()
    while proc.poll() is None and time.monotonic() - t0 < timeout:
        if "glb.indexer: indexing" in errfile.read_text(errors="replace"):
            return True
        time.sleep(0.05)
    return False


def _run_point(index: Path, i: int, kind: str, target, total: int, rng, logdir: Path) -> dict:
    env = {"GLB_CRASH_AT": kind[6:]} if kind.startswith("crash:") else {}
    errfile = logdir / f"{i:02d}-{kind.replace(':', '_')}.stderr"
    lock_before = _lock_info(index)
    rec = {"point": i, "kind": kind, "target": round(target, 3) if target else None,
           "committed_before": committed_tiles(index), "signal": None}
    t0 = time.monotonic()
    with open(errfile, "w") as err:
        proc = popen_glb("-v", "index", SCENES, "--rules", RULES, "--index", index, "--quiet",
                         "--commit-every", COMMIT_EVERY, env=env, stderr=err)
        try:
            if kind.startswith("crash:"):
                proc.wait(timeout=RUN_TIMEOUT)
            elif _wait_marker(proc, errfile, RUN_TIMEOUT):
                while proc.poll() is None and committed_tiles(index) < target * total:
                    time.sleep(0.05)
                sig = signal.SIGKILL
                if kind == "time":
                    time.sleep(rng.uniform(0, 2))
                elif kind.startswith("fs:"):
                    cur0 = _current(index)
                    while proc.poll() is None and not _fs_event(index, kind[3:], cur0):
                        time.sleep(0.002)
                elif kind in ("sigint", "sigterm"):
                    time.sleep(rng.uniform(0, 2))
                    sig = signal.SIGINT if kind == "sigint" else signal.SIGTERM
                if proc.poll() is None:
                    rec["committed_at_stop"] = committed_tiles(index)
                    os.kill(proc.pid, sig)
                    rec["signal"] = signal.Signals(sig).name
                proc.wait(timeout=RUN_TIMEOUT)
        finally:
            stop(proc)
    rec["seconds"] = round(time.monotonic() - t0, 1)
    rec["rc"] = proc.returncode
    rec["stderr"] = errfile.read_text(errors="replace")
    rec["pid"] = proc.pid
    rec["lock_before"] = lock_before
    if kind.startswith("crash:") and proc.returncode == -signal.SIGKILL:
        rec["signal"] = "SIGKILL"
        rec["committed_at_stop"] = committed_tiles(index)
        rec["phase"] = PHASE_OF_POINT[kind[6:]]
    else:
        rec["phase"] = _phase_from_leftovers(index) if rec["signal"] == "SIGKILL" else \
            ("graceful stop" if rec["signal"] else "not stopped (ran to its end)")
    return rec


def _lock_info(index: Path) -> dict | None:
    try:
        return json.loads((index / "LOCK").read_text() or "null")
    except (OSError, ValueError):
        return None


@pytest.mark.slow
def test_glb_index_killed_anywhere_loses_nothing(tmp_path, reference, encoder):
    ref_path, ref, ref_seconds = reference
    total = ref.n_tiles
    rng = np.random.default_rng(SEED)
    index = tmp_path / "index"
    logdir = tmp_path / "logs"
    logdir.mkdir()
    records, failures = [], []
    prev = None
    for i, (kind, target) in enumerate(plan(KILL_POINTS)):
        rec = _run_point(index, i, kind, target, total, rng, logdir)
        records.append(rec)
        why = _verify_point(index, rec, prev, ref, encoder)
        rec["ok"] = not why
        rec["committed_after"] = committed_tiles(index)
        if why:
            failures.append(f"point {i} ({kind}): {why}")
        prev = rec
    # re-running completes the job; the result equals the uninterrupted build
    t0 = time.monotonic()
    with open(logdir / "final.stderr", "w") as err:
        proc = popen_glb("-v", "index", SCENES, "--rules", RULES, "--index", index, "--quiet",
                         "--commit-every", COMMIT_EVERY, stderr=err)
        try:
            rc = proc.wait(timeout=RUN_TIMEOUT)
        finally:
            stop(proc)
    final_stderr = (logdir / "final.stderr").read_text(errors="replace")
    final_why = _verify_point(index, {"kind": "final", "rc": rc, "signal": None,
                                      "stderr": final_stderr, "pid": proc.pid,
                                      "lock_before": None}, prev, ref, encoder)
    final = read_state(index)
    final_diff = diff_states(final, ref)
    left = leftovers(Layout(index), final.generation if final else 0)
    stopped = [r for r in records if r["signal"]]
    summary = {
        "kill_points_planned": KILL_POINTS, "stops_delivered": len(stopped),
        "stops_passed": sum(1 for r in stopped if r["ok"]),
        "sigkill": sum(1 for r in stopped if r["signal"] == "SIGKILL"),
        "sigint": sum(1 for r in stopped if r["signal"] == "SIGINT"),
        "sigterm": sum(1 for r in stopped if r["signal"] == "SIGTERM"),
        "phases": sorted({r["phase"] for r in stopped}),
        "progress_at_stops": sorted(round(r.get("committed_at_stop", 0) / total, 3) for r in stopped),
        "final_rc": rc, "final_equal_to_uninterrupted": final_diff == [], "final_diff": final_diff,
        "final_leftovers": len(left), "tiles": total, "final_run_seconds": round(time.monotonic() - t0, 1),
        "reference_seconds": round(ref_seconds, 1), "seed": SEED,
        "total_seconds": round(sum(r["seconds"] for r in records), 1),
    }
    if REPORT:
        _append_report("kill_campaign", {"summary": summary, "points": [
            {k: v for k, v in r.items() if k not in ("stderr", "lock_before")} for r in records]})
    assert not failures, "\n".join(failures)
    assert rc == 0, final_stderr[-3000:]
    assert final_why == "", final_why
    assert final_diff == [], final_diff
    assert left == [], left
    assert len(stopped) >= KILL_POINTS - 1, [(r["kind"], r["phase"]) for r in records]


def _verify_point(index: Path, rec: dict, prev: dict | None, ref, encoder) -> str:
    """'' when the index after this stop is sound; else what is wrong."""
    err = rec["stderr"]
    if "Traceback" in err:
        return "a traceback on stderr: " + err[-1500:]
    if rec["signal"] == "SIGKILL" and rec["rc"] != -signal.SIGKILL:
        return f"exit status {rec['rc']} after SIGKILL"
    if rec["signal"] in ("SIGINT", "SIGTERM"):
        if rec["rc"] != 130:
            return f"exit status {rec['rc']} after {rec['signal']} (want 130): {err[-800:]}"
        line = next((x for x in err.splitlines() if x.startswith("interrupted:")), None)
        if line is None or "generation" not in line or "again" not in line:
            return f"no 'interrupted: ... generation N ... again' line after {rec['signal']}: {err[-800:]}"
    if rec["signal"] is None and rec["kind"] == "final" and rec["rc"] != 0:
        return f"the completing run failed ({rec['rc']}): {err[-1500:]}"
    # the previous run was killed holding the lock: this one must say it recovered
    lb = rec.get("lock_before")
    if prev is not None and lb and lb.get("state") == "held" and lb.get("pid") == prev["pid"] \
            and "glb.indexer: indexing" in err and "did not finish" not in err:
        return "the run after a killed one did not report the recovery"
    state = read_state(index)
    if state is None:
        return "" if committed_tiles(index) == 0 else "CURRENT unreadable"
    problems, stats = check_index(index)
    if problems:
        return "glb check: " + "; ".join(problems)
    d = diff_states(state, ref, subset=True)
    if d:
        return "not a subset of the uninterrupted index: " + "; ".join(d)
    if prev is not None and state.n_tiles < prev.get("committed_after", 0):
        return f"committed tiles went down: {prev.get('committed_after')} -> {state.n_tiles}"
    idx = engine.Index(index, encoder=encoder)
    res = idx.search("a river", k=5)
    if len(res) != min(5, state.n_tiles) or not set(res.tile_id) <= set(state.tiles):
        return f"search returned {len(res)} results, or tiles that are not live"
    info = idx.info()
    if info["tiles"] != state.n_tiles or info["vectors"] != state.n_tiles:
        return f"searcher sees {info['tiles']} tiles / {info['vectors']} vectors, files hold {state.n_tiles}"
    return ""


def _append_report(key: str, value) -> None:
    p = Path(REPORT)
    data = json.loads(p.read_text()) if p.exists() else {}
    data[key] = value
    p.write_text(json.dumps(data, indent=1, default=str))


def test_sigint_stops_cleanly_and_says_where_it_got_to(tmp_path):
    """Ctrl-C: the first one finishes the file at hand, commits, prints where it got to and
    exits 130; the index is sound. (The campaign above interrupts a longer run the same way.)"""
    index = tmp_path / "index"
    errfile = tmp_path / "stderr"
    with open(errfile, "w") as err:
        proc = popen_glb("-v", "index", SCENES / "naip", SCENES / "elevation", "--index", index,
                         "--quiet", "--commit-every", COMMIT_EVERY, stderr=err)
        try:
            assert _wait_marker(proc, errfile, RUN_TIMEOUT)
            t0 = time.monotonic()
            while proc.poll() is None and committed_tiles(index) == 0 and time.monotonic() - t0 < RUN_TIMEOUT:
                time.sleep(0.05)
            os.kill(proc.pid, signal.SIGINT)
            rc = proc.wait(timeout=RUN_TIMEOUT)
        finally:
            stop(proc)
    err = errfile.read_text()
    assert rc == 130, err[-2000:]
    assert "Traceback" not in err
    line = next(x for x in err.splitlines() if x.startswith("interrupted:"))
    assert "not done yet" in line and "generation" in line and "again to continue" in line
    assert check_index(index)[0] == []
    gen = read_state(index).generation
    assert f"generation {gen}" in line
    lock = json.loads((index / "LOCK").read_text())
    assert lock["state"] == "released"
    with WriterLock(index) as lk:  # released: a new run starts with no recovery note
        assert lk.recovered_from is None
