"""MySQL and MariaDB tables or queries as sources, read in keyed pages by connectorx and streamed in bounded chunks.

>>> engine.load("mysql://app@db:3306/shop", into="paid",  # doctest: +SKIP
...             options={"query": "SELECT * FROM orders WHERE status = 'paid'"})

Drivers. The read goes in pages of ``batch_rows`` rows along a key -- ``partition_on``, else the table's
one-column numeric or date/time primary key -- each page found with one ``ORDER BY key LIMIT n`` probe and read
by connectorx (Rust, ``return_type="arrow"``); with ``partition_on`` each page is cut into ``partition_num`` key
ranges that connectorx reads at the same time (each in its own snapshot), and NULL keys are read last. Without
a key (a query without ``partition_on``, a table without such a primary key) PyMySQL's unbuffered cursor
streams the rows (bounded, about 5x slower). connectorx's ``arrow_stream`` is not used: its channel is
unbounded, so with a consumer slower than the server (COPY into PostgreSQL) the whole table ended up buffered
in memory (measured: peak RSS grew with the table). PyMySQL also answers the small questions (catalog, cursor
maxima) and stops a stream abandoned half-way (``KILL QUERY`` on the tagged statement; closing the cursor would
read every remaining row first). Memory: a few driver batches plus the chunk being loaded. Every session runs
in UTC.

Types, column by column (the SELECT is built from the catalog with quoted identifiers; a query's columns
come from a ``LIMIT 0`` probe of it):

=============================  ==========================================  ===========================
source type                    read as                                     PostgreSQL target
=============================  ==========================================  ===========================
decimal(p,s), p <= 38          text, then Arrow decimal(p,s)               numeric(p,s)
decimal, p > 38                exact text                                  text
bigint unsigned                decimal(20,0) (never wrapped or clipped)    numeric(20,0)
other (un)signed ints          as is (unsigned widened by the loader)      smallint/integer/bigint
tinyint(1) / boolean           an integer (it may hold 2..127)             smallint
datetime / date                zero dates ('0000-00-00...') -> null        timestamp / date
timestamp                      read in UTC, zero dates -> null             timestamptz
time                           microseconds -> duration (may pass 24h)     interval
enum, set, json, text          text                                        text
blob / binary                  binary                                      bytea
bit(1) / bit(n)                boolean / integer                           boolean / bigint
geometry types                 ``ST_AsText``: WKT text                     text
=============================  ==========================================  ===========================

Anything else is cast to text in SQL.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import pyarrow as pa

from engine.errors import SourceError, SpecError, first_line
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
    empty_batch,
    plain_number,
    says_gone,
    typed_value,
)

__all__ = ["OPTIONS", "MySqlSource"]

#: rows per Arrow batch from PyMySQL's unbuffered cursor
_UNBUFFERED_ROWS = 10_000

_INTS = {"tinyint", "smallint", "mediumint", "int", "integer", "bigint", "year"}
_TEXT = {"char", "varchar", "tinytext", "text", "mediumtext", "longtext"}
_AS_IS = _TEXT | {"float", "double", "real", "enum", "set", "json", "binary", "varbinary", "tinyblob", "blob",
                  "mediumblob", "longblob"}
_GEOMETRY = {"geometry", "point", "linestring", "polygon", "multipoint", "multilinestring", "multipolygon",
             "geometrycollection", "geomcollection"}

#: MySQL protocol type codes (a query's probe) -> catalog type names
_CODES: dict[int, str] = {
    0: "decimal", 246: "decimal", 1: "tinyint", 2: "smallint", 3: "int", 8: "bigint", 9: "mediumint", 4: "float",
    5: "double", 6: "null", 7: "timestamp", 10: "date", 11: "time", 12: "datetime", 13: "year", 14: "date",
    15: "varchar", 16: "bit", 245: "json", 247: "enum", 248: "set", 249: "blob", 250: "blob", 251: "blob",
    252: "blob", 253: "varchar", 254: "char", 255: "geometry",
}

#: error codes that mean "your query is wrong" (syntax, unknown column/table/function/database)
_QUERY_CODES = (1064, 1054, 1146, 1052, 1305, 1060, 1248, 1049)
#: error codes that mean the server is unreachable or went away (refused, gone, lost, killed, shutting down)
_GONE_CODES = (2002, 2003, 2006, 2013, 2055, 1927, 1053)


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _read(col: Column) -> Read:
    """How a MySQL/MariaDB column is read (the table in the module docstring)."""
    q = _quote(col.name)
    t = col.type
    if t in _INTS:
        return Read(sql=q, to=pa.decimal128(20, 0) if t == "bigint" and col.unsigned else None, kind="number")
    if t in ("decimal", "numeric"):  # connectorx would force decimal(38,10), and fail past scale 10
        return Read(sql=f"CAST({q} AS CHAR)", to=decimal_or_text(col.precision, col.scale), kind="number")
    if t in ("date", "datetime", "timestamp"):
        # zero dates ('0000-00-00', '2024-00-15') have no calendar value: connectorx would panic on them
        sql = f"CASE WHEN MONTH({q}) = 0 OR DAYOFMONTH({q}) = 0 THEN NULL ELSE {q} END"
        # TIMESTAMP is stored in UTC and every session here runs in UTC
        return Read(sql=sql, to=pa.timestamp("us", "UTC") if t == "timestamp" else None, kind="time")
    if t == "time":  # an elapsed time (-838:59:59 .. 838:59:59), not a time of day
        return Read(sql=f"CAST(TIME_TO_SEC({q}) * 1000000 AS SIGNED)", to=pa.duration("us"), kind="other")
    if t == "bit":
        to = pa.bool_() if col.precision == 1 else pa.int64() if (col.precision or 64) < 64 else pa.decimal128(20, 0)
        return Read(sql=f"CAST({q} AS UNSIGNED)", to=to, kind="other")
    if t in _GEOMETRY:
        return Read(sql=f"ST_AsText({q})", to=pa.string(), kind="other")
    if t in _AS_IS:
        kind: Kind = "number" if t in ("float", "double", "real") else "text" if t in _TEXT else "other"
        return Read(sql=q, to=None, kind=kind)
    return Read(sql=f"CAST({q} AS CHAR)", to=pa.string(), kind="other")


def _probed_column(name: str, code: int, length: int | None, scale: int | None) -> Column:
    """A query's column from the protocol description of its ``LIMIT 0`` probe."""
    typ = _CODES.get(int(code), "unknown")
    precision = None
    if typ == "decimal":  # the display length counts the point (and a sign): never too narrow
        precision = int(length or 0) - (1 if scale else 0)
    elif typ == "bit":
        precision = int(length or 64)
    return Column(name=str(name), type=typ, precision=precision, scale=scale)


def _from_rows(rows: Sequence[tuple[Any, ...]], schema: pa.Schema, label: str) -> pa.RecordBatch:
    columns = list(zip(*rows, strict=True))
    arrays = []
    for values, f in zip(columns, schema, strict=True):
        try:
            arrays.append(pa.array(values, type=f.type))
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise SourceError(label, f"column {f.name!r}: a value does not fit {f.type} ({first_line(exc)}); "
                                     "cast the column in a query") from exc
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _error_code(exc: BaseException) -> int | None:
    """The server's error code: PyMySQL's first argument, or the ``ERROR 1064 (42000)`` connectorx writes."""
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], int):
        return args[0]
    m = re.search(r"ERROR (\d{4}) \(", str(exc))
    return int(m.group(1)) if m else None


@dataclass(frozen=True, kw_only=True)
class MySqlSource(DatabaseSource):
    """A table or query of a MySQL or MariaDB database, read as one partition.

    >>> MySqlSource(url="mysql://app@db:3306/shop", table="orders", cursor="updated_at")  # doctest: +SKIP
    """

    dialect = "mysql"
    default_port = 3306
    #: TIMESTAMP is stored in UTC and read in UTC
    aware_types = frozenset({"timestamp"})
    integer_types = frozenset(_INTS)

    def __post_init__(self) -> None:
        if self.table is not None and "." not in self.table and not urlsplit(self.url).path.strip("/"):
            raise SpecError("source.table", "which database? put it in the URL (mysql://host:3306/DB) or write "
                                            "DB.TABLE")

    # --- connections and the catalog ----------------------------------------------------------------------
    def _connect(self) -> Any:
        import pymysql

        parts = urlsplit(self.url)
        limits = settings()  # PyMySQL waits forever on a server that accepts and never answers, unless told

        def open_connection() -> Any:
            try:
                return pymysql.connect(
                    host=parts.hostname or "localhost", port=parts.port or 3306, user=unquote(parts.username or ""),
                    password=unquote(parts.password or ""), database=unquote(parts.path.strip("/")) or None,
                    charset="utf8mb4", autocommit=True, connect_timeout=limits.connect_timeout,
                    read_timeout=limits.read_timeout, write_timeout=limits.read_timeout,
                    init_command="SET time_zone = '+00:00'")
            except Exception as exc:
                raise self._error(exc, "cannot connect") from exc

        return connect_with_retries(open_connection)

    def _execute(self, cur: Any, sql: str, params: Sequence[Any]) -> None:
        cur.execute(sql, tuple(params))

    def _catalog(self, run: Run, schema: str | None, name: str) -> Described:
        rows = run("SELECT table_schema, table_name, column_name, LOWER(data_type), LOWER(column_type), "
                   "numeric_precision, numeric_scale, column_key, is_nullable FROM information_schema.columns "
                   "WHERE table_schema = COALESCE(%s, DATABASE()) AND LOWER(table_name) = LOWER(%s) "
                   "ORDER BY table_name <> %s, table_name, ordinal_position", [schema, name, name])
        rows = [r for r in rows if r[1] == rows[0][1]] if rows else []
        if not rows:
            database = unquote(urlsplit(self.url).path.strip("/"))
            raise self._not_found(f"schema {schema!r}" if schema else f"database {database!r}")
        columns = [Column(name=r[2], type=r[3], unsigned="unsigned" in (r[4] or ""),
                          precision=None if r[5] is None else int(r[5]), scale=None if r[6] is None else int(r[6]))
                   for r in rows]
        found_schema, found_name = str(rows[0][0]), str(rows[0][1])
        size = run("SELECT data_length FROM information_schema.tables WHERE table_schema = %s "
                   "AND table_name = %s", [found_schema, found_name])[0][0] or 0
        keys = [str(r[2]) for r in rows if r[7] == "PRI"]
        return Described(relation=f"{_quote(found_schema)}.{_quote(found_name)}", columns=columns,
                         reads={c.name: _read(c) for c in columns}, size_bytes=int(size),
                         primary_key=keys[0] if len(keys) == 1 else None,
                         nullable={str(r[2]) for r in rows if r[8] == "YES"})

    def _tables(self, run: Run, schema: str | None, pattern: str) -> list[tuple[str, str, int]]:
        rows = run("SELECT table_schema, table_name, COALESCE(data_length, 0) FROM information_schema.tables "
                   "WHERE table_schema = COALESCE(%s, DATABASE()) AND table_name LIKE %s", [schema, pattern])
        return [(str(r[0]), str(r[1]), int(r[2])) for r in rows]

    def _probe(self, relation: str) -> list[Column]:
        import pymysql

        conn = self._connect()
        try:
            cur = conn.cursor()
            cur.execute(f"SELECT * FROM {relation} LIMIT 0")
            description = cur.description or ()
        except pymysql.Error as exc:
            raise self._error(exc, "cannot read") from exc
        finally:
            with contextlib.suppress(Exception):
                conn.close()
        return [_probed_column(name, code, length, scale)
                for name, code, _display, length, _precision, scale, _null in description]

    def _read_of(self, col: Column) -> Read:
        return _read(col)

    # --- SQL ----------------------------------------------------------------------------------------------
    def _quote(self, name: str) -> str:
        return _quote(name)

    def _literal(self, value: Any, col: Column, read: Read) -> str:
        if read.kind == "time":
            if isinstance(value, dt.datetime):
                if value.tzinfo is not None:
                    value = value.astimezone(dt.UTC).replace(tzinfo=None)
                return f"CAST('{value.strftime('%Y-%m-%d %H:%M:%S.%f')}' AS DATETIME(6))"
            return f"CAST('{value.isoformat()}' AS DATE)"
        if read.kind == "number":
            return plain_number(value)
        return f"CONVERT(X'{str(value).encode().hex()}' USING utf8mb4)"

    def _max_sql(self, quoted: str, read: Read) -> str:
        return f"MAX({quoted})"

    def _primary_key(self) -> tuple[Column, Read] | None:
        described = self._describe()
        if described.primary_key is None:
            return None
        col, read = self._column(described.primary_key, "table")
        return (col, read) if read.kind in ("time", "number") else None

    # --- streaming ----------------------------------------------------------------------------------------
    def _raw(self, columns: Sequence[str] | None, *, empty: bool) -> Iterator[pa.RecordBatch]:
        """Pages along a key (``partition_on``, else a one-column numeric or date/time primary key), then the
        rows whose key is NULL; without a key, one unbuffered stream."""
        window = self._window()
        base = [w for w in (window, "1 = 0" if empty else None) if w]
        if "1 = 0" in base:
            yield from self._cx_read([self._select(columns, base)])
            return
        key = self._key(self.partition_on) if self.partition_on else self._primary_key()
        if key is None:
            yield from self._unbuffered(self._select(columns, base))
            return
        seen = False
        for batch in self._pages(columns, base, key):
            seen = seen or batch.num_rows > 0
            yield batch
        name = key[0].name
        nullable = self._describe().nullable
        if nullable is None or name in nullable:
            for batch in self._unbuffered(self._select(columns, [*base, f"{_quote(name)} IS NULL"]), quiet=seen):
                seen = True
                yield batch
        if not seen:
            yield from self._cx_read([self._select(columns, [*base, "1 = 0"])])

    def _pages(self, columns: Sequence[str] | None, base: list[str],
               key: tuple[Column, Read]) -> Iterator[pa.RecordBatch]:
        """The rows with a key, ``batch_rows`` at a time in key order (each page cut into ``partition_num``
        ranges read at the same time with ``partition_on``)."""
        col, read = key
        k = _quote(col.name)
        last: Any = None
        with self._session() as run:
            while True:
                cond = [*base, f"{k} IS NOT NULL" if last is None else f"{k} > {self._literal(last, col, read)}"]
                where = " AND ".join(f"({c})" for c in cond)
                # one index range scan finds the page: rows after the last key, bounded by the rows-th key
                first, upper, count = run(f"SELECT MIN(biconic_k), MAX(biconic_k), COUNT(*) FROM (SELECT {k} AS "
                                          f"biconic_k FROM {self._describe().relation} WHERE {where} ORDER BY {k} "
                                          f"LIMIT {self._rows()}) AS biconic_page")[0]
                first, upper = typed_value(first, read), typed_value(upper, read)
                if not count or upper is None:
                    return
                page = [*cond, f"{k} <= {self._literal(upper, col, read)}"]
                parts = self._split(first, upper, col, read) if self.partition_on else ["1 = 1"]
                yield from self._cx_read([self._select(columns, [*page, p]) for p in parts])
                last = upper

    def _cx_read(self, queries: list[str]) -> Iterator[pa.RecordBatch]:
        """Bounded SELECTs through connectorx, read at the same time when there are several."""
        import connectorx as cx

        try:
            table = cx.read_sql(self._driver_url(), queries if len(queries) > 1 else queries[0],
                                return_type="arrow", pre_execution_query=["SET SESSION time_zone = '+00:00'"])
        except BaseException as exc:  # connectorx panics (a BaseException) on a dropped connection
            if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
                raise
            raise self._error(exc, "read failed") from exc
        batches = table.to_batches()
        yield from batches if batches else [empty_batch(table.schema)]

    def _unbuffered(self, sql: str, *, quiet: bool = False) -> Iterator[pa.RecordBatch]:
        """One SELECT streamed row by row by the server (PyMySQL's unbuffered cursor), as Arrow batches typed
        like connectorx would type them. Slower than connectorx, but bounded without a key. ``quiet``: yield
        nothing when there are no rows."""
        import pymysql
        import pymysql.cursors

        schema = next(self._cx_read([f"{sql} LIMIT 0"])).schema
        tag = f"biconic:{uuid.uuid4().hex}"
        conn = self._connect()
        cur = conn.cursor(pymysql.cursors.SSCursor)
        done = False
        try:
            seen = False
            try:
                cur.execute(f"/* {tag} */ {sql}")
                while rows := cur.fetchmany(min(self._rows(), _UNBUFFERED_ROWS)):
                    seen = True
                    yield _from_rows(rows, schema, self.label)
            except pymysql.Error as exc:
                raise self._error(exc, "read failed") from exc
            if not seen and not quiet:
                yield empty_batch(schema)
            done = True
        finally:
            if not done:  # abandoned half-way: closing would first read every remaining row
                self._kill(tag)
            _close_unbuffered(cur)
            with contextlib.suppress(Exception):
                conn.close()

    def _kill(self, tag: str) -> None:
        """Stop the server side of an abandoned read: the cursor would drain the whole result otherwise."""
        with contextlib.suppress(Exception), self._session() as run:
            for (pid,) in run("SELECT id FROM information_schema.processlist WHERE info LIKE %s "
                              "AND id <> CONNECTION_ID()", [f"%{tag}%"]):
                run(f"KILL QUERY {int(pid)}")

    # --- driver errors ------------------------------------------------------------------------------------
    def _unavailable(self, exc: BaseException, text: str) -> bool:
        code = _error_code(exc)
        return code in _GONE_CODES if code is not None else says_gone(text)

    def _query_mistake(self, exc: BaseException) -> bool:
        return _error_code(exc) in _QUERY_CODES


def _close_unbuffered(cur: Any) -> None:
    """Close an unbuffered cursor; on a dead connection there is nothing left to drain, and its ``__del__``s
    must not try again. PyMySQL has no public way to abandon the result of a lost connection (its ``__del__``
    would read the closed socket and print an ignored exception), so the flag is cleared by hand."""
    try:
        cur.close()
    except Exception:
        cur.connection = None
        result = getattr(cur, "_result", None)
        if result is not None:
            result.unbuffered_active = False
