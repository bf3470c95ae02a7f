"""The engine's own schema for children being filled (``biconic_stage``), and the sweep of what dead loads left.

A new child is created and filled there by the helper connections (:mod:`engine.postgres.staging`), under a
name carrying the load's id, and moved into the dataset's schema (``SET SCHEMA`` and ``RENAME``, which lock
only the staged table) inside the load's transaction, just before it is attached. A load killed after its
helpers committed therefore leaves its tables here, never beside the user's tables.

While it may own staged tables a load holds a session advisory lock on its id (on a helper connection: the
lock goes with that connection, so with the process). A staged table whose load's lock can be taken belongs to
no live load: :func:`sweep` drops it. Every load sweeps when it starts, and so does ``biconic tier``.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from engine.names import quote_ident, shorten
from engine.postgres.connection import Session, execute

__all__ = [
    "STAGE_SCHEMA", "ensure_stage_schema", "hold_load", "move_into", "staged_name", "sub_name", "sweep",
]

STAGE_SCHEMA = "biconic_stage"
#: the first key of a load's lock (the two-key form: apart from the engine's one-key child and table locks)
_LOCK_SPACE = "SELECT hashtext('biconic_stage')"
#: a staged table's name: a hash of the child's name, then the owning load's id
_NAME = re.compile(r"^s[0-9a-f]{8}_([0-9a-f]{32})$")

#: the top-level staged tables (a hash-partitioned one's sub-partitions go with it), with their oids
_STAGED_SQL = ("SELECT c.relname, c.oid::bigint FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
               "WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY c.relname")


def staged_name(load_id: str, child: str) -> str:
    """Where ``load_id`` stages ``child``: unique per load and child, and short, the child's part first. The
    helpers create indexes on several staged tables at once, in separate transactions, and PostgreSQL names an
    index after its table cut to fit 63 bytes: a name that two tables share up to the cut would make the
    second transaction wait on the first's (uncommitted) catalog row until the lock timeout."""
    return f"s{hashlib.sha256(child.encode()).hexdigest()[:8]}_{load_id}"


def sub_name(table: str, i: int) -> str:
    """The ``i``-th hash sub-partition of ``table`` (as :func:`engine.postgres.ddl.standalone_child_sql` names it)."""
    return shorten(f"{table}_h{i}")


def ensure_stage_schema(conn: Any, dsn: str) -> None:
    """Create ``biconic_stage`` on first use (serialised: two first loads would race on the catalog)."""
    if execute(conn, "SELECT to_regnamespace($1) IS NULL", [STAGE_SCHEMA], dsn)[0][0]:
        execute(conn, "SELECT pg_advisory_xact_lock(hashtext($1))", [f"schema:{STAGE_SCHEMA}"], dsn)
        execute(conn, f"CREATE SCHEMA IF NOT EXISTS {quote_ident(STAGE_SCHEMA)}", None, dsn)
    conn.commit()


def hold_load(conn: Any, dsn: str, load_id: str) -> None:
    """Mark ``load_id`` alive for as long as ``conn`` is open (a session lock: it outlives transactions)."""
    execute(conn, f"SELECT pg_advisory_lock(({_LOCK_SPACE}), hashtext($1))", [load_id], dsn)
    conn.commit()


def move_into(session: Session, load_id: str, schema: str, child: str, hash_partitions: int) -> None:
    """Move a staged child (and its hash sub-partitions) into ``schema`` under its own name, in the load's
    transaction. Each statement takes ACCESS EXCLUSIVE on the staged table only, which nobody else reads;
    its indexes and constraints move with it."""
    staged = staged_name(load_id, child)
    for old, new in [(staged, child), *((sub_name(staged, i), sub_name(child, i)) for i in range(hash_partitions))]:
        session.run(f"ALTER TABLE {quote_ident(STAGE_SCHEMA)}.{quote_ident(old)} SET SCHEMA {quote_ident(schema)}")
        session.run(f"ALTER TABLE {quote_ident(schema)}.{quote_ident(old)} RENAME TO {quote_ident(new)}")


def sweep(session: Session, *, conn: Any = None) -> list[str]:
    """Drop the staged tables of loads that are gone (their lock is free); a live load's are kept. Commits on
    ``conn``; returns the names dropped."""
    conn = conn or session.ddl
    dropped: list[str] = []
    if session.run("SELECT to_regnamespace($1) IS NULL", [STAGE_SCHEMA], conn=conn)[0][0]:
        session.commit(conn)
        return dropped
    for name, oid in session.run(_STAGED_SQL, [STAGE_SCHEMA], conn=conn):
        found = _NAME.match(name)
        if found is None:
            continue  # not the engine's: left alone
        # the lock held to the end of this transaction also keeps a second sweeper off the same table
        dead = session.run(f"SELECT pg_try_advisory_xact_lock(({_LOCK_SPACE}), hashtext($1))", [found.group(1)],
                           conn=conn)[0][0]
        if dead and session.run("SELECT to_regclass($1)::oid::bigint = $2",
                                [f"{quote_ident(STAGE_SCHEMA)}.{quote_ident(name)}", oid], conn=conn)[0][0]:
            session.run(f"DROP TABLE {quote_ident(STAGE_SCHEMA)}.{quote_ident(name)}", conn=conn)
            dropped.append(name)
        session.commit(conn)
    return dropped
