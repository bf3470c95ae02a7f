"""The history a user browses: reads of the run log (``biconic.runs``) and the quarantine, beside
:mod:`engine.postgres.meta`, which owns those tables, their DDL and every write to them.

Reads only; the quarantine of a big load can hold millions of rows, so :func:`quarantine_reader` streams it
as Arrow record batches from the server instead of fetching it whole.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa

from engine.postgres.meta import DATASETS, QUARANTINE, RUNS, Runs, table_exists

__all__ = ["QUARANTINE_COLUMNS", "RUN_COLUMNS", "dataset_known", "latest_quarantined_load", "quarantine_page",
           "quarantine_reader", "quarantine_rows", "run_dataset", "runs"]

RUN_COLUMNS = ["load_id", "dataset", "source", "mode", "connection_id", "started_at", "finished_at", "seconds",
               "outcome", "rows_in", "rows_loaded", "rows_quarantined", "rows_filtered", "partitions_done",
               "partitions_skipped", "error_class", "error"]
#: a run still ``running`` whose backend is gone (its process was killed: its transactions rolled back, and no
#: outcome was written); another role's backend shows no ``backend_start``, so its pid alone keeps it running
_GONE = ("(r.finished_at IS NULL AND r.backend_pid IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a "
         "WHERE a.pid = r.backend_pid AND (a.backend_start IS NULL OR a.backend_start = r.backend_start)))")
_KILLED_OUTCOME = f"CASE WHEN {_GONE} THEN 'killed' ELSE outcome END"
_KILLED_ERROR = (f"CASE WHEN {_GONE} THEN 'the load ended without recording an outcome (its process was killed or "
                 "its connection lost); what it committed stays, the rest rolled back: run it again' ELSE error END")
QUARANTINE_COLUMNS = ["load_id", "dataset", "connection_id", "source", "row_number", "rule", "column_name",
                      "reason", "raw", "quarantined_at", "superseded_by"]


def runs(db: Runs, *, dataset: str | None = None, since: dt.datetime | None = None,
         limit: int | None = None) -> list[dict[str, Any]]:
    """Load runs, newest first, optionally of one dataset, started at or after ``since``, at most ``limit``."""
    if not table_exists(db, RUNS):
        return []
    where, params = ["true"], list[Any]()
    if dataset is not None:
        params.append(dataset)
        where.append(f"dataset = ${len(params)}")
    if since is not None:
        params.append(since)
        where.append(f"started_at >= ${len(params)}")
    tail = ""
    if limit is not None:
        params.append(limit)
        tail = f" LIMIT ${len(params)}"
    shown = [_KILLED_OUTCOME if c == "outcome" else _KILLED_ERROR if c == "error" else c for c in RUN_COLUMNS]
    rows = db.run(f"SELECT {', '.join(shown)} FROM {RUNS} r WHERE {' AND '.join(where)} "
                  f"ORDER BY started_at DESC, load_id{tail}", params)
    return [dict(zip(RUN_COLUMNS, r, strict=True)) for r in rows]


def dataset_known(db: Runs, dataset: str) -> bool:
    """Whether a dataset of that name was ever created, loaded or quarantined into (False before the run log
    exists: the first load of this engine version brings the schema up to date)."""
    if not table_exists(db, RUNS):
        return False
    return bool(db.run(f"SELECT EXISTS (SELECT 1 FROM {DATASETS} WHERE dataset = $1) "
                       f"OR EXISTS (SELECT 1 FROM {RUNS} WHERE dataset = $1) "
                       f"OR EXISTS (SELECT 1 FROM {QUARANTINE} WHERE dataset = $1)", [dataset])[0][0])


def run_dataset(db: Runs, load_id: str) -> str | None:
    """The dataset a load id belongs to (from the run log, else from its rejected rows), or None."""
    rows = db.run(f"SELECT dataset FROM {RUNS} WHERE load_id = $1 UNION ALL "
                  f"(SELECT dataset FROM {QUARANTINE} WHERE load_id = $1 LIMIT 1)", [load_id])
    return str(rows[0][0]) if rows else None


def latest_quarantined_load(db: Runs, dataset: str, *, superseded: bool) -> str | None:
    """The newest load of the dataset that left rejected rows (still open ones unless ``superseded``)."""
    open_only = "" if superseded else "AND q.superseded_by IS NULL"
    rows = db.run(f"SELECT r.load_id FROM {RUNS} r WHERE r.dataset = $1 AND r.rows_quarantined > 0 "
                  f"AND EXISTS (SELECT 1 FROM {QUARANTINE} q WHERE q.dataset = r.dataset AND q.load_id = r.load_id "
                  f"{open_only}) ORDER BY r.started_at DESC LIMIT 1", [dataset])
    if not rows:  # rows older than the run log
        rows = db.run(f"SELECT q.load_id FROM {QUARANTINE} q WHERE q.dataset = $1 {open_only} "
                      "ORDER BY q.quarantined_at DESC LIMIT 1", [dataset])
    return str(rows[0][0]) if rows else None


def quarantine_page(db: Runs, dataset: str, load_ids: Sequence[str], *, offset: int,
                    limit: int) -> list[dict[str, Any]]:
    """One page of the rows ``load_ids`` rejected (superseded ones included: they are still what those loads
    rejected), in a stable order, so ``offset`` pages through them."""
    if not load_ids:
        return []
    sql, params = _select(dataset, list(load_ids), True, limit, offset)
    return [dict(zip(QUARANTINE_COLUMNS, r, strict=True)) for r in db.run(sql, params)]


def _select(dataset: str, load_id: str | Sequence[str] | None, superseded: bool, limit: int | None,
            offset: int = 0) -> tuple[str, list[Any]]:
    where, params = ["dataset = $1"], list[Any]([dataset])
    if isinstance(load_id, str):
        params.append(load_id)
        where.append(f"load_id = ${len(params)}")
    elif load_id is not None:
        marks = []
        for one in load_id:
            params.append(one)
            marks.append(f"${len(params)}")
        where.append(f"load_id IN ({', '.join(marks) or 'NULL'})")
    if not superseded:
        where.append("superseded_by IS NULL")
    tail = ""
    if limit is not None:
        params.append(limit)
        tail = f" LIMIT ${len(params)}"
    if offset:
        params.append(offset)
        tail += f" OFFSET ${len(params)}"
    return (f"SELECT {', '.join(QUARANTINE_COLUMNS)} FROM {QUARANTINE} WHERE {' AND '.join(where)} "
            f"ORDER BY quarantined_at, load_id, source, row_number{tail}", params)


def quarantine_rows(db: Runs, dataset: str, *, load_id: str | None, superseded: bool,
                    limit: int | None) -> list[dict[str, Any]]:
    """Rejected rows of a dataset (of one load; without the superseded ones unless asked), at most ``limit``."""
    sql, params = _select(dataset, load_id, superseded, limit)
    return [dict(zip(QUARANTINE_COLUMNS, r, strict=True)) for r in db.run(sql, params)]


@contextlib.contextmanager
def quarantine_reader(conn: Any, dataset: str, *, load_id: str | Sequence[str] | None,
                      superseded: bool) -> Iterator[pa.RecordBatchReader]:
    """The same rows as :func:`quarantine_rows`, all of them, streamed from the server as Arrow batches for the
    length of the block (the ADBC driver reads a COPY stream: memory stays bounded). ``conn`` is an ADBC
    connection."""
    sql, params = _select(dataset, load_id, superseded, None)
    with conn.cursor() as cur:
        cur.execute(sql, params)
        yield cur.fetch_record_batch()
