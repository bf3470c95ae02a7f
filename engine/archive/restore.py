"""Bringing tiered periods back from the archive into PostgreSQL.

``restore()`` loads the cold files of a date range back into their partitions in one transaction per period,
with a ledger row per file (``biconic.loads``), and marks the files ``hot`` again: re-running it is a no-op.
Whole periods come back: a period is either in PostgreSQL or in the archive, never split.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from engine.archive.store import Store
from engine.archive.tiering import archive_store
from engine.errors import ArchiveError, SpecError
from engine.names import canonical_table
from engine.postgres import copy, ddl, meta
from engine.postgres.connection import Session
from engine.postgres.periods import Period, period_of
from engine.postgres.server import resolve_dsn

__all__ = ["RestoreReport", "restore"]

log = logging.getLogger("biconic.tiering")

#: rows per batch read back from an archive file
_BATCH_ROWS = 131_072


@dataclass
class RestoreReport:
    """What a restore brought back."""

    dataset: str
    periods: list[str] = field(default_factory=list)
    files: int = 0
    rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return (f"{self.dataset}: restored {self.rows:,} rows from {self.files} archive file(s) into "
                f"{len(self.periods)} partition(s){': ' + ', '.join(self.periods) if self.periods else ''}")


def restore(dataset: str, *, start: dt.date, end: dt.date, dsn: str | None = None,
            archive: str | None = None) -> RestoreReport:
    """Load the archived rows of every tiered period overlapping ``[start, end]`` back into PostgreSQL.

    >>> restore("orders", start=dt.date(2026, 1, 1), end=dt.date(2026, 3, 31))  # doctest: +SKIP
    """
    if end < start:
        raise SpecError("restore", f"--to {end} is before --from {start}")
    store = archive_store(archive)
    dataset = canonical_table(dataset)
    report = RestoreReport(dataset=dataset)
    with Session(resolve_dsn(dsn)) as session:
        meta.ensure_meta(session, conn=session.ddl)
        session.commit(session.ddl)
        info = ddl.describe(session, dataset, conn=session.data)
        session.commit()
        if info is None or not info.time_column:
            known = meta.datasets(session, conn=session.ddl)
            session.commit(session.ddl)
            raise SpecError("dataset", f"{dataset} is not a time-partitioned dataset of this engine; known: "
                                       f"{', '.join(known) or '(none yet)'}")
        periods = meta.cold_periods(session, dataset, until=end, conn=session.ddl)
        session.commit(session.ddl)
        for start_day in periods:
            period = period_of(start_day, info.granularity)
            if period.end is not None and period.end <= start:
                continue
            files, rows = _restore_period(session, store, dataset, period)
            if files:
                report.periods.append(period.start.isoformat())
                report.files += files
                report.rows += rows
    return report


def _restore_period(session: Session, store: Store, dataset: str, period: Period) -> tuple[int, int]:
    """One period back, in one transaction: each file under its own ledger key, then the files flip hot."""
    try:
        info = ddl.describe(session, dataset, conn=session.data)
        assert info is not None
        files = meta.cold_for_restore(session, dataset, period.start)
        if not files:  # restored by a concurrent run since the periods were listed
            session.rollback()
            return 0, 0
        fresh: dict[str, Period] = {}
        child = ddl.child_for(session, info, period, fresh)
        rows = 0
        for uri, expected, tiered_at in files:
            key = hashlib.sha256(f"restore\x1f{uri}\x1f{tiered_at}".encode()).hexdigest()
            if not meta.claim(session, key, load_id=key[:32], dataset=dataset, connection_id=None, source=uri,
                              partition_key=period.start.isoformat(), spec_hash="restore", mode="restore"):
                continue
            copied = _copy_file(session, store, uri, child, info.columns)
            if copied != expected:
                raise SpecError("restore", f"{uri} holds {copied} rows, the manifest lists {expected}; "
                                           "nothing restored")
            meta.complete(session, key, rows_in=copied, rows_loaded=copied)
            rows += copied
        if fresh:
            ddl.attach_fresh(session, info, fresh)
        meta.mark_hot(session, [f[0] for f in files])
        meta.bump_version(session, dataset)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    log.info("restored %s %s: %d rows from %d file(s)", dataset, period.start, rows, len(files))
    return len(files), rows


def _copy_file(session: Session, store: Store, uri: str, child: str, columns: dict[str, str]) -> int:
    """COPY one archive file's rows (the columns the table still has) into ``child``; how many."""
    copied = 0
    try:
        with store.fs.open(store.path_of(uri), "rb") as f:
            parquet = pq.ParquetFile(f)
            keep = [c for c in parquet.schema_arrow.names if c in columns]
            for batch in parquet.iter_batches(columns=keep, batch_size=_BATCH_ROWS):
                copy.copy(session, child, _for_copy(pa.Table.from_batches([batch]), columns))
                copied += batch.num_rows
    except (OSError, ValueError) as exc:  # missing, unreadable or torn (pyarrow's errors are ValueErrors)
        raise ArchiveError(uri, f"cannot read it back ({type(exc).__name__}: {str(exc)[:200]}); is "
                                f"{store.url} the archive this dataset was tiered to?") from exc
    return copied


def _for_copy(table: pa.Table, columns: dict[str, str]) -> pa.Table:
    """Archived JSON text headed for a jsonb column: binary COPY wants jsonb's version byte before the text; UUID
    text headed for a uuid column goes as its 16 bytes."""
    jsonb = [c for c in table.column_names if columns.get(c) == "jsonb"]
    uuids = [c for c in table.column_names if columns.get(c) == "uuid"]
    if not jsonb and not uuids:
        return table
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    for c in uuids:  # archived as (dictionary-encoded) text
        frame = copy.uuid_bytes(frame.with_columns(pl.col(c).cast(pl.String)), c)
    return frame.with_columns((pl.lit("\x01") + pl.col(c).cast(pl.String)).cast(pl.Binary).alias(c)
                              for c in jsonb).to_arrow()
