"""source -> transform -> validate -> PostgreSQL, one transaction per source partition.

``load()`` is the Python API behind ``biconic load``; ``run()`` runs every load of a pipeline YAML file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import itertools
import queue
import resource
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import polars as pl

from engine.archive import MANIFEST, ArchiveWriter, record_files
from engine.errors import IntegrityError, SchemaDriftError, SourceError, SpecError, first_line
from engine.names import canonical_table, qualified, quote_ident
from engine.plan.columns import COLUMN, KEY_COLUMN, PENDING_COLUMN, REASON, ROW_COLUMN, RULE, SOURCE_PREFIX, STATUS
from engine.plan.frame import Plan, did_you_mean
from engine.plan.rules import apply_rules, as_text, finish, guard_copy
from engine.plan.steps import compile_steps, fit_names, normalize
from engine.postgres.server import resolve_dsn
from engine.report import LoadReport
from engine.settings import settings
from engine.sinks._partitions import Period, period_of, truncate_every
from engine.sinks._schema import pg_to_polars, reconcile
from engine.sinks.postgres import CONNECTION_COLUMN, PostgresSink, TableInfo, index_columns, split_table
from engine.sinks.staging import CHILD, FreshChildren, copy_streams
from engine.sources import Partition, Source, open_source
from engine.sources.base import IncrementalSource
from engine.spec.models import (
    Dedupe,
    LoadSpec,
    Mode,
    NotNull,
    Pipeline,
    SourceSpec,
    TargetSpec,
    Unique,
    load_pipeline_file,
    make_target,
    parse_pipeline,
    read_pipeline_spec,
)
from engine.storage import Store, archive_url
from engine.types import pg_type, to_loadable

__all__ = ["Progress", "load", "run", "run_load"]

LOADED_AT = "_loaded_at"
#: the document layout's columns (the seed's generic ``import_data`` table)
DOC_IMPORT, DOC_DATA, DOC_TIME = "_import_id", "data", "created_at"
#: jsonb's binary COPY format: a version byte, then the JSON text
_JSONB_VERSION = "\x01"
_TRACKED_CONNECTIONS = 10_000


class Progress(Protocol):
    """Receives progress while a load runs (the CLI draws a bar with it)."""

    def update(self, *, label: str, rows: int, done: int, total: int) -> None:
        """``rows`` read so far; ``done`` of ``total`` source partitions finished; ``label`` the current one."""


def load(
    source: str | Path,
    into: str,
    *,
    connection_id: int | None = None,
    partition_by: str | None = None,
    hash_partitions: int = 0,
    mode: Mode = "append",
    key: Sequence[str] | str | None = None,
    spec: str | Path | Pipeline | Mapping[str, Any] | None = None,
    sheet: str | Sequence[str] | None = None,
    format: str | None = None,
    options: Mapping[str, Any] | None = None,
    contract: str = "evolve",
    dsn: str | None = None,
    archive: str | bool | None = None,
    layout: str = "table",
    progress: Progress | None = None,
) -> LoadReport:
    """Load a file, folder or glob into a partitioned PostgreSQL table, effectively once.

    >>> engine.load("orders.csv", into="orders", partition_by="created_at:month")  # doctest: +SKIP
    LoadReport(table='orders', rows_in=1000000, rows_loaded=1000000, ...)

    ``spec`` holds steps and rules: a YAML path, a :class:`Pipeline`, or a dict. Re-running the same load
    adds nothing; a load killed part-way leaves no partial partition visible and completes when re-run.
    ``archive``: where the Parquet copy goes (a folder or ``s3://bucket/prefix``); None = the default
    (``BICONIC_ARCHIVE_URL``, else a folder under the data folder); False = no archive copy.
    ``layout="document"`` stores each row as one jsonb document in the generic table
    ``(_import_id, connection_id, data jsonb, created_at)`` (for schemaless sources: MongoDB, REST).
    """
    if isinstance(spec, (str, Path)):
        pipeline = read_pipeline_spec(spec)
    elif isinstance(spec, Pipeline):
        pipeline = spec
    else:
        pipeline = parse_pipeline(spec)
    opts = dict(options or {})
    if sheet is not None:
        opts["sheet"] = list(sheet) if not isinstance(sheet, str) else sheet
    target = make_target({
        "table": into, "connection_id": connection_id, "partition_by": partition_by,
        "hash_partitions": hash_partitions, "mode": mode,
        "key": [key] if isinstance(key, str) else list(key or []), "contract": contract, "dsn": dsn,
        "archive": archive, "layout": layout,
    })
    spec_obj = LoadSpec(source=SourceSpec(path=str(source), format=format, options=opts), target=target,
                        pipeline=pipeline)
    return run_load(spec_obj, progress=progress)


def run(pipeline_file: str | Path, *, dsn: str | None = None, progress: Progress | None = None) -> list[LoadReport]:
    """Run every load declared in a pipeline YAML file, in order; stops at the first failing load."""
    reports = []
    for spec in load_pipeline_file(pipeline_file):
        if dsn and not spec.target.dsn:
            spec = dataclasses.replace(spec, target=dataclasses.replace(spec.target, dsn=dsn))
        reports.append(run_load(spec, progress=progress))
    return reports


def _check_table_name(name: str) -> None:
    schema, table = split_table(name)
    if not table.strip() or "\x00" in name or len(table.encode()) > 63 or len(schema.encode()) > 63:
        raise SpecError("target.table", f"{name!r} is not a usable table name (1..63 bytes, no NUL)")


def _peak_rss_mb() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, child


def run_load(spec: LoadSpec, *, progress: Progress | None = None) -> LoadReport:
    """Execute one LoadSpec (see :func:`load`)."""
    started = time.perf_counter()
    _check_table_name(spec.target.table)
    # one name per table: "public.orders" and "orders" must share a ledger, or a re-run would duplicate
    spec = dataclasses.replace(spec, target=dataclasses.replace(spec.target, table=canonical_table(spec.target.table)))
    target = spec.target
    source = open_source(spec.source.path, format=spec.source.format, options=spec.source.options)
    url = archive_url(target.archive)
    store = Store(url) if url is not None else None
    with PostgresSink(resolve_dsn(target.dsn)) as sink:
        sink.ensure_meta()
        source, watermark = _incremental(source, sink, target)
        partitions = source.partitions()
        report = LoadReport(load_id=uuid.uuid4().hex, table=target.table, source=source_label(spec.source.path),
                            mode=target.mode, source_partitions=len(partitions),
                            source_bytes=sum(p.size_bytes for p in partitions))
        report.archive = store.url if store is not None else None
        spec_hash = _spec_hash(spec)
        keys = [_load_key(target, p, spec_hash) for p in partitions]
        job = _Job(spec=spec, source=source, sink=sink, report=report, spec_hash=spec_hash, progress=progress,
                   store=store, watermark=watermark)
        try:
            if target.mode == "replace":
                job.replace(partitions, keys)
            else:
                for partition, key in zip(partitions, keys, strict=True):
                    if sink.is_loaded(key):
                        report.skipped_partitions += 1
                        continue
                    job.load_partition(partition, key)
        finally:
            job.close()
    if report.rows_loaded or report.mode == "replace":
        from engine.catalog import refresh_hot_rows

        refresh_hot_rows(target.table, job.connections, dsn=target.dsn)
    report.seconds = round(time.perf_counter() - started, 3)
    report.rows_per_s = round(report.rows_in / report.seconds, 1) if report.seconds else 0.0
    report.peak_rss_mb, report.peak_child_rss_mb = (round(x, 1) for x in _peak_rss_mb())
    report.partitions = sorted(set(report.partitions))
    if report.archive_bytes:
        report.compression_ratio = round(report.source_bytes / report.archive_bytes, 2)
    return report


def source_label(path: str) -> str:
    """The source as reports and logs show it: without passwords or API keys (URLs, DSNs, driver strings)."""
    from engine.redact import redact

    return redact(path)


def _incremental(source: Source, sink: PostgresSink, target: TargetSpec) -> tuple[Source, tuple[str, str] | None]:
    """An incremental source restricted to what changed since its stored watermark, and (key, cursor) to
    advance it under; a plain source as it is."""
    if not isinstance(source, IncrementalSource) or not source.cursor:
        return source, None
    if getattr(source, "lag", None) and target.mode != "merge":
        raise SpecError("source.lag", "a lag re-reads rows near the watermark on purpose; use mode merge with a key "
                                      "so they update instead of duplicating")
    key = source.watermark_key()
    low = sink.watermark(target.table, target.connection_id, key)
    bounded = source.with_watermark(low)
    if len(bounded.partitions()) > 1:
        raise SpecError("source.cursor", "an incremental source must read as one partition (one watermark commit)")
    return bounded, (key, source.cursor)


def _spec_hash(spec: LoadSpec) -> str:
    t = spec.target
    text = "\x1f".join([spec.pipeline.fingerprint(), str(t.partition_by), t.granularity, str(t.hash_partitions),
                        t.mode, ",".join(t.key), repr(sorted(spec.source.options.items())),
                        *([t.layout] if t.layout != "table" else [])])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _load_key(target: TargetSpec, partition: Partition, spec_hash: str) -> str:
    text = "\x1f".join([target.table, str(target.connection_id), partition.key, partition.fingerprint, spec_hash])
    return hashlib.sha256(text.encode()).hexdigest()


class _Prefetch:
    """Compute the next batch on a thread while the current one is being COPYed (Polars and libpq both
    release the GIL), with at most ``depth`` batches waiting: memory stays bounded."""

    _DONE = object()

    def __init__(self, batches: Iterator[pl.DataFrame], depth: int = 2) -> None:
        self._q: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, args=(batches,), daemon=True)
        self._thread.start()

    def _fill(self, batches: Iterator[pl.DataFrame]) -> None:
        try:
            for df in batches:
                while not self._stop.is_set():
                    try:
                        self._q.put(df, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            self._q.put(self._DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            self._q.put(exc)

    def __iter__(self) -> Iterator[pl.DataFrame]:
        while True:
            item = self._q.get()
            if item is self._DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._q.get(timeout=0.1)


@dataclasses.dataclass
class _Prepared:
    """Decisions taken once per partition (against the table), replayed on every chunk's plan."""

    info: TableInfo
    time_column: str
    add_loaded_at: bool
    text_casts: dict[str, pl.DataType]
    casts: dict[str, pl.DataType]
    conflict: list[str]
    identity: list[str]
    known_names: dict[str, str] = dataclasses.field(default_factory=dict)
    columns: list[str] = dataclasses.field(default_factory=list)
    precomputed: dict[str, pl.Series] | None = None


class _Job:
    """One load's state: its sink, report and the table layout once known."""

    def __init__(self, *, spec: LoadSpec, source: Source, sink: PostgresSink, report: LoadReport, spec_hash: str,
                 progress: Progress | None, store: Store | None = None,
                 watermark: tuple[str, str] | None = None) -> None:
        self.spec = spec
        self.target = spec.target
        self.source = source
        self.sink = sink
        self.report = report
        self.spec_hash = spec_hash
        self.progress = progress
        self.store = store
        self.watermark = watermark
        self.loaded_at = dt.datetime.now(dt.UTC)
        self.partitions_done = 0
        #: children created standalone in the open transaction, attached before it commits
        self.fresh: dict[str, Period] = {}
        #: helper connections that fill new children beside the transaction (append mode; None = off or unused)
        self.staging: FreshChildren | None = None
        #: periods tiered out to the archive (loaded on a merge's first batch)
        self._cold: set[dt.date] | None = None
        #: connections that received rows (their cached latest rows are refreshed after the load)
        self.connections: set[int] = set()

    # --- planning ------------------------------------------------------------------------------------------
    def _pipeline(self) -> Pipeline:
        pipeline = self.spec.pipeline
        if self.target.mode == "merge":  # repeated keys are resolved in SQL (last one wins), see sink.merge
            pipeline = dataclasses.replace(pipeline, rules=(NotNull(columns=self.target.key), *pipeline.rules))
        return pipeline

    def _compile(self, frame: pl.LazyFrame, precomputed: dict[str, pl.Series] | None,
                 known_names: dict[str, str]) -> Plan:
        """The table-independent part of a plan: steps, rules, COPY guard, names, connection column."""
        pipeline = self._pipeline()
        plan = compile_steps(pipeline, frame, precomputed=precomputed)
        apply_rules(plan, pipeline)
        if self.target.layout == "document":  # fields keep their names and nesting inside the document
            self._connection_column(plan)
            self._document(plan)
            guard_copy(plan)
            return plan
        guard_copy(plan)
        if pipeline.normalize_names:
            normalize(plan, known_names)
        else:
            fit_names(plan)
        self._connection_column(plan)
        return plan

    def _document(self, plan: Plan) -> None:
        """Every visible field into one JSON document per row, beside the import id and a timestamp (the
        ``partition_by`` column if given, else the load time). Binary COPY writes jsonb as a version byte
        followed by the text, so the column is sent as bytes."""
        fields = [c for c in plan.columns if c != CONNECTION_COLUMN]
        wanted = self.target.partition_by
        when: pl.Expr = pl.lit(self.loaded_at, dtype=pl.Datetime("us", "UTC"))
        if wanted:
            source = wanted if wanted in plan.columns else _renamed(plan, wanted)
            plan.need(source, "target.partition_by")
            if plan.schema[source] == pl.String:  # JSON has no time type: parse, rows that do not parse are rejected
                plan.convert_columns({source: pl.Datetime("us")}, "type")
            dtype = plan.schema[source]
            if dtype == pl.Date:
                when = pl.col(source).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
            elif isinstance(dtype, pl.Datetime):
                when = pl.col(source).dt.replace_time_zone("UTC") if dtype.time_zone is None \
                    else pl.col(source).dt.convert_time_zone("UTC")
            else:
                raise SpecError("target.partition_by", f"column {source!r} is {dtype}, not a date or timestamp")
        document = pl.struct(fields).struct.json_encode() if fields else pl.lit("{}")
        plan.reject("copy_safe", DOC_DATA, document.str.contains("\\u0000", literal=True).fill_null(False),
                    pl.lit("the document holds a NUL character (\\u0000), which jsonb refuses"))
        hidden = [c for c in plan.schema if c not in plan.columns]
        plan.frame = plan.frame.with_columns(
            pl.lit(self.report.load_id).alias(DOC_IMPORT),
            (pl.lit(_JSONB_VERSION) + document).cast(pl.Binary).alias(DOC_DATA),
            when.alias(DOC_TIME),
        ).select(*hidden, CONNECTION_COLUMN, DOC_IMPORT, DOC_DATA, DOC_TIME)
        plan.refresh()

    def _precompute(self, partition: Partition) -> dict[str, pl.Series] | None:
        """Rows that dedupe steps drop and unique rules reject, decided over the whole partition.

        Chunks are planned separately, so each such step gets a first pass, chunk by chunk, that keeps only
        the row number and key of rows still headed for the table; the repeats among those are the flagged
        rows, which each chunk then looks up. Memory grows with the keys kept, not with the data. Steps are
        decided in order, each pass seeing the decisions of the steps before it.
        """
        pipeline = self._pipeline()
        if not any(isinstance(s, Dedupe) for s in pipeline.steps) and \
                not any(isinstance(r, Unique) for r in pipeline.rules):
            return None
        first = next(iter(self.source.chunks(partition)))(0)
        probe = compile_steps(pipeline, first, precomputed={})
        apply_rules(probe, pipeline)
        precomputed: dict[str, pl.Series] = {}
        for name in probe.globals:
            # first the key alone, over every row (Polars then reads only the columns the key needs): when no
            # key occurs twice, no row is flagged whatever else the rules say
            keys = self._first_pass(partition, pipeline, precomputed, name, [ROW_COLUMN, KEY_COLUMN])
            if keys[KEY_COLUMN].n_unique() == keys.height:
                precomputed[name] = keys[ROW_COLUMN].head(0)
                continue
            pending = self._first_pass(partition, pipeline, precomputed, name,
                                       [ROW_COLUMN, KEY_COLUMN, PENDING_COLUMN])
            key = pl.col(KEY_COLUMN)
            kept = key.is_first_distinct() if probe.global_keep[name] == "first" else key.is_last_distinct()
            precomputed[name] = pending.filter(~kept)[ROW_COLUMN]
        return precomputed

    def _first_pass(self, partition: Partition, pipeline: Pipeline, precomputed: dict[str, pl.Series], name: str,
                    columns: list[str]) -> pl.DataFrame:
        """``columns`` of every row of the partition, planned chunk by chunk for the flag ``name``."""
        rows_before = 0
        parts: list[pl.DataFrame] = []
        for factory in self.source.chunks(partition):
            plan = compile_steps(pipeline, factory(rows_before), precomputed=precomputed, collect_for=name)
            apply_rules(plan, pipeline)
            try:
                df = plan.frame.select(columns).collect()
            except pl.exceptions.PolarsError as exc:
                raise _source_error(partition, exc) from None
            rows_before += df.height
            parts.append(df if PENDING_COLUMN not in columns else df.filter(pl.col(PENDING_COLUMN)))
        return pl.concat(parts)

    def prepare(self, partition: Partition, first_chunk: Any, *, table: str, conn: Any = None,
                defer_indexes: bool = False) -> _Prepared:
        """Plan the first chunk and make the table fit it (create, add columns, widen); the decisions taken
        here are replayed on every chunk by :meth:`build`."""
        precomputed = self._precompute(partition)
        first = first_chunk(0)
        info = self.sink.describe(table, conn=conn)
        known_names = info.source_names if info is not None else {}
        plan = self._compile(first, precomputed or {}, known_names)
        if info is not None and not info.time_column:  # checked before any DDL touches the user's table
            raise SpecError("target.table", f"{table} exists but is not range-partitioned on a time column "
                                            "(a plain table, a view, or another partitioning); load into a new table")
        time_column, add_loaded_at = self._time_column(plan, info)
        if add_loaded_at:
            self._add_loaded_at(plan)
        text_casts: dict[str, pl.DataType] = {}
        casts: dict[str, pl.DataType] = {}
        if info is None:
            info = self._create(plan, table, time_column, conn=conn, defer_indexes=defer_indexes)
        else:
            text_casts, casts = self._reconcile(plan, info, conn=conn)
        conflict: list[str] = []
        identity: list[str] = []
        if self.target.mode == "merge":
            keys = []
            for k in self.target.key:
                name = k if k in plan.columns else _renamed(plan, k)
                if name not in plan.columns:
                    raise SpecError("target.key", f"key column {k!r} is not in the data"
                                                  f"{did_you_mean(k, plan.columns)}")
                keys.append(name)
            identity = [CONNECTION_COLUMN, *[k for k in keys if k != CONNECTION_COLUMN]]
            conflict = self.sink.ensure_merge_index(info, identity)
        prepared = _Prepared(info=info, time_column=time_column, add_loaded_at=add_loaded_at, text_casts=text_casts,
                             casts=casts, conflict=conflict, identity=identity, precomputed=precomputed,
                             known_names=known_names)
        prepared.columns = list(self.build(first, prepared).columns)
        return prepared

    def build(self, frame: pl.LazyFrame, prepared: _Prepared) -> Plan:
        """One chunk's complete plan, ending in the status/rule/reason columns."""
        plan = self._compile(frame, prepared.precomputed or {}, prepared.known_names)
        if prepared.add_loaded_at:
            self._add_loaded_at(plan)
        _apply_casts(plan, prepared.text_casts, prepared.casts)
        self._guard_time(plan, prepared.time_column)
        finish(plan)
        return plan

    def _connection_column(self, plan: Plan) -> None:
        cid = self.target.connection_id
        if cid is not None:
            plan.frame = plan.frame.with_columns(pl.lit(cid, dtype=pl.Int64).alias(CONNECTION_COLUMN))
        elif CONNECTION_COLUMN in plan.columns:
            if plan.schema[CONNECTION_COLUMN] != pl.Int64:
                plan.convert_columns({CONNECTION_COLUMN: pl.Int64()}, "type")
            plan.reject("not_null", CONNECTION_COLUMN, pl.col(CONNECTION_COLUMN).is_null(),
                        pl.lit("connection_id is null and no --connection was given"))
        else:
            plan.frame = plan.frame.with_columns(pl.lit(0, dtype=pl.Int64).alias(CONNECTION_COLUMN))
        plan.refresh()
        # connection_id first: it leads every index
        order = [CONNECTION_COLUMN, *[c for c in plan.schema if c != CONNECTION_COLUMN]]
        plan.frame = plan.frame.select(order)
        plan.refresh()

    def _time_column(self, plan: Plan, info: TableInfo | None) -> tuple[str, bool]:
        """The partition column, and whether it is the engine's own ``_loaded_at``."""
        wanted = DOC_TIME if self.target.layout == "document" else self.target.partition_by
        add = False
        if info is not None and info.time_column:
            if wanted and wanted != info.time_column and _renamed(plan, wanted) != info.time_column:
                raise SpecError("target.partition_by", f"table {info.name} is partitioned by "
                                f"{info.time_column!r}, not {wanted!r}")
            chosen = info.time_column
            add = chosen == LOADED_AT and chosen not in plan.columns
        elif wanted:
            chosen = wanted if wanted in plan.columns else _renamed(plan, wanted)
            if chosen not in plan.columns:
                raise SpecError("target.partition_by", f"unknown column {wanted!r}{did_you_mean(wanted, plan.columns)}")
        else:
            dated = [c for c in plan.columns if plan.schema[c] == pl.Date or isinstance(plan.schema[c], pl.Datetime)]
            chosen = dated[0] if dated else LOADED_AT
            add = not dated
        if not add and chosen not in plan.columns:
            raise SpecError("target.partition_by", f"the data has no column {chosen!r} to partition by"
                                                   f"{did_you_mean(chosen, plan.columns)}")
        existing_text = info is not None and plan.schema.get(chosen) == pl.String  # parsed to the table's type
        if not add and not existing_text:
            dtype = plan.schema[chosen]
            if not (dtype == pl.Date or isinstance(dtype, pl.Datetime)):
                raise SpecError("target.partition_by", f"column {chosen!r} is {dtype}, not a date or timestamp; "
                                                       "add a parse_date step or pick another column")
        self.report.time_column = chosen
        return chosen, add

    def _add_loaded_at(self, plan: Plan) -> None:
        plan.frame = plan.frame.with_columns(pl.lit(self.loaded_at, dtype=pl.Datetime("us", "UTC")).alias(LOADED_AT))
        plan.refresh()

    def _guard_time(self, plan: Plan, time_column: str) -> None:
        col = pl.col(time_column)
        plan.reject("partition", time_column, col.is_null(),
                    pl.lit(f"{time_column} is null, so the row has no time partition"))
        year = col.dt.year()
        plan.reject("partition", time_column, ((year < 1) | (year > 9999)).fill_null(False),
                    pl.format("{} is outside years 1..9999 for a time partition", col.cast(pl.String)))
        plan.refresh()

    def _create(self, plan: Plan, table: str, time_column: str, *, conn: Any, defer_indexes: bool) -> TableInfo:
        columns = [(c, "jsonb" if self.target.layout == "document" and c == DOC_DATA
                    else pg_type(to_loadable(plan.schema[c]))) for c in plan.columns]
        comments = {new: old for new, old in plan.renamed_from.items() if new in plan.columns}
        return self.sink.create_table(table, columns, time_column=time_column, granularity=self.target.granularity,
                                      hash_partitions=self.target.hash_partitions, comments=comments, conn=conn,
                                      indexes=not defer_indexes)

    def _reconcile(self, plan: Plan, info: TableInfo, *, conn: Any) -> tuple[dict[str, pl.DataType],
                                                                             dict[str, pl.DataType]]:
        """Fit the table to the incoming columns (add, widen) and return the casts incoming columns need:
        text parsed with rejects, and plain casts."""
        casts: dict[str, pl.DataType] = {}
        for name in plan.columns:
            incoming = plan.schema[name]
            if self.target.layout == "document" and name == DOC_DATA:
                if info.columns.get(name) != "jsonb":
                    raise SchemaDriftError(info.name, name, info.columns.get(name), "jsonb",
                                           "the document layout needs a jsonb data column; load into a new table")
                continue
            decision = reconcile(info.columns.get(name), incoming,
                                 is_key=name in (info.time_column, CONNECTION_COLUMN))
            if decision.action == "keep":
                continue
            if decision.action == "error":
                raise SchemaDriftError(info.name, name, info.columns.get(name), pg_type(to_loadable(incoming)),
                                       decision.hint)
            if decision.action in ("add", "alter") and self.target.contract == "freeze":
                raise SchemaDriftError(info.name, name, info.columns.get(name), decision.pg,
                                       "the schema contract is 'freeze'; use contract 'evolve' to allow this")
            if decision.action == "add":
                self.sink.add_column(info.name, name, decision.pg, plan.renamed_from.get(name), conn=conn)
                info.columns[name] = decision.pg
                self.report.columns_added.append(name)
            elif decision.action == "alter":
                self.sink.widen_column(info.name, name, decision.pg, conn=conn)
                info.columns[name] = decision.pg
                self.report.columns_widened.append(name)
            else:
                dtype = pg_to_polars(decision.pg)
                assert dtype is not None
                casts[name] = dtype
        # A column the table has but this source lacks is left NULL; missing key columns are errors.
        for required in (info.time_column, CONNECTION_COLUMN):
            if required and required not in plan.columns:
                raise SchemaDriftError(info.name, required, info.columns.get(required), "missing",
                                       "every load must provide the table's partition column")
        text = {c: t for c, t in casts.items() if plan.schema[c] == pl.String and t != pl.String}
        return text, {c: t for c, t in casts.items() if c not in text}

    # --- streaming -----------------------------------------------------------------------------------------
    def _period_start(self, df: pl.DataFrame, prepared: _Prepared) -> pl.Expr:
        """Each row's period start (UTC for timestamps with a time zone)."""
        col = pl.col(prepared.time_column)
        dtype = df.schema[prepared.time_column]
        if isinstance(dtype, pl.Datetime):
            if dtype.time_zone:
                col = col.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
            col = col.dt.date()
        return col.dt.truncate(truncate_every[prepared.info.granularity])

    def _periods(self, df: pl.DataFrame, prepared: _Prepared) -> list[Period]:
        starts = df.select(self._period_start(df, prepared).unique().alias("p")).to_series().to_list()
        return [period_of(s, prepared.info.granularity) for s in starts if s is not None]

    def _by_period(self, df: pl.DataFrame, prepared: _Prepared) -> Iterator[tuple[Period, pl.DataFrame]]:
        """The batch split by target child: COPY straight into children skips PostgreSQL's row routing."""
        key = "__biconic_period"
        parts = df.with_columns(self._period_start(df, prepared).alias(key)).partition_by(
            key, as_dict=True, include_key=False)
        for (start,), part in parts.items():
            yield period_of(start, prepared.info.granularity), part

    def _quarantine_rows(self, bad: pl.DataFrame, prepared: _Prepared, label: str) -> pl.DataFrame:
        # the row as read from the source (hidden copies kept by the plan), else as it stands now
        sources = {c[len(SOURCE_PREFIX):]: c for c in bad.columns if c.startswith(SOURCE_PREFIX)}
        fields = sources or {c: c for c in prepared.columns}
        values = [as_text(col, bad.schema[col]).alias(name) for name, col in fields.items()]
        raw = bad.select(pl.struct(values).struct.json_encode().alias("raw"))["raw"]
        return pl.DataFrame({
            "load_id": pl.Series([self.report.load_id] * bad.height, dtype=pl.String),
            "dataset": pl.Series([self.target.table] * bad.height, dtype=pl.String),
            "connection_id": bad[CONNECTION_COLUMN].cast(pl.Int64, strict=False),
            "source": pl.Series([label] * bad.height, dtype=pl.String),
            "row_number": bad[ROW_COLUMN].cast(pl.Int64),
            "rule": bad[RULE],
            "column_name": bad[COLUMN],
            "reason": bad[REASON].str.replace_all("\x00", "\\0", literal=True),
            "raw": raw,
        })

    def _batches(self, chunks: Iterator[Any], prepared: _Prepared, label: str) -> Iterator[pl.DataFrame]:
        """Every batch of the partition, chunk after chunk; a chunk's query starts only when the previous
        chunk has been handed over, which is what keeps memory bounded."""
        rows_before = 0
        for factory in chunks:
            plan = self.build(factory(rows_before), prepared)
            start = rows_before
            try:
                for df in plan.frame.collect_batches(chunk_size=settings().batch_rows):
                    rows_before += df.height
                    yield df
            except pl.exceptions.PolarsError as exc:
                locate = getattr(factory, "locate", None)
                if locate is None or "utf-8" in str(exc).lower():
                    raise
                row = locate(start)
                if row is None:
                    raise
                raise SourceError(label, f"cannot read: {first_line(exc)}", row=row) from None

    def stream(self, partition: Partition, chunks: Iterator[Any], prepared: _Prepared, *, into: str,
               temporary: bool = False, ddl_conn: Any = None, archive: ArchiveWriter | None = None,
               staging: FreshChildren | None = None) -> tuple[int, int, int, int]:
        """Split each batch into loaded / quarantined / filtered rows and COPY them (and hand them to the
        archive writer); returns the counts. With ``staging``, rows of new children go to its helper
        connections, which index and commit them; they are attached here, before the caller commits."""
        rows_in = loaded = quarantined = filtered = 0
        schema, base = split_table(prepared.info.name)
        time_type = prepared.info.columns.get(prepared.time_column, "")
        if staging is not None:
            # the parent's columns stay as they are until this commits: a staged child made LIKE it must still
            # match it when it is attached
            self.sink.run(f"LOCK TABLE {qualified(prepared.info.name)} IN ACCESS SHARE MODE")
            staging.start(qualified(prepared.info.name), prepared.time_column, prepared.info.hash_partitions,
                          [f"CREATE INDEX ON {CHILD} {cols}" for cols in index_columns(prepared.time_column).values()])
        rules: Counter[str] = Counter()
        keep = prepared.columns
        prefetch = _Prefetch(self._batches(chunks, prepared, partition.label))
        try:
            for df in prefetch:
                rows_in += df.height
                status = df[STATUS]
                good = df.filter(status == 0).select(keep)
                if good.height and temporary:  # merge staging: the target's children must exist for the INSERT
                    periods = self._periods(good, prepared)
                    self._refuse_cold(periods)
                    names = self.sink.ensure_partitions(prepared.info, periods, conn=ddl_conn)
                    self.report.partitions.extend(names)
                    self.sink.copy(into, good.to_arrow(), temporary=True)
                    if archive is not None:
                        for period, part in self._by_period(good, prepared):
                            archive.add(period.start, part)
                elif good.height:
                    # in the composite index's order: PostgreSQL then updates each B-tree page by page instead
                    # of at random (15% less server time into indexed children), and a connection's rows sit
                    # together on disk
                    good = good.sort([CONNECTION_COLUMN, prepared.time_column], descending=[False, True],
                                     nulls_last=True)
                    for period, part in self._by_period(good, prepared):
                        child = self.sink.child_for(prepared.info, period, self.fresh, create=staging is None)
                        name = period.child_name(base)
                        self.report.partitions.append(name)
                        if staging is not None and name in self.fresh:
                            staging.copy(schema, name, period, time_type, part.to_arrow())
                        else:
                            self.sink.copy(child, part.to_arrow())
                        if archive is not None:
                            archive.add(period.start, self._archivable(part))
                loaded += good.height
                if good.height and len(self.connections) < _TRACKED_CONNECTIONS:
                    self.connections.update(good[CONNECTION_COLUMN].unique().to_list())
                bad = df.filter(status == 1)
                if bad.height:
                    rules.update(bad[RULE].to_list())
                    self.sink.quarantine(self._quarantine_rows(bad, prepared, partition.label).to_arrow())
                    quarantined += bad.height
                filtered += int((status == 2).sum())
                self._progress(partition, self.report.rows_in + rows_in)
            if archive is not None:
                archive.seal()  # its files are written and uploaded while PostgreSQL builds indexes
            if staging is not None and self.fresh:
                staging.finish()
            if self.fresh:
                self.sink.attach_fresh(prepared.info, self.fresh, staged=staging is not None)
        except pl.exceptions.PolarsError as exc:
            raise _source_error(partition, exc) from None
        finally:
            prefetch.close()
        if rows_in != loaded + quarantined + filtered:
            raise IntegrityError(f"{partition.label}: rows_in {rows_in} != loaded {loaded} + quarantined "
                                 f"{quarantined} + filtered {filtered}; nothing was committed")
        for rule, n in rules.items():
            self.report.quarantine_by_rule[rule] = self.report.quarantine_by_rule.get(rule, 0) + n
        return rows_in, loaded, quarantined, filtered

    def _archivable(self, part: pl.DataFrame) -> pl.DataFrame:
        """The archive keeps documents as JSON text (without jsonb's COPY version byte)."""
        if self.target.layout != "document":
            return part
        return part.with_columns(pl.col(DOC_DATA).cast(pl.String).str.slice(1))

    def _advance_watermark(self) -> None:
        """Store the incremental source's high mark in the data transaction, with the rows it covers."""
        if self.watermark is None:
            return
        high = self.source.high_watermark()  # type: ignore[attr-defined]
        if high is not None:
            key, cursor = self.watermark
            self.sink.set_watermark(self.target.table, self.target.connection_id, key, cursor, high)

    def _refuse_cold(self, periods: list[Period]) -> None:
        """A merge can only update rows still in PostgreSQL: rows for a tiered period would sit beside their
        old versions in the archive, so such a merge stops (rolled back) and says how to restore first."""
        if self._cold is None:
            scope = "AND connection_id = $2" if self.target.connection_id is not None else ""
            params = [self.target.table, *([self.target.connection_id] if self.target.connection_id is not None
                                            else [])]
            self._cold = {r[0] for r in self.sink.run(
                f"SELECT DISTINCT period FROM {MANIFEST} WHERE dataset = $1 AND state = 'cold' {scope}", params,
                conn=self.sink.ddl)}
            self.sink.ddl.commit()
        tiered = sorted(p.start for p in periods if p.start in self._cold)
        if tiered:
            first, last = tiered[0], max(p.end or p.start for p in periods if p.start in self._cold)
            raise SpecError("target.mode", f"merge rows fall in period(s) {', '.join(map(str, tiered))} of "
                                           f"{self.target.table}, which were tiered out to the archive; run "
                                           f"`biconic restore {self.target.table} --from {first} --to "
                                           f"{last - dt.timedelta(days=1)}` first, then the merge")

    def _archive_writer(self, prepared: _Prepared, key: str) -> ArchiveWriter | None:
        if self.store is None:
            return None
        return ArchiveWriter(self.store, self.target.table, key, time_column=prepared.time_column)

    def _publish_archive(self, archive: ArchiveWriter | None, key: str) -> None:
        """Upload and verify the partition's archive files and list them, inside the data transaction: the
        rows and their archive copy become visible together (an upload that keeps failing rolls back)."""
        if archive is None:
            return
        files = archive.finish()
        record_files(self.sink, files, dataset=self.target.table, load_key=key, load_id=self.report.load_id)
        self.report.archive_files += len(files)
        self.report.archive_bytes += sum(f.bytes for f in files)

    def _progress(self, partition: Partition, rows: int) -> None:
        if self.progress is not None:
            self.progress.update(label=partition.label, rows=rows, total=self.report.source_partitions,
                                 done=self.partitions_done + self.report.skipped_partitions)

    def _account(self, partition: Partition, counts: tuple[int, int, int, int]) -> None:
        rows_in, loaded, quarantined, filtered = counts
        self.report.rows_in += rows_in
        self.report.rows_loaded += loaded
        self.report.rows_quarantined += quarantined
        self.report.rows_filtered += filtered
        self.partitions_done += 1

    # --- modes ---------------------------------------------------------------------------------------------
    def load_partition(self, partition: Partition, key: str) -> None:
        """append / merge: one transaction holding the ledger row, the rows and their quarantine."""
        try:
            self._load_partition(partition, key)
        except _InvalidUtf8:
            self.sink.rollback()
            self.fresh.clear()
            lossy = dataclasses.replace(partition, options={**partition.options, "utf8_lossy": True})
            self._load_partition(lossy, key)

    def _load_partition(self, partition: Partition, key: str) -> None:
        sink, target = self.sink, self.target
        self._progress(partition, self.report.rows_in)
        chunks = iter(self.source.chunks(partition))
        first = next(chunks)
        prepared = self.prepare(partition, first, table=target.table)
        chunks = itertools.chain([first], chunks)
        archive = self._archive_writer(prepared, key)
        try:
            if not sink.claim(key, load_id=self.report.load_id, dataset=target.table,
                              connection_id=target.connection_id, source=partition.label,
                              partition_key=partition.key, spec_hash=self.spec_hash, mode=target.mode):
                sink.rollback()
                self.report.skipped_partitions += 1
                return
            if target.mode == "merge":
                staging = f"biconic_stage_{self.report.load_id[:12]}"
                sink.run(f"CREATE TEMP TABLE {staging} (LIKE {_q(target.table)} INCLUDING DEFAULTS) ON COMMIT DROP")
                rows_in, staged, quarantined, filtered = self.stream(partition, chunks, prepared, into=staging,
                                                                     temporary=True, archive=archive)
                written = sink.merge(target.table, staging, prepared.columns, prepared.conflict,
                                     prepared.identity, prepared.time_column)
                # staged rows superseded by a later row with the same key count as filtered (deduplicated)
                counts = (rows_in, written, quarantined, filtered + staged - written)
            else:
                counts = self.stream(partition, chunks, prepared, into=target.table, archive=archive,
                                     staging=self._staging())
            self._publish_archive(archive, key)
            self._advance_watermark()
            sink.bump_version(target.table)
            sink.complete(key, rows_in=counts[0], rows_loaded=counts[1], rows_quarantined=counts[2],
                          rows_filtered=counts[3])
            if self.staging is not None:
                self.staging.settled()
        except BaseException:
            sink.rollback()
            self.fresh.clear()
            if self.staging is not None:
                self.staging.abort()
            raise
        finally:
            if archive is not None:
                archive.discard()
        self._account(partition, counts)

    def _staging(self) -> FreshChildren | None:
        """The helper connections for new children, opened on first use and kept for the job's partitions."""
        if self.staging is None and copy_streams() >= 2:
            self.staging = FreshChildren(self.sink, copy_streams())
        return self.staging

    def close(self) -> None:
        if self.staging is not None:
            self.staging.close()
            self.staging = None

    def replace(self, partitions: list[Partition], keys: list[str]) -> None:
        """Replace the rows in one transaction: DELETE them, COPY the new ones, commit. With a connection id
        only that connection's rows (and ledger entries) are replaced; tables are shared by tenants.

        Under MVCC a reader sees the old rows until the commit and the new ones after it, never an empty or
        half table (a rename swap cannot promise that: a reader whose snapshot predates the swap would find
        the new table empty). The table keeps its name, indexes and partitions; schema changes follow the
        contract as in append, inside the same transaction.
        """
        sink, target = self.sink, self.target
        # With a connection id, replace is that tenant's rows only; without one, the whole table.
        scope = "AND connection_id = $2" if target.connection_id is not None else ""
        params: list[Any] = [target.table, *([target.connection_id] if target.connection_id is not None else [])]
        existing = {r[0] for r in sink.run(f"SELECT load_key FROM biconic.loads WHERE dataset = $1 {scope} "
                                           "AND mode <> 'restore'", params, conn=sink.ddl)}
        # a file's key changes with its bytes; a database table's does not, so its replace always re-reads
        if existing and existing == set(keys) and all(p.path is not None for p in partitions):
            self.report.skipped_partitions = len(partitions)
            return
        counted: list[tuple[Partition, tuple[int, int, int, int]]] = []
        existed = sink.describe(target.table, conn=sink.data) is not None
        try:
            sink.run(f"DELETE FROM biconic.loads WHERE dataset = $1 {scope}", params)
            # the old rows' archive files describe rows that no longer exist: kept for audit, never read
            sink.run(f"UPDATE {MANIFEST} SET state = 'superseded', changed_at = now() "
                     f"WHERE dataset = $1 {scope} AND state <> 'superseded'", params)
            if existed and target.connection_id is not None:
                sink.run(f"DELETE FROM {_q(target.table)} WHERE {_qi(CONNECTION_COLUMN)} = $1", [target.connection_id])
            elif existed:
                sink.run(f"DELETE FROM {_q(target.table)}")
            for partition, key in zip(partitions, keys, strict=True):
                sink.run("SAVEPOINT biconic_partition")
                fresh_before = dict(self.fresh)
                try:
                    counts = self._replace_partition(partition, key, fresh=not existed)
                except _InvalidUtf8:
                    sink.run("ROLLBACK TO SAVEPOINT biconic_partition")
                    self.fresh = fresh_before
                    lossy = dataclasses.replace(partition, options={**partition.options, "utf8_lossy": True})
                    counts = self._replace_partition(lossy, key, fresh=not existed)
                counted.append((partition, counts))
            info = sink.describe(target.table, conn=sink.data)
            if not existed and info is not None and info.time_column:
                sink.create_indexes(target.table, info.time_column, conn=sink.data)  # after the rows: faster
            sink.bump_version(target.table)
            sink.commit()
        except BaseException:
            sink.rollback()
            self.fresh.clear()
            raise
        for partition, counts in counted:
            self._account(partition, counts)

    def _replace_partition(self, partition: Partition, key: str, *, fresh: bool) -> tuple[int, int, int, int]:
        sink = self.sink
        self._progress(partition, self.report.rows_in)
        chunks = iter(self.source.chunks(partition))
        first = next(chunks)
        prepared = self.prepare(partition, first, table=self.target.table, conn=sink.data, defer_indexes=fresh)
        archive = self._archive_writer(prepared, key)
        try:
            counts = self.stream(partition, itertools.chain([first], chunks), prepared, into=self.target.table,
                                 ddl_conn=sink.data, archive=archive)
            self._publish_archive(archive, key)
            self._advance_watermark()
        finally:
            if archive is not None:
                archive.discard()
        sink.claim(key, load_id=self.report.load_id, dataset=self.target.table, connection_id=self.target.connection_id,
                   source=partition.label, partition_key=partition.key, spec_hash=self.spec_hash, mode="replace")
        sink.run("UPDATE biconic.loads SET rows_in = $2, rows_loaded = $3, rows_quarantined = $4, rows_filtered = $5, "
                 "finished_at = clock_timestamp(), state = 'committed' WHERE load_key = $1", [key, *counts])
        return counts


class _InvalidUtf8(Exception):
    """The CSV holds invalid UTF-8: retried in lossy mode, where affected rows are quarantined."""


def _source_error(partition: Partition, exc: Exception) -> Exception:
    text = first_line(exc)
    if "invalid utf-8" in text.lower() and not partition.options.get("utf8_lossy"):
        return _InvalidUtf8(text)
    return SourceError(partition.label, f"cannot read: {text}")


def _apply_casts(plan: Plan, text_casts: dict[str, pl.DataType], casts: dict[str, pl.DataType]) -> None:
    """Make incoming columns match the table: text is parsed (bad values rejected), the rest cast."""
    plan.convert_columns(text_casts, "type")
    if casts:
        plan.frame = plan.frame.with_columns(
            (pl.col(c).cast(pl.String) if t == pl.String else pl.col(c).cast(t, strict=False)).alias(c)
            for c, t in casts.items())
        plan.refresh()


def _renamed(plan: Plan, original: str) -> str:
    for new, old in plan.renamed_from.items():
        if old == original:
            return new
    return original


_q = qualified
_qi = quote_ident

