"""Crash points for the reliability tests (tests/test_reliability_crash.py).

`GLB_CRASH_AT=<point>[@<n>]` makes the process SIGKILL itself the n-th time (default: the
first) it reaches the named point, exactly as a `kill -9` arriving at that instant would: no
exception handler, `finally` or atexit runs. Unset (always, outside those tests) a crash point
costs one environment lookup, once per commit step.

`GLB_CRASH_ONCE=<file>` as well: only the one process that creates that file dies, so a run
whose work is retried in fresh processes (the Ray distributor forwards both variables to its
workers) is killed once, not at every attempt.

Points, in the order a commit reaches them:
    lock.acquired        the writer lock is held and recorded, nothing else done
    segment.tmp          hidden segment folder created, empty
    segment.tiles        ... tiles.parquet written
    segment.vectors      ... vectors.npy written
    segment.thumbs       ... thumbs.parquet and overviews.parquet written
    segment.synced       ... every file and the folder fsynced, not yet renamed
    segment.renamed      segment renamed into place (no manifest names it yet)
    publish.begin        scenes and tombstones files written, no manifest yet
    publish.manifest_tmp the manifest's temporary file written, not renamed
    publish.manifest     manifests/<gen>.json in place, CURRENT still names the previous one
    publish.current_tmp  CURRENT's temporary file written, not renamed
    publish.done         CURRENT replaced: the commit is durable

Distributed runs (indexer/ray_distributor.py) add, on the workers:
    ray.read             a unit's read task started
    ray.write            a unit's write task has its vectors, no file written yet
"""

from __future__ import annotations

import os
import signal

POINTS = ("lock.acquired", "segment.tmp", "segment.tiles", "segment.vectors", "segment.thumbs",
          "segment.synced", "segment.renamed", "publish.begin", "publish.manifest_tmp",
          "publish.manifest", "publish.current_tmp", "publish.done")
RAY_POINTS = ("ray.read", "ray.write")

_hits: dict[str, int] = {}


def crash_point(name: str) -> None:
    spec = os.environ.get("GLB_CRASH_AT")
    if not spec:
        return
    point, _, nth = spec.partition("@")
    if point != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= int(nth or 1):
        once = os.environ.get("GLB_CRASH_ONCE")
        if once:
            try:
                os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return
        os.kill(os.getpid(), signal.SIGKILL)
