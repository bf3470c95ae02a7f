"""Connections to PostgreSQL (ADBC), and the one place a driver error becomes an engine error.

A load holds a :class:`Session`: two connections. ``data`` holds one transaction per source partition (ledger
row + COPYs + quarantine rows, committed together); ``ddl`` commits structural changes (tables, child
partitions, new columns) right away, so they never hold locks for the length of a load.

Every connection waits at most ``BICONIC_CONNECT_TIMEOUT`` to be made (unless the DSN sets ``connect_timeout``),
and its session ends a transaction left idle longer than ``idle_in_transaction_seconds`` (a backstop: a client
that hangs anyway, on a mute archive say, cannot hold its locks on staged partitions and the ledger forever).
"""

from __future__ import annotations

import contextlib
import math
import re
import weakref
from collections.abc import Sequence
from typing import Any

from engine.errors import SinkConflictError, SinkError, SinkUnavailableError
from engine.metrics import metrics
from engine.redact import redact, scrub, url_secrets
from engine.settings import settings

__all__ = ["Session", "connect", "execute", "wrap_error"]

#: SQLSTATEs of a lock lost to another transaction: deadlock, lock timeout, serialization failure
_CONFLICT_STATES = frozenset({"40P01", "55P03", "40001"})
#: SQLSTATEs of a server that went away: connection exceptions (class 08), shutdowns, not accepting
_GONE_STATES = ("08", "57P01", "57P02", "57P03")
#: FATAL answers at connect time that are refusals, not outages (libpq gives no SQLSTATE for them)
_REFUSED = ("does not exist", "password authentication failed", "no pg_hba.conf entry",
            "permission denied for database")
#: the driver's words for a connection that broke under a statement
_BROKEN = ("server closed the connection", "no connection to the server", "Connection refused",
           "could not connect", "Failed to connect")


def _server_words(message: str) -> str:
    """The server's own words (ERROR/DETAIL/HINT), not the driver's preamble, as one line."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    server = [ln for ln in lines if ln.startswith(("ERROR:", "DETAIL:", "HINT:")) or "ERROR:  " in ln]
    first = " ".join(server)[:600] if server else (lines[0] if lines else "")
    if server and "ERROR:  " in first:
        first = first[first.index("ERROR:  "):]
    return first


def wrap_error(exc: Exception, what: str, dsn: str) -> SinkError:
    """A driver error as the engine's error: unreachable (transient), conflict (transient) or refused, in one
    line naming ``what`` was being done, with the DSN's password scrubbed (libpq echoes a mis-parsed password
    as part of the host name, so its pieces go too)."""
    secrets = url_secrets(dsn)
    pieces = [p for s in secrets for p in re.split(r"[@:/]", s) if len(p) >= 4]
    message = scrub(redact(str(exc).replace(dsn, redact(dsn))), [*secrets, *pieces])
    first = _server_words(message) or type(exc).__name__
    state = str(getattr(exc, "sqlstate", None) or "")
    shown = redact(dsn)
    if state in _CONFLICT_STATES:
        return SinkConflictError(f"{what}: {first[:600]}; another load held the lock, re-run to finish")
    if state.startswith(_GONE_STATES):
        return SinkUnavailableError(f"{what}: PostgreSQL at {shown} is unreachable: {first[:300]}")
    if not state and any(b in message for b in _BROKEN):
        connecting = "Failed to connect" in message or "could not connect" in message
        if connecting and any(p in message for p in _REFUSED):
            fatal = next((ln.strip() for ln in message.splitlines() if "FATAL" in ln), first)
            return SinkError(f"{what}: PostgreSQL at {shown} refused the connection: {fatal[:300]}")
        return SinkUnavailableError(f"{what}: PostgreSQL at {shown} is unreachable: {first[:300]}")
    return SinkError(f"{what}: {first[:600]}")


def with_connect_timeout(dsn: str, seconds: float) -> str:
    """``dsn`` with libpq's ``connect_timeout`` (whole seconds, at least 1) unless it sets one: libpq otherwise
    waits forever on a host that accepts and never answers."""
    if "connect_timeout" in dsn:
        return dsn
    value = str(max(1, math.ceil(seconds)))
    if "://" not in dsn:  # key=value form
        return f"{dsn} connect_timeout={value}".strip()
    return f"{dsn}{'&' if '?' in dsn else '?'}connect_timeout={value}"


class Counted:
    """An ADBC connection counted in ``biconic_pg_connections_in_use`` from its connect to its first close (or,
    never closed, its garbage collection): each counts once, so the gauge never drifts nor goes negative."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        gauge = metrics().pg_connections_in_use
        gauge.inc()
        self._release = weakref.finalize(self, gauge.dec)  # runs at most once

    def close(self) -> None:
        self._release()
        self._conn.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def __enter__(self) -> Counted:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(dsn: str, *, autocommit: bool = False) -> Any:
    """An ADBC connection to ``dsn``, with the connect timeout and the idle-in-transaction backstop of the
    settings, counted while open (:class:`Counted`); failures are :func:`wrap_error`'s."""
    import adbc_driver_postgresql.dbapi as pgdbapi

    limits = settings()
    try:
        conn = Counted(pgdbapi.connect(with_connect_timeout(dsn, limits.connect_timeout), autocommit=autocommit))
    except Exception as exc:
        raise wrap_error(exc, "connect", dsn) from exc
    idle = int(limits.idle_in_transaction_seconds * 1000)
    try:
        execute(conn, f"SET idle_in_transaction_session_timeout = {idle}", None, dsn)
        if not autocommit:
            conn.commit()
    except BaseException:
        with contextlib.suppress(Exception):
            conn.close()
        raise
    return conn


def _label(sql: str) -> str:
    """A statement's head, to name it in an error (``INSERT INTO biconic.loads``)."""
    return sql.split("(")[0].strip()[:60]


def execute(conn: Any, sql: str, params: Sequence[Any] | None, dsn: str) -> list[tuple[Any, ...]]:
    """Run one statement on ``conn``; its rows if it returns any."""
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params) if params is not None else cur.execute(sql)
            return list(cur.fetchall()) if cur.description else []
    except Exception as exc:
        raise wrap_error(exc, _label(sql), dsn) from exc


class Session:
    """One load's two connections to PostgreSQL (``data`` and ``ddl``). Use as a context manager."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.data = connect(dsn)
        try:
            self.ddl = connect(dsn)
        except SinkError:
            self.data.close()
            raise
        self.run("SET lock_timeout = '120s'", conn=self.ddl)
        self.ddl.commit()
        # indexes of fresh partitions are built at attach time, in this session: give the sorts room
        self.run("SET maintenance_work_mem = '256MB'")
        self.data.commit()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for conn in (self.data, self.ddl):
            with contextlib.suppress(Exception):  # the server may be gone; it rolls back anyway
                conn.rollback()
            with contextlib.suppress(Exception):
                conn.close()

    def run(self, sql: str, params: Sequence[Any] | None = None, *, conn: Any = None) -> list[tuple[Any, ...]]:
        """Execute one statement (on ``data`` unless ``conn`` says otherwise); rows if it returns any."""
        return execute(conn or self.data, sql, params, self.dsn)

    def commit(self, conn: Any = None) -> None:
        """Commit ``data`` (or ``conn``)."""
        try:
            (conn or self.data).commit()
        except Exception as exc:
            raise wrap_error(exc, "commit", self.dsn) from exc

    def rollback(self, conn: Any = None) -> None:
        """Roll back ``data`` (or ``conn``); a connection that is gone has rolled back already."""
        with contextlib.suppress(Exception):
            (conn or self.data).rollback()
