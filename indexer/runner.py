"""Runner: ties reader -> mapper -> store writer for one `glb index` run.

Incremental and idempotent: a file whose size and mtime match the index is skipped; one whose
content hash matches is only re-stamped; a changed one is re-indexed (its old tiles retired in
the same commit); `prune` removes files that are gone. Commits happen every `commit_every`
tiles or `commit_seconds`, and at the end; Ctrl-C commits what is complete and stops.
"""

from __future__ import annotations

import logging
import os
import signal
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.errors import GLBError
from engine.store.files import IndexWriteError
from engine.store.lock import WriterLock
from engine.store.manifest import read_current
from engine.store.writer import StagedScene, StoreWriter

from .distributor import LocalDistributor
from .mapper import Embedder
from .reader import (SceneResult, TileBatch, TileOptions, UnitDone, file_fingerprint, read_chips,
                     read_scene, sha256_of)
from .rules import load_rules
from .sources import discover

CHIPS_PER_UNIT = 256

log = logging.getLogger("glb.indexer")


@dataclass
class IndexOptions:
    tile: TileOptions = field(default_factory=TileOptions)
    prune: bool = False
    commit_every: int = 2048
    commit_seconds: float = 60.0
    progress: bool = True


@dataclass
class RunReport:
    index: str
    files: int = 0
    indexed: int = 0
    unchanged: int = 0
    restamped: int = 0
    failed: list[str] = field(default_factory=list)
    removed: int = 0
    missing: int = 0
    tiles_added: int = 0
    tiles_deleted: int = 0
    skipped: dict = field(default_factory=dict)
    interrupted: bool = False
    generation: int = 0
    seconds: float = 0.0
    recovered_lock: dict | None = None
    cleaned_files: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.interrupted

    def summary(self) -> str:
        s = (f"{self.index}: {self.indexed} indexed, {self.unchanged} unchanged, "
             f"{len(self.failed)} failed, {self.removed} removed; +{self.tiles_added} / "
             f"-{self.tiles_deleted} tiles in {self.seconds:.1f} s")
        if self.tiles_added and self.seconds > 0:
            s += f" ({self.tiles_added / self.seconds:.0f} tiles/s)"
        return s + f"; generation {self.generation}"


class _Interrupt:
    """First Ctrl-C / SIGTERM: finish cleanly (commit what is complete). Second: default."""

    def __init__(self):
        self.flag = threading.Event()
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.flag.is_set():
            signal.signal(signum, self._old.get(signum, signal.SIG_DFL))
            raise KeyboardInterrupt
        self.flag.set()

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def run_index(paths: list[str | Path], index_dir: str | Path, *, rules_file=None,
              override: dict | None = None, options: IndexOptions | None = None,
              encoder=None, echo=print, lock: WriterLock | None = None,
              stac: list[str] | None = None) -> RunReport:
    """`encoder`: an Encoder, a callable returning one (called once the writer lock is held, so
    a run that cannot write fails before loading a model), or None for the released one.
    `lock`: the index's writer lock when the caller already holds it."""
    opts = options or IndexOptions()
    t0 = time.monotonic()
    # The lock first: a second run started at the same time leaves before walking the archive.
    lock = lock if lock is not None else WriterLock(Path(index_dir)).acquire()
    try:
        rules = load_rules(rules_file)
        found = discover(paths, rules, override)
        for href in stac or []:
            _add_stac(found, href, override)
        report = RunReport(index=str(index_dir), files=len(found.sources), skipped=found.skipped)
        report.failed.extend(found.problems)
        if encoder is None:
            from engine.encoder import load_encoder

            encoder = load_encoder
        if callable(encoder) and not hasattr(encoder, "describe"):
            encoder = encoder()
        writer = StoreWriter(index_dir, encoder.describe(), commit_every=opts.commit_every, lock=lock)
    except BaseException:
        lock.release()
        raise
    try:
        report.recovered_lock = writer.lock.recovered_from
        report.cleaned_files = len(writer.removed_orphans)
        if report.recovered_lock:
            echo(f"note: the last run (pid {report.recovered_lock.get('pid')}) did not finish; "
                 f"its unfinished commit was discarded ({report.cleaned_files} files) and this run "
                 f"continues from generation {writer.manifest.generation}")
        try:
            _run(found, writer, encoder, opts, report, echo)
            if opts.prune or report.missing:
                gone = [p for p in writer.scene_paths()
                        if any(_under(p, r) for r in found.roots) and not Path(p).exists()]
                if opts.prune:
                    for p in gone:
                        writer.remove(p)
                    report.removed = len(gone)
                report.missing = 0 if opts.prune else len(gone)
            res = writer.commit()
        except OSError as e:  # disk full, read-only, quota: nothing half-written is published
            raise _write_failed(index_dir, writer, report, e) from None
        if res:
            report.tiles_deleted += res.tiles_deleted
        report.generation = writer.manifest.generation
        if report.interrupted:
            done = report.indexed + len(report.failed) + report.unchanged
            echo(f"interrupted: {report.indexed} files indexed in this run, {report.unchanged} "
                 f"unchanged; {max(0, report.files - done)} not done yet; what is complete is "
                 f"committed (generation {report.generation}). Run the same command again to "
                 f"continue.")
    finally:
        writer.close()
    report.seconds = time.monotonic() - t0
    return report


def _add_stac(found, href: str, override: dict | None) -> None:
    from .stac import discover_stac, gdal_remote_defaults

    sources, problems, skipped = discover_stac(href)
    cli = {k: v for k, v in (override or {}).items() if v is not None}
    seen = {s.key for s in found.sources}
    for src in sources:
        if src.key in seen:
            continue
        seen.add(src.key)
        src.override.update(cli)  # the command line wins over the catalogue, as over rules
        found.sources.append(src)
    if any(s.remote is not None for s in sources):
        gdal_remote_defaults()
    found.problems.extend(problems)
    for reason, n in skipped.items():
        found.skipped[reason] = found.skipped.get(reason, 0) + n


def _write_failed(index_dir, writer: StoreWriter, report: RunReport, e: OSError) -> IndexWriteError:
    writer.discard_unfinished()
    try:
        live = f"generation {read_current(writer.layout).generation}" if writer.layout.exists() \
            else "no generation yet (nothing was ever committed)"
    except GLBError:
        live = "the last published generation"
    what = e.strerror or f"{str(e) or type(e).__name__}: disk full or a file size limit?"
    where = f" at {e.filename}" if getattr(e, "filename", None) else ""
    return IndexWriteError(
        f"{index_dir}: cannot write the index ({what}{where}); the unfinished commit was "
        f"discarded and the index is intact at {live}; files indexed since the last commit are "
        f"not in it: run the same command again once the disk is writable")


def _regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return True  # let the read report why it cannot


def _under(path: str, root: Path) -> bool:
    p = Path(path)
    return p == root or root in p.parents


def _run(found, writer: StoreWriter, encoder, opts: IndexOptions, report: RunReport, echo) -> None:
    # Decide what needs work: unchanged files cost one stat.
    todo = []
    for src in found.sources:
        prev = writer.scene(src.key)
        try:
            size, mtime = file_fingerprint(src)
        except OSError as e:
            report.failed.append(f"{src.label}: cannot stat ({e.strerror})")
            continue
        if prev is not None and prev["size"] == size and prev["mtime_ns"] == mtime:
            report.unchanged += 1
            continue
        todo.append((src, prev))
    # Gone files are noticed even without --prune, so the report can say so.
    report.missing = sum(1 for p in writer.scene_paths()
                         if any(_under(p, r) for r in found.roots) and not Path(p).exists())
    units: list[list] = []
    chip_groups: dict[str, list] = {}
    for src, prev in todo:
        if src.kind == "chip":
            chip_groups.setdefault(src.group, []).append((src, prev))
        else:
            units.append([(src, prev)])
    for items in chip_groups.values():
        for i in range(0, len(items), CHIPS_PER_UNIT):
            units.append(items[i:i + CHIPS_PER_UNIT])

    def produce(stop: threading.Event):
        for u, items in enumerate(units):
            if stop.is_set():
                return
            res = [SceneResult(src) for src, _ in items]
            shas, live = [], []
            for (src, prev), r in zip(items, res):
                if src.remote is None and not _regular(src.path):  # a FIFO would block the run forever on open()
                    r.error = f"{src.path}: not a regular file (a pipe, socket or device); skipped"
                    continue
                try:
                    sha = sha256_of(src)
                except OSError as e:
                    r.error = f"{src.label}: cannot read ({e.strerror})"
                    continue
                if prev is not None and prev["sha256"] == sha:
                    try:
                        size, mtime = file_fingerprint(src)
                    except OSError as e:
                        r.error = f"{src.label}: cannot stat ({e.strerror})"
                        continue
                    r.restamp = {"size": size, "mtime_ns": mtime}
                    continue
                shas.append(sha)
                live.append((src, r))
            if items[0][0].kind == "chip":
                yield from read_chips(u, [s for s, _ in live], encoder, opts.tile,
                                      [r for _, r in live], shas)
            elif live:
                src, r = live[0]
                try:
                    yield from read_scene(u, src, encoder, opts.tile, r, shas[0])
                except GLBError as e:
                    r.error = str(e)
                except Exception as e:  # noqa: BLE001 - a broken file must not stop the run
                    r.error = f"{src.label}: unexpected {type(e).__name__}: {str(e).splitlines()[0][:160]}"
            yield UnitDone(u, res)

    log.info("indexing %d files (%d unchanged) into generation %d onwards", len(todo),
             report.unchanged, writer.manifest.generation + 1)
    embed = Embedder(encoder)
    pending: dict[int, list[tuple[TileBatch, np.ndarray]]] = {}
    last_commit = time.monotonic()
    bar = None
    if opts.progress:
        from tqdm import tqdm

        bar = tqdm(total=len(units), unit="unit", desc="indexing", leave=False, dynamic_ncols=True)
    with _Interrupt() as interrupt:
        stream = LocalDistributor().run(produce)
        try:
            for item in stream:
                if isinstance(item, TileBatch):
                    pending.setdefault(item.unit, []).append((item, embed(item)))
                else:
                    _stage(item, pending.pop(item.unit, []), writer, report)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(tiles=report.tiles_added, failed=len(report.failed))
                    if writer.should_commit() or time.monotonic() - last_commit > opts.commit_seconds:
                        writer.commit()
                        last_commit = time.monotonic()
                if interrupt.flag.is_set():
                    report.interrupted = True
                    break
        finally:
            stream.close()
            if bar is not None:
                bar.close()


def _stage(done: UnitDone, batches, writer: StoreWriter, report: RunReport) -> None:
    by_scene: dict[str, tuple[list, list, list]] = {}
    for batch, vecs in batches:
        for tile, thumb, key, v in zip(batch.tiles, batch.thumbs, batch.scene_keys, vecs):
            t, th, vs = by_scene.setdefault(key, ([], [], []))
            t.append(tile), th.append(thumb), vs.append(v)
    for r in done.scenes:
        if r.restamp is not None:
            writer.touch(r.source.key, **r.restamp)
            report.restamped += 1
            report.unchanged += 1
            continue
        if r.error or r.record is None:
            report.failed.append(r.error or f"{r.source.label}: not read")
            continue
        tiles, thumbs, vecs = by_scene.get(r.source.key, ([], [], []))
        dim = writer.encoder.get("dim", 384)
        vectors = np.stack(vecs).astype(np.float32) if vecs else np.zeros((0, dim), np.float32)
        if not np.isfinite(vectors).all():
            report.failed.append(f"{r.source.label}: the encoder gave NaN or Inf for "
                                 f"{int((~np.isfinite(vectors).all(axis=1)).sum())} of its tiles "
                                 f"(pixel values out of range?); not indexed")
            continue
        writer.stage(StagedScene(r.record, tiles, vectors, thumbs, r.overview))
        report.indexed += 1
        report.tiles_added += len(tiles)
