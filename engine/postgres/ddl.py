"""Every statement that shapes a target table: the table, its indexes, its columns and its child partitions.

Tables are ``PARTITION BY RANGE`` on a time column, children optionally sub-partitioned ``BY HASH
(connection_id)``. A child that does not exist yet is created *standalone* (``LIKE`` the parent) and attached
once filled: attaching takes only SHARE UPDATE EXCLUSIVE on the parent, which neither blocks readers nor
running COPYs, and builds or adopts the child's indexes in one sorted pass. An advisory lock per child name
serialises loaders of the same new period.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.errors import SinkError
from engine.index_set import IndexSpec
from engine.names import qualified, quote_ident, shorten
from engine.postgres import meta
from engine.postgres.connection import Session
from engine.postgres.indexes import create_indexes, parent_indexes
from engine.postgres.periods import Period
from engine.postgres.stage_area import move_into

__all__ = [
    "CONNECTION_COLUMN", "ORPHAN_SQL", "TableInfo", "attach_fresh", "bound", "bounds_check", "bounds_constraint",
    "child_for", "child_name", "create_table", "describe", "ensure_merge_index", "ensure_partitions", "split_table",
    "standalone_child_sql",
]

CONNECTION_COLUMN = "connection_id"
#: a renamed column's comment keeps its source name, so later loads map the source name to it
_SOURCE_NAME = "source name: "

#: true when ``$1`` is a staged child that was never attached (params: name, name, its bounds constraint)
ORPHAN_SQL = ("SELECT NOT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass($1)) AND EXISTS "
              "(SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass($2) AND conname = $3)")


def split_table(name: str) -> tuple[str, str]:
    """``"s.t" -> ("s", "t")``; no schema means ``public``."""
    schema, _, table = name.rpartition(".")
    return (schema or "public"), table


@dataclass
class TableInfo:
    """What we know about an existing (or just created) target table."""

    name: str
    columns: dict[str, str]
    time_column: str | None
    granularity: str
    hash_partitions: int
    children: set[str] = field(default_factory=set)
    #: source column name -> table column, for columns whose name was normalised (kept in column comments)
    source_names: dict[str, str] = field(default_factory=dict)
    #: the table's own indexes as ``USING ...`` definitions, repeated on each new child so that attaching it
    #: adopts them (:func:`engine.postgres.indexes.parent_indexes`)
    indexes: list[str] = field(default_factory=list)


def _literal(text: str) -> str:
    """A SQL string literal (for DDL, where parameters are not allowed)."""
    return "'" + text.replace("'", "''").replace("\x00", "") + "'"


def bound(day: dt.date | None, pg: str) -> str:
    """A partition bound (or ``CHECK`` bound) for a column of type ``pg``: dates, naive or UTC timestamps."""
    if day is None:
        return "MAXVALUE"
    if pg == "date":
        return f"'{day.isoformat()}'"
    if pg.startswith("timestamp with time zone"):
        return f"'{day.isoformat()} 00:00:00+00'"
    return f"'{day.isoformat()} 00:00:00'"


def bounds_constraint(child: str) -> str:
    """Name of the ``CHECK`` that states a staged child's range (dropped once it is attached)."""
    return shorten(f"{child}_bounds")


def bounds_check(time_column: str, period: Period, time_type: str) -> str:
    """The ``CHECK`` expression stating that a child's rows lie in ``period``."""
    t = quote_ident(time_column)
    lo = f"{t} >= {bound(period.start, time_type)}"
    return f"{lo} AND {t} < {bound(period.end, time_type)}" if period.end is not None else lo


def _merge_index_name(table: str) -> str:
    return shorten(f"{split_table(table)[1]}_merge_key")


def describe(session: Session, table: str, *, conn: Any = None) -> TableInfo | None:
    """Columns, partitioning and children of ``table``, or None when it does not exist."""
    conn = conn or session.ddl
    rows = session.run(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), col_description(a.attrelid, a.attnum) "
        "FROM pg_attribute a "
        "WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        [qualified(table)], conn=conn)
    if not rows:
        return None
    source_names = {str(c)[len(_SOURCE_NAME):]: n for n, _, c in rows if c and str(c).startswith(_SOURCE_NAME)}
    layout = meta.dataset_layout(session, table, conn=conn)
    time_column, granularity, hash_partitions = layout or (None, "month", 0)
    if layout is None:  # a table this engine did not create: read its partition key
        keydef = session.run("SELECT pg_get_partkeydef(to_regclass($1))", [qualified(table)], conn=conn)
        m = re.match(r'^RANGE \("?([^")]+)"?\)$', (keydef[0][0] or "") if keydef else "")
        time_column = m.group(1) if m else None
    children = {r[0] for r in session.run(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass($1)", [qualified(table)], conn=conn)}
    return TableInfo(name=table, columns={n: t for n, t, _ in rows}, time_column=time_column,
                     granularity=granularity, hash_partitions=int(hash_partitions or 0), children=children,
                     source_names=source_names, indexes=parent_indexes(session, table, conn=conn))


def _comment(session: Session, table: str, column: str, original: str, conn: Any) -> None:
    session.run(f"COMMENT ON COLUMN {qualified(table)}.{quote_ident(column)} IS "
                f"{_literal(_SOURCE_NAME + original)}", conn=conn)


def _ensure_schema(session: Session, schema: str, conn: Any) -> None:
    """``--into sales.orders`` creates schema ``sales`` when it is missing, as users expect. Only then: ``CREATE
    SCHEMA IF NOT EXISTS`` needs the CREATE privilege on the database even when the schema is there."""
    if not session.run("SELECT to_regnamespace($1) IS NOT NULL", [quote_ident(schema)], conn=conn)[0][0]:
        session.run(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}", conn=conn)


def create_table(session: Session, table: str, columns: Sequence[tuple[str, str]], *, time_column: str,
                 granularity: str, hash_partitions: int, comments: dict[str, str], indexes: Sequence[IndexSpec],
                 conn: Any = None, defer_indexes: bool = False) -> TableInfo:
    """A range-partitioned table (on ``time_column``) with its indexes (unless deferred until its rows are in)
    and dataset record."""
    conn = conn or session.ddl
    cols = ",\n  ".join(
        f"{quote_ident(n)} {t}{' NOT NULL' if n in (CONNECTION_COLUMN, time_column) else ''}" for n, t in columns)
    session.run("SELECT pg_advisory_xact_lock(hashtext($1))", [f"table:{table}"], conn=conn)
    _ensure_schema(session, split_table(table)[0], conn)
    session.run(f"CREATE TABLE IF NOT EXISTS {qualified(table)} (\n  {cols}\n) "
                f"PARTITION BY RANGE ({quote_ident(time_column)})", conn=conn)
    for column, original in comments.items():
        _comment(session, table, column, original, conn)
    if not defer_indexes:
        create_indexes(session, table, indexes, [n for n, _ in columns], conn=conn)
    meta.record_dataset(session, table, time_column=time_column, granularity=granularity,
                        hash_partitions=hash_partitions, conn=conn)
    if conn is session.ddl:
        session.commit(session.ddl)
    return TableInfo(name=table, columns=dict(columns), time_column=time_column, granularity=granularity,
                     hash_partitions=hash_partitions, indexes=[spec.definition() for spec in indexes])


def ensure_merge_index(session: Session, info: TableInfo, identity: Sequence[str]) -> list[str]:
    """The unique index ``INSERT ... ON CONFLICT`` needs: a row's identity (connection and keys) plus the
    partition column, which PostgreSQL requires in every unique index of a partitioned table."""
    assert info.time_column is not None
    cols = [*identity, *([] if info.time_column in identity else [info.time_column])]
    name = _merge_index_name(info.name)
    try:
        session.run(f"CREATE UNIQUE INDEX IF NOT EXISTS {quote_ident(name)} ON {qualified(info.name)} "
                    f"({', '.join(quote_ident(c) for c in cols)})", conn=session.ddl)
    except SinkError as exc:
        if getattr(exc.__cause__, "sqlstate", None) != "23505":  # unique_violation: rows already repeat a key
            raise
        raise _duplicate_keys(info.name, cols, str(exc)) from exc
    session.commit(session.ddl)
    return cols


def _duplicate_keys(table: str, cols: Sequence[str], message: str) -> SinkError:
    """Why a merge cannot start: the table already holds rows sharing a key (loaded by append), so the unique
    index ``ON CONFLICT`` needs cannot be built."""
    found = re.search(r"Key \((.*?)\)=\((.*?)\) is duplicated", message)
    example = f", e.g. ({found.group(2)})" if found else ""
    return SinkError(f"merge into {table}: the table already holds several rows with the same "
                     f"({', '.join(cols)}){example}, so the unique index merge needs cannot be built; remove "
                     "the repeated rows (or reload the table with --mode replace) and re-run")


def add_column(session: Session, table: str, column: str, pg: str, comment: str | None, *,
               conn: Any = None) -> None:
    """Schema drift: a new source column becomes a new nullable table column."""
    conn = conn or session.ddl
    session.run(f"ALTER TABLE {qualified(table)} ADD COLUMN IF NOT EXISTS {quote_ident(column)} {pg}", conn=conn)
    if comment:
        _comment(session, table, column, comment, conn)
    if conn is session.ddl:
        session.commit(session.ddl)


def widen_column(session: Session, table: str, column: str, pg: str, *, conn: Any = None) -> None:
    """Schema drift: a safe widening (int -> bigint, int -> double, date -> timestamp...)."""
    conn = conn or session.ddl
    session.run(f"ALTER TABLE {qualified(table)} ALTER COLUMN {quote_ident(column)} TYPE {pg}", conn=conn)
    if conn is session.ddl:
        session.commit(session.ddl)


def standalone_child_sql(parent: str, schema: str, child: str, hash_partitions: int, *,
                         check: tuple[str, str] | None = None) -> list[str]:
    """The statements that make a child not yet attached: LIKE the (qualified) parent, with its hash
    sub-partitions by connection when the table has them, and optionally a named ``CHECK``."""
    qchild = f"{quote_ident(schema)}.{quote_ident(child)}"
    constraint = f", CONSTRAINT {quote_ident(check[0])} CHECK ({check[1]})" if check else ""
    by_hash = f" PARTITION BY HASH ({quote_ident(CONNECTION_COLUMN)})" if hash_partitions else ""
    out = [f"CREATE TABLE IF NOT EXISTS {qchild} (LIKE {parent} INCLUDING DEFAULTS{constraint}){by_hash}"]
    for i in range(hash_partitions):
        sub = quote_ident(shorten(f"{child}_h{i}"))
        out.append(f"CREATE TABLE IF NOT EXISTS {quote_ident(schema)}.{sub} PARTITION OF {qchild} "
                   f"FOR VALUES WITH (MODULUS {hash_partitions}, REMAINDER {i})")
    return out


def _lock_child(session: Session, schema: str, child: str, conn: Any = None) -> None:
    """The advisory lock that makes one loader at a time create, fill and attach a child."""
    session.run("SELECT pg_advisory_xact_lock(hashtext($1))", [f"child:{schema}.{child}"], conn=conn)


def _attached(session: Session, qchild: str, parent: str, conn: Any = None) -> bool:
    return bool(session.run("SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass($1) "
                            "AND inhparent = to_regclass($2)", [qchild, qualified(parent)], conn=conn))


def _drop_orphan(session: Session, qchild: str, child: str, *, conn: Any = None) -> None:
    """Drop a staged child a killed load left unattached (the caller holds the child's advisory lock), so
    its rows are never attached with a later load's."""
    if session.run(ORPHAN_SQL, [qchild, qchild, bounds_constraint(child)], conn=conn)[0][0]:
        session.run(f"DROP TABLE {qchild}", conn=conn)


def ensure_partitions(session: Session, info: TableInfo, periods: Iterable[Period], *,
                      conn: Any = None) -> list[str]:
    """Create and attach missing children for ``periods``; returns every child name touched."""
    conn = conn or session.ddl
    assert info.time_column is not None
    schema, base = split_table(info.name)
    time_type = info.columns[info.time_column]
    names = []
    for period in periods:
        child = child_name(info, period)
        names.append(child)
        if child in info.children:
            continue
        qchild = f"{quote_ident(schema)}.{quote_ident(child)}"
        _lock_child(session, schema, child, conn)
        if not _attached(session, qchild, info.name, conn):
            _drop_orphan(session, qchild, child, conn=conn)
            for stmt in standalone_child_sql(qualified(info.name), schema, child, info.hash_partitions):
                session.run(stmt, conn=conn)
            session.run(f"ALTER TABLE {qualified(info.name)} ATTACH PARTITION {qchild} FOR VALUES FROM "
                        f"({bound(period.start, time_type)}) TO ({bound(period.end, time_type)})", conn=conn)
        if conn is session.ddl:
            session.commit(session.ddl)
        info.children.add(child)
    return names


def child_name(info: TableInfo, period: Period) -> str:
    """The child that holds ``period``: the one an older release named for it if the table has it (children are
    found in the catalog: :func:`describe`), else the readable name new children get."""
    _, base = split_table(info.name)
    legacy = period.legacy_child_name(base)
    return legacy if legacy in info.children else period.child_name(base)


def child_for(session: Session, info: TableInfo, period: Period, fresh: dict[str, Period], *,
              create: bool = True) -> str:
    """The child table that holds ``period`` (``schema.name``, unquoted as COPY takes it).

    A missing child is created *standalone* inside the data transaction and remembered in ``fresh``: its
    rows are COPYed with no index to maintain, and :func:`attach_fresh` attaches it just before commit, which
    builds its indexes in one sorted pass (several times faster than growing them row by row). A crash rolls
    the new child back with the rows. A concurrent loader wanting the same new child waits on the advisory
    lock until this transaction ends, then finds it attached. With ``create=False`` the child is only
    claimed (its helper connection creates it: :mod:`engine.postgres.staging`).
    """
    assert info.time_column is not None
    schema, _ = split_table(info.name)
    child = child_name(info, period)
    qchild = f"{quote_ident(schema)}.{quote_ident(child)}"
    name = f"{schema}.{child}"
    if child in info.children or child in fresh:
        return name
    _lock_child(session, schema, child)
    if _attached(session, qchild, info.name):
        info.children.add(child)
        return name
    fresh[child] = period
    if not create:
        return name
    _drop_orphan(session, qchild, child)
    for stmt in standalone_child_sql(qualified(info.name), schema, child, info.hash_partitions):
        session.run(stmt)
    return name


def attach_fresh(session: Session, info: TableInfo, fresh: dict[str, Period], *, staged_by: str | None = None) -> None:
    """Attach the children created by :func:`child_for` (in the data transaction, before commit). Children
    staged by load ``staged_by`` are first moved from ``biconic_stage`` into the table's schema; they come with
    their indexes and a bounds ``CHECK``, so the attach neither builds nor scans; the check is dropped
    afterwards, leaving them like every other child."""
    assert info.time_column is not None
    schema, _ = split_table(info.name)
    time_type = info.columns[info.time_column]
    for child, period in sorted(fresh.items()):
        qchild = f"{quote_ident(schema)}.{quote_ident(child)}"
        if staged_by is not None:
            move_into(session, staged_by, schema, child, info.hash_partitions)
        session.run(f"ALTER TABLE {qualified(info.name)} ATTACH PARTITION {qchild} FOR VALUES FROM "
                    f"({bound(period.start, time_type)}) TO ({bound(period.end, time_type)})")
        if staged_by is not None:
            session.run(f"ALTER TABLE {qchild} DROP CONSTRAINT IF EXISTS {quote_ident(bounds_constraint(child))}")
        info.children.add(child)
    fresh.clear()


def refuse_foreign_child(schema: str, child: str, parent: str) -> SinkError:
    """The error for a table that has a child's name but is not one of ours."""
    return SinkError(f"{schema}.{child}: a table of that name exists and is not a partition of {parent}; "
                     "rename or drop it, then re-run")
