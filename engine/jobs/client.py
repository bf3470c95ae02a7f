"""Submitting imports and following them: ``engine.submit(...) -> Job`` and what ``biconic submit`` / ``biconic
jobs`` call.

>>> job = engine.submit("orders/*.csv", into="orders", partition_by="created_at", connection_id=42)  # doctest: +SKIP
>>> job.wait(timeout=600).state  # doctest: +SKIP
'done'

A submit checks the arguments (a bad spec fails here, at once, with its usual one-line error), records the job
as ``queued`` in PostgreSQL and sends its first task to the broker; workers (``biconic worker``) do the rest.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import BiconicError, SpecError
from engine.jobs.request import LOAD_OPTIONS, JobRequest
from engine.jobs.summary import progress
from engine.postgres import meta_jobs as store

__all__ = ["Job", "JobNotFoundError", "cancel", "list_jobs", "retry", "submit", "submit_pipeline"]


class JobNotFoundError(BiconicError):
    """No job has this id (or its first characters match several)."""
    exit_code = 2


@dataclass
class Job:
    """A handle on a submitted job: ``status()``, ``wait(timeout)``, ``cancel()``."""
    job_id: str
    dsn: str

    def status(self) -> dict[str, Any]:
        """State, attempts, progress, error and reports, as ``biconic jobs show --json`` prints them."""
        return describe(self.dsn, self.job_id)

    @property
    def state(self) -> str:
        return str(self.status()["state"])

    def wait(self, timeout: float | None = None, *, every: float = 0.5,
             sleep: Callable[[float], None] = time.sleep) -> Job:
        """Block until the job has finished (done, failed or cancelled); a :class:`TimeoutError` after
        ``timeout`` seconds. Returns the job (``job.state`` tells how it ended)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.state not in store.FINISHED:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {self.job_id} still {self.state} after {timeout:g} s")
            sleep(every)
        return self

    def cancel(self) -> bool:
        """Cancel the job (see :func:`cancel`)."""
        return cancel(self.job_id, dsn=self.dsn)


def _send(job_id: str, stage: int, request: JobRequest) -> None:
    from engine.jobs.tasks import plan

    plan.delay(job_id, stage, request.to_json())


def _queue(request: JobRequest) -> Job:
    specs = request.specs()  # bad arguments fail before anything is recorded or sent
    dsn = request.jobs_dsn()
    first = specs[0].target
    connection = None if first.connection_id is None else str(first.connection_id)
    job_id = store.create(dsn, kind=request.kind, request=request.shown(), connection_id=connection,
                          dataset=first.table if len(specs) == 1 else None, stages=len(specs))
    try:
        _send(job_id, 0, request)
    except BaseException as exc:
        store.set_state(dsn, job_id, "failed", error=f"could not be queued: {exc}", error_type=type(exc).__name__)
        raise
    return Job(job_id, dsn)


def submit(source: str | Path, into: str, *, full_refresh: bool = False, **load_options: Any) -> Job:
    """Queue ``engine.load(source, into, **load_options)`` as a job; returns at once.

    ``source`` must be a path or URL the workers can read (a shared folder, S3, a database): data in Python
    cannot travel through a queue. A pipeline YAML file goes to :func:`submit_pipeline`."""
    unknown = sorted(set(load_options) - set(LOAD_OPTIONS))
    if unknown:
        raise SpecError(unknown[0], f"not an option of a load; known: {', '.join(LOAD_OPTIONS[1:])}")
    if not isinstance(source, (str, Path)):
        raise SpecError("source", "a job reads a path or URL the workers can reach, not data in Python")
    if "connection_id" in load_options and load_options["connection_id"] is not None:
        load_options["connection_id"] = str(load_options["connection_id"])
    spec = load_options.get("spec")
    if isinstance(spec, Path):
        load_options["spec"] = str(spec.resolve())
    return _queue(JobRequest("load", _absolute(source), {"into": into, **load_options},
                             full_refresh=full_refresh))


def submit_pipeline(pipeline_file: str | Path, *, dsn: str | None = None, archive: str | bool | None = None,
                    contract: str | None = None, full_refresh: bool = False) -> Job:
    """Queue ``engine.run(pipeline_file, ...)`` as a job: its loads run in order, each fanned out."""
    return _queue(JobRequest("pipeline", str(Path(pipeline_file).resolve()), dsn=dsn, archive=archive,
                             contract=contract, full_refresh=full_refresh))


def _absolute(source: str | Path) -> str:
    """A local path made absolute (the worker's working folder is not the submitter's); URLs as they are."""
    text = str(source)
    return text if "://" in text else str(Path(text).expanduser().absolute())


def resolve(dsn: str, job_id: str) -> str:
    """The full id of a job given by its id or its first characters."""
    try:
        return str(uuid.UUID(job_id))
    except ValueError:
        found = store.find(dsn, job_id) if len(job_id) >= 4 else []
    if len(found) != 1:
        raise JobNotFoundError(f"job {job_id!r}: " + ("no such job" if not found else "matches several jobs; "
                                                      "give more of its id"))
    return found[0]


def describe(dsn: str, job_id: str, *, with_attempts: bool = True) -> dict[str, Any]:
    """Everything about a job: state, request (secrets masked), progress, attempts (one more query: the API
    does without them), error, reports."""
    job = store.get(dsn, resolve(dsn, job_id))
    if job is None:
        raise JobNotFoundError(f"job {job_id!r}: no such job")
    return {"job_id": job.job_id, "state": job.state, "kind": job.kind, "dataset": job.dataset,
            "connection_id": job.connection_id, "submitted_at": _iso(job.submitted_at),
            "started_at": _iso(job.started_at), "finished_at": _iso(job.finished_at),
            "progress": progress(job),
            "tasks": [{"stage": t.stage, "part": t.part, "label": t.label, "state": t.state, "attempts": t.attempts,
                       "rows_in": t.rows_in, "rows_loaded": t.rows_loaded, "error": t.error} for t in job.tasks],
            "attempts": store.attempts(dsn, job.job_id) if with_attempts else [], "error": job.error,
            "error_type": job.error_type, "request": job.request, "reports": job.reports}


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def list_jobs(*, dsn: str, state: str | None = None, connection_id: str | None = None,
              since: dt.datetime | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Jobs, newest first: id, state, dataset, connection, times, rows loaded, error."""
    out = []
    for job in store.list_jobs(dsn, state=state, connection_id=connection_id, since=since, limit=limit):
        loaded = sum(int(r.get("rows_loaded") or 0) for r in job.reports)
        out.append({"job_id": job.job_id, "state": job.state, "dataset": job.dataset,
                    "connection_id": job.connection_id, "submitted_at": _iso(job.submitted_at),
                    "finished_at": _iso(job.finished_at), "rows_loaded": loaded, "error": job.error})
    return out


def cancel(job_id: str, *, dsn: str) -> bool:
    """Cancel a queued or running job: its queued tasks are marked cancelled (each is skipped when a worker
    takes it), a running partition sees the cancel within a second of its next batch and rolls back (nothing
    half-loaded). False if already finished.

    The queued tasks are not revoked through Celery: a revoke reaches only the workers running now (one
    started later would run the task), and a revoked member fails its chord, whose finishing step then never
    runs (the worker logged a ChordError traceback on every cancel). A skip costs a worker a few milliseconds."""
    from engine.jobs.monitor import job_ended

    full = resolve(dsn, job_id)
    moved = store.set_state(dsn, full, "cancelled", error="cancelled by request", error_type="Cancelled")
    if moved:
        store.cancel_queued(dsn, full)
        job_ended(dsn, full, "cancelled")  # in the process that cancelled: the API's, or a CLI's push
    return moved


def retry(job_id: str, *, dsn: str) -> Job:
    """Run a failed or cancelled job again from the stage it stopped at; committed partitions are skipped."""
    full = resolve(dsn, job_id)
    job = store.get(dsn, full)
    if job is None:
        raise JobNotFoundError(f"job {job_id!r}: no such job")
    if not store.reopen(dsn, full):
        raise SpecError("job", f"job {full} is {job.state}: only a failed or cancelled job can be retried")
    _send(full, job.stage, _unmasked(job.request, dsn))
    return Job(full, dsn)


def _unmasked(shown: dict[str, Any], dsn: str) -> JobRequest:
    """The request of a job to run again, from its stored (masked) copy: the DSN masked there is the one the
    job's history is in; any other masked secret is not kept anywhere, so the job must be submitted again."""
    request = JobRequest.from_json(shown)
    if request.dsn and "***" in request.dsn:
        request.dsn = dsn
    if isinstance(request.load.get("dsn"), str) and "***" in request.load["dsn"]:
        request.load["dsn"] = dsn
    masked = [k for k, v in {"path": request.path, **request.load}.items() if isinstance(v, str) and "***" in v]
    if masked:
        raise SpecError(masked[0], "holds a password, which a job does not keep: submit the import again")
    return request
