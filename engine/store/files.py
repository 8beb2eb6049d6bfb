"""Durable file writes: write beside, fsync, rename, fsync the folder. A reader or a crash sees
the old file or the new one, never half of one."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import GLBError
from .faults import crash_point


class IndexWriteError(GLBError):
    """The index cannot be written (read-only, disk full, not a folder); what is published
    is unchanged."""


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, crash: str | None = None) -> None:
    """`crash` names the crash point (engine/store/faults.py) between the temporary file being
    durable and its rename. A failed write (disk full, read-only) removes the temporary file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if crash:
            crash_point(f"{crash}_tmp")
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)


def fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())
