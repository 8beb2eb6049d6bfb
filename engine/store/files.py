"""Atomic file writes, the one implementation every module uses: write beside, (fsync,)
rename, (fsync the folder). A reader or a crash sees the old file or the new one, never half
of one.

- `atomic_write` / `atomic_write_bytes`: the store's own files (manifests, CURRENT): durable,
  with crash points, errors raised.
- `try_atomic_write`: derived files a reader may cache beside the store (the vector index's
  codes, memory-mapped tile records): not fsynced, and a folder that cannot be written only
  costs the cache (returns False, logs one warning).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from ..errors import IndexWriteError
from .faults import crash_point

log = logging.getLogger("glb.store")

__all__ = ["IndexWriteError", "atomic_write", "atomic_write_bytes", "fsync_dir", "fsync_file",
           "temp_path", "try_atomic_write"]


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def temp_path(path: Path) -> Path:
    """The hidden temporary beside `path`, unique per process and thread."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")


def atomic_write(path: Path, write: Callable[[Path], object], *, durable: bool = True,
                 crash: str | None = None, exclusive: bool = False) -> None:
    """Make `path` by calling `write(tmp)` on a temporary file beside it, then renaming it.

    durable: fsync the file before the rename and the folder after it.
    crash: names the crash point (engine/store/faults.py) between the temporary file being
        complete and its rename.
    exclusive: publish by hard link, so an existing `path` is never replaced (raises
        FileExistsError; the first writer wins).
    A failed write (disk full, read-only) removes the temporary file and raises.
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        write(tmp)
        if durable:
            fsync_file(tmp)
        if crash:
            crash_point(f"{crash}_tmp")
        if exclusive:
            os.link(tmp, path)
            tmp.unlink()
        else:
            os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise
    if durable:
        fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes, crash: str | None = None) -> None:
    """Durable `atomic_write` of a bytes object."""
    atomic_write(path, lambda p: p.write_bytes(data), crash=crash)


def try_atomic_write(path: Path, write: Callable[[Path], object], *, exclusive: bool = False) -> bool:
    """Best-effort `atomic_write` of a derived file (not fsynced): False, with one warning,
    when the folder cannot be written. With `exclusive`, an existing file raises
    FileExistsError (another process published first)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, write, durable=False, exclusive=exclusive)
        return True
    except FileExistsError:
        if exclusive and path.is_file():
            raise
        log.warning("cannot persist %s (a folder is in the way); keeping it in memory", path)
        return False
    except OSError as e:
        log.warning("cannot persist %s (%s); keeping it in memory", path, e)
        return False
