"""Result thumbnails (PNG bytes by tile id), fetched from the engine two at a time and kept for
the whole server process. No Streamlit here."""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Iterator

import engine


class Thumbnails:
    def __init__(self, idx, max_items: int = 4096, workers: int = 2):
        self.idx, self.max_items, self.workers = idx, max_items, workers
        self.lock = threading.Lock()
        self.data: OrderedDict[int, bytes | None] = OrderedDict()

    def _fetch(self, tile_id: int) -> bytes | None:
        try:
            return self.idx.thumbnail(tile_id)
        except engine.GLBError:  # e.g. compacted away since the search: no picture, no error
            return None

    def _keep(self, tile_id: int, png: bytes | None) -> None:
        with self.lock:
            self.data[tile_id] = png
            while len(self.data) > self.max_items:
                self.data.popitem(last=False)

    def iter(self, tile_ids) -> Iterator[tuple[int, bytes | None]]:
        """(tile id, PNG or None) for each id: the ones at hand first, then the others as
        they arrive, so a page can show each picture as soon as it has it."""
        ids = list(dict.fromkeys(int(t) for t in tile_ids))
        with self.lock:
            ready = [(t, self.data[t]) for t in ids if t in self.data]
        yield from ready
        missing = [t for t in ids if t not in {r[0] for r in ready}]
        if not missing:
            return
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            futures = {pool.submit(self._fetch, t): t for t in missing}
            for fut in as_completed(futures):
                t = futures[fut]
                png = fut.result()
                self._keep(t, png)
                yield t, png

    def get(self, tile_ids) -> dict[int, bytes | None]:
        return dict(self.iter(tile_ids))
