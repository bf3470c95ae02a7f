"""Database sources with a fixed schema, streamed as Arrow record batches: PostgreSQL, MySQL/MariaDB, and any
ADBC driver (Snowflake, BigQuery, SQLite, ...).

Owns catalog reading, type mapping column by column, parallel ranged reads and watermarks for these.

May import: ``engine.sources`` (base, chunks, stream, incremental), ``engine.plan.columns`` and the core
modules. Never ``engine.postgres`` (the warehouse) or ``engine.load``.
"""

from __future__ import annotations

from engine.sources.sql.database import OPTIONS, DatabaseSource, open_database

__all__ = ["OPTIONS", "DatabaseSource", "open_database"]
