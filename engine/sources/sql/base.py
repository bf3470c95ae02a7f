"""The base of the PostgreSQL and MySQL/MariaDB sources: one table or query read as one partition.

A :class:`DatabaseSource` finds its columns in the catalog (a query's from a ``LIMIT 0`` probe of it), builds
the SELECT column by column with quoted identifiers (each dialect maps its types: see the tables in
:mod:`~engine.sources.sql.postgres` and :mod:`~engine.sources.sql.mysql`), and streams the result as Arrow
batches. ``scan()`` is the whole read as a lazy frame (a Polars IO source: nothing runs until it is collected,
and a ``head`` stops the read early); loads use ``chunks()``.

The dialects plug in through the abstract methods (connecting, the catalog, SQL literals, the raw stream,
classifying driver errors); nothing here branches on the dialect.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import datetime as dt
import hashlib
import itertools
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import polars as pl
import pyarrow as pa

from engine.errors import SourceError, SourceUnavailableError, SpecError
from engine.plan.columns import ROW_COLUMN
from engine.redact import redact, scrub, url_secrets
from engine.settings import settings
from engine.sources.base import Partition
from engine.sources.chunks import ChunkFactory
from engine.sources.sql.common import (
    Column,
    Described,
    Dialect,
    Read,
    Run,
    driver_message,
    fix_array,
    mark_text,
    minus_lag,
    not_after,
    parse_mark,
    range_cut,
    typed_value,
)
from engine.sources.stream import stream_chunks

__all__ = ["DatabaseSource"]


def connect_with_retries(open_connection: Callable[[], Any]) -> Any:
    """``open_connection()``, tried again with backoff (``BICONIC_NETWORK_RETRIES`` attempts) while it fails
    as unavailable (a refusal, a restart, a dropped connection), but never past the connect timeout: a host
    that does not answer at all fails once, within it."""
    from engine.retry import SOURCE_CONNECT

    limits = settings()
    policy = dataclasses.replace(SOURCE_CONNECT, attempts=limits.network_retries)
    return policy.call(open_connection, retry_if=_worth_connecting_again, deadline=limits.connect_timeout)


def _worth_connecting_again(exc: BaseException) -> bool:
    """Unavailable, and never a refused password (libpq may name an earlier address's refusal first): sending a
    wrong password again risks locking the account."""
    text = str(exc).lower()
    return isinstance(exc, SourceUnavailableError) and "authentication failed" not in text \
        and "access denied" not in text


@dataclass(frozen=True, kw_only=True)
class DatabaseSource(abc.ABC):
    """A table or query of a PostgreSQL or MySQL/MariaDB database, read as one partition; the dialects
    (:class:`~engine.sources.sql.postgres.PostgresSource`, :class:`~engine.sources.sql.mysql.MySqlSource`)
    fill in the abstract methods.

    >>> open_database("postgresql://app@db:5432/shop?table=orders", {"cursor": "updated_at"})  # doctest: +SKIP
    """

    dialect: ClassVar[Dialect]
    default_port: ClassVar[int]
    #: column types whose times are instants (read in UTC)
    aware_types: ClassVar[frozenset[str]]
    #: column types that hold whole numbers only (range cuts and lagged marks are rounded for them)
    integer_types: ClassVar[frozenset[str]]

    #: the connection URL (options removed), password included: never printed (see :attr:`label`)
    url: str = field(repr=False)
    table: str | None = None
    query: str | None = None
    cursor: str | None = None
    lag: float = 0.0
    partition_on: str | None = None
    partition_num: int = 2
    batch_rows: int | None = None
    #: set by :meth:`with_watermark`: (stored watermark, high mark); high None = nothing to read. None = all rows
    bounds: tuple[str | None, str | None] | None = None
    _cache: dict[str, Described] = field(default_factory=dict, repr=False, compare=False)

    # --- what each dialect provides -----------------------------------------------------------------------
    @abc.abstractmethod
    def _connect(self) -> Any:
        """A DB-API connection in autocommit mode (driver errors wrapped by :meth:`_error`)."""

    @abc.abstractmethod
    def _execute(self, cur: Any, sql: str, params: Sequence[Any]) -> None:
        """Run a statement with parameters, in the driver's own way of passing them."""

    @abc.abstractmethod
    def _catalog(self, run: Run, schema: str | None, name: str) -> Described:
        """The table's relation, columns, reads and size (raising :meth:`_not_found` when there is none)."""

    @abc.abstractmethod
    def _tables(self, run: Run, schema: str | None, pattern: str) -> list[tuple[str, str, int]]:
        """(schema, name, bytes) of the tables and views LIKE ``pattern`` in ``schema`` (None: the default)."""

    @abc.abstractmethod
    def _probe(self, relation: str) -> list[Column]:
        """The columns of a query, from a ``LIMIT 0`` read of ``relation``."""

    @abc.abstractmethod
    def _read_of(self, col: Column) -> Read:
        """How the column is read (the dialect's type table)."""

    @abc.abstractmethod
    def _quote(self, name: str) -> str:
        """An identifier quoted for the dialect."""

    @abc.abstractmethod
    def _literal(self, value: Any, col: Column, read: Read) -> str:
        """A typed SQL literal for a cursor or partition-key value (ours, parsed and re-rendered: no user text
        reaches the SQL unchecked)."""

    @abc.abstractmethod
    def _max_sql(self, quoted: str, read: Read) -> str:
        """The SELECT expression for the cursor's current maximum (numbers as exact text where possible)."""

    @abc.abstractmethod
    def _raw(self, columns: Sequence[str] | None, *, empty: bool) -> Iterator[pa.RecordBatch]:
        """The read as the driver's Arrow batches, columns in the order asked; at least one batch."""

    @abc.abstractmethod
    def _unavailable(self, exc: BaseException, text: str) -> bool:
        """Whether a driver error says the server is unreachable or went away (a retry may work)."""

    @abc.abstractmethod
    def _query_mistake(self, exc: BaseException) -> bool:
        """Whether a driver error says the user's query is wrong (syntax, unknown column or table)."""

    # --- identity -----------------------------------------------------------------------------------------
    @property
    def server(self) -> str:
        """The database as messages show it: ``postgresql://app@db:5432/shop`` (no password, no options)."""
        parts = urlsplit(self.url)
        user = unquote(parts.username) + "@" if parts.username else ""
        host = parts.hostname or "localhost"
        return f"{self.dialect}://{user}{host}:{parts.port or self.default_port}{parts.path or '/'}"

    @property
    def label(self) -> str:
        """The read as logs and reports show it: ``postgresql://app@db:5432/shop?table=orders``."""
        if self.table is not None:
            return f"{self.server}?table={self.table}"
        return f"{self.server}?query={hashlib.sha256((self.query or '').encode()).hexdigest()[:16]}"

    def watermark_key(self) -> str:
        return self.label

    def _driver_url(self, **defaults: str) -> str:
        """The URL handed to a driver: the source's URL parameters, plus ``defaults`` it does not set."""
        parts = urlsplit(self.url)
        params = parse_qsl(parts.query, keep_blank_values=True)
        given = {k for k, _ in params}
        params += [(k, v) for k, v in defaults.items() if k not in given]
        return urlunsplit((self.dialect, parts.netloc, parts.path, urlencode(params), ""))

    def _rows(self) -> int:
        return self.batch_rows or settings().chunk_rows

    # --- errors -------------------------------------------------------------------------------------------
    def _scrub(self, text: str) -> str:
        return redact(scrub(text, url_secrets(self.url)))

    def _error(self, exc: BaseException, doing: str) -> SourceError | SpecError:
        """A driver error as one clean line, password scrubbed; mistakes in the user's query are SpecErrors,
        an unreachable server a :class:`SourceUnavailableError` (retried by the job layer)."""
        text = driver_message(exc)
        if self.query is not None and self._query_mistake(exc):
            return SpecError("source.query", self._scrub(f"{text} ({self.server})"))
        kind = SourceUnavailableError if self._unavailable(exc, text) else SourceError
        return kind(self.label, self._scrub(f"{doing}: {text}"))

    def _not_found(self, where: str) -> SourceError:
        return SourceError(self.label, f"table {self.table!r} not found in {where} of {self.server}; check the "
                                       "name (SCHEMA.NAME for another schema) and the user's privileges")

    # --- the catalog --------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _session(self) -> Iterator[Run]:
        """A short connection for catalog questions: ``run(sql, params) -> rows``."""
        conn = self._connect()
        try:
            cur = conn.cursor()

            def run(sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
                try:
                    if params is None:
                        cur.execute(sql)
                    else:
                        self._execute(cur, sql, params)
                    return [tuple(r) for r in cur.fetchall()] if cur.description else []
                except Exception as exc:
                    raise self._error(exc, "cannot read") from exc

            yield run
        finally:
            with contextlib.suppress(Exception):
                conn.close()

    def matching_tables(self, pattern: str) -> list[tuple[str, str, int]]:
        """(schema, name, bytes) of the tables LIKE ``pattern`` (``SCHEMA.PATTERN``), bound as a parameter."""
        schema, dot, name = pattern.partition(".")
        with self._session() as run:
            return self._tables(run, schema if dot else None, name if dot else pattern)

    def _describe(self) -> Described:
        if "described" not in self._cache:
            if self.table is not None:
                schema, dot, name = self.table.partition(".")
                with self._session() as run:
                    described = self._catalog(run, schema if dot else None, name if dot else self.table)
            else:
                relation = f"({self.query}) AS biconic_q"
                columns = self._probe(relation)
                described = Described(relation=relation, columns=columns,
                                      reads={c.name: self._read_of(c) for c in columns}, size_bytes=0)
            names = [c.name for c in described.columns]
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise SpecError("source.query", f"the query returns several columns named {repeated[0]!r}; "
                                                "give them distinct aliases")
            self._cache["described"] = described
        return self._cache["described"]

    def _column(self, name: str, option: str) -> tuple[Column, Read]:
        from engine.plan.frame import did_you_mean

        described = self._describe()
        for col in described.columns:
            if col.name == name:
                return col, described.reads[name]
        raise SpecError(f"source.{option}", f"column {name!r} is not in {self.label}"
                                            f"{did_you_mean(name, [c.name for c in described.columns])}")

    def _key(self, name: str) -> tuple[Column, Read]:
        col, read = self._column(name, "partition_on")
        if read.kind not in ("time", "number"):
            raise SpecError("source.partition_on", f"column {col.name!r} is {col.type}; partition on a numeric "
                                                   "or date/time column")
        return col, read

    def _integral(self, col: Column) -> bool:
        return col.type in self.integer_types or (col.type in ("numeric", "decimal") and col.scale == 0)

    def _mark(self, text: str, col: Column, read: Read) -> Any:
        return parse_mark(text, col, read, aware=col.type in self.aware_types)

    # --- watermarks and ranges as SQL ---------------------------------------------------------------------
    def _window(self) -> str | None:
        """The incremental condition of a :meth:`with_watermark` copy (None: every row)."""
        if self.bounds is None or self.cursor is None:
            return None
        low, high = self.bounds
        if high is None:
            return "1 = 0"
        col, read = self._column(self.cursor, "cursor")
        c = self._quote(col.name)
        upper = f"{c} <= {self._literal(self._mark(high, col, read), col, read)}"
        if low is None:  # the first run takes the rows without a cursor value too (they are never seen again)
            return f"({upper} OR {c} IS NULL)"
        start = minus_lag(self._mark(low, col, read), col, self.lag, integral=self._integral(col))
        return f"{c} > {self._literal(start, col, read)} AND {upper}"

    def _select(self, columns: Sequence[str] | None, where: Sequence[str]) -> str:
        described = self._describe()
        names = [c.name for c in described.columns] if columns is None else list(columns)
        exprs = ", ".join(f"{described.reads[n].sql} AS {self._quote(n)}" for n in names)
        conditions = " AND ".join(f"({w})" for w in where)
        return f"SELECT {exprs} FROM {described.relation}" + (f" WHERE {conditions}" if conditions else "")

    def _split(self, lo: Any, hi: Any, col: Column, read: Read) -> list[str]:
        """``partition_num`` conditions of about equal key width covering every key (open at both ends)."""
        n = self.partition_num
        if lo is None or hi is None or not lo < hi or n < 2:
            return ["1 = 1"]
        cuts: list[Any] = []
        for i in range(1, n):
            cut = range_cut(lo, hi, i, n, integral=self._integral(col))
            if cut > lo and (not cuts or cut > cuts[-1]):
                cuts.append(cut)
        if not cuts:
            return ["1 = 1"]
        k = self._quote(col.name)
        lits = [self._literal(c, col, read) for c in cuts]
        return [f"{k} < {lits[0]}", *(f"{k} >= {a} AND {k} < {b}" for a, b in itertools.pairwise(lits)),
                f"{k} >= {lits[-1]}"]

    # --- Source -------------------------------------------------------------------------------------------
    def _stream(self, columns: Sequence[str] | None = None, *, empty: bool = False) -> Iterator[pa.RecordBatch]:
        """The read as converted Arrow batches; at least one (empty when there are no rows), so the schema is
        always known."""
        described = self._describe()
        names = [c.name for c in described.columns] if columns is None else list(columns)
        for name in names:
            if name not in described.reads:
                self._column(name, "columns")
        reads = [described.reads[n] for n in names]
        for batch in self._raw(columns, empty=empty):
            arrays = [fix_array(batch.column(i), r.to) for i, r in enumerate(reads)]
            yield pa.RecordBatch.from_arrays(arrays, names=names)

    def partitions(self) -> list[Partition]:
        described = self._describe()
        text = "\x1f".join([self.label, self.table or self.query or "",
                            *(("", "") if self.bounds is None else (str(self.bounds[0]), str(self.bounds[1])))])
        fingerprint = hashlib.sha256(text.encode()).hexdigest()[:32]
        size = described.size_bytes if self.bounds is None else 0
        return [Partition(key=self.label, label=self.label, fingerprint=fingerprint, size_bytes=size,
                          volatile=self.bounds is None or self.cursor is None)]  # blind to changes: re-read

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
        return _lazy(self._stream, self.schema(), label=self.label).with_row_index(ROW_COLUMN, offset=1)

    # --- IncrementalSource --------------------------------------------------------------------------------
    def with_watermark(self, low: str | None) -> Self:
        """A copy reading rows with ``low - lag < cursor <= high``, high the cursor's maximum now."""
        if self.cursor is None:
            raise SpecError("source.cursor", "set a cursor column to read incrementally")
        col, read = self._column(self.cursor, "cursor")
        if read.kind not in ("time", "number", "text"):
            raise SpecError("source.cursor", f"column {col.name!r} is {col.type}; use a date/time, number or "
                                             "text column as cursor")
        if self.lag and read.kind == "text":
            raise SpecError("source.lag", f"a lag needs a number or date/time cursor; {col.name!r} is {col.type}")
        with self._session() as run:
            found = run(f"SELECT {self._max_sql(self._quote(col.name), read)} FROM {self._describe().relation}")
        high = typed_value(found[0][0], read)
        if high is None:  # no row has a cursor value: read nothing, keep the stored watermark
            return dataclasses.replace(self, bounds=(low, None))
        if isinstance(high, dt.datetime) and high.tzinfo is None and col.type in self.aware_types:
            high = high.replace(tzinfo=dt.UTC)
        if low is not None and not_after(high, self._mark(low, col, read)):
            return dataclasses.replace(self, bounds=(low, low))  # nothing new (or the maximum went down)
        return dataclasses.replace(self, bounds=(low, mark_text(high)))

    def high_watermark(self) -> str | None:
        return None if self.bounds is None else self.bounds[1]


def _lazy(stream: Callable[[list[str] | None], Iterator[pa.RecordBatch]], schema: pa.Schema, *,
          label: str) -> pl.LazyFrame:
    """A Polars IO source over ``stream(columns)``: projections go to the stream, a row limit stops it."""
    from polars.io.plugins import register_io_source

    polars_schema = pl.from_arrow(schema.empty_table()).schema  # type: ignore[union-attr]

    def batches(with_columns: list[str] | None, predicate: pl.Expr | None, n_rows: int | None,
                _batch_size: int | None) -> Iterator[pl.DataFrame]:
        left = n_rows
        for batch in stream(with_columns):
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

    return register_io_source(batches, schema=polars_schema, explain_name="database", explain_detail=label)
