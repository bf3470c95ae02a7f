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

Bringing periods back is :func:`engine.archive.restore.restore`.

It also sweeps the tables killed loads left staged in ``biconic_stage`` (:func:`engine.postgres.stage_area.sweep`;
every load sweeps too, but a dataset nobody loads again is swept only here).

The raw-uploads part of the policy (keep 7 days, ZSTD after 30, to the archive after 90) is
:func:`engine.archive.uploads.tier_uploads`.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from engine.archive.store import Store
from engine.archive.uploads import UploadAction, UploadPolicy, tier_uploads
from engine.archive.writer import ArchiveWriter
from engine.errors import SpecError
from engine.names import canonical_table, qualified, quote_ident
from engine.postgres import copy, ddl, meta, stage_area
from engine.postgres.connection import Session
from engine.postgres.periods import Period
from engine.postgres.server import resolve_dsn
from engine.settings import settings

__all__ = ["TierPolicy", "TierReport", "archive_store", "tier"]

log = logging.getLogger("biconic.tiering")


@dataclass(frozen=True)
class TierPolicy:
    """How old data must be before it moves. PostgreSQL partitions: ``BICONIC_TIER_ARCHIVE_DAYS``; raw
    uploads: ``BICONIC_UPLOADS_KEEP_DAYS`` / ``_COMPRESS_DAYS`` / ``_ARCHIVE_DAYS``."""

    archive_days: int = 90
    uploads: UploadPolicy = field(default_factory=UploadPolicy)

    @classmethod
    def from_env(cls) -> TierPolicy:
        s = settings()
        return cls(archive_days=s.tier_archive_days,
                   uploads=UploadPolicy(keep_days=s.uploads_keep_days, compress_days=s.uploads_compress_days,
                                        archive_days=s.uploads_archive_days))


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
    #: staged tables of killed loads dropped from ``biconic_stage``
    swept: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        verb = "would move" if self.dry_run else "moved"
        lines = [f"tiering (partitions before {self.cutoff}): {verb} {len(self.partitions)} partition(s), "
                 f"{sum(p.rows for p in self.partitions):,} rows; {len(self.uploads)} upload action(s)"]
        lines += [f"  {p.dataset}: {p.partition} ({p.period}, {p.rows:,} rows, {p.how})" for p in self.partitions]
        lines += [f"  upload {a.action}: {a.path} -> {a.target}" for a in self.uploads]
        if self.swept:
            lines.append(f"  swept {len(self.swept)} staged table(s) killed loads left in {stage_area.STAGE_SCHEMA}")
        return "\n".join(lines)


def archive_store(archive: str | None) -> Store:
    """The archive tiering moves data into (and restore reads back); archiving off is an error here."""
    url = settings().archive(archive)
    if url is None:
        raise SpecError("archive", "tiering moves data into the archive, and archiving is off; set an archive URL")
    return Store(url)


def _open(dsn: str | None) -> Session:
    """A session set for tiering: UTC (partition bounds are UTC midnights) and short lock waits (DETACH
    waits for running loads of the table, and readers queue behind it: give up early, re-run later)."""
    session = Session(resolve_dsn(dsn))
    try:
        meta.ensure_meta(session, conn=session.ddl)
        session.commit(session.ddl)
        session.run("SET TimeZone = 'UTC'")
        session.run("SET lock_timeout = '10s'")
        session.commit()
    except BaseException:
        session.close()
        raise
    return session


def _chosen(session: Session, datasets: Sequence[str] | None) -> list[str]:
    """The time-partitioned datasets to tier: all, or those named (an unknown name is an error)."""
    names = meta.datasets(session, conn=session.ddl)
    session.commit(session.ddl)
    if datasets is None:
        return names
    # one spelling per table, as loads record it: "public.orders" is "orders"
    wanted = {canonical_table(d) for d in datasets}
    unknown = sorted(wanted - set(names))
    if unknown:
        raise SpecError("datasets", f"no time-partitioned dataset named {', '.join(unknown)}; known: "
                                    f"{', '.join(names) or '(none yet)'}")
    return [n for n in names if n in wanted]


def tier(*, dsn: str | None = None, archive: str | None = None, policy: TierPolicy | None = None,
         now: dt.datetime | None = None, dry_run: bool = False, datasets: Sequence[str] | None = None,
         uploads: bool = True) -> TierReport:
    """Apply the tiering policy (see the module docstring); ``dry_run`` only reports what would move."""
    policy = policy or TierPolicy.from_env()
    now = now or dt.datetime.now(dt.UTC)
    # partition bounds are UTC midnights: an aware time elsewhere (or a naive one, taken as UTC) is moved there
    now = now.astimezone(dt.UTC) if now.tzinfo is not None else now
    cutoff = (now - dt.timedelta(days=policy.archive_days)).date()
    store = archive_store(archive)
    report = TierReport(cutoff=cutoff.isoformat(), dry_run=dry_run)
    with _open(dsn) as session:
        if not dry_run:
            report.swept = stage_area.sweep(session, conn=session.ddl)
        for dataset in _chosen(session, datasets):
            for child, period in _old_children(session, dataset, cutoff):
                done = _tier_partition(session, store, dataset, child, period, dry_run=dry_run)
                if done is not None:
                    report.partitions.append(done)
    if uploads:
        report.uploads = tier_uploads(store, policy=policy.uploads, now=now, dry_run=dry_run)
    return report


_BOUND = re.compile(r"FROM \('(\d{4,}-\d\d-\d\d)[^)]*\) TO \((?:'(\d{4,}-\d\d-\d\d)[^)]*'|MAXVALUE)\)")


def _old_children(session: Session, dataset: str, cutoff: dt.date) -> list[tuple[str, Period]]:
    """The dataset's partitions whose period ends on or before ``cutoff``, oldest first."""
    info = ddl.describe(session, dataset, conn=session.data)
    if info is None or not info.time_column:
        return []
    found = []
    for child, bound in session.run("SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
                                    "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass($1)",
                                    [qualified(dataset)]):
        m = _BOUND.search(bound or "")
        if not m or m.group(2) is None:
            continue  # MAXVALUE, or a bound this engine did not write
        start, end = dt.date.fromisoformat(m.group(1)), dt.date.fromisoformat(m.group(2))
        if end <= cutoff:
            found.append((child, Period(start, end, info.granularity)))
    session.commit()
    return sorted(found, key=lambda cp: cp[1].start)


def _tier_partition(session: Session, store: Store, dataset: str, child: str, period: Period, *,
                    dry_run: bool) -> TieredPartition | None:
    schema, _ = ddl.split_table(dataset)
    qchild = f"{quote_ident(schema)}.{quote_ident(child)}"
    try:
        # a second tiering run waits here for the first, then finds the partition gone and skips it (without
        # this, its LOCK TABLE would wait on the first run's lock and then fail: the table was dropped)
        session.run("SELECT pg_advisory_xact_lock(hashtext($1))", [f"tier:{schema}.{child}"])
        if not session.run("SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass($1) "
                           "AND inhparent = to_regclass($2)", [qchild, qualified(dataset)]):
            session.rollback()
            return None
        # writers wait (readers do not) from here to the commit: no row can arrive between check and drop
        session.run(f"LOCK TABLE {qchild} IN EXCLUSIVE MODE")
        in_pg = {str(c): int(n) for c, n in session.run(
            f"SELECT {quote_ident(ddl.CONNECTION_COLUMN)}::text, count(*) FROM {qchild} GROUP BY 1")}
        files = meta.hot_files(session, dataset, period.start)
        rows = sum(in_pg.values())
        same = _footer_counts(store, files) == {c: n for c, n in in_pg.items() if n}
        how = "verified" if same and meta.counts_prove_contents(session, dataset) else "snapshot"
        if dry_run:
            session.rollback()
            return TieredPartition(dataset, child, period.start.isoformat(), rows, how)
        if how == "snapshot":
            _snapshot(session, store, dataset, qchild, period, [f[0] for f in files])
        meta.mark_cold(session, dataset, period.start)
        session.run(f"ALTER TABLE {qualified(dataset)} DETACH PARTITION {qchild}")
        session.run(f"DROP TABLE {qchild}")
        session.commit()
    except BaseException:
        session.rollback()
        raise
    log.info("tiered %s %s (%d rows, %s)", dataset, child, rows, how)
    return TieredPartition(dataset, child, period.start.isoformat(), rows, how)


def _footer_counts(store: Store, files: Sequence[tuple[str, str, int]]) -> dict[str, int]:
    """Rows per connection (its id as text) as the archive files' footers state them (a missing file counts as
    none)."""
    counts: dict[str, int] = {}
    for uri, cid, _rows in files:
        try:
            with store.fs.open(store.path_of(uri), "rb") as f:
                n = pq.ParquetFile(f).metadata.num_rows
        except (OSError, ValueError) as exc:
            log.warning("archive file %s is unreadable (%s): the partition will be snapshotted", uri, exc)
            continue
        counts[cid] = counts.get(cid, 0) + n
    return {c: n for c, n in counts.items() if n}


def _snapshot(session: Session, store: Store, dataset: str, qchild: str, period: Period,
              superseded: Sequence[str]) -> None:
    """Write the partition as it stands to the archive (streamed), list it, and supersede older files."""
    key = f"snapshot-{uuid.uuid4().hex[:16]}"
    info = ddl.describe(session, dataset, conn=session.data)
    assert info is not None and info.time_column
    writer = ArchiveWriter(store, dataset, key, time_column=info.time_column)
    try:
        with session.data.cursor() as cur:
            cur.execute(f"SELECT * FROM {qchild} ORDER BY {quote_ident(ddl.CONNECTION_COLUMN)}")
            for batch in cur.fetch_record_batch():
                rows = pl.from_arrow(batch)
                assert isinstance(rows, pl.DataFrame)
                writer.add(period.start, copy.uuid_text(rows, ddl.CONNECTION_COLUMN))
        files = writer.finish()
    finally:
        writer.discard()
    meta.supersede(session, superseded)
    meta.record_files(session, files, dataset=dataset, load_key=key, load_id=key, state="hot")
