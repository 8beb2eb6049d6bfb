"""Distributor: where the reader runs relative to the mapper (clip-retrieval's distributor).

Local: a background thread reads and preprocesses the next tiles while the main thread embeds
(rasterio and torch release the GIL). The day an archive outgrows one machine, a Ray or Dask
distributor hands work units to several of these; reader, mapper and writer stay as they are.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator

_DONE = object()


class LocalDistributor:
    def __init__(self, prefetch: int = 3):
        self.prefetch = prefetch

    def run(self, produce: Callable[[threading.Event], Iterator]) -> Iterator:
        """Run `produce(stop)` in a thread; yield what it yields, in order. Exceptions in the
        producer are re-raised here. Closing the iterator stops the producer."""
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        error: list[BaseException] = []

        def worker():
            try:
                for item in produce(stop):
                    while not stop.is_set():
                        try:
                            q.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
            except BaseException as e:  # noqa: BLE001 - handed to the consumer
                error.append(e)
            finally:
                while True:
                    try:
                        q.put(_DONE, timeout=0.1)
                        return
                    except queue.Full:
                        if stop.is_set():
                            return

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
