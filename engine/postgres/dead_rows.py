"""What a killed replace leaves behind: its COPYed rows, dead, inside the table's partitions.

A replace deletes the old rows and COPYs the new ones in one transaction. Killed before it commits, the new
rows stay in the heap and the indexes as dead tuples until autovacuum gets there; a re-run meanwhile deletes
and COPYs through twice the pages (seen: 40-46 s instead of 23 s). :func:`vacuum_dead` is run before the
re-run's transaction: it vacuums the partitions that hold many dead tuples (``pg_stat_user_tables``), so the
new rows go into the space the killed attempt's rows held.

The statistics are updated by each backend as its transaction ends (a killed client's backend aborts and
reports as soon as it sees the connection close), not on the spot: a check that runs before that report just
finds nothing to do, and autovacuum remains the fallback.
"""

from __future__ import annotations

import logging
from typing import Any

from engine.names import qualified
from engine.postgres.connection import Session, connect, execute

__all__ = ["MIN_DEAD", "vacuum_dead"]

log = logging.getLogger("biconic.postgres")

#: fewer dead tuples than this in a partition are left to autovacuum
MIN_DEAD = 10_000
#: ... and so are dead tuples under this share of the live ones (autovacuum's own default threshold)
DEAD_SHARE = 0.2

#: the leaf partitions of ``$1`` holding at least ``$2`` dead tuples and more than ``$3`` of their live ones
_BLOATED_SQL = (
    "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), s.n_dead_tup "
    "FROM pg_partition_tree(to_regclass($1)) t JOIN pg_class c ON c.oid = t.relid "
    "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_stat_user_tables s ON s.relid = t.relid "
    "WHERE t.isleaf AND s.n_dead_tup >= $2 AND s.n_dead_tup > s.n_live_tup * $3 ORDER BY 1")


def vacuum_dead(session: Session, table: str, *, conn: Any = None) -> list[str]:
    """VACUUM ``table``'s partitions that hold many dead tuples (outside any transaction: VACUUM needs its
    own); returns them. A partition another session holds a conflicting lock on is skipped, not waited for."""
    conn = conn or session.ddl
    found = session.run(_BLOATED_SQL, [qualified(table), MIN_DEAD, DEAD_SHARE], conn=conn)
    session.commit(conn)
    if not found:
        return []
    names = [str(name) for name, _ in found]
    log.info("vacuuming %d partition(s) of %s holding %s dead rows (a killed load's)", len(names), table,
             f"{sum(int(dead) for _, dead in found):,}")
    vacuum = connect(session.dsn, autocommit=True)
    try:
        execute(vacuum, f"VACUUM (SKIP_LOCKED) {', '.join(names)}", None, session.dsn)
    finally:
        vacuum.close()
    return names
