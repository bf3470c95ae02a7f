"""A job's numbers, from its task rows: a stage's combined report, and progress with rows/s and ETA."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from engine.postgres.meta_jobs import JobRow, TaskRow

__all__ = ["combine", "progress"]

_COUNTS = ("rows_in", "rows_loaded", "rows_quarantined", "rows_filtered", "source_bytes", "archive_bytes",
           "skipped_partitions", "failed_partitions")


def combine(stage: int, tasks: Sequence[TaskRow]) -> dict[str, Any]:
    """One load's report from its tasks' reports: counts summed, child tables united, each task's outcome."""
    reports = [t.report for t in tasks if t.report]
    out: dict[str, Any] = {"stage": stage, **{k: sum(int(r.get(k) or 0) for r in reports) for k in _COUNTS}}
    first = reports[0] if reports else {}
    out.update(table=first.get("table"), mode=first.get("mode"), source=first.get("source"),
               partitions=sorted({p for r in reports for p in r.get("partitions", [])}),
               load_ids=[r.get("load_id") for r in reports],
               tasks=[{"part": t.part, "label": t.label, "state": t.state, "attempts": t.attempts,
                       "rows_loaded": t.rows_loaded, "error": t.error} for t in tasks])
    started = [t.started_at for t in tasks if t.started_at]
    ended = [t.finished_at for t in tasks if t.finished_at]
    seconds = (max(ended) - min(started)).total_seconds() if started and ended else 0.0
    out["seconds"] = round(seconds, 3)
    out["rows_per_s"] = round(out["rows_in"] / seconds, 1) if seconds else 0.0
    return out


def progress(job: JobRow, now: dt.datetime | None = None) -> dict[str, Any]:
    """Partitions done of total, rows read, rows/s since the job started, and an ETA (seconds) from the share
    of partitions still to do (None until one is done)."""
    now = now or dt.datetime.now(dt.UTC)
    tasks = job.tasks
    ended = [t for t in tasks if t.state in ("done", "failed", "skipped", "cancelled")]
    rows = sum(t.rows_in for t in tasks)
    elapsed = (now - job.started_at).total_seconds() if job.started_at else 0.0
    if job.finished_at and job.started_at:
        elapsed = (job.finished_at - job.started_at).total_seconds()
    eta = None
    if ended and len(ended) < len(tasks) and elapsed > 0:
        eta = round(elapsed / len(ended) * (len(tasks) - len(ended)), 1)
    return {"stage": job.stage + 1, "stages": job.stages, "partitions_done": len(ended),
            "partitions_total": len(tasks), "rows": rows, "rows_per_s": round(rows / elapsed, 1) if elapsed else 0.0,
            "seconds": round(elapsed, 1), "eta_s": eta}
