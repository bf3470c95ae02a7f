"""Where a partition's good rows go, one class per way:

- :class:`Children`: COPY straight into the table's children; a child that does not exist yet is created
  standalone in the load's transaction and attached before commit (append, replace).
- :class:`StagedChildren`: the same, but new children are filled, indexed and committed on helper connections
  (:mod:`engine.postgres.staging`) and only attached here (append with ``BICONIC_COPY_STREAMS`` >= 2).
- :class:`MergeStage`: COPY into a temporary table, then upsert (merge).

A batch goes through a target in two steps. :meth:`RowTarget.split` is pure computation (order the rows, cut
them by child, convert them to Arrow for COPY) and runs on the thread that computes the batches, so it overlaps
the COPY of the batch before; :meth:`RowTarget.write` runs on the loading thread, which owns the load's
connection: it finds or claims each child, COPYs the parts and hands them to the archive writer, period by
period (a part is released once COPYed and archived: a batch is never held twice).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import polars as pl
import pyarrow as pa

from engine.archive.writer import ArchiveWriter
from engine.errors import SpecError
from engine.names import qualified
from engine.pipeline.batches import by_period, periods
from engine.pipeline.context import LoadState
from engine.pipeline.document import archivable
from engine.pipeline.fit import Prepared
from engine.postgres import copy, ddl, meta
from engine.postgres.ddl import CONNECTION_COLUMN, split_table
from engine.postgres.periods import Period
from engine.postgres.staging import CHILD, FreshChildren

__all__ = ["Children", "MergeStage", "Part", "RowTarget", "StagedChildren"]


@dataclass(frozen=True)
class Part:
    """Good rows of one batch bound for one place: a child's period (None: a merge's staging table), the rows
    in the table's layout (for the archive) and the same rows as COPY takes them."""

    period: Period | None
    rows: pl.DataFrame
    arrow: pa.Table


class RowTarget(Protocol):
    """Receives a partition's good rows, batch by batch, inside the load's open transaction."""

    def split(self, good: pl.DataFrame) -> list[Part]:
        """The rows cut and ordered as this target COPYs them. Pure computation, on the batches' thread: no
        statement, no state changed."""
        ...

    def write(self, parts: list[Part], archive: ArchiveWriter | None) -> None:
        """COPY the parts (and hand them to ``archive``, by period), on the loading thread."""
        ...

    def finish(self) -> int | None:
        """All rows handed over: make them part of the table; how many rows a merge wrote (None otherwise)."""
        ...


def for_copy(state: LoadState, rows: pl.DataFrame) -> pa.Table:
    """Rows as Arrow for binary COPY: a uuid connection_id goes as its 16 bytes (COPY takes no UUID text)."""
    if state.connection_type == "uuid":
        return copy.uuid_bytes(rows, CONNECTION_COLUMN).to_arrow()
    return rows.to_arrow()


class Children:
    """Rows COPYed into their children directly, new children attached before commit."""

    #: a missing child is created here, in the load's transaction (else it is claimed for the helpers)
    creates_children = True

    def __init__(self, state: LoadState, prepared: Prepared) -> None:
        self.state = state
        self.prepared = prepared
        self.schema, self.base = split_table(prepared.info.name)

    def _copy(self, name: str, child: str, period: Period, rows: pa.Table) -> None:
        copy.copy(self.state.session, child, rows)

    def split(self, good: pl.DataFrame) -> list[Part]:
        # in the composite index's order: PostgreSQL then updates each B-tree page by page instead of at random
        # (15% less server time into indexed children), and a connection's rows sit together on disk
        ordered = good.sort([CONNECTION_COLUMN, self.prepared.time_column], descending=[False, True],
                            nulls_last=True)
        return [Part(period, part, for_copy(self.state, part)) for period, part in by_period(ordered, self.prepared)]

    def write(self, parts: list[Part], archive: ArchiveWriter | None) -> None:
        for part in parts:
            assert part.period is not None
            child = ddl.child_for(self.state.session, self.prepared.info, part.period, self.state.fresh,
                                  create=self.creates_children)
            name = ddl.child_name(self.prepared.info, part.period)
            self.state.report.partitions.append(name)
            self._copy(name, child, part.period, part.arrow)
            if archive is not None:
                archive.add(part.period.start, archivable(part.rows, self.state.target.layout))

    def finish(self) -> int | None:
        if self.state.fresh:
            ddl.attach_fresh(self.state.session, self.prepared.info, self.state.fresh,
                             staged_by=None if self.creates_children else self.state.report.load_id)
            self.state.attached_to.add(self.prepared.info.name)
        return None


class StagedChildren(Children):
    """New children filled on helper connections beside the transaction; existing ones COPYed here. The helpers
    are opened when the first new child needs them: an append into existing children never connects them."""

    creates_children = False

    def __init__(self, state: LoadState, prepared: Prepared, helpers: Callable[[], FreshChildren]) -> None:
        super().__init__(state, prepared)
        self._open_helpers = helpers
        self._helpers: FreshChildren | None = None
        info = prepared.info
        self.time_type = info.columns.get(prepared.time_column, "")
        # the parent's columns stay as they are until this commits: a staged child made LIKE it must still
        # match it when it is attached
        state.session.run(f"LOCK TABLE {qualified(info.name)} IN ACCESS SHARE MODE")

    def _staging(self) -> FreshChildren:
        if self._helpers is None:
            self._helpers = self._open_helpers()
            info = self.prepared.info
            self._helpers.start(qualified(info.name), self.prepared.time_column, info.hash_partitions,
                                [f"CREATE INDEX ON {CHILD} {definition}" for definition in info.indexes])
        return self._helpers

    def _copy(self, name: str, child: str, period: Period, rows: pa.Table) -> None:
        if name in self.state.fresh:
            self._staging().copy(self.schema, name, period, self.time_type, rows)
        else:
            super()._copy(name, child, period, rows)

    def finish(self) -> int | None:
        if self.state.fresh:
            self._staging().finish()
        return super().finish()


class MergeStage:
    """Rows COPYed into a temporary table, upserted into the table at the end (the last row of a key wins)."""

    def __init__(self, state: LoadState, prepared: Prepared) -> None:
        self.state = state
        self.prepared = prepared
        self.stage = f"biconic_stage_{state.report.load_id[:12]}"
        state.session.run(f"CREATE TEMP TABLE {self.stage} (LIKE {qualified(state.target.table)} INCLUDING DEFAULTS) "
                        "ON COMMIT DROP")

    def split(self, good: pl.DataFrame) -> list[Part]:
        # COPY order does not matter to a staging table: the upsert reads it by key
        return [Part(None, good, for_copy(self.state, good))]

    def write(self, parts: list[Part], archive: ArchiveWriter | None) -> None:
        for part in parts:
            found = periods(part.rows, self.prepared)
            self._refuse_cold(found)
            # the target's children must exist for the INSERT
            names = ddl.ensure_partitions(self.state.session, self.prepared.info, found)
            self.state.report.partitions.extend(names)
            copy.copy(self.state.session, self.stage, part.arrow, temporary=True)
            if archive is not None:
                for period, rows in by_period(part.rows, self.prepared):
                    archive.add(period.start, rows)

    def finish(self) -> int | None:
        p = self.prepared
        return copy.merge(self.state.session, self.state.target.table, self.stage, p.columns, p.conflict, p.identity,
                          p.time_column)

    def _refuse_cold(self, found: list[Period]) -> None:
        """A merge can only update rows still in PostgreSQL: rows for a tiered period would sit beside their
        old versions in the archive, so such a merge stops (rolled back) and says how to restore first."""
        state = self.state
        if state.cold is None:
            state.cold = set(meta.cold_periods(state.session, state.target.table, state.target.connection_id,
                                             conn=state.session.ddl))
            state.session.commit(state.session.ddl)
        tiered = sorted(p.start for p in found if p.start in state.cold)
        if tiered:
            last = max(p.end or p.start for p in found if p.start in state.cold)
            raise SpecError("target.mode", f"merge rows fall in period(s) {', '.join(map(str, tiered))} of "
                                           f"{state.target.table}, which were tiered out to the archive; run "
                                           f"`biconic restore {state.target.table} --from {tiered[0]} --to "
                                           f"{last - dt.timedelta(days=1)}` first, then the merge")
