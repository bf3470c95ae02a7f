"""Every statement on the engine's own ``biconic`` schema: the ledger, quarantine, datasets, watermarks and the
archive manifest. No other module writes SQL against these tables.

- ``biconic.loads``, the ledger: one row per load key, inserted in the transaction that commits the rows it
  describes (``ON CONFLICT DO NOTHING``: a concurrent loader of the same key waits, then skips).
- ``biconic.quarantine``: rejected rows with rule, reason, source location and raw values (JSON text), and
  ``superseded_by``: the load that later committed the same source partition (same dataset, connection and
  partition key), set in that load's transaction.
- ``biconic.runs``, the run log: one row per load run (``load_id``), started before any data moves and
  finished with its outcome (``succeeded``, ``failed`` with the error, ``nothing to do``), never rolled back.
- ``biconic.datasets``: how each table is partitioned, and a ``version`` bumped in the transaction of every
  load, replace and restore (cache keys carry it).
- ``biconic.watermarks``: how far each incremental source has been read, advanced with the rows it covers.
- ``biconic.refreshes``: full refreshes under way, so a re-run after a crash finishes the same one.
- ``biconic.archive_files``, the manifest: every verified archive file and whether its rows are ``hot``
  (also in PostgreSQL), ``cold`` (only in the archive) or ``superseded``.

Functions take anything with ``run(sql, params, conn=...)``: a load's :class:`~engine.postgres.connection.Session`
or a pooled :class:`~engine.postgres.pool.MetaDb`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from engine.ids import ConnectionId

__all__ = [
    "LOADS", "MANIFEST", "QUARANTINE", "RUNS", "ManifestEntry", "Runs", "archived_files", "bump_version", "claim",
    "cold_files", "cold_for_restore", "cold_periods", "cold_summary", "complete", "connection_key",
    "counts_prove_contents", "dataset_layout", "dataset_version", "datasets", "ensure_meta", "finish_run",
    "forget_dataset", "forget_loads", "hot_files", "is_loaded", "last_load", "load_keys", "mark_cold", "mark_hot",
    "record_dataset",
    "record_files", "set_watermark", "start_run", "supersede", "supersede_quarantine", "table_exists", "versions",
    "watermark",
]

SCHEMA = "biconic"
LOADS = f"{SCHEMA}.loads"
QUARANTINE = f"{SCHEMA}.quarantine"
DATASETS = f"{SCHEMA}.datasets"
WATERMARKS = f"{SCHEMA}.watermarks"
MANIFEST = f"{SCHEMA}.archive_files"
RUNS = f"{SCHEMA}.runs"


class Runs(Protocol):
    """Something that runs one statement and returns its rows."""

    def run(self, sql: str, params: Sequence[Any] | None = None, *, conn: Any = None) -> list[tuple[Any, ...]]:
        ...


class ManifestEntry(Protocol):
    """A verified archive file as the manifest lists it (:class:`engine.archive.writer.ArchivedFile`)."""

    @property
    def connection_id(self) -> ConnectionId: ...
    @property
    def period(self) -> dt.date: ...
    @property
    def uri(self) -> str: ...
    @property
    def rows(self) -> int: ...
    @property
    def bytes(self) -> int: ...
    @property
    def sha256(self) -> str: ...
    @property
    def min_time(self) -> dt.datetime | None: ...
    @property
    def max_time(self) -> dt.datetime | None: ...


_DDL = [
    f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}",
    f"""CREATE TABLE IF NOT EXISTS {LOADS} (
        load_key text PRIMARY KEY,
        load_id text NOT NULL,
        dataset text NOT NULL,
        connection_id text,
        source text NOT NULL,
        partition_key text NOT NULL,
        spec_hash text NOT NULL,
        mode text NOT NULL,
        rows_in bigint NOT NULL DEFAULT 0,
        rows_loaded bigint NOT NULL DEFAULT 0,
        rows_quarantined bigint NOT NULL DEFAULT 0,
        rows_filtered bigint NOT NULL DEFAULT 0,
        started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        finished_at timestamptz,
        state text NOT NULL DEFAULT 'committed')""",
    f"CREATE INDEX IF NOT EXISTS loads_dataset_idx ON {LOADS} (dataset, finished_at)",
    f"""CREATE TABLE IF NOT EXISTS {QUARANTINE} (
        load_id text NOT NULL,
        dataset text NOT NULL,
        connection_id text,
        source text,
        row_number bigint,
        rule text,
        column_name text,
        reason text,
        raw text,
        quarantined_at timestamptz NOT NULL DEFAULT now())""",
    f"CREATE INDEX IF NOT EXISTS quarantine_load_idx ON {QUARANTINE} (dataset, load_id)",
    f"""CREATE TABLE IF NOT EXISTS {DATASETS} (
        dataset text PRIMARY KEY,
        time_column text,
        granularity text,
        hash_partitions integer NOT NULL DEFAULT 0,
        created_at timestamptz NOT NULL DEFAULT now())""",
    # bumped in the transaction of every load, replace, restore: query-cache keys carry it
    f"ALTER TABLE {DATASETS} ADD COLUMN IF NOT EXISTS version bigint NOT NULL DEFAULT 0",
    f"""CREATE TABLE IF NOT EXISTS {MANIFEST} (
        uri text PRIMARY KEY,
        dataset text NOT NULL,
        connection_id text NOT NULL,
        period date NOT NULL,
        load_key text NOT NULL,
        load_id text NOT NULL,
        rows bigint NOT NULL,
        bytes bigint NOT NULL,
        sha256 text NOT NULL,
        min_time timestamptz,
        max_time timestamptz,
        state text NOT NULL DEFAULT 'hot' CHECK (state IN ('hot', 'cold', 'superseded')),
        created_at timestamptz NOT NULL DEFAULT now(),
        changed_at timestamptz)""",
    f"CREATE INDEX IF NOT EXISTS archive_files_dataset_idx ON {MANIFEST} (dataset, period, state)",
    # incremental sources: how far each (dataset, connection, source) has been read, advanced with the data
    f"""CREATE TABLE IF NOT EXISTS {WATERMARKS} (
        dataset text NOT NULL,
        connection_key text NOT NULL,
        source text NOT NULL,
        cursor_column text NOT NULL,
        value text NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (dataset, connection_key, source))""",
    # connection ids may be integers, UUIDs or text: the engine's own tables hold their canonical text
    *[f"ALTER TABLE {t} ALTER COLUMN connection_id TYPE text USING connection_id::text"
      for t in (LOADS, QUARANTINE, MANIFEST)],
    # history: which partition a rejected row came from, and the later load of it that superseded the row
    f"ALTER TABLE {QUARANTINE} ADD COLUMN IF NOT EXISTS partition_key text",
    f"ALTER TABLE {QUARANTINE} ADD COLUMN IF NOT EXISTS superseded_by text",
    f"ALTER TABLE {QUARANTINE} ADD COLUMN IF NOT EXISTS superseded_at timestamptz",
    f"CREATE INDEX IF NOT EXISTS quarantine_partition_idx ON {QUARANTINE} (dataset, partition_key) "
    "WHERE superseded_by IS NULL",
    # connection_id as text: the run log keeps whatever id the load was given
    f"""CREATE TABLE IF NOT EXISTS {RUNS} (
        load_id text PRIMARY KEY,
        dataset text NOT NULL,
        source text NOT NULL,
        mode text NOT NULL,
        connection_id text,
        started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        finished_at timestamptz,
        seconds double precision,
        outcome text NOT NULL DEFAULT 'running',
        rows_in bigint NOT NULL DEFAULT 0,
        rows_loaded bigint NOT NULL DEFAULT 0,
        rows_quarantined bigint NOT NULL DEFAULT 0,
        rows_filtered bigint NOT NULL DEFAULT 0,
        partitions_done integer NOT NULL DEFAULT 0,
        partitions_skipped integer NOT NULL DEFAULT 0,
        error_class text,
        error text)""",
    # the backend of the run's ddl connection, open for the whole run: a run whose backend is gone without an
    # outcome was killed (see meta_reads.runs)
    f"ALTER TABLE {RUNS} ADD COLUMN IF NOT EXISTS backend_pid integer, "
    "ADD COLUMN IF NOT EXISTS backend_start timestamptz",
    f"CREATE INDEX IF NOT EXISTS runs_started_idx ON {RUNS} (started_at DESC)",
    f"CREATE INDEX IF NOT EXISTS runs_dataset_idx ON {RUNS} (dataset, started_at DESC)",
]


def ensure_meta(db: Runs, *, conn: Any) -> None:
    """Create the ``biconic`` schema once, on ``conn`` (committed by the caller); safe under concurrency, and
    skipped when the newest piece exists, so loads do not queue on DDL locks."""
    if _meta_current(db, conn):
        return
    db.run("SELECT pg_advisory_xact_lock(hashtext('biconic.meta'))", conn=conn)
    if _meta_current(db, conn):  # another load created it while this one waited: its DDL would only add locks
        return
    for stmt in _DDL:
        db.run(stmt, conn=conn)


def _meta_current(db: Runs, conn: Any) -> bool:
    """Whether the newest piece of the ``biconic`` schema is in place."""
    return bool(db.run(f"SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('{DATASETS}') "
                       "AND attname = 'version' AND to_regclass($1) IS NOT NULL "
                       f"AND to_regclass('{WATERMARKS}') IS NOT NULL AND to_regclass('{RUNS}') IS NOT NULL "
                       f"AND EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('{QUARANTINE}') "
                       "AND attname = 'superseded_at' AND NOT attisdropped) "
                       f"AND EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('{RUNS}') "
                       "AND attname = 'backend_start' AND NOT attisdropped) AND (SELECT atttypid FROM pg_attribute "
                       f"WHERE attrelid = to_regclass('{MANIFEST}') AND attname = 'connection_id') = "
                       "'text'::regtype", [MANIFEST], conn=conn))


def table_exists(db: Runs, relation: str, conn: Any = None) -> bool:
    return bool(db.run("SELECT to_regclass($1) IS NOT NULL", [relation], conn=conn)[0][0])


# --- datasets ---------------------------------------------------------------------------------------------------
def record_dataset(db: Runs, table: str, *, time_column: str, granularity: str, hash_partitions: int,
                   conn: Any) -> None:
    """How a new table is partitioned (in the transaction that creates it)."""
    db.run(f"INSERT INTO {DATASETS} (dataset, time_column, granularity, hash_partitions) "
           "VALUES ($1, $2, $3, $4) ON CONFLICT (dataset) DO UPDATE SET time_column = EXCLUDED.time_column, "
           "granularity = EXCLUDED.granularity, hash_partitions = EXCLUDED.hash_partitions",
           [table, time_column, granularity, hash_partitions], conn=conn)


def forget_dataset(db: Runs, table: str, *, conn: Any) -> bool:
    """Delete the record of a dataset no load ever committed to (its first load failed); False if one did."""
    return bool(db.run(f"DELETE FROM {DATASETS} WHERE dataset = $1 AND NOT EXISTS "
                       f"(SELECT 1 FROM {LOADS} WHERE dataset = $1) RETURNING 1", [table], conn=conn))


def dataset_layout(db: Runs, table: str, *, conn: Any = None) -> tuple[str | None, str, int] | None:
    """(time column, granularity, hash partitions) of a dataset this engine created, else None."""
    rows = db.run(f"SELECT time_column, granularity, hash_partitions FROM {DATASETS} WHERE dataset = $1",
                  [table], conn=conn)
    return (rows[0][0], str(rows[0][1]), int(rows[0][2] or 0)) if rows else None


def datasets(db: Runs, *, conn: Any = None) -> list[str]:
    """Every time-partitioned dataset, by name."""
    return [str(r[0]) for r in db.run(f"SELECT dataset FROM {DATASETS} WHERE time_column IS NOT NULL "
                                      "ORDER BY dataset", conn=conn)]


def dataset_version(db: Runs, table: str) -> tuple[str, int] | None:
    """(time column, version) of a dataset, or None when there is none of that name."""
    if not table_exists(db, DATASETS):
        return None
    rows = db.run(f"SELECT time_column, version FROM {DATASETS} WHERE dataset = $1", [table])
    return (str(rows[0][0]), int(rows[0][1])) if rows else None


def versions(db: Runs) -> list[tuple[str, int, bool]]:
    """(dataset, version, whether its PostgreSQL table still exists) of every dataset."""
    if not table_exists(db, DATASETS):
        return []
    return [(str(n), int(v), bool(e)) for n, v, e in db.run(
        "SELECT dataset, version, to_regclass(quote_ident(split_part(dataset, '.', 1)) || "
        "CASE WHEN position('.' in dataset) > 0 THEN '.' || quote_ident(split_part(dataset, '.', 2)) "
        f"ELSE '' END) IS NOT NULL FROM {DATASETS} ORDER BY dataset")]


def bump_version(db: Runs, dataset: str) -> None:
    """Mark the dataset changed, in the open data transaction (cached results keyed on it go stale)."""
    db.run(f"UPDATE {DATASETS} SET version = version + 1 WHERE dataset = $1", [dataset])


# --- the ledger -------------------------------------------------------------------------------------------------
def is_loaded(db: Runs, load_key: str, *, conn: Any) -> bool:
    return bool(db.run(f"SELECT 1 FROM {LOADS} WHERE load_key = $1", [load_key], conn=conn))


def claim(db: Runs, load_key: str, *, load_id: str, dataset: str, connection_id: ConnectionId | None, source: str,
          partition_key: str, spec_hash: str, mode: str) -> bool:
    """Insert the ledger row inside the data transaction. False when that key is already committed; a
    concurrent loader of the same key blocks here until the other transaction ends."""
    rows = db.run(
        f"INSERT INTO {LOADS} (load_key, load_id, dataset, connection_id, source, partition_key, "
        "spec_hash, mode, state) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'loading') "
        "ON CONFLICT (load_key) DO NOTHING RETURNING 1",
        [load_key, load_id, dataset, _text(connection_id), source, partition_key, spec_hash, mode])
    return len(rows) == 1


def complete(db: Runs, load_key: str, *, rows_in: int, rows_loaded: int, rows_quarantined: int = 0,
             rows_filtered: int = 0) -> None:
    """Record a claimed key's counts as committed (in the data transaction: they commit with the rows)."""
    db.run(f"UPDATE {LOADS} SET rows_in = $2, rows_loaded = $3, rows_quarantined = $4, rows_filtered = $5, "
           "finished_at = clock_timestamp(), state = 'committed' WHERE load_key = $1",
           [load_key, rows_in, rows_loaded, rows_quarantined, rows_filtered])


def _text(connection_id: ConnectionId | None) -> str | None:
    """The engine's tables keep connection ids as their canonical text (integers, UUIDs and text ids alike)."""
    return None if connection_id is None else str(connection_id)


def _scope(dataset: str, connection_id: ConnectionId | None) -> tuple[str, list[Any]]:
    """A dataset's rows, or one connection's share of them (tables are shared by tenants)."""
    if connection_id is None:
        return "", [dataset]
    return "AND connection_id = $2", [dataset, _text(connection_id)]


def load_keys(db: Runs, dataset: str, connection_id: ConnectionId | None, *, conn: Any) -> set[str]:
    """The keys of the committed loads (restores aside) of a dataset, or of one connection's share."""
    scope, params = _scope(dataset, connection_id)
    return {str(r[0]) for r in db.run(f"SELECT load_key FROM {LOADS} WHERE dataset = $1 {scope} "
                                      "AND mode <> 'restore'", params, conn=conn)}


def forget_loads(db: Runs, dataset: str, connection_id: ConnectionId | None) -> None:
    """A replace: drop the ledger rows (and supersede the archive files) of the rows it deletes, in its
    transaction. The old files describe rows that no longer exist: kept for audit, never read."""
    scope, params = _scope(dataset, connection_id)
    db.run(f"DELETE FROM {LOADS} WHERE dataset = $1 {scope}", params)
    db.run(f"UPDATE {MANIFEST} SET state = 'superseded', changed_at = now() "
           f"WHERE dataset = $1 {scope} AND state <> 'superseded'", params)


def datasets_loaded_by(db: Runs, connection_id: ConnectionId) -> list[str]:
    """The datasets a connection has committed loads into (what its API token may list)."""
    if not table_exists(db, LOADS):
        return []
    return [str(r[0]) for r in db.run(f"SELECT DISTINCT dataset FROM {LOADS} WHERE connection_id = $1 "
                                      "AND state = 'committed' ORDER BY 1", [_text(connection_id)])]


def last_load(db: Runs, dataset: str, connection_id: ConnectionId | None) -> tuple[Any, ...] | None:
    """(load_id, source, mode, rows_loaded, finished_at) of the dataset's newest committed load (of the
    connection, when one is given: a load of several connections' rows is not one connection's to see)."""
    scope = "AND connection_id = $2" if connection_id is not None else ""
    rows = db.run(f"SELECT load_id, source, mode, rows_loaded, finished_at FROM {LOADS} "
                  f"WHERE dataset = $1 {scope} AND state = 'committed' "
                  "ORDER BY finished_at DESC NULLS LAST LIMIT 1",
                  [dataset, *([_text(connection_id)] if connection_id is not None else [])])
    return rows[0] if rows else None


def counts_prove_contents(db: Runs, dataset: str) -> bool:
    """Whether equal row counts (per connection) prove a partition's archive files hold exactly its rows.

    A load archives exactly the rows it writes, except a merge: its staged rows are all archived, yet it keeps
    one per key and deletes a key's row from its old period when its time moved; and a load with archiving
    off writes rows the archive never sees. With only the first kind, the archive holds PostgreSQL's rows and
    maybe more; with only the second, PostgreSQL holds the archive's and maybe more: either way equal counts
    mean equal contents. With both, stale merged versions can balance unarchived rows exactly, and trusting
    the count would tier out the stale rows and drop the unarchived ones. (A replace supersedes the files of
    the rows it deletes and clears their ledger rows; a restore writes exactly a file's rows; neither breaks
    the argument.)
    """
    merged, unarchived = db.run(
        f"SELECT EXISTS (SELECT 1 FROM {LOADS} WHERE dataset = $1 AND mode = 'merge' "
        "AND state = 'committed' AND rows_loaded > 0), "
        f"EXISTS (SELECT 1 FROM {LOADS} l WHERE l.dataset = $1 AND l.mode <> 'restore' "
        f"AND l.state = 'committed' AND l.rows_loaded > 0 AND NOT EXISTS (SELECT 1 FROM {MANIFEST} m "
        "WHERE m.dataset = l.dataset AND m.load_key = l.load_key))", [dataset])[0]
    return not (merged and unarchived)


def supersede_quarantine(db: Runs, dataset: str, connection_id: ConnectionId | None, partition_key: str, *,
                         load_id: str) -> int:
    """A partition committed again: the rejected rows earlier loads of it left (same dataset, connection and
    partition key) are marked superseded by ``load_id``, in the transaction that commits it."""
    rows = db.run(
        f"UPDATE {QUARANTINE} q SET superseded_by = $3, superseded_at = clock_timestamp() "
        "WHERE q.dataset = $1 AND q.partition_key = $2 AND q.load_id <> $3 AND q.superseded_by IS NULL "
        f"AND EXISTS (SELECT 1 FROM {RUNS} r WHERE r.load_id = q.load_id "
        "AND r.connection_id IS NOT DISTINCT FROM $4) RETURNING 1",
        [dataset, partition_key, load_id, None if connection_id is None else str(connection_id)])
    return len(rows)


# --- the run log ----------------------------------------------------------------------------------------------
def start_run(db: Runs, load_id: str, *, dataset: str, source: str, mode: str, connection_id: ConnectionId | None,
              conn: Any) -> None:
    """A run's first row, before any data moves (committed by the caller, apart from the data), with the backend
    of ``conn``, which stays open for the whole run."""
    db.run(f"INSERT INTO {RUNS} (load_id, dataset, source, mode, connection_id, backend_pid, backend_start) "
           "SELECT $1, $2, $3, $4, $5, pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()",
           [load_id, dataset, source, mode, None if connection_id is None else str(connection_id)], conn=conn)


def finish_run(db: Runs, load_id: str, *, outcome: str, seconds: float, skipped: int,
               error_class: str | None = None, error: str | None = None) -> None:
    """A run's outcome; its counts are those of the partitions it committed (the ledger rows of its id). A run
    that succeeded without committing any partition (all of them loaded before) did ``nothing to do``."""
    db.run(f"UPDATE {RUNS} r SET finished_at = clock_timestamp(), seconds = $3, outcome = CASE "
           "WHEN $2::text = 'succeeded' AND c.done = 0 THEN 'nothing to do' ELSE $2::text END, "
           "partitions_skipped = $4, error_class = $5, error = $6, rows_in = c.rows_in, "
           "rows_loaded = c.rows_loaded, rows_quarantined = c.rows_quarantined, rows_filtered = c.rows_filtered, "
           "partitions_done = c.done FROM (SELECT coalesce(sum(rows_in), 0) AS rows_in, "
           "coalesce(sum(rows_loaded), 0) AS rows_loaded, coalesce(sum(rows_quarantined), 0) AS rows_quarantined, "
           f"coalesce(sum(rows_filtered), 0) AS rows_filtered, count(*) AS done FROM {LOADS} "
           "WHERE load_id = $1 AND state = 'committed') c WHERE r.load_id = $1",
           [load_id, outcome, seconds, skipped, error_class, error])


# --- watermarks ----------------------------------------------------------------------------------
def connection_key(connection_id: ConnectionId | None) -> str:
    return "" if connection_id is None else str(connection_id)


def watermark(db: Runs, dataset: str, connection_id: ConnectionId | None, source: str, *, conn: Any) -> str | None:
    """The stored high mark of an incremental source (None before its first committed run)."""
    rows = db.run(f"SELECT value FROM {WATERMARKS} WHERE dataset = $1 AND connection_key = $2 AND source = $3",
                  [dataset, connection_key(connection_id), source], conn=conn)
    return str(rows[0][0]) if rows else None


def set_watermark(db: Runs, dataset: str, connection_id: ConnectionId | None, source: str, cursor: str,
                  value: str) -> None:
    """Advance the watermark inside the open data transaction: it commits with the rows it covers."""
    db.run(f"INSERT INTO {WATERMARKS} (dataset, connection_key, source, cursor_column, value) "
           "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (dataset, connection_key, source) DO UPDATE SET "
           "value = EXCLUDED.value, cursor_column = EXCLUDED.cursor_column, updated_at = now()",
           [dataset, connection_key(connection_id), source, cursor, value])


# --- the archive manifest ---------------------------------------------------------------------------------------
def record_files(db: Runs, files: Iterable[ManifestEntry], *, dataset: str, load_key: str, load_id: str,
                 state: str = "hot") -> None:
    """List verified files in the manifest, inside the caller's open data transaction: one statement for all of
    them (a load writes one file per connection and period, often hundreds; a statement each cost 2 ms of
    parameter binding in Python apiece)."""
    files = list(files)
    if not files:
        return
    columns = ([f.uri for f in files], [_text(f.connection_id) for f in files], [f.period for f in files],
               [f.rows for f in files], [f.bytes for f in files], [f.sha256 for f in files],
               [f.min_time for f in files], [f.max_time for f in files])
    db.run(f"INSERT INTO {MANIFEST} (uri, dataset, connection_id, period, load_key, load_id, rows, bytes, "
           "sha256, min_time, max_time, state) SELECT f.uri, $9, f.connection_id, f.period, $10, $11, f.rows, "
           "f.bytes, f.sha256, f.min_time, f.max_time, $12 FROM unnest($1::text[], $2::text[], $3::date[], "
           "$4::bigint[], $5::bigint[], $6::text[], $7::timestamptz[], $8::timestamptz[]) "
           "AS f(uri, connection_id, period, rows, bytes, sha256, min_time, max_time) "
           "ON CONFLICT (uri) DO UPDATE SET rows = EXCLUDED.rows, bytes = EXCLUDED.bytes, "
           "sha256 = EXCLUDED.sha256, min_time = EXCLUDED.min_time, max_time = EXCLUDED.max_time, "
           "load_id = EXCLUDED.load_id, state = EXCLUDED.state, changed_at = now()",
           [*columns, dataset, load_key, load_id, state])


def supersede(db: Runs, uris: Sequence[str]) -> None:
    """Files whose rows a snapshot now holds: kept for audit, never read."""
    if uris:
        db.run(f"UPDATE {MANIFEST} SET state = 'superseded', changed_at = now() WHERE uri = ANY($1)", [list(uris)])


def hot_files(db: Runs, dataset: str, period: dt.date) -> list[tuple[str, str, int]]:
    """(uri, connection id as text, rows) of a period's files whose rows are also in PostgreSQL."""
    return [(str(u), str(c), int(r)) for u, c, r in db.run(
        f"SELECT uri, connection_id, rows FROM {MANIFEST} WHERE dataset = $1 AND period = $2 AND state = 'hot'",
        [dataset, period])]


def mark_cold(db: Runs, dataset: str, period: dt.date) -> None:
    """A period's files become the only copy of its rows (in the transaction that drops its partition)."""
    db.run(f"UPDATE {MANIFEST} SET state = 'cold', changed_at = now() WHERE dataset = $1 AND period = $2 "
           "AND state = 'hot'", [dataset, period])


def cold_for_restore(db: Runs, dataset: str, period: dt.date) -> list[tuple[str, int, Any]]:
    """(uri, rows, tiered at) of a period's cold files, locked until the restoring transaction ends."""
    return [(str(u), int(r), t) for u, r, t in db.run(
        f"SELECT uri, rows, changed_at FROM {MANIFEST} WHERE dataset = $1 AND period = $2 AND state = 'cold' "
        "ORDER BY uri FOR UPDATE", [dataset, period])]


def mark_hot(db: Runs, uris: Sequence[str]) -> None:
    """Restored files: their rows are in PostgreSQL again (in the restoring transaction)."""
    db.run(f"UPDATE {MANIFEST} SET state = 'hot', changed_at = now() WHERE uri = ANY($1)", [list(uris)])


def cold_periods(db: Runs, dataset: str, connection_id: ConnectionId | None = None, *, until: dt.date | None = None,
                 conn: Any = None) -> list[dt.date]:
    """The periods of a dataset (or of one connection's rows) tiered out to the archive, oldest first."""
    scope, params = _scope(dataset, connection_id)
    if until is not None:
        scope += f" AND period <= ${len(params) + 1}"
        params.append(until)
    return [r[0] for r in db.run(f"SELECT DISTINCT period FROM {MANIFEST} WHERE dataset = $1 AND state = 'cold' "
                                 f"{scope} ORDER BY 1", params, conn=conn)]


def cold_summary(db: Runs, dataset: str, connection_id: ConnectionId | None) -> list[tuple[Any, int, int]]:
    """(period, rows, files) of a dataset's (or connection's) cold periods."""
    if not table_exists(db, MANIFEST):
        return []
    scope, params = _scope(dataset, connection_id)
    return [(p, int(r), int(f)) for p, r, f in db.run(
        f"SELECT period, sum(rows), count(*) FROM {MANIFEST} WHERE dataset = $1 AND state = 'cold' {scope} "
        "GROUP BY 1 ORDER BY 1", params)]


def cold_files(db: Runs, names: Sequence[str]) -> dict[str, list[str]]:
    """The cold files of each dataset named (what a query reads beside PostgreSQL)."""
    if not names or not table_exists(db, MANIFEST):
        return {}
    found: dict[str, list[str]] = {}
    for dataset, uri in db.run(f"SELECT dataset, uri FROM {MANIFEST} WHERE state = 'cold' "
                               "AND dataset = ANY($1) ORDER BY uri", [list(names)]):
        found.setdefault(str(dataset), []).append(str(uri))
    return found


def archived_files(db: Runs, dataset: str) -> list[str]:
    """Every listed file of a dataset that is not superseded (the raw archive view)."""
    return [str(r[0]) for r in db.run(f"SELECT uri FROM {MANIFEST} WHERE dataset = $1 AND state <> 'superseded' "
                                      "ORDER BY uri", [dataset])]
