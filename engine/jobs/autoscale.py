"""A Celery autoscaler that sizes the worker pool by the depth of its queues, not only by its reserved tasks.

Celery's stock ``--autoscale`` grows to the number of tasks this worker already reserved, so a deep queue on
the broker goes unseen (with prefetch 1 a worker reserves one task per process). This one grows the pool one
step towards ``max_concurrency`` while more than ``BICONIC_AUTOSCALE_GROW_ABOVE`` tasks wait in the worker's
queues, shrinks it one step towards ``min_concurrency`` while fewer than ``BICONIC_AUTOSCALE_SHRINK_BELOW`` wait
(after Celery's keepalive, so it never shrinks right after growing), and keeps the stock rule as a floor.

Celery loads it from the app's settings::

    app.conf.worker_autoscaler = "engine.jobs.autoscale:QueueDepthAutoscaler"
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from celery.worker.autoscale import AUTOSCALE_KEEPALIVE, Autoscaler

from engine.errors import BiconicError
from engine.jobs.broker import queue_depth, queue_depths
from engine.settings import settings

__all__ = ["QueueDepthAutoscaler", "decide", "read_broker"]

log = logging.getLogger(__name__)


def decide(depth: int | None, processes: int, min_concurrency: int, max_concurrency: int, grow_above: int,
           shrink_below: int, *, reserved: int = 0, step: int = 1) -> int:
    """The pool size to move to: one ``step`` up while ``depth`` > ``grow_above``, one down while ``depth`` <
    ``shrink_below``, else unchanged (also when the depth is unknown: ``None``); never fewer processes than
    ``reserved`` tasks (Celery's stock rule), always within ``min_concurrency..max_concurrency``.

    >>> decide(150, 4, 1, 16, 100, 10)
    5
    >>> decide(3, 4, 1, 16, 100, 10)
    3
    >>> decide(3, 4, 1, 16, 100, 10, reserved=6)
    6
    """
    if depth is not None and depth > grow_above:
        target = processes + step
    elif depth is not None and depth < shrink_below:
        target = processes - step
    else:
        target = processes
    target = max(target, reserved)
    return max(min_concurrency, min(target, max_concurrency))


class QueueDepthAutoscaler(Autoscaler):  # type: ignore[misc]  # celery ships no type hints
    """Celery's :class:`~celery.worker.autoscale.Autoscaler`, deciding by queue depth (see :func:`decide`).

    The depth is read at most every ``interval`` seconds (each read is one step at most), each read bounded by
    ``depth_timeout`` (it runs on the worker's event loop); when it cannot be read the pool keeps its size, one
    warning is logged, and the next read waits ``keepalive`` seconds. ``url``/``queues``/``depth``/``clock``
    are for tests: by default the worker's broker and the queues it consumes,
    :func:`~engine.jobs.broker.queue_depth` and a monotonic clock.
    """

    interval = 2.0
    depth_timeout = 1.0

    def __init__(self, pool: Any, max_concurrency: int, min_concurrency: int = 0, worker: Any = None,
                 keepalive: float = AUTOSCALE_KEEPALIVE, mutex: Any = None, *, url: str | None = None,
                 queues: Sequence[str] | None = None, depth: Callable[[str, str | None], int] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(pool, max_concurrency, min_concurrency, worker=worker, keepalive=keepalive, mutex=mutex)
        current = settings()
        self.grow_above = current.autoscale_grow_above
        self.shrink_below = current.autoscale_shrink_below
        self._url = url
        self._queues = list(queues) if queues is not None else None
        self._read = depth or (lambda queue, at: queue_depth(queue, at, timeout=self.depth_timeout))
        self._clock = clock
        self._depth: int | None = None
        self.depths: dict[str, int] = {}
        self._next_read = float("-inf")
        self._failing = False

    def _maybe_scale(self, req: Any = None) -> bool:
        processes = self.processes
        target = decide(self._poll(), processes, self.min_concurrency, self.max_concurrency, self.grow_above,
                        self.shrink_below, reserved=self.qty)
        if target > processes:
            self.scale_up(target - processes)
            return True
        if target < processes:
            self.scale_down(processes - target)
            return True
        return False

    @property
    def depth(self) -> int | None:
        """Tasks waiting in the worker's queues at the last read; None before it or when it failed."""
        return self._depth

    def _poll(self) -> int | None:
        """A fresh depth when one is due, else None (keep the size): Celery calls the autoscaler on every task
        message too, and one read must move the pool one step, not one step per message."""
        now = self._clock()
        if now < self._next_read:
            return None
        try:
            self.depths = queue_depths(self.queues(), self._broker(), read=self._read)
            self._depth = sum(self.depths.values())
        except BiconicError as exc:
            if not self._failing:
                log.warning("autoscaler: keeping %s processes, the queue depth is unknown: %s", self.processes, exc)
            self._failing, self._depth = True, None
            self._next_read = now + self.keepalive
            return None
        if self._failing:
            log.info("autoscaler: the queue depth can be read again (%s)", self._depth)
        self._failing = False
        self._next_read = now + self.interval
        return self._depth

    def queues(self) -> list[str]:
        """The queues this worker consumes (``celery`` without a worker)."""
        if self._queues is not None:
            return self._queues
        app = getattr(self.worker, "app", None)
        names = list(app.amqp.queues.consume_from) if app is not None else []
        return names or ["celery"]

    def _broker(self) -> str | None:
        if self._url is not None:
            return self._url
        app = getattr(self.worker, "app", None)
        return read_broker(app) if app is not None else None

    def scale_up(self, n: int) -> None:
        self._last_scale_up = self._clock()
        self._grow(n)

    def scale_down(self, n: int) -> None:
        """Shrink only ``keepalive`` seconds after the last growth or received task (Celery's rule, on our clock)."""
        last = max((t for t in (self._last_scale_up, self._last_task_received) if t is not None), default=None)
        if last is not None and self._clock() - last > self.keepalive:
            self._shrink(n)

    def on_task_received(self, req: Any) -> None:
        self._last_task_received = self._clock()

    def info(self) -> dict[str, Any]:
        """Celery's autoscaler info (``celery inspect stats``) plus the last queue depth read."""
        return {**super().info(), "depth": self.depth, "depths": dict(self.depths)}


def read_broker(app: Any) -> str | None:
    """The broker URL a worker of ``app`` reads its tasks from (the first of a failover list)."""
    chosen = app.conf.broker_read_url or app.conf.broker_url
    if isinstance(chosen, list | tuple):
        chosen = chosen[0] if chosen else None
    return str(chosen).split(";")[0] if chosen else None
