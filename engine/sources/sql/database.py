"""PostgreSQL and MySQL/MariaDB tables or queries as sources, streamed in bounded chunks.

>>> engine.load("postgresql://app@db:5432/shop?table=orders", into="orders",  # doctest: +SKIP
...             options={"cursor": "updated_at", "partition_on": "id", "partition_num": 4},
...             mode="merge", key="id")
>>> engine.load("mysql://app@db:3306/shop", into="paid",  # doctest: +SKIP
...             options={"query": "SELECT * FROM orders WHERE status = 'paid'"})

Drivers. PostgreSQL is read with ADBC (``cursor.execute`` + ``fetch_record_batch``: the driver runs the
SELECT as a binary ``COPY ... TO STDOUT`` and hands over Arrow batches of about 16 MB as the consumer asks for
them, so the server waits on a slow consumer). MySQL/MariaDB is read in pages of ``batch_rows`` rows along a
key -- ``partition_on``, else the table's one-column numeric or date/time primary key -- each page found with
one ``ORDER BY key LIMIT n`` probe and read by connectorx (Rust, ``return_type="arrow"``). Without a key
(a query without ``partition_on``, a table without such a primary key) PyMySQL's unbuffered cursor streams
the rows (bounded, about 5x slower). connectorx's ``arrow_stream`` is not used: its channel is unbounded, so
with a consumer slower than the server (COPY into PostgreSQL) the whole table ended up buffered in memory
(measured: peak RSS grew with the table). PyMySQL also answers the small questions (catalog, cursor maxima)
and stops a stream abandoned half-way (``KILL QUERY`` on the tagged statement; closing the cursor would read
every remaining row first). Memory: a few driver batches plus the chunk being loaded.

Parallel reads (``partition_on``, a numeric or date/time column, ``partition_num`` readers). PostgreSQL: the
key's ``[min, max]`` is cut into ``partition_num`` ranges (the first also takes NULL keys, both ends open),
each streamed on its own connection at the same time into one bounded queue; the readers share one snapshot
(``pg_export_snapshot``), so the ranges add up to one consistent read. MySQL: each page is cut into
``partition_num`` key ranges that connectorx reads at the same time (each in its own snapshot); NULL keys
are read last, unbuffered. Either way the key should be indexed, and the load is still one partition: one
transaction, one watermark.

Each load is ONE :class:`~engine.sources.base.Partition`. Its fingerprint is a hash of the server (without
password), the table or query and the watermark bounds: re-running a full (non-incremental) load of the same
table is skipped like any re-run; use a ``cursor`` to pick up changes.

Types, column by column (the SELECT is built from the catalog with quoted identifiers; a query's columns
come from a ``LIMIT 0`` probe of it):

=============================  ==========================================  ===========================
source type                    read as                                     PostgreSQL target
=============================  ==========================================  ===========================
PG numeric(p,s), p <= 38       text, then Arrow decimal(p,s); NaN -> null  numeric(p,s)
PG numeric (no p, or p > 38)   exact text                                  text
PG timestamptz / timestamp     ts[us, UTC] / ts[us]; +-infinity -> null    timestamptz / timestamp
PG date, time, bool, bytea     as is                                       date, time, boolean, bytea
PG int2/int4/int8, float4/8    as is                                       smallint/integer/bigint...
PG text, varchar, char(n)      as is                                       text
PG uuid, json, jsonb           ``::text`` (JSON text as stored)            text
PG arrays (any dimension)      ``array_to_json(col)::text``: JSON text     text
PG interval                    microseconds (30-day months) -> duration    interval
PG enum, inet, money, ...      ``::text``                                  text
MySQL decimal(p,s), p <= 38    text, then Arrow decimal(p,s)               numeric(p,s)
MySQL decimal, p > 38          exact text                                  text
MySQL bigint unsigned          decimal(20,0) (never wrapped or clipped)    numeric(20,0)
MySQL other (un)signed ints    as is (unsigned widened by the loader)      smallint/integer/bigint
MySQL tinyint(1) / boolean     an integer (it may hold 2..127)             smallint
MySQL datetime / date          zero dates ('0000-00-00...') -> null        timestamp / date
MySQL timestamp                read in UTC, zero dates -> null             timestamptz
MySQL time                     microseconds -> duration (may pass 24h)     interval
MySQL enum, set, json, text    text                                        text
MySQL blob / binary            binary                                      bytea
MySQL bit(1) / bit(n)          boolean / integer                           boolean / bigint
MySQL geometry types           ``ST_AsText``: WKT text                     text
=============================  ==========================================  ===========================

Anything else is cast to text in SQL. ``scan()`` is the whole read as a lazy frame (a Polars IO source:
nothing runs until it is collected, and a ``head`` stops the read early); loads use ``chunks()``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import decimal
import hashlib
import itertools
import math
import queue
import re
import threading
import uuid
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from engine.errors import SourceError, SourceUnavailableError, SpecError, first_line
from engine.names import quote_ident
from engine.plan.columns import ROW_COLUMN
from engine.redact import redact, secret_of
from engine.settings import settings
from engine.sources.base import Partition
from engine.sources.chunks import ChunkFactory
from engine.sources.incremental import lag_units
from engine.sources.stream import stream_chunks

__all__ = ["OPTIONS", "DatabaseSource", "Dialect", "open_database"]

#: ``postgresql`` (also ``postgres://``) or ``mysql`` (also ``mariadb://``)
Dialect = Literal["postgresql", "mysql"]

#: option -> what it does (``engine.load(..., options={...})``, a spec's ``source.options``, or the URL query)
OPTIONS: dict[str, str] = {
    "table": "the table to read: NAME or SCHEMA.NAME (or ?table=NAME in the URL)",
    "query": "a SELECT to read instead of a table (its columns must have distinct names)",
    "cursor": "column read incrementally (e.g. updated_at or id): only rows past the stored watermark",
    "lag": "re-read this far behind the watermark: seconds (or 15m, 2h, 1d) for time cursors, units for numbers",
    "partition_on": "numeric or date/time column whose range is split for parallel reads",
    "partition_num": "how many ranges (connections) read at once with partition_on (default 2)",
    "batch_rows": "rows per chunk loaded at a time (default BICONIC_CHUNK_ROWS, 500000)",
}

_PORTS: dict[str, int] = {"postgresql": 5432, "mysql": 3306}
_SCHEMES: dict[str, Dialect] = {"postgresql": "postgresql", "postgres": "postgresql", "mysql": "mysql",
                                "mariadb": "mysql"}
_CONNECT_TIMEOUT = 15
#: Arrow batches waiting between the parallel readers and the consumer, per reader
_QUEUE_PER_READER = 2
#: rows per Arrow batch from PyMySQL's unbuffered cursor
_UNBUFFERED_ROWS = 10_000
Kind = Literal["time", "number", "text", "other"]


class _Run(Protocol):
    """Runs one SQL statement on a catalog session and returns its rows."""

    def __call__(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]: ...


# --- columns ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class _Column:
    """A source column as the catalog (or a probe of the query) describes it."""

    name: str
    #: PostgreSQL ``typname`` (int8, numeric, timestamptz, _int4...) or MySQL ``data_type`` (bigint, datetime...)
    type: str
    precision: int | None = None
    scale: int | None = None
    unsigned: bool = False


@dataclass(frozen=True, kw_only=True)
class _Read:
    """How one column is read: its SELECT expression and the Arrow type the driver's values become."""

    sql: str
    to: pa.DataType | None
    kind: Kind


_PG_TIME = {"date", "timestamp", "timestamptz"}
_PG_NUMBER = {"int2", "int4", "int8", "float4", "float8", "numeric"}
_PG_TEXT = {"text", "varchar", "bpchar"}
#: read as the driver gives them; everything else not handled below is cast to text
_PG_AS_IS = _PG_TIME | _PG_NUMBER | _PG_TEXT | {"bool", "time", "bytea"}


def _decimal_or_text(precision: int | None, scale: int | None) -> pa.DataType:
    if precision is not None and 1 <= precision <= 38 and scale is not None and 0 <= scale <= precision:
        return pa.decimal128(precision, scale)
    return pa.string()


def _pg_read(col: _Column) -> _Read:
    q = quote_ident(col.name)
    t = col.type
    if t.startswith("_"):  # arrays: JSON keeps nesting and NULL elements (ADBC would flatten n-d arrays)
        return _Read(sql=f"array_to_json({q})::text", to=pa.string(), kind="other")
    if t == "numeric":  # ADBC hands numerics over as text: exact, typed below
        return _Read(sql=f"{q}::text", to=_decimal_or_text(col.precision, col.scale), kind="number")
    if t == "interval":
        return _Read(sql=f"(extract(epoch from {q}) * 1000000)::int8", to=pa.duration("us"), kind="other")
    if t == "oid":
        return _Read(sql=f"{q}::int8", to=None, kind="number")
    if t in _PG_TIME:  # +-infinity has no calendar value (Polars cannot even print it): null, like a zero date
        return _Read(sql=f"CASE WHEN isfinite({q}) THEN {q} END", to=None, kind="time")
    if t in _PG_AS_IS:
        kind: Kind = "time" if t in _PG_TIME else "number" if t in _PG_NUMBER else "text" if t in _PG_TEXT \
            else "other"
        return _Read(sql=q, to=None, kind=kind)
    return _Read(sql=f"{q}::text", to=pa.string(), kind="other")


_MY_INTS = {"tinyint", "smallint", "mediumint", "int", "integer", "bigint", "year"}
_MY_TEXT = {"char", "varchar", "tinytext", "text", "mediumtext", "longtext"}
_MY_AS_IS = _MY_TEXT | {"float", "double", "real", "enum", "set", "json", "binary", "varbinary", "tinyblob",
                        "blob", "mediumblob", "longblob"}
_MY_GEOMETRY = {"geometry", "point", "linestring", "polygon", "multipoint", "multilinestring", "multipolygon",
                "geometrycollection", "geomcollection"}


def _my_quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _my_read(col: _Column) -> _Read:
    q = _my_quote(col.name)
    t = col.type
    if t in _MY_INTS:
        return _Read(sql=q, to=pa.decimal128(20, 0) if t == "bigint" and col.unsigned else None, kind="number")
    if t in ("decimal", "numeric"):  # connectorx would force decimal(38,10), and fail past scale 10
        return _Read(sql=f"CAST({q} AS CHAR)", to=_decimal_or_text(col.precision, col.scale), kind="number")
    if t in ("date", "datetime", "timestamp"):
        # zero dates ('0000-00-00', '2024-00-15') have no calendar value: connectorx would panic on them
        sql = f"CASE WHEN MONTH({q}) = 0 OR DAYOFMONTH({q}) = 0 THEN NULL ELSE {q} END"
        # TIMESTAMP is stored in UTC and every session here runs in UTC
        return _Read(sql=sql, to=pa.timestamp("us", "UTC") if t == "timestamp" else None, kind="time")
    if t == "time":  # an elapsed time (-838:59:59 .. 838:59:59), not a time of day
        return _Read(sql=f"CAST(TIME_TO_SEC({q}) * 1000000 AS SIGNED)", to=pa.duration("us"), kind="other")
    if t == "bit":
        to = pa.bool_() if col.precision == 1 else pa.int64() if (col.precision or 64) < 64 else pa.decimal128(20, 0)
        return _Read(sql=f"CAST({q} AS UNSIGNED)", to=to, kind="other")
    if t in _MY_GEOMETRY:
        return _Read(sql=f"ST_AsText({q})", to=pa.string(), kind="other")
    if t in _MY_AS_IS:
        kind: Kind = "number" if t in ("float", "double", "real") else "text" if t in _MY_TEXT else "other"
        return _Read(sql=q, to=None, kind=kind)
    return _Read(sql=f"CAST({q} AS CHAR)", to=pa.string(), kind="other")


#: MySQL protocol type codes (a query's probe) -> catalog type names
_MY_CODES: dict[int, str] = {
    0: "decimal", 246: "decimal", 1: "tinyint", 2: "smallint", 3: "int", 8: "bigint", 9: "mediumint", 4: "float",
    5: "double", 6: "null", 7: "timestamp", 10: "date", 11: "time", 12: "datetime", 13: "year", 14: "date",
    15: "varchar", 16: "bit", 245: "json", 247: "enum", 248: "set", 249: "blob", 250: "blob", 251: "blob",
    252: "blob", 253: "varchar", 254: "char", 255: "geometry",
}

_NOT_A_NUMBER = r"(?i)^\s*[+-]?(nan|inf|infinity)\s*$"


def _fix(arr: pa.Array, to: pa.DataType | None) -> pa.Array:
    """A driver's column as the mapped Arrow type (see the module's table)."""
    if isinstance(arr.type, pa.BaseExtensionType):
        arr = arr.storage
    if to is None:
        if arr.type == pa.uint64():  # above 2**63-1 a bigint would wrap: numeric(20,0) holds every value
            return arr.cast(pa.decimal128(20, 0))
        return arr
    if arr.type == to:
        return arr
    if pa.types.is_decimal(to) and pa.types.is_string(arr.type):
        arr = pc.if_else(pc.match_substring_regex(arr, _NOT_A_NUMBER), pa.scalar(None, arr.type), arr)
    if pa.types.is_boolean(to) and pa.types.is_integer(arr.type):
        return pc.not_equal(arr, 0)
    return arr.cast(to)


# --- watermark values -------------------------------------------------------------------------------------


def _mark_text(value: Any) -> str:
    """A cursor value as watermark text: ISO 8601 for times (with the offset when the column has a time zone),
    decimal text for numbers."""
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, float):
        return repr(value)
    return str(value)


# --- the source -------------------------------------------------------------------------------------------
@dataclass
class _Described:
    """The relation read and its columns, found once per source (shared by its watermark copies)."""

    relation: str
    columns: list[_Column]
    reads: dict[str, _Read]
    size_bytes: int
    #: a table's one-column primary key (MySQL pages along it), if any
    primary_key: str | None = None
    #: the columns that may hold NULL (None: unknown, as for a query)
    nullable: set[str] | None = None


@dataclass(frozen=True, kw_only=True)
class DatabaseSource:
    """A table or query of a PostgreSQL or MySQL/MariaDB database, read as one partition.

    >>> DatabaseSource(url="postgresql://app@db:5432/shop", dialect="postgresql", table="orders",  # doctest: +SKIP
    ...                cursor="updated_at")
    """

    #: the connection URL (options removed), password included: never printed (see :attr:`label`)
    url: str = field(repr=False)
    dialect: Dialect
    table: str | None = None
    query: str | None = None
    cursor: str | None = None
    lag: float = 0.0
    partition_on: str | None = None
    partition_num: int = 2
    batch_rows: int | None = None
    #: set by :meth:`with_watermark`: (stored watermark, high mark); high None = nothing to read. None = all rows
    bounds: tuple[str | None, str | None] | None = None
    _cache: dict[str, _Described] = field(default_factory=dict, repr=False, compare=False)

    # --- identity -----------------------------------------------------------------------------------------
    @property
    def server(self) -> str:
        """The database as messages show it: ``postgresql://app@db:5432/shop`` (no password, no options)."""
        parts = urlsplit(self.url)
        user = unquote(parts.username) + "@" if parts.username else ""
        host = parts.hostname or "localhost"
        return f"{self.dialect}://{user}{host}:{parts.port or _PORTS[self.dialect]}{parts.path or '/'}"

    @property
    def label(self) -> str:
        """The read as logs and reports show it: ``postgresql://app@db:5432/shop?table=orders``."""
        if self.table is not None:
            return f"{self.server}?table={self.table}"
        return f"{self.server}?query={self._query_hash()}"

    def _query_hash(self) -> str:
        return hashlib.sha256((self.query or "").encode()).hexdigest()[:16]

    def watermark_key(self) -> str:
        return self.label

    # --- errors -------------------------------------------------------------------------------------------
    def _scrub(self, text: str) -> str:
        secret = secret_of(self.url)
        for s in {secret, unquote(secret)} if secret else set():
            if s:
                text = text.replace(s, "***")
        return redact(text)

    def _error(self, exc: BaseException, doing: str) -> SourceError | SpecError:
        """A driver error as one clean line, password scrubbed; mistakes in the user's query are SpecErrors."""
        text = _driver_message(exc)
        if self.query is not None and _query_mistake(exc, text):
            return SpecError("source.query", self._scrub(f"{text} ({self.server})"))
        lowered = text.lower()
        gone = any(k in lowered for k in ("could not connect", "connection refused", "can't connect", "timed out",
                                          "terminating connection", "server closed the connection",
                                          "lost connection", "gone away", "connection reset"))
        kind = SourceUnavailableError if gone else SourceError  # retried by the job layer
        return kind(self.label, self._scrub(f"{doing}: {text}"))

    # --- connections --------------------------------------------------------------------------------------
    def _driver_url(self) -> str:
        """The URL handed to ADBC/libpq or connectorx."""
        parts = urlsplit(self.url)
        params = parse_qsl(parts.query, keep_blank_values=True)
        if self.dialect == "postgresql" and not any(k == "connect_timeout" for k, _ in params):
            params.append(("connect_timeout", str(_CONNECT_TIMEOUT)))  # libpq waits forever on a silent host
        scheme = "postgresql" if self.dialect == "postgresql" else "mysql"
        return urlunsplit((scheme, parts.netloc, parts.path, urlencode(params), ""))

    def _pg_connect(self, *, autocommit: bool = True) -> Any:
        import adbc_driver_postgresql.dbapi as pgdbapi

        try:
            return pgdbapi.connect(self._driver_url(), autocommit=autocommit)
        except Exception as exc:
            raise self._error(exc, "cannot connect") from None

    def _my_connect(self) -> Any:
        import pymysql

        parts = urlsplit(self.url)
        try:
            return pymysql.connect(
                host=parts.hostname or "localhost", port=parts.port or 3306, user=unquote(parts.username or ""),
                password=unquote(parts.password or ""), database=unquote(parts.path.strip("/")) or None,
                charset="utf8mb4", autocommit=True, connect_timeout=_CONNECT_TIMEOUT,
                init_command="SET time_zone = '+00:00'")
        except Exception as exc:
            raise self._error(exc, "cannot connect") from None

    @contextlib.contextmanager
    def _session(self) -> Iterator[_Run]:
        """A short connection for catalog questions: ``run(sql, params) -> rows``."""
        conn = self._pg_connect() if self.dialect == "postgresql" else self._my_connect()
        try:
            cur = conn.cursor()

            def run(sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
                try:
                    if params is None:
                        cur.execute(sql)
                    elif self.dialect == "postgresql":
                        cur.execute(sql, parameters=list(params))
                    else:
                        cur.execute(sql, tuple(params))
                    return [tuple(r) for r in cur.fetchall()] if cur.description else []
                except Exception as exc:
                    raise self._error(exc, "cannot read") from None

            yield run
        finally:
            with contextlib.suppress(Exception):
                conn.close()

    # --- the catalog --------------------------------------------------------------------------------------
    def _describe(self) -> _Described:
        if "described" not in self._cache:
            if self.table is not None:
                with self._session() as run:
                    described = self._describe_table(run)
            else:
                described = self._describe_query()
            names = [c.name for c in described.columns]
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise SpecError("source.query", f"the query returns several columns named {repeated[0]!r}; "
                                                "give them distinct aliases")
            self._cache["described"] = described
        return self._cache["described"]

    def _schema_and_name(self) -> tuple[str | None, str]:
        assert self.table is not None
        schema, dot, name = self.table.partition(".")
        return (schema, name) if dot else (None, self.table)

    def _describe_table(self, run: _Run) -> _Described:
        schema, name = self._schema_and_name()
        if self.dialect == "postgresql":
            where = "c.table_schema = $2" if schema else "c.table_schema::name = ANY(current_schemas(false))"
            rows = run("SELECT c.table_schema::text, c.table_name::text, c.column_name::text, c.udt_name::text, "
                       "c.numeric_precision::int, c.numeric_scale::int FROM information_schema.columns c "
                       f"WHERE lower(c.table_name) = lower($1) AND {where} "
                       "ORDER BY c.table_name <> $1, array_position(current_schemas(false), c.table_schema::name), "
                       "c.table_schema, c.table_name, c.ordinal_position", [name, *([schema] if schema else [])])
            rows = [r for r in rows if (r[0], r[1]) == (rows[0][0], rows[0][1])] if rows else []
            columns = [_Column(name=r[2], type=r[3], precision=r[4], scale=r[5]) for r in rows]
        else:
            rows = run("SELECT table_schema, table_name, column_name, LOWER(data_type), LOWER(column_type), "
                       "numeric_precision, numeric_scale, column_key, is_nullable FROM information_schema.columns "
                       "WHERE table_schema = COALESCE(%s, DATABASE()) AND LOWER(table_name) = LOWER(%s) "
                       "ORDER BY table_name <> %s, table_name, ordinal_position", [schema, name, name])
            rows = [r for r in rows if r[1] == rows[0][1]] if rows else []
            columns = [_Column(name=r[2], type=r[3], unsigned="unsigned" in (r[4] or ""),
                               precision=None if r[5] is None else int(r[5]),
                               scale=None if r[6] is None else int(r[6])) for r in rows]
        if not rows:
            where = f"schema {schema!r}" if schema else "the search path" if self.dialect == "postgresql" else \
                f"database {unquote(urlsplit(self.url).path.strip('/'))!r}"
            raise SourceError(self.label, f"table {self.table!r} not found in {where} of {self.server}; check the "
                                          "name (SCHEMA.NAME for another schema) and the user's privileges")
        found_schema, found_name = str(rows[0][0]), str(rows[0][1])
        if self.dialect == "postgresql":
            relation = f"{quote_ident(found_schema)}.{quote_ident(found_name)}"
            size = run("SELECT pg_table_size(to_regclass($1))::int8", [relation])[0][0] or 0
        else:
            relation = f"{_my_quote(found_schema)}.{_my_quote(found_name)}"
            size = run("SELECT data_length FROM information_schema.tables WHERE table_schema = %s "
                       "AND table_name = %s", [found_schema, found_name])[0][0] or 0
        read = _pg_read if self.dialect == "postgresql" else _my_read
        described = _Described(relation=relation, columns=columns, reads={c.name: read(c) for c in columns},
                               size_bytes=int(size))
        if self.dialect == "mysql":
            keys = [str(r[2]) for r in rows if r[7] == "PRI"]
            described.primary_key = keys[0] if len(keys) == 1 else None
            described.nullable = {str(r[2]) for r in rows if r[8] == "YES"}
        return described

    def _describe_query(self) -> _Described:
        assert self.query is not None
        relation = f"({self.query}) AS biconic_q"
        if self.dialect == "postgresql":
            conn = self._pg_connect()
            try:
                cur = conn.cursor()
                cur.execute(f"SELECT * FROM {relation} LIMIT 0")
                schema = cur.fetch_arrow_table().schema
            except Exception as exc:
                raise self._error(exc, "cannot read") from None
            finally:
                with contextlib.suppress(Exception):
                    conn.close()
            columns = []
            for f in schema:
                meta = f.metadata or {}
                typname = meta.get(b"POSTGRESQL:type", b"").decode() or "unknown"
                typmod = int(meta.get(b"POSTGRESQL:typmod", b"-1").decode() or -1)
                precision = scale = None
                if typname == "numeric" and typmod >= 4:
                    precision, scale = ((typmod - 4) >> 16) & 0xFFFF, (typmod - 4) & 0xFFFF
                columns.append(_Column(name=f.name, type=typname, precision=precision, scale=scale))
            reads = {c.name: _pg_read(c) for c in columns}
        else:
            import pymysql

            conn = self._my_connect()
            try:
                cur = conn.cursor()
                cur.execute(f"SELECT * FROM {relation} LIMIT 0")
                description = cur.description or ()
            except pymysql.Error as exc:
                raise self._error(exc, "cannot read") from None
            finally:
                with contextlib.suppress(Exception):
                    conn.close()
            columns = []
            for name, code, _display, length, _precision, scale, _null in description:
                typ = _MY_CODES.get(int(code), "unknown")
                precision = None
                if typ == "decimal":  # the display length counts the point (and a sign): never too narrow
                    precision = int(length or 0) - (1 if scale else 0)
                elif typ == "bit":
                    precision = int(length or 64)
                columns.append(_Column(name=str(name), type=typ, precision=precision, scale=scale))
            reads = {c.name: _my_read(c) for c in columns}
        return _Described(relation=relation, columns=columns, reads=reads, size_bytes=0)

    def _aware(self, col: _Column) -> bool:
        """Whether the column's times are instants (PostgreSQL timestamptz, MySQL TIMESTAMP: read in UTC)."""
        return col.type == "timestamptz" or (self.dialect == "mysql" and col.type == "timestamp")

    def _column(self, name: str, option: str) -> tuple[_Column, _Read]:
        from engine.plan.frame import did_you_mean

        described = self._describe()
        for col in described.columns:
            if col.name == name:
                return col, described.reads[name]
        raise SpecError(f"source.{option}", f"column {name!r} is not in {self.label}"
                                            f"{did_you_mean(name, [c.name for c in described.columns])}")

    # --- SQL ----------------------------------------------------------------------------------------------
    def _quote(self, name: str) -> str:
        return quote_ident(name) if self.dialect == "postgresql" else _my_quote(name)

    def _literal(self, value: Any, col: _Column, read: _Read) -> str:
        """A typed SQL literal for a cursor or partition-key value (ours, parsed and re-rendered: no user text
        reaches the SQL unchecked)."""
        if read.kind == "time":
            if self.dialect == "postgresql":
                return f"'{_mark_text(value)}'::{col.type}"
            if isinstance(value, dt.datetime):
                if value.tzinfo is not None:
                    value = value.astimezone(dt.UTC).replace(tzinfo=None)
                return f"CAST('{value.strftime('%Y-%m-%d %H:%M:%S.%f')}' AS DATETIME(6))"
            return f"CAST('{value.isoformat()}' AS DATE)"
        if read.kind == "number":
            number = decimal.Decimal(value) if not isinstance(value, float) else decimal.Decimal(repr(value))
            if not number.is_finite():
                raise SpecError("source.cursor", f"{value!r} is not a usable number")
            plain = format(number, "f")
            return f"'{plain}'::{col.type}" if self.dialect == "postgresql" else plain
        text = str(value)
        if self.dialect == "postgresql":
            return "E'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'" if "\\" in text else \
                "'" + text.replace("'", "''") + "'"
        return f"CONVERT(X'{text.encode().hex()}' USING utf8mb4)"

    def _parse_mark(self, text: str, col: _Column, read: _Read) -> Any:
        """Watermark text back to a value of the cursor's type."""
        try:
            if read.kind == "time":
                if col.type == "date":
                    return dt.datetime.fromisoformat(text).date() if "T" in text or " " in text.strip() else \
                        dt.date.fromisoformat(text.strip())
                value = dt.datetime.fromisoformat(text.strip())
                if self._aware(col):
                    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
                return value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo is not None else value
            if read.kind == "number":
                number = decimal.Decimal(text.strip())
                if not number.is_finite():
                    raise ValueError("not a finite number")
                return number
            return text
        except (ValueError, ArithmeticError) as exc:
            raise SpecError("source.cursor", f"the stored watermark {text!r} does not fit the cursor "
                                             f"{col.name!r} ({col.type}): {first_line(exc)}") from None

    def _minus_lag(self, value: Any, col: _Column, read: _Read) -> Any:
        if not self.lag:
            return value
        if isinstance(value, dt.datetime):
            return value - dt.timedelta(seconds=self.lag)
        if isinstance(value, dt.date):
            return value - dt.timedelta(days=math.ceil(self.lag / 86400))
        if isinstance(value, decimal.Decimal):
            start = value - decimal.Decimal(repr(self.lag))
            # an integer column: c > 41.5 is c > 41
            return start.to_integral_value(rounding=decimal.ROUND_FLOOR) if _integral(col) else start
        raise SpecError("source.lag", f"a lag needs a number or date/time cursor; {col.name!r} is {col.type}")

    def _window(self) -> str | None:
        """The incremental condition of a :meth:`with_watermark` copy (None: every row)."""
        if self.bounds is None or self.cursor is None:
            return None
        low, high = self.bounds
        if high is None:
            return "1 = 0"
        col, read = self._column(self.cursor, "cursor")
        c = self._quote(col.name)
        upper = f"{c} <= {self._literal(self._parse_mark(high, col, read), col, read)}"
        if low is None:  # the first run takes the rows without a cursor value too (they are never seen again)
            return f"({upper} OR {c} IS NULL)"
        start = self._minus_lag(self._parse_mark(low, col, read), col, read)
        return f"{c} > {self._literal(start, col, read)} AND {upper}"

    def _select(self, columns: Sequence[str] | None, where: Sequence[str]) -> str:
        described = self._describe()
        names = [c.name for c in described.columns] if columns is None else list(columns)
        for name in names:
            if name not in described.reads:
                self._column(name, "columns")
        exprs = ", ".join(f"{described.reads[n].sql} AS {self._quote(n)}" for n in names)
        conditions = " AND ".join(f"({w})" for w in where)
        return f"SELECT {exprs} FROM {described.relation}" + (f" WHERE {conditions}" if conditions else "")

    def _queries(self, columns: Sequence[str] | None, *, empty: bool = False) -> list[str]:
        """PostgreSQL's SELECTs: one, or one per key range with ``partition_on`` (read at the same time)."""
        window = self._window()
        base = [w for w in (window, "1 = 0" if empty else None) if w]
        if self.partition_on is None or empty or self.partition_num < 2 or window == "1 = 0":
            return [self._select(columns, base)]
        return [self._select(columns, [*base, r]) for r in self._ranges(window)]

    def _key(self, name: str) -> tuple[_Column, _Read]:
        col, read = self._column(name, "partition_on")
        if read.kind not in ("time", "number"):
            raise SpecError("source.partition_on", f"column {col.name!r} is {col.type}; partition on a numeric "
                                                   "or date/time column")
        return col, read

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
        pieces = self._split(_typed(lo, read), _typed(hi, read), col, read)
        if len(pieces) > 1:
            pieces[0] = f"{pieces[0]} OR {k} IS NULL"
        return pieces

    def _split(self, lo: Any, hi: Any, col: _Column, read: _Read) -> list[str]:
        """``partition_num`` conditions of about equal key width covering every key (open at both ends)."""
        n = self.partition_num
        if lo is None or hi is None or not lo < hi or n < 2:
            return ["1 = 1"]
        cuts: list[Any] = []
        for i in range(1, n):
            if isinstance(lo, dt.datetime):
                cut: Any = lo + (hi - lo) * i / n
            elif isinstance(lo, dt.date):
                cut = lo + dt.timedelta(days=(hi - lo).days * i // n)
            elif _integral(col):
                cut = lo + (hi - lo) * i // n
            else:
                cut = lo + (hi - lo) * i / n
            if cut > lo and (not cuts or cut > cuts[-1]):
                cuts.append(cut)
        if not cuts:
            return ["1 = 1"]
        k = self._quote(col.name)
        lits = [self._literal(c, col, read) for c in cuts]
        return [f"{k} < {lits[0]}", *(f"{k} >= {a} AND {k} < {b}" for a, b in itertools.pairwise(lits)),
                f"{k} >= {lits[-1]}"]

    # --- streaming ----------------------------------------------------------------------------------------
    def _stream(self, columns: Sequence[str] | None = None, *, empty: bool = False) -> Iterator[pa.RecordBatch]:
        """The read as converted Arrow batches; at least one (empty when there are no rows), so the schema is
        always known."""
        described = self._describe()
        if self.dialect == "postgresql":
            raw = self._pg_stream(self._queries(columns, empty=empty))
        else:
            raw = self._my_stream(columns, empty=empty)
        names = [c.name for c in described.columns] if columns is None else list(columns)
        reads = [described.reads[n] for n in names]
        for batch in raw:
            arrays = [_fix(batch.column(i), r.to) for i, r in enumerate(reads)]
            yield pa.RecordBatch.from_arrays(arrays, names=names)

    def _pg_stream(self, queries: list[str]) -> Iterator[pa.RecordBatch]:
        if len(queries) == 1:
            conn = self._pg_connect()
            cur = None
            done = False
            try:
                cur = conn.cursor()
                try:
                    cur.execute(queries[0])
                    reader = cur.fetch_record_batch()
                    seen = False
                    for batch in reader:
                        seen = True
                        yield batch
                    if not seen:
                        yield _empty(reader.schema)
                    done = True
                except Exception as exc:
                    raise self._error(exc, "read failed") from None
            finally:
                if not done and cur is not None:  # abandoned half-way: stop the server sending the rest
                    with contextlib.suppress(Exception):
                        cur.adbc_cancel()
                with contextlib.suppress(Exception):
                    conn.close()
            return
        yield from self._pg_parallel(queries)

    def _pg_parallel(self, queries: list[str]) -> Iterator[pa.RecordBatch]:
        """Each range on its own connection, all in the lead connection's snapshot, merged through a bounded
        queue (memory: a few batches per reader)."""
        lead = self._pg_connect(autocommit=False)
        snapshot = None
        try:
            cur = lead.cursor()
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cur.execute("SELECT pg_export_snapshot()")
            snapshot = str(cur.fetchone()[0])
        except Exception:  # e.g. a hot standby of an old server: ranges read in their own snapshots
            snapshot = None
        out: queue.Queue[Any] = queue.Queue(maxsize=_QUEUE_PER_READER * len(queries))
        stop = threading.Event()
        cursors: list[Any] = []
        finished = object()

        def put(item: Any) -> bool:
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.2)
                    return True
                except queue.Full:
                    continue
            return False

        def work(sql: str) -> None:
            conn = None
            try:
                conn = self._pg_connect(autocommit=snapshot is None)
                wcur = conn.cursor()
                cursors.append(wcur)
                if snapshot is not None:
                    wcur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    wcur.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
                wcur.execute(sql)
                reader = wcur.fetch_record_batch()
                if not put(reader.schema):
                    return
                for batch in reader:
                    if not put(batch):
                        return
            except BaseException as exc:  # handed to the consumer, raised there
                put(exc)
            finally:
                put(finished)
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()

        threads = [threading.Thread(target=work, args=(q,), daemon=True) for q in queries]
        for t in threads:
            t.start()
        try:
            running = len(threads)
            schema = None
            seen = False
            while running:
                item = out.get()
                if item is finished:
                    running -= 1
                elif isinstance(item, pa.Schema):
                    schema = schema or item
                elif isinstance(item, BaseException):
                    if isinstance(item, (SourceError, SpecError)):
                        raise item
                    raise self._error(item, "read failed") from None
                else:
                    seen = True
                    yield item
            if not seen and schema is not None:
                yield _empty(schema)
        finally:
            stop.set()
            for c in list(cursors):
                with contextlib.suppress(Exception):
                    c.adbc_cancel()
            for t in threads:
                while t.is_alive():
                    with contextlib.suppress(queue.Empty):
                        out.get(timeout=0.1)
            with contextlib.suppress(Exception):
                lead.close()

    def _my_stream(self, columns: Sequence[str] | None, *, empty: bool) -> Iterator[pa.RecordBatch]:
        """MySQL in pages of ``batch_rows`` rows along a key (``partition_on``, else a one-column numeric or
        date/time primary key), each page read by connectorx (its ``partition_num`` key ranges at the same time
        with ``partition_on``); without a key, one unbuffered PyMySQL stream.

        connectorx's own ``arrow_stream`` is not used: its channel is unbounded, so a consumer slower than
        the server (COPY into PostgreSQL) would find the whole table buffered in memory.
        """
        window = self._window()
        base = [w for w in (window, "1 = 0" if empty else None) if w]
        if "1 = 0" in base:
            yield from self._cx_read([self._select(columns, base)])
            return
        key = self._key(self.partition_on) if self.partition_on else self._primary_key()
        if key is None:
            yield from self._my_unbuffered(self._select(columns, base))
            return
        col, read = key
        k = self._quote(col.name)
        rows = self._rows()
        last: Any = None
        seen = False
        with self._session() as run:
            while True:
                cond = [*base, f"{k} IS NOT NULL" if last is None else f"{k} > {self._literal(last, col, read)}"]
                where = " AND ".join(f"({c})" for c in cond)
                # one index range scan finds the page: rows after the last key, bounded by the rows-th key
                first, upper, count = run(f"SELECT MIN(biconic_k), MAX(biconic_k), COUNT(*) FROM (SELECT {k} AS "
                                          f"biconic_k FROM {self._describe().relation} WHERE {where} ORDER BY {k} "
                                          f"LIMIT {rows}) AS biconic_page")[0]
                first, upper = _typed(first, read), _typed(upper, read)
                if not count or upper is None:
                    break
                page = [*cond, f"{k} <= {self._literal(upper, col, read)}"]
                parts = self._split(first, upper, col, read) if self.partition_on else ["1 = 1"]
                for batch in self._cx_read([self._select(columns, [*page, p]) for p in parts]):
                    seen = seen or batch.num_rows > 0
                    yield batch
                last = upper
        if self._describe().nullable is None or col.name in (self._describe().nullable or ()):
            for batch in self._my_unbuffered(self._select(columns, [*base, f"{k} IS NULL"]), quiet=seen):
                seen = True
                yield batch
        if not seen:
            yield from self._cx_read([self._select(columns, [*base, "1 = 0"])])

    def _primary_key(self) -> tuple[_Column, _Read] | None:
        described = self._describe()
        if described.primary_key is None:
            return None
        col, read = self._column(described.primary_key, "table")
        return (col, read) if read.kind in ("time", "number") else None

    def _cx_read(self, queries: list[str]) -> Iterator[pa.RecordBatch]:
        """Bounded SELECTs through connectorx, read at the same time when there are several."""
        import connectorx as cx

        try:
            table = cx.read_sql(self._driver_url(), queries if len(queries) > 1 else queries[0],
                                return_type="arrow", pre_execution_query=["SET SESSION time_zone = '+00:00'"])
        except BaseException as exc:  # connectorx panics (a BaseException) on a dropped connection
            if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
                raise
            raise self._error(exc, "read failed") from None
        batches = table.to_batches()
        yield from batches if batches else [_empty(table.schema)]

    def _my_unbuffered(self, sql: str, *, quiet: bool = False) -> Iterator[pa.RecordBatch]:
        """One SELECT streamed row by row by the server (PyMySQL's unbuffered cursor), as Arrow batches typed
        like connectorx would type them. Slower than connectorx, but bounded without a key. ``quiet``: yield
        nothing when there are no rows."""
        import pymysql
        import pymysql.cursors

        schema = next(self._cx_read([f"{sql} LIMIT 0"])).schema
        tag = f"biconic:{uuid.uuid4().hex}"
        conn = self._my_connect()
        done = False
        try:
            cur = conn.cursor(pymysql.cursors.SSCursor)
            seen = False
            try:
                cur.execute(f"/* {tag} */ {sql}")
                while rows := cur.fetchmany(min(self._rows(), _UNBUFFERED_ROWS)):
                    seen = True
                    yield _from_rows(rows, schema, self.label)
            except pymysql.Error as exc:
                raise self._error(exc, "read failed") from None
            if not seen and not quiet:
                yield _empty(schema)
            done = True
        finally:
            if not done:  # abandoned half-way: closing would first read every remaining row
                self._my_kill(tag)
            try:
                cur.close()
            except Exception:  # a dead connection: nothing is left to drain, and the __del__s must not retry
                cur.connection = None
                result = getattr(cur, "_result", None)
                if result is not None:
                    result.unbuffered_active = False
            with contextlib.suppress(Exception):
                conn.close()

    def _my_kill(self, tag: str) -> None:
        """Stop the server side of an abandoned read: connectorx would drain the whole result otherwise."""
        with contextlib.suppress(Exception), self._session() as run:
            for (pid,) in run("SELECT id FROM information_schema.processlist WHERE info LIKE %s "
                              "AND id <> CONNECTION_ID()", [f"%{tag}%"]):
                run(f"KILL QUERY {int(pid)}")

    def _rows(self) -> int:
        return self.batch_rows or settings().chunk_rows

    # --- Source -------------------------------------------------------------------------------------------
    def partitions(self) -> list[Partition]:
        described = self._describe()
        text = "\x1f".join([self.label, self.table or self.query or "",
                            *(("", "") if self.bounds is None else (str(self.bounds[0]), str(self.bounds[1])))])
        fingerprint = hashlib.sha256(text.encode()).hexdigest()[:32]
        size = described.size_bytes if self.bounds is None else 0
        return [Partition(key=self.label, label=self.label, fingerprint=fingerprint, size_bytes=size)]

    def chunks(self, partition: Partition) -> Generator[ChunkFactory, None, None]:
        """Chunks of about ``batch_rows`` rows, each materialised only while it is loaded."""
        yield from stream_chunks(self._stream(), rows=self._rows())

    def read(self, partition: Partition, *, columns: list[str] | None = None) -> pa.RecordBatchReader:
        batches = self._stream(columns)
        first = next(batches)
        return pa.RecordBatchReader.from_batches(first.schema, itertools.chain([first], batches))

    def schema(self) -> pa.Schema:
        return next(self._stream(empty=True)).schema

    def scan(self, partition: Partition) -> pl.LazyFrame:
        """The whole read as a lazy frame: the query runs when it is collected (in batches), projections go
        into the SELECT and ``head(n)`` stops the read after n rows."""
        from polars.io.plugins import register_io_source

        schema = pl.from_arrow(self.schema().empty_table()).schema  # type: ignore[union-attr]

        def batches(with_columns: list[str] | None, predicate: pl.Expr | None, n_rows: int | None,
                    _batch_size: int | None) -> Iterator[pl.DataFrame]:
            left = n_rows
            for batch in self._stream(with_columns):
                df = pl.from_arrow(batch)
                assert isinstance(df, pl.DataFrame)
                if predicate is not None:
                    df = df.filter(predicate)
                if left is not None:
                    df = df.head(left)
                    left -= df.height
                yield df
                if left is not None and left <= 0:
                    return

        frame = register_io_source(batches, schema=schema, explain_name="database", explain_detail=self.label)
        return frame.with_row_index(ROW_COLUMN, offset=1)

    # --- IncrementalSource --------------------------------------------------------------------------------
    def with_watermark(self, low: str | None) -> DatabaseSource:
        """A copy reading rows with ``low - lag < cursor <= high``, high the cursor's maximum now."""
        if self.cursor is None:
            raise SpecError("source.cursor", "set a cursor column to read incrementally")
        col, read = self._column(self.cursor, "cursor")
        if read.kind not in ("time", "number", "text"):
            raise SpecError("source.cursor", f"column {col.name!r} is {col.type}; use a date/time, number or "
                                             "text column as cursor")
        if self.lag and read.kind == "text":
            raise SpecError("source.lag", f"a lag needs a number or date/time cursor; {col.name!r} is {col.type}")
        c = self._quote(col.name)
        if self.dialect == "postgresql":
            expr = f"max({c}) FILTER (WHERE isfinite({c}))" if read.kind == "time" else \
                f"max({c})::text" if read.kind in ("number", "text") else f"max({c})"
        else:
            expr = f"MAX({c})"
        with self._session() as run:
            high = _typed(run(f"SELECT {expr} FROM {self._describe().relation}")[0][0], read)
        if high is None:  # no row has a cursor value: read nothing, keep the stored watermark
            return dataclasses.replace(self, bounds=(low, None))
        if isinstance(high, dt.datetime) and high.tzinfo is None and self._aware(col):
            high = high.replace(tzinfo=dt.UTC)
        if low is not None:
            start = self._parse_mark(low, col, read)
            if _not_after(high, start):  # nothing new (or the maximum went down): never move the mark back
                return dataclasses.replace(self, bounds=(low, low))
        return dataclasses.replace(self, bounds=(low, _mark_text(high)))

    def high_watermark(self) -> str | None:
        return None if self.bounds is None else self.bounds[1]


def _empty(schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array([], type=f.type) for f in schema], schema=schema)


def _from_rows(rows: Sequence[tuple[Any, ...]], schema: pa.Schema, label: str) -> pa.RecordBatch:
    columns = list(zip(*rows, strict=True))
    arrays = []
    for values, f in zip(columns, schema, strict=True):
        try:
            arrays.append(pa.array(values, type=f.type))
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise SourceError(label, f"column {f.name!r}: a value does not fit {f.type} ({first_line(exc)}); "
                                     "cast the column in a query") from None
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _integral(col: _Column) -> bool:
    """Whether the column holds whole numbers only (range cuts and lagged marks are rounded for it)."""
    return col.type in ("int2", "int4", "int8", "oid") or col.type in _MY_INTS or \
        (col.type in ("numeric", "decimal") and col.scale == 0)


def _typed(value: Any, read: _Read) -> Any:
    """A catalog answer as a comparable Python value (numbers come as text to stay exact)."""
    if value is None:
        return None
    if read.kind == "number":
        if isinstance(value, float):
            return decimal.Decimal(repr(value)) if math.isfinite(value) else None
        try:
            number = decimal.Decimal(str(value))
        except ArithmeticError:
            return None
        return number if number.is_finite() else None
    if read.kind == "time":
        return value if isinstance(value, (dt.datetime, dt.date)) else None  # MySQL zero dates come as text
    return value


def _not_after(high: Any, start: Any) -> bool:
    try:
        return bool(high <= start)
    except TypeError:  # aware vs naive: compare in UTC
        def utc(v: dt.datetime) -> dt.datetime:
            return v.astimezone(dt.UTC).replace(tzinfo=None) if v.tzinfo else v
        return bool(utc(high) <= utc(start))


_ERROR_CODE = re.compile(r"^\((\d+), ['\"](.*)['\"]\)$", re.S)


def _driver_message(exc: BaseException) -> str:
    """The useful line of a driver error: libpq's ``ERROR:`` text, MySQL's message without its code tuple."""
    text = str(exc)
    m = re.search(r"ERROR:\s+(.*)", text)
    if m:
        return m.group(1).strip()[:300]
    m = _ERROR_CODE.match(text.strip())
    if m:
        return m.group(2).strip()[:300]
    m = re.search(r"MySqlError \{ ERROR \d+ \(\w+\): (.*?) \}", text)
    if m:
        return m.group(1).strip()[:300]
    line = first_line(exc)
    line = re.sub(r"^(?:[A-Z_]+: )?(?:\[libpq\] )?(?:Failed to connect: )?", "", line)
    return re.sub(r"\s+", " ", line)


#: SQLSTATEs / MySQL codes that mean "your query is wrong" (syntax, unknown column/table/function)
_QUERY_STATES = ("42601", "42703", "42P01", "42883", "42803", "42804", "42702", "42P10")
_QUERY_CODES = (1064, 1054, 1146, 1052, 1305, 1060, 1248, 1049)


def _query_mistake(exc: BaseException, text: str) -> bool:
    raw = str(exc)
    if any(f"SQLSTATE: {s}" in raw for s in _QUERY_STATES):
        return True
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], int) and args[0] in _QUERY_CODES:
        return True
    return bool(re.search(r"ERROR (1064|1054|1146|1060) ", raw))


# --- opening ----------------------------------------------------------------------------------------------
def _bad(name: str, message: str) -> SpecError:
    return SpecError(f"source.{name}", message)


def _int_option(opts: Mapping[str, Any], name: str, default: int | None, *, least: int) -> int | None:
    value = opts.get(name, default)
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise _bad(name, f"expected a whole number >= {least}, got {value!r}")
    return value


def _name_option(opts: Mapping[str, Any], name: str) -> str | None:
    value = opts.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise _bad(name, f"expected a name, got {value!r}")
    return value.strip()


def open_database(url: str, options: Mapping[str, Any]) -> DatabaseSource:
    """A :class:`DatabaseSource` from ``postgresql://user:pw@host:5432/db?table=NAME`` (or ``mysql://``,
    ``mariadb://``) and options (see :data:`OPTIONS`); other URL parameters (``sslmode``...) go to the driver.

    >>> open_database("postgresql://app@db:5432/shop", {"query": "SELECT * FROM orders"})  # doctest: +SKIP
    """
    opts = dict(options)
    for name in opts:
        if name not in OPTIONS:
            raise _bad(name, f"unknown option for a database source; known: {', '.join(sorted(OPTIONS))}")
    parts = urlsplit(url)
    dialect = _SCHEMES.get(parts.scheme.lower())
    if dialect is None:
        raise SpecError("source.path", f"not a database URL: {redact(url)!r}; use postgresql:// or mysql://")
    params = parse_qsl(parts.query, keep_blank_values=True)
    for key, value in params:
        if key in OPTIONS:
            if key in opts and str(opts[key]) != value:
                raise _bad(key, "given both in the URL and as an option, with different values")
            opts[key] = value
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise SpecError("source.path", f"bad port in {redact(url)!r}") from None
    table, query = _name_option(opts, "table"), opts.get("query")
    if query is not None:
        if not isinstance(query, str) or not query.strip().rstrip(";").strip():
            raise _bad("query", f"expected a SELECT statement, got {query!r}")
        query = query.strip().rstrip(";").strip()
    if table is not None and query is not None:
        raise _bad("query", "read a table or a query, not both")
    if table is None and query is None:
        raise _bad("table", "what to read? add ?table=NAME to the URL, or set the table or query option")
    if dialect == "mysql" and table is not None and "." not in table and not parts.path.strip("/"):
        raise _bad("table", "which database? put it in the URL (mysql://host:3306/DB) or write DB.TABLE")
    if "partition_num" in opts and opts.get("partition_on") is None:
        raise _bad("partition_num", "partition_num needs partition_on (the column whose range is split)")
    driver_query = urlencode([(k, v) for k, v in params if k not in OPTIONS])
    return DatabaseSource(
        url=urlunsplit((parts.scheme, parts.netloc, parts.path, driver_query, "")), dialect=dialect,
        table=table, query=query, cursor=_name_option(opts, "cursor"), lag=lag_units(opts.get("lag", 0)),
        partition_on=_name_option(opts, "partition_on"),
        partition_num=_int_option(opts, "partition_num", 2, least=1) or 2,
        batch_rows=_int_option(opts, "batch_rows", None, least=1),
    )
