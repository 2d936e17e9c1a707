"""Reading ahead: a producer thread fills a bounded queue from an iterator, so a database fetch
or a gateway page download overlaps the consumer's work (both release the GIL while they wait).
Memory stays bounded by `depth` chunks; an exception in the producer is re-raised to the consumer,
and a consumer that stops early stops the producer."""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterable
from typing import TypeVar

__all__ = ["PREFETCH_CHUNK", "PREFETCH_DEPTH", "prefetched"]

T = TypeVar("T")

PREFETCH_CHUNK = 2_000  # items handed over per queue operation (a queue put/get per item is slow)
PREFETCH_DEPTH = 4  # chunks read ahead at most
_POLL_S = 0.1


class _Done:
    pass


_DONE = _Done()


def prefetched(
    items: Iterable[T], *, chunk: int = PREFETCH_CHUNK, depth: int = PREFETCH_DEPTH
) -> Generator[T, None, None]:
    """The same items in the same order, read ahead in a thread."""
    assert chunk >= 1 and depth >= 1
    handoff: queue.Queue[list[T] | BaseException | _Done] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(value: list[T] | BaseException | _Done) -> bool:
        while not stop.is_set():
            try:
                handoff.put(value, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            batch: list[T] = []
            for item in items:
                batch.append(item)
                if len(batch) >= chunk:
                    if not put(batch):
                        return
                    batch = []
            if batch and not put(batch):
                return
            put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            put(exc)

    thread = threading.Thread(target=produce, name="reconciliation-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            got = handoff.get()
            if isinstance(got, _Done):
                return
            if isinstance(got, BaseException):
                raise got
            yield from got
    finally:
        stop.set()
        thread.join()
