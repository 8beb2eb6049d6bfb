"""Prefetcher: runs the reader stage ahead of the mapper, in a background thread.

The reader reads and preprocesses the next tiles while the caller's thread embeds them
(rasterio and torch release the GIL). `ThreadPrefetcher.run(produce)` is the whole contract a
runner relies on (see runner.py): `produce(stop)` yields items; `run` yields them in order,
re-raises the producer's exception, and stops the producer when its iterator is closed.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


class ThreadPrefetcher:
    """Up to `depth` items read ahead in one background thread."""

    def __init__(self, depth: int = 3):
        self.depth = depth

    def run(self, produce: Callable[[threading.Event], Iterator[T]]) -> Iterator[T]:
        """Run `produce(stop)` in a thread; yield what it yields, in order. Exceptions in the
        producer are re-raised here. Closing the iterator stops the producer."""
        q: queue.Queue = queue.Queue(maxsize=self.depth)
        stop = threading.Event()
        error: list[BaseException] = []

        def put(item) -> bool:
            """Hand one item over; False once the consumer has gone."""
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def worker():
            try:
                for item in produce(stop):
                    if not put(item):
                        return
            except BaseException as e:  # noqa: BLE001 - handed to the consumer
                error.append(e)
            put(_DONE)

        t = threading.Thread(target=worker, name="glb-reader", daemon=True)
        t.start()
        try:
            while True:
                item = q.get()
                if item is _DONE:
                    break
                yield item
            if error:
                raise error[0]
        finally:
            stop.set()
            t.join(timeout=5)
