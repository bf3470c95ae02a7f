"""Database sources with a fixed schema, streamed as Arrow record batches: PostgreSQL, MySQL/MariaDB, and any
ADBC driver (Snowflake, BigQuery, SQLite, ...).

Owns catalog reading, type mapping column by column, parallel ranged reads and watermarks for these:
:mod:`~engine.sources.sql.base` (the read of one table or query, whatever the dialect),
:mod:`~engine.sources.sql.common` (what the dialects share: column descriptions, Arrow fixes, watermark text,
driver-error wording, options), :mod:`~engine.sources.sql.postgres`, :mod:`~engine.sources.sql.mysql` and
:mod:`~engine.sources.sql.adbc`.

May import: ``engine.sources`` (base, chunks, stream, incremental), ``engine.plan.columns``, ``engine.handoff``
and the core modules. Never ``engine.postgres`` (the warehouse) or ``engine.pipeline``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.sources.sql.base import DatabaseSource
from engine.sources.sql.common import OPTIONS, Dialect, database_fields
from engine.sources.sql.mysql import MySqlSource
from engine.sources.sql.postgres import PostgresSource

__all__ = ["OPTIONS", "DatabaseSource", "MySqlSource", "PostgresSource", "open_database"]

#: the source class of each dialect
_CLASSES: dict[Dialect, type[DatabaseSource]] = {"postgresql": PostgresSource, "mysql": MySqlSource}


def open_database(url: str, options: Mapping[str, Any]) -> DatabaseSource:
    """A :class:`PostgresSource` from ``postgresql://user:pw@host:5432/db?table=NAME`` (a :class:`MySqlSource`
    from ``mysql://`` or ``mariadb://``) and options (see :data:`OPTIONS`); other URL parameters (``sslmode``...)
    go to the driver.

    >>> open_database("postgresql://app@db:5432/shop", {"query": "SELECT * FROM orders"})  # doctest: +SKIP
    """
    dialect, fields = database_fields(url, options)
    return _CLASSES[dialect](**fields)
