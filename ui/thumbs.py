"""Result thumbnails (JPEG bytes by tile id), fetched from the engine in one call per page (one
read per segment) and kept for the whole server process. No Streamlit here."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Iterator

import engine


class Thumbnails:
    def __init__(self, idx, max_items: int = 4096):
        self.idx, self.max_items = idx, max_items
        self.lock = threading.Lock()
        self.data: OrderedDict[int, bytes | None] = OrderedDict()

    def _fetch(self, tile_ids: list[int]) -> dict[int, bytes | None]:
        try:
            return self.idx.thumbnails(tile_ids)
        except engine.GLBError:  # e.g. one compacted away since the search: fetch one by one
            out = {}
            for t in tile_ids:
                try:
                    out[t] = self.idx.thumbnail(t)
                except engine.GLBError:
                    out[t] = None
            return out

    def _keep(self, tile_id: int, jpeg: bytes | None) -> None:
        with self.lock:
            self.data[tile_id] = jpeg
            while len(self.data) > self.max_items:
                self.data.popitem(last=False)

    def iter(self, tile_ids) -> Iterator[tuple[int, bytes | None]]:
        """(tile id, JPEG or None) for each id: the ones at hand first, then the others."""
        ids = list(dict.fromkeys(int(t) for t in tile_ids))
        with self.lock:
            ready = [(t, self.data[t]) for t in ids if t in self.data]
        yield from ready
        missing = [t for t in ids if t not in {r[0] for r in ready}]
        if not missing:
            return
        fetched = self._fetch(missing)
        for t in missing:
            jpeg = fetched.get(t)
            self._keep(t, jpeg)
            yield t, jpeg

    def get(self, tile_ids) -> dict[int, bytes | None]:
        return dict(self.iter(tile_ids))
