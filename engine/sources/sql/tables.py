"""Many tables of one database as one source, each table its own partition: a list (``?table=a,b,c``, or
``table=`` repeated) or a LIKE pattern (``?table=legacy.import_%``), mixed as wished.

Built for moving a platform that kept one table per connection: each table commits with its own ledger row, so
a re-run skips the tables already loaded (and loads tables added since), and a table that fails rolls back
alone. The connection id of a table's rows comes from its name (``connection_from_name``: a regex with one
group, matched against the whole table name, without schema) or from one of its columns
(``connection_column``, renamed ``connection_id``); a name the regex does not match, or whose group is no
connection id (:func:`~engine.ids.parse_connection_id`), fails that table, with a message naming it.

>>> engine.load("postgresql://app@old:5432/platform?table=legacy.import_%", into="readings",  # doctest: +SKIP
...             options={"connection_from_name": "import_([0-9a-f-]{36})"})

Safety: a pattern is a bound parameter of the catalog query (``LIKE $1``), and every matched name is quoted
when read, so a hostile table name is only ever data. ``%`` makes an item a pattern, where ``_`` matches any
one character too (``\\_`` a literal underscore); an item without ``%`` names one table (found as a single
``?table=`` is: case-insensitively, the exact case first).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import polars as pl
import pyarrow as pa

from engine.errors import SourceError, SpecError
from engine.ids import parse_connection_id
from engine.sources.base import Partition, reader_from_frame
from engine.sources.chunks import ChunkFactory
from engine.sources.sql.base import DatabaseSource

__all__ = ["CONNECTION_ID", "TableSet", "is_table_set", "table_names"]

#: the column the rows' connection id goes in (the warehouse's tenant column)
CONNECTION_ID = "connection_id"


def table_names(text: str) -> tuple[str, ...]:
    """The items of a ``table`` option: ``a, b ,c`` -> ``("a", "b", "c")`` (blank items dropped)."""
    return tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))


def is_table_set(table: str | None, *, connection_from_name: str | None, connection_column: str | None) -> bool:
    """Whether a database source is a :class:`TableSet`: several tables, a pattern, or a connection option."""
    if table is None:
        return False
    names = table_names(table)
    return len(names) > 1 or any("%" in n for n in names) or connection_from_name is not None \
        or connection_column is not None


def _name_regex(text: str) -> re.Pattern[str]:
    try:
        regex = re.compile(text)
    except re.error as exc:
        raise SpecError("source.connection_from_name", f"not a regular expression: {exc}") from exc
    if regex.groups != 1:
        raise SpecError("source.connection_from_name", f"{text!r} has {regex.groups} groups; give exactly one, "
                                                       "around the connection id: import_([0-9a-f-]{36})")
    return regex


@dataclass(frozen=True, kw_only=True)
class TableSet:
    """The tables ``names`` (names or LIKE patterns) of ``source``'s database, a partition each, their rows
    carrying a ``connection_id`` column taken from the table's name or one of its columns (with neither, the
    rows keep their own ``connection_id``, if any, or take ``--connection``).

    >>> TableSet(source=PostgresSource(url=dsn, table="legacy.import_%"), names=("legacy.import_%",),
    ...          connection_from_name="import_(.*)")  # doctest: +SKIP
    """

    #: the read of one table (its ``table`` is replaced by each table in turn)
    source: DatabaseSource
    names: tuple[str, ...]
    connection_from_name: str | None = None
    connection_column: str | None = None
    _tables: dict[str, DatabaseSource] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.source.query is not None:
            raise SpecError("source.query", "read a table or a query, not both")
        if self.source.cursor is not None:
            raise SpecError("source.cursor", "a cursor reads one table incrementally; a table list or pattern (or a "
                                             "connection option) loads each table once, a re-run skipping those done")
        if self.connection_from_name is not None:
            _name_regex(self.connection_from_name)

    @property
    def label(self) -> str:
        """The tables as logs show them: ``postgresql://app@db:5432/shop?table=legacy.import_%``."""
        return f"{self.source.server}?table={','.join(self.names)}"

    # --- partitions ---------------------------------------------------------------------------------------
    def partitions(self) -> list[Partition]:
        """One partition per table, in the order listed (a pattern's matches in name order); a pattern that
        matches nothing or a named table that is not there is an error for the whole load (a typo)."""
        found: dict[str, tuple[str, int]] = {}
        for item in self.names:
            if "%" in item:
                matches = sorted(self.source.matching_tables(item), key=lambda t: (t[0].encode(), t[1].encode()))
                if not matches:
                    raise SourceError(self.label, f"no table of {self.source.server} matches {item!r} (a LIKE "
                                                  "pattern, case-sensitive; SCHEMA.PATTERN for another schema)")
                for schema, name, size in matches:
                    found.setdefault(f"{schema}.{name}", (name, size))
            else:
                size = self._table(item).partitions()[0].size_bytes  # finds it, or says it is not there
                found.setdefault(item, (item.partition(".")[2] or item, size))
        return [self._partition(table, name, size) for table, (name, size) in found.items()]

    def _partition(self, table: str, name: str, size: int) -> Partition:
        read = self._table(table)
        by = f"column:{self.connection_column}" if self.connection_column is not None else \
            f"name:{self._connection_id(name, read.label, strict=False)}" if self.connection_from_name else ""
        fingerprint = hashlib.sha256("\x1f".join([read.label, table, by]).encode()).hexdigest()[:32]
        return Partition(key=read.label, label=read.label, fingerprint=fingerprint, size_bytes=size,
                         options={"table": table, "name": name})

    def _table(self, table: str) -> DatabaseSource:
        """The read of one table (kept: it describes its table once)."""
        if table not in self._tables:
            self._tables[table] = dataclasses.replace(self.source, table=table, _cache={})
        return self._tables[table]

    def _connection_id(self, name: str, label: str, *, strict: bool = True) -> str | None:
        assert self.connection_from_name is not None
        m = _name_regex(self.connection_from_name).fullmatch(name)
        if m is None or not m.group(1):
            if not strict:
                return None
            raise SourceError(label, f"table name {name!r} does not match connection_from_name "
                                     f"{self.connection_from_name!r} (the whole name must match, the group being "
                                     "the connection id)")
        if strict:  # a group that is no connection id fails its table here, not as every row rejected
            try:
                parse_connection_id(m.group(1))
            except ValueError as exc:
                raise SourceError(label, f"table name {name!r}: {exc}") from None
        return m.group(1)

    # --- the connection column ----------------------------------------------------------------------------
    def _with_connection(self, partition: Partition) -> Callable[[pl.LazyFrame], pl.LazyFrame]:
        """What makes a table's frame carry its ``connection_id`` (raising for the table when it cannot)."""
        label = partition.label
        if self.connection_from_name is None and self.connection_column is None:  # the rows' own, or --connection
            return lambda frame: frame
        if self.connection_column is not None:
            column = self.connection_column

            def renamed(frame: pl.LazyFrame) -> pl.LazyFrame:
                names = frame.collect_schema().names()
                if column not in names:
                    raise SourceError(label, f"no column {column!r} to take the connection id from "
                                             f"(connection_column); the table has {', '.join(names[:20])}")
                if column != CONNECTION_ID and CONNECTION_ID in names:
                    raise SourceError(label, f"the table has both {column!r} and {CONNECTION_ID!r}; set "
                                             f"connection_column={CONNECTION_ID} or rename one of them")
                return frame.rename({column: CONNECTION_ID}) if column != CONNECTION_ID else frame
            return renamed
        connection_id = self._connection_id(str(partition.options["name"]), label)

        def added(frame: pl.LazyFrame) -> pl.LazyFrame:
            if CONNECTION_ID in frame.collect_schema().names():
                raise SourceError(label, f"the table already has a {CONNECTION_ID!r} column; read it with "
                                         f"connection_column={CONNECTION_ID} instead of connection_from_name")
            return frame.with_columns(pl.lit(connection_id, dtype=pl.String).alias(CONNECTION_ID))
        return added

    # --- Source -------------------------------------------------------------------------------------------
    def chunks(self, partition: Partition) -> Generator[ChunkFactory, None, None]:
        """The table's chunks, each with its ``connection_id``."""
        fix = self._with_connection(partition)
        for factory in self._table(str(partition.options["table"])).chunks(partition):
            yield _fixed(factory, fix)

    def scan(self, partition: Partition) -> pl.LazyFrame:
        read = self._table(str(partition.options["table"]))
        return self._with_connection(partition)(read.scan(partition))

    def read(self, partition: Partition, *, columns: list[str] | None = None) -> pa.RecordBatchReader:
        return reader_from_frame(self.scan(partition), columns=columns)

    def schema(self) -> pa.Schema:
        """The first table's columns, with ``connection_id``."""
        return self.read(self.partitions()[0]).schema


def _fixed(factory: ChunkFactory, fix: Callable[[pl.LazyFrame], pl.LazyFrame]) -> ChunkFactory:
    def chunk(rows_before: int) -> pl.LazyFrame:
        return fix(factory(rows_before))
    return chunk
