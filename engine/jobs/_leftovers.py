"""What :mod:`engine.jobs.sweeps` finds to remove, kept apart from the jobs themselves: the archive files no
manifest lists, the staged children an older release left unattached beside the user's tables, and the cache
entries nothing can read any more. Each finder only *finds*; the sweeps decide and remove."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from engine.archive.store import Store
from engine.archive.writer import PERIOD_COLUMN, dataset_dir
from engine.names import quote_ident
from engine.postgres import ddl, meta
from engine.postgres.stage_area import STAGE_SCHEMA

__all__ = ["ArchiveFile", "archive_files", "glob_escape", "listed", "manifest_elsewhere", "oldest_transaction",
           "qualified_child", "stale_cache_key", "unattached_children"]

#: where raw uploads go in the archive (:func:`engine.archive.uploads.tier_uploads`): never in the manifest
UPLOADS_DIR = "_uploads"
#: the archive writer's file names (a load key, a part number) and its temporary keys (``.{name}.tmp-{8 hex}``)
_FINAL = re.compile(r"^[^./][^/]*\.parquet$")
_TEMP = re.compile(r"^\.[^/]+\.parquet\.tmp-[0-9a-f]{8}$")
#: a cache key that carries a dataset version (:mod:`engine.reads.catalog`), its database tag taken off:
#: ``hot:{dataset}:{id}:v{n}``, ``meta:{dataset}:{id or *}:v{n}``
_VERSIONED = re.compile(r"^(hot|meta):(.+):v(\d+)$", re.DOTALL)


@dataclass(frozen=True)
class ArchiveFile:
    """A file the archive writer placed (or began to place): its path in the store, URI, age and kind."""

    path: str
    uri: str
    modified: float  # POSIX seconds
    temporary: bool


def _modified(info: dict[str, Any]) -> float | None:
    """A file's last change as POSIX seconds: ``mtime`` on a local disk, ``LastModified`` on S3."""
    value = info.get("mtime", info.get("LastModified"))
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()
    return float(value) if isinstance(value, int | float) else None


def archive_files(store: Store, datasets: Sequence[str]) -> Iterator[ArchiveFile]:
    """The files under the folders of ``datasets`` shaped as the writer lays them out
    (``{dataset}/connection_id=.../period=.../{name}``), one folder at a time; anything else is not ours."""
    for dataset in datasets:
        folder = store.path(dataset_dir(dataset))
        if dataset_dir(dataset) == UPLOADS_DIR or not store.fs.exists(folder):
            continue
        for here, _dirs, files in store.fs.walk(folder, detail=True):
            parts = here[len(folder):].strip("/").split("/")
            if len(parts) != 2 or not parts[0].startswith("connection_id=") \
                    or not parts[1].startswith(f"{PERIOD_COLUMN}="):
                continue
            for name, info in sorted(files.items()):
                base = name.rpartition("/")[2]
                modified = _modified(info)
                temporary = bool(_TEMP.match(base))
                if modified is None or not (temporary or _FINAL.match(base)):
                    continue
                path = f"{here.rstrip('/')}/{base}"
                yield ArchiveFile(path=path, uri=store.uri(path), modified=modified, temporary=temporary)


def listed(db: meta.Runs, uris: Sequence[str]) -> set[str]:
    """Which of ``uris`` the manifest lists (in any state: superseded files are kept for audit)."""
    if not uris:
        return set()
    return {str(r[0]) for r in db.run(f"SELECT uri FROM {meta.MANIFEST} WHERE uri = ANY($1)", [list(uris)])}


def oldest_transaction(db: meta.Runs) -> float | None:
    """When the oldest transaction still open on this database began (POSIX seconds), None if none is open.

    A load lists its archive files in the transaction that commits their rows, which began before it placed
    them: a file placed after the oldest open transaction began may still be listed by it. (Transactions of
    other roles count only where this one may see them: pg_read_all_stats, or the same role.)
    """
    [(oldest,)] = db.run("SELECT extract(epoch FROM min(xact_start))::float8 FROM pg_stat_activity "
                         "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                         "AND backend_type = 'client backend' AND xact_start IS NOT NULL")
    return None if oldest is None else float(oldest)


def manifest_elsewhere(db: meta.Runs, store: Store) -> bool:
    """Whether the manifest lists files but none under this archive: the archive URL is not the one the loads
    wrote to (a moved folder, a typo), and every file here would look unlisted."""
    root = store.uri(store.root).rstrip("/") + "/"
    [(some, here)] = db.run(f"SELECT EXISTS (SELECT 1 FROM {meta.MANIFEST}), "
                            f"EXISTS (SELECT 1 FROM {meta.MANIFEST} WHERE starts_with(uri, $1))", [root])
    return bool(some) and not bool(here)


def unattached_children(db: meta.Runs, schemas: Sequence[str], *, conn: Any) -> list[tuple[str, str]]:
    """(schema, table) of the tables in ``schemas`` that look like a staged child never attached: not a
    partition, and carrying the bounds ``CHECK`` only a staged child has (:func:`engine.postgres.ddl.
    bounds_constraint`). Releases before ``biconic_stage`` staged children there; a killed load left them."""
    rows = db.run("SELECT n.nspname, c.relname, k.conname FROM pg_class c "
                  "JOIN pg_namespace n ON n.oid = c.relnamespace "
                  "JOIN pg_constraint k ON k.conrelid = c.oid AND k.contype = 'c' "
                  "WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND n.nspname = ANY($1) "
                  "AND n.nspname <> $2 ORDER BY 1, 2", [list(schemas), STAGE_SCHEMA], conn=conn)
    return [(str(s), str(t)) for s, t, k in rows if k == ddl.bounds_constraint(str(t))]


def qualified_child(schema: str, child: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(child)}"


def glob_escape(text: str) -> str:
    """``text`` as a literal inside a Redis MATCH pattern (as :mod:`engine.reads.cache` escapes its prefix)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def stale_cache_key(key: str, versions: dict[str, tuple[int, bool]]) -> bool | None:
    """Whether a cache key (without the prefix) can never be read again: its dataset is gone (no record, or
    the table dropped) or a load has moved the dataset past its version. ``None``: not a versioned key.

    A key is read as every dataset whose name, then ``:``, begins it (dataset and connection names may hold
    ``:``); it is stale only if stale under each reading, so a live entry is never taken.
    """
    found = _VERSIONED.match(key)
    if found is None:
        return None
    body, version = found.group(2), int(found.group(3))
    readings = [versions[name] for name in versions if body.startswith(name + ":")]
    return all(not exists or version < current for current, exists in readings)
