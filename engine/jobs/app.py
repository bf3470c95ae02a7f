"""The Celery app every jobs process shares (submitters, workers, beat), configured from ``BICONIC_*`` settings.

The settings are the ones that held up in the experiments (see the design notes, section 6):

- prefork pool with **spawn**-started children: a child forked after Polars ran in the parent hangs forever;
- ``acks_late`` + ``reject_on_worker_lost``: a task whose worker dies is delivered again, and the load ledger
  makes the second delivery finish what the first one did not commit, never twice;
- prefetch 1: a worker holds no task it is not running, so a queued task goes to the next free process;
- a hard time limit that kills even a task stuck in native code, and a soft one a minute earlier that lets
  the task record a clean timeout;
- the broker's visibility timeout above the time limit plus the longest backoff, so a long task is never
  handed to a second worker while the first still runs it;
- two queues: partitions (and the plan of each job, which queues them) wait in ``biconic``, while each job's
  finishing step (a few milliseconds) goes to ``biconic.control``, which every worker also takes from, in
  turn with ``biconic``. On one FIFO queue a job's finishing step waited behind every partition queued after
  its own, so every job of a burst finished only when the whole burst did (measured: 100 imports, latency
  p50 84.9 s when the median job's rows were in at 41.9 s). The plans stay in ``biconic``: in the control
  queue a burst's hundred plans queued ahead of the first jobs' finishing steps (measured: p50 58.3 s).
"""

from __future__ import annotations

import threading
from typing import Any

from celery import Celery
from celery.signals import setup_logging
from kombu.entity import Exchange, Queue

from engine.jobs.broker import CONTROL_QUEUE, QUEUE, broker_url, result_url
from engine.settings import settings

__all__ = ["CONTROL_QUEUE", "MAX_BACKOFF", "QUEUE", "app", "configure", "consumed_queues", "soft_limit"]

#: the tasks that go to :data:`CONTROL_QUEUE`
CONTROL_TASKS = ("biconic.stage_done",)
#: the longest wait between two attempts of a task, in seconds
MAX_BACKOFF = 600.0

app = Celery("biconic", include=["engine.jobs.tasks", "engine.jobs.schedule"])


def soft_limit(hard: float) -> float:
    """A minute before the hard limit (or 90% of a short one): time to record the timeout cleanly."""
    return max(hard - 60.0, hard * 0.9)


def consumed_queues(queues: str | None = None) -> str:
    """The ``--queues`` of a worker: those asked for (default :data:`QUEUE`) plus :data:`CONTROL_QUEUE`, which
    every worker must take from, or no job would ever be planned or finished."""
    names = [q.strip() for q in (queues or QUEUE).split(",") if q.strip()]
    return ",".join([*names, CONTROL_QUEUE] if CONTROL_QUEUE not in names else names)


def _config() -> dict[str, Any]:
    limits = settings()
    hard = limits.job_time_limit
    visibility = int(hard + MAX_BACKOFF + 600)
    network = limits.read_timeout
    return {
        "broker_url": broker_url(),
        "result_backend": result_url(),
        "task_default_queue": QUEUE,
        "task_queues": [Queue(name, Exchange(name), routing_key=name)  # type: ignore[no-untyped-call]
                        for name in (QUEUE, CONTROL_QUEUE)],
        "task_routes": {name: {"queue": CONTROL_QUEUE} for name in CONTROL_TASKS},
        "task_serializer": "json", "result_serializer": "json", "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_pool_start_method": "spawn",
        "worker_proc_alive_timeout": 120.0,  # a spawned child imports Polars and PyArrow before it says hello
        "worker_autoscaler": "engine.jobs.autoscale:QueueDepthAutoscaler",
        "worker_hijack_root_logger": False,
        "task_time_limit": hard,
        "task_soft_time_limit": soft_limit(hard),
        "broker_transport_options": {"visibility_timeout": visibility, "socket_timeout": network,
                                     "socket_connect_timeout": limits.connect_timeout},
        "result_backend_transport_options": {"visibility_timeout": visibility},
        "redis_socket_timeout": network,
        "redis_socket_connect_timeout": limits.connect_timeout,
        "broker_connection_timeout": limits.connect_timeout,
        "broker_connection_retry_on_startup": True,
        "result_expires": 7 * 86400,  # the job history lives in PostgreSQL; results are only the chords' plumbing
        "result_extended": False,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
    }


def configure() -> Celery:
    """(Re)apply the settings to :data:`app` (they are read again: tests and long-lived processes change them).
    A new broker or result store also drops the connections to the old one, which Celery keeps in pools: without
    that, tasks sent after the change still went to the old broker."""
    config = _config()
    if any(app.conf.get(name) != config[name] for name in ("broker_url", "result_backend")):
        _forget_connections()
    app.conf.update(config)
    return app


def _forget_connections() -> None:
    """Drop the app's broker connection pool, its producer pool and its result store client (each is made
    again, from the current settings, when next used)."""
    app.close()
    amqp = app.__dict__.get("amqp")  # a cached property: only reset it when it was made
    if amqp is not None:
        amqp._producer_pool = None
    app._backend_cache = None
    app._local = threading.local()


@setup_logging.connect  # type: ignore[untyped-decorator]
def _logging(loglevel: Any = None, **_: Any) -> None:
    """Workers and the beat (and each pool process) log as every command does: JSON lines with the job's ids,
    secrets redacted (see :mod:`engine.logs`). While a receiver is connected Celery configures no logging."""
    from engine.logs import configure_logging

    configure_logging(loglevel or settings().log_level or "INFO")


configure()
