"""Bounded hand-offs between threads: the one way the engine overlaps work, with memory that stays flat.

Two directions, one rule (a bounded queue, errors handed to the other side, a clean stop):

* :class:`Prefetch` runs one or more producers (iterables) on background threads while the caller consumes
  their items: the next batch is computed while this one is COPYed (Polars and libpq release the GIL).
* :class:`Worker` runs one consumer on a background thread while the caller hands it items: archive files are
  encoded, and staged partitions COPYed on their own connections, while the caller goes on.

>>> with Prefetch(range(3)) as items:
...     list(items)
[0, 1, 2]
"""

from __future__ import annotations

import contextlib
import contextvars
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

__all__ = ["Prefetch", "Worker"]

T = TypeVar("T")
R = TypeVar("R")

#: how often a blocked producer looks whether the consumer went away
_POLL = 0.2


class _Done:
    """One producer finished."""


class Prefetch(Generic[T]):
    """The items of ``sources``, each iterated on a thread of its own, with at most ``depth`` items waiting.

    One source keeps its order; several are interleaved as they produce. An exception in a producer is raised
    in the consumer, at the point it would have received the next item. :meth:`close` (or leaving the
    ``with`` block) stops the producers and closes their iterators, on their own threads.
    """

    def __init__(self, *sources: Iterable[T], depth: int = 2, name: str = "biconic-prefetch") -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(depth, 1))
        self._stop = threading.Event()
        self._pending = len(sources)
        # each thread runs in a copy of the caller's context: its log lines carry the load's ids (engine.logs)
        self._threads = [threading.Thread(target=contextvars.copy_context().run, args=(self._produce, s), name=name,
                                          daemon=True) for s in sources]
        for thread in self._threads:
            thread.start()

    def __enter__(self) -> Prefetch[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _offer(self, item: Any) -> bool:
        """Put ``item``, waiting for room; False once the consumer has stopped listening."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, source: Iterable[T]) -> None:
        iterator = iter(source)
        try:
            for item in iterator:
                if not self._offer(item):
                    return
            self._offer(_Done())
        except BaseException as exc:  # handed to the consumer, raised there
            self._offer(exc)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()

    def __iter__(self) -> Iterator[T]:
        while self._pending:
            item = self._queue.get()
            if isinstance(item, _Done):
                self._pending -= 1
                continue
            if isinstance(item, BaseException):
                self._pending = 0
                raise item
            yield item

    def close(self) -> None:
        """Stop the producers and wait for their threads (draining what they already produced)."""
        self._stop.set()
        while any(t.is_alive() for t in self._threads):
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.1)


class Worker(Generic[T]):
    """One background thread that handles items in the order they are put, from a queue of ``depth``.

    :meth:`put` blocks while the queue is full and raises the first error the thread met (after an error the
    thread drains what is put, so the caller never blocks on a dead worker). :meth:`call` runs a function on
    the thread after everything put before it, and returns its future. :meth:`close` ends the thread.
    """

    def __init__(self, handle: Callable[[T], None], *, depth: int = 4, name: str = "biconic-worker") -> None:
        self._handle = handle
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(depth, 1))
        #: the first exception raised on the thread (by ``handle`` or a call), until :meth:`reset`
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=contextvars.copy_context().run, args=(self._run,), name=name,
                                        daemon=True)  # in a copy of the caller's context, as Prefetch's
        self._thread.start()

    def put(self, item: T) -> None:
        """Hand over one item (raises the thread's error instead, if it has one)."""
        if self.error is not None:
            raise self.error
        self._queue.put(("item", item))

    def call(self, fn: Callable[[], R], *, after_error: bool = False) -> Future[R]:
        """Run ``fn`` on the thread once the items before it are handled. If the thread has met an error, the
        future holds that error instead, unless ``after_error`` (a clean-up that must run anyway)."""
        future: Future[R] = Future()
        self._queue.put(("call", fn, future, after_error))
        return future

    def reset(self) -> None:
        """Forget the thread's error (the worker is reused for new work)."""
        self.error = None

    def close(self) -> None:
        """No more items: let the thread handle what is queued, then end it."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            if job[0] == "item":
                if self.error is None:
                    try:
                        self._handle(job[1])
                    except BaseException as exc:  # handed to the caller by put() and call()
                        self.error = exc
                continue
            _, fn, future, after_error = job
            if self.error is not None and not after_error:
                future.set_exception(self.error)
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:
                self.error = self.error or exc
                future.set_exception(exc)
