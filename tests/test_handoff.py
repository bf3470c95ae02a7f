"""The bounded hand-offs between threads: order kept, errors raised on the other side, memory bounded, and a
clean stop that closes the producers."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from engine.handoff import Prefetch, Worker


def test_prefetch_keeps_one_source_in_order() -> None:
    with Prefetch(range(100)) as items:
        assert list(items) == list(range(100))


def test_prefetch_interleaves_several_sources_and_waits_for_all() -> None:
    with Prefetch(range(0, 50), range(100, 150), range(200, 250), depth=3) as items:
        got = list(items)
    assert sorted(got) == [*range(0, 50), *range(100, 150), *range(200, 250)]


def test_prefetch_raises_a_producer_error_in_the_consumer() -> None:
    def broken() -> Iterator[int]:
        yield 1
        raise ValueError("bad chunk")

    with Prefetch(broken()) as items, pytest.raises(ValueError, match="bad chunk"):
        list(items)


def test_prefetch_holds_at_most_depth_items_ahead() -> None:
    produced: list[int] = []
    gate = threading.Event()

    def counting() -> Iterator[int]:
        for i in range(100):
            produced.append(i)
            yield i

    prefetch = Prefetch(counting(), depth=2)
    items = iter(prefetch)
    assert next(items) == 0
    gate.wait(0.3)  # give the producer every chance to run ahead
    assert len(produced) <= 1 + 2 + 1  # taken, waiting in the queue, and one blocked in put
    prefetch.close()


def test_closing_early_stops_and_closes_the_producer() -> None:
    closed = threading.Event()

    def endless() -> Iterator[int]:
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    with Prefetch(endless()) as items:
        for i in items:
            if i == 5:
                break
    assert closed.wait(5)


def test_worker_handles_items_in_order_and_calls_after_them() -> None:
    seen: list[int] = []
    worker: Worker[int] = Worker(seen.append, depth=2)
    for i in range(20):
        worker.put(i)
    assert worker.call(lambda: list(seen)).result(5) == list(range(20))
    worker.close()


def test_worker_error_reaches_the_caller_and_later_work_is_skipped() -> None:
    def handle(item: int) -> None:
        if item == 3:
            raise OSError("disk full")

    worker: Worker[int] = Worker(handle, depth=1)
    for i in range(4):
        worker.put(i)
    skipped = worker.call(lambda: "published")
    with pytest.raises(OSError, match="disk full"):
        skipped.result(5)
    with pytest.raises(OSError, match="disk full"):
        worker.put(5)
    assert worker.call(lambda: "cleaned up", after_error=True).result(5) == "cleaned up"
    worker.reset()
    assert worker.call(lambda: "again").result(5) == "again"
    worker.close()
