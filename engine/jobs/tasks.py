"""The job's Celery tasks: plan a stage, load its partitions as a chord, finish the stage.

``biconic.plan`` lists the partitions of the job's current load (a pipeline's loads are its stages, run in
order) and sends one ``biconic.partition`` task per partition (a chord), with ``biconic.stage_done`` as the
chord's body. A load whose mode promises one transaction across its partitions (``replace``), a full refresh, an
incremental source and a single-partition source run as one task: that task's own transaction is the atomic
publish. Each partition task commits through the load ledger, so a task delivered twice (a worker killed, a
job submitted twice) loads its partition once.

A partition task does not raise on an engine error: it records the error on its row and returns, so the chord's
body always runs and decides the job's state (a failed partition fails the job; the others still commit, as a
``biconic load`` of several files does, and ``jobs retry`` re-runs only what failed). Only a task killed by the
hard time limit ends without returning: :meth:`JobTask.on_failure` (run by the worker's main process then)
fails the job. A task whose process dies (kill -9, out of memory) is delivered again (``reject_on_worker_lost``);
one whose process died on more than ``BICONIC_JOB_RETRIES`` deliveries fails instead of killing workers forever.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from celery import Task, chord
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import task_postrun, task_prerun

from engine.errors import BiconicError, TransientError
from engine.jobs.app import MAX_BACKOFF, app
from engine.jobs.fairness import connection_slot
from engine.jobs.monitor import job_ended, job_finished, job_retry, running, time_limit_kill
from engine.jobs.request import JobRequest
from engine.jobs.summary import combine
from engine.logs import log_context
from engine.pipeline.runner import PartitionPick, run_load
from engine.postgres import meta_jobs as store
from engine.settings import settings
from engine.sources import open_source
from engine.sources.base import IncrementalSource, Partition
from engine.spec.models import LoadSpec

__all__ = ["JobCancelled", "JobProgress", "backoff", "fans_out", "partition", "plan", "stage_done"]

log = logging.getLogger("biconic.jobs")

#: seconds between two progress writes of a running task (each also checks for a cancel)
PROGRESS_EVERY = 1.0
#: the whole load in one task
WHOLE = -1


class JobCancelled(Exception):  # noqa: N818 - not an error: the user asked for it
    """Raised inside a running load when its job was cancelled: the partition's transaction rolls back.

    Deliberately not a :class:`BiconicError`, so a load of several partitions stops at once instead of noting
    it as one failed partition and going on to the next."""


class JobProgress:
    """A load's progress, written to its task row at most once a second; sees a cancel on the way."""

    def __init__(self, dsn: str, job_id: str, stage: int, part: int, clock: Any = time.monotonic) -> None:
        self.dsn, self.job_id, self.stage, self.part, self.clock = dsn, job_id, stage, part, clock
        self.last = -PROGRESS_EVERY

    def update(self, *, label: str, rows: int, done: int, total: int) -> None:
        now = self.clock()
        if now - self.last < PROGRESS_EVERY:
            return
        self.last = now
        if store.task_progress(self.dsn, self.job_id, self.stage, self.part, rows) == "cancelled":
            raise JobCancelled(self.job_id)


def backoff(attempt: int, base: float | None = None, rng: random.Random | None = None) -> float:
    """Seconds before retry number ``attempt`` (1, 2, ...): doubling from ``base``, at most
    :data:`MAX_BACKOFF`, with up to 25% jitter so retries of many tasks that failed together spread out."""
    first = settings().job_backoff if base is None else base
    delay = min(first * 2 ** (attempt - 1), MAX_BACKOFF)
    return float(delay * (1 + 0.25 * (rng or random).random()))


def fans_out(spec: LoadSpec, partitions: int, full_refresh: bool, incremental: bool) -> bool:
    """Whether a load runs as one task per partition (append and merge) or as one task (see the module)."""
    return partitions > 1 and spec.target.mode != "replace" and not full_refresh and not incremental


class JobTask(Task):  # type: ignore[misc]
    """Base of the job tasks: a task killed by the hard time limit fails its job (see the module)."""

    def on_failure(self, exc: BaseException, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                   einfo: Any) -> None:
        job_id, stage, part, request = _job_args(args, kwargs)
        if job_id is None or request is None:
            return
        dsn = JobRequest.from_json(request).jobs_dsn()
        message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        timeout = type(exc).__name__ == "TimeLimitExceeded"
        if timeout:
            message = f"killed after the time limit of {settings().job_time_limit:g} s (BICONIC_JOB_TIME_LIMIT)"
        try:
            if part is not None:  # the attempt could not say how it ended: it says it here
                store.close_open_attempts(dsn, job_id, stage, part, "timeout" if timeout else "failed", message)
                store.finish_task(dsn, job_id, stage, part, "failed", error=message)
            if timeout:
                time_limit_kill("hard")
            if store.set_state(dsn, job_id, "failed", error=message, error_type=type(exc).__name__):
                job_ended(dsn, job_id, "timeout" if timeout else "failed")
        except BiconicError as recorded:
            log.error("job %s: could not record its failure (%s): %s", job_id, message, recorded)


#: task id -> the log context its lines carry while it runs
_contexts: dict[str, ExitStack] = {}


@task_prerun.connect  # type: ignore[untyped-decorator]
def _ids_on(task_id: str = "", args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None,
            **_: Any) -> None:
    """A job task's lines carry its job id, stage and connection id (a load's own lines add the load id)."""
    job_id, stage, _part, request = _job_args(tuple(args or ()), kwargs or {})
    if job_id is None or not isinstance(request, dict):
        return
    load = request.get("load")
    connection = load.get("connection_id") if isinstance(load, dict) else None
    stack = ExitStack()
    stack.enter_context(log_context(job_id=job_id, stage=stage, connection_id=connection))
    _contexts[task_id] = stack


@task_postrun.connect  # type: ignore[untyped-decorator]
def _ids_off(task_id: str = "", **_: Any) -> None:
    stack = _contexts.pop(task_id, None)
    if stack is not None:
        stack.close()


def _job_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str | None, int, int | None, Any]:
    """(job id, stage, part or None, request) of a task's arguments: every job task is sent as
    ``(job_id, stage, request)`` or, a partition, ``(job_id, stage, part, label, total, request, narrow)``."""
    if kwargs or len(args) not in (3, 7):
        return None, 0, None, None
    return str(args[0]), int(args[1]), int(args[2]) if len(args) == 7 else None, args[5 if len(args) == 7 else 2]


@app.task(bind=True, base=JobTask, name="biconic.plan")  # type: ignore[untyped-decorator]
def plan(self: Task, job_id: str, stage: int, request: dict[str, Any]) -> None:
    """List the stage's partitions and send their tasks as a chord (only those not done yet, on a retry)."""
    job = JobRequest.from_json(request)
    dsn = job.jobs_dsn()
    try:
        specs = job.specs()
        spec = specs[stage]
        source = open_source(spec.source.path, format=spec.source.format, options=spec.source.options)
        partitions = source.partitions()
        labels = [p.label for p in partitions]
    except BiconicError as exc:
        if store.set_state(dsn, job_id, "failed", error=str(exc), error_type=type(exc).__name__):
            job_ended(dsn, job_id, "failed")
        return
    if not store.set_state(dsn, job_id, "running", stage=stage):
        return  # cancelled (or finished) before it started
    incremental = isinstance(source, IncrementalSource) and bool(source.cursor)
    planned: list[tuple[int, str, int, Narrow | None]]
    if fans_out(spec, len(labels), job.full_refresh, incremental):
        planned = [(i, label, len(labels), narrow) for i, (label, narrow) in enumerate(
            zip(labels, _narrowed(partitions), strict=True))]
    else:
        planned = [(WHOLE, spec.source.path if len(labels) != 1 else labels[0], len(labels), None)]
    done = {t.part for t in store.tasks(dsn, job_id, stage) if t.state == "done"}
    ids = {part: str(uuid.uuid4()) for part, _, _, _ in planned}
    store.plan_tasks(dsn, job_id, stage, [(part, label, ids[part]) for part, label, _, _ in planned
                                          if part not in done])
    header = [partition.si(job_id, stage, part, label, total, request, narrow).set(task_id=ids[part])
              for part, label, total, narrow in planned if part not in done]
    body = stage_done.si(job_id, stage, request)
    if header:
        chord(header)(body)
    else:
        body.delay()


#: a file partition's own file, and its place among that file's partitions: [path, index, total]
Narrow = list[Any]


def _narrowed(partitions: list[Partition]) -> list[Narrow | None]:
    """For each file partition, its file and its place among that file's partitions: its task reads just that
    file (a glob of a thousand files is not listed, nor hashed on a new machine, by every task). The ledger key
    does not depend on the path the load was given, so the rows commit under the same key either way."""
    by_file: dict[Path, list[int]] = {}
    for i, p in enumerate(partitions):
        if p.path is not None:
            by_file.setdefault(p.path, []).append(i)
    out: list[Narrow | None] = [None] * len(partitions)
    for path, members in by_file.items():
        for j, i in enumerate(members):
            out[i] = [str(path), j, len(members)]
    return out


@app.task(bind=True, base=JobTask, name="biconic.partition", max_retries=None)  # type: ignore[untyped-decorator]
def partition(self: Task, job_id: str, stage: int, part: int, label: str, total: int,
              request: dict[str, Any], narrow: Narrow | None = None) -> str:
    """Load one partition (or, ``part`` -1, the whole load) under the connection's fairness limit."""
    job = JobRequest.from_json(request)
    dsn = job.jobs_dsn()
    spec = job.specs()[stage]
    if narrow is not None:  # just this partition's file
        path, index, total = narrow
        spec = spec.model_copy(update={"source": spec.source.model_copy(update={"path": path})})
        part_pick = PartitionPick(index, total, label)
    else:
        part_pick = PartitionPick(part, total, label)
    connection = None if spec.target.connection_id is None else str(spec.target.connection_id)
    with connection_slot(dsn, connection, settings().connection_limit) as slot:
        if slot is None:  # the connection is at its limit: back to the queue, not an attempt
            raise self.retry(countdown=1.0 + random.random() * 2)
        state, attempt = store.start_task(dsn, job_id, stage, part)
        if state in ("cancelled", "failed", "done", "missing"):
            store.record_attempt(dsn, job_id, stage, part, attempt, "skipped", f"the job is {state}")
            store.finish_task(dsn, job_id, stage, part, "cancelled" if state == "cancelled" else "skipped")
            return "skipped"
        lost = store.lost_attempts(dsn, job_id, stage, part) if attempt > 1 else 0
        if lost > settings().job_retries:  # e.g. out of memory every time: a worker killed on every delivery
            said = f"{label}: the process running it died {lost} times (killed, or out of memory); not run again"
            store.record_attempt(dsn, job_id, stage, part, attempt, "failed", said)
            store.finish_task(dsn, job_id, stage, part, "failed", error=said)
            return "failed"
        with running(connection):
            return _run(self, job, spec, dsn, job_id, stage, part, part_pick, attempt)


def _run(task: Task, job: JobRequest, spec: LoadSpec, dsn: str, job_id: str, stage: int, part: int,
         pick: PartitionPick, attempt: int) -> str:
    """Run the load; record how the attempt ended; retry a transient failure with backoff."""
    try:
        report = run_load(spec, progress=JobProgress(dsn, job_id, stage, part),
                          only=pick if part != WHOLE else None, full_refresh=job.full_refresh)
    except JobCancelled:
        store.record_attempt(dsn, job_id, stage, part, attempt, "cancelled")
        store.finish_task(dsn, job_id, stage, part, "cancelled")
        return "cancelled"
    except SoftTimeLimitExceeded:
        said = f"timed out: the time limit of {settings().job_time_limit:g} s (BICONIC_JOB_TIME_LIMIT) was reached"
        store.record_attempt(dsn, job_id, stage, part, attempt, "timeout", said)
        time_limit_kill("soft")
        store.finish_task(dsn, job_id, stage, part, "failed", error=f"{pick.label}: {said}")
        return "failed"
    except BiconicError as exc:
        if isinstance(exc, TransientError) and attempt <= settings().job_retries:
            delay = backoff(attempt)
            store.record_attempt(dsn, job_id, stage, part, attempt, "retry", f"{exc} (retry in {delay:.1f} s)")
            job_retry()
            raise task.retry(countdown=delay) from exc
        said = str(exc) if pick.label in str(exc) else f"{pick.label}: {exc}"  # which file, in a fan-out
        store.record_attempt(dsn, job_id, stage, part, attempt, "failed", said)
        store.finish_task(dsn, job_id, stage, part, "failed", error=said)
        return "failed"
    store.record_attempt(dsn, job_id, stage, part, attempt, "done")
    store.finish_task(dsn, job_id, stage, part, "done", report=report.to_dict())
    return "done"


@app.task(bind=True, base=JobTask, name="biconic.stage_done")  # type: ignore[untyped-decorator]
def stage_done(self: Task, job_id: str, stage: int, request: dict[str, Any]) -> None:
    """Every task of the stage has ended: fail the job on a failed one, else plan the next stage or finish."""
    job = JobRequest.from_json(request)
    dsn = job.jobs_dsn()
    found = store.get(dsn, job_id)
    if found is None or found.state in store.FINISHED:
        return  # a cancel was counted where it was made (engine.jobs.client.cancel)
    rows = [t for t in found.tasks if t.stage == stage]
    combined = combine(stage, rows)
    if found.kind == "load":
        combined["source"] = found.request.get("path")  # as submitted (masked), not one task's file
    reports = [r for r in found.reports if r.get("stage") != stage] + [combined]
    failed = [t for t in rows if t.state == "failed"]
    if failed:
        more = f" ({len(failed)} of {len(rows)} partitions failed; the others committed)" if len(rows) > 1 else ""
        if store.set_state(dsn, job_id, "failed", error=f"{failed[0].error}{more}", error_type="LoadError",
                           reports=reports):
            job_finished(_failed_outcome(dsn, job_id, stage), found.submitted_at)
    elif any(t.state == "cancelled" for t in rows):
        if store.set_state(dsn, job_id, "cancelled", reports=reports):
            job_finished("cancelled", found.submitted_at)
    elif stage + 1 < found.stages:
        store.set_state(dsn, job_id, "running", reports=reports, stage=stage + 1)
        plan.delay(job_id, stage + 1, request)
    elif store.set_state(dsn, job_id, "done", reports=reports):
        job_finished("succeeded", found.submitted_at)


def _failed_outcome(dsn: str, job_id: str, stage: int) -> str:
    """``timeout`` when a task of the stage ran out of time (soft limit), else ``failed``."""
    timed_out = any(a["stage"] == stage and a["outcome"] == "timeout" for a in store.attempts(dsn, job_id))
    return "timeout" if timed_out else "failed"
