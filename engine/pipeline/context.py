"""What one load knows while it runs: its spec, source, session, report, and what it created on the way."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from engine.archive.store import Store
from engine.ids import ConnectionId
from engine.pipeline.counts import Counts, Rejects
from engine.pipeline.measure import partition_committed
from engine.plan.steps import step_names
from engine.postgres.connection import Session
from engine.postgres.periods import Period
from engine.postgres.staging import FreshChildren
from engine.progress import Progress
from engine.report import LoadReport
from engine.sources.base import Partition, Source
from engine.spec.models import LoadSpec, TargetSpec

__all__ = ["LoadState", "Refresh"]

#: connections whose cached latest rows a load refreshes (beyond it they are filled on first read)
TRACKED_CONNECTIONS = 10_000


@dataclass(frozen=True)
class Refresh:
    """A full refresh under way (see :mod:`engine.pipeline.reload`)."""

    scope: str
    refresh_id: str
    #: keys of partitions never loaded before the refresh: they load under their usual key
    first_keys: frozenset[str]


@dataclass
class LoadState:
    """One load's state, shared by its steps (plan, fit, stream, publish)."""

    spec: LoadSpec
    source: Source
    session: Session
    report: LoadReport
    spec_hash: str
    progress: Progress | None = None
    store: Store | None = None
    #: (watermark key, cursor column) of an incremental source, advanced with the rows it covers
    watermark: tuple[str, str] | None = None
    #: reload on purpose, ignoring the ledger (and an incremental source's watermark)
    full_refresh: bool = False
    #: the full refresh this load runs (append and merge; set by :func:`engine.pipeline.reload.begin_refresh`)
    refresh: Refresh | None = None
    loaded_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    partitions_done: int = 0
    #: children created standalone in the open transaction, attached before it commits
    fresh: dict[str, Period] = field(default_factory=dict)
    #: tables that had children attached in the open transaction (locked just before it commits)
    attached_to: set[str] = field(default_factory=set)
    #: helper connections that fill new children beside the transaction (append mode; None = off or unused)
    staging: FreshChildren | None = None
    #: periods tiered out to the archive (read on a merge's first batch)
    cold: set[dt.date] | None = None
    #: connections that received rows (their cached latest rows are refreshed after the load)
    connections: set[ConnectionId] = field(default_factory=set)
    #: the dataset's connection_id column type (bigint, uuid, text), once known (:func:`engine.pipeline.fit.prepare`)
    connection_type: str | None = None
    #: archive files placed under their final names and not yet committed (removed if their partition rolls back)
    unlisted: list[str] = field(default_factory=list)
    #: this load created the table (committed apart from the rows): dropped again if none of its rows commit
    created_table: bool = False
    #: the rejected rows of the partition being streamed (a sample is kept when it fails on them)
    rejects: Rejects | None = None

    @property
    def target(self) -> TargetSpec:
        return self.spec.target

    def tell_progress(self, partition: Partition, rows: int) -> None:
        """``rows`` read so far, in the partition being loaded."""
        if self.progress is not None:
            self.progress.update(label=partition.label, rows=rows, total=self.report.source_partitions,
                                 done=self.partitions_done + self.report.skipped_partitions)

    def account(self, counts: Counts, partition: Partition) -> None:
        """A committed partition's counts, into the report (its totals and the partition's own line)."""
        self.report.note(partition.label, "loaded", rows_in=counts.rows_in, rows_loaded=counts.loaded,
                         rows_quarantined=counts.quarantined)
        self.report.rows_in += counts.rows_in
        self.report.rows_loaded += counts.loaded
        self.report.rows_quarantined += counts.quarantined
        self.report.rows_filtered += counts.filtered
        self.partitions_done += 1
        partition_committed(source=self.source, mode=self.target.mode, size_bytes=partition.size_bytes,
                            rows_in=counts.rows_in, loaded=counts.loaded, filtered=counts.filtered,
                            by_rule=dict(counts.by_rule), steps=step_names(self.spec.pipeline))

    def saw_connections(self, ids: list[ConnectionId]) -> None:
        if len(self.connections) < TRACKED_CONNECTIONS:
            self.connections.update(ids)
