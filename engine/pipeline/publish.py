"""Committing partitions, one way per mode. Every partition goes through the same steps, in this order:
claim its ledger row, stream its rows, list its archive files, advance the watermark, record its counts.

- append and merge (:func:`load_partition`): one transaction per source partition; a crash or an error rolls
  back that partition only, and a re-run skips the partitions already committed.
- replace (:func:`replace_all`): one transaction for the whole load: the old rows (of the table, or of one
  connection) are deleted and the new ones COPYed, a savepoint per partition. Under MVCC a reader sees the old
  rows until the commit and the new ones after it, never an empty or half table (a rename swap cannot promise
  that: a reader whose snapshot predates the swap would find the new table empty).

A CSV holding invalid UTF-8 rolls its partition back and is read again in lossy mode, where the rows that held
the bad bytes are quarantined.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from typing import Any

from engine.archive.writer import ArchiveWriter
from engine.names import qualified, quote_ident
from engine.pipeline.context import Job
from engine.pipeline.counts import Counts
from engine.pipeline.fit import prepare
from engine.pipeline.planner import InvalidUtf8
from engine.pipeline.stream import stream
from engine.pipeline.targets import Children, MergeStage, RowTarget, StagedChildren
from engine.postgres import ddl, meta
from engine.postgres.ddl import CONNECTION_COLUMN
from engine.postgres.staging import FreshChildren
from engine.settings import settings
from engine.sources.base import Partition

__all__ = ["load_partition", "replace_all"]


def _lossy(partition: Partition) -> Partition:
    return dataclasses.replace(partition, options={**partition.options, "utf8_lossy": True})


def _claim(job: Job, partition: Partition, key: str, mode: str) -> bool:
    return meta.claim(job.session, key, load_id=job.report.load_id, dataset=job.target.table,
                      connection_id=job.target.connection_id, source=partition.label, partition_key=partition.key,
                      spec_hash=job.spec_hash, mode=mode)


def _one(job: Job, partition: Partition, key: str, target_for: Callable[[Any], RowTarget], *, mode: str,
         conn: Any = None, defer_indexes: bool = False) -> Counts | None:
    """The steps of one partition inside the open transaction; None when its key was committed meanwhile
    (another loader of the same key blocked us, then committed first)."""
    job.tell_progress(partition, job.report.rows_in)
    chunks = iter(job.source.chunks(partition))
    first = next(chunks)
    prepared = prepare(job, partition, first, conn=conn, defer_indexes=defer_indexes)
    archive = ArchiveWriter(job.store, job.target.table, key, time_column=prepared.time_column) \
        if job.store is not None else None
    try:
        if not _claim(job, partition, key, mode) and mode != "replace":
            return None
        counts = stream(job, partition, itertools.chain([first], chunks), prepared, target_for(prepared),
                        archive)
        _publish_archive(job, archive, key)
        _advance_watermark(job)
        meta.complete(job.session, key, rows_in=counts.rows_in, rows_loaded=counts.loaded,
                      rows_quarantined=counts.quarantined, rows_filtered=counts.filtered)
        return counts
    finally:
        if archive is not None:
            archive.discard()


def _publish_archive(job: Job, archive: ArchiveWriter | None, key: str) -> None:
    """Upload and verify the partition's archive files and list them, inside the data transaction: the rows
    and their archive copy become visible together (an upload that keeps failing rolls back)."""
    if archive is None:
        return
    files = archive.finish()
    meta.record_files(job.session, files, dataset=job.target.table, load_key=key, load_id=job.report.load_id)
    job.report.archive_files += len(files)
    job.report.archive_bytes += sum(f.bytes for f in files)


def _advance_watermark(job: Job) -> None:
    """Store the incremental source's high mark in the data transaction, with the rows it covers."""
    if job.watermark is None:
        return
    high = job.source.high_watermark()  # type: ignore[attr-defined]
    if high is not None:
        key, cursor = job.watermark
        meta.set_watermark(job.session, job.target.table, job.target.connection_id, key, cursor, high)


# --- append and merge -----------------------------------------------------------------------------------------
def _staging(job: Job) -> FreshChildren | None:
    """The helper connections for new children, opened on first use and kept for the job's partitions."""
    streams = settings().copy_streams
    if job.staging is None and streams >= 2:
        job.staging = FreshChildren(job.session, streams)
    return job.staging


def _row_target(job: Job) -> Callable[[Any], RowTarget]:
    if job.target.mode == "merge":
        return lambda prepared: MergeStage(job, prepared, archive=job.store is not None)
    staging = _staging(job)
    if staging is None:
        return lambda prepared: Children(job, prepared)
    return lambda prepared: StagedChildren(job, prepared, staging)


def load_partition(job: Job, partition: Partition, key: str) -> None:
    """append / merge: one transaction holding the ledger row, the rows and their quarantine."""
    try:
        counts = _load_committed(job, partition, key)
    except InvalidUtf8:
        job.session.rollback()
        job.fresh.clear()
        counts = _load_committed(job, _lossy(partition), key)
    if counts is None:
        job.report.skipped_partitions += 1
    else:
        job.account(counts)


def _load_committed(job: Job, partition: Partition, key: str) -> Counts | None:
    try:
        counts = _one(job, partition, key, _row_target(job), mode=job.target.mode)
        if counts is None:
            job.session.rollback()
            return None
        meta.bump_version(job.session, job.target.table)
        job.session.commit()
        if job.staging is not None:
            job.staging.settled()
    except BaseException:
        job.session.rollback()
        job.fresh.clear()
        if job.staging is not None:
            job.staging.abort()
        raise
    return counts


# --- replace --------------------------------------------------------------------------------------------------
def replace_all(job: Job, partitions: list[Partition], keys: list[str]) -> None:
    """Replace the rows in one transaction: DELETE them, COPY the new ones, commit. With a connection id only
    that connection's rows (and ledger entries) are replaced; tables are shared by tenants. The table keeps its
    name, indexes and partitions; schema changes follow the contract as in append, inside the same
    transaction."""
    session, target = job.session, job.target
    existing = meta.load_keys(session, target.table, target.connection_id, conn=session.ddl)
    session.commit(session.ddl)
    # a file's key changes with its bytes; a database table's does not, so its replace always re-reads
    if existing and existing == set(keys) and all(p.path is not None for p in partitions):
        job.report.skipped_partitions = len(partitions)
        return
    existed = ddl.describe(session, target.table, conn=session.data) is not None
    counted: list[Counts] = []
    try:
        meta.forget_loads(session, target.table, target.connection_id)
        if existed and target.connection_id is not None:
            session.run(f"DELETE FROM {qualified(target.table)} WHERE {quote_ident(CONNECTION_COLUMN)} = $1",
                        [target.connection_id])
        elif existed:
            session.run(f"DELETE FROM {qualified(target.table)}")
        for partition, key in zip(partitions, keys, strict=True):
            counted.append(_replace_one(job, partition, key, fresh_table=not existed))
        info = ddl.describe(session, target.table, conn=session.data)
        if not existed and info is not None and info.time_column:
            ddl.create_indexes(session, target.table, info.time_column, conn=session.data)  # after the rows: faster
        meta.bump_version(session, target.table)
        session.commit()
    except BaseException:
        session.rollback()
        job.fresh.clear()
        raise
    for counts in counted:
        job.account(counts)


def _replace_one(job: Job, partition: Partition, key: str, *, fresh_table: bool) -> Counts:
    """One partition of a replace, under a savepoint (rolled back to, and read again lossily, on bad UTF-8)."""
    def load(part: Partition) -> Counts:
        counts = _one(job, part, key, lambda prepared: Children(job, prepared), mode="replace",
                      conn=job.session.data, defer_indexes=fresh_table)
        assert counts is not None
        return counts

    job.session.run("SAVEPOINT biconic_partition")
    fresh_before = dict(job.fresh)
    try:
        return load(partition)
    except InvalidUtf8:
        job.session.run("ROLLBACK TO SAVEPOINT biconic_partition")
        job.fresh = fresh_before
        return load(_lossy(partition))
