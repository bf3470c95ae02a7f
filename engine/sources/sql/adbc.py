"""Any database with an ADBC driver (Snowflake, BigQuery, SQLite, Flight SQL...), a table or query at a time.

The result is streamed as Arrow record batches in bounded memory.

>>> engine.load("adbc://snowflake", into="orders", options={  # doctest: +SKIP
...     "uri_env": "SNOWFLAKE_URI", "table": "SALES.ORDERS", "cursor": "UPDATED_AT"})
>>> engine.load("shop.db", format="adbc", into="orders",  # doctest: +SKIP
...             options={"driver": "sqlite", "table": "orders"})

The driver is a Python package (``adbc_driver_snowflake``, or its short name ``snowflake``), connected through
the package's own public ``dbapi.connect``, or a driver shared library's path (or a name the driver manager
resolves through its manifests), loaded by ``adbc_driver_manager`` with ``entrypoint`` when it is not the default. The
URL is either ``adbc://DRIVER`` (the driver URI then comes from ``uri``/``uri_env``, and ``table``, ``query``,
``uri`` may also be given as ``?table=...``), or, with ``format="adbc"``, the driver URI itself. Secrets stay out
of specs: ``uri_env`` and ``db_kwargs`` keys ending in ``_env`` name environment variables
(``{"password_env": "SNOWFLAKE_PASSWORD"}`` passes ``password``), and labels, keys and errors never show them.

Drivers are optional extras: ``pip install 'biconic-engine[snowflake]'`` / ``[bigquery]`` / ``[sqlite]``.
The generic path is tested here with the drivers that run on the build machines (SQLite, PostgreSQL); live
Snowflake and BigQuery warehouses are not tested here.

A partition's fingerprint is the source (without secrets), the table or query and the watermark range, as for
the database source: a full (non-incremental) read is ``volatile`` (merge and replace read it again every run,
append skips it like any re-run); use a ``cursor`` to pick up only changes. With a cursor the read is
incremental: ``WHERE cursor > low - lag AND cursor <= high``, ``high`` the cursor's maximum when the load
starts, both bound as parameters of the cursor's own type.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import decimal
import hashlib
import math
import os
import re
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

import polars as pl
import pyarrow as pa

from engine.errors import SourceError, SourceUnavailableError, SpecError, first_line
from engine.plan.columns import ROW_COLUMN
from engine.redact import redact, scrub, secret_of
from engine.sources.base import Partition
from engine.sources.chunks import ChunkFactory
from engine.sources.incremental import lag_units
from engine.sources.sql._adbc_drivers import driver_package, package_connect, package_dbapi, short_name
from engine.sources.sql.common import mark_text
from engine.sources.stream import stream_chunks

__all__ = ["OPTIONS", "AdbcSource", "Window", "open_adbc"]

#: option -> what it does (``engine.load(..., options={...})`` and a spec's ``source.options``)
OPTIONS: dict[str, str] = {
    "driver": "ADBC driver: package (adbc_driver_snowflake) or short name (snowflake, bigquery, sqlite, "
              "postgresql, flightsql), or a driver library's path",
    "uri": "the driver's URI (snowflake: user@account/db/schema?warehouse=WH; sqlite: a file name)",
    "uri_env": "an environment variable holding the URI (keeps its password out of the spec)",
    "db_kwargs": "driver options; a key ending in _env names an environment variable holding the value",
    "entrypoint": "the driver library's init function, when it is not the default",
    "table": "the table to read (schema.table)",
    "query": "a SELECT to read instead of a table",
    "cursor": "column read incrementally (e.g. updated_at): only rows past the stored watermark",
    "lag": "re-read this far behind the watermark: seconds (or 15m, 2h, 1d) for times, units for numbers",
}

_SECRET_KEY = re.compile(r"password|secret|token|private_key|credential", re.IGNORECASE)
_PLAIN_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")
_ALIAS = "biconic_src"


def _scrub_uri(uri: str) -> str:
    """A URI without its password, in URL form (``scheme://user:***@``) or DSN form (``user:***@account``)."""
    text = redact(uri)
    if "://" not in text:
        text = re.sub(r"^([^:/@\s]*):[^@/\s]*@", r"\1:***@", text)
    return text


# --- watermarks (text <-> values of the cursor's Arrow type) -------------------------------------------------


#: Arrow types a cursor can have (a watermark is text, parsed back to the type and bound as a parameter)
_CURSOR_TYPES = (pa.types.is_timestamp, pa.types.is_date, pa.types.is_integer, pa.types.is_floating,
                 pa.types.is_decimal, pa.types.is_string, pa.types.is_large_string)


def _mark_text(value: Any) -> str:
    """A cursor value as watermark text; only times, dates, numbers and text can be one."""
    if isinstance(value, (dt.datetime, dt.date, float, int, decimal.Decimal, str)):
        return mark_text(value)
    raise SpecError("source.cursor", f"cursor values of type {type(value).__name__} cannot be a watermark; "
                                     "use a time, date, number or text column")


def _parse_mark(text: str, kind: pa.DataType) -> Any:
    try:
        if pa.types.is_timestamp(kind):
            moment = dt.datetime.fromisoformat(text)
            if kind.tz is not None and moment.tzinfo is None:
                return moment.replace(tzinfo=dt.UTC)
            if kind.tz is None and moment.tzinfo is not None:
                return moment.astimezone(dt.UTC).replace(tzinfo=None)
            return moment
        if pa.types.is_date(kind):
            return dt.date.fromisoformat(text[:10])
        if pa.types.is_integer(kind):
            return int(decimal.Decimal(text))
        if pa.types.is_floating(kind):
            return float(text)
        if pa.types.is_decimal(kind):
            return decimal.Decimal(text)
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            return text
    except (ValueError, ArithmeticError) as exc:
        raise SpecError("source.cursor", f"the stored watermark {text!r} does not fit the cursor's type {kind} "
                                         f"({first_line(exc)})") from exc
    raise SpecError("source.cursor", f"a cursor of type {kind} cannot be a watermark; use a time, date, number "
                                     "or text column")


def _minus_lag(value: Any, lag: float) -> Any:
    if not lag:
        return value
    if isinstance(value, (dt.datetime, dt.date)):
        return value - dt.timedelta(seconds=lag) if isinstance(value, dt.datetime) else \
            value - dt.timedelta(days=math.ceil(lag / 86400))
    if isinstance(value, int):
        return value - math.ceil(lag)
    if isinstance(value, float):
        return value - lag
    if isinstance(value, decimal.Decimal):
        return value - decimal.Decimal(str(lag))
    raise SpecError("source.lag", f"a lag needs a time or number cursor; this one holds {type(value).__name__}")


def _loadable(batch: pa.RecordBatch) -> pa.RecordBatch:
    """A batch in types every later stage holds: a driver's extension types become their storage (PostgreSQL's
    ``numeric`` arrives as opaque text), and columns with no type (all null) become text."""
    if not any(pa.types.is_null(f.type) or isinstance(f.type, pa.BaseExtensionType) for f in batch.schema):
        return batch
    fields, arrays = [], []
    for f, column in zip(batch.schema, batch.columns, strict=True):
        if isinstance(f.type, pa.BaseExtensionType):
            column = column.storage
        if pa.types.is_null(column.type):
            column = column.cast(pa.string())
        fields.append(f.with_type(column.type))
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


# --- the source -------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Window:
    """The cursor range of an incremental read: ``low < cursor <= high`` in the cursor's Arrow ``kind``."""

    #: the stored watermark minus the lag (None: from the start)
    low: Any
    #: the cursor's maximum when the read was planned (None: the table is empty, read nothing)
    high: Any
    kind: pa.DataType
    #: the stored watermark as stored (part of the fingerprint)
    mark: str | None


@dataclass(frozen=True, kw_only=True)
class AdbcSource:
    """A table or query behind an ADBC driver (one partition), streamed as Arrow batches.

    >>> AdbcSource(driver="adbc_driver_sqlite", uri="shop.db", table="orders", cursor="updated_at")  # doctest: +SKIP
    """

    driver: str
    #: may hold a password: never printed (see :attr:`label`)
    uri: str | None = field(default=None, repr=False)
    uri_env: str | None = None
    db_kwargs: Mapping[str, Any] = field(default_factory=dict, repr=False)
    entrypoint: str | None = None
    table: str | None = None
    query: str | None = None
    cursor: str | None = None
    lag: float = 0.0
    #: set by :meth:`with_watermark`: the cursor range this copy reads (None: everything)
    window: Window | None = None

    # --- identity -----------------------------------------------------------------------------------------
    def _uri(self) -> str | None:
        if self.uri_env is None:
            return self.uri
        value = os.environ.get(self.uri_env)
        if value is None:
            raise SpecError("source.uri_env", f"the environment variable {self.uri_env} is not set")
        return value

    def _db_kwargs(self) -> tuple[dict[str, str], list[str]]:
        """The driver options with ``*_env`` keys resolved, and every secret in them (to scrub from errors)."""
        out: dict[str, str] = {}
        secrets: list[str] = []
        for key, value in self.db_kwargs.items():
            if key.endswith("_env"):
                resolved = os.environ.get(str(value))
                if resolved is None:
                    raise SpecError(f"source.db_kwargs.{key}", f"the environment variable {value} is not set")
                out[key.removesuffix("_env")] = resolved
                secrets.append(resolved)
            else:
                out[key] = str(value)
                if _SECRET_KEY.search(key):
                    secrets.append(str(value))
        return out, [s for s in secrets if s]

    @property
    def label(self) -> str:
        """The source as logs and reports show it, without secrets: ``adbc:sqlite:shop.db#orders``."""
        uri = self.uri if self.uri_env is None else f"${self.uri_env}"
        what = self.table if self.table else "query:" + hashlib.sha256(self._base().encode()).hexdigest()[:12]
        return f"adbc:{short_name(self.driver)}:{_scrub_uri(uri or '')}#{what}"

    def watermark_key(self) -> str:
        plain = sorted((k, str(v)) for k, v in self.db_kwargs.items()
                       if k.endswith("_env") or not _SECRET_KEY.search(k))
        if not plain:
            return self.label
        return f"{self.label}@{hashlib.sha256(repr(plain).encode()).hexdigest()[:12]}"

    def _secrets(self) -> list[str]:
        found: list[str] = []
        uri = self.uri if self.uri_env is None else os.environ.get(self.uri_env)
        if uri:
            secret = secret_of(uri) or (m.group(1) if (m := re.match(r"^[^:/@\s]*:([^@/\s]*)@", uri)) else None)
            if secret:
                found += [secret, unquote(secret)]
            if self.uri_env is not None:
                found.append(uri)
        with contextlib.suppress(SpecError):
            found += self._db_kwargs()[1]
        return sorted({s for s in found if s}, key=len, reverse=True)

    def _error(self, exc: BaseException, doing: str, sql: str | None = None) -> SourceError:
        """The driver's error, wrapped once, without secrets; a lost or refused connection or a timeout
        (``OperationalError``) is worth a retry."""
        import adbc_driver_manager

        text = scrub(first_line(exc), self._secrets())
        where = f" (SQL: {sql[:300]})" if sql else ""
        cls = SourceUnavailableError if isinstance(exc, adbc_driver_manager.OperationalError) else SourceError
        return cls(self.label, f"{doing}: {text}{where}")

    # --- SQL --------------------------------------------------------------------------------------------
    def _ident(self, name: str) -> str:
        """A table or column name as SQL. Plain names are quoted (case kept), except on Snowflake, where a
        plain name is left to fold to upper case as it does in Snowflake's own SQL; a name that already holds
        quotes is taken as written."""
        if any(q in name for q in "\"`"):
            return name
        short = short_name(self.driver)
        parts = name.split(".")
        if short == "bigquery":
            return "`" + name.replace("`", "") + "`"
        if short == "snowflake" and all(_PLAIN_IDENT.match(p) for p in parts):
            return name
        return ".".join('"' + p.replace('"', '""') + '"' for p in parts)

    def _placeholders(self) -> tuple[str, str]:
        return ("$1", "$2") if short_name(self.driver) == "postgresql" else ("?", "?")

    def _base(self) -> str:
        if self.table:
            return f"SELECT * FROM {self._ident(self.table)}"
        assert self.query is not None
        return self.query.strip().rstrip(";").strip()

    def _from(self) -> str:
        return self._ident(self.table) if self.table else f"({self._base()}) AS {_ALIAS}"

    def _select(self) -> tuple[str, pa.RecordBatch | None]:
        """The statement reading the partition, and its parameters."""
        if self.window is None or self.cursor is None:
            return self._base(), None
        low, high, kind = self.window.low, self.window.high, self.window.kind
        if high is None:
            return f"SELECT * FROM {self._from()} WHERE 1 = 0", None
        column = self._ident(self.cursor)
        first, second = self._placeholders()
        if low is None:
            sql = f"SELECT * FROM {self._from()} WHERE {column} <= {first}"
            return sql, pa.record_batch([pa.array([high], kind)], names=["high"])
        sql = f"SELECT * FROM {self._from()} WHERE {column} > {first} AND {column} <= {second}"
        return sql, pa.record_batch([pa.array([low], kind), pa.array([high], kind)], names=["low", "high"])

    # --- connection -------------------------------------------------------------------------------------
    def _connect(self) -> Any:
        import adbc_driver_manager
        import adbc_driver_manager.dbapi as dbapi

        package = driver_package(self.driver)
        if package is not None and self.entrypoint is not None:
            raise SpecError("source.entrypoint", f"an entrypoint is for a driver library's path; the package "
                                                 f"{package} connects through its own")
        uri = self._uri()
        db_kwargs, _ = self._db_kwargs()
        try:
            if package is not None:
                return package_connect(package_dbapi(package), uri, db_kwargs)
            return dbapi.connect(driver=self.driver, uri=uri, entrypoint=self.entrypoint, db_kwargs=db_kwargs or None,
                                 autocommit=True)
        except adbc_driver_manager.Error as exc:
            raise self._error(exc, "cannot connect") from exc

    def _batches(self, sql: str, params: pa.RecordBatch | None) -> Generator[pa.RecordBatch, None, None]:
        """The statement's result, batch by batch; the connection closes when the stream ends or is dropped."""
        import adbc_driver_manager

        conn = self._connect()
        try:
            cur = conn.cursor()
            try:
                try:
                    cur.execute(sql, params)
                    reader = cur.fetch_record_batch()
                except adbc_driver_manager.Error as exc:
                    raise self._error(exc, "the query failed", sql) from exc
                yield pa.RecordBatch.from_pylist([], schema=reader.schema)  # the schema, before any row
                try:
                    yield from reader
                except (adbc_driver_manager.Error, pa.ArrowException) as exc:
                    raise self._error(exc, "reading the result failed", sql) from exc
            finally:
                cur.close()
        finally:
            conn.close()

    def _stream(self) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        """The partition's schema and its non-empty batches (the statement runs now, its rows stream later)."""
        sql, params = self._select()
        batches = self._batches(sql, params)
        schema = _loadable(next(batches)).schema
        first = None
        if self.window is not None:
            first = next((b for b in batches if b.num_rows), None)
            if first is None:
                schema = self._sample_schema() or schema

        def rows() -> Iterator[pa.RecordBatch]:
            with contextlib.closing(batches):
                if first is not None:
                    yield _loadable(first)
                for batch in batches:
                    if batch.num_rows:
                        yield _loadable(batch)

        return schema, rows()

    def _sample_schema(self) -> pa.Schema | None:
        """The types of one row of the whole table or query, for an incremental read that found nothing new:
        drivers that type columns from their values (SQLite) call every column of an empty result int64, and
        the table is planned from this (empty) read."""
        with contextlib.closing(self._batches(f"SELECT * FROM {self._from()} LIMIT 1", None)) as batches:
            sample = next((b for b in batches if b.num_rows), None)
        return _loadable(sample).schema if sample is not None else None

    # --- Source protocol ----------------------------------------------------------------------------------
    def partitions(self) -> list[Partition]:
        window = self.window
        marks = [window.mark or "", self.high_watermark() or ""] if window is not None else ["", ""]
        text = "\x1f".join([self.watermark_key(), self._base(), *marks])
        fingerprint = hashlib.sha256(text.encode()).hexdigest()[:32]
        key = self.watermark_key()
        return [Partition(key=key, label=self.label, fingerprint=fingerprint,
                          volatile=window is None or self.cursor is None)]

    def chunks(self, partition: Partition) -> Iterator[ChunkFactory]:
        """The result in chunks of about ``BICONIC_CHUNK_ROWS`` rows (one held at a time). Each call runs the
        statement again; incremental reads are bounded on both sides, so every call reads the same rows."""
        schema, batches = self._stream()
        yield from stream_chunks(batches, schema)

    def scan(self, partition: Partition) -> pl.LazyFrame:
        """The whole result as one frame (held in memory: loads use :meth:`chunks`)."""
        schema, batches = self._stream()
        table = pa.Table.from_batches(list(batches), schema=schema)
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        return frame.lazy().with_row_index(ROW_COLUMN, offset=1)

    def read(self, partition: Partition, *, columns: list[str] | None = None) -> pa.RecordBatchReader:
        schema, batches = self._stream()
        if columns is None:
            return pa.RecordBatchReader.from_batches(schema, batches)
        picked = pa.schema([schema.field(c) for c in columns])
        return pa.RecordBatchReader.from_batches(picked, (b.select(columns) for b in batches))

    def schema(self) -> pa.Schema:
        sql, params = self._select()
        with contextlib.closing(self._batches(sql, params)) as batches:
            return _loadable(next(batches)).schema

    # --- IncrementalSource protocol -----------------------------------------------------------------------
    def _max_cursor(self) -> pa.Scalar:
        assert self.cursor is not None
        sql = f"SELECT MAX({self._ident(self.cursor)}) AS high FROM {self._from()}"
        batches = list(self._batches(sql, None))
        table = pa.Table.from_batches(batches)
        if table.num_rows != 1:
            raise SourceError(self.label, f"cannot find the highest {self.cursor!r} (SQL: {sql})")
        return table.column(0)[0]

    def with_watermark(self, low: str | None) -> AdbcSource:
        """A copy reading rows with ``low - lag < cursor <= high``, high the cursor's maximum now."""
        if self.cursor is None:
            raise SpecError("source.cursor", "set a cursor column to read incrementally")
        scalar = self._max_cursor()
        kind = scalar.type
        if not any(check(kind) for check in _CURSOR_TYPES):
            shown = getattr(kind, "type_name", None) or str(kind)
            raise SpecError("source.cursor", f"{self.cursor!r} is {shown}, which cannot be a watermark; use a time, "
                                             "date, integer, float, decimal or text column (or cast it in a query)")
        high = scalar.as_py()
        start = None
        if high is not None:  # None: an empty table, read nothing and keep the stored watermark
            _mark_text(high)
            if low is not None:
                start = _parse_mark(low, kind)
                if start >= high:  # nothing new (or the maximum went down): never move the watermark back
                    high = start
                start = _minus_lag(start, self.lag)
        return dataclasses.replace(self, window=Window(low=start, high=high, kind=kind, mark=low))

    def high_watermark(self) -> str | None:
        if self.window is None or self.window.high is None:
            return None
        return _mark_text(self.window.high)


# --- opening from a URL and options -----------------------------------------------------------------------
def _bad(name: str, message: str) -> SpecError:
    return SpecError(f"source.{name}", message)


def open_adbc(url: str, options: Mapping[str, Any]) -> AdbcSource:
    """An :class:`AdbcSource` from ``adbc://DRIVER[?table=...]`` (or, with ``format="adbc"``, the driver URI
    itself) and options (see :data:`OPTIONS`).

    >>> open_adbc("adbc://sqlite", {"uri": "shop.db", "table": "orders"})  # doctest: +SKIP
    """
    opts = dict(options)
    for name in opts:
        if name not in OPTIONS:
            raise _bad(name, f"unknown option for adbc; known: {', '.join(sorted(OPTIONS))}")
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() == "adbc":
        name, _, query = rest.partition("?")
        name = unquote(name.strip("/"))
        for key, value in parse_qsl(query, keep_blank_values=True):
            if key not in ("table", "query", "uri", "cursor", "driver"):
                raise _bad(key, "not accepted in an adbc:// URL; use table, query, uri, cursor, driver or options")
            if key in opts and opts[key] != value:
                raise _bad(key, "given both in the URL and as an option, with different values")
            opts[key] = value
        if name:
            if "driver" in opts and driver_package(str(opts["driver"])) != driver_package(name):
                raise _bad("driver", f"the URL names driver {name!r} but the option says {opts['driver']!r}")
            opts.setdefault("driver", name)
    elif url:
        if "uri" in opts or "uri_env" in opts:
            raise _bad("uri", "the source path is already the driver URI; drop the uri option (or use adbc://DRIVER)")
        opts["uri"] = url
    driver = opts.get("driver")
    if not isinstance(driver, str) or not driver.strip():
        raise _bad("driver", "which ADBC driver? e.g. options={'driver': 'snowflake'} or the URL adbc://snowflake")
    if "uri" in opts and "uri_env" in opts:
        raise _bad("uri_env", "give uri or uri_env, not both")
    if bool(opts.get("table")) == bool(opts.get("query")):
        raise _bad("table", "give exactly one of table and query")
    db_kwargs = opts.get("db_kwargs") or {}
    if not isinstance(db_kwargs, Mapping):
        raise _bad("db_kwargs", f"expected a mapping of driver options, got {type(db_kwargs).__name__}")
    cursor = opts.get("cursor")
    if cursor is not None and (not isinstance(cursor, str) or not cursor.strip()):
        raise _bad("cursor", f"expected a column name, got {cursor!r}")
    return AdbcSource(driver=driver.strip(), uri=opts.get("uri"), uri_env=opts.get("uri_env"),
                      db_kwargs=dict(db_kwargs), entrypoint=opts.get("entrypoint"), table=opts.get("table"),
                      query=opts.get("query"), cursor=cursor, lag=lag_units(opts.get("lag", 0)))
