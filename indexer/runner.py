"""Runner: one `glb index` run, and the small loop that ties the indexer's stages.

`run_stages(reader, mapper, writer, prefetcher)` is the whole pipeline (clip-retrieval's
runner); every stage is an argument, so any can be replaced (a test passes fakes):
- reader (`reader.UnitReader`): `reader(stop)` yields, per work unit, `TileBatch`es and then
  one `UnitDone`; it stops early once `stop` is set;
- mapper (`mapper.Embedder`): `mapper(batch)` -> float32 vectors (n, d), one per tile;
- writer (`writer.SceneWriter`): `writer.write(batch, vectors)` keeps them, `writer.unit_done(done)`
  stages the unit's files in the store and commits when due;
- prefetcher (`prefetch.ThreadPrefetcher`): `prefetcher.run(reader)` yields the reader's items,
  read ahead in another thread.
Each batch's stage times (read, wait for the reader, embed, write) are logged at DEBUG and
summed into `RunReport.stage_seconds`. A distributor that spreads work units over machines
(issue 13) takes the units from `sources.plan_work` and runs `reader.read_unit` + the mapper
where they are; whatever it yields back (batches with their vectors, then `UnitDone`) goes to
the same writer.

`run_index` does the rest: the writer lock, discovery and change detection (sources.py), the
final commit, pruning, Ctrl-C, the report. Incremental and idempotent: a file whose size and
mtime match the index is skipped; one whose content hash matches is only re-stamped; a
changed one is re-indexed (its old tiles retired in the same commit); `prune` removes files
that are gone. Ctrl-C commits what is complete and stops.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from engine.errors import GLBError, IndexWriteError
from engine.store.lock import WriterLock
from engine.store.manifest import read_current
from engine.store.writer import StoreWriter

from .mapper import Embedder
from .prefetch import ThreadPrefetcher
from .reader import TileBatch, TileOptions, UnitDone, UnitReader
from .rules import load_rules
from .sources import discover, missing_paths, plan_work
from .writer import SceneWriter

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
    notes: list[str] = field(default_factory=list)   # what the walk did not follow (symlinked folders)
    stage_seconds: dict = field(default_factory=dict)   # read / wait / map / write totals
    alerts: dict = field(default_factory=dict)        # saved search -> new alerts this run
    watch_problems: list[str] = field(default_factory=list)  # saved searches skipped, by name

    @property
    def ok(self) -> bool:
        return not self.failed and not self.interrupted

    def summary(self) -> str:
        s = (f"{self.index}: {self.indexed} indexed, {self.unchanged} unchanged, "
             f"{len(self.failed)} failed, {self.removed} removed; +{self.tiles_added} / "
             f"-{self.tiles_deleted} tiles in {self.seconds:.1f} s")
        if self.tiles_added and self.seconds > 0:
            s += f" ({self.tiles_added / self.seconds:.0f} tiles/s)"
        if self.skipped:
            s += "; skipped: " + ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items()))
        s += f"; generation {self.generation}"
        if self.alerts:
            s += (f"; {sum(self.alerts.values())} new alerts ("
                  + ", ".join(f"{n}: {c}" for n, c in self.alerts.items()) + ")")
        return s


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
              distributor=None, stac: list[str] | None = None) -> RunReport:
    """`encoder`: an Encoder, a callable returning one (called once the writer lock is held, so
    a run that cannot write fails before loading a model), or None for the released one.
    `lock`: the index's writer lock when the caller already holds it. `distributor`: where the
    work units run; None: here, through `run_stages`. Otherwise an object whose
    `run(found, writer, encoder, opts, report, echo)` indexes `plan_units(found, writer,
    report)` elsewhere and stages each unit's outcome (writer.py) into `writer` (issue 13).
    `stac`: STAC catalogues, collections or items (files or URLs) whose image assets are
    indexed too (indexer/stac.py)."""
    opts = options or IndexOptions()
    t0 = time.monotonic()
    # The lock first: a second run started at the same time leaves before walking the archive.
    lock = lock if lock is not None else WriterLock(Path(index_dir)).acquire()
    try:
        _refuse_damage(Path(index_dir))  # before the model loads: a damaged store stops the run at once
        rules = load_rules(rules_file)
        found = discover(paths, rules, override)
        for href in stac or []:
            _add_stac(found, href, override)
        report = RunReport(index=str(index_dir), files=len(found.sources), skipped=found.skipped)
        report.failed.extend(found.problems)
        report.notes.extend(found.notes)
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
            if distributor is None:
                _index_units(plan_units(found, writer, report), writer, encoder, opts, report)
            else:
                distributor.run(found, writer, encoder, opts, report, echo)
            # gone files are noticed even without --prune, so the report can say so
            gone = missing_paths(writer.scene_paths(), found.roots)
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
        _check_watches(index_dir, report)  # still under the writer lock: one alert writer
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


def _check_watches(index_dir, report: RunReport) -> None:
    """Saved searches over the tiles added since each last checked (engine/retrieval/watch.py). Runs on
    every run, so one killed after its commit is caught up by the next. Never fails the run."""
    from engine.retrieval.watch import check_watches

    try:
        w = check_watches(index_dir)
    except Exception as e:  # noqa: BLE001 - alerts must never block indexing
        report.watch_problems.append(f"saved searches not checked: {type(e).__name__}: "
                                     f"{str(e).splitlines()[0][:160] if str(e) else ''}")
        return
    report.alerts, report.watch_problems = w.alerts, w.problems


def _refuse_damage(index_dir: Path) -> None:
    """The writer refuses a damaged live generation (engine/store/verify.py); checked here too,
    before the encoder loads, so the refusal comes in a second, not after the model."""
    from engine.store.layout import Layout
    from engine.store.verify import damaged, generation_damage

    layout = Layout(index_dir)
    if layout.exists():
        damage = generation_damage(layout, read_current(layout))
        if damage:
            raise damaged(layout, damage)


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


# --- the pipeline ----------------------------------------------------------------------------
class Reader(Protocol):
    def __call__(self, stop: threading.Event) -> Iterator[TileBatch | UnitDone]: ...


class Mapper(Protocol):
    def __call__(self, batch: TileBatch) -> np.ndarray: ...


class Writer(Protocol):
    def write(self, batch: TileBatch, vectors: np.ndarray) -> None: ...

    def unit_done(self, done: UnitDone) -> None: ...


class Prefetcher(Protocol):
    def run(self, produce: Callable[[threading.Event], Iterator]) -> Iterator: ...


@dataclass
class StageTimes:
    """Seconds spent per stage over a run. `read`: the reader's own time (in its thread);
    `wait`: the runner blocked on the reader (read time not hidden by prefetching)."""
    read: float = 0.0
    wait: float = 0.0
    map: float = 0.0
    write: float = 0.0
    batches: int = 0
    units: int = 0
    stopped: bool = False

    def totals(self) -> dict:
        return {k: round(getattr(self, k), 3) for k in ("read", "wait", "map", "write")} | \
            {"batches": self.batches, "units": self.units}


_END = object()


def run_stages(reader: Reader, mapper: Mapper, writer: Writer, prefetcher: Prefetcher,
               should_stop: Callable[[], bool] = lambda: False) -> StageTimes:
    """Every item the reader yields, through the mapper to the writer, in order, until the
    reader is done or `should_stop()` (checked after each item) says to stop."""
    times = StageTimes()
    stream = prefetcher.run(reader)
    try:
        while True:
            t0 = time.perf_counter()
            item = next(stream, _END)
            t1 = time.perf_counter()
            if item is _END:
                break
            times.wait += t1 - t0
            if isinstance(item, UnitDone):
                writer.unit_done(item)
                times.write += time.perf_counter() - t1
                times.units += 1
            else:
                vectors = mapper(item)
                t2 = time.perf_counter()
                writer.write(item, vectors)
                t3 = time.perf_counter()
                read_s = float(getattr(item, "read_s", 0.0))
                times.read += read_s
                times.map += t2 - t1
                times.write += t3 - t2
                times.batches += 1
                log.debug("unit %d: %d tiles; read %.3f s, waited %.3f s, embedded %.3f s, "
                          "written %.3f s", item.unit, len(vectors), read_s, t1 - t0, t2 - t1, t3 - t2)
            if should_stop():
                times.stopped = True
                break
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    return times


def plan_units(found, writer: StoreWriter, report: RunReport) -> list[list]:
    """The run's work units (sources.plan_work against the index's records); unchanged files
    and files that cannot be stat'ed are counted in `report`."""
    work = plan_work(found, writer.scene)
    report.unchanged += work.unchanged
    report.failed.extend(work.problems)
    # "indexing ..." is the line operators (and the crash suite) wait for: work has begun
    log.info("indexing %d work units (%d files unchanged) into generation %d onwards",
             len(work.units), work.unchanged, writer.manifest.generation + 1)
    return work.units


def _index_units(units: list[list], writer: StoreWriter, encoder, opts: IndexOptions,
                 report: RunReport) -> None:
    bar, progress = None, None
    if opts.progress:
        from tqdm import tqdm

        bar = tqdm(total=len(units), unit="unit", desc="indexing", leave=False, dynamic_ncols=True)

        def progress(done: UnitDone) -> None:
            bar.update(1)
            bar.set_postfix(tiles=report.tiles_added, failed=len(report.failed))

    stage_writer = SceneWriter(writer, report, opts.commit_seconds, on_unit=progress)
    with _Interrupt() as interrupt:
        try:
            times = run_stages(UnitReader(units, encoder, opts.tile), Embedder(encoder),
                               stage_writer, ThreadPrefetcher(), should_stop=interrupt.flag.is_set)
        finally:
            if bar is not None:
                bar.close()
    report.interrupted = times.stopped
    report.stage_seconds = times.totals()
    log.info("stage seconds: %s", report.stage_seconds)
