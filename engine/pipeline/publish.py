"""Committing partitions, one way per mode. Every partition goes through the same steps, in this order:
claim its ledger row, stream its rows, list its archive files, advance the watermark, supersede the rejected
rows earlier loads of the same partition left, record its counts.

- append and merge (:func:`load_partition`): one transaction per source partition; a crash or an error rolls
  back that partition only, and a re-run skips the partitions already committed.
- replace (:func:`replace_all`): one transaction for the whole load: the old rows (of the table, or of one
  connection) are deleted and the new ones COPYed, a savepoint per partition. Under MVCC a reader sees the old
  rows until the commit and the new ones after it, never an empty or half table (a rename swap cannot promise
  that: a reader whose snapshot predates the swap would find the new table empty).

A CSV holding invalid UTF-8 rolls its partition back and is read again in lossy mode, where the rows that held
the bad bytes are quarantined; a file whose late values do not fit the types inferred from its first rows is
read again with those columns widened (:mod:`engine.pipeline.drift`).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from typing import Any

from engine.archive.writer import ArchiveWriter
from engine.errors import EmptySourceError, SpecError
from engine.ids import ConnectionId, equals_sql, kind_mismatch
from engine.index_set import index_set
from engine.names import qualified, quote_ident
from engine.pipeline.context import LoadState
from engine.pipeline.counts import Counts
from engine.pipeline.drift import LateDrift, widened
from engine.pipeline.fit import Prepared, prepare
from engine.pipeline.leftovers import drop_if_unused, drop_unlisted
from engine.pipeline.planner import InvalidUtf8
from engine.pipeline.rejects import judge
from engine.pipeline.stream import stream
from engine.pipeline.targets import Children, MergeStage, RowTarget, StagedChildren
from engine.postgres import ddl, dead_rows, meta
from engine.postgres.ddl import CONNECTION_COLUMN
from engine.postgres.indexes import create_indexes
from engine.postgres.staging import FreshChildren
from engine.settings import settings
from engine.sources.base import Partition
from engine.sources.files.content import unchanged

__all__ = ["load_partition", "replace_all"]


def _lossy(partition: Partition) -> Partition:
    return dataclasses.replace(partition, options={**partition.options, "utf8_lossy": True})


def _claim(state: LoadState, partition: Partition, key: str, mode: str) -> bool:
    return meta.claim(state.session, key, load_id=state.report.load_id, dataset=state.target.table,
                      connection_id=state.target.connection_id, source=partition.label, partition_key=partition.key,
                      spec_hash=state.spec_hash, mode=mode)


def _one(state: LoadState, partition: Partition, key: str, target_for: Callable[[Prepared], RowTarget], *, mode: str,
         conn: Any = None, defer_indexes: bool = False) -> Counts | None:
    """The steps of one partition inside the open transaction; None when its key was committed meanwhile
    (another loader of the same key blocked us, then committed first)."""
    state.tell_progress(partition, state.report.rows_in)
    chunks = iter(state.source.chunks(partition))
    first = next(chunks)
    prepared = prepare(state, partition, first, conn=conn, defer_indexes=defer_indexes)
    archive = ArchiveWriter(state.store, state.target.table, key, time_column=prepared.time_column) \
        if state.store is not None else None
    try:
        if not _claim(state, partition, key, mode) and mode != "replace":
            return None
        counts = stream(state, partition, itertools.chain([first], chunks), prepared, target_for(prepared),
                        archive)
        judge(state, partition, counts)  # before anything of the partition can commit
        if partition.path is not None and partition.stat is not None:
            unchanged(partition.path, partition.stat)  # the rows are those of the bytes the key names
        _publish_archive(state, archive, key)
        _advance_watermark(state)
        _supersede_rejects(state, partition)
        meta.complete(state.session, key, rows_in=counts.rows_in, rows_loaded=counts.loaded,
                      rows_quarantined=counts.quarantined, rows_filtered=counts.filtered)
        return counts
    finally:
        if archive is not None:
            archive.discard()  # waits for its thread: nothing more is placed after it
            state.unlisted.extend(archive.placed)  # removed if the partition rolls back


def _publish_archive(state: LoadState, archive: ArchiveWriter | None, key: str) -> None:
    """Upload and verify the partition's archive files and list them, inside the data transaction: the rows
    and their archive copy become visible together (an upload that keeps failing rolls back)."""
    if archive is None:
        return
    files = archive.finish()
    meta.record_files(state.session, files, dataset=state.target.table, load_key=key, load_id=state.report.load_id)
    state.report.archive_files += len(files)
    state.report.archive_bytes += sum(f.bytes for f in files)


def _supersede_rejects(state: LoadState, partition: Partition) -> None:
    """The partition was read again whole: the rows earlier loads of it rejected are superseded by this one.
    Not for an incremental source: each run reads different rows, so an earlier reject was never re-read."""
    if state.watermark is None:
        meta.supersede_quarantine(state.session, state.target.table, state.target.connection_id, partition.origin,
                                  load_id=state.report.load_id)


def _advance_watermark(state: LoadState) -> None:
    """Store the incremental source's high mark in the data transaction, with the rows it covers."""
    if state.watermark is None:
        return
    high = state.source.high_watermark()  # type: ignore[attr-defined]
    if high is not None:
        key, cursor = state.watermark
        meta.set_watermark(state.session, state.target.table, state.target.connection_id, key, cursor, high)


def lock_for_new_children(state: LoadState) -> None:
    """Just before a replace's commit that attaches children: lock their parents against readers for the commit.

    ATTACH PARTITION lets readers run on (SHARE UPDATE EXCLUSIVE). A reader planned before the commit, with
    the old list of children, can take its snapshot just after it: it sees this commit's deletes and rows in
    the old children but none in the new ones (a replace moving rows to a new month was counted 0). With the
    parent locked the reader waits, then plans again with the new children. Held only for the commit. Not in
    append: its commit only adds rows, and two appends attaching children at once would deadlock on it."""
    if state.attached_to:
        state.session.run("SET LOCAL lock_timeout = '120s'")  # a reader that never ends fails the load, clearly
    for table in sorted(state.attached_to):
        state.session.run(f"LOCK TABLE ONLY {qualified(table)} IN ACCESS EXCLUSIVE MODE")
    state.attached_to.clear()


# --- append and merge -----------------------------------------------------------------------------------------
def _staging(state: LoadState) -> FreshChildren:
    """The helper connections for new children, opened on first use and kept for the load's partitions."""
    if state.staging is None:
        state.staging = FreshChildren(state.session, settings().copy_streams, state.report.load_id)
    return state.staging


def _row_target(state: LoadState) -> Callable[[Prepared], RowTarget]:
    if state.target.mode == "merge":
        return lambda prepared: MergeStage(state, prepared)
    if settings().copy_streams < 2:
        return lambda prepared: Children(state, prepared)
    return lambda prepared: StagedChildren(state, prepared, lambda: _staging(state))


def load_partition(state: LoadState, partition: Partition, key: str) -> None:
    """append / merge: one transaction holding the ledger row, the rows and their quarantine."""
    while True:
        try:
            counts = _load_committed(state, partition, key)
            break
        except (InvalidUtf8, LateDrift) as exc:  # rolled back by _load_committed: read it again
            state.fresh.clear()
            state.attached_to.clear()
            if isinstance(exc, LateDrift):
                drop_if_unused(state)  # a table this load created takes the widened types
            partition = _lossy(partition) if isinstance(exc, InvalidUtf8) else widened(state, partition, exc)
    if counts is None:
        state.report.skipped_partitions += 1
        state.report.note(partition.label, "skipped")
    else:
        state.account(counts, partition)


def _load_committed(state: LoadState, partition: Partition, key: str) -> Counts | None:
    try:
        counts = _one(state, partition, key, _row_target(state), mode=state.target.mode)
        if counts is None:
            state.session.rollback()
            drop_unlisted(state)
            return None
        meta.bump_version(state.session, state.target.table)
        state.attached_to.clear()  # an append's commit adds rows only: no reader can see fewer (see below)
        state.session.commit()
        state.unlisted.clear()
        if state.staging is not None:
            state.staging.settled()
    except BaseException:
        state.session.rollback()
        drop_unlisted(state)
        state.fresh.clear()
        state.attached_to.clear()
        if state.staging is not None:
            state.staging.abort()
        raise
    return counts


def _connection_is(info: ddl.TableInfo, connection_id: ConnectionId) -> str:
    """``connection_id = $1`` in the column's type (the id passed as text); an id it cannot hold is refused."""
    column_type = info.columns.get(CONNECTION_COLUMN, "text")
    problem = kind_mismatch(info.name, column_type, connection_id)
    if problem:
        raise SpecError("target.connection_id", problem)
    return equals_sql(quote_ident(CONNECTION_COLUMN), column_type)


# --- replace --------------------------------------------------------------------------------------------------
def replace_all(state: LoadState, partitions: list[Partition], keys: list[str]) -> None:
    """Replace the rows in one transaction: DELETE them, COPY the new ones, commit. With a connection id only
    that connection's rows (and ledger entries) are replaced; tables are shared by tenants. The table keeps its
    name, indexes and partitions; schema changes follow the contract as in append, inside the same
    transaction."""
    session, target = state.session, state.target
    existing = meta.load_keys(session, target.table, target.connection_id, conn=session.ddl)
    session.commit(session.ddl)
    # a file's key changes with its bytes; a database table's does not (volatile), so its replace always re-reads;
    # a full refresh replaces whatever the keys say
    if existing and existing == set(keys) and not state.full_refresh and not any(p.volatile for p in partitions):
        state.report.skipped_partitions = len(partitions)
        for partition in partitions:
            state.report.note(partition.label, "skipped")
        return
    # a killed attempt's rows, dead in the partitions, would double what this one goes through
    dead_rows.vacuum_dead(session, target.table)
    found = ddl.describe(session, target.table, conn=session.data)
    existed = found is not None
    counted: list[Counts] = []
    try:
        meta.forget_loads(session, target.table, target.connection_id)
        if found is not None and target.connection_id is not None:
            session.run(f"DELETE FROM {qualified(target.table)} WHERE {_connection_is(found, target.connection_id)}",
                        [str(target.connection_id)])
        elif existed:
            session.run(f"DELETE FROM {qualified(target.table)}")
        for partition, key in zip(partitions, keys, strict=True):
            try:
                counted.append(_replace_one(state, partition, key, fresh_table=not existed))
            except EmptySourceError:  # a 0-byte file, failed before any SQL of its own
                if not target.allow_empty:
                    raise
                counted.append(Counts())
        info = ddl.describe(session, target.table, conn=session.data)
        if not existed and info is not None and info.time_column:
            # after the rows: one sorted build instead of growing each index row by row
            create_indexes(session, target.table, index_set(target.indexes, info.time_column), list(info.columns),
                           conn=session.data)
        meta.bump_version(session, target.table)
        lock_for_new_children(state)
        session.commit()
        state.unlisted.clear()
    except BaseException:
        session.rollback()
        drop_unlisted(state)
        state.fresh.clear()
        state.attached_to.clear()
        raise
    for partition, counts in zip(partitions, counted, strict=True):
        state.account(counts, partition)


def _replace_one(state: LoadState, partition: Partition, key: str, *, fresh_table: bool) -> Counts:
    """One partition of a replace, under a savepoint (rolled back to, and read again lossily, on bad UTF-8)."""
    def load(part: Partition) -> Counts:
        counts = _one(state, part, key, lambda prepared: Children(state, prepared), mode="replace",
                      conn=state.session.data, defer_indexes=fresh_table)
        assert counts is not None
        return counts

    state.session.run("SAVEPOINT biconic_partition")
    fresh_before = dict(state.fresh)
    while True:
        try:
            return load(partition)
        except (InvalidUtf8, LateDrift) as exc:
            state.session.run("ROLLBACK TO SAVEPOINT biconic_partition")
            state.fresh = dict(fresh_before)
            partition = _lossy(partition) if isinstance(exc, InvalidUtf8) else widened(state, partition, exc)
