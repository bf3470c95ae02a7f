"""Full refreshes under way (``biconic.refreshes``): a row per load scope, gone when every partition of the
refresh committed, so a re-run after a crash resumes the same refresh (see :mod:`engine.pipeline.reload`).
Kept beside :mod:`engine.postgres.meta` (which holds the rest of the ``biconic`` schema); the table is created
on first use, since only full refreshes need it."""

from __future__ import annotations

from typing import Any

from engine.ids import ConnectionId
from engine.postgres.meta import SCHEMA, Runs, connection_key, table_exists

__all__ = ["REFRESHES", "finish_refresh", "note_first_keys", "start_refresh"]

#: a full refresh under way (a row per load scope, gone when it finishes): a re-run after a crash resumes it
REFRESHES = f"{SCHEMA}.refreshes"
_REFRESHES_DDL = f"""CREATE TABLE IF NOT EXISTS {REFRESHES} (
    dataset text NOT NULL,
    connection_key text NOT NULL,
    scope text NOT NULL,
    refresh_id text NOT NULL,
    first_keys text NOT NULL DEFAULT '',
    started_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dataset, connection_key, scope))"""


def start_refresh(db: Runs, dataset: str, connection_id: ConnectionId | None, scope: str, refresh_id: str, *,
                  conn: Any) -> tuple[str, set[str]]:
    """The full refresh of this load scope that a crash left unfinished, else a new one named ``refresh_id``:
    its id and the keys it loads as first loads (partitions never loaded before it started)."""
    if not table_exists(db, REFRESHES, conn):  # created on first use: only full refreshes need it
        db.run("SELECT pg_advisory_xact_lock(hashtext('biconic.meta'))", conn=conn)
        db.run(_REFRESHES_DDL, conn=conn)
    rows = db.run(f"INSERT INTO {REFRESHES} (dataset, connection_key, scope, refresh_id) VALUES ($1, $2, $3, $4) "
                  "ON CONFLICT (dataset, connection_key, scope) DO UPDATE SET scope = EXCLUDED.scope "
                  "RETURNING refresh_id, first_keys",
                  [dataset, connection_key(connection_id), scope, refresh_id], conn=conn)
    return str(rows[0][0]), {k for k in str(rows[0][1]).split(",") if k}


def note_first_keys(db: Runs, dataset: str, connection_id: ConnectionId | None, scope: str, keys: set[str], *,
                    conn: Any) -> None:
    """Remember the keys a full refresh loads as first loads, before it loads them."""
    db.run(f"UPDATE {REFRESHES} SET first_keys = $4 WHERE dataset = $1 AND connection_key = $2 AND scope = $3",
           [dataset, connection_key(connection_id), scope, ",".join(sorted(keys))], conn=conn)


def finish_refresh(db: Runs, dataset: str, connection_id: ConnectionId | None, scope: str, *, conn: Any) -> None:
    """A full refresh whose every partition committed: the next one starts anew."""
    db.run(f"DELETE FROM {REFRESHES} WHERE dataset = $1 AND connection_key = $2 AND scope = $3",
           [dataset, connection_key(connection_id), scope], conn=conn)
