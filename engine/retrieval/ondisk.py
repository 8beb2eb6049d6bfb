"""IVF-PQ inverted lists on disk: an index larger than RAM opens and searches with bounded memory.

In RAM, `engine/retrieval/vectors.py` keeps every vector's PQ code and row id (~104 B a vector at 96-byte
codes: 1 GB at 10 M, 10 GB at 100 M). On disk, the same lists live in one file per generation,
`<index>/vindex/ivf-<key>.ivfdata`, laid out list after list (FAISS `OnDiskInvertedLists`,
memory-mapped): a query touches only the lists it probes, the OS pages them in and may evict
them, and the process's own memory holds the quantiser, one list number per vector (2 B) and
the compact filter columns. The float32 vectors for the exact re-ranking were already read from
the segments' memory-mapped `vectors.npy`.

The file is derived data, built from the per-segment codes `vectors.segment_codes` caches, in
two passes that hold one segment's codes at a time: count each list's entries, size the file
exactly (`set_all_lists_sizes`), then write every segment's entries at their place. `<key>`
names the quantiser, the segments and the tombstones, so a generation with the same live rows
reuses the file and a new one builds its own; files of older generations are deleted after a
grace period like the per-segment codes.

Used when the codes and ids would take more than `VectorIndexConfig.lists_ram_budget` bytes
(default 2 GiB, ~20 M vectors at 96-byte codes; `GLB_IVF_RAM_BUDGET`; 1 = always on disk).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("glb.vectors")


@contextlib.contextmanager
def _c_stdout_to_stderr():
    """FAISS's on-disk lists print to the C stdout when they resize their file; a command
    whose stdout is JSON (`glb search --json`) must not get those lines."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def lists_key(digest: str, segments: list[tuple[str, int]]) -> str:
    """Names the live rows the lists hold: quantiser, then (segment, live rows) in order."""
    h = hashlib.sha256(digest.encode())
    for name, n_live in segments:
        h.update(f"|{name}:{n_live}".encode())
    return h.hexdigest()[:16]


def _list_numbers(codes: np.ndarray, coarse: int) -> np.ndarray:
    lists = np.zeros(len(codes), np.int64)
    for b in range(coarse):  # little-endian list number in the first bytes of each code
        lists |= codes[:, b].astype(np.int64) << (8 * b)
    return lists


def build_or_load(root: Path, trained, digest: str, parts, key_rows: list[tuple[str, int]]):
    """-> (IndexIVFPQ whose lists are on disk, list number of each live row).

    `parts`: a callable returning, per segment in row order, that segment's live codes
    (sa_encode layout: list number, then PQ code), one segment at a time."""
    import faiss

    folder = root / "vindex"
    key = lists_key(digest, key_rows)
    index_path = folder / f"ivf-{key}.index"
    data_path = folder / f"ivf-{key}.ivfdata"
    coarse = trained.coarse_code_size()
    # pass 1: list numbers (kept: the filter-aware probe count needs them) and list sizes
    assign_parts = [(_list_numbers(c, coarse)).astype(np.int16 if trained.nlist < 32768 else np.int32)
                    for c in parts()]
    assign = np.concatenate(assign_parts) if assign_parts else np.zeros(0, np.int16)
    del assign_parts
    if index_path.is_file() and data_path.is_file():
        try:
            with _c_stdout_to_stderr():
                index = faiss.read_index(str(index_path), faiss.IO_FLAG_ONDISK_SAME_DIR)
            if index.ntotal == len(assign):
                return index, assign
        except RuntimeError as e:
            log.warning("rebuilding on-disk lists %s (%s)", index_path, str(e).splitlines()[0][:120])
    folder.mkdir(parents=True, exist_ok=True)
    tmp_data = folder / f".ivf-{key}.{os.getpid()}.{threading.get_ident()}.ivfdata"
    tmp_index = tmp_data.with_suffix(".index")
    t0 = time.perf_counter()
    sizes = np.bincount(assign.astype(np.int64), minlength=trained.nlist).astype(np.uint64)
    with _c_stdout_to_stderr():
        inv = faiss.OnDiskInvertedLists(trained.nlist, trained.code_size, str(tmp_data))
        # the file at its final size first: set_all_lists_sizes lays the lists out in it
        inv.update_totsize(max(1, int(sizes.sum())) * (8 + trained.code_size))
        inv.set_all_lists_sizes(faiss.swig_ptr(np.ascontiguousarray(sizes)))
        fill = np.zeros(trained.nlist, np.int64)
        row0 = 0
        for codes in parts():  # pass 2: each segment's entries at their place in their list
            lists = _list_numbers(codes, coarse)
            order = np.argsort(lists, kind="stable")
            bounds = np.searchsorted(lists[order], np.arange(trained.nlist + 1))
            for lst in np.flatnonzero(np.diff(bounds)):
                a, b = int(bounds[lst]), int(bounds[lst + 1])
                ids = np.ascontiguousarray(order[a:b] + row0, dtype=np.int64)
                pq = np.ascontiguousarray(codes[order[a:b], coarse:])
                inv.update_entries(int(lst), int(fill[lst]), b - a, faiss.swig_ptr(ids), faiss.swig_ptr(pq))
                fill[lst] += b - a
            row0 += len(codes)
        index = faiss.clone_index(trained)
        index.replace_invlists(inv, True)
        inv.this.disown()  # the index owns it now
        index.ntotal = int(len(assign))
        inv.filename = str(data_path)   # the name the index file records: the final one
        faiss.write_index(index, str(tmp_index))
    del index
    os.replace(tmp_data, data_path)     # data first: an index file always names a whole data file
    os.replace(tmp_index, index_path)
    log.info("wrote on-disk inverted lists %s (%d rows) in %.1f s", data_path.name, len(assign),
             time.perf_counter() - t0)
    with _c_stdout_to_stderr():
        index = faiss.read_index(str(index_path), faiss.IO_FLAG_ONDISK_SAME_DIR)
    return index, assign


def gc(root: Path, keep_key: str | None, grace_s: float = 600) -> None:
    """Delete on-disk lists of other generations once no searcher can still be using them."""
    folder = root / "vindex"
    if not folder.is_dir():
        return
    now = time.time()
    for p in folder.iterdir():
        name = p.name.lstrip(".")
        if not name.startswith("ivf-") or (keep_key and name.startswith(f"ivf-{keep_key}.")):
            continue
        try:
            if now - p.stat().st_mtime > grace_s:
                p.unlink()
        except OSError:
            pass
