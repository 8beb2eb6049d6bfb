"""The GPU vector index's logic (engine/retrieval/gpu.py) on the CPU. No GPU here: FAISS's GPU
classes are stood in for by their CPU twins (same search contract), so what is tested is our
code around them — exact re-scoring, the filtered search by deepening an unfiltered ranking,
the fallbacks — against the CPU indexes the product uses today. The real device runs in
`python -m glb.bench.gpu_search` (docs/BENCHMARKS.md)."""

import types

import faiss
import numpy as np
import pytest

import synthetic
from engine.retrieval import gpu
from engine.retrieval.config import VectorIndexConfig
from engine.retrieval.vectors import FlatIndex, RowVectors


@pytest.fixture
def cpu_stand_ins(monkeypatch):
    monkeypatch.setattr(faiss, "StandardGpuResources", object, raising=False)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1, raising=False)
    monkeypatch.setattr(faiss, "GpuIndexFlatConfig", types.SimpleNamespace, raising=False)
    monkeypatch.setattr(faiss, "GpuIndexFlatIP", lambda res, d, cfg: faiss.IndexFlatIP(d), raising=False)
    monkeypatch.setattr(gpu, "_RESOURCES", None)
    monkeypatch.setattr(gpu, "EXACT_ON_CPU_ROWS", 100)   # reach the deepening path on a small index


def test_gpu_flat_answers_like_the_cpu_flat(cpu_stand_ins):
    rng = np.random.default_rng(0)
    vecs = synthetic.clustered_vectors(rng, 6000)
    cpu = FlatIndex(RowVectors([vecs], 384))
    cfg = VectorIndexConfig(use_gpu=1)
    g = gpu.to_gpu(cpu, cfg)
    assert isinstance(g, gpu.GpuFlatIndex) and g.describe()["storage"] == "float16"
    for q in synthetic.clustered_vectors(rng, 5):
        r1, s1 = cpu.search(q, 10)
        r2, s2 = g.search(q, 10)
        np.testing.assert_array_equal(r1, r2)
        np.testing.assert_allclose(s1, s2, rtol=1e-6)
        for every in (2, 7, 50):                 # broad to narrow candidate sets
            rows = np.arange(0, 6000, every)
            r1, s1 = cpu.search_in(q, 30, rows)
            r2, s2 = g.search_in(q, 30, rows)
            np.testing.assert_array_equal(r1, r2)
            np.testing.assert_allclose(s1, s2, rtol=1e-6)
    # past what the GPU can return in one search, the CPU answers
    r, _ = g.search(q, 10, want=gpu.GPU_MAX_K + 1)
    assert len(r) == gpu.GPU_MAX_K + 1
    # off by config, or without a GPU: the CPU index itself
    assert gpu.to_gpu(cpu, VectorIndexConfig(use_gpu=0)) is cpu


def test_no_gpu_leaves_the_index_on_the_cpu():
    cpu = FlatIndex(RowVectors([synthetic.clustered_vectors(np.random.default_rng(1), 100)], 384))
    assert gpu.gpu_count() == 0                      # faiss-cpu here
    assert gpu.to_gpu(cpu, VectorIndexConfig()) is cpu
