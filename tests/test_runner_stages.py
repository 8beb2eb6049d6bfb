"""The indexer's stages one at a time and tied by the runner, with fake stages where a stage is
not what is being tested (the real reader, mapper and store run in tests/test_indexer.py)."""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from dataclasses import dataclass, field

import numpy as np
import pytest
import shapely

from engine.store.writer import StoreWriter, scene_id_for, tile_id_for
from indexer.prefetch import ThreadPrefetcher
from indexer.reader import SceneResult, TileBatch, UnitDone
from indexer.runner import RunReport, run_stages
from indexer.sources import CHIPS_PER_UNIT, Discovery, Source, content_change, file_fingerprint, plan_work, sha256_of
from indexer.writer import SceneWriter

ENCODER = {"name": "fake", "identity": "fake@test", "dim": 8, "trained": False}


# --- fake stages ----------------------------------------------------------------------------
@dataclass
class FakeBatch:
    unit: int
    tiles: list
    read_s: float = 0.25


class FakeReader:
    """Units of 2 batches of 3 tiles each; can fail at a given unit."""

    def __init__(self, units: int, fail_at: int | None = None):
        self.units, self.fail_at = units, fail_at
        self.yielded = 0
        self.finished = threading.Event()

    def __call__(self, stop: threading.Event):
        try:
            for u in range(self.units):
                if stop.is_set():
                    return
                if u == self.fail_at:
                    raise OSError(f"unit {u}: disk gone")
                for b in range(2):
                    self.yielded += 1
                    yield FakeBatch(u, [f"{u}.{b}.{i}" for i in range(3)])
                self.yielded += 1
                yield UnitDone(u, [])
        finally:
            self.finished.set()


def fake_mapper(batch) -> np.ndarray:
    return np.full((len(batch.tiles), 4), batch.unit, np.float32)


@dataclass
class RecordingWriter:
    calls: list = field(default_factory=list)

    def write(self, batch, vectors) -> None:
        assert vectors.shape == (len(batch.tiles), 4) and (vectors == batch.unit).all()
        self.calls.append(("write", batch.unit, len(batch.tiles)))

    def unit_done(self, done: UnitDone) -> None:
        self.calls.append(("done", done.unit))


# --- the runner ---------------------------------------------------------------------------------
def test_runner_passes_every_item_in_order_and_times_each_stage(caplog):
    writer = RecordingWriter()
    with caplog.at_level(logging.DEBUG, logger="glb.indexer"):
        times = run_stages(FakeReader(3), fake_mapper, writer, ThreadPrefetcher(depth=2))
    assert writer.calls == [c for u in range(3) for c in
                            (("write", u, 3), ("write", u, 3), ("done", u))]
    assert (times.batches, times.units, times.stopped) == (6, 3, False)
    assert times.read == pytest.approx(6 * 0.25)  # the reader's own time, reported by its batches
    assert min(times.wait, times.map, times.write) >= 0
    per_batch = [r.getMessage() for r in caplog.records if "embedded" in r.getMessage()]
    assert len(per_batch) == 6 and per_batch[0].startswith("unit 0: 3 tiles; read 0.250 s")


def test_runner_stops_when_asked_and_stops_the_reader():
    reader, writer = FakeReader(1000), RecordingWriter()
    times = run_stages(reader, fake_mapper, writer, ThreadPrefetcher(depth=1),
                       should_stop=lambda: len(writer.calls) >= 4)
    assert times.stopped and len(writer.calls) == 4
    assert reader.finished.wait(5), "the reader thread was not stopped"
    assert reader.yielded <= 4 + 1 + 2  # handed over + queued (depth 1) + one waiting


def test_a_reader_error_reaches_the_caller_after_what_was_read_before_it():
    writer = RecordingWriter()
    with pytest.raises(OSError, match="unit 2: disk gone"):
        run_stages(FakeReader(5, fail_at=2), fake_mapper, writer, ThreadPrefetcher())
    assert [c for c in writer.calls if c[0] == "done"] == [("done", 0), ("done", 1)]


def test_a_mapper_error_stops_the_reader():
    reader = FakeReader(1000)

    def broken(batch):
        raise RuntimeError("CUDA out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        run_stages(reader, broken, RecordingWriter(), ThreadPrefetcher())
    assert reader.finished.wait(5)


def test_the_prefetcher_reads_ahead_at_most_its_depth():
    produced = []
    gate = threading.Event()

    def produce(stop):
        for i in range(50):
            if stop.is_set():
                return
            produced.append(i)
            yield i

    stream = ThreadPrefetcher(depth=3).run(produce)
    assert next(stream) == 0
    gate.wait(0.3)  # the thread fills the queue meanwhile
    assert len(produced) <= 1 + 3 + 1   # taken + queued + one waiting to be put
    stream.close()


# --- change detection (sources) ------------------------------------------------------------------
def test_plan_work_skips_unchanged_files_and_groups_chips(tmp_path):
    scenes = [tmp_path / f"s{i}.tif" for i in range(3)]
    chips = [tmp_path / f"c{i}.png" for i in range(CHIPS_PER_UNIT + 5)]
    for p in scenes + chips:
        p.write_bytes(p.name.encode())
    size, mtime = file_fingerprint(scenes[0])
    known = {str(scenes[0]): {"size": size, "mtime_ns": mtime, "sha256": "x"},
             str(scenes[1]): {"size": size, "mtime_ns": mtime - 1, "sha256": sha256_of(scenes[1])}}
    sources = [Source(p, "scene") for p in scenes] + [Source(p, "chip", group="g") for p in chips]
    sources.append(Source(tmp_path / "vanished.tif", "scene"))
    plan = plan_work(Discovery(sources, [], {}, [tmp_path]), known.get)
    assert plan.unchanged == 1
    assert plan.problems == [f"{tmp_path / 'vanished.tif'}: cannot stat (No such file or directory)"]
    assert [len(u) for u in plan.units] == [1, 1, CHIPS_PER_UNIT, 5]
    assert plan.units[0][0] == (sources[1], known[str(scenes[1])])
    # s1 only looks changed (new mtime, same content): re-stamped, not re-read
    check = content_change(*plan.units[0][0])
    assert check.sha is None and check.restamp == {"size": size, "mtime_ns": file_fingerprint(scenes[1])[1]}
    assert content_change(sources[2], None).sha == sha256_of(scenes[2])


def test_content_change_refuses_what_is_not_a_regular_file(tmp_path):
    fifo = tmp_path / "pipe.tif"
    os.mkfifo(fifo)
    check = content_change(Source(fifo, "scene"), None)
    assert check.sha is None and "not a regular file" in check.error


# --- the writer stage, on the real store ---------------------------------------------------------
def _scene(path: str, n: int):
    sid = scene_id_for(path, "sha")
    tiles = []
    for i in range(n):
        g = shapely.box(i * 0.01, 0, (i + 1) * 0.01, 0.01)
        tiles.append({"tile_id": tile_id_for(path, 0, i, 64, 64), "scene_id": sid, "scene": path,
                      "modality": "rgb", "sensor": "fake", "acquired": dt.date(2020, 1, 1),
                      "row_off": 0, "col_off": i * 64, "height": 64, "width": 64,
                      "minx": g.bounds[0], "miny": g.bounds[1], "maxx": g.bounds[2], "maxy": g.bounds[3],
                      "geometry": g.wkb, "nodata_frac": 0.0})
    rec = {"scene_id": sid, "path": path, "scene": path, "kind": "scene", "size": 1, "mtime_ns": 1,
           "sha256": "sha", "sensor": "fake", "modality": "rgb", "acquired": dt.date(2020, 1, 1),
           "n_tiles": n, "segment": None, "crs": "EPSG:4326", "evidence": "test", "minx": 0.0,
           "miny": 0.0, "maxx": n * 0.01, "maxy": 0.01, "indexed_at": None}
    return rec, tiles


def _vectors(n, rng):
    v = rng.normal(size=(n, 8)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_scene_writer_stages_whole_files_and_commits_when_due(tmp_path):
    rng = np.random.default_rng(0)
    report = RunReport(index=str(tmp_path / "index"))
    units_seen = []
    with StoreWriter(tmp_path / "index", ENCODER, commit_every=5) as store:
        w = SceneWriter(store, report, commit_seconds=3600, on_unit=units_seen.append)
        rec, tiles = _scene("/a.tif", 4)
        bad_rec, bad_tiles = _scene("/nan.tif", 2)
        good, nan, failed = (SceneResult(Source(f, "scene")) for f in ("/a.tif", "/nan.tif", "/b.tif"))
        good.record, nan.record, failed.error = rec, bad_rec, "/b.tif: not a GeoTIFF"
        # a file's tiles arrive in two batches, interleaved with another file's
        w.write(TileBatch(0, None, None, None, tiles[:3], [b"j"] * 3, ["/a.tif"] * 3), _vectors(3, rng))
        nan_vecs = _vectors(2, rng)
        nan_vecs[1, 0] = np.nan
        w.write(TileBatch(0, None, None, None, bad_tiles, [b"j"] * 2, ["/nan.tif"] * 2), nan_vecs)
        w.write(TileBatch(0, None, None, None, tiles[3:], [b"j"], ["/a.tif"]), _vectors(1, rng))
        assert store.manifest.generation == 0  # nothing staged before the unit is done
        w.unit_done(UnitDone(0, [good, nan, failed]))
        assert store.manifest.generation == 0 and store.pending_tiles == 4  # 4 < commit_every
        rec2, tiles2 = _scene("/c.tif", 3)
        c = SceneResult(Source("/c.tif", "scene"))
        c.record = rec2
        w.write(TileBatch(1, None, None, None, tiles2, [b"j"] * 3, ["/c.tif"] * 3), _vectors(3, rng))
        w.unit_done(UnitDone(1, [c]))
        assert store.manifest.generation == 1 and store.manifest.n_tiles == 7  # 7 >= 5: committed
    assert (report.indexed, report.tiles_added) == (2, 7)
    assert report.failed[0].startswith("/nan.tif: the encoder gave NaN or Inf for 1 of its tiles")
    assert report.failed[1] == "/b.tif: not a GeoTIFF"
    assert [u.unit for u in units_seen] == [0, 1]
