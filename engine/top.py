"""What ``biconic top`` shows: the running jobs with their progress and speed, the queues, the workers, and the
health checks that are firing, read afresh at each refresh.

Rows per second come from two consecutive refreshes (rows read since the last one over the time between);
on the first frame, from the job's start. Workers are counted with one Celery control ping (a broadcast
answered within :data:`PING_TIMEOUT`), not ``inspect``, which waits for every worker's full report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from engine.health import Check

__all__ = ["PING_TIMEOUT", "Frame", "JobLine", "Watcher", "render"]

#: seconds the control ping waits for workers to answer
PING_TIMEOUT = 0.5


@dataclass
class JobLine:
    """One running job as shown."""

    job_id: str
    connection: str
    target: str
    state: str
    progress: str
    rows: int
    rows_per_s: float


@dataclass
class Frame:
    """Everything one refresh read."""

    jobs: list[JobLine]
    queued: int
    queues: dict[str, int] | None
    workers: int | None
    firing: list[Check] = field(default_factory=list)
    note: str = ""


class Watcher:
    """Reads frames; remembers each job's rows between them for the speed."""

    def __init__(self, dsn: str, *, with_workers: bool = True) -> None:
        self.dsn = dsn
        self.with_workers = with_workers
        self._seen: dict[str, tuple[float, int]] = {}
        self._cpu_sampled = False  # the first reading samples half a second; later ones cover the refresh

    def frame(self) -> Frame:
        from engine.health import cpu_check, db_checks, disk_checks, memory_check, queue_checks

        jobs, queued, note = self._jobs()
        checks = [cpu_check(None if self._cpu_sampled else 0.5), memory_check(), *disk_checks(),
                  *db_checks(self.dsn)]
        self._cpu_sampled = True
        queue = queue_checks()
        checks += queue
        queues = _queues() if queue[0].state not in ("skipped", "unknown") else None
        workers = _workers() if self.with_workers and queues is not None else None
        firing = [c for c in checks if c.state in ("warning", "critical", "unknown", "info")]
        return Frame(jobs, queued, queues, workers, firing, note)

    def _jobs(self) -> tuple[list[JobLine], int, str]:
        from engine.jobs.summary import progress
        from engine.postgres import meta_jobs as store

        try:
            running = store.list_jobs(self.dsn, state="running", limit=200)
            queued = len(store.list_jobs(self.dsn, state="queued", limit=10_000))
            full = [job for job in (store.get(self.dsn, r.job_id) for r in running) if job is not None]
        except Exception as exc:
            from engine.errors import first_line

            return [], 0, f"PostgreSQL unreachable: {first_line(exc)}"
        now = time.monotonic()
        lines = []
        for job in full:
            shown = progress(job)
            rows = int(shown["rows"])
            speed = float(shown["rows_per_s"])
            before = self._seen.get(job.job_id)
            if before is not None and now > before[0]:
                speed = max(0.0, (rows - before[1]) / (now - before[0]))
            self._seen[job.job_id] = (now, rows)
            lines.append(JobLine(job.job_id[:8], job.connection_id or "-", _target(job), job.state,
                                 f"{shown['partitions_done']}/{shown['partitions_total']} partitions",
                                 rows, speed))
        return lines, queued, ""


def _target(job: Any) -> str:
    """Where the job loads: its dataset, else the request's ``into``."""
    return str(job.dataset or job.request.get("into") or job.kind)


def _queues() -> dict[str, int] | None:
    from engine.jobs.broker import CONTROL_QUEUE, QUEUE, queue_depths
    from engine.settings import settings

    try:
        return queue_depths((QUEUE, CONTROL_QUEUE), settings().broker())
    except Exception:
        return None


def _workers() -> int | None:
    """Workers answering a control ping within :data:`PING_TIMEOUT`; None when the broker cannot be asked."""
    try:
        from engine.jobs.app import app, configure

        configure()
        return len(app.control.ping(timeout=PING_TIMEOUT) or [])
    except Exception:
        return None


def render(frame: Frame) -> Any:
    """The frame as rich renderables: jobs, then queues and workers, then the firing checks."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    jobs = Table(title=f"Running jobs ({len(frame.jobs)} running, {frame.queued} queued)", expand=False)
    for column in ("job", "connection", "dataset/into", "state", "progress", "rows", "rows/s"):
        jobs.add_column(column, justify="right" if column in ("rows", "rows/s") else "left")
    for line in frame.jobs:
        jobs.add_row(line.job_id, line.connection, line.target, line.state, line.progress, f"{line.rows:,}",
                     f"{line.rows_per_s:,.1f}")
    parts: list[Any] = [jobs]
    if frame.note:
        parts.append(Text(frame.note, style="bold red"))
    if frame.queues is None:
        parts.append(Text("queues: no broker configured or not answering"))
    else:
        shown = ", ".join(f"{q}: {n}" for q, n in frame.queues.items())
        workers = "?" if frame.workers is None else str(frame.workers)
        parts.append(Text(f"queues: {shown}   workers: {workers}"))
    if not frame.firing:
        parts.append(Text("health checks: all ok"))
        return Group(*parts)
    checks = Table(title="Health checks firing")
    for column in ("check", "value", "threshold", "state", "detail"):
        checks.add_column(column)
    for check in frame.firing:
        value = "-" if check.value is None else f"{check.value:.3g}"
        style = {"critical": "bold red", "unknown": "bold red", "warning": "yellow"}.get(check.state, "")
        checks.add_row(check.name, value, check.threshold, Text(check.state, style=style), check.detail)
    parts.append(checks)
    return Group(*parts)
