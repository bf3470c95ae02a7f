"""The job layer's metrics: what a worker exposes (``biconic worker --metrics-port``) and what its tasks count.

A worker is a main process and a pool of spawned children that run the tasks. :func:`expose_worker` (in the main
process, before the pool starts) points prometheus-client at a folder of this worker's own
(``{data folder}/metrics/worker-{pid}``); the children inherit the variable, so whatever a child counts (rows
loaded, jobs finished) is in a file there, and the main process's ``/metrics`` adds them all up at each scrape.
A child that exits cleanly drops its live gauges itself (``worker_process_shutdown``); one that was killed is
forgotten at the next scrape (:func:`engine.metrics_http.forget_dead`).

``biconic_queue_depth`` is read at scrape through :func:`engine.jobs.broker.queue_depths`, on the worker's
broker and the queues it consumes: the very reading :class:`~engine.jobs.autoscale.QueueDepthAutoscaler` sums
to size the pool, so the metric shows what the autoscaler acts on. ``biconic_workers`` is the pool's size.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import os
import shutil
from collections.abc import Iterator
from typing import Any

from celery import signals

from engine.metrics import mark_process_dead, metrics, read_queues_with, use_multiprocess
from engine.postgres import meta_jobs as store
from engine.settings import settings

__all__ = ["expose_worker", "job_ended", "job_finished", "job_retry", "running", "time_limit_kill"]

#: the worker whose pool ``biconic_workers`` counts (set when the worker starts, in its main process)
_worker: dict[str, Any] = {}


def expose_worker(host: str, port: int, queues: list[str]) -> None:
    """Share one metrics folder with the pool to come and answer ``/metrics`` on ``host:port`` (see the
    module). Call before the worker starts."""
    from engine.jobs.app import app
    from engine.jobs.autoscale import read_broker
    from engine.jobs.broker import queue_depths
    from engine.metrics_http import serve_metrics

    folder = settings().data_path / "metrics" / f"worker-{os.getpid()}"
    use_multiprocess(folder)
    atexit.register(shutil.rmtree, folder, True)
    signals.worker_init.connect(_remember_worker, weak=False)
    read_queues_with(lambda: queue_depths(queues, read_broker(app)), _pool_size)
    serve_metrics(host, port)


def _remember_worker(sender: Any = None, **_: Any) -> None:
    _worker["controller"] = sender


def _pool_size() -> int:
    return int(_worker["controller"].pool.num_processes)


def _child_exits(pid: int | None = None, **_: Any) -> None:
    """A pool child ends cleanly (in that child): its running-jobs and connection gauges stop counting."""
    mark_process_dead(pid or os.getpid())


signals.worker_process_shutdown.connect(_child_exits, weak=False)


def job_finished(outcome: str, submitted_at: dt.datetime | None) -> None:
    """Count a job that just reached its final state (call only where that state was written, once)."""
    found = metrics()
    found.jobs.labels(outcome=outcome).inc()
    if submitted_at is not None:
        took = (dt.datetime.now(dt.UTC) - submitted_at).total_seconds()
        found.job_duration.labels(outcome=outcome).observe(max(0.0, took))


def job_ended(dsn: str, job_id: str, outcome: str) -> None:
    """:func:`job_finished` where only the job's id is at hand (its submission time is read)."""
    with contextlib.suppress(Exception):  # counting never fails the path that finished the job
        found = store.get(dsn, job_id)
        job_finished(outcome, found.submitted_at if found is not None else None)


def time_limit_kill(kind: str) -> None:
    """A task stopped by the soft time limit (it recorded a timeout) or killed by the hard one."""
    metrics().time_limit_kills.labels(kind=kind).inc()


def job_retry() -> None:
    """A job's task failed on a transient error and is queued again with backoff."""
    metrics().retries.labels(what="job").inc()


@contextlib.contextmanager
def running(connection: str | None) -> Iterator[None]:
    """A task of ``connection`` runs inside (``biconic_running_jobs``; no connection is the empty label)."""
    gauge = metrics().running_jobs.labels(connection=connection or "")
    gauge.inc()
    try:
        yield
    finally:
        gauge.dec()
