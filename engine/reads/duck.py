"""Ad-hoc SQL with DuckDB over every dataset: hot rows in PostgreSQL plus cold rows in the archive.

Each dataset is one view, ``orders`` (``sales.orders`` for a table outside ``public``): its PostgreSQL table
(read through DuckDB's postgres scanner, filters pushed down) ``UNION ALL`` the manifest-listed archive files
whose partition was tiered out of PostgreSQL (state ``cold``). A partition is in exactly one of the two, so
nothing is counted twice across the tiering boundary. ``archive.orders`` is the raw archive: every listed
file of the dataset (hot and cold), with its hive columns ``connection_id`` and ``period``; a table outside
``public`` keeps its schema there too (``archive.sales.orders``), so ``orders`` and ``sales.orders`` never collide.
The engine's own tables read as they are in PostgreSQL (read only, never cached): ``biconic.runs`` (the run
log), ``biconic.loads`` (the ledger), ``biconic.quarantine``, ``biconic.datasets``, ``biconic.watermarks``,
``biconic.archive_files``.

Results are cached (see :mod:`engine.reads.cache`) under the SQL text and the versions of the datasets it names;
every load bumps its dataset's version in the load's own transaction, so a load invalidates.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from engine.archive.store import Store
from engine.errors import QueryError, SpecError
from engine.names import quote_ident
from engine.postgres import meta
from engine.postgres.pool import MetaDb, meta_db
from engine.postgres.server import resolve_dsn
from engine.reads.cache import get_cache
from engine.reads.measure import answered, looked_up
from engine.redact import redact, scrub, url_secrets
from engine.settings import settings

__all__ = ["QueryResult", "query", "run_query"]

log = logging.getLogger("biconic.query")

#: manifest re-reads when a tiering or restore commits while a query runs
_ATTEMPTS = 3
#: the engine's own tables a query may read (``SELECT * FROM biconic.runs``)
_META_TABLES = (meta.RUNS, meta.LOADS, meta.QUARANTINE, meta.DATASETS, meta.WATERMARKS, meta.MANIFEST)


@dataclass
class QueryResult:
    """A query's rows and how they were obtained."""

    frame: pl.DataFrame
    cached: bool
    seconds: float
    datasets: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Dataset:
    name: str  # as in biconic.datasets: "orders", "sales.orders"
    version: int
    exists: bool  # the PostgreSQL table is still there


def query(sql: str, *, dsn: str | None = None, archive: str | None = None, cache: bool = True) -> pl.DataFrame:
    """Run ``sql`` (DuckDB dialect) over every dataset and return the rows.

    >>> engine.query("SELECT connection_id, count(*) FROM orders GROUP BY 1")  # doctest: +SKIP
    """
    return run_query(sql, dsn=dsn, archive=archive, cache=cache).frame


def run_query(sql: str, *, dsn: str | None = None, archive: str | None = None, cache: bool = True,
              params: Sequence[Any] | None = None) -> QueryResult:
    """:func:`query` with the details: whether the cache answered, how long it took, which datasets.

    ``params`` are bound to the SQL's ``$1``, ``$2``... (never formatted into it) and are part of the cache
    key: one SQL text asked with another connection's id is another entry.
    """
    if not sql or not sql.strip():
        raise SpecError("sql", "empty query")
    started = time.perf_counter()
    dsn = resolve_dsn(dsn)
    url = settings().archive(archive)
    store = Store(url) if url is not None else None
    with meta_db(dsn) as db:
        datasets = [_Dataset(name, version, exists) for name, version, exists in meta.versions(db)]
        named = [d for d in datasets if _mentions(sql, d.name)]
        key = _cache_key(sql, named, url, dsn, params)
        # the run log and the quarantine change without a dataset version: never cached
        store_cache = get_cache() if cache and not _reads_meta(sql) else None
        if store_cache is not None:
            hit = store_cache.get_frame(key)
            looked_up("query", hit is not None)
            if hit is not None:
                answered("cache", started)
                return QueryResult(hit, True, time.perf_counter() - started, [d.name for d in named])
        for attempt in range(1, _ATTEMPTS + 1):
            cold = meta.cold_files(db, [d.name for d in named])
            frame = _run_duckdb(sql, dsn, store, datasets, cold, db, params)
            if meta.cold_files(db, [d.name for d in named]) == cold:
                break
            log.info("tiering changed the archive while the query ran; running it again (%d)", attempt)
        if store_cache is not None:
            store_cache.set_frame(key, frame, ttl=settings().query_ttl)
    answered("archive" if any(cold.values()) or _wants_archive(sql) else "postgresql", started)
    return QueryResult(frame, False, time.perf_counter() - started, [d.name for d in named])


def _mentions(sql: str, dataset: str) -> bool:
    """Whether the SQL may read the dataset (case-insensitive word match: too many is only less caching)."""
    base = dataset.rpartition(".")[2]
    # a name holding '"' can only be written quoted, with the quote doubled: "we ""odd"" name"
    spellings = {base, base.replace('"', '""')}
    return any(re.search(rf"(?<![\w$]){re.escape(b)}(?![\w$])", sql, flags=re.IGNORECASE) is not None
               for b in spellings)


def _cache_key(sql: str, datasets: Sequence[_Dataset], url: str | None, dsn: str,
               params: Sequence[Any] | None = None) -> str:
    # the database too: two databases (staging, prod) sharing one Redis hold "orders" at the same version
    parts: list[Any] = [sql.strip(), url, dsn, sorted((d.name, d.version) for d in datasets)]
    if params is not None:  # typed (1 is not "1"); repr for dates, decimals and UUIDs
        parts.append([[type(p).__name__, p if isinstance(p, int | float | str | bool) else repr(p)] for p in params])
    text = json.dumps(parts)
    return "q:" + hashlib.sha256(text.encode()).hexdigest()


def _postgres_extension() -> str | None:
    """The postgres scanner extension file shipped by the ``duckdb-ext-postgres`` wheel, if installed."""
    try:
        import duckdb_ext  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    for root in getattr(duckdb_ext, "__path__", []):
        found = glob.glob(os.path.join(root, "extensions", "*", "*", "postgres_scanner.duckdb_extension"))
        if found:
            return found[0]
    return None


def _run_duckdb(sql: str, dsn: str, store: Store | None, datasets: Sequence[_Dataset],
                cold: dict[str, list[str]], db: MetaDb, params: Sequence[Any] | None = None) -> pl.DataFrame:
    import duckdb
    import pyarrow as pa

    # never fetch an extension at query time: S3 is read through s3fs, PostgreSQL through the wheel's scanner
    con = duckdb.connect(config={"threads": max(os.cpu_count() or 1, 1), "autoinstall_known_extensions": False,
                                 "autoload_known_extensions": False})
    s3 = _S3(con, store)
    try:
        scanner = _postgres_extension()
        if scanner is not None:
            con.execute(f"LOAD '{scanner}'")
            # libpq (the scanner's client) reads our URL DSNs as they are
            con.execute(f"ATTACH {_sql_text(dsn)} AS biconic_pg (TYPE postgres, READ_ONLY)")
        # a catalog, not a schema: archive.orders and archive.sales.orders both resolve, and never collide
        con.execute("ATTACH ':memory:' AS archive")
        wants_archive = _wants_archive(sql)
        if _reads_meta(sql):
            _meta_views(con, db, scanner is not None)
        for d in datasets:
            if not _mentions(sql, d.name):  # a view the SQL cannot name costs a catalog read for nothing
                continue
            schema, _, table = d.name.rpartition(".")
            schema = schema or "public"
            view_schema = "main" if schema == "public" else schema
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(view_schema)}")
            parts = []
            if d.exists:
                if scanner is not None:
                    parts.append(f"SELECT * FROM biconic_pg.{quote_ident(schema)}.{quote_ident(table)}")
                else:
                    parts.append(_scan_into(con, db, schema, table))
            files = cold.get(d.name, [])
            s3.need(files)
            if files:
                parts.append(_archive_scan(con, files, drop=["period"]))
            if parts:
                con.execute(f"CREATE VIEW {quote_ident(view_schema)}.{quote_ident(table)} AS "
                            + " UNION ALL BY NAME ".join(parts))
            archived = meta.archived_files(db, d.name) if wants_archive else []
            s3.need(archived)
            if archived:
                con.execute(f"CREATE SCHEMA IF NOT EXISTS archive.{quote_ident(view_schema)}")
                con.execute(f"CREATE VIEW archive.{quote_ident(view_schema)}.{quote_ident(table)} AS "
                            + _archive_scan(con, archived))
        result = (con.execute(sql) if params is None else con.execute(sql, list(params))).arrow()
        # DuckDB 1.4 hands back a reader: read it whole, or a query with no rows has no batch to take a schema from
        table = result.read_all() if isinstance(result, pa.RecordBatchReader) else result
        return pl.from_arrow(table)  # type: ignore[return-value]
    except duckdb.Error as exc:  # the query itself, or a view over a listed file that is gone or unreadable
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        # the scanner's connection errors can echo the DSN it was given
        raise QueryError(redact(scrub(text, url_secrets(dsn)))) from exc
    finally:
        con.close()


class _S3:
    """Reads ``s3://`` archive files through s3fs (fsspec), registered with DuckDB once a listed file needs it.

    The files' URIs come from the dataset's manifest, so a query needs neither ``BICONIC_ARCHIVE_URL`` nor
    DuckDB's ``httpfs`` extension (which it would download at run time); the endpoint and credentials are the
    AWS variables the load used, as :class:`~engine.archive.store.Store` reads them.
    """

    def __init__(self, con: Any, store: Store | None) -> None:
        self.con = con
        self.done = False
        if store is not None and not store.is_local:
            self._register(store)

    def need(self, uris: Sequence[str]) -> None:
        if self.done:
            return
        found = next((u for u in uris if u.startswith("s3://")), None)
        if found is not None:
            self._register(Store("s3://" + found.removeprefix("s3://").partition("/")[0]))

    def _register(self, store: Store) -> None:
        self.con.register_filesystem(store.fs)
        self.done = True


def _wants_archive(sql: str) -> bool:
    """The SQL names the raw archive (``archive.orders``): it reads archive files."""
    return re.search(r"(?<![\w$])archive\s*\.", sql, flags=re.IGNORECASE) is not None


def _reads_meta(sql: str) -> bool:
    """Whether the SQL names the engine's own tables (``biconic.loads``, ``biconic.quarantine``, ...)."""
    return re.search(r'(?<![\w$"])"?biconic"?\s*\.', sql, flags=re.IGNORECASE) is not None


def _meta_views(con: Any, db: MetaDb, scanner: bool) -> None:
    """``biconic.runs``, ``biconic.loads``, ``biconic.quarantine``, ... as read-only views of PostgreSQL's."""
    con.execute("CREATE SCHEMA IF NOT EXISTS biconic")
    for relation in _META_TABLES:
        if not db.exists(relation):
            continue
        table = relation.partition(".")[2]
        scan = f"SELECT * FROM biconic_pg.biconic.{quote_ident(table)}" if scanner \
            else _scan_into(con, db, "biconic", table)
        con.execute(f"CREATE VIEW biconic.{quote_ident(table)} AS {scan}")


def _archive_scan(con: Any, files: Sequence[str], *, drop: Sequence[str] = ()) -> str:
    """SELECT over archive files with their hive columns ``connection_id`` and ``period``, and no others.

    DuckDB reads every ``key=value`` folder of a path as a column, so an archive kept under, say,
    ``s3://lake/env=prod/`` would grow an ``env`` column; such columns are found and dropped.
    """
    source = f"read_parquet({_list(files)}, hive_partitioning = true, union_by_name = true)"
    stray: list[str] = []
    if any("=" in uri.rsplit("/", 3)[0] for uri in files):
        first = _list(files[:1])
        hive = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet({first}, hive_partitioning = true)")
                .fetchall()]
        own = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet({first}, hive_partitioning = false)")
               .fetchall()}
        stray = [c for c in hive if c not in own and c not in ("connection_id", "period")]
    excluded = [*stray, *drop]
    columns = f"* EXCLUDE ({', '.join(quote_ident(c) for c in excluded)})" if excluded else "*"
    return f"SELECT {columns} FROM {source}"


def _scan_into(con: Any, db: MetaDb, schema: str, table: str) -> str:
    """Without the scanner extension: the hot table read through ADBC into Arrow (the whole table)."""
    with db.conn.cursor() as cur:
        cur.execute(f"SELECT * FROM {quote_ident(schema)}.{quote_ident(table)}")
        arrow = cur.fetch_arrow_table()
    name = f"hot_{hashlib.sha1(f'{schema}.{table}'.encode()).hexdigest()[:10]}"
    con.register(name, arrow)
    return f"SELECT * FROM {name}"


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _list(items: Sequence[str]) -> str:
    return "[" + ", ".join(_sql_text(i) for i in items) + "]"
