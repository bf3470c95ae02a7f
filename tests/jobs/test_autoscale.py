"""The queue-depth autoscaler (``engine/jobs/autoscale.py``): the decision alone, then an autoscaler on a
stand-in pool and on a real prefork pool following a real Redis queue as it fills and drains, the way Celery
loads it, and a broker that cannot be read (the pool keeps its size, one warning)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from engine.errors import BrokerUnavailableError
from engine.jobs import broker
from engine.jobs.autoscale import QueueDepthAutoscaler, decide

REDIS = "redis://127.0.0.1:6379/13"


class Pool:
    """Stands in for Celery's pool: the calls the autoscaler makes, counted."""

    def __init__(self, processes: int) -> None:
        self.num_processes = processes

    def grow(self, n: int) -> None:
        self.num_processes += n

    def shrink(self, n: int) -> None:
        self.num_processes -= n

    def maintain_pool(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Grow above 5 queued tasks, shrink below 2."""
    monkeypatch.setenv("BICONIC_AUTOSCALE_GROW_ABOVE", "5")
    monkeypatch.setenv("BICONIC_AUTOSCALE_SHRINK_BELOW", "2")


@pytest.fixture
def queue() -> Iterator[str]:
    """A fresh queue name on the shared Redis (db 13), its lists deleted afterwards."""
    name = f"q-{uuid.uuid4().hex[:8]}"
    yield name
    client = broker.redis_client(REDIS)
    client.delete(name, *(f"{name}\x06\x16{n}" for n in range(1, 10)))
    client.close()


def test_decide_grows_one_step_above_the_threshold_shrinks_below_and_keeps_between() -> None:
    assert decide(101, 4, 1, 16, 100, 10) == 5
    assert decide(100, 4, 1, 16, 100, 10) == 4  # "more than 100": exactly 100 keeps
    assert decide(50, 4, 1, 16, 100, 10) == 4
    assert decide(10, 4, 1, 16, 100, 10) == 4
    assert decide(9, 4, 1, 16, 100, 10) == 3
    assert decide(5000, 16, 1, 16, 100, 10) == 16  # at most max
    assert decide(0, 1, 1, 16, 100, 10) == 1  # at least min
    assert decide(0, 0, 2, 16, 100, 10) == 2  # below min (a fresh pool): up to min
    assert decide(500, 4, 1, 16, 100, 10, step=4) == 8


def test_decide_keeps_the_size_when_the_depth_is_unknown_and_never_drops_below_reserved_tasks() -> None:
    assert decide(None, 4, 1, 16, 100, 10) == 4
    assert decide(0, 4, 1, 16, 100, 10, reserved=4) == 4  # busy processes are not shrunk
    assert decide(0, 2, 1, 16, 100, 10, reserved=6) == 6  # Celery's stock rule: grow to the reserved tasks
    assert decide(None, 2, 1, 16, 100, 10, reserved=6) == 6
    assert decide(50, 2, 1, 4, 100, 10, reserved=9) == 4


def _scaler(pool: Any, clock: Clock, queue: str, **kwargs: Any) -> QueueDepthAutoscaler:
    return QueueDepthAutoscaler(pool, 4, 1, keepalive=30, url=REDIS, queues=[queue], clock=clock, **kwargs)


def _tick(scaler: QueueDepthAutoscaler, clock: Clock, seconds: float = 2.5) -> int:
    clock.now += seconds
    scaler.maybe_scale()
    return int(scaler.processes)


@pytest.mark.redis
def test_the_pool_grows_while_the_redis_queue_is_deep_and_shrinks_after_it_drains(thresholds: None,
                                                                                  queue: str) -> None:
    pool, clock = Pool(1), Clock()
    scaler = _scaler(pool, clock, queue)
    client = broker.redis_client(REDIS)
    assert [_tick(scaler, clock) for _ in range(2)] == [1, 1]  # empty queue, already at min
    client.rpush(queue, *range(4))
    client.rpush(f"{queue}\x06\x163", *range(4))  # 8 waiting, some at priority 3
    assert [_tick(scaler, clock) for _ in range(4)] == [2, 3, 4, 4]  # one step a tick, up to max
    assert scaler.info()["depth"] == 8
    client.ltrim(queue, 0, 0)
    client.delete(f"{queue}\x06\x163")  # 1 waiting: below 2
    assert _tick(scaler, clock) == 4  # not within the keepalive after the last growth
    assert [_tick(scaler, clock, 31) for _ in range(4)] == [3, 2, 1, 1]
    client.rpush(queue, *range(3))  # 4 waiting: between the thresholds
    assert _tick(scaler, clock, 31) == 1
    client.close()


@pytest.mark.redis
def test_the_queue_depth_metric_shows_what_the_autoscaler_reads(thresholds: None, queue: str) -> None:
    """Both read through :func:`engine.jobs.broker.queue_depths` (as ``biconic worker --metrics-port`` wires
    them): the gauge per queue is the autoscaler's reading."""
    from engine.metrics import read_queues_with, registry

    pool, clock = Pool(1), Clock()
    scaler = _scaler(pool, clock, queue)
    client = broker.redis_client(REDIS)
    client.rpush(queue, *range(3))
    client.rpush(f"{queue}\x06\x165", *range(4))
    client.close()
    _tick(scaler, clock)
    read_queues_with(lambda: broker.queue_depths([queue], REDIS))
    try:
        shown = registry().get_sample_value("biconic_queue_depth", {"queue": queue})
    finally:
        read_queues_with(None)
    assert scaler.depths == {queue: 7} and scaler.info()["depths"] == {queue: 7}
    assert shown == 7


def _alive(pool: Any, expected: int) -> int:
    """The pool's live processes, once they reach ``expected`` (a stopped one exits in its own time) or in 10 s.
    Reaps the exited ones meanwhile, as the worker's event loop does between two autoscaler ticks."""
    deadline = time.monotonic() + 10
    while True:
        pool.maintain_pool()
        alive = sum(process.is_alive() for process in pool._pool._pool)
        if alive == expected or time.monotonic() > deadline:
            return alive
        time.sleep(0.02)


@pytest.mark.redis
def test_a_real_prefork_pool_follows_the_queue(thresholds: None, queue: str) -> None:
    from celery import Celery
    from celery.concurrency.prefork import TaskPool

    app = Celery("t", broker=REDIS)
    pool = TaskPool(1, app=app, initargs=(app, "autoscale@test"))  # as Celery's worker makes it
    pool.start()
    try:
        clock = Clock()
        scaler = _scaler(pool, clock, queue)
        client = broker.redis_client(REDIS)
        client.rpush(queue, *range(8))
        assert [_tick(scaler, clock) for _ in range(4)] == [2, 3, 4, 4]
        assert _alive(pool, 4) == 4  # real processes, not just a count
        client.delete(queue)
        for expected in (3, 2, 1, 1):
            assert (_tick(scaler, clock, 31), _alive(pool, expected)) == (expected, expected)
        client.close()
    finally:
        pool.stop()


def test_the_depth_is_read_at_most_every_interval(thresholds: None) -> None:
    reads: list[tuple[str, str | None]] = []

    def depth(queue: str, url: str | None) -> int:
        reads.append((queue, url))
        return 50

    pool, clock = Pool(1), Clock()
    scaler = QueueDepthAutoscaler(pool, 8, 1, queues=["a", "b"], url="redis://x", depth=depth, clock=clock)
    for _ in range(5):
        scaler.maybe_scale()  # Celery calls it on every task message too: one read, one step
    assert reads == [("a", "redis://x"), ("b", "redis://x")] and pool.num_processes == 2
    clock.now += scaler.interval
    scaler.maybe_scale()
    assert len(reads) == 4 and pool.num_processes == 3


def test_an_unreadable_depth_keeps_the_pool_and_warns_once(thresholds: None, caplog: pytest.LogCaptureFixture,
                                                           mute_server: Any) -> None:
    pool, clock = Pool(3), Clock()
    url = f"redis://:s3cretpw@{mute_server.address}/0"
    scaler = QueueDepthAutoscaler(pool, 8, 1, keepalive=30, url=url, queues=["celery"], clock=clock)
    scaler.depth_timeout = 0.2
    with caplog.at_level(logging.INFO, logger="engine.jobs.autoscale"):
        for _ in range(3):
            clock.now += 31  # past the keepalive: a shrink would be allowed
            scaler.maybe_scale()
    assert pool.num_processes == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "keeping 3 processes" in warnings[0] and "s3cretpw" not in warnings[0]


def test_reads_resume_after_a_failure_and_say_so(thresholds: None, caplog: pytest.LogCaptureFixture) -> None:
    answers: list[int | Exception] = [BrokerUnavailableError("redis://h", "down"), 50]

    def depth(queue: str, url: str | None) -> int:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    pool, clock = Pool(1), Clock()
    scaler = QueueDepthAutoscaler(pool, 8, 1, keepalive=30, url="redis://h", queues=["celery"], depth=depth,
                                  clock=clock)
    with caplog.at_level(logging.INFO, logger="engine.jobs.autoscale"):
        scaler.maybe_scale()
        clock.now += 5
        scaler.maybe_scale()  # within the keepalive after a failure: not read again
        clock.now += 30
        scaler.maybe_scale()
    assert pool.num_processes == 2 and answers == []
    assert "can be read again" in caplog.records[-1].getMessage()


@pytest.mark.redis
def test_celery_loads_it_from_worker_autoscaler_with_the_workers_broker_and_queues(thresholds: None,
                                                                                   queue: str) -> None:
    from celery import Celery
    from celery.worker.autoscale import WorkerComponent

    app = Celery("t", broker=REDIS)
    app.conf.worker_autoscaler = "engine.jobs.autoscale:QueueDepthAutoscaler"
    app.conf.task_default_queue = queue
    worker = SimpleNamespace(autoscale=(4, 1), autoscaler_cls=app.conf.worker_autoscaler, pool=Pool(1),
                             max_concurrency=4, min_concurrency=1, use_eventloop=True, app=app)
    WorkerComponent(worker).create(worker)  # what the worker's bootstep does
    scaler = worker.autoscaler
    assert isinstance(scaler, QueueDepthAutoscaler) and scaler.queues() == [queue]
    broker.redis_client(REDIS).rpush(queue, *range(9))
    scaler.maybe_scale()
    assert worker.pool.num_processes == 2 and scaler.info()["depth"] == 9
