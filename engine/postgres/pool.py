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

from engine.postgres.connection import connect, wrap_error

__all__ = ["MetaDb", "close_idle", "keep_idle", "meta_db"]

#: idle connections kept per DSN (a server answering many requests at once keeps more: :func:`keep_idle`)
IDLE = 4
_keep = IDLE

_idle: dict[str, list[Any]] = {}
_lock = threading.Lock()


def keep_idle(count: int) -> None:
    """Keep up to ``count`` idle connections per DSN (a process with that many threads reading at once would
    otherwise open and close a connection, ~60 ms, for most of its reads)."""
    global _keep
    _keep = max(1, count)


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
    """One pooled autocommit connection; driver errors become one scrubbed line (:func:`wrap_error`)."""

    def __init__(self, conn: Any, dsn: str = "") -> None:
        self.conn = conn
        self.dsn = dsn

    def rows(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        try:
            with self.conn.cursor() as cur:
                cur.execute(sql, list(params) if params is not None else None)
                return list(cur.fetchall())
        except Exception as exc:
            raise wrap_error(exc, _head(sql), self.dsn) from exc

    def run(self, sql: str, params: Sequence[Any] | None = None, *, conn: Any = None) -> list[tuple[Any, ...]]:
        """:meth:`rows`, in the shape :mod:`engine.postgres.meta` takes (``conn`` is ignored: autocommit)."""
        return self.rows(sql, params)

    def frame(self, sql: str, params: Sequence[Any] | None = None) -> pl.DataFrame:
        try:
            with self.conn.cursor() as cur:
                cur.execute(sql, list(params) if params is not None else None)
                table = cur.fetch_arrow_table()
        except Exception as exc:
            raise wrap_error(exc, _head(sql), self.dsn) from exc
        return pl.from_arrow(table)  # type: ignore[return-value]

    def exists(self, relation: str) -> bool:
        return bool(self.rows("SELECT to_regclass($1) IS NOT NULL", [relation])[0][0])


def _head(sql: str) -> str:
    """A statement's head, to name it in an error."""
    return " ".join(sql.split())[:60]


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
        yield MetaDb(conn, dsn)
    except BaseException:
        with contextlib.suppress(Exception):
            conn.close()
        raise
    with _lock:
        pool = _idle.setdefault(dsn, [])
        if len(pool) < _keep:
            pool.append(conn)
            return
    with contextlib.suppress(Exception):
        conn.close()
