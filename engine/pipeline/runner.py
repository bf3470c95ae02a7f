"""One load from start to report: open the source and PostgreSQL, restrict an incremental source to what
changed, key every source partition, commit them by mode, then finish the report."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import resource
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from engine.archive.store import Store
from engine.errors import (
    BiconicError,
    EmptySourceError,
    PartialLoadError,
    RejectedError,
    SourceError,
    SpecError,
    StoppedLoadError,
    StorageError,
    TransientError,
)
from engine.logs import log_context
from engine.names import canonical_table, unusable_characters
from engine.pipeline.context import LoadState
from engine.pipeline.leftovers import drop_if_unused, sweep_work_files
from engine.pipeline.measure import Measured, measured
from engine.pipeline.publish import load_partition, replace_all
from engine.pipeline.rejects import keep_sample
from engine.pipeline.reload import begin_refresh, end_refresh, key_to_load
from engine.pipeline.runlog import recorded
from engine.postgres import meta, stage_area
from engine.postgres.connection import Session
from engine.postgres.ddl import split_table
from engine.postgres.server import database_label, resolve_dsn
from engine.progress import Progress
from engine.reads.catalog import refresh_hot_rows
from engine.redact import redact
from engine.report import LoadReport
from engine.settings import settings
from engine.sources import open_source
from engine.sources.base import IncrementalSource, Partition, Source
from engine.spec.models import LoadSpec, TargetSpec
from engine.storage import is_storage, storage_error

__all__ = ["PartitionPick", "load_key", "run_load", "spec_hash"]

log = logging.getLogger("biconic.load")


def _check_table_name(name: str) -> None:
    """Refuse names nobody means: quotes, semicolons, backslashes and control characters are quoted safely,
    but a table literally named ``a"; DROP ...`` is a mistake (or an attack), never a wish."""
    schema, table = split_table(name)
    if not table.strip() or len(table.encode()) > 63 or len(schema.encode()) > 63:
        raise SpecError("target.table", f"{name!r} is not a usable table name (1..63 bytes per part)")
    odd = unusable_characters(name)
    if odd:
        raise SpecError("target.table", f"{name!r} is not a usable table name: it holds {odd} (letters, digits, "
                                        "spaces, '-' and '_' are fine; '.' separates the schema)")


#: reader options that change how a source is cut into partitions, not what its rows are
_CUTTING = frozenset({"split_mb"})


def spec_hash(spec: LoadSpec) -> str:
    """What makes the same file a different load: the steps and rules, partitioning, mode, keys, reader
    options (not ``split_mb``: a range's key holds its bytes), layout. Part of every load key."""
    t = spec.target
    options = sorted((k, v) for k, v in spec.source.options.items() if k not in _CUTTING)
    text = "\x1f".join([spec.pipeline.fingerprint(), str(t.partition_by), t.granularity, str(t.hash_partitions),
                        t.mode, ",".join(t.key), repr(options),
                        *([t.layout] if t.layout != "table" else [])])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_key(target: TargetSpec, partition: Partition, spec_digest: str) -> str:
    """The ledger key of one source partition: table, connection, partition, its fingerprint, the spec."""
    text = "\x1f".join([target.table, str(target.connection_id), partition.key, partition.fingerprint, spec_digest])
    return hashlib.sha256(text.encode()).hexdigest()


def _former_keys(target: TargetSpec, partition: Partition, spec_digest: str) -> list[str]:
    """The keys older releases gave the partition (files: path, size and mtime)."""
    return [load_key(target, dataclasses.replace(partition, key=k, fingerprint=f), spec_digest)
            for k, f in partition.former]


def _incremental(source: Source, session: Session, target: TargetSpec,
                 full_refresh: bool = False) -> tuple[Source, tuple[str, str] | None]:
    """An incremental source restricted to what changed since its stored watermark (everything on a full
    refresh), and (key, cursor) to advance it under; a plain source as it is."""
    if not isinstance(source, IncrementalSource) or not source.cursor:
        return source, None
    if getattr(source, "lag", None) and target.mode != "merge":
        raise SpecError("source.lag", "a lag re-reads rows near the watermark on purpose; use mode merge with a key "
                                      "so they update instead of duplicating")
    key = source.watermark_key()
    low = None if full_refresh else meta.watermark(session, target.table, target.connection_id, key, conn=session.ddl)
    session.commit(session.ddl)
    bounded = source.with_watermark(low)
    if len(bounded.partitions()) > 1:
        raise SpecError("source.cursor", "an incremental source must read as one partition (one watermark commit)")
    return bounded, (key, source.cursor)


def run_load(spec: LoadSpec, *, progress: Progress | None = None, source: Source | None = None,
             full_refresh: bool = False, only: PartitionPick | None = None) -> LoadReport:
    """Execute one LoadSpec (see :func:`engine.load`); ``source``: an opened source (in-memory data, which a
    spec cannot hold) instead of the spec's path; ``only``: load just that one of the source's partitions (a
    job's fan-out). The run is logged in ``biconic.runs``, and counted in the metrics, failed or not."""
    with measured() as seen:
        return _run_load(spec, seen, progress=progress, source=source, full_refresh=full_refresh, only=only)


def _run_load(spec: LoadSpec, seen: Measured, *, progress: Progress | None, source: Source | None,
              full_refresh: bool, only: PartitionPick | None) -> LoadReport:
    started = seen.started
    _check_table_name(spec.target.table)
    # one name per table: "public.orders" and "orders" must share a ledger, or a re-run would duplicate
    table = canonical_table(spec.target.table)
    spec = spec.model_copy(update={"target": spec.target.model_copy(update={"table": table})})
    target = spec.target
    if source is None:
        source = open_source(spec.source.path, format=spec.source.format, options=spec.source.options)
    url = settings().archive(target.archive)
    store = Store(url) if url is not None else None
    report = LoadReport(load_id=uuid.uuid4().hex, table=target.table, source=redact(spec.source.path),
                        mode=target.mode, archive=_where(store), database=database_label(target.dsn))
    seen.report = report
    ids = {"load_id": report.load_id, "dataset": target.table, "connection_id": target.connection_id}
    with log_context(**ids):
        log.info("load of %s into %s started (mode %s)", report.source, target.table, target.mode)
        dsn = resolve_dsn(target.dsn)
        sweep_work_files()
        with recorded(dsn, report, target.connection_id) as run:
            with Session(dsn) as session:
                meta.ensure_meta(session, conn=session.ddl)
                stage_area.sweep(session, conn=session.ddl)  # staged children killed loads left behind
                run.begin(session)
                session.commit(session.ddl)
                state = LoadState(spec=spec, source=source, session=session, report=report, spec_hash=spec_hash(spec),
                                  progress=progress, store=store, full_refresh=full_refresh)
                failures = _load(state, only)
                report.notes = list(getattr(state.source, "notes", list)())  # what the source guessed
            if report.rows_loaded or report.mode == "replace":
                refresh_hot_rows(target.table, state.connections, dsn=target.dsn)
            _finished(report, started)
            if failures:  # the others committed: the run is logged as failed, with what did commit
                raise PartialLoadError(report, failures)
            log.info("load of %s into %s done: %d rows loaded, %d partitions skipped, %.1f s", report.source,
                     target.table, report.rows_loaded, report.skipped_partitions, report.seconds)
            return report


def _load(state: LoadState, only: PartitionPick | None = None) -> list[tuple[str, BiconicError]]:
    """Restrict an incremental source, key its partitions and commit them (the run's row is already written);
    the partitions that failed while others committed."""
    state.source, state.watermark = _incremental(state.source, state.session, state.target, state.full_refresh)
    partitions = state.source.partitions()
    if only is not None:
        partitions = [_picked(partitions, only)]
    state.report.source_partitions = len(partitions)
    state.report.source_bytes = sum(p.size_bytes for p in partitions)
    keys = [load_key(state.target, p, state.spec_hash) for p in partitions]
    try:
        try:
            with _storage_errors():
                failures = _commit_partitions(state, partitions, keys)
        finally:
            if state.staging is not None:
                state.staging.close()
    except BaseException:
        drop_if_unused(state)
        raise
    if failures and state.partitions_done == 0:
        drop_if_unused(state)
    return failures


@dataclass(frozen=True)
class PartitionPick:
    """One partition of a source, as a job planned it: its position, how many there were, and its label."""
    index: int
    total: int
    label: str


def _picked(partitions: list[Partition], only: PartitionPick) -> Partition:
    """The planned partition, checked: a source that changed since the job was planned is an error, not a guess."""
    found = partitions[only.index] if len(partitions) == only.total and only.index < only.total else None
    if found is None or found.label != only.label:
        raise SourceError(only.label, f"the source changed since the job was planned ({only.total} partitions "
                                      f"then, {len(partitions)} now): submit the import again")
    return found


@contextmanager
def _storage_errors() -> Iterator[None]:
    """A disk failure no writer named (a reader's temporary file, the data folder) as one line, by its file."""
    try:
        yield
    except OSError as exc:
        if not is_storage(exc) and exc.filename is None:
            raise
        raise storage_error(exc) from exc


def _where(store: Store | None) -> str | None:
    """The archive as the report names it: an absolute folder, or the S3 URL."""
    if store is None:
        return None
    return store.root if store.is_local else redact(store.url)


def _commit_partitions(state: LoadState, partitions: list[Partition],
                       keys: list[str]) -> list[tuple[str, BiconicError]]:
    """Commit each partition; with several, one that fails (not transiently: a server gone stops the load) is
    rolled back and noted, and the others still load. Returns the failures. A partition that failed on its
    rejected rows keeps a sample of them in quarantine."""
    if state.target.mode == "replace":
        try:
            replace_all(state, partitions, keys)
        except RejectedError:
            keep_sample(state)
            raise
        return []
    begin_refresh(state, keys)
    failures: list[tuple[str, BiconicError]] = []
    for position, (partition, key) in enumerate(zip(partitions, keys, strict=True)):
        chosen = key_to_load(state, partition, key, _former_keys(state.target, partition, state.spec_hash))
        if chosen is None:
            state.report.skipped_partitions += 1
            state.report.note(partition.label, "skipped")
            continue
        try:
            load_partition(state, partition, chosen)
        except BiconicError as exc:
            if isinstance(exc, EmptySourceError) and state.target.allow_empty:  # a 0-byte file: no columns
                state.session.rollback(state.session.ddl)
                state.report.note(partition.label, "loaded")
                continue
            if isinstance(exc, RejectedError):
                keep_sample(state)
            if len(partitions) == 1 or isinstance(exc, StorageError):  # the next would fail too
                raise
            if isinstance(exc, TransientError):
                raise _stopped(state, exc, partition, len(partitions), position) from exc
            state.session.rollback(state.session.ddl)  # a failed DDL statement leaves it aborted
            failures.append((partition.label, exc))
            said = str(exc).removeprefix(f"{partition.label}: ").removeprefix(f"{partition.label}, ")
            state.report.note(partition.label, "failed", error=said)
    if not failures:  # a refresh with failed partitions is resumed by the next one
        end_refresh(state)
    return failures


def _stopped(state: LoadState, exc: BiconicError, partition: Partition, total: int,
             position: int) -> StoppedLoadError:
    """A transient failure stops the load at once: say what did commit, and what a re-run finishes."""
    committed = [d.source for d in state.report.source_details if d.status == "loaded"]
    return StoppedLoadError(exc, committed=committed, rows=state.report.rows_loaded, stopped=partition.label,
                            total=total, after=total - position - 1)


def _finished(report: LoadReport, started: float) -> LoadReport:
    """Time, speed, peak memory and the archive's compression ratio, into the report."""
    report.seconds = round(time.perf_counter() - started, 3)
    report.rows_per_s = round(report.rows_in / report.seconds, 1) if report.seconds else 0.0
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    report.peak_rss_mb, report.peak_child_rss_mb = round(own, 1), round(child, 1)
    report.partitions = sorted(set(report.partitions))
    if report.archive_bytes and report.source_bytes:  # a query or an API has no size: no ratio, not 0.0
        report.compression_ratio = round(report.source_bytes / report.archive_bytes, 2)
    return report
