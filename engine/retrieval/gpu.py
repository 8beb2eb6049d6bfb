"""The vector index on a GPU, where CUDA and a FAISS GPU build are present (`pip install
'.[gpu]'`, faiss-gpu-cu12 1.14.1.post1: older than faiss-cpu 1.15.1, so only the API both share
is used here). The CPU path stays the default everywhere else and is what CI tests.

- Flat (below `gpu_flat_max_rows` live tiles): every vector on the GPU, float16 or float32
  (`gpu_fp16`), `GpuIndexFlatIP`: exact up to the storage precision; the returned scores are
  re-computed exactly in float32 from the CPU copy, as on the CPU path.
- IVF-PQ above: the CPU index's trained quantiser and lists cloned to the GPU
  (`index_cpu_to_gpu`, float16 lookup tables, which 96-byte codes need); candidates from the
  GPU, re-ranked exactly from the float32 vectors on disk, as on the CPU.

Filtered semantics are the CPU path's: the planner lists candidates and calls `search_in`,
which scores an explicit candidate set exactly on the CPU when it is small, and otherwise asks
the GPU for the exact (flat) or approximate (IVF) ranking of the whole index, deeper and deeper,
keeping the rows that pass, until `want` of them are found; for a flat index the first `want`
passing rows of an exact ranking are exactly the filtered top `want`. FAISS GPU indexes return
at most 2048 neighbours a query; past that depth the CPU index answers.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger("glb.vectors")

GPU_MAX_K = 2048            # FAISS GPU k-selection limit
EXACT_ON_CPU_ROWS = 65_536  # candidate sets up to this size are scored exactly on the CPU


def gpu_count() -> int:
    """GPUs FAISS can use here (0 with faiss-cpu, or without CUDA)."""
    try:
        import faiss
    except ImportError:
        return 0
    if not hasattr(faiss, "StandardGpuResources") or not hasattr(faiss, "get_num_gpus"):
        return 0
    try:
        return int(faiss.get_num_gpus())
    except RuntimeError:
        return 0


_RESOURCES = None


def _resources():
    global _RESOURCES
    if _RESOURCES is None:
        import faiss

        _RESOURCES = faiss.StandardGpuResources()
    return _RESOURCES


def _deepening(search_all, q: np.ndarray, want: int, rows: np.ndarray, n: int, start: int):
    """Filtered top `want` from an unfiltered ranking: ask for `start` neighbours, keep those
    in `rows`, ask for 4x more until enough pass or the GPU limit is reached.
    -> (rows, scores) or None (the CPU must answer)."""
    member = np.zeros(n, bool)
    member[rows] = True
    depth = max(start, want)
    while True:
        depth = min(depth, GPU_MAX_K, n)
        r, s = search_all(q, depth)
        keep = member[r]
        if keep.sum() >= want or depth >= n:
            return r[keep][:want], s[keep][:want]
        if depth >= GPU_MAX_K:
            return None
        depth *= 4


class GpuFlatIndex:
    """Exact search with the vectors on the GPU (float16 or float32 storage)."""

    kind = "flat"

    def __init__(self, cpu_flat, fp16: bool = True, device: int = 0):
        import faiss

        self.cpu = cpu_flat
        self.vectors = cpu_flat.vectors
        self.n = cpu_flat.n
        self.fp16 = fp16
        cfg = faiss.GpuIndexFlatConfig()
        cfg.device = device
        cfg.useFloat16 = fp16
        self.index = faiss.GpuIndexFlatIP(_resources(), self.vectors.dim, cfg)
        if self.n:
            self.index.add(cpu_flat.matrix)
        self.build_s = cpu_flat.build_s

    def memory_bytes(self) -> int:
        return self.cpu.memory_bytes()

    def score(self, q, rows):
        return self.cpu.score(q, rows)

    def _all(self, q, depth):
        _, r = self.index.search(q[None], depth)
        r = r[0][r[0] >= 0].astype(np.int64)
        s = self.cpu.score(q, r)               # exact float32 scores, as on the CPU path
        order = np.argsort(-s, kind="stable")
        return r[order], s[order]

    def search(self, q, k, *, want=None):
        n = min(want or k, self.n)
        if n <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        if n > GPU_MAX_K:
            return self.cpu.search(q, k, want=want)
        return self._all(q, n)

    def search_in(self, q, want, rows):
        if len(rows) <= EXACT_ON_CPU_ROWS:
            return self.cpu.search_in(q, want, rows)
        # fp16 storage may misorder near-ties: ask a little deeper than the filtered share
        got = _deepening(self._all, q, want, rows, self.n,
                         int(np.ceil(2 * want * self.n / max(1, len(rows)))))
        return got if got is not None else self.cpu.search_in(q, want, rows)

    def describe(self) -> dict:
        return {"kind": self.kind, "device": "gpu", "storage": "float16" if self.fp16 else "float32"}


class GpuIVFPQIndex:
    """IVF-PQ candidates from the GPU, exact re-ranking from the float32 vectors on disk."""

    kind = "ivfpq"

    def __init__(self, cpu_ivf, device: int = 0):
        import faiss

        self.cpu = cpu_ivf
        for name in ("vectors", "assign", "n", "nlist", "digest", "build_s", "nprobe",
                     "rerank_depth", "centroids", "list_sizes", "config", "on_disk"):
            setattr(self, name, getattr(cpu_ivf, name))
        opts = faiss.GpuClonerOptions()
        opts.useFloat16 = True        # float16 lookup tables: 96-byte codes need them
        self.index = faiss.index_cpu_to_gpu(_resources(), device, cpu_ivf.index, opts)

    def memory_bytes(self) -> int:
        return self.cpu.memory_bytes()

    def score(self, q, rows):
        return self.cpu.score(q, rows)

    def probes_for(self, q, rows, target=None):
        return self.cpu.probes_for(q, rows, target)

    def rerank(self, q, rows):
        return self.cpu.rerank(q, rows)

    def candidates(self, q, want, nprobe=None):
        want = min(self.n, want)
        if want <= 0:
            return np.zeros(0, np.int64)
        if want > GPU_MAX_K:
            return self.cpu.candidates(q, want, nprobe)
        import faiss

        p = faiss.SearchParametersIVF(nprobe=min(self.nlist, nprobe or self.nprobe))
        _, r = self.index.search(q[None], want, params=p)
        r = r[0]
        return r[r >= 0].astype(np.int64)

    def search(self, q, k, *, want=None, nprobe=None):
        return self.rerank(q, self.candidates(q, max(want or 0, self.rerank_depth, 3 * k), nprobe))

    def search_in(self, q, want, rows, nprobe=None):
        # explicit candidate sets: the CPU's filter-aware probing with an id bitmap (the GPU
        # indexes of faiss 1.14 take no id selector)
        return self.cpu.search_in(q, want, rows, nprobe)

    def describe(self) -> dict:
        return {**self.cpu.describe(), "device": "gpu"}


def to_gpu(index, config):
    """The GPU form of a CPU vector index when `config.use_gpu` and a GPU are there; else the
    index itself."""
    if not getattr(config, "use_gpu", 0) or gpu_count() == 0:
        return index
    try:
        if index.kind == "flat":
            if index.n > config.gpu_flat_max_rows:
                return index
            return GpuFlatIndex(index, fp16=bool(config.gpu_fp16))
        return GpuIVFPQIndex(index)
    except (RuntimeError, AttributeError) as e:  # out of GPU memory, a build without a class
        log.warning("vector index stays on the CPU (%s)", str(e).splitlines()[0][:160])
        return index
