"""PostgreSQL tables or queries as sources, read with ADBC and streamed in bounded chunks (key ranges in parallel).

>>> engine.load("postgresql://app@db:5432/shop?table=orders", into="orders",  # doctest: +SKIP
...             options={"cursor": "updated_at", "partition_on": "id", "partition_num": 4},
...             mode="merge", key="id")

Driver: ADBC (``cursor.execute`` + ``fetch_record_batch``: the driver runs the SELECT as a binary ``COPY ... TO
STDOUT`` and hands over Arrow batches of about 16 MB as the consumer asks for them, so the server waits on a slow
consumer). Memory: a few driver batches plus the chunk being loaded.

Parallel reads (``partition_on``, a numeric or date/time column, ``partition_num`` readers): the key's
``[min, max]`` is cut into ``partition_num`` ranges (the first also takes NULL keys, both ends open), each
streamed on its own connection at the same time through one bounded :class:`~engine.handoff.Prefetch`; the
readers share one snapshot (``pg_export_snapshot``), so the ranges add up to one consistent read. The key should
be indexed, and the load is still one partition: one transaction, one watermark.

Types, column by column (the SELECT is built from the catalog with quoted identifiers; a query's columns
come from a ``LIMIT 0`` probe of it):

=============================  ==========================================  ===========================
source type                    read as                                     PostgreSQL target
=============================  ==========================================  ===========================
numeric(p,s), p <= 38          text, then Arrow decimal(p,s); NaN -> null  numeric(p,s)
numeric (no p, or p > 38)      exact text                                  text
timestamptz / timestamp        ts[us, UTC] / ts[us]; +-infinity -> null    timestamptz / timestamp
date, time, bool, bytea        as is                                       date, time, boolean, bytea
int2/int4/int8, float4/8       as is                                       smallint/integer/bigint...
text, varchar, char(n)         as is                                       text
uuid, json, jsonb              ``::text`` (JSON text as stored)            text
arrays (any dimension)         ``array_to_json(col)::text``: JSON text     text
interval                       microseconds (30-day months) -> duration    interval
enum, inet, money, ...         ``::text``                                  text
=============================  ==========================================  ===========================

Anything else is cast to text in SQL.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from engine.errors import SourceError, SpecError
from engine.names import quote_ident
from engine.settings import settings
from engine.sources.sql.base import DatabaseSource, connect_with_retries
from engine.sources.sql.common import (
    OPTIONS,
    Column,
    Described,
    Kind,
    Read,
    Run,
    decimal_or_text,
    driver_message,
    empty_batch,
    mark_text,
    plain_number,
    says_gone,
    typed_value,
)

__all__ = ["OPTIONS", "PostgresSource"]

log = logging.getLogger(__name__)

#: Arrow batches waiting between the parallel readers and the consumer, per reader
_QUEUE_PER_READER = 2

_TIME = {"date", "timestamp", "timestamptz"}
_NUMBER = {"int2", "int4", "int8", "float4", "float8", "numeric"}
_TEXT = {"text", "varchar", "bpchar"}
#: read as the driver gives them; everything else not handled below is cast to text
_AS_IS = _TIME | _NUMBER | _TEXT | {"bool", "time", "bytea"}

#: SQLSTATEs that mean "your query is wrong" (syntax, unknown column/table/function)
_QUERY_STATES = ("42601", "42703", "42P01", "42883", "42803", "42804", "42702", "42P10")
#: SQLSTATEs (besides class 08, connection exceptions) that mean the server went away: admin or crash shutdown
_GONE_STATES = ("57P01", "57P02", "57P03")
#: lock_not_available: the source table was held by another session past the read timeout (worth a retry later)
_LOCK_TIMEOUT = "55P03"


def _read(col: Column) -> Read:
    """How a PostgreSQL column is read (the table in the module docstring)."""
    q = quote_ident(col.name)
    t = col.type
    if t.startswith("_"):  # arrays: JSON keeps nesting and NULL elements (ADBC would flatten n-d arrays)
        return Read(sql=f"array_to_json({q})::text", to=pa.string(), kind="other")
    if t == "numeric":  # ADBC hands numerics over as text: exact, typed below
        return Read(sql=f"{q}::text", to=decimal_or_text(col.precision, col.scale), kind="number")
    if t == "interval":
        return Read(sql=f"(extract(epoch from {q}) * 1000000)::int8", to=pa.duration("us"), kind="other")
    if t == "oid":
        return Read(sql=f"{q}::int8", to=None, kind="number")
    if t in _TIME:  # +-infinity has no calendar value (Polars cannot even print it): null, like a zero date
        return Read(sql=f"CASE WHEN isfinite({q}) THEN {q} END", to=None, kind="time")
    if t in _AS_IS:
        kind: Kind = "time" if t in _TIME else "number" if t in _NUMBER else "text" if t in _TEXT else "other"
        return Read(sql=q, to=None, kind=kind)
    return Read(sql=f"{q}::text", to=pa.string(), kind="other")


def _probed_column(f: pa.Field) -> Column:
    """A query's column from the ADBC field of its ``LIMIT 0`` probe (type name and typmod in its metadata)."""
    meta = f.metadata or {}
    typname = meta.get(b"POSTGRESQL:type", b"").decode() or "unknown"
    typmod = int(meta.get(b"POSTGRESQL:typmod", b"-1").decode() or -1)
    precision = scale = None
    if typname == "numeric" and typmod >= 4:
        precision, scale = ((typmod - 4) >> 16) & 0xFFFF, (typmod - 4) & 0xFFFF
    return Column(name=f.name, type=typname, precision=precision, scale=scale)


def _sqlstate(exc: BaseException) -> str | None:
    """The error's SQLSTATE: the ADBC error's own, else the one its text names."""
    state = getattr(exc, "sqlstate", None)
    if state:
        return str(state)
    m = re.search(r"SQLSTATE: (\w{5})", str(exc))
    return m.group(1) if m else None


def _network_bounds(connect_timeout: float, read_timeout: float) -> dict[str, str]:
    """libpq's own bounds, unless the URL sets them: ``connect_timeout`` (whole seconds; libpq otherwise waits
    forever on a silent host), and TCP keepalives plus ``tcp_user_timeout`` so that a source host that vanishes
    mid-read (a dropped network, a dead machine) is noticed within about the read timeout."""
    read = max(1, math.ceil(read_timeout))
    return {"connect_timeout": str(max(1, math.ceil(connect_timeout))), "keepalives": "1",
            "keepalives_idle": str(min(read // 2 or 1, 300)), "keepalives_interval": str(min(read // 6 or 1, 60)),
            "keepalives_count": "3", "tcp_user_timeout": str(_milliseconds(read))}


def _milliseconds(seconds: float) -> int:
    """``seconds`` as a PostgreSQL/libpq millisecond setting: at least 1 (0 means no limit), at most int4."""
    return min(max(1, int(seconds * 1000)), 2**31 - 1)


def _exported_snapshot(lead: Any) -> str | None:
    """A snapshot the range readers can share (None where the server cannot export one, e.g. an old hot
    standby: the ranges are then read in their own snapshots)."""
    try:
        cur = lead.cursor()
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cur.execute("SELECT pg_export_snapshot()")
        return str(cur.fetchone()[0])
    except Exception:
        return None


@dataclass(frozen=True, kw_only=True)
class PostgresSource(DatabaseSource):
    """A table or query of a PostgreSQL database, read as one partition over ADBC.

    >>> PostgresSource(url="postgresql://app@db:5432/shop", table="orders", cursor="updated_at")  # doctest: +SKIP
    """

    dialect = "postgresql"
    default_port = 5432
    aware_types = frozenset({"timestamptz"})
    integer_types = frozenset({"int2", "int4", "int8", "oid"})

    # --- connections and the catalog ----------------------------------------------------------------------
    def _connect(self, *, autocommit: bool = True) -> Any:
        import adbc_driver_postgresql.dbapi as pgdbapi

        limits = settings()
        url = self._driver_url(**_network_bounds(limits.connect_timeout, limits.read_timeout))

        def open_connection() -> Any:
            try:
                conn = pgdbapi.connect(url, autocommit=autocommit)
            except Exception as exc:
                raise self._error(exc, "cannot connect") from exc
            if "lock_timeout" not in url:  # the URL's own options=-c lock_timeout=... wins
                self._bound_lock_waits(conn, _milliseconds(limits.read_timeout), autocommit=autocommit)
            return conn

        return connect_with_retries(open_connection)

    def _bound_lock_waits(self, conn: Any, milliseconds: int, *, autocommit: bool) -> None:
        """A read queued behind another session's lock on the source table waits at most the read timeout. Best
        effort: a server without the setting (Redshift) reads without it; a lost connection is the connect's."""
        try:
            with conn.cursor() as cur:
                cur.execute(f"SET lock_timeout = {milliseconds}")
        except Exception as exc:
            if self._unavailable(exc, driver_message(exc)):
                with contextlib.suppress(Exception):
                    conn.close()
                raise self._error(exc, "cannot connect") from exc
            log.debug("source %s: lock_timeout not set: %s", self.label, driver_message(exc))
            with contextlib.suppress(Exception):
                conn.rollback()
            return
        if not autocommit:
            conn.commit()

    def _execute(self, cur: Any, sql: str, params: Sequence[Any]) -> None:
        cur.execute(sql, parameters=list(params))

    def _catalog(self, run: Run, schema: str | None, name: str) -> Described:
        where = "c.table_schema = $2" if schema else "c.table_schema::name = ANY(current_schemas(false))"
        rows = run("SELECT c.table_schema::text, c.table_name::text, c.column_name::text, c.udt_name::text, "
                   "c.numeric_precision::int, c.numeric_scale::int FROM information_schema.columns c "
                   f"WHERE lower(c.table_name) = lower($1) AND {where} "
                   "ORDER BY c.table_name <> $1, array_position(current_schemas(false), c.table_schema::name), "
                   "c.table_schema, c.table_name, c.ordinal_position", [name, *([schema] if schema else [])])
        rows = [r for r in rows if (r[0], r[1]) == (rows[0][0], rows[0][1])] if rows else []
        if not rows:
            raise self._not_found(f"schema {schema!r}" if schema else "the search path")
        columns = [Column(name=r[2], type=r[3], precision=r[4], scale=r[5]) for r in rows]
        relation = f"{quote_ident(str(rows[0][0]))}.{quote_ident(str(rows[0][1]))}"
        size = run("SELECT pg_table_size(to_regclass($1))::int8", [relation])[0][0] or 0
        return Described(relation=relation, columns=columns, reads={c.name: _read(c) for c in columns},
                         size_bytes=int(size))

    def _tables(self, run: Run, schema: str | None, pattern: str) -> list[tuple[str, str, int]]:
        where = "n.nspname = $2" if schema else "n.nspname = ANY(current_schemas(false))"
        rows = run("SELECT n.nspname::text, c.relname::text, coalesce(pg_table_size(c.oid), 0)::int8 FROM pg_class c "
                   "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') "
                   f"AND NOT c.relispartition AND c.relname LIKE $1 AND {where}",
                   [pattern, *([schema] if schema else [])])
        return [(str(r[0]), str(r[1]), int(r[2])) for r in rows]

    def _probe(self, relation: str) -> list[Column]:
        conn = self._connect()
        try:
            cur = conn.cursor()
            cur.execute(f"SELECT * FROM {relation} LIMIT 0")
            schema = cur.fetch_arrow_table().schema
        except Exception as exc:
            raise self._error(exc, "cannot read") from exc
        finally:
            with contextlib.suppress(Exception):
                conn.close()
        return [_probed_column(f) for f in schema]

    def _read_of(self, col: Column) -> Read:
        return _read(col)

    # --- SQL ----------------------------------------------------------------------------------------------
    def _quote(self, name: str) -> str:
        return quote_ident(name)

    def _literal(self, value: Any, col: Column, read: Read) -> str:
        if read.kind == "time":
            return f"'{mark_text(value)}'::{col.type}"
        if read.kind == "number":
            return f"'{plain_number(value)}'::{col.type}"
        text = str(value)
        if "\\" in text:
            return "E'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
        return "'" + text.replace("'", "''") + "'"

    def _max_sql(self, quoted: str, read: Read) -> str:
        if read.kind == "time":
            return f"max({quoted}) FILTER (WHERE isfinite({quoted}))"
        return f"max({quoted})::text" if read.kind in ("number", "text") else f"max({quoted})"

    def _queries(self, columns: Sequence[str] | None, *, empty: bool = False) -> list[str]:
        """The SELECTs: one, or one per key range with ``partition_on`` (read at the same time)."""
        window = self._window()
        base = [w for w in (window, "1 = 0" if empty else None) if w]
        if self.partition_on is None or empty or self.partition_num < 2 or window == "1 = 0":
            return [self._select(columns, base)]
        return [self._select(columns, [*base, r]) for r in self._ranges(window)]

    def _ranges(self, window: str | None) -> list[str]:
        """Conditions cutting the key's [min, max] into ``partition_num`` ranges (NULL keys in the first)."""
        assert self.partition_on is not None
        col, read = self._key(self.partition_on)
        k = self._quote(col.name)
        finite = f"isfinite({k})" if read.kind == "time" else None
        conditions = " AND ".join(f"({w})" for w in (window, finite) if w)
        cast = "::text" if read.kind == "number" else ""  # numbers as text stay exact
        with self._session() as run:
            lo, hi = run(f"SELECT min({k}){cast}, max({k}){cast} FROM {self._describe().relation}"
                         + (f" WHERE {conditions}" if conditions else ""))[0]
        pieces = self._split(typed_value(lo, read), typed_value(hi, read), col, read)
        if len(pieces) > 1:
            pieces[0] = f"{pieces[0]} OR {k} IS NULL"
        return pieces

    # --- streaming ----------------------------------------------------------------------------------------
    def _raw(self, columns: Sequence[str] | None, *, empty: bool) -> Iterator[pa.RecordBatch]:
        queries = self._queries(columns, empty=empty)
        return self._one(queries[0]) if len(queries) == 1 else self._parallel(queries)

    def _one(self, sql: str) -> Iterator[pa.RecordBatch]:
        """One SELECT on one connection; abandoned half-way, the server is told to stop sending."""
        conn = self._connect()
        cur = None
        done = False
        try:
            cur = conn.cursor()
            try:
                cur.execute(sql)
                reader = cur.fetch_record_batch()
                seen = False
                for batch in reader:
                    seen = True
                    yield batch
                if not seen:
                    yield empty_batch(reader.schema)
                done = True
            except Exception as exc:
                raise self._error(exc, "read failed") from exc
        finally:
            if not done and cur is not None:
                with contextlib.suppress(Exception):
                    cur.adbc_cancel()
            with contextlib.suppress(Exception):
                conn.close()

    def _parallel(self, queries: list[str]) -> Iterator[pa.RecordBatch]:
        """Each range on its own connection, all in the lead connection's snapshot, merged through one bounded
        hand-off (memory: a few batches per reader)."""
        from engine.handoff import Prefetch

        lead = self._connect(autocommit=False)
        cursors: list[Any] = []
        snapshot = _exported_snapshot(lead)
        ranges: Prefetch[pa.RecordBatch | pa.Schema] = Prefetch(
            *(self._range(sql, snapshot, cursors) for sql in queries), depth=_QUEUE_PER_READER * len(queries),
            name="biconic-pg-range")
        try:
            schema, seen = None, False
            for item in ranges:
                if isinstance(item, pa.Schema):
                    schema = schema or item
                else:
                    seen = True
                    yield item
            if not seen and schema is not None:
                yield empty_batch(schema)
        except (SourceError, SpecError):
            raise
        except Exception as exc:
            raise self._error(exc, "read failed") from exc
        finally:
            for cur in list(cursors):  # wakes the readers blocked in the driver
                with contextlib.suppress(Exception):
                    cur.adbc_cancel()
            ranges.close()
            with contextlib.suppress(Exception):
                lead.close()

    def _range(self, sql: str, snapshot: str | None, cursors: list[Any]) -> Iterator[pa.RecordBatch | pa.Schema]:
        """One range's schema, then its batches (run on a reader thread; its cursor is put in ``cursors``)."""
        conn = self._connect(autocommit=snapshot is None)
        try:
            cur = conn.cursor()
            cursors.append(cur)
            if snapshot is not None:
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                cur.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
            cur.execute(sql)
            reader = cur.fetch_record_batch()
            yield reader.schema
            yield from reader
        finally:
            with contextlib.suppress(Exception):
                conn.close()

    # --- driver errors ------------------------------------------------------------------------------------
    def _unavailable(self, exc: BaseException, text: str) -> bool:
        state = _sqlstate(exc)
        if state is not None:
            return state.startswith("08") or state in _GONE_STATES or state == _LOCK_TIMEOUT
        return says_gone(text)  # libpq's connection failures carry no SQLSTATE

    def _query_mistake(self, exc: BaseException) -> bool:
        return _sqlstate(exc) in _QUERY_STATES
