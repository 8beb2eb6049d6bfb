"""Vector indexes behind `engine/retrieval/index.py`'s planner: exact Flat for small indexes, IVF-PQ with
exact re-ranking for large ones.

Small (fewer live tiles than `VectorIndexConfig.quant_min_rows`): every vector in RAM (float32) behind a FAISS
`IndexFlatIP`; every answer is exact.

Large: an `IndexIVFPQ` (inner product, `nlist` lists, `pq_m` bytes a vector) holds only codes
and row ids in RAM; the float32 vectors stay on disk in the segments' own `vectors.npy`
(memory-mapped) and are read only to re-rank the `rerank` best approximate candidates exactly,
so every returned score is exact. The coarse quantiser and PQ codebooks are trained once per
index on a sample and persisted in `<index>/vindex/`; each segment's codes (`sa_encode`: list
number + PQ code per row) are persisted there too, keyed by the quantiser's digest, so a reader
encodes only segments it has not seen. Those files are derived data: deleting them costs a
rebuild, never correctness. A reader that cannot write there (read-only index) keeps them in
memory.

Filtered search within an explicit candidate set uses a filter-aware probe count: the lists
are taken nearest first until they hold at least `scan_target` candidates, and FAISS scans them
with the candidate set as an `IDSelectorBitmap`.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from pathlib import Path

import numpy as np

from ..store.files import try_atomic_write
from ..store.segment import advise
from .config import VectorIndexConfig

log = logging.getLogger("glb.vectors")


def _empty():
    return np.zeros(0, np.int64), np.zeros(0, np.float32)


class RowVectors:
    """Float32 vectors of the live rows, from one in-RAM matrix or several memory-mapped
    segment files (physical rows, tombstoned ones included) plus a live -> physical map."""

    def __init__(self, parts: list[np.ndarray], dim: int, live_phys: np.ndarray | None = None):
        self.parts = parts
        self.dim = dim
        self.offsets = np.cumsum([0] + [len(p) for p in parts]).astype(np.int64)
        self.live_phys = live_phys
        n = int(self.offsets[-1]) if live_phys is None else len(live_phys)
        self.shape = (n, dim)
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def _phys(self, rows: np.ndarray) -> np.ndarray:
        return rows if self.live_phys is None else self.live_phys[rows]

    def __getitem__(self, rows):
        if isinstance(rows, (int, np.integer)):
            r = int(rows)
            if r < 0:
                r += self.shape[0]
            return self.take(np.array([r]))[0]
        if isinstance(rows, slice):
            rows = np.arange(self.shape[0])[rows]
        return self.take(np.asarray(rows, dtype=np.int64))

    def take(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        phys = self._phys(rows)
        if len(self.parts) == 1:
            return np.asarray(self.parts[0][phys], dtype=np.float32)
        out = np.empty((len(rows), self.dim), np.float32)
        seg = np.searchsorted(self.offsets, phys, side="right") - 1
        for s in np.unique(seg):
            m = seg == s
            out[m] = self.parts[s][phys[m] - self.offsets[s]]
        return out

    def score(self, q: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Exact inner products of q with the given rows (sorted rows read the files in order)."""
        if len(rows) == 0:
            return np.zeros(0, np.float32)
        rows = np.asarray(rows, dtype=np.int64)
        ordered = bool(np.all(rows[1:] >= rows[:-1]))
        order = np.arange(len(rows)) if ordered else np.argsort(rows, kind="stable")
        s = np.empty(len(rows), np.float32)
        step = 32_768
        for i in range(0, len(rows), step):
            idx = slice(i, i + step) if ordered else order[i:i + step]
            s[idx] = inner_products(self.take(rows[idx]), q)
        return s

    def matrix(self) -> np.ndarray:
        """All live rows as one contiguous in-RAM matrix (small indexes only)."""
        if len(self.parts) == 1 and self.live_phys is None and isinstance(self.parts[0], np.ndarray) \
                and not isinstance(self.parts[0], np.memmap):
            return np.ascontiguousarray(self.parts[0], dtype=np.float32)
        return self.take(np.arange(self.shape[0]))

    def in_ram_bytes(self) -> int:
        return sum(p.nbytes for p in self.parts if not isinstance(p, np.memmap))


def inner_products(x: np.ndarray, q: np.ndarray) -> np.ndarray:
    """x @ q with FAISS's single-threaded SIMD kernel: for one query, BLAS's threads cost more
    than they give on a busy machine, where OpenBLAS's threads wait for cores."""
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    q = np.ascontiguousarray(q, dtype=np.float32)
    out = np.empty(len(x), np.float32)
    if len(x):
        faiss.fvec_inner_products_ny(faiss.swig_ptr(out), faiss.swig_ptr(q), faiss.swig_ptr(x),
                                     x.shape[1], len(x))
    return out


class FlatIndex:
    """Exact: all vectors in RAM, FAISS IndexFlatIP; filtered search via an id bitmap."""

    kind = "flat"

    def __init__(self, vectors: RowVectors):
        import faiss

        self.vectors = vectors
        self.matrix = vectors.matrix()
        self.n = len(self.matrix)
        self.index = faiss.IndexFlatIP(vectors.dim)
        if self.n:
            self.index.add(self.matrix)
        self.build_s = 0.0

    def memory_bytes(self) -> int:
        return self.matrix.nbytes * 2  # the matrix and FAISS's copy

    def score(self, q, rows):
        return inner_products(self.matrix[rows], q)

    def search(self, q: np.ndarray, k: int, *, want: int | None = None):
        """Approximate-order candidates (here exact): rows, scores, at most `want` of them."""
        n = min(want or k, self.n)
        if n <= 0:
            return _empty()
        s, r = self.index.search(q[None], n)
        keep = r[0] >= 0
        return r[0][keep].astype(np.int64), s[0][keep]

    def search_in(self, q: np.ndarray, want: int, rows: np.ndarray):
        """Top `want` among `rows` (exact)."""
        import faiss

        mask = np.zeros(self.n, dtype=bool)
        mask[rows] = True
        bitmap = np.packbits(mask, bitorder="little")
        sel = faiss.IDSelectorBitmap(self.n, faiss.swig_ptr(bitmap))
        s, r = self.index.search(q[None], min(want, len(rows)), params=faiss.SearchParameters(sel=sel))
        keep = r[0] >= 0
        return r[0][keep].astype(np.int64), s[0][keep]

    def describe(self) -> dict:
        return {"kind": self.kind}


# --- IVF-PQ ---------------------------------------------------------------------------------
class IVFPQIndex:
    """Approximate candidates from IVF-PQ codes in RAM; exact scores from the float32 vectors on
    disk. `search` / `search_in` return candidates already re-ranked exactly."""

    kind = "ivfpq"

    def __init__(self, index, vectors: RowVectors, assign: np.ndarray, digest: str, build_s: float,
                 config: VectorIndexConfig):
        self.index = index
        self.vectors = vectors
        self.assign = assign            # list number of each live row (int16/int32)
        self.n = len(assign)
        self.nlist = index.nlist
        self.digest = digest
        self.build_s = build_s
        self.config = config
        self.nprobe = config.nprobe
        self.rerank_depth = config.rerank
        self.centroids = index.quantizer.reconstruct_n(0, index.nlist)
        self.list_sizes = np.bincount(assign, minlength=index.nlist)

    on_disk = False   # inverted lists memory-mapped from vindex/ivf-*.ivfdata (engine/retrieval/ondisk.py)

    def memory_bytes(self) -> int:
        import faiss

        if self.on_disk:
            return int(self.assign.nbytes + self.centroids.nbytes * 2)
        inv = faiss.extract_index_ivf(self.index).invlists
        codes = sum(inv.list_size(i) for i in range(self.nlist)) * (inv.code_size + 8)
        return int(codes + self.assign.nbytes + self.centroids.nbytes * 2)

    def score(self, q, rows):
        return self.vectors.score(q, rows)

    def candidates(self, q: np.ndarray, want: int, nprobe: int | None = None) -> np.ndarray:
        """Rows of the best `want` by PQ score over `nprobe` lists (approximate order)."""
        import faiss

        want = min(self.n, want)
        if want <= 0:
            return np.zeros(0, np.int64)
        p = faiss.SearchParametersIVF(nprobe=min(self.nlist, nprobe or self.nprobe))
        _, r = self.index.search(q[None], want, params=p)
        r = r[0]
        return r[r >= 0].astype(np.int64)

    def rerank(self, q, rows):
        """Exact scores from the float32 vectors, best first."""
        rows = rows[rows >= 0].astype(np.int64)
        if len(rows) == 0:
            return _empty()
        s = self.vectors.score(q, rows)
        order = np.argsort(-s, kind="stable")
        return rows[order], s[order]

    def search(self, q: np.ndarray, k: int, *, want: int | None = None, nprobe: int | None = None):
        """Best `want` (at least the configured re-rank depth and 3 k) by PQ over `nprobe`
        lists, re-ranked exactly."""
        return self.rerank(q, self.candidates(q, max(want or 0, self.rerank_depth, 3 * k), nprobe))

    def probes_for(self, q: np.ndarray, rows: np.ndarray, target: int | None = None) -> tuple[int, int]:
        """Fewest nearest lists that together hold `target` (default: `scan_target`) of `rows`
        (filter-aware nprobe), and how many entries those lists hold (the scan's cost)."""
        counts = np.bincount(self.assign[rows], minlength=self.nlist)
        order = np.argsort(-(self.centroids @ q))
        cum = np.cumsum(counts[order])
        # at least scan_target candidates, and at least the share of them an unfiltered search
        # scans of the whole index (nprobe / nlist): large filtered sets need it just the same
        share = int(np.ceil(len(rows) * min(1.0, self.nprobe / self.nlist)))
        need = min(max(target or self.config.scan_target, share), len(rows))
        nprobe = int(min(self.nlist, max(self.config.min_nprobe, np.searchsorted(cum, need) + 1)))
        return nprobe, int(self.list_sizes[order[:nprobe]].sum())

    def probes_for_want(self, q: np.ndarray, rows: np.ndarray, want: int) -> int:
        """The filter-aware probe count for `want` candidates among `rows`."""
        return self.probes_for(q, rows, max(self.config.scan_target, max(want, self.rerank_depth)))[0]

    def search_in(self, q: np.ndarray, want: int, rows: np.ndarray, nprobe: int | None = None):
        """Best `want` (at least the re-rank depth) among `rows`, over `nprobe` lists (default:
        the filter-aware count), re-ranked exactly."""
        import faiss

        want = max(want, self.rerank_depth)
        if nprobe is None:
            nprobe = self.probes_for_want(q, rows, want)
        mask = np.zeros(self.n, dtype=bool)
        mask[rows] = True
        bitmap = np.packbits(mask, bitorder="little")
        sel = faiss.IDSelectorBitmap(self.n, faiss.swig_ptr(bitmap))
        p = faiss.SearchParametersIVF(sel=sel, nprobe=nprobe)
        _, r = self.index.search(q[None], min(want, len(rows)), params=p)
        return self.rerank(q, r[0])

    def describe(self) -> dict:
        return {"kind": self.kind, "nlist": self.nlist, "pq_m": self.index.pq.M,
                "lists_on_disk": self.on_disk, "nprobe": self.nprobe, "rerank": self.rerank_depth,
                "scan_target": self.config.scan_target,
                "quantizer": self.digest}


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, arr)


def _train(vectors: RowVectors, dim: int, nlist: int, m: int, train_sample: int, seed: int = 0):
    import faiss

    n = len(vectors)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(n, max(train_sample, 40 * nlist)), replace=False))
    x = vectors.take(sample)
    q = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFPQ(q, dim, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = 12
    index.cp.seed = seed
    index.train(x)
    return index


def quantizer_problem(index, dim: int, nlist: int, m: int) -> str | None:
    """Why a deserialised quantiser cannot serve this index (None: it can)."""
    import faiss

    ivf = index  # deserialize_index returns the most derived type
    if not isinstance(ivf, faiss.IndexIVFPQ):
        return f"a {type(ivf).__name__}, not an IVF-PQ index"
    if ivf.d != dim or ivf.nlist != nlist or ivf.pq.M != m:
        return f"dimension {ivf.d}, {ivf.nlist} lists, {ivf.pq.M}-byte codes; this index needs {dim}, {nlist}, {m}"
    if not ivf.is_trained or ivf.ntotal != 0:
        return "not a trained, empty quantiser"
    if not np.isfinite(ivf.quantizer.reconstruct_n(0, ivf.nlist)).all():
        return "its centroids are not finite"
    return None


def quantizer_params(n_rows: int, config: VectorIndexConfig) -> tuple[int, int, str]:
    nlist = min(config.nlist, max(16, n_rows // 64))
    m = config.pq_m
    return nlist, m, f"quantizer-ivf{nlist}-pq{m}.faiss"


def read_quantizer(path: Path, dim: int, nlist: int, m: int):
    """-> (index, digest), or (None, why) when the file does not deserialise or does not fit."""
    import faiss

    try:
        raw = path.read_bytes()
        index = faiss.deserialize_index(np.frombuffer(raw, np.uint8))
    except FileNotFoundError:
        return None, "missing"
    except (OSError, RuntimeError) as e:
        return None, f"unreadable ({str(e).splitlines()[0][:100] if str(e) else type(e).__name__})"
    why = quantizer_problem(index, dim, nlist, m)
    if why:
        return None, why
    return index, hashlib.sha256(raw).hexdigest()[:16]  # owns the C++ object (a downcast view would not)


def load_quantizer(root: Path, vectors: RowVectors, dim: int, config: VectorIndexConfig,
                   _retry: bool = True):
    """-> (trained empty IndexIVFPQ, digest). Trained once per index; the first reader to
    publish it wins (hard link: never replaced while sound), later readers use that one. A file
    that does not deserialise or does not fit the index (damaged, or copied from another) is
    removed and trained again, never used."""
    import faiss

    nlist, m, name = quantizer_params(len(vectors), config)
    path = root / "vindex" / name
    if path.is_file():
        index, digest = read_quantizer(path, dim, nlist, m)
        if index is not None:
            return index, digest
        log.warning("%s: %s; training the quantiser again", path, digest)
        try:
            path.unlink()
        except OSError:
            pass
    index = _train(vectors, dim, nlist, m, config.train_sample)
    raw = faiss.serialize_index(index).tobytes()
    try:
        try_atomic_write(path, lambda p: p.write_bytes(raw), exclusive=True)
    except FileExistsError:  # another reader published first: use theirs
        if _retry:
            return load_quantizer(root, vectors, dim, config, _retry=False)
    return index, hashlib.sha256(raw).hexdigest()[:16]


CODES_SAMPLE = 32  # rows re-encoded on every load to tie a codes file to its segment's vectors


def codes_paths(root: Path, segment: str, digest: str) -> tuple[Path, Path]:
    base = root / "vindex" / f"{segment}.{digest}.codes"
    return base.with_name(base.name + ".npy"), base.with_name(base.name + ".json")


def _codes_digest(codes: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(codes).tobytes(), digest_size=16).hexdigest()


def codes_problem(codes: np.ndarray, meta_path: Path, segment: str, part: np.ndarray, trained,
                  digest: str, *, full: bool = False, chunk: int = 131_072) -> str | None:
    """Why cached codes cannot stand for `segment`'s vectors (None: they can). Checked against
    what was recorded when they were written (segment, rows, quantiser, checksum) and against
    the source: a sample of rows (every row with full=True, as `glb check` does) re-encoded
    from the segment's vectors must give the same codes."""
    import json

    if codes.ndim != 2 or codes.shape != (part.shape[0], trained.sa_code_size()) or codes.dtype != np.uint8:
        return f"shape {codes.shape}, the segment needs ({part.shape[0]}, {trained.sa_code_size()})"
    try:
        meta = json.loads(meta_path.read_bytes())
    except FileNotFoundError:
        return "no record of what it was made from"
    except (OSError, ValueError) as e:
        return f"its record is unreadable ({e})"
    want = {"segment": segment, "rows": int(part.shape[0]), "quantizer": digest}
    for k, v in want.items():
        if meta.get(k) != v:
            return f"made for {k} {meta.get(k)!r}, not {v!r}"
    if meta.get("checksum") != _codes_digest(codes):
        return "its checksum does not match (damaged)"
    n = part.shape[0]
    rows = np.arange(n) if full else np.unique(np.linspace(0, n - 1, min(n, CODES_SAMPLE)).astype(np.int64))
    for i in range(0, len(rows), chunk):
        r = rows[i:i + chunk]
        again = trained.sa_encode(np.ascontiguousarray(part[r], dtype=np.float32))
        if not np.array_equal(again, codes[r]):
            return "its codes do not encode the segment's vectors"
    return None


def segment_codes(root: Path, segment: str, part: np.ndarray, trained, digest: str,
                  chunk: int) -> np.ndarray:
    """sa_encode codes (list number + PQ code) of every physical row of one segment, cached in
    vindex/ with a record of what they were made from; a cached file is used only while it
    matches (codes_problem), and rebuilt otherwise."""
    import json

    path, meta_path = codes_paths(root, segment, digest)
    if path.is_file():
        try:
            codes = np.load(path)
            why = codes_problem(codes, meta_path, segment, part, trained, digest, chunk=chunk)
            if why is None:
                return codes
            log.warning("%s: %s; encoding the segment again", path, why)
        except (OSError, ValueError) as e:
            log.warning("%s: unreadable (%s); encoding the segment again", path, e)
    advise(part, "sequential")  # one pass over the whole file: read ahead
    try:
        outs = [trained.sa_encode(np.ascontiguousarray(part[i:i + chunk], dtype=np.float32))
                for i in range(0, part.shape[0], chunk)]
    finally:
        advise(part, "random")  # back to the search's pattern (snapshot._load_segment)
    codes = np.concatenate(outs) if outs else np.zeros((0, trained.sa_code_size()), np.uint8)
    meta = {"segment": segment, "rows": int(part.shape[0]), "quantizer": digest,
            "checksum": _codes_digest(codes)}
    if try_atomic_write(path, lambda p: _save_npy(p, codes)):
        try_atomic_write(meta_path, lambda p: p.write_bytes(json.dumps(meta).encode()))
    return codes


def derived_problems(root: Path, segments: list[tuple[str, int]], dim: int) -> list[tuple[Path, str]]:
    """(file, why) for each derived file in vindex/ that a searcher would not use as is (for
    `glb check`; searchers rebuild them). Independent of the search config: every quantiser
    file present is checked against the parameters its name states, and the codes made with
    each sound one are re-encoded in full. Codes of no quantiser present are stale leftovers
    (deleted later), not damage."""
    folder = Path(root) / "vindex"
    if not folder.is_dir():
        return []
    out: list[tuple[Path, str]] = []
    quantizers = {}
    for path in sorted(folder.glob("quantizer-ivf*-pq*.faiss")):
        m = re.fullmatch(r"quantizer-ivf(\d+)-pq(\d+)\.faiss", path.name)
        if not m:
            continue
        trained, digest = read_quantizer(path, dim, int(m.group(1)), int(m.group(2)))
        if trained is None:
            out.append((path, digest))
        else:
            quantizers[digest] = trained
    for seg, _rows in segments:
        for digest, trained in quantizers.items():
            path, meta_path = codes_paths(Path(root), seg, digest)
            if not path.is_file():
                continue
            try:
                codes = np.load(path)
                part = np.load(Path(root) / "segments" / seg / "vectors.npy", mmap_mode="r")
                why = codes_problem(codes, meta_path, seg, part, trained, digest, full=True)
            except (OSError, ValueError) as e:
                why = f"unreadable ({e})"
            if why:
                out.append((path, why))
    return out


def build_ivfpq(root: Path, segments: list[tuple[str, np.ndarray, np.ndarray | None]],
                vectors: RowVectors, dim: int, config: VectorIndexConfig) -> IVFPQIndex:
    """segments: (name, memory-mapped float32 vectors, live mask or None) in row order."""
    import faiss

    from . import ondisk

    t0 = time.perf_counter()
    trained, digest = load_quantizer(root, vectors, dim, config)
    if len(vectors) * (trained.code_size + 8) > config.lists_ram_budget:
        def live_codes():
            for name, part, live in segments:
                codes = segment_codes(root, name, part, trained, digest, config.encode_chunk)
                yield codes if live is None else codes[live]

        rows = [(name, int(part.shape[0] if live is None else live.sum())) for name, part, live in segments]
        try:
            index, assign = ondisk.build_or_load(root, trained, digest, live_codes, rows)
        except (OSError, RuntimeError) as e:  # e.g. a read-only index folder: lists in RAM
            log.warning("on-disk inverted lists unavailable (%s); keeping them in memory",
                        str(e).splitlines()[0][:160])
        else:
            _gc(root, {name for name, _, _ in segments}, digest)
            ondisk.gc(root, ondisk.lists_key(digest, rows))
            out = IVFPQIndex(index, vectors, assign, digest, time.perf_counter() - t0, config)
            out.on_disk = True
            return out
    index = faiss.clone_index(trained)
    coarse = trained.coarse_code_size()
    parts = []
    for name, part, live in segments:
        codes = segment_codes(root, name, part, trained, digest, config.encode_chunk)
        parts.append(codes if live is None else codes[live])
    codes = np.concatenate(parts) if len(parts) > 1 else (parts[0] if parts else
                                                            np.zeros((0, trained.sa_code_size()), np.uint8))
    del parts
    lists = np.zeros(len(codes), np.int64)
    for b in range(coarse):  # little-endian list number in the first bytes of each code
        lists |= codes[:, b].astype(np.int64) << (8 * b)
    # one add per list, of exactly its entries: the inverted lists are allocated once at their
    # final size (adding segment by segment grew them, up to 2x, by vector doubling)
    order = np.argsort(lists, kind="stable")
    bounds = np.searchsorted(lists[order], np.arange(trained.nlist + 1))
    invlists = index.invlists
    for lst in np.flatnonzero(np.diff(bounds)):
        a, b = bounds[lst], bounds[lst + 1]
        ids = np.ascontiguousarray(order[a:b], dtype=np.int64)
        pq = np.ascontiguousarray(codes[order[a:b], coarse:])
        invlists.add_entries(int(lst), int(b - a), faiss.swig_ptr(ids), faiss.swig_ptr(pq))
    index.ntotal = len(codes)
    assign_parts = [lists.astype(np.int16 if trained.nlist < 32768 else np.int32)]
    del codes, order
    assign = np.concatenate(assign_parts) if assign_parts else np.zeros(0, np.int16)
    _gc(root, {name for name, _, _ in segments}, digest)
    return IVFPQIndex(index, vectors, assign, digest, time.perf_counter() - t0, config)


def _gc(root: Path, live_segments: set[str], digest: str, grace_s: float = 600) -> None:
    """Drop cached files of segments that no longer exist (a writer deleted them) and codes
    made with another quantiser (one found damaged and trained again)."""
    folder = root / "vindex"
    if not folder.is_dir():
        return
    now = time.time()
    for p in folder.iterdir():
        if p.name.startswith("quantizer-") or p.name.lstrip(".").startswith("ivf-"):
            continue  # on-disk lists: engine/retrieval/ondisk.gc
        parts = p.name.lstrip(".").split(".")
        seg = parts[0]
        other_quantizer = len(parts) > 2 and parts[2] == "codes" and parts[1] != digest
        if (seg in live_segments or (root / "segments" / seg).is_dir()) and not other_quantizer:
            continue
        try:
            if now - p.stat().st_mtime > grace_s:
                p.unlink()
        except OSError:
            pass
