"""Inverted lists on disk (engine/ivf_ondisk.py): the same IVF-PQ index with its lists in a
memory-mapped file answers exactly as the in-RAM one (ids and scores, filtered and not, with
tombstones), holds less in memory, and is reused by the next reader of the same generation."""

import numpy as np
import pytest

import engine
import synthetic
from engine import vectors
from engine.store.writer import StoreWriter


@pytest.fixture(scope="module")
def small_large_index(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setattr(vectors, "QUANT_MIN_ROWS", 1000)
    mp.setattr(vectors, "NLIST", 32)
    mp.setattr(vectors, "PQ_M", 48)
    mp.setattr(vectors, "TRAIN_SAMPLE", 4000)
    path, rows = synthetic.build(tmp_path_factory.mktemp("ondisk") / "index", n_scenes=40,
                                 tiles_per_scene=100, seed=3)
    yield path
    mp.undo()


def answers(path, queries, on_disk: bool, monkeypatch):
    monkeypatch.setenv("GLB_IVF_ON_DISK", "1" if on_disk else "0")
    idx = engine.Index(path)
    vi = idx.snapshot.vector_index
    assert vi.kind == "ivfpq" and vi.on_disk is on_disk
    out = []
    for q in queries:
        out.append(vi.search(q, 10))
        out.append(vi.search_in(q, 50, np.arange(0, idx.snapshot.n_tiles, 3)))
        g = idx.search(vector=q, bbox=(-180, -60, 0, 60), k=10)
        out.append((g.tile_id.to_numpy(), g.score.to_numpy()))
    return out, vi.memory_bytes()


def same(a, b):
    for (ra, sa), (rb, sb) in zip(a, b):
        np.testing.assert_array_equal(ra, rb)
        np.testing.assert_allclose(sa, sb, rtol=1e-6)


def test_lists_on_disk_answer_like_lists_in_ram(small_large_index, monkeypatch):
    path = small_large_index
    queries = synthetic.clustered_vectors(np.random.default_rng(1), 8)
    in_ram, mem_ram = answers(path, queries, False, monkeypatch)
    on_disk, mem_disk = answers(path, queries, True, monkeypatch)
    same(in_ram, on_disk)
    assert mem_disk < mem_ram / 2
    files = sorted(p.name for p in (path / "vindex").glob("ivf-*"))
    assert len(files) == 2 and files[1].endswith(".ivfdata")
    # the next reader of the same generation maps the same file
    mtime = (path / "vindex" / files[1]).stat().st_mtime_ns
    answers(path, queries[:1], True, monkeypatch)
    assert (path / "vindex" / files[1]).stat().st_mtime_ns == mtime

    # a new generation with tombstones: its own file, still the same answers as in RAM
    with StoreWriter(path, synthetic.ENCODER) as w:
        w.remove("/synthetic/scene003.tif")
        w.remove("/synthetic/scene017.tif")
        w.commit()
    in_ram, _ = answers(path, queries, False, monkeypatch)
    on_disk, _ = answers(path, queries, True, monkeypatch)
    same(in_ram, on_disk)
    assert len(list((path / "vindex").glob("ivf-*.ivfdata"))) == 2
