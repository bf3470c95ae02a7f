"""The periodic maintenance ``biconic beat`` schedules, as plain functions, and the lock that keeps one beat.

Each job takes explicit arguments, is idempotent, is safe beside running loads, and returns an
:class:`Outcome` whose :meth:`~Outcome.summary` is one log line:

- :func:`tier`: old partitions verified against the archive, detached and dropped (``biconic tier``).
- :func:`tier_uploads`: raw uploads compressed, then moved to the archive (``biconic tier``'s uploads part).
- :func:`sweep_staged`: tables dead loads left staged in ``biconic_stage`` (every dataset's, not only the
  dataset a load sweeps when it starts), and children an older release left unattached beside the user's tables.
- :func:`sweep_unlisted_archive`: archive files a killed load placed but never listed in the manifest.
- :func:`sweep_cache`: Redis entries nothing can read any more (Redis expires entries itself, but a load makes
  the older versions' entries unreachable hours before their TTL, and a dropped dataset's stay until theirs).
- :func:`sweep_uploads`: tus uploads abandoned unfinished past their expiry, rows and files (on the beat).

:func:`run_maintenance` runs the first five in order; one failing does not stop the others. :func:`one_beat` holds a
PostgreSQL session advisory lock for as long as beat runs, so a second beat of the same database fails at once.

How "a running load owns it" is told: a load holds a session advisory lock on its id while it may own staged
tables (:func:`engine.postgres.stage_area.hold_load`), and the transaction lock ``child:{schema}.{child}``
while it creates a child; the sweeps take the same locks with ``try`` and skip what they cannot get. Archive
files carry no owner mark: a file is taken only when it is older than a grace period (an hour beyond the longest
a load's transaction may stay open) *and* was placed before the oldest transaction still open on the database
began (a load lists its files in the transaction that commits its rows, begun before it placed them).

Each job also runs alone: a session advisory lock per job name, so a run that outlasts its interval and the
next tick's run on another worker never overlap (the second skips and says so).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.archive.store import Store
from engine.errors import BeatRunningError, first_line
from engine.jobs import _leftovers
from engine.postgres import ddl, meta, stage_area
from engine.postgres.connection import Session, connect, execute
from engine.postgres.pool import meta_db
from engine.postgres.server import resolve_dsn
from engine.reads.catalog import database_tag
from engine.redact import redact, safe_url, scrub, url_secrets
from engine.settings import settings

__all__ = ["BeatLock", "Maintenance", "Outcome", "grace_seconds", "one_beat", "run_maintenance", "sweep_cache",
           "sweep_staged", "sweep_unlisted_archive", "sweep_uploads", "tier", "tier_uploads"]

log = logging.getLogger("biconic.maintenance")

#: the beat lock's two keys (hashed): the two-key form, in a space of the jobs layer's own, apart from the
#: engine's one-key locks (``table:``, ``child:``) and from loads' (``biconic_stage``, load id)
BEAT_LOCK = ["biconic_jobs", "beat"]
#: the beat lock as pg_locks shows it (params: the two keys)
_BEAT_ROW = "l.locktype = 'advisory' AND (l.classid, l.objid, l.objsubid) = (hashtext($1)::oid, hashtext($2)::oid, 2)"
#: archive files younger than this beyond the longest open load transaction are never swept
GRACE_MARGIN = 3600.0
#: seconds of clock difference allowed between the archive's file times and PostgreSQL's transaction starts
CLOCK_SKEW = 300.0
_BATCH = 500
#: names an :class:`Outcome` keeps of each kind (the counts are whole): a first run may find millions
NAMES = 1000


@dataclass
class Outcome:
    """What one job did: ``removed`` things removed or moved (or that would be, on a dry run), ``kept`` things
    left because a live load may own them; ``done``/``left`` name the first :data:`NAMES` of each. ``errors``
    are what it could not handle (retried next run); ``error`` is set when the job failed as a whole."""

    job: str
    dry_run: bool = False
    removed: int = 0
    kept: int = 0
    done: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    note: str = ""
    error: str | None = None
    #: what ``removed`` counts, as done and as a dry run would
    verb: tuple[str, str] = ("removed", "would remove")

    @property
    def ok(self) -> bool:
        return self.error is None

    def did(self, name: str) -> None:
        self.removed += 1
        if len(self.done) < NAMES:
            self.done.append(name)

    def kept_one(self, name: str) -> None:
        self.kept += 1
        if len(self.left) < NAMES:
            self.left.append(name)

    def summary(self) -> str:
        """One line for the log: ``sweep_staged: removed 2 (biconic_stage.s1a2b3c4_..., ...); kept 1``."""
        if self.error is not None:
            return f"{self.job}: failed: {self.error}"
        shown = ", ".join(self.done[:3]) + (", ..." if self.removed > 3 else "")
        parts = [f"{self.verb[self.dry_run]} {self.removed}" + (f" ({shown})" if shown else "")]
        if self.kept:
            parts.append(f"kept {self.kept} a live load may own")
        if self.errors:
            parts.append(f"{len(self.errors)} error(s), first: {self.errors[0]}")
        if self.note:
            parts.append(self.note)
        return f"{self.job}: " + "; ".join(parts)


# --- tiering (what exists, called as the CLI calls it) ------------------------------------------------------------
def tier(dsn: str | None = None, archive: str | None = None, *, now: dt.datetime | None = None,
         archive_days: int | None = None, datasets: Sequence[str] | None = None, dry_run: bool = False) -> Outcome:
    """``biconic tier`` without its uploads part (that is :func:`tier_uploads`): old partitions moved out."""
    if settings().archive(archive) is None:  # tiering moves data into the archive: nothing to do without one
        return Outcome("tier", dry_run=dry_run, note="archiving is off: nothing to tier")
    return _alone(dsn, "tier", dry_run, lambda: _tier(dsn, archive, now, archive_days, datasets, dry_run))


def _tier(dsn: str | None, archive: str | None, now: dt.datetime | None, archive_days: int | None,
          datasets: Sequence[str] | None, dry_run: bool) -> Outcome:
    import dataclasses

    from engine.archive.tiering import TierPolicy
    from engine.archive.tiering import tier as run_tier

    policy = TierPolicy.from_env()
    if archive_days is not None:
        policy = dataclasses.replace(policy, archive_days=archive_days)
    report = run_tier(dsn=dsn, archive=archive, policy=policy, now=now, dry_run=dry_run, uploads=False,
                      datasets=datasets)
    rows = sum(p.rows for p in report.partitions)
    outcome = Outcome("tier", dry_run=dry_run, verb=("moved out", "would move out"),
                      note=f"{rows:,} rows, partitions before {report.cutoff}; {len(report.swept)} staged swept")
    for p in report.partitions:
        outcome.did(f"{p.dataset}.{p.partition}")
    return outcome


def tier_uploads(dsn: str | None = None, archive: str | None = None, *, folder: Path | None = None,
                 now: dt.datetime | None = None, dry_run: bool = False) -> Outcome:
    """The raw uploads' lifecycle (:func:`engine.archive.uploads.tier_uploads_report`, policy from the settings)
    in ``folder`` (default ``BICONIC_UPLOADS_DIR``: local to the machine that runs it). ``dsn`` only keeps two
    runs apart (they must not overlap)."""
    if settings().archive(archive) is None:
        return Outcome("tier_uploads", dry_run=dry_run, note="archiving is off: uploads are left as they are")
    return _alone(dsn, "tier_uploads", dry_run, lambda: _tier_uploads(archive, folder, now, dry_run))


def _tier_uploads(archive: str | None, folder: Path | None, now: dt.datetime | None, dry_run: bool) -> Outcome:
    from engine.archive.tiering import TierPolicy, archive_store
    from engine.archive.uploads import tier_uploads_report

    report = tier_uploads_report(archive_store(archive), folder=folder, policy=TierPolicy.from_env().uploads,
                                 now=now, dry_run=dry_run)
    outcome = Outcome("tier_uploads", dry_run=dry_run, errors=report.errors, verb=("did", "would do"))
    for action in report.actions:
        outcome.did(f"{action.action} {action.path}")
    return outcome


# --- orphan children -----------------------------------------------------------------------------------------
def sweep_staged(dsn: str | None = None, *, dry_run: bool = False) -> Outcome:
    """Drop what killed loads left in PostgreSQL, for every dataset: their tables in ``biconic_stage`` (a live
    load's, whose lock is held, stay) and children an older release staged beside the user's tables and never
    attached (dropped under the child's lock, as a load of that period would; never one a load is creating)."""
    return _alone(dsn, "sweep_staged", dry_run, lambda: _sweep_staged(dsn, dry_run))


def _sweep_staged(dsn: str | None, dry_run: bool) -> Outcome:
    outcome = Outcome("sweep_staged", dry_run=dry_run)
    with Session(resolve_dsn(dsn)) as session:
        if dry_run:
            outcome.note = "dry run: staged tables of dead loads are only counted by the next real run"
        else:
            for name in stage_area.sweep(session, conn=session.ddl):
                outcome.did(f"{stage_area.STAGE_SCHEMA}.{name}")
        conn = session.ddl
        if not meta.table_exists(session, meta.DATASETS, conn=conn):
            session.rollback(conn)
            return outcome
        schemas = sorted({ddl.split_table(d)[0] for d in meta.datasets(session, conn=conn)})
        found = _leftovers.unattached_children(session, schemas, conn=conn)
        session.rollback(conn)
        for schema, child in found:
            name = f"{schema}.{child}"
            (outcome.did if _drop_unattached(session, schema, child, dry_run=dry_run) else outcome.kept_one)(name)
    return outcome


def _drop_unattached(session: Session, schema: str, child: str, *, dry_run: bool) -> bool:
    """Drop one unattached child if no load holds its lock and it still is one; whether it was (or would be)."""
    conn, qchild = session.ddl, _leftovers.qualified_child(schema, child)
    try:
        free = session.run("SELECT pg_try_advisory_xact_lock(hashtext($1))", [f"child:{schema}.{child}"],
                           conn=conn)[0][0]
        orphan = free and session.run(ddl.ORPHAN_SQL, [qchild, qchild, ddl.bounds_constraint(child)],
                                      conn=conn)[0][0]
        if orphan and not dry_run:
            session.run(f"DROP TABLE {qchild}", conn=conn)
            session.commit(conn)
            log.info("dropped %s, a child a killed load left unattached", qchild)
        return bool(orphan)
    finally:
        session.rollback(conn)


# --- archive files never listed ------------------------------------------------------------------------------------
def grace_seconds() -> float:
    """How old an unlisted archive file must be before it is swept: a load places its files just before its
    transaction commits, and that transaction may stay open up to the server's idle backstop or a job's time
    limit; an hour more on top."""
    limits = settings()
    return GRACE_MARGIN + max(limits.job_time_limit, limits.idle_in_transaction_seconds)


def sweep_unlisted_archive(dsn: str | None = None, archive: str | None = None, *, now: dt.datetime | None = None,
                           grace: float | None = None, dry_run: bool = False) -> Outcome:
    """Remove the archive files (and stray temporary uploads) of the datasets this database knows that no
    manifest row lists, older than ``grace`` seconds (default :func:`grace_seconds`) and placed before the oldest
    transaction still open began (a live load lists its files in a transaction begun before it placed them).
    Raw uploads (``_uploads/``) and anything not shaped like the writer's files are left alone; so is everything
    when the manifest lists files only elsewhere (the archive URL is not the loads' one)."""
    return _alone(dsn, "sweep_unlisted_archive", dry_run,
                  lambda: _sweep_unlisted_archive(dsn, archive, now, grace, dry_run))


def _sweep_unlisted_archive(dsn: str | None, archive: str | None, now: dt.datetime | None, grace: float | None,
                            dry_run: bool) -> Outcome:
    outcome = Outcome("sweep_unlisted_archive", dry_run=dry_run)
    url = settings().archive(archive)
    if url is None:
        outcome.note = "archiving is off"
        return outcome
    store = Store(url)
    cutoff = (now or dt.datetime.now(dt.UTC)).timestamp() - (grace_seconds() if grace is None else grace)
    with meta_db(resolve_dsn(dsn)) as db:
        if not meta.table_exists(db, meta.MANIFEST):
            outcome.note = "no manifest yet"
            return outcome
        if _leftovers.manifest_elsewhere(db, store):
            outcome.error = (f"the manifest lists no file under {safe_url(store.url)}: is this the archive the "
                             "loads wrote to? nothing swept")
            return outcome
        oldest = _leftovers.oldest_transaction(db)
        if oldest is not None:
            cutoff = min(cutoff, oldest - CLOCK_SKEW)
        batch: list[_leftovers.ArchiveFile] = []
        for found in _leftovers.archive_files(store, meta.datasets(db)):
            batch.append(found)
            if len(batch) >= _BATCH:
                _remove_unlisted(db, store, batch, cutoff, outcome)
                batch = []
        _remove_unlisted(db, store, batch, cutoff, outcome)
    return outcome


def _remove_unlisted(db: meta.Runs, store: Store, files: Sequence[_leftovers.ArchiveFile], cutoff: float,
                     outcome: Outcome) -> None:
    """Remove the files of ``files`` the manifest does not list (asked at once, by primary key) and changed
    before ``cutoff``; the younger unlisted ones are kept."""
    known = _leftovers.listed(db, [f.uri for f in files if not f.temporary])
    for found in files:
        if found.uri in known:
            continue
        if found.modified > cutoff:
            outcome.kept_one(found.uri)
            continue
        if not outcome.dry_run:
            try:
                store.fs.rm_file(found.path)
            except FileNotFoundError:  # another sweep took it: the same end
                pass
            except Exception as exc:
                outcome.errors.append(f"{found.uri}: {type(exc).__name__}: {first_line(exc)}")
                continue
            log.info("removed %s, an archive file no manifest lists", found.uri)
        outcome.did(found.uri)


# --- the cache -------------------------------------------------------------------------------------------------------
def sweep_cache(dsn: str | None = None, redis_url: str | None = None, *, prefix: str = "biconic:",
                dry_run: bool = False) -> Outcome:
    """Delete the Redis entries of datasets that are gone and of versions a load has moved past (they can never
    be read: keys carry the dataset's version). Query results (``q:``) hash theirs and live minutes: left to
    their TTL. Without Redis the cache lives in each process, beyond this one's reach: nothing to do."""
    return _alone(dsn, "sweep_cache", dry_run, lambda: _sweep_cache(dsn, redis_url, prefix, dry_run))


def _sweep_cache(dsn: str | None, redis_url: str | None, prefix: str, dry_run: bool) -> Outcome:
    outcome = Outcome("sweep_cache", dry_run=dry_run)
    url = redis_url or settings().redis()
    if url is None:
        outcome.note = "no Redis: each process's in-memory cache is bounded and expires on its own"
        return outcome
    resolved = resolve_dsn(dsn)
    with meta_db(resolved) as db:
        versions = {name: (version, exists) for name, version, exists in meta.versions(db)}
    import redis

    timeout = settings().cache_timeout
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=max(timeout, 5.0))
    try:
        _sweep_keys(client, prefix, database_tag(resolved), versions, outcome)
    except redis.RedisError as exc:
        outcome.error = f"Redis at {safe_url(url)}: {scrub(first_line(exc), url_secrets(url))}"
    finally:
        client.close()
    return outcome


def _sweep_keys(client: Any, prefix: str, tag: str, versions: dict[str, tuple[int, bool]],
                outcome: Outcome) -> None:
    """This database's versioned keys only (their tag): another warehouse sharing the Redis has other datasets."""
    stale: list[bytes] = []
    for kind in ("hot", "meta"):
        mine = f"{kind}:{tag}:"
        for raw in client.scan_iter(match=_leftovers.glob_escape(prefix + mine) + "*", count=_BATCH):
            key = raw.decode("utf-8", "replace")[len(prefix):]
            if _leftovers.stale_cache_key(f"{kind}:{key[len(mine):]}", versions):
                stale.append(raw)
                outcome.did(key)
            if len(stale) >= _BATCH:
                _unlink(client, stale, outcome.dry_run)
    _unlink(client, stale, outcome.dry_run)


def _unlink(client: Any, keys: list[bytes], dry_run: bool) -> None:
    if keys and not dry_run:
        client.unlink(*keys)
    keys.clear()


# --- abandoned tus uploads -------------------------------------------------------------------------------------------
def sweep_uploads(dsn: str | None = None, *, now: dt.datetime | None = None) -> Outcome:
    """Remove the tus uploads left unfinished past their expiry (``BICONIC_UPLOAD_EXPIRY_HOURS`` after their last
    chunk): rows and files. The files are in ``BICONIC_UPLOADS_DIR``, local to the machine that runs it."""
    return _alone(dsn, "sweep_uploads", False, lambda: _sweep_uploads(resolve_dsn(dsn), now))


def _sweep_uploads(dsn: str, now: dt.datetime | None) -> Outcome:
    from engine.service.upload_store import sweep_expired_uploads

    return Outcome("sweep_uploads", removed=sweep_expired_uploads(dsn, now))


# --- all of them ------------------------------------------------------------------------------------------------------
@dataclass
class Maintenance:
    """Every job's :class:`Outcome`, in the order they ran."""

    outcomes: list[Outcome]

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    def summary(self) -> str:
        return "\n".join(o.summary() for o in self.outcomes)


def run_maintenance(dsn: str | None = None, archive: str | None = None, *, redis_url: str | None = None,
                    now: dt.datetime | None = None, dry_run: bool = False) -> Maintenance:
    """Run every job in order (staged tables first, so tiering finds the schema clean), logging each summary;
    a job that raises is reported as failed (one line, secrets scrubbed) and the others still run."""
    dsn = resolve_dsn(dsn)
    jobs: list[tuple[str, Callable[[], Outcome]]] = [
        ("sweep_staged", lambda: sweep_staged(dsn, dry_run=dry_run)),
        ("tier", lambda: tier(dsn, archive, now=now, dry_run=dry_run)),
        ("tier_uploads", lambda: tier_uploads(dsn, archive, now=now, dry_run=dry_run)),
        ("sweep_unlisted_archive", lambda: sweep_unlisted_archive(dsn, archive, now=now, dry_run=dry_run)),
        ("sweep_cache", lambda: sweep_cache(dsn, redis_url, dry_run=dry_run)),
    ]
    outcomes = []
    for name, job in jobs:
        try:
            outcome = job()
        except Exception as exc:
            said = scrub(redact(first_line(exc)), url_secrets(dsn) + url_secrets(redis_url or ""))
            outcome = Outcome(name, dry_run=dry_run, error=f"{type(exc).__name__}: {said}")
            log.debug("maintenance job %s failed", name, exc_info=True)
        (log.info if outcome.ok else log.warning)("%s", outcome.summary())
        outcomes.append(outcome)
    return Maintenance(outcomes)


# --- one run at a time, one beat per deployment -----------------------------------------------------------------
@dataclass
class BeatLock:
    """The held beat lock: its connection (the lock lives as long as it does) and who holds it."""

    conn: Any
    dsn: str
    holder: str

    def check(self) -> None:
        """Raise :class:`BeatRunningError` unless this beat still holds the lock (call it before each tick: a
        connection the server dropped took the lock with it, and another beat may since have started)."""
        try:
            held = execute(self.conn, f"SELECT EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = pg_backend_pid() "
                           f"AND l.granted AND {_BEAT_ROW})", BEAT_LOCK, self.dsn)[0][0]
        except Exception as exc:
            raise BeatRunningError(f"this biconic beat lost its lock ({first_line(exc)}); stop it and start "
                                   "one again") from exc
        if not held:
            raise BeatRunningError("this biconic beat lost its lock; stop it and start one again")


def _alone(dsn: str | None, job: str, dry_run: bool, body: Callable[[], Outcome]) -> Outcome:
    """``body()`` while holding ``job``'s lock (a session advisory lock on a connection of its own), so two
    workers handed the same job (a slow run overlapping the next tick) never run it at once; the second one
    skips, saying so."""
    dsn = resolve_dsn(dsn)
    conn = connect(dsn, autocommit=True)
    try:
        if not execute(conn, "SELECT pg_try_advisory_lock(hashtext($1), hashtext($2))", [BEAT_LOCK[0], f"job:{job}"],
                       dsn)[0][0]:
            return Outcome(job, dry_run=dry_run, note="already running elsewhere: skipped")
        return body()
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def _me() -> str:
    """Who this beat is, as ``application_name`` shows it to a second one (63 bytes at most)."""
    return f"biconic beat pid={os.getpid()} host={socket.gethostname()}"[:63]


def _holder(conn: Any, dsn: str) -> str:
    """Who holds the beat lock, as well as PostgreSQL can tell (the holder's application name and address)."""
    rows = execute(conn, "SELECT a.application_name, host(a.client_addr), a.pid FROM pg_locks l "
                   "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.granted AND l.database = "
                   f"(SELECT oid FROM pg_database WHERE datname = current_database()) AND {_BEAT_ROW}", BEAT_LOCK, dsn)
    if not rows:
        return "it ended just now"
    name, addr, backend = rows[0]
    said = name if name and str(name).startswith("biconic beat") else f"backend {backend}"
    return f"{said}{f' from {addr}' if addr else ''}"


@contextlib.contextmanager
def one_beat(dsn: str | None = None) -> Iterator[BeatLock]:
    """Hold the deployment's beat lock (a session advisory lock on a connection of its own) for the block.

    A second beat of the same database gets :class:`BeatRunningError` at once, naming the first. The lock dies
    with the connection, so with the process: a killed beat never blocks the next one.

    >>> with one_beat(dsn) as lock:  # doctest: +SKIP
    ...     run_beat(on_tick=lock.check)
    """
    dsn = resolve_dsn(dsn)
    conn = connect(dsn, autocommit=True)  # autocommit: never idle in a transaction, which the server would end
    try:
        execute(conn, "SELECT set_config('application_name', $1, false)", [_me()], dsn)
        if not execute(conn, "SELECT pg_try_advisory_lock(hashtext($1), hashtext($2))", BEAT_LOCK, dsn)[0][0]:
            raise BeatRunningError(f"another biconic beat is running ({_holder(conn, dsn)}); one per deployment")
        yield BeatLock(conn, dsn, _me())
    finally:
        with contextlib.suppress(Exception):
            conn.close()
