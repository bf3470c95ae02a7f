"""``/v1/imports``: an upload (or, for an admin, a path or URL the workers can read) loaded as a job.

Each endpoint is one call of :mod:`engine.jobs.client`. The connection is the token's: a read/write token's
imports load its own connection only (its rows' own ``connection_id`` values must match, or be replaced with
``connection_override``), and it sees only its own jobs; another connection's job is a 404, as if it did not
exist.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel, ConfigDict, Field

from engine.jobs import client as jobs
from engine.postgres import meta_jobs
from engine.service.auth import Caller, Writer, dsn_of, scoped_connection
from engine.service.job_view import rejected_row, shown_job, shown_list
from engine.service.problems import COMMON_PROBLEMS, ProblemError
from engine.service.tokens import TokenInfo
from engine.settings import settings
from engine.spec.models import Contract, Mode

__all__ = ["ImportRequest", "router"]

router = APIRouter(prefix="/v1/imports", tags=["imports"], responses=COMMON_PROBLEMS)

#: seconds between two looks at a job while its events are streamed
EVENT_POLL = 0.5
#: a comment every this many seconds keeps proxies from closing a quiet stream
KEEPALIVE = 15.0
_OPTION_VALUE = str | int | float | bool
#: the datasets a connection's token may load into: a plain name in the datasets' schema, none of the engine's
#: or the server's own tables
_TENANT_DATASET = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_RESERVED = ("biconic", "biconic_stage", "pg_catalog", "information_schema")
#: source options a request may not set: they name secrets or servers, not how to read a file
_FORBIDDEN_OPTION_PARTS = ("password", "secret", "dsn", "env", "url", "token", "key_file")


class _Import(BaseModel):
    """How to load (the options of ``biconic load``)."""
    model_config = ConfigDict(extra="forbid")
    into: str = Field(min_length=1, max_length=200, description="the dataset (table) to load into")
    connection_id: str | None = Field(None, max_length=64, description="admin tokens only: the connection "
                                      "stored in every row (a connection's token always loads its own)")
    connection_override: bool = Field(False, description="the connection replaces the rows' own connection_id "
                                      "values (else differing ones are an error)")
    partition_by: str | None = Field(None, max_length=200, description="COLUMN[:day|week|month|year]")
    hash_partitions: int | None = Field(None, ge=1, le=1024)
    mode: Mode = "append"
    key: list[Annotated[str, Field(max_length=200)]] | None = Field(None, max_length=32,
                                                                    description="merge keys")
    spec: dict[str, Any] | None = Field(None, description="transformations and rules, as a pipeline file's "
                                        "load entry writes them")
    sheet: str | list[Annotated[str, Field(max_length=200)]] | None = Field(None, description="Excel sheet(s)")
    format: str | None = Field(None, max_length=20, description="csv, tsv, json, ndjson, parquet, xlsx, ... "
                               "(default: from the file name)")
    options: dict[Annotated[str, Field(max_length=64)], _OPTION_VALUE] | None = Field(
        None, max_length=32, description="reader options, e.g. {\"delimiter\": \";\", \"encoding\": \"latin-1\"}")
    contract: Contract | None = None
    max_rejected: float | None = Field(None, ge=0, le=1, description="share of rows that may be rejected")
    allow_empty: bool = False
    full_refresh: bool = False


class UploadImport(_Import):
    """An import of a finished upload."""
    upload_id: str = Field(max_length=64, description="a finished upload of this connection (its tus id)")


class SourceImport(_Import):
    """An import of a path or URL the workers can read (admin tokens only)."""
    source: str = Field(min_length=1, max_length=2000, description="a path or URL the workers can read")


#: an upload's import, or (admin) a source's
ImportRequest = Annotated[UploadImport | SourceImport, Body()]


class JobAccepted(BaseModel):
    job_id: str
    state: str


def _source(request: UploadImport | SourceImport, caller: TokenInfo, dsn: str) -> str:
    """The path the workers read: the upload's file (kept under its own, sanitised name), or an admin's source."""
    if isinstance(request, SourceImport):
        if not caller.is_admin:
            raise ProblemError(403, "only an admin token may import from a source; upload the file instead")
        return request.source
    from engine.service.upload_store import finished_upload

    path, _ = finished_upload(dsn, str(request.upload_id), caller)
    return str(path)


def _load_options(request: UploadImport | SourceImport, caller: TokenInfo) -> dict[str, Any]:
    for name in request.options or {}:
        if any(part in name.lower() for part in _FORBIDDEN_OPTION_PARTS):
            raise ProblemError(400, f"options.{name}: not an option an import may set")
    if request.connection_id is not None and not caller.is_admin:
        raise ProblemError(403, "connection_id: a connection's token always loads its own connection")
    connection = scoped_connection(caller, request.connection_id)
    picked = {"connection_id": connection, "connection_override": request.connection_override,
              "partition_by": request.partition_by, "hash_partitions": request.hash_partitions,
              "mode": request.mode, "key": request.key, "spec": request.spec, "sheet": request.sheet,
              "format": request.format, "options": request.options, "contract": request.contract,
              "max_rejected": request.max_rejected, "allow_empty": request.allow_empty or None}
    return {k: v for k, v in picked.items() if v is not None}


@router.post("", status_code=202, summary="Queue an import of an upload")
def create_import(body: ImportRequest, caller: Writer, request: Request) -> JobAccepted:
    dsn = dsn_of(request)
    options = _load_options(body, caller)
    path = _source(body, caller, dsn)
    if not caller.is_admin and not _TENANT_DATASET.fullmatch(body.into):
        raise ProblemError(400, "into: a dataset name of at most 63 letters, digits and _, not starting with a "
                                "digit (only an admin token names a schema)")
    if body.into.lower().startswith("pg_") or body.into.lower().partition(".")[0] in _RESERVED:
        raise ProblemError(400, f"into: {body.into!r} is a name of the engine or of PostgreSQL, not a dataset")
    job = jobs.submit(path, body.into, full_refresh=body.full_refresh, dsn=dsn, **options)
    return JobAccepted(job_id=job.job_id, state="queued")


def _owned(dsn: str, job_id: str, caller: TokenInfo) -> dict[str, Any]:
    """The job, if the caller may see it: a full UUID of a job of the caller's connection (admin: any)."""
    try:
        full = str(uuid.UUID(job_id))
    except ValueError as exc:
        raise ProblemError(404, f"no import {job_id!r}") from exc
    try:
        job = jobs.describe(dsn, full, with_attempts=False)
    except jobs.JobNotFoundError as exc:
        raise ProblemError(404, f"no import {job_id}") from exc
    if not caller.is_admin and job["connection_id"] != str(caller.connection_id):
        raise ProblemError(404, f"no import {job_id}")
    return job


@router.get("/{job_id}", summary="An import's state, progress and counts")
def get_import(job_id: str, caller: Caller, request: Request) -> dict[str, Any]:
    return shown_job(_owned(dsn_of(request), job_id, caller))


@router.delete("/{job_id}", summary="Cancel a queued or running import")
def cancel_import(job_id: str, caller: Writer, request: Request) -> dict[str, Any]:
    dsn = dsn_of(request)
    job = _owned(dsn, job_id, caller)
    cancelled = jobs.cancel(job["job_id"], dsn=dsn)
    return {"job_id": job["job_id"], "cancelled": cancelled,
            "state": "cancelled" if cancelled else job["state"]}


@router.get("", summary="Imports, newest first")
def list_imports(caller: Caller, request: Request,
                 state: Annotated[Literal["queued", "running", "done", "failed", "cancelled"] | None, Query()] = None,
                 connection_id: Annotated[str | None, Query(max_length=64)] = None,
                 limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[dict[str, Any]]:
    connection = scoped_connection(caller, connection_id)
    return shown_list(jobs.list_jobs(dsn=dsn_of(request), state=state,
                                     connection_id=None if connection is None else str(connection), limit=limit))


def _job_of_caller(job_id: str, caller: Caller, request: Request) -> dict[str, Any]:
    return _owned(dsn_of(request), job_id, caller)


#: the caller's job named in the path (a 404 before anything is streamed)
OwnedJob = Annotated[dict[str, Any], Depends(_job_of_caller)]


@router.get("/{job_id}/events", response_class=EventSourceResponse,
            summary="Server-Sent Events of an import's progress, until it ends")
async def import_events(job: OwnedJob, request: Request) -> AsyncIterator[ServerSentEvent]:
    """``progress`` events (the import as ``GET /v1/imports/{id}`` shows it) whenever it changes, then one
    ``done``, ``failed`` or ``cancelled`` event, and the stream ends."""
    dsn = dsn_of(request)
    last: dict[str, Any] | None = None
    quiet = 0.0
    while True:
        shown = shown_job(await run_in_threadpool(partial(jobs.describe, dsn, job["job_id"], with_attempts=False)))
        finished = shown["state"] in meta_jobs.FINISHED
        if finished:
            yield ServerSentEvent(event=shown["state"], data=shown, id=str(shown["progress"]["rows"]))
            return
        if shown != last:
            yield ServerSentEvent(event="progress", data=shown, id=str(shown["progress"]["rows"]))
            last, quiet = shown, 0.0
        elif quiet >= KEEPALIVE:
            yield ServerSentEvent(comment="keep-alive")
            quiet = 0.0
        if await request.is_disconnected():
            return
        await asyncio.sleep(EVENT_POLL)
        quiet += EVENT_POLL


class QuarantinePage(BaseModel):
    job_id: str
    dataset: str | None
    offset: int
    limit: int
    rows: list[dict[str, Any]]
    next_offset: int | None = Field(description="the offset of the next page; null on the last")


@router.get("/{job_id}/quarantine", summary="The rows an import rejected, page by page (JSON) or all (CSV)",
            responses={200: {"content": {"text/csv": {}}}})
def import_quarantine(job: OwnedJob, request: Request,
                      offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
                      limit: Annotated[int | None, Query(ge=1)] = None,
                      format: Annotated[Literal["json", "csv"], Query()] = "json") -> Any:
    from engine.postgres import meta_reads
    from engine.postgres.pool import meta_db

    dsn = dsn_of(request)
    shown = shown_job(job)
    dataset, load_ids = job["dataset"], shown["load_ids"]
    if format == "csv":
        return StreamingResponse(_csv(dsn, dataset, load_ids), media_type="text/csv",
                                 headers={"Content-Disposition": f'attachment; filename="quarantine-'
                                                                 f'{job["job_id"]}.csv"'})
    cap = settings().api_page_max
    size = min(limit or 100, cap)
    if limit is not None and limit > cap:
        raise ProblemError(400, f"limit: at most {cap} rows a page (BICONIC_API_PAGE_MAX)")
    rows: list[dict[str, Any]] = []
    if dataset and load_ids:
        with meta_db(dsn) as db:
            rows = meta_reads.quarantine_page(db, dataset, load_ids, offset=offset, limit=size + 1)
    more = len(rows) > size
    return QuarantinePage(job_id=job["job_id"], dataset=dataset, offset=offset, limit=size,
                          rows=[rejected_row(r) for r in rows[:size]], next_offset=offset + size if more else None)


#: rejected rows per page of a CSV download: each page is one short read on a pooled connection, so a slow
#: client never holds a PostgreSQL connection while it reads
CSV_PAGE = 5000
_CSV_COLUMNS = ("load_id", "source", "row_number", "rule", "column", "reason", "values", "quarantined_at",
                "superseded")


def _csv(dsn: str, dataset: str | None, load_ids: list[str]) -> Iterator[bytes]:
    """Every rejected row as CSV with a header (the JSON page's fields), page by page."""
    import csv
    import io

    from engine.postgres import meta_reads
    from engine.postgres.pool import meta_db

    offset = 0
    while True:
        out = io.StringIO()
        writer = csv.writer(out)
        if offset == 0:
            writer.writerow(_CSV_COLUMNS)
        rows: list[dict[str, Any]] = []
        if dataset and load_ids:
            with meta_db(dsn) as db:
                rows = meta_reads.quarantine_page(db, dataset, load_ids, offset=offset, limit=CSV_PAGE)
        for row in rows:
            shown = rejected_row(row)
            shown["values"] = json.dumps(shown["values"], ensure_ascii=False, default=str)
            writer.writerow([shown[c] for c in _CSV_COLUMNS])
        yield out.getvalue().encode()
        if len(rows) < CSV_PAGE:
            return
        offset += CSV_PAGE
