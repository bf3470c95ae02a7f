"""Job history in PostgreSQL's ``biconic`` schema: durable, unlike a result backend that expires, so a user can
list last week's failed imports.

- ``biconic.jobs``: one row per submitted import (state, what was asked with its secrets redacted, totals, the
  first error, the final reports).
- ``biconic.job_tasks``: one row per planned partition task (stage = the load's place in a pipeline, part =
  the partition's place in its source; part -1 = the whole load in one task).
- ``biconic.job_attempts``: every attempt of every task, with how it ended and why.

States: ``queued`` -> ``running`` -> ``done`` | ``failed`` | ``cancelled``. A finished job's state only
changes through :func:`reopen` (``biconic jobs retry``).
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import json
import socket
import threading
import uuid
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from engine.postgres.connection import connect, execute

__all__ = ["FINISHED", "LOST", "STATES", "JobRow", "TaskRow", "attempts", "cached_connection", "cancel_queued",
           "close_open_attempts",
           "create", "drop_connection", "ensure", "find", "finish_task", "get", "jobs_db", "list_jobs", "lost_attempts",
           "plan_tasks", "record_attempt", "reopen", "run_with_tables", "set_state", "start_task", "tasks",
           "task_progress"]

State = Literal["queued", "running", "done", "failed", "cancelled"]
STATES: tuple[State, ...] = ("queued", "running", "done", "failed", "cancelled")
FINISHED = ("done", "failed", "cancelled")

_TABLES = [
    "CREATE SCHEMA IF NOT EXISTS biconic",
    """CREATE TABLE IF NOT EXISTS biconic.jobs (
        job_id uuid PRIMARY KEY, state text NOT NULL, kind text NOT NULL, request jsonb NOT NULL,
        connection_id text, dataset text, stages int NOT NULL DEFAULT 1, stage int NOT NULL DEFAULT 0,
        submitted_at timestamptz NOT NULL DEFAULT now(), started_at timestamptz, finished_at timestamptz,
        error text, error_type text, reports jsonb NOT NULL DEFAULT '[]')""",
    "CREATE INDEX IF NOT EXISTS jobs_state_idx ON biconic.jobs (state, submitted_at DESC)",
    "CREATE INDEX IF NOT EXISTS jobs_connection_idx ON biconic.jobs (connection_id, submitted_at DESC)",
    """CREATE TABLE IF NOT EXISTS biconic.job_tasks (
        job_id uuid NOT NULL REFERENCES biconic.jobs ON DELETE CASCADE, stage int NOT NULL, part int NOT NULL,
        label text NOT NULL, task_id text NOT NULL, state text NOT NULL DEFAULT 'queued',
        attempts int NOT NULL DEFAULT 0, rows_in bigint NOT NULL DEFAULT 0, rows_loaded bigint NOT NULL DEFAULT 0,
        rows_quarantined bigint NOT NULL DEFAULT 0, bytes bigint NOT NULL DEFAULT 0, report jsonb, error text,
        started_at timestamptz, finished_at timestamptz, PRIMARY KEY (job_id, stage, part))""",
    """CREATE TABLE IF NOT EXISTS biconic.job_attempts (
        job_id uuid NOT NULL REFERENCES biconic.jobs ON DELETE CASCADE, stage int NOT NULL, part int NOT NULL,
        attempt int NOT NULL, worker text NOT NULL, started_at timestamptz NOT NULL DEFAULT now(),
        finished_at timestamptz, outcome text, error text, PRIMARY KEY (job_id, stage, part, attempt))""",
]

_ready: set[str] = set()
#: each thread's open connections by DSN: opening one costs ~70 ms, and a task makes ten calls here
_local = threading.local()
#: every cached connection still alive (weakly: a finished thread's connections go with its thread)
_open: weakref.WeakSet[Any] = weakref.WeakSet()
_open_lock = threading.Lock()


def cached_connection(dsn: str, purpose: str = "jobs") -> Any:
    """This thread's autocommit connection to ``dsn`` for ``purpose``, opened on first use."""
    conns: dict[tuple[str, str], Any] = _local.__dict__.setdefault("conns", {})
    conn = conns.get((dsn, purpose))
    if conn is None:
        conn = conns[(dsn, purpose)] = connect(dsn, autocommit=True)
        with _open_lock:
            _open.add(conn)
    return conn


def _close_all() -> None:
    """At exit: close what is still open (a driver object collected during shutdown prints an error)."""
    with _open_lock:
        for conn in list(_open):
            with contextlib.suppress(Exception):
                conn.close()
        _open.clear()


atexit.register(_close_all)


def drop_connection(dsn: str, purpose: str = "jobs") -> None:
    """Close and forget this thread's connection (after an error: the next call opens a new one)."""
    conn = _local.__dict__.setdefault("conns", {}).pop((dsn, purpose), None)
    if conn is not None:
        with _open_lock:
            _open.discard(conn)
        with contextlib.suppress(Exception):
            conn.close()


@contextmanager
def jobs_db(dsn: str) -> Iterator[Any]:
    """This thread's autocommit connection to ``dsn``, with the job tables in place (created once per
    process); a connection that failed is dropped, so the next call starts from a fresh one."""
    try:
        conn = cached_connection(dsn)
        if dsn not in _ready:
            ensure(conn, dsn)
            _ready.add(dsn)
        yield conn
    except BaseException:
        drop_connection(dsn)
        raise


def run_with_tables(dsn: str, tables: Sequence[str], ready: set[str], sql: str,
                    params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    """Run ``sql`` on this thread's job connection, creating the ``biconic`` schema and the caller's ``tables``
    statements first, once per process (``ready`` holds the DSNs done), under the engine's DDL lock."""
    try:
        conn = cached_connection(dsn)
        if dsn not in ready:
            execute(conn, "BEGIN", None, dsn)
            execute(conn, "SELECT pg_advisory_xact_lock(hashtext('biconic.meta'))", None, dsn)
            execute(conn, "CREATE SCHEMA IF NOT EXISTS biconic", None, dsn)
            for statement in tables:
                execute(conn, statement, None, dsn)
            execute(conn, "COMMIT", None, dsn)
            ready.add(dsn)
        return execute(conn, sql, params, dsn)
    except BaseException:
        drop_connection(dsn)
        raise


def ensure(conn: Any, dsn: str) -> None:
    """Create the job tables if missing (serialized: two workers starting at once must not race)."""
    execute(conn, "BEGIN", None, dsn)
    execute(conn, "SELECT pg_advisory_xact_lock(hashtext('biconic.meta'))", None, dsn)
    for sql in _TABLES:
        execute(conn, sql, None, dsn)
    execute(conn, "COMMIT", None, dsn)


@dataclass
class TaskRow:
    """One planned task of a job, as stored."""
    stage: int
    part: int
    label: str
    task_id: str
    state: str
    attempts: int
    rows_in: int
    rows_loaded: int
    rows_quarantined: int
    bytes: int
    report: dict[str, Any] | None
    error: str | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


@dataclass
class JobRow:
    """One job, as stored (``tasks`` filled by :func:`get`)."""
    job_id: str
    state: str
    kind: str
    request: dict[str, Any]
    connection_id: str | None
    dataset: str | None
    stages: int
    stage: int
    submitted_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    error: str | None
    error_type: str | None
    reports: list[dict[str, Any]]
    tasks: list[TaskRow] = field(default_factory=list)


_JOB_COLUMNS = ("job_id::text, state, kind, request::text, connection_id, dataset, stages, stage, submitted_at, "
                "started_at, finished_at, error, error_type, reports::text")
_TASK_COLUMNS = ("stage, part, label, task_id, state, attempts, rows_in, rows_loaded, rows_quarantined, bytes, "
                 "report::text, error, started_at, finished_at")


def _job(row: Sequence[Any]) -> JobRow:
    values = list(row)
    values[3] = json.loads(values[3])
    values[13] = json.loads(values[13])
    return JobRow(*values)


def _task(row: Sequence[Any]) -> TaskRow:
    values = list(row)
    values[10] = json.loads(values[10]) if values[10] else None
    return TaskRow(*values)


def create(dsn: str, *, kind: str, request: dict[str, Any], connection_id: str | None, dataset: str | None,
           stages: int) -> str:
    """A new queued job; its id."""
    job_id = str(uuid.uuid4())
    with jobs_db(dsn) as conn:
        execute(conn, "INSERT INTO biconic.jobs (job_id, state, kind, request, connection_id, dataset, stages) "
                      "VALUES ($1::uuid, 'queued', $2, $3::jsonb, $4, $5, $6)",
                [job_id, kind, json.dumps(request, default=str), connection_id, dataset, stages], dsn)
    return job_id


def get(dsn: str, job_id: str) -> JobRow | None:
    """The job and its tasks; None when there is no such job."""
    with jobs_db(dsn) as conn:
        found = execute(conn, f"SELECT {_JOB_COLUMNS} FROM biconic.jobs WHERE job_id::text = $1", [job_id], dsn)
        if not found:
            return None
        job = _job(found[0])
        job.tasks = [_task(r) for r in execute(
            conn, f"SELECT {_TASK_COLUMNS} FROM biconic.job_tasks WHERE job_id = $1::uuid ORDER BY stage, part",
            [job.job_id], dsn)]
    return job


def find(dsn: str, prefix: str) -> list[str]:
    """Job ids starting with ``prefix`` (a user may type the first characters of an id)."""
    with jobs_db(dsn) as conn:
        rows = execute(conn, "SELECT job_id::text FROM biconic.jobs WHERE job_id::text LIKE $1 || '%' LIMIT 2",
                       [prefix.lower().replace("%", "").replace("_", "")], dsn)
    return [str(r[0]) for r in rows]


def list_jobs(dsn: str, *, state: str | None = None, connection_id: str | None = None,
              since: dt.datetime | None = None, limit: int = 50) -> list[JobRow]:
    """Jobs, newest first, filtered by state, connection and submission time."""
    with jobs_db(dsn) as conn:
        rows = execute(conn, f"SELECT {_JOB_COLUMNS} FROM biconic.jobs WHERE ($1::text IS NULL OR state = $1) "
                             "AND ($2::text IS NULL OR connection_id = $2) "
                             "AND ($3::timestamptz IS NULL OR submitted_at >= $3) "
                             "ORDER BY submitted_at DESC LIMIT $4", [state, connection_id, since, limit], dsn)
    return [_job(r) for r in rows]


def set_state(dsn: str, job_id: str, state: State, *, unless: Sequence[str] = FINISHED, error: str | None = None,
              error_type: str | None = None, reports: list[dict[str, Any]] | None = None,
              stage: int | None = None) -> bool:
    """Move a job to ``state`` unless it is in one of ``unless``; whether it moved. A job moved to running
    keeps its first start time; a finished one gets its end time."""
    with jobs_db(dsn) as conn:
        rows = execute(conn, "UPDATE biconic.jobs SET state = $2, "
                             "started_at = CASE WHEN $2 = 'running' THEN coalesce(started_at, now()) "
                             "ELSE started_at END, "
                             "finished_at = CASE WHEN $2 IN ('done', 'failed', 'cancelled') THEN now() END, "
                             "error = coalesce($3, CASE WHEN $2 IN ('queued', 'running') THEN NULL ELSE error END), "
                             "error_type = coalesce($4, CASE WHEN $2 IN ('queued', 'running') THEN NULL "
                             "ELSE error_type END), "
                             "reports = coalesce($5::jsonb, reports), stage = coalesce($6, stage) "
                             "WHERE job_id = $1::uuid AND NOT (state = ANY($7::text[])) RETURNING 1",
                       [job_id, state, error, error_type, None if reports is None else json.dumps(reports),
                        stage, list(unless)], dsn)
    return bool(rows)


def cancel_queued(dsn: str, job_id: str) -> list[str]:
    """Mark a cancelled job's not-yet-started tasks cancelled (a worker that takes one skips it); their Celery
    task ids."""
    with jobs_db(dsn) as conn:
        rows = execute(conn, "UPDATE biconic.job_tasks SET state = 'cancelled', finished_at = now() "
                             "WHERE job_id = $1::uuid AND state = 'queued' RETURNING task_id", [job_id], dsn)
    return [str(r[0]) for r in rows]


def reopen(dsn: str, job_id: str) -> bool:
    """A failed or cancelled job queued again (``jobs retry``): its failed tasks forget their error."""
    with jobs_db(dsn) as conn:
        rows = execute(conn, "UPDATE biconic.jobs SET state = 'queued', finished_at = NULL, error = NULL, "
                             "error_type = NULL WHERE job_id = $1::uuid AND state IN ('failed', 'cancelled') "
                             "RETURNING 1", [job_id], dsn)
        execute(conn, "UPDATE biconic.job_tasks SET state = 'queued', error = NULL "
                      "WHERE job_id = $1::uuid AND state <> 'done'", [job_id], dsn)
    return bool(rows)


def plan_tasks(dsn: str, job_id: str, stage: int, labels: Sequence[tuple[int, str, str]]) -> None:
    """Record a stage's tasks (part, label, task id); planning the same stage again keeps what finished."""
    with jobs_db(dsn) as conn:
        for part, label, task_id in labels:
            execute(conn, "INSERT INTO biconic.job_tasks (job_id, stage, part, label, task_id) "
                          "VALUES ($1::uuid, $2, $3, $4, $5) ON CONFLICT (job_id, stage, part) DO UPDATE "
                          "SET label = EXCLUDED.label, task_id = EXCLUDED.task_id, "
                          "state = CASE WHEN job_tasks.state = 'done' THEN 'done' ELSE 'queued' END",
                    [job_id, stage, part, label, task_id], dsn)


def start_task(dsn: str, job_id: str, stage: int, part: int) -> tuple[str, int]:
    """Mark a task running and open its next attempt; the job's state and this attempt's number."""
    worker = socket.gethostname()
    with jobs_db(dsn) as conn:
        found = execute(conn, "UPDATE biconic.job_tasks SET state = 'running', attempts = attempts + 1, "
                              "started_at = coalesce(started_at, now()) WHERE job_id = $1::uuid AND stage = $2 "
                              "AND part = $3 RETURNING attempts, "
                              "(SELECT state FROM biconic.jobs WHERE job_id = $1::uuid)",
                        [job_id, stage, part], dsn)
        if not found:
            return "missing", 0
        attempt, state = int(found[0][0]), str(found[0][1])
        execute(conn, "INSERT INTO biconic.job_attempts (job_id, stage, part, attempt, worker) "
                      "VALUES ($1::uuid, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                [job_id, stage, part, attempt, worker], dsn)
    if attempt > 1:  # an earlier attempt that never said how it ended: its process died and it was redelivered
        close_open_attempts(dsn, job_id, stage, part, "lost", LOST, before=attempt)
    return state, attempt


#: why an attempt ended without recording it (kill -9, out of memory, a machine gone)
LOST = "the process running it died (killed, or out of memory); the task was delivered again"


def lost_attempts(dsn: str, job_id: str, stage: int, part: int) -> int:
    """How many attempts of a task ended with their process dead (see :data:`LOST`)."""
    with jobs_db(dsn) as conn:
        rows = execute(conn, "SELECT count(*) FROM biconic.job_attempts WHERE job_id = $1::uuid AND stage = $2 "
                             "AND part = $3 AND outcome = 'lost'", [job_id, stage, part], dsn)
    return int(rows[0][0])


def close_open_attempts(dsn: str, job_id: str, stage: int, part: int, outcome: str, error: str, *,
                        before: int | None = None) -> None:
    """Give the attempts of a task that never recorded how they ended (their process was killed) an outcome:
    ``timeout`` after the hard time limit, ``lost`` when the task is delivered again. Only those numbered
    below ``before`` when given (the new attempt is open too)."""
    with jobs_db(dsn) as conn:
        execute(conn, "UPDATE biconic.job_attempts SET finished_at = coalesce(finished_at, now()), outcome = $4, "
                      "error = $5 WHERE job_id = $1::uuid AND stage = $2 AND part = $3 AND outcome IS NULL "
                      "AND ($6::int IS NULL OR attempt < $6)",
                [job_id, stage, part, outcome, error, before], dsn)


def task_progress(dsn: str, job_id: str, stage: int, part: int, rows_in: int) -> str:
    """Store a running task's rows read so far; the job's state (a cancel is seen here)."""
    with jobs_db(dsn) as conn:
        found = execute(conn, "UPDATE biconic.job_tasks SET rows_in = $4 WHERE job_id = $1::uuid AND stage = $2 "
                              "AND part = $3 RETURNING (SELECT state FROM biconic.jobs WHERE job_id = $1::uuid)",
                        [job_id, stage, part, rows_in], dsn)
    return str(found[0][0]) if found else "missing"


def record_attempt(dsn: str, job_id: str, stage: int, part: int, attempt: int, outcome: str,
                   error: str | None = None) -> None:
    """How an attempt ended: done, retry, failed, timeout, cancelled, skipped (see also
    :func:`close_open_attempts`: timeout after a hard kill, lost)."""
    with jobs_db(dsn) as conn:
        execute(conn, "UPDATE biconic.job_attempts SET finished_at = now(), outcome = $5, error = $6 "
                      "WHERE job_id = $1::uuid AND stage = $2 AND part = $3 AND attempt = $4",
                [job_id, stage, part, attempt, outcome, error], dsn)


def finish_task(dsn: str, job_id: str, stage: int, part: int, state: str, *, report: dict[str, Any] | None = None,
                error: str | None = None) -> None:
    """A task's end: its state, its load report (counts) or its error."""
    counts = report or {}
    with jobs_db(dsn) as conn:
        execute(conn, "UPDATE biconic.job_tasks SET state = $4, report = $5::jsonb, error = $6, "
                      "finished_at = now(), rows_in = coalesce($7, rows_in), rows_loaded = coalesce($8, rows_loaded), "
                      "rows_quarantined = coalesce($9, rows_quarantined), bytes = coalesce($10, bytes) "
                      "WHERE job_id = $1::uuid AND stage = $2 AND part = $3",
                [job_id, stage, part, state, json.dumps(report, default=str) if report else None, error,
                 counts.get("rows_in"), counts.get("rows_loaded"), counts.get("rows_quarantined"),
                 counts.get("source_bytes")], dsn)


def tasks(dsn: str, job_id: str, stage: int) -> list[TaskRow]:
    """A stage's tasks, in partition order."""
    with jobs_db(dsn) as conn:
        rows = execute(conn, f"SELECT {_TASK_COLUMNS} FROM biconic.job_tasks WHERE job_id = $1::uuid "
                             "AND stage = $2 ORDER BY part", [job_id, stage], dsn)
    return [_task(r) for r in rows]


def attempts(dsn: str, job_id: str) -> list[dict[str, Any]]:
    """Every attempt of the job's tasks, oldest first."""
    with jobs_db(dsn) as conn:
        rows = execute(conn, "SELECT stage, part, attempt, worker, started_at, finished_at, outcome, error "
                             "FROM biconic.job_attempts WHERE job_id = $1::uuid ORDER BY started_at, stage, part, "
                             "attempt", [job_id], dsn)
    keys = ("stage", "part", "attempt", "worker", "started_at", "finished_at", "outcome", "error")
    return [{k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in zip(keys, r, strict=True)}
            for r in rows]
