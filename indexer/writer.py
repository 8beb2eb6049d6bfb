"""Writer: embedded tiles -> the store (clip-retrieval's writer stage).

`SceneWriter` keeps each work unit's embedded batches until the reader says the unit is done
(`UnitDone`), then stages every file of it into the store's one writer (engine/store/writer.py)
in a single piece (tiles, vectors, thumbnails and record, or nothing), and commits every
`commit_every` tiles (the store writer's rule) or `commit_seconds`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from engine.store.writer import StagedScene, StoreWriter

from .reader import TileBatch, UnitDone


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
        self._stage(done, self._pending.pop(done.unit, []))
        if self.on_unit is not None:
            self.on_unit(done)
        if self.store.should_commit() or time.monotonic() - self._last_commit > self.commit_seconds:
            self.store.commit()
            self._last_commit = time.monotonic()

    def _stage(self, done: UnitDone, batches: list[tuple[TileBatch, np.ndarray]]) -> None:
        report, store = self.report, self.store
        by_scene: dict[str, tuple[list, list, list]] = {}
        for batch, vecs in batches:
            for tile, thumb, key, v in zip(batch.tiles, batch.thumbs, batch.scene_keys, vecs):
                t, th, vs = by_scene.setdefault(key, ([], [], []))
                t.append(tile)
                th.append(thumb)
                vs.append(v)
        for r in done.scenes:
            if r.restamp is not None:
                store.touch(str(r.source.path), **r.restamp)
                report.restamped += 1
                report.unchanged += 1
                continue
            if r.error or r.record is None:
                report.failed.append(r.error or f"{r.source.path}: not read")
                continue
            tiles, thumbs, vecs = by_scene.get(str(r.source.path), ([], [], []))
            dim = store.encoder.get("dim", 384)
            vectors = np.stack(vecs).astype(np.float32) if vecs else np.zeros((0, dim), np.float32)
            if not np.isfinite(vectors).all():
                report.failed.append(f"{r.source.path}: the encoder gave NaN or Inf for "
                                     f"{int((~np.isfinite(vectors).all(axis=1)).sum())} of its tiles "
                                     f"(pixel values out of range?); not indexed")
                continue
            store.stage(StagedScene(r.record, tiles, vectors, thumbs, r.overview))
            report.indexed += 1
            report.tiles_added += len(tiles)
