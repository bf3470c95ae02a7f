"""A chunk's plan, from raw columns to the status/rule/reason split: the table-independent decisions (steps,
rules, COPY guard, names, connection column) and the replay of the table decisions taken once per partition.

Partition-wide steps (``dedupe``) and rules (``unique``) must see the whole partition while chunks are planned
one by one, so :func:`precompute` finds the rows they flag in a first pass that keeps only row numbers and
keys, and every chunk looks them up.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from engine.errors import SourceError, SpecError, first_line
from engine.ids import TEXT_ID, UUID_TEXT, ConnectionId, kind_of
from engine.pipeline.context import LoadState
from engine.pipeline.document import to_document
from engine.plan.columns import KEY_COLUMN, PENDING_COLUMN, ROW_COLUMN
from engine.plan.frame import Plan, did_you_mean
from engine.plan.rules import apply_rules, finish, guard_copy
from engine.plan.steps import compile_steps, fit_names, normalize
from engine.postgres.ddl import CONNECTION_COLUMN
from engine.sources.base import Partition
from engine.spec.models import Dedupe, NotNull, Pipeline, Unique

__all__ = ["GIVEN_TWICE", "LOADED_AT", "InvalidUtf8", "add_loaded_at_column", "compile_chunk", "finish_plan",
           "need_key", "pipeline_of", "precompute", "renamed", "source_error"]

#: the rule of rows whose own connection_id differs from the given one (the load stops on them)
GIVEN_TWICE = "connection_given_twice"

#: the partition column the engine adds when the data has no date or timestamp
LOADED_AT = "_loaded_at"


class InvalidUtf8(Exception):
    """The CSV holds invalid UTF-8: retried in lossy mode, where affected rows are quarantined."""


def source_error(partition: Partition, exc: Exception) -> Exception:
    """A reader's failure as the partition's :class:`SourceError` (or :class:`InvalidUtf8`, retried)."""
    text = first_line(exc)
    if "invalid utf-8" in text.lower() and not partition.options.get("utf8_lossy"):
        return InvalidUtf8(text)
    return SourceError(partition.label, f"cannot read: {text}")


def pipeline_of(state: LoadState) -> Pipeline:
    """The spec's steps and rules; a merge also refuses null keys (repeated keys are resolved in SQL, the
    last one winning)."""
    pipeline = state.spec.pipeline
    if state.target.mode == "merge":
        pipeline = pipeline.model_copy(update={"rules": (NotNull(columns=state.target.key), *pipeline.rules)})
    return pipeline


def renamed(plan: Plan, original: str) -> str:
    """The column a source column ended up as (after renames and name normalising)."""
    for new, old in plan.renamed_from.items():
        if old == original:
            return new
    return original


def compile_chunk(state: LoadState, frame: pl.LazyFrame, precomputed: dict[str, pl.Series] | None,
                  known_names: dict[str, str]) -> Plan:
    """The table-independent part of a plan: steps, rules, COPY guard, names, connection column."""
    pipeline = pipeline_of(state)
    plan = compile_steps(pipeline, frame, precomputed=precomputed)
    apply_rules(plan, pipeline)
    if state.target.layout == "document":  # fields keep their names and nesting inside the document
        connection_column(plan, state.target.connection_id, state.connection_type,
                          override=state.target.connection_override)
        to_document(plan, partition_by=state.target.partition_by, loaded_at=state.loaded_at,
                    load_id=state.report.load_id, rename=renamed)
        guard_copy(plan)
        return plan
    guard_copy(plan)
    if pipeline.normalize_names:
        normalize(plan, known_names)
    else:
        fit_names(plan)
    connection_column(plan, state.target.connection_id, state.connection_type,
                      override=state.target.connection_override)
    return plan


def connection_column(plan: Plan, connection_id: ConnectionId | None, column_type: str | None = None, *,
                      override: bool = False) -> None:
    """The ``connection_id`` column, first: the given id, else the data's own (nulls rejected), else 0.

    ``column_type`` is the dataset's column type (bigint, uuid, text; None while a new table's is not decided:
    the data's column is then left as it is). The data's own values are fitted to it, and those that do not fit
    are rejected. Given an id while the rows carry their own, a differing value is flagged under
    :data:`GIVEN_TWICE` (the load stops on it) unless ``override``.
    """
    own = CONNECTION_COLUMN in plan.columns
    if connection_id is not None:
        if own and not override:
            plan.reject(GIVEN_TWICE, CONNECTION_COLUMN, _differs(plan, connection_id),
                        pl.format("{}", pl.col(CONNECTION_COLUMN).cast(pl.String)))
        as_number = isinstance(connection_id, int) and column_type in (None, "bigint")
        value = pl.lit(connection_id, dtype=pl.Int64) if as_number else pl.lit(str(connection_id), dtype=pl.String)
        plan.frame = plan.frame.with_columns(value.alias(CONNECTION_COLUMN))
    elif own:
        _fit_own(plan, column_type)
        plan.reject("not_null", CONNECTION_COLUMN, pl.col(CONNECTION_COLUMN).is_null(),
                    pl.lit("connection_id is null and no --connection was given"))
    else:  # a text column holds the default's text (a uuid one refuses it: engine.pipeline.fit)
        default = pl.lit("0") if column_type == "text" else pl.lit(0, dtype=pl.Int64)
        plan.frame = plan.frame.with_columns(default.alias(CONNECTION_COLUMN))
    plan.refresh()
    # connection_id first: it leads every index
    order = [CONNECTION_COLUMN, *[c for c in plan.schema if c != CONNECTION_COLUMN]]
    plan.frame = plan.frame.select(order)
    plan.refresh()


def _differs(plan: Plan, connection_id: ConnectionId) -> pl.Expr:
    """Rows whose own connection_id is not the given id (compared in canonical text; nulls do not differ)."""
    text = pl.col(CONNECTION_COLUMN).cast(pl.String).str.strip_chars()
    if kind_of(connection_id) == "uuid":
        text = text.str.to_lowercase()
    elif isinstance(connection_id, int) and plan.schema[CONNECTION_COLUMN] == pl.String:
        text = text.str.strip_prefix("+").str.replace(r"^(-?)0+(\d)", "${1}${2}")
    return (text != str(connection_id)).fill_null(False)


def _fit_own(plan: Plan, column_type: str | None) -> None:
    """The data's own connection_id values in the column's type; values that do not fit are rejected."""
    dtype = plan.schema[CONNECTION_COLUMN]
    if column_type in ("uuid", "text") or (column_type is None and dtype == pl.String):
        col = pl.col(CONNECTION_COLUMN).cast(pl.String).str.strip_chars()
        pattern = UUID_TEXT if column_type == "uuid" else TEXT_ID
        canonical = pl.when(col.str.contains(f"^{UUID_TEXT}$")).then(col.str.to_lowercase()).otherwise(col)
        if column_type is not None:
            what = "a UUID" if column_type == "uuid" else "a connection id (at most 64 characters of [A-Za-z0-9_.:-])"
            plan.reject("type", CONNECTION_COLUMN, ~col.str.contains(f"^{pattern}$").fill_null(True),
                        pl.format(f"connection_id '{{}}' is not {what}, as the {column_type} column needs", col))
        plan.frame = plan.frame.with_columns(canonical.alias(CONNECTION_COLUMN))
    elif dtype != pl.Int64:
        plan.convert_columns({CONNECTION_COLUMN: pl.Int64()}, "type")


def add_loaded_at_column(plan: Plan, loaded_at: dt.datetime) -> None:
    plan.frame = plan.frame.with_columns(pl.lit(loaded_at, dtype=pl.Datetime("us", "UTC")).alias(LOADED_AT))
    plan.refresh()


def guard_time(plan: Plan, time_column: str) -> None:
    """Rows without a usable time partition are rejected (null, or outside years 1..9999)."""
    col = pl.col(time_column)
    plan.reject("partition", time_column, col.is_null(),
                pl.lit(f"{time_column} is null, so the row has no time partition"))
    year = col.dt.year()
    plan.reject("partition", time_column, ((year < 1) | (year > 9999)).fill_null(False),
                pl.format("{} is outside years 1..9999 for a time partition", col.cast(pl.String)))
    plan.refresh()


def apply_casts(plan: Plan, text_casts: dict[str, pl.DataType], casts: dict[str, pl.DataType]) -> None:
    """Make incoming columns match the table: text is parsed (bad values rejected), the rest cast."""
    plan.convert_columns(text_casts, "type")
    if casts:
        plan.frame = plan.frame.with_columns(
            (pl.col(c).cast(pl.String) if t == pl.String else pl.col(c).cast(t, strict=False)).alias(c)
            for c, t in casts.items())
        plan.refresh()


def finish_plan(plan: Plan, *, loaded_at: dt.datetime | None, text_casts: dict[str, pl.DataType],
                casts: dict[str, pl.DataType], time_column: str) -> Plan:
    """The table decisions replayed on a compiled chunk, ending in the status/rule/reason columns."""
    if loaded_at is not None:
        add_loaded_at_column(plan, loaded_at)
    apply_casts(plan, text_casts, casts)
    guard_time(plan, time_column)
    finish(plan)
    return plan


# --- partition-wide steps and rules -------------------------------------------------------------------------
def precompute(state: LoadState, partition: Partition) -> dict[str, pl.Series] | None:
    """Rows that dedupe steps drop and unique rules reject, decided over the whole partition.

    Each such step gets a first pass, chunk by chunk, that keeps only the row number and key of rows still
    headed for the table; the repeats among those are the flagged rows. Memory grows with the keys kept, not
    with the data. Steps are decided in order, each pass seeing the decisions of the steps before it.
    """
    pipeline = pipeline_of(state)
    if not any(isinstance(s, Dedupe) for s in pipeline.steps) and \
            not any(isinstance(r, Unique) for r in pipeline.rules):
        return None
    first = next(iter(state.source.chunks(partition)))(0)
    probe = compile_steps(pipeline, first, precomputed={})
    apply_rules(probe, pipeline)
    precomputed: dict[str, pl.Series] = {}
    for name in probe.globals:
        # first the key alone, over every row (Polars then reads only the columns the key needs): when no
        # key occurs twice, no row is flagged whatever else the rules say
        keys = _first_pass(state, partition, pipeline, precomputed, name, [ROW_COLUMN, KEY_COLUMN])
        if keys[KEY_COLUMN].n_unique() == keys.height:
            precomputed[name] = keys[ROW_COLUMN].head(0)
            continue
        pending = _first_pass(state, partition, pipeline, precomputed, name, [ROW_COLUMN, KEY_COLUMN, PENDING_COLUMN])
        key = pl.col(KEY_COLUMN)
        kept = key.is_first_distinct() if probe.global_keep[name] == "first" else key.is_last_distinct()
        precomputed[name] = pending.filter(~kept)[ROW_COLUMN]
    return precomputed


def _first_pass(state: LoadState, partition: Partition, pipeline: Pipeline, precomputed: dict[str, pl.Series],
                name: str, columns: list[str]) -> pl.DataFrame:
    """``columns`` of every row of the partition, planned chunk by chunk for the flag ``name``."""
    rows_before = 0
    parts: list[pl.DataFrame] = []
    for factory in state.source.chunks(partition):
        plan = compile_steps(pipeline, factory(rows_before), precomputed=precomputed, collect_for=name)
        apply_rules(plan, pipeline)
        try:
            df = plan.frame.select(columns).collect()
        except pl.exceptions.PolarsError as exc:
            raise source_error(partition, exc) from exc
        rows_before += df.height
        parts.append(df if PENDING_COLUMN not in columns else df.filter(pl.col(PENDING_COLUMN)))
    return pl.concat(parts)


def need_key(plan: Plan, key: str) -> str:
    """The column a merge key ended up as, or a SpecError naming it."""
    name = key if key in plan.columns else renamed(plan, key)
    if name not in plan.columns:
        raise SpecError("target.key", f"key column {key!r} is not in the data{did_you_mean(key, plan.columns)}")
    return name

