"""Fairness: at most ``BICONIC_CONNECTION_LIMIT`` partitions of one connection run at once, across every worker
on every machine, so one connection's thousand files cannot starve the others.

Enforced with PostgreSQL session advisory locks, one per slot (``limit`` slots per connection), held on a
connection of the task's own for as long as the partition runs. The warehouse is the one thing every worker on
every machine shares; a lock dies with its connection, so a worker killed mid-task frees its slot at once (a
lock in Redis would need an expiry guess). A task that finds every slot taken goes back to the queue with a
short delay (not counted as an attempt), and the worker takes the next task, another connection's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from engine.postgres.connection import connect, execute
from engine.postgres.meta_jobs import cached_connection, drop_connection

__all__ = ["connection_slot", "slots_in_use"]

#: the first key of every slot lock (the second is the hash of connection and slot)
_NAMESPACE_SQL = "hashtext('biconic.connection_slot')"


def _slot_key(connection: str | None, slot: int) -> str:
    return f"{connection if connection is not None else '-'}#{slot}"


@contextmanager
def connection_slot(dsn: str, connection: str | None, limit: int) -> Iterator[int | None]:
    """Take a free slot of ``connection`` (jobs without a connection id share one bucket); yields its number,
    or None when all ``limit`` are taken. The slot is held until the block ends (or the process dies: the
    lock goes with its connection, this thread's own, kept open between tasks)."""
    conn = cached_connection(dsn, "slots")
    taken = None
    try:
        for slot in range(limit):
            [(got,)] = execute(conn, f"SELECT pg_try_advisory_lock({_NAMESPACE_SQL}, hashtext($1))",
                               [_slot_key(connection, slot)], dsn)
            if got:
                taken = slot
                break
    except BaseException:
        drop_connection(dsn, "slots")  # a connection in doubt: closing it frees whatever it held
        raise
    try:
        yield taken
    finally:
        if taken is not None:
            try:
                execute(conn, f"SELECT pg_advisory_unlock({_NAMESPACE_SQL}, hashtext($1))",
                        [_slot_key(connection, taken)], dsn)
            except Exception:
                drop_connection(dsn, "slots")


def slots_in_use(dsn: str, connection: str | None, limit: int) -> int:
    """How many of ``connection``'s slots are held right now (for ``jobs show`` and the tests)."""
    conn = connect(dsn, autocommit=True)
    try:
        rows = execute(conn, f"SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                             f"AND classid::int = {_NAMESPACE_SQL} AND objid::int = ANY($1::int[])",
                       [[_hash(conn, dsn, _slot_key(connection, s)) for s in range(limit)]], dsn)
    finally:
        conn.close()
    return int(rows[0][0])


def _hash(conn: object, dsn: str, text: str) -> int:
    [(value,)] = execute(conn, "SELECT hashtext($1)", [text], dsn)
    return int(value)
