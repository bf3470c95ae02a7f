"""Database sources with a fixed schema, streamed as Arrow record batches: PostgreSQL, MySQL/MariaDB, and any
ADBC driver (Snowflake, BigQuery, SQLite, ...).

Owns catalog reading, type mapping column by column, parallel ranged reads and watermarks for these:
:mod:`~engine.sources.sql.base` (the read of one table or query, whatever the dialect),
:mod:`~engine.sources.sql.common` (what the dialects share: column descriptions, Arrow fixes, watermark text,
driver-error wording, options), :mod:`~engine.sources.sql.postgres`, :mod:`~engine.sources.sql.mysql` and
:mod:`~engine.sources.sql.adbc`; :mod:`~engine.sources.sql.tables` reads a list or LIKE pattern of tables, a partition
each, their rows carrying a connection id taken from the table's name or a column.

May import: ``engine.sources`` (base, chunks, stream, incremental), ``engine.plan.columns``, ``engine.handoff``
and the core modules. Never ``engine.postgres`` (the warehouse) or ``engine.pipeline``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from engine.sources.sql.base import DatabaseSource
from engine.sources.sql.common import OPTIONS, Dialect, database_fields
from engine.sources.sql.mysql import MySqlSource
from engine.sources.sql.postgres import PostgresSource
from engine.sources.sql.tables import TableSet, is_table_set, table_names

__all__ = ["OPTIONS", "DatabaseSource", "MySqlSource", "PostgresSource", "TableSet", "open_database"]

#: the source class of each dialect
_CLASSES: dict[Dialect, type[DatabaseSource]] = {"postgresql": PostgresSource, "mysql": MySqlSource}


def open_database(url: str, options: Mapping[str, Any]) -> DatabaseSource | TableSet:
    """A :class:`PostgresSource` from ``postgresql://user:pw@host:5432/db?table=NAME`` (a :class:`MySqlSource`
    from ``mysql://`` or ``mariadb://``) and options (see :data:`OPTIONS`); other URL parameters (``sslmode``...)
    go to the driver. Several tables (``?table=a,b`` or ``?table=import_%``), or a connection id taken from the
    table's name or a column, make a :class:`TableSet` (a partition per table).

    >>> open_database("postgresql://app@db:5432/shop", {"query": "SELECT * FROM orders"})  # doctest: +SKIP
    """
    dialect, fields = database_fields(url, options)
    by_name, by_column = fields.pop("connection_from_name"), fields.pop("connection_column")
    source = _CLASSES[dialect](**fields)
    if source.table is None or not is_table_set(source.table, connection_from_name=by_name,
                                                connection_column=by_column):
        return source
    names = table_names(source.table)
    return TableSet(source=dataclasses.replace(source, table=names[0]), names=names, connection_from_name=by_name,
                    connection_column=by_column)
