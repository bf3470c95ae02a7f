"""Streaming one partition: each batch split into loaded / quarantined / filtered rows, the good ones handed to
their :mod:`target <engine.pipeline.targets>` and to the archive writer, the bad ones COPYed to quarantine.

The next batches are computed on a thread while this one is COPYed (:class:`engine.handoff.Prefetch`: Polars
and libpq release the GIL): read, planned, split by status, and the good rows ordered, cut by child and
converted for COPY there, so the loading thread only talks to PostgreSQL. At most two batches wait, so memory
stays bounded.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import polars as pl

from engine.archive.writer import ArchiveWriter
from engine.errors import EmptySourceError, SpecError
from engine.handoff import Prefetch
from engine.pipeline.batches import batches, quarantine_rows
from engine.pipeline.context import LoadState
from engine.pipeline.counts import Counts, Rejects
from engine.pipeline.drift import check_drift
from engine.pipeline.fit import Prepared
from engine.pipeline.planner import GIVEN_TWICE, source_error
from engine.pipeline.targets import Part, RowTarget
from engine.plan.columns import REASON, ROW_COLUMN, RULE, STATUS
from engine.postgres import copy, meta
from engine.postgres.ddl import CONNECTION_COLUMN
from engine.sources.base import Partition
from engine.sources.chunks import ChunkFactory

__all__ = ["stream"]

#: batches computed ahead of the one being COPYed
_AHEAD = 2


def stream(state: LoadState, partition: Partition, chunks: Iterator[ChunkFactory], prepared: Prepared,
           target: RowTarget, archive: ArchiveWriter | None) -> Counts:
    """COPY the partition's rows (and hand the good ones to ``archive``) inside the open transaction; the
    counts add up exactly, or nothing is committed. A merge's rows superseded by a later row of the same key
    count as filtered (deduplicated)."""
    counts = Counts()
    state.rejects = Rejects()
    try:
        split = _split(batches(state, chunks, prepared, partition.label), prepared, target)
        with Prefetch(split, depth=_AHEAD) as ahead:
            for batch in ahead:
                _one_batch(state, partition, batch, prepared, target, archive, counts)
        if archive is not None:
            archive.seal()  # its files are written and uploaded while PostgreSQL builds indexes
        written = target.finish()
    except pl.exceptions.PolarsError as exc:
        raise source_error(partition, exc) from exc
    counts.check(partition.label)
    _refuse_empty(state, partition, counts)
    if written is not None:
        counts.filtered += counts.loaded - written
        counts.loaded = written
    for rule, n in counts.by_rule.items():
        state.report.quarantine_by_rule[rule] = state.report.quarantine_by_rule.get(rule, 0) + n
    return counts


def _refuse_empty(state: LoadState, partition: Partition, counts: Counts) -> None:
    """A file with no rows fails (rolled back) unless the load allows it: a failed export must not pass as a
    0-row success. A source that can say more (a CSV of a header only, a sheet of blank rows, the sheets of
    ``*``) says so with ``empty``; for any other file, no row read is empty. Databases and APIs are not asked:
    there 0 rows may be normal (an incremental query with nothing new)."""
    if state.target.allow_empty:
        return
    empty = getattr(state.source, "empty", None)
    if empty is not None:
        why = empty(partition)
    elif partition.path is not None and partition.span is None and counts.rows_in == 0:
        why = "no rows: the file holds none"
    else:
        why = None
    if why is not None:
        raise EmptySourceError(partition.label, why)


def _refuse_given_twice(state: LoadState, partition: Partition, bad: pl.DataFrame) -> None:
    """The rows carry connection_id values other than the given id: the load stops (rolled back) rather than
    overwrite them silently."""
    differing = bad.filter(pl.col(RULE) == GIVEN_TWICE)
    if differing.height:
        row = int(differing[ROW_COLUMN][0])
        raise SpecError("target.connection_id", f"{partition.label} row {row}: the rows carry connection_id "
                                                f"{differing[REASON][0]!r}, not the given connection id "
                                                f"{state.target.connection_id!r}; pass --connection-override "
                                                "(target connection_override: true) to replace their values")


@dataclass(frozen=True)
class _Batch:
    """One batch as the batches' thread hands it over: how many rows it read, its good rows ready for the
    target, their connections, its rejected rows and how many rows steps filtered out."""

    rows_in: int
    parts: list[Part]
    loaded: int
    connections: list[Any]
    bad: pl.DataFrame
    filtered: int


def _split(frames: Iterator[pl.DataFrame], prepared: Prepared, target: RowTarget) -> Iterator[_Batch]:
    """Each batch split by status, its good rows by the target (pure computation: runs on the batches' thread)."""
    for df in frames:
        status = df[STATUS]
        good = df.filter(status == 0).select(prepared.columns)
        yield _Batch(rows_in=df.height, parts=target.split(good) if good.height else [], loaded=good.height,
                     connections=good[CONNECTION_COLUMN].unique().to_list() if good.height else [],
                     bad=df.filter(status == 1), filtered=int((status == 2).sum()))


def _one_batch(state: LoadState, partition: Partition, batch: _Batch, prepared: Prepared, target: RowTarget,
               archive: ArchiveWriter | None, counts: Counts) -> None:
    counts.rows_in += batch.rows_in
    if batch.parts:
        target.write(batch.parts, archive)
        counts.loaded += batch.loaded
        state.saw_connections(batch.connections)
    bad = batch.bad
    if bad.height:
        _refuse_given_twice(state, partition, bad)
        check_drift(state, partition, bad, prepared)
        counts.by_rule.update(bad[RULE].to_list())
        rows = quarantine_rows(state, bad, prepared, partition)
        copy.copy(state.session, meta.QUARANTINE, rows.to_arrow())
        if state.rejects is not None:
            state.rejects.add(rows)
        counts.quarantined += bad.height
    counts.filtered += batch.filtered
    state.tell_progress(partition, state.report.rows_in + counts.rows_in)
