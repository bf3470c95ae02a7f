"""What happened to past loads: the run log (every load run, with its counts and outcome, failed or not) and
the rows each one quarantined.

>>> engine.loads("orders", since="7d")  # doctest: +SKIP
[{'load_id': '3f2a...', 'dataset': 'orders', 'outcome': 'succeeded', 'rows_in': 6, ...}]
>>> engine.quarantined("orders")  # the open rejected rows of the newest load that left any  # doctest: +SKIP

A rejected row is *superseded* once a later load commits the same source partition (same dataset, same
connection id, same partition key: the file's resolved path, plus the sheet for a workbook; the table or
query for a database) again: the fixed file re-loaded. Superseded rows are kept, hidden unless asked for.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

from engine.errors import SpecError
from engine.names import canonical_table
from engine.postgres import meta_reads
from engine.postgres.pool import MetaDb, meta_db
from engine.postgres.server import resolve_dsn

__all__ = ["export_quarantine", "loads", "parse_since", "quarantined"]

_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_RELATIVE = re.compile(r"^\s*(\d+)\s*(s|min|m|h|d|w)\s*$", re.IGNORECASE)


def parse_since(value: str | dt.datetime | dt.date | None, *, now: dt.datetime | None = None) -> dt.datetime | None:
    """A point in time from ``2026-12-01``, ``2026-12-01T08:00`` (local time unless it has an offset) or a
    span back from now: ``30m``, ``2h``, ``7d``, ``2w``.

    >>> parse_since("2h", now=dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC))
    datetime.datetime(2026, 1, 1, 10, 0, tzinfo=datetime.timezone.utc)
    """
    if value is None or isinstance(value, dt.datetime):
        return value if value is None or value.tzinfo else value.astimezone()
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time()).astimezone()
    match = _RELATIVE.match(value)
    if match:
        seconds = int(match.group(1)) * _UNITS[match.group(2).lower()]
        return (now or dt.datetime.now(dt.UTC)) - dt.timedelta(seconds=seconds)
    try:
        parsed = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise SpecError("--since", f"{value!r} is neither an ISO date/time (2026-12-01, 2026-12-01T08:00) nor a "
                                   "span back from now (30m, 2h, 7d, 2w)") from None
    return parsed if parsed.tzinfo else parsed.astimezone()


def _limit(limit: int | None) -> int | None:
    if limit is not None and limit < 0:
        raise SpecError("--limit", f"expected 0 or more, got {limit}")
    return limit


def loads(dataset: str | None = None, *, since: str | dt.datetime | None = None, limit: int | None = None,
          dsn: str | None = None) -> list[dict[str, Any]]:
    """Past load runs, newest first: dataset, source, mode, connection, started/finished, seconds, outcome
    (``succeeded``, ``failed``, ``nothing to do``, ``running``, ``killed``: its process died without an
    outcome), row counts, partitions done and skipped, and for a failure the error's class and one-line message."""
    start = parse_since(since)
    with meta_db(resolve_dsn(dsn)) as db:
        return meta_reads.runs(db, dataset=canonical_table(dataset) if dataset else None, since=start,
                               limit=_limit(limit))


def _which_load(db: MetaDb, dataset: str, load_id: str | None, superseded: bool) -> str | None:
    """The load whose rows to show: the one asked for (checked), else the newest that left rows."""
    if not meta_reads.dataset_known(db, dataset):
        raise SpecError("dataset", f"unknown dataset {dataset!r} (biconic loads lists the loaded ones)")
    if load_id is None:
        return meta_reads.latest_quarantined_load(db, dataset, superseded=superseded)
    owner = meta_reads.run_dataset(db, load_id)
    if owner is None:
        raise SpecError("--load", f"unknown load id {load_id!r} (biconic loads --dataset {dataset} lists them)")
    if owner != dataset:
        raise SpecError("--load", f"load {load_id} loaded dataset {owner!r}, not {dataset!r}")
    return load_id


def quarantined(dataset: str, *, load_id: str | None = None, superseded: bool = False, limit: int | None = None,
                dsn: str | None = None) -> list[dict[str, Any]]:
    """The rows a load rejected: rule, column, reason, row number, source, load id, raw values (JSON text).

    Without ``load_id``, the newest load of the dataset that still has open (not superseded) rejected rows;
    ``superseded=True`` includes rows a later load of the same partition superseded.
    """
    table = canonical_table(dataset)
    with meta_db(resolve_dsn(dsn)) as db:
        chosen = _which_load(db, table, load_id, superseded)
        if chosen is None:
            return []
        return meta_reads.quarantine_rows(db, table, load_id=chosen, superseded=superseded, limit=_limit(limit))


def export_quarantine(dataset: str, path: str | Path, *, load_id: str | None = None, superseded: bool = False,
                      dsn: str | None = None) -> int:
    """Write every row :func:`quarantined` would show (no limit) to a CSV file with a header, streamed from the
    server batch by batch (bounded memory at any size); returns how many rows were written."""
    import pyarrow.csv as pacsv

    table = canonical_table(dataset)
    written = 0
    with meta_db(resolve_dsn(dsn)) as db:
        chosen = _which_load(db, table, load_id, superseded)
        with meta_reads.quarantine_reader(db.conn, table, load_id=chosen or "", superseded=superseded) as reader, \
                pacsv.CSVWriter(str(path), reader.schema) as out:
            for batch in reader:
                out.write_batch(batch)
                written += batch.num_rows
    return written
