"""Helpers for the reliability tests: an index's live state read straight from its files (no
searcher involved), comparisons, file digests, and `glb` subprocesses."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "indexer" / "archives" / "sample.toml"


@dataclass
class IndexState:
    generation: int
    tiles: dict          # tile_id -> scene_id
    vectors: dict        # tile_id -> float32 vector
    thumbs: dict         # tile_id -> JPEG bytes
    scenes: dict         # path -> (scene_id, sha256, n_tiles)

    @property
    def n_tiles(self) -> int:
        return len(self.tiles)


def read_state(index: Path) -> IndexState | None:
    """The live tiles of CURRENT's generation, from the files; None when nothing is committed."""
    from engine.store.layout import Layout
    from engine.store.manifest import read_current, read_scenes, read_tombstones
    from engine.store.segment import read_thumbs, read_tiles, read_vectors

    layout = Layout(index)
    if not layout.exists():
        return None
    m = read_current(layout)
    dead_t = read_tombstones(layout, m)
    dead = set(zip(dead_t.column("segment").to_pylist(), dead_t.column("tile_id").to_pylist()))
    tiles, vectors, thumbs = {}, {}, {}
    for s in m.segments:
        t = read_tiles(layout, s.name)
        v = read_vectors(layout, s.name)
        th = read_thumbs(layout, s.name)
        jpeg = dict(zip(th.column("tile_id").to_pylist(), th.column("jpeg").to_pylist()))
        for i, (tid, sid) in enumerate(zip(t.column("tile_id").to_pylist(), t.column("scene_id").to_pylist())):
            if (s.name, tid) in dead:
                continue
            assert tid not in tiles, f"tile {tid} live twice"
            tiles[tid], vectors[tid], thumbs[tid] = sid, v[i], jpeg[tid]
    scenes = {r["path"]: (r["scene_id"], r["sha256"], r["n_tiles"])
              for r in read_scenes(layout, m).to_pylist()}
    return IndexState(m.generation, tiles, vectors, thumbs, scenes)


def diff_states(got: IndexState | None, want: IndexState, *, subset: bool = False, atol=1e-6) -> list[str]:
    """Differences between two states ([] = equal). With subset=True, `got` may hold fewer
    scenes, but every scene it holds must be exactly as in `want` (all its tiles, same ids,
    same vectors, same thumbnails)."""
    if got is None:
        return [] if subset else ["nothing is committed"]
    out = []
    extra = set(got.scenes) - set(want.scenes)
    if extra:
        out.append(f"{len(extra)} scenes not in the reference, e.g. {sorted(extra)[0]}")
    missing = set(want.scenes) - set(got.scenes)
    if missing and not subset:
        out.append(f"{len(missing)} scenes missing, e.g. {sorted(missing)[0]}")
    for p in set(got.scenes) & set(want.scenes):
        if got.scenes[p] != want.scenes[p]:
            out.append(f"scene {p}: {got.scenes[p]} != reference {want.scenes[p]}")
    want_ids = {t for t, sid in want.tiles.items()
                if not subset or sid in {s[0] for s in got.scenes.values()}}
    if set(got.tiles) != want_ids:
        out.append(f"tile ids differ: {len(set(got.tiles) - want_ids)} extra, "
                   f"{len(want_ids - set(got.tiles))} missing")
    common = sorted(set(got.tiles) & want_ids)
    if common:
        a = np.stack([got.vectors[t] for t in common])
        b = np.stack([want.vectors[t] for t in common])
        err = float(np.abs(a - b).max())
        if err > atol:
            out.append(f"vectors differ by up to {err:.2e} (> {atol})")
        bad_thumbs = sum(got.thumbs[t] != want.thumbs[t] for t in common)
        if bad_thumbs:
            out.append(f"{bad_thumbs} thumbnails differ")
        bad_scene = sum(got.tiles[t] != want.tiles[t] for t in common)
        if bad_scene:
            out.append(f"{bad_scene} tiles belong to another scene")
    return out


def digest(index: Path, exclude=("LOCK",)) -> dict[str, str]:
    """sha256 of every file of an index (the writer lock excepted): equal digests = unchanged."""
    out = {}
    for p in sorted(Path(index).rglob("*")):
        rel = str(p.relative_to(index))
        if p.is_file() and rel not in exclude:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def committed_tiles(index: Path) -> int:
    """n_tiles of CURRENT's manifest (cheap: two small reads), 0 when none."""
    try:
        name = (Path(index) / "CURRENT").read_text().strip()
        return int(json.loads((Path(index) / "manifests" / name).read_bytes())["n_tiles"])
    except (OSError, ValueError, KeyError):
        return 0


def glb_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "glb", *map(str, args)]


def glb(*args, timeout=300, env=None, **kw) -> subprocess.CompletedProcess:
    e = dict(os.environ, **(env or {}))
    return subprocess.run(glb_cmd(*args), cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=e, **kw)


def popen_glb(*args, env=None, stdout=None, stderr=None, **kw) -> subprocess.Popen:
    e = dict(os.environ, **(env or {}))
    return subprocess.Popen(glb_cmd(*args), cwd=ROOT, env=e, stdout=stdout or subprocess.DEVNULL,
                            stderr=stderr or subprocess.DEVNULL, start_new_session=True, **kw)


def stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    """Make sure a child we started is gone (never leave a process behind)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error" in line or "failed" in line]


def segment_files_in(index: Path) -> list[str]:
    return sorted(str(p.relative_to(index)) for p in Path(index).rglob("*") if p.is_file())


def pq_rows(path: Path) -> int:
    return pq.read_metadata(path).num_rows
