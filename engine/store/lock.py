"""The writer lock of an index: one indexer at a time, readers never wait for it.

`flock` on `index/LOCK`: the kernel drops it when the holder dies, so a lock left by a
killed run is never stale in fact; the file still names the last holder, which lets a new
run say it recovered after a crash rather than pretend nothing happened.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from ..errors import IndexLockedError, IndexWriteError
from .faults import crash_point


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WriterLock:
    def __init__(self, index_dir: Path):
        self.path = Path(index_dir) / "LOCK"
        self.fd: int | None = None
        self.recovered_from: dict | None = None

    def acquire(self) -> "WriterLock":
        where = self.path.parent
        try:
            if where.exists() and not where.is_dir():
                raise IndexWriteError(f"{where}: is a file, not an index folder")
            where.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise IndexWriteError(f"{where}: cannot write here ({e.strerror}); "
                                  f"{'the index is read-only' if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM) else 'nothing was changed'}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._read(fd)
            os.close(fd)
            who = (f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('started')}"
                   if holder else "another process")
            raise IndexLockedError(
                f"{self.path.parent}: another indexer is writing this index ({who}); "
                f"wait for it to finish") from None
        previous = self._read(fd)
        if previous and previous.get("state") == "held":
            pid = int(previous.get("pid", -1))
            if previous.get("host") != socket.gethostname() or not _alive(pid) or pid == os.getpid():
                self.recovered_from = previous
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                      "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                      "state": "held"}).encode(), 0)
            os.fsync(fd)
        except OSError as e:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise IndexWriteError(f"{where}: cannot write the writer lock ({e.strerror}); "
                                  f"nothing was changed") from None
        self.fd = fd
        crash_point("lock.acquired")
        return self

    @staticmethod
    def _read(fd: int) -> dict | None:
        try:
            raw = os.pread(fd, 4096, 0)
            return json.loads(raw) if raw.strip() else None
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self.fd is None:
            return
        info = self._read(self.fd) or {}
        info["state"] = "released"
        try:  # best effort: on a full disk the note may not fit; the lock is released anyway
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, json.dumps(info).encode(), 0)
        except OSError:
            pass
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> "WriterLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
