"""Writer: embedded tiles -> the store (clip-retrieval's writer stage).

`unit_outcome(done, batches, dim)` turns one finished work unit into what it asks of the store
(scenes to add, whole or not at all; files to re-stamp; failures): a pure function, so a
distributor can run it where the unit was embedded. `SceneWriter` is the local writer stage:
it keeps each unit's embedded batches until the reader says the unit is done (`UnitDone`),
applies the outcome to the store's one writer (engine/store/writer.py), counts it in the run's
report (`count_outcome`), and commits every `commit_every` tiles (the store writer's rule) or
`commit_seconds`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from engine.store.writer import StagedScene, StoreWriter

from .reader import TileBatch, UnitDone


@dataclass
class UnitOutcome:
    """What one finished unit asks of the store: scenes to add, files to re-stamp, failures."""
    staged: list[StagedScene] = field(default_factory=list)
    restamps: list[tuple[str, dict]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def unit_outcome(done: UnitDone, batches: list[tuple[TileBatch, np.ndarray]], dim: int) -> UnitOutcome:
    """Group a unit's embedded batches by file; refuse files whose vectors are not finite."""
    out = UnitOutcome()
    by_scene: dict[str, tuple[list, list, list]] = {}
    for batch, vecs in batches:
        for tile, thumb, key, v in zip(batch.tiles, batch.thumbs, batch.scene_keys, vecs):
            t, th, vs = by_scene.setdefault(key, ([], [], []))
            t.append(tile)
            th.append(thumb)
            vs.append(v)
    for r in done.scenes:
        if r.restamp is not None:
            out.restamps.append((r.source.key, r.restamp))
            continue
        if r.error or r.record is None:
            out.failed.append(r.error or f"{r.source.label}: not read")
            continue
        tiles, thumbs, vecs = by_scene.get(r.source.key, ([], [], []))
        vectors = np.stack(vecs).astype(np.float32) if vecs else np.zeros((0, dim), np.float32)
        if not np.isfinite(vectors).all():
            out.failed.append(f"{r.source.label}: the encoder gave NaN or Inf for "
                              f"{int((~np.isfinite(vectors).all(axis=1)).sum())} of its tiles "
                              f"(pixel values out of range?); not indexed")
            continue
        out.staged.append(StagedScene(r.record, tiles, vectors, thumbs, r.overview))
    return out


def count_outcome(out: UnitOutcome, report, n_tiles: int | None = None) -> None:
    """Add a unit's outcome to the run's RunReport."""
    report.restamped += len(out.restamps)
    report.unchanged += len(out.restamps)
    report.failed.extend(out.failed)
    report.indexed += len(out.staged)
    report.tiles_added += sum(len(s.tiles) for s in out.staged) if n_tiles is None else n_tiles


class SceneWriter:
    def __init__(self, store: StoreWriter, report, commit_seconds: float = 60.0,
                 on_unit: Callable[[UnitDone], None] | None = None):
        """`report` is the run's RunReport (counts and failures are added to it);
        `on_unit` is called after each unit is staged (progress display)."""
        self.store = store
        self.report = report
        self.commit_seconds = commit_seconds
        self.on_unit = on_unit
        self._pending: dict[int, list[tuple[TileBatch, np.ndarray]]] = {}
        self._last_commit = time.monotonic()

    def write(self, batch: TileBatch, vectors: np.ndarray) -> None:
        self._pending.setdefault(batch.unit, []).append((batch, vectors))

    def unit_done(self, done: UnitDone) -> None:
        out = unit_outcome(done, self._pending.pop(done.unit, []), self.store.encoder.get("dim", 384))
        for path, fields in out.restamps:
            self.store.touch(path, **fields)
        for scene in out.staged:
            self.store.stage(scene)
        count_outcome(out, self.report)
        if self.on_unit is not None:
            self.on_unit(done)
        if self.store.should_commit() or time.monotonic() - self._last_commit > self.commit_seconds:
            self.store.commit()
            self._last_commit = time.monotonic()
