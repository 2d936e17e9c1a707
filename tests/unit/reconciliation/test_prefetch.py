"""prefetched(): same items, same order, errors reach the consumer, an early stop ends the thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from billkeep.reconciliation.prefetch import prefetched


def test_same_items_in_order_across_chunk_sizes() -> None:
    for chunk, depth in ((1, 1), (3, 2), (1000, 4)):
        assert list(prefetched(iter(range(2_500)), chunk=chunk, depth=depth)) == list(range(2_500))
    assert list(prefetched(iter([]))) == []


def test_producer_error_is_raised_after_the_items_before_it() -> None:
    def failing() -> Iterator[int]:
        yield 1
        yield 2
        raise RuntimeError("source broke")

    seen: list[int] = []
    with pytest.raises(RuntimeError, match="source broke"):
        for item in prefetched(failing(), chunk=1):
            seen.append(item)
    assert seen == [1, 2]


def test_closing_early_stops_the_producer() -> None:
    produced: list[int] = []

    def endless() -> Iterator[int]:
        n = 0
        while True:
            produced.append(n)
            yield n
            n += 1

    before = threading.active_count()
    stream = prefetched(endless(), chunk=10, depth=2)
    assert [next(stream) for _ in range(5)] == [0, 1, 2, 3, 4]
    stream.close()
    assert threading.active_count() == before  # joined
    # Read ahead is bounded: at most depth chunks beyond the one being consumed, plus one.
    assert len(produced) <= 10 * (2 + 2) + 1
