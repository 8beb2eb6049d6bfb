"""Inverted lists on disk (engine/retrieval/ondisk.py): the same IVF-PQ index with its lists in a
memory-mapped file answers exactly as the in-RAM one (ids and scores, filtered and not, with
tombstones), holds less in memory, and is reused by the next reader of the same generation."""

from dataclasses import replace

import numpy as np
import pytest

import engine
import synthetic
from engine import SearchConfig, VectorIndexConfig
from engine.store.writer import StoreWriter

# the quantised path on a small index; lists on disk whatever their size, or never
VECTORS = VectorIndexConfig(quant_min_rows=1000, nlist=32, pq_m=48, train_sample=10_000)


@pytest.fixture(scope="module")
def small_large_index(tmp_path_factory):
    path, rows = synthetic.build(tmp_path_factory.mktemp("ondisk") / "index", n_scenes=40,
                                 tiles_per_scene=100, seed=3)
    return path


def answers(path, queries, on_disk: bool):
    budget = 1 if on_disk else 2**62
    idx = engine.Index(path, config=SearchConfig(vectors=replace(VECTORS, lists_ram_budget=budget)))
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


def test_lists_on_disk_answer_like_lists_in_ram(small_large_index):
    path = small_large_index
    queries = synthetic.clustered_vectors(np.random.default_rng(1), 8)
    in_ram, mem_ram = answers(path, queries, False)
    on_disk, mem_disk = answers(path, queries, True)
    same(in_ram, on_disk)
    assert mem_disk < mem_ram / 2
    files = sorted(p.name for p in (path / "vindex").glob("ivf-*"))
    assert len(files) == 2 and files[1].endswith(".ivfdata")
    # the next reader of the same generation maps the same file
    mtime = (path / "vindex" / files[1]).stat().st_mtime_ns
    answers(path, queries[:1], True)
    assert (path / "vindex" / files[1]).stat().st_mtime_ns == mtime

    # a new generation with tombstones: its own file, still the same answers as in RAM
    with StoreWriter(path, synthetic.ENCODER) as w:
        w.remove("/synthetic/scene003.tif")
        w.remove("/synthetic/scene017.tif")
        w.commit()
    in_ram, _ = answers(path, queries, False)
    on_disk, _ = answers(path, queries, True)
    same(in_ram, on_disk)
    assert len(list((path / "vindex").glob("ivf-*.ivfdata"))) == 2


def _vm_flags(path) -> set[str]:
    """VmFlags of this process's mappings of `path` (/proc/self/smaps)."""
    flags, current = set(), False
    for line in open("/proc/self/smaps"):
        if "-" in line.split(" ", 1)[0] and len(line.split()) >= 5:
            current = line.rstrip().endswith(str(path))
        elif current and line.startswith("VmFlags:"):
            flags |= set(line.split()[1:])
    return flags


def test_memory_mapped_vectors_are_read_as_random_access(small_large_index):
    """A large index's float32 vectors are mapped with random-access advice ("rr"): a search
    gathers scattered rows, and with normal advice each page fault would read the device's whole
    read-ahead window around it (most of a file larger than the page cache, a few thousand rows
    in). A one-pass encode of a segment reads it with sequential advice ("sr"), then goes back."""
    from engine.retrieval.snapshot import prepare
    from engine.store.layout import Layout
    from engine.store.segment import advise, read_vectors

    idx = engine.Index(small_large_index, config=SearchConfig(vectors=VECTORS))
    snap = idx.snapshot
    assert snap.large
    seg = snap.manifest.segments[0].name
    f = Layout(small_large_index).segment(seg) / "vectors.npy"
    _ = snap.vectors.take(np.array([0, 5]))
    assert "rr" in _vm_flags(f)
    v = read_vectors(Layout(small_large_index), seg, mmap=True)
    advise(v, "sequential")
    assert "sr" in _vm_flags(f)
    advise(np.zeros(3), "random")  # an array in RAM: nothing to advise, no error
    assert prepare(small_large_index, VECTORS)["kind"] == "ivfpq"
