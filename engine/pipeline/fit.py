"""Fitting the table to a partition, once, before its rows stream: the partition column, a new table or the
schema drift of an existing one (add columns, widen types, or refuse under the contract), and the merge key.

The decisions are kept in :class:`Prepared` and replayed on every chunk's plan by :func:`build`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import polars as pl

from engine.errors import SchemaDriftError, SourceError, SpecError
from engine.ids import UUID_TEXT, kind_mismatch, kind_of
from engine.index_set import index_set
from engine.pipeline.context import LoadState
from engine.pipeline.document import DOC_DATA, DOC_TIME
from engine.pipeline.planner import (
    LOADED_AT,
    add_loaded_at_column,
    compile_chunk,
    finish_plan,
    need_key,
    precompute,
    renamed,
)
from engine.plan.frame import Plan, did_you_mean
from engine.postgres import ddl
from engine.postgres.ddl import CONNECTION_COLUMN, TableInfo
from engine.postgres.indexes import create_indexes, parent_indexes
from engine.postgres.schema import pg_to_polars, reconcile
from engine.sources.base import Partition
from engine.sources.chunks import ChunkFactory
from engine.types import pg_type, to_loadable

#: columns a PostgreSQL table may have (MaxHeapAttributeNumber)
PG_MAX_COLUMNS = 1600

__all__ = ["Prepared", "build", "prepare"]


@dataclasses.dataclass
class Prepared:
    """Decisions taken once per partition (against the table), replayed on every chunk's plan."""

    info: TableInfo
    time_column: str
    add_loaded_at: bool
    text_casts: dict[str, pl.DataType]
    casts: dict[str, pl.DataType]
    conflict: list[str]
    identity: list[str]
    known_names: dict[str, str] = dataclasses.field(default_factory=dict)
    columns: list[str] = dataclasses.field(default_factory=list)
    precomputed: dict[str, pl.Series] | None = None


def build(state: LoadState, frame: pl.LazyFrame, prepared: Prepared) -> Plan:
    """One chunk's complete plan, ending in the status/rule/reason columns."""
    plan = compile_chunk(state, frame, prepared.precomputed or {}, prepared.known_names)
    return finish_plan(plan, loaded_at=state.loaded_at if prepared.add_loaded_at else None,
                       text_casts=prepared.text_casts, casts=prepared.casts, time_column=prepared.time_column)


def prepare(state: LoadState, partition: Partition, first_chunk: ChunkFactory, *, conn: Any = None,
            defer_indexes: bool = False) -> Prepared:
    """Plan the first chunk and make the table fit it (create, add columns, widen); the decisions taken
    here are replayed on every chunk by :func:`build`."""
    table = state.target.table
    precomputed = precompute(state, partition)
    first = first_chunk(0)
    info = ddl.describe(state.session, table, conn=conn)
    known_names = info.source_names if info is not None else {}
    state.connection_type = _connection_type(state, info, first, precomputed, known_names)
    plan = compile_chunk(state, first, precomputed or {}, known_names)
    if info is not None and not info.time_column:  # checked before any DDL touches the user's table
        raise SpecError("target.table", f"{table} exists but is not range-partitioned on a time column "
                                        "(a plain table, a view, or another partitioning); load into a new table")
    time_column, add_loaded_at = _time_column(state, plan, info)
    if add_loaded_at:
        add_loaded_at_column(plan, state.loaded_at)
    _check_width(partition, plan, info)
    text_casts: dict[str, pl.DataType] = {}
    casts: dict[str, pl.DataType] = {}
    if info is None:
        info = _create(state, plan, time_column, conn=conn, defer_indexes=defer_indexes)
    else:
        text_casts, casts = _reconcile(state, plan, info, conn=conn)
        _declared_indexes(state, info, time_column, conn=conn)
    identity: list[str] = []
    conflict: list[str] = []
    if state.target.mode == "merge":
        keys = [need_key(plan, k) for k in state.target.key]
        identity = [CONNECTION_COLUMN, *[k for k in keys if k != CONNECTION_COLUMN]]
        conflict = ddl.ensure_merge_index(state.session, info, identity)
    prepared = Prepared(info=info, time_column=time_column, add_loaded_at=add_loaded_at, text_casts=text_casts,
                        casts=casts, conflict=conflict, identity=identity, precomputed=precomputed,
                        known_names=known_names)
    prepared.columns = list(build(state, first, prepared).columns)
    return prepared


def _check_width(partition: Partition, plan: Plan, info: TableInfo | None) -> None:
    """More columns than a PostgreSQL table can have, said before any CREATE or ALTER (whose raw error does
    not name the file)."""
    total = len(set(plan.columns) | set(info.columns if info is not None else ()))
    if total > PG_MAX_COLUMNS:
        had = f" (it has {len(info.columns)})" if info is not None else ""
        raise SourceError(partition.label, f"the table would need {total} columns{had}, more than the "
                                           f"{PG_MAX_COLUMNS} PostgreSQL allows; load it with --layout document "
                                           "(each row one jsonb document), or select fewer columns")


def _connection_type(state: LoadState, info: TableInfo | None, first: pl.LazyFrame,
                     precomputed: dict[str, pl.Series] | None, known_names: dict[str, str]) -> str:
    """The dataset's connection_id column type: the table's, else fixed now by the given id's kind, else by the
    data's own column (integers: bigint; all values UUIDs: uuid; all whole numbers: bigint; else text), else
    bigint (every row gets 0). An id of another kind than the table's is a SpecError."""
    given = state.target.connection_id
    if info is not None and CONNECTION_COLUMN in info.columns:
        column_type = info.columns[CONNECTION_COLUMN]
        probe = compile_chunk(state, first, precomputed or {}, known_names)
        if given is None and CONNECTION_COLUMN in probe.columns:
            dtype = probe.schema[CONNECTION_COLUMN]
            if column_type == "uuid" and dtype.is_numeric():
                raise SpecError("target.connection_id", f"{info.name}.connection_id is uuid; the rows' own "
                                                        f"connection_id values are numbers ({dtype})")
        elif given is None and CONNECTION_COLUMN not in probe.columns:
            given = 0
        problem = kind_mismatch(info.name, column_type, given) if given is not None else None
        if problem:
            raise SpecError("target.connection_id", problem)
        return column_type
    if given is not None:
        return kind_of(given)
    if info is not None:
        return "bigint"  # the table lacks the column: _reconcile says so
    probe = compile_chunk(state, first, precomputed or {}, known_names)
    if CONNECTION_COLUMN not in probe.columns or probe.schema[CONNECTION_COLUMN] != pl.String:
        return "bigint"
    values = probe.frame.select(pl.col(CONNECTION_COLUMN).drop_nulls()).collect().to_series()
    if values.len() and values.str.contains(f"^{UUID_TEXT}$").all():
        return "uuid"
    if values.str.contains(r"^[+-]?[0-9]{1,18}$").all():
        return "bigint"  # whole numbers as text: parsed, as before ids could be anything else
    return "text"


def _time_column(state: LoadState, plan: Plan, info: TableInfo | None) -> tuple[str, bool]:
    """The partition column, and whether it is the engine's own ``_loaded_at``."""
    wanted = DOC_TIME if state.target.layout == "document" else state.target.partition_by
    add = False
    if info is not None and info.time_column:
        if wanted and wanted != info.time_column and renamed(plan, wanted) != info.time_column:
            raise SpecError("target.partition_by", f"table {info.name} is partitioned by "
                            f"{info.time_column!r}, not {wanted!r}")
        chosen = info.time_column
        add = chosen == LOADED_AT and chosen not in plan.columns
    elif wanted:
        chosen = wanted if wanted in plan.columns else renamed(plan, wanted)
        if chosen not in plan.columns:
            raise SpecError("target.partition_by", f"unknown column {wanted!r}{did_you_mean(wanted, plan.columns)}")
    else:
        dated = [c for c in plan.columns if plan.schema[c] == pl.Date or isinstance(plan.schema[c], pl.Datetime)]
        chosen = dated[0] if dated else LOADED_AT
        add = not dated
    if not add and chosen not in plan.columns:
        raise SpecError("target.partition_by", f"the data has no column {chosen!r} to partition by"
                                               f"{did_you_mean(chosen, plan.columns)}")
    existing_text = info is not None and plan.schema.get(chosen) == pl.String  # parsed to the table's type
    if not add and not existing_text:
        dtype = plan.schema[chosen]
        if not (dtype == pl.Date or isinstance(dtype, pl.Datetime)):
            raise SpecError("target.partition_by", f"column {chosen!r} is {dtype}, not a date or timestamp; "
                                                   "add a parse_date step or pick another column")
    state.report.time_column = chosen
    return chosen, add


def _create(state: LoadState, plan: Plan, time_column: str, *, conn: Any, defer_indexes: bool) -> TableInfo:
    columns = [(c, "jsonb" if state.target.layout == "document" and c == DOC_DATA
                else state.connection_type or "bigint" if c == CONNECTION_COLUMN
                else pg_type(to_loadable(plan.schema[c]))) for c in plan.columns]
    comments = {new: old for new, old in plan.renamed_from.items() if new in plan.columns}
    if conn is None:  # committed on its own, before the rows: dropped again if none of them commit
        state.created_table = True
    return ddl.create_table(state.session, state.target.table, columns, time_column=time_column,
                            granularity=state.target.granularity, hash_partitions=state.target.hash_partitions,
                            comments=comments, indexes=index_set(state.target.indexes, time_column), conn=conn,
                            defer_indexes=defer_indexes)


def _declared_indexes(state: LoadState, info: TableInfo, time_column: str, *, conn: Any) -> None:
    """An existing table gets the declared indexes it lacks (built on every partition: the load waits for it);
    the ones it has and the list omits are kept."""
    if state.target.indexes is None:
        return
    ddl_conn = conn or state.session.ddl
    create_indexes(state.session, info.name, index_set(state.target.indexes, time_column), list(info.columns),
                   conn=ddl_conn)
    if ddl_conn is state.session.ddl:
        state.session.commit(state.session.ddl)
    info.indexes = parent_indexes(state.session, info.name, conn=ddl_conn)


def _reconcile(state: LoadState, plan: Plan, info: TableInfo, *, conn: Any) -> tuple[dict[str, pl.DataType],
                                                                             dict[str, pl.DataType]]:
    """Fit the table to the incoming columns (add, widen) and return the casts incoming columns need:
    text parsed with rejects, and plain casts."""
    casts: dict[str, pl.DataType] = {}
    for name in plan.columns:
        incoming = plan.schema[name]
        if name == CONNECTION_COLUMN:
            continue  # fitted to the column's type by the plan (engine.pipeline.planner.connection_column)
        if state.target.layout == "document" and name == DOC_DATA:
            if info.columns.get(name) != "jsonb":
                raise SchemaDriftError(info.name, name, info.columns.get(name), "jsonb",
                                       "the document layout needs a jsonb data column; load into a new table")
            continue
        cast = _fit_column(state, plan, info, name, incoming, conn=conn)
        if cast is not None:
            casts[name] = cast
    # A column the table has but this source lacks is left NULL; missing key columns are errors.
    for required in (info.time_column, CONNECTION_COLUMN):
        if required and required not in plan.columns:
            raise SchemaDriftError(info.name, required, info.columns.get(required), "missing",
                                   "every load must provide the table's partition column")
    text = {c: t for c, t in casts.items() if plan.schema[c] == pl.String and t != pl.String}
    return text, {c: t for c, t in casts.items() if c not in text}


def _fit_column(state: LoadState, plan: Plan, info: TableInfo, name: str, incoming: pl.DataType, *,
                conn: Any) -> pl.DataType | None:
    """One incoming column against the table's: keep, add, widen the table, or the cast incoming needs."""
    decision = reconcile(info.columns.get(name), incoming, is_key=name in (info.time_column, CONNECTION_COLUMN))
    if decision.action == "keep":
        return None
    if decision.action == "error":
        raise SchemaDriftError(info.name, name, info.columns.get(name), pg_type(to_loadable(incoming)),
                               decision.hint)
    if decision.action in ("add", "alter") and state.target.contract == "freeze":
        raise SchemaDriftError(info.name, name, info.columns.get(name), decision.pg,
                               "the schema contract is 'freeze'; use contract 'evolve' to allow this")
    if decision.action == "add":
        ddl.add_column(state.session, info.name, name, decision.pg, plan.renamed_from.get(name), conn=conn)
        info.columns[name] = decision.pg
        state.report.columns_added.append(name)
        return None
    if decision.action == "alter":
        ddl.widen_column(state.session, info.name, name, decision.pg, conn=conn)
        info.columns[name] = decision.pg
        state.report.columns_widened.append(name)
        return None
    dtype = pg_to_polars(decision.pg)
    assert dtype is not None
    return dtype
