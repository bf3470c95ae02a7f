"""What the platform shows most often, served from the cache: a connection's latest rows and a dataset's
metadata (schema, row counts, last load, partitions).

Every cache key carries the dataset's version (bumped in each load's own transaction), so an entry can only
ever be read for the data it was made from: a load makes the old entries unreachable, and a cache that lost
a delete during a Redis outage still cannot serve stale rows. One cheap indexed read of that version is the
price of each call; the rows and counts themselves come from the cache. Keys also carry a tag of the database
(:func:`database_tag`): two warehouses (staging, prod) sharing one Redis both hold "orders" at version 3, and
one's rows must never answer the other's reads.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
import uuid
from collections.abc import Iterable
from typing import Any

import polars as pl

from engine.errors import SpecError
from engine.ids import ConnectionId, equals_sql, kind_mismatch, parse_connection_id
from engine.names import canonical_table, qualified, quote_ident
from engine.postgres import meta
from engine.postgres.copy import uuid_text
from engine.postgres.ddl import CONNECTION_COLUMN
from engine.postgres.pool import MetaDb, meta_db
from engine.postgres.server import resolve_dsn
from engine.reads.cache import get_cache
from engine.reads.measure import answered, looked_up
from engine.redact import redact

__all__ = ["HOT_ROWS", "canonical_connection_id", "database_tag", "hot_rows", "metadata", "refresh_hot_rows"]

log = logging.getLogger("biconic.catalog")

#: rows kept per connection
HOT_ROWS = 1000
HOT_TTL = 24 * 3600.0
META_TTL = 3600.0
#: connections whose hot rows a load refreshes eagerly; the others are filled on their first read
EAGER_CONNECTIONS = 32


def _dataset(db: MetaDb, name: str) -> tuple[str, str, int]:
    """(canonical name, time column, version) of a dataset, or a SpecError naming it."""
    table = canonical_table(name)
    found = meta.dataset_version(db, table)
    if found is None:
        raise SpecError("dataset", f"no dataset {name!r} (load something into it first)")
    return table, found[0], found[1]


def database_tag(dsn: str) -> str:
    """12 hex digits naming the warehouse in cache keys: a hash of its DSN without the password (so no secret
    is in a key, and a new password keeps the cache)."""
    return hashlib.sha256(redact(dsn).encode()).hexdigest()[:12]


def _hot_key(tag: str, dataset: str, connection_id: ConnectionId, version: int) -> str:
    return f"hot:{tag}:{dataset}:{connection_id}:v{version}"


def canonical_connection_id(connection_id: Any) -> ConnectionId:
    """The id in its one spelling (a UUID in capitals or a :class:`uuid.UUID` is the same connection): keys,
    the run log and the archive hold it so."""
    try:
        return parse_connection_id(connection_id)
    except ValueError as exc:
        raise SpecError("connection_id", str(exc)) from None


def _connection_filter(db: MetaDb, dataset: str, connection_id: ConnectionId) -> str:
    """``connection_id = $1`` in the column's own type (its index serves it), the id passed as its text; an id
    the column cannot hold is a SpecError."""
    found = db.rows("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = to_regclass($1) "
                    "AND attname = $2", [qualified(dataset), CONNECTION_COLUMN])
    column_type = str(found[0][0]) if found else "text"
    problem = kind_mismatch(dataset, column_type, connection_id)
    if problem:
        raise SpecError("connection_id", problem)
    return equals_sql(quote_ident(CONNECTION_COLUMN), column_type)


def _latest(db: MetaDb, dataset: str, time_column: str, connection_id: ConnectionId) -> pl.DataFrame:
    rows = db.frame(f"SELECT * FROM {qualified(dataset)} WHERE {_connection_filter(db, dataset, connection_id)} "
                    f"ORDER BY {quote_ident(time_column)} DESC LIMIT {HOT_ROWS}", [str(connection_id)])
    return uuid_text(rows, CONNECTION_COLUMN)


def hot_rows(dataset: str, connection_id: ConnectionId | uuid.UUID, *, dsn: str | None = None,
             cache: bool = True) -> pl.DataFrame:
    """The connection's latest ``HOT_ROWS`` rows (newest first) still in PostgreSQL."""
    started = time.perf_counter()
    connection_id = canonical_connection_id(connection_id)
    resolved = resolve_dsn(dsn)
    with meta_db(resolved) as db:
        table, time_column, version = _dataset(db, dataset)
        store = get_cache() if cache else None
        key = _hot_key(database_tag(resolved), table, connection_id, version)
        if store is not None:
            hit = store.get_frame(key)
            looked_up("latest", hit is not None)
            if hit is not None:
                answered("cache", started)
                return hit
        rows = _latest(db, table, time_column, connection_id)
        if store is not None:
            store.set_frame(key, rows, ttl=HOT_TTL)
    answered("postgresql", started)
    return rows


def refresh_hot_rows(dataset: str, connection_ids: Iterable[ConnectionId], *, dsn: str | None = None) -> int:
    """After a load: put the new latest rows of (up to ``EAGER_CONNECTIONS``) touched connections in Redis.

    Never fails the load that calls it: a cache or database problem here is logged and skipped (the rows are
    then fetched on their first read). Returns how many connections were refreshed.
    """
    store = get_cache()
    if store.backend != "redis":  # an in-process cache dies with this process: nothing would read them
        return 0
    done = 0
    try:
        resolved = resolve_dsn(dsn)
        with meta_db(resolved) as db:
            table, time_column, version = _dataset(db, dataset)
            tag = database_tag(resolved)
            for cid in sorted({canonical_connection_id(c) for c in connection_ids}, key=str)[:EAGER_CONNECTIONS]:
                store.set_frame(_hot_key(tag, table, cid, version), _latest(db, table, time_column, cid),
                                ttl=HOT_TTL)
                done += 1
    except Exception as exc:  # the load already committed; a cold cache only costs a read later
        log.warning("could not refresh cached rows of %s: %s", dataset, str(exc).splitlines()[0] if str(exc) else exc)
    return done


def metadata(dataset: str, connection_id: ConnectionId | uuid.UUID | None = None, *, dsn: str | None = None,
             cache: bool = True) -> dict[str, Any]:
    """Schema, row counts (per connection), last load and partitions (hot in PostgreSQL, cold in the archive)
    of a dataset, or of one connection's share of it."""
    connection_id = None if connection_id is None else canonical_connection_id(connection_id)
    resolved = resolve_dsn(dsn)
    with meta_db(resolved) as db:
        table, time_column, version = _dataset(db, dataset)
        store = get_cache() if cache else None
        key = f"meta:{database_tag(resolved)}:{table}:{'*' if connection_id is None else connection_id}:v{version}"
        if store is not None:
            hit = store.get_json(key)
            looked_up("metadata", hit is not None)
            if hit is not None:
                return dict(hit)
        info = _metadata(db, table, time_column, version, connection_id)
        if store is not None:
            store.set_json(key, info, ttl=META_TTL)
        return info


def _metadata(db: MetaDb, table: str, time_column: str, version: int,
              connection_id: ConnectionId | None) -> dict[str, Any]:
    conn_filter = f"WHERE {_connection_filter(db, table, connection_id)}" if connection_id is not None else ""
    params = [str(connection_id)] if connection_id is not None else []
    columns = db.rows("SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                      "WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped "
                      "ORDER BY a.attnum", [qualified(table)])
    counts = db.rows(f"SELECT {quote_ident(CONNECTION_COLUMN)}, count(*) FROM {qualified(table)} {conn_filter} "
                     "GROUP BY 1 ORDER BY 1", params)
    last = meta.last_load(db, table, connection_id)
    if connection_id is None:
        partitions = db.rows("SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
                             "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass($1) ORDER BY 1",
                             [qualified(table)])
    else:  # only the partitions holding the connection's rows: the others are other connections' business
        partitions = db.rows(f"SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM {qualified(table)} t "
                             f"JOIN pg_class c ON c.oid = t.tableoid WHERE {conn_filter.removeprefix('WHERE ')} "
                             "GROUP BY 1, 2 ORDER BY 1", params)
    cold = meta.cold_summary(db, table, connection_id)
    return {
        "dataset": table,
        "connection_id": connection_id,
        "version": version,
        "time_column": time_column,
        "columns": {name: pg for name, pg in columns},
        "rows": sum(int(n) for _, n in counts),
        "rows_by_connection": {str(c): int(n) for c, n in counts},
        "last_load": None if not last else {
            "load_id": last[0], "source": last[1], "mode": last[2], "rows_loaded": int(last[3]),
            "finished_at": _iso(last[4])},
        "partitions": [{"name": name, "bounds": bound} for name, bound in partitions],
        "cold_periods": [{"period": _iso(p), "rows": int(r), "files": int(f)} for p, r, f in cold],
    }


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.date | dt.datetime) else value
