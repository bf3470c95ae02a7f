"""Short reads of the engine's metadata (dataset versions, the archive manifest) on pooled connections.

A cached query or a cached row lookup still reads one dataset version from PostgreSQL; opening a connection
for it costs ~60 ms, the read itself well under one. So idle autocommit connections are kept per DSN and
handed to one caller at a time; a connection that failed is closed, never returned to the pool.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import polars as pl

from engine.postgres.connection import connect

__all__ = ["MetaDb", "close_idle", "meta_db"]

#: idle connections kept per DSN
IDLE = 4

_idle: dict[str, list[Any]] = {}
_lock = threading.Lock()


def close_idle() -> None:
    """Close every idle pooled connection (at exit: the driver must not be left to garbage collection then)."""
    with _lock:
        conns = [c for pool in _idle.values() for c in pool]
        _idle.clear()
    for conn in conns:
        with contextlib.suppress(Exception):
            conn.close()


atexit.register(close_idle)


class MetaDb:
    """One pooled autocommit connection."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def rows(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cur:
            cur.execute(sql, list(params) if params is not None else None)
            return list(cur.fetchall())

    def run(self, sql: str, params: Sequence[Any] | None = None, *, conn: Any = None) -> list[tuple[Any, ...]]:
        """:meth:`rows`, in the shape :mod:`engine.postgres.meta` takes (``conn`` is ignored: autocommit)."""
        return self.rows(sql, params)

    def frame(self, sql: str, params: Sequence[Any] | None = None) -> pl.DataFrame:
        with self.conn.cursor() as cur:
            cur.execute(sql, list(params) if params is not None else None)
            return pl.from_arrow(cur.fetch_arrow_table())  # type: ignore[return-value]

    def exists(self, relation: str) -> bool:
        return bool(self.rows("SELECT to_regclass($1) IS NOT NULL", [relation])[0][0])


def _alive(conn: Any) -> bool:
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchall()
        return True
    except Exception:
        with contextlib.suppress(Exception):
            conn.close()
        return False


@contextlib.contextmanager
def meta_db(dsn: str) -> Iterator[MetaDb]:
    """A pooled connection for the length of the block (a fresh one if none is idle)."""
    conn = None
    while conn is None:
        with _lock:
            pool = _idle.setdefault(dsn, [])
            conn = pool.pop() if pool else None
        if conn is None:
            conn = connect(dsn, autocommit=True)
        elif not _alive(conn):  # the server restarted or dropped it while it sat idle
            conn = None
    try:
        yield MetaDb(conn)
    except BaseException:
        with contextlib.suppress(Exception):
            conn.close()
        raise
    with _lock:
        pool = _idle.setdefault(dsn, [])
        if len(pool) < IDLE:
            pool.append(conn)
            return
    with contextlib.suppress(Exception):
        conn.close()
