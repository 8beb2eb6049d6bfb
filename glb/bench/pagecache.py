"""Evict an index's files from the page cache, for cold-query latency.

Without root there is no `drop_caches`, but the kernel drops a file's clean cached pages on
`posix_fadvise(POSIX_FADV_DONTNEED)` — except pages some process still maps. The benchmark's own
process maps the index (memory-mapped float32 vectors, FAISS's on-disk lists), so its mappings of
files under the folder are first released with `madvise(MADV_DONTNEED)` (the mapping stays valid;
the next touch faults the page in again, from disk once it is evicted).

"Cold" means out of this machine's page cache: a virtual disk may still be cached by its host.
"""

from __future__ import annotations

import ctypes
import mmap
import os
from pathlib import Path

_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte))
_libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
_libc.mmap.restype = ctypes.c_void_p
_libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
PAGE = mmap.PAGESIZE


def _files(folder: Path) -> list[Path]:
    return [Path(r) / f for r, _, fs in os.walk(folder) for f in fs]


def _own_mappings(folder: Path) -> list[tuple[int, int]]:
    """(start, length) of this process's mappings of files under `folder`."""
    root = str(folder.resolve())
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and parts[5].strip().startswith(root + os.sep):
                a, b = (int(x, 16) for x in parts[0].split("-"))
                out.append((a, b - a))
    return out


def evict(folder: str | Path) -> dict:
    """Drop every file under `folder` from the page cache (this process's mappings of them
    released first). Returns how many files and mappings were handled."""
    folder = Path(folder)
    maps = _own_mappings(folder)
    for start, length in maps:
        if _libc.madvise(start, length, mmap.MADV_DONTNEED) != 0:
            raise OSError(ctypes.get_errno(), f"madvise failed on a mapping of {folder}")
    files = _files(folder)
    for p in files:
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue  # replaced or removed since the walk
        try:
            os.fdatasync(fd)  # dirty pages are not dropped: a freshly written file is written out first
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return {"files": len(files), "mappings": len(maps)}


def resident_bytes(path: str | Path) -> int:
    """Bytes of the file at `path` now in the page cache (mincore over a fresh mapping)."""
    size = os.path.getsize(path)
    if size == 0:
        return 0
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), f"mmap failed on {path}")
        try:
            n = (size + PAGE - 1) // PAGE
            vec = (ctypes.c_ubyte * n)()
            if _libc.mincore(addr, size, vec) != 0:
                raise OSError(ctypes.get_errno(), f"mincore failed on {path}")
            return sum(b & 1 for b in vec) * PAGE
        finally:
            _libc.munmap(addr, size)
    finally:
        os.close(fd)


def read_bytes() -> int:
    """Bytes this process has caused to be fetched from storage (/proc/self/io read_bytes)."""
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("read_bytes:"):
                return int(line.split()[1])
    return 0
