"""Move old data out of PostgreSQL into the archive, and bring it back.

``tier()`` applies the policy. Each PostgreSQL partition whose whole period is older than the archive age
(90 days by default) is checked against the archive, partition by partition and connection by connection:
the row counts in the footers of its manifest-listed files must equal the rows in the partition. When they
do not (a merge rewrote rows, a load ran with archiving off, a file is gone or torn), or when the dataset has
had both merges and loads without archive (then equal counts can hide different rows), the partition is
first written to the archive as a snapshot, which supersedes its per-load files. Then, in one transaction,
the files are marked ``cold``, the partition is detached and dropped. A crash at any point rolls that
transaction back: re-running finishes the job, and nothing is lost or counted twice (an orphaned snapshot
file is never listed, so never read).

``restore()`` loads the cold files of a date range back into their partitions in one transaction per period,
with a ledger row per file (``biconic.loads``), and marks the files ``hot`` again: re-running it is a no-op.

The raw-uploads part of the policy (keep 7 days, ZSTD after 30, to the archive after 90) is
:func:`engine.uploads.tier_uploads`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import re
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from engine.archive import MANIFEST, ArchiveWriter, record_files
from engine.errors import ArchiveError, SpecError
from engine.names import canonical_table, qualified, quote_ident
from engine.postgres.server import resolve_dsn
from engine.sinks._partitions import Period, period_of
from engine.sinks.postgres import CONNECTION_COLUMN, PostgresSink, split_table
from engine.storage import Store, archive_url
from engine.uploads import UploadAction, UploadPolicy, tier_uploads

__all__ = ["RestoreReport", "TierPolicy", "TierReport", "restore", "tier"]

log = logging.getLogger("biconic.tiering")


def _days(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return int(value) if value else default
    except ValueError:
        raise SpecError(name, f"expected a whole number of days, got {value!r}") from None


@dataclass(frozen=True)
class TierPolicy:
    """How old data must be before it moves. PostgreSQL partitions: ``BICONIC_TIER_ARCHIVE_DAYS``; raw
    uploads: ``BICONIC_UPLOADS_KEEP_DAYS`` / ``_COMPRESS_DAYS`` / ``_ARCHIVE_DAYS``."""

    archive_days: int = 90
    uploads: UploadPolicy = field(default_factory=UploadPolicy)

    @classmethod
    def from_env(cls) -> TierPolicy:
        return cls(archive_days=_days("BICONIC_TIER_ARCHIVE_DAYS", 90),
                   uploads=UploadPolicy(keep_days=_days("BICONIC_UPLOADS_KEEP_DAYS", 7),
                                        compress_days=_days("BICONIC_UPLOADS_COMPRESS_DAYS", 30),
                                        archive_days=_days("BICONIC_UPLOADS_ARCHIVE_DAYS", 90)))


@dataclass
class TieredPartition:
    dataset: str
    partition: str
    period: str
    rows: int
    #: "verified": the archive already held every row; "snapshot": the partition was written out first
    how: str


@dataclass
class TierReport:
    cutoff: str
    dry_run: bool
    partitions: list[TieredPartition] = field(default_factory=list)
    uploads: list[UploadAction] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        verb = "would move" if self.dry_run else "moved"
        lines = [f"tiering (partitions before {self.cutoff}): {verb} {len(self.partitions)} partition(s), "
                 f"{sum(p.rows for p in self.partitions):,} rows; {len(self.uploads)} upload action(s)"]
        lines += [f"  {p.dataset}: {p.partition} ({p.period}, {p.rows:,} rows, {p.how})" for p in self.partitions]
        lines += [f"  upload {a.action}: {a.path} -> {a.target}" for a in self.uploads]
        return "\n".join(lines)


@dataclass
class RestoreReport:
    dataset: str
    periods: list[str] = field(default_factory=list)
    files: int = 0
    rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return (f"{self.dataset}: restored {self.rows:,} rows from {self.files} archive file(s) into "
                f"{len(self.periods)} partition(s){': ' + ', '.join(self.periods) if self.periods else ''}")


def _store(archive: str | None) -> Store:
    url = archive_url(archive)
    if url is None:
        raise SpecError("archive", "tiering moves data into the archive, and archiving is off; set an archive URL")
    return Store(url)


def tier(*, dsn: str | None = None, archive: str | None = None, policy: TierPolicy | None = None,
         now: dt.datetime | None = None, dry_run: bool = False, datasets: Sequence[str] | None = None,
         uploads: bool = True) -> TierReport:
    """Apply the tiering policy (see the module docstring); ``dry_run`` only reports what would move."""
    policy = policy or TierPolicy.from_env()
    now = now or dt.datetime.now(dt.UTC)
    # partition bounds are UTC midnights: an aware time elsewhere (or a naive one, taken as UTC) is moved there
    now = now.astimezone(dt.UTC) if now.tzinfo is not None else now
    cutoff = (now - dt.timedelta(days=policy.archive_days)).date()
    store = _store(archive)
    report = TierReport(cutoff=cutoff.isoformat(), dry_run=dry_run)
    with PostgresSink(resolve_dsn(dsn)) as sink:
        sink.ensure_meta()
        sink.run("SET TimeZone = 'UTC'")
        # DETACH waits for running loads of the table, and readers queue behind it: give up early, re-run later
        sink.run("SET lock_timeout = '10s'")
        sink.data.commit()
        names = [r[0] for r in sink.run("SELECT dataset FROM biconic.datasets WHERE time_column IS NOT NULL "
                                        "ORDER BY dataset", conn=sink.ddl)]
        sink.ddl.commit()
        if datasets is not None:
            # one spelling per table, as loads record it: "public.orders" is "orders"
            wanted = {canonical_table(d) for d in datasets}
            unknown = sorted(wanted - set(names))
            if unknown:
                raise SpecError("datasets", f"no time-partitioned dataset named {', '.join(unknown)}; known: "
                                            f"{', '.join(names) or '(none yet)'}")
            names = [n for n in names if n in wanted]
        for dataset in names:
            for child, period in _old_children(sink, dataset, cutoff):
                done = _tier_partition(sink, store, dataset, child, period, dry_run=dry_run)
                if done is not None:
                    report.partitions.append(done)
    if uploads:
        report.uploads = tier_uploads(store, policy=policy.uploads, now=now, dry_run=dry_run)
    return report


_BOUND = re.compile(r"FROM \('(\d{4,}-\d\d-\d\d)[^)]*\) TO \((?:'(\d{4,}-\d\d-\d\d)[^)]*'|MAXVALUE)\)")


def _old_children(sink: PostgresSink, dataset: str, cutoff: dt.date) -> list[tuple[str, Period]]:
    """The dataset's partitions whose period ends on or before ``cutoff``, oldest first."""
    info = sink.describe(dataset, conn=sink.data)
    if info is None or not info.time_column:
        return []
    found = []
    for child, bound in sink.run("SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
                                 "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass($1)",
                                 [qualified(dataset)]):
        m = _BOUND.search(bound or "")
        if not m or m.group(2) is None:
            continue  # MAXVALUE, or a bound this engine did not write
        start, end = dt.date.fromisoformat(m.group(1)), dt.date.fromisoformat(m.group(2))
        if end <= cutoff:
            found.append((child, Period(start, end, info.granularity)))
    sink.data.commit()
    return sorted(found, key=lambda cp: cp[1].start)


def _tier_partition(sink: PostgresSink, store: Store, dataset: str, child: str, period: Period, *,
                    dry_run: bool) -> TieredPartition | None:
    schema, _ = split_table(dataset)
    qchild = f"{quote_ident(schema)}.{quote_ident(child)}"
    try:
        # a second tiering run waits here for the first, then finds the partition gone and skips it (without
        # this, its LOCK TABLE would wait on the first run's lock and then fail: the table was dropped)
        sink.run("SELECT pg_advisory_xact_lock(hashtext($1))", [f"tier:{schema}.{child}"])
        if not sink.run("SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass($1) AND inhparent = to_regclass($2)",
                        [qchild, qualified(dataset)]):
            sink.rollback()
            return None
        # writers wait (readers do not) from here to the commit: no row can arrive between check and drop
        sink.run(f"LOCK TABLE {qchild} IN EXCLUSIVE MODE")
        in_pg = {int(c): int(n) for c, n in sink.run(
            f"SELECT {quote_ident(CONNECTION_COLUMN)}, count(*) FROM {qchild} GROUP BY 1")}
        files = sink.run(f"SELECT uri, connection_id, rows FROM {MANIFEST} WHERE dataset = $1 AND period = $2 "
                         "AND state = 'hot'", [dataset, period.start])
        archived = _footer_counts(store, files)
        rows = sum(in_pg.values())
        same = archived == {c: n for c, n in in_pg.items() if n}
        how = "verified" if same and _counts_prove_contents(sink, dataset) else "snapshot"
        if dry_run:
            sink.rollback()
            return TieredPartition(dataset, child, period.start.isoformat(), rows, how)
        if how == "snapshot":
            _snapshot(sink, store, dataset, qchild, period, [f[0] for f in files])
        sink.run(f"UPDATE {MANIFEST} SET state = 'cold', changed_at = now() WHERE dataset = $1 AND period = $2 "
                 "AND state = 'hot'", [dataset, period.start])
        sink.run(f"ALTER TABLE {qualified(dataset)} DETACH PARTITION {qchild}")
        sink.run(f"DROP TABLE {qchild}")
        sink.commit()
    except BaseException:
        sink.rollback()
        raise
    log.info("tiered %s %s (%d rows, %s)", dataset, child, rows, how)
    return TieredPartition(dataset, child, period.start.isoformat(), rows, how)


def _counts_prove_contents(sink: PostgresSink, dataset: str) -> bool:
    """Whether equal row counts (per connection) prove the archive files hold exactly the partition's rows.

    A load archives exactly the rows it writes, except a merge: its staged rows are all archived, yet it keeps
    one per key and deletes a key's row from its old period when its time moved; and a load with archiving
    off writes rows the archive never sees. With only the first kind, the archive holds PostgreSQL's rows and
    maybe more; with only the second, PostgreSQL holds the archive's and maybe more: either way equal counts
    mean equal contents. With both, stale merged versions can balance unarchived rows exactly, and trusting
    the count would tier out the stale rows and drop the unarchived ones: such a dataset is snapshotted.
    (A replace supersedes the files of the rows it deletes and clears their ledger rows; a restore writes
    exactly a file's rows; neither breaks the argument.)
    """
    merged, unarchived = sink.run(
        "SELECT EXISTS (SELECT 1 FROM biconic.loads WHERE dataset = $1 AND mode = 'merge' "
        "AND state = 'committed' AND rows_loaded > 0), "
        "EXISTS (SELECT 1 FROM biconic.loads l WHERE l.dataset = $1 AND l.mode <> 'restore' "
        f"AND l.state = 'committed' AND l.rows_loaded > 0 AND NOT EXISTS (SELECT 1 FROM {MANIFEST} m "
        "WHERE m.dataset = l.dataset AND m.load_key = l.load_key))", [dataset])[0]
    return not (merged and unarchived)


def _footer_counts(store: Store, files: Sequence[tuple[Any, ...]]) -> dict[int, int]:
    """Rows per connection as the archive files' footers state them (a missing file counts as none)."""
    counts: dict[int, int] = {}
    for uri, cid, _rows in files:
        path = uri[len("s3://"):] if uri.startswith("s3://") else uri
        try:
            with store.fs.open(path, "rb") as f:
                n = pq.ParquetFile(f).metadata.num_rows
        except (OSError, ValueError) as exc:
            log.warning("archive file %s is unreadable (%s): the partition will be snapshotted", uri, exc)
            continue
        counts[int(cid)] = counts.get(int(cid), 0) + n
    return {c: n for c, n in counts.items() if n}


def _snapshot(sink: PostgresSink, store: Store, dataset: str, qchild: str, period: Period,
              superseded: Sequence[str]) -> None:
    """Write the partition as it stands to the archive (streamed), list it, and supersede older files."""
    key = f"snapshot-{uuid.uuid4().hex[:16]}"
    info = sink.describe(dataset, conn=sink.data)
    assert info is not None and info.time_column
    writer = ArchiveWriter(store, dataset, key, time_column=info.time_column)
    try:
        with sink.data.cursor() as cur:
            cur.execute(f"SELECT * FROM {qchild} ORDER BY {quote_ident(CONNECTION_COLUMN)}")
            for batch in cur.fetch_record_batch():
                writer.add(period.start, pl.from_arrow(batch))  # type: ignore[arg-type]
        files = writer.finish()
    finally:
        writer.discard()
    if superseded:
        sink.run(f"UPDATE {MANIFEST} SET state = 'superseded', changed_at = now() WHERE uri = ANY($1)",
                 [list(superseded)])
    record_files(sink, files, dataset=dataset, load_key=key, load_id=key, state="hot")


def restore(dataset: str, *, start: dt.date, end: dt.date, dsn: str | None = None,
            archive: str | None = None) -> RestoreReport:
    """Load the archived rows of every tiered period overlapping ``[start, end]`` back into PostgreSQL.

    Whole periods come back (a period is either in PostgreSQL or in the archive, never split).
    """
    if end < start:
        raise SpecError("restore", f"--to {end} is before --from {start}")
    store = _store(archive)
    report = RestoreReport(dataset=dataset)
    with PostgresSink(resolve_dsn(dsn)) as sink:
        sink.ensure_meta()
        dataset = canonical_table(dataset)
        report.dataset = dataset
        info = sink.describe(dataset, conn=sink.data)
        sink.data.commit()
        if info is None or not info.time_column:
            known = [r[0] for r in sink.run("SELECT dataset FROM biconic.datasets WHERE time_column IS NOT NULL "
                                            "ORDER BY dataset", conn=sink.ddl)]
            sink.ddl.commit()
            raise SpecError("dataset", f"{dataset} is not a time-partitioned dataset of this engine; known: "
                                       f"{', '.join(known) or '(none yet)'}")
        periods = [r[0] for r in sink.run(f"SELECT DISTINCT period FROM {MANIFEST} WHERE dataset = $1 "
                                          "AND state = 'cold' AND period <= $2 ORDER BY 1", [dataset, end],
                                          conn=sink.ddl)]
        sink.ddl.commit()
        for start_day in periods:
            period = period_of(start_day, info.granularity)
            if period.end is not None and period.end <= start:
                continue
            files, rows = _restore_period(sink, store, dataset, period)
            if files:
                report.periods.append(period.start.isoformat())
                report.files += files
                report.rows += rows
    return report


def _restore_period(sink: PostgresSink, store: Store, dataset: str, period: Period) -> tuple[int, int]:
    try:
        info = sink.describe(dataset, conn=sink.data)
        assert info is not None
        files = sink.run(f"SELECT uri, rows, changed_at FROM {MANIFEST} WHERE dataset = $1 AND period = $2 "
                         "AND state = 'cold' ORDER BY uri FOR UPDATE", [dataset, period.start])
        if not files:  # restored by a concurrent run since the periods were listed
            sink.rollback()
            return 0, 0
        fresh: dict[str, Period] = {}
        child = sink.child_for(info, period, fresh)
        rows = 0
        for uri, expected, tiered_at in files:
            key = hashlib.sha256(f"restore\x1f{uri}\x1f{tiered_at}".encode()).hexdigest()
            if not sink.claim(key, load_id=key[:32], dataset=dataset, connection_id=None, source=uri,
                              partition_key=period.start.isoformat(), spec_hash="restore", mode="restore"):
                continue
            path = uri[len("s3://"):] if uri.startswith("s3://") else uri
            copied = 0
            try:
                with store.fs.open(path, "rb") as f:
                    parquet = pq.ParquetFile(f)
                    keep = [c for c in parquet.schema_arrow.names if c in info.columns]
                    for batch in parquet.iter_batches(columns=keep, batch_size=131_072):
                        sink.copy(child, _for_copy(pa.Table.from_batches([batch]), info.columns))
                        copied += batch.num_rows
            except (OSError, ValueError) as exc:  # missing, unreadable or torn (pyarrow's errors are ValueErrors)
                raise ArchiveError(uri, f"cannot read it back ({type(exc).__name__}: {str(exc)[:200]}); is "
                                        f"{store.url} the archive this dataset was tiered to?") from None
            if copied != expected:
                raise SpecError("restore", f"{uri} holds {copied} rows, the manifest lists {expected}; "
                                           "nothing restored")
            sink.run("UPDATE biconic.loads SET rows_in = $2, rows_loaded = $2, finished_at = clock_timestamp(), "
                     "state = 'committed' WHERE load_key = $1", [key, copied])
            rows += copied
        if fresh:
            sink.attach_fresh(info, fresh)
        sink.run(f"UPDATE {MANIFEST} SET state = 'hot', changed_at = now() WHERE uri = ANY($1)",
                 [[f[0] for f in files]])
        sink.bump_version(dataset)
        sink.commit()
    except BaseException:
        sink.rollback()
        raise
    log.info("restored %s %s: %d rows from %d file(s)", dataset, period.start, rows, len(files))
    return len(files), rows


def _for_copy(table: pa.Table, columns: dict[str, str]) -> pa.Table:
    """Archived JSON text headed for a jsonb column: binary COPY wants jsonb's version byte before the text."""
    jsonb = [c for c in table.column_names if columns.get(c) == "jsonb"]
    if not jsonb:
        return table
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame.with_columns((pl.lit("\x01") + pl.col(c).cast(pl.String)).cast(pl.Binary).alias(c)
                              for c in jsonb).to_arrow()
