"""The load: source -> plan -> validate -> PostgreSQL + archive -> ledger, one source partition at a time.

``load()`` is the Python API behind ``biconic load``; ``run()`` runs every load of a pipeline YAML file. The
steps, each a module: key the partitions and drive them (:mod:`~engine.pipeline.runner`), plan a chunk
(:mod:`~engine.pipeline.planner`, :mod:`~engine.pipeline.document`), fit the table to it
(:mod:`~engine.pipeline.fit`), stream its batches (:mod:`~engine.pipeline.batches`,
:mod:`~engine.pipeline.stream`) into one of the row targets (:mod:`~engine.pipeline.targets`), judge it by its
rejected rows (:mod:`~engine.pipeline.rejects`), and commit by mode (:mod:`~engine.pipeline.publish`).

May import: every lower layer (``engine.sources``, ``engine.plan``, ``engine.spec``, ``engine.postgres``,
``engine.archive``, ``engine.reads`` to refresh cached rows) and the core modules. Only the CLI, the demo and
(later) jobs and the service import this.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from engine.errors import BiconicError
from engine.ids import ConnectionId
from engine.pipeline.runner import run_load
from engine.progress import Progress
from engine.redact import unexpand
from engine.report import LoadReport
from engine.sources import open_source
from engine.spec.models import LoadSpec, Mode, Pipeline, SourceSpec
from engine.spec.parse import (
    make_target,
    parse_pipeline,
    read_pipeline_file,
    read_pipeline_spec,
    replace_target,
)

__all__ = ["load", "load_spec", "run", "run_load"]


def load(
    source: str | Path | Any,
    into: str,
    *,
    connection_id: ConnectionId | uuid.UUID | None = None,
    connection_override: bool = False,
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
    source_name: str | None = None,
    max_rejected: float | int | str | None = None,
    allow_empty: bool = False,
    indexes: Sequence[str] | None = None,
    full_refresh: bool = False,
    progress: Progress | None = None,
) -> LoadReport:
    """Load a file, folder or glob (or a database/API URL, or data already in Python) into a partitioned
    PostgreSQL table, effectively once.

    >>> engine.load("orders.csv", into="orders", partition_by="created_at:month")  # doctest: +SKIP
    LoadReport(table='orders', rows_in=1000000, rows_loaded=1000000, ...)
    >>> engine.load(df, into="orders", source_name="orders-2026-06")  # doctest: +SKIP

    ``source`` may also be data in Python (Polars, pandas, pyarrow; see :mod:`engine.sources.frames`): one
    partition, loaded again by each load unless ``source_name`` names it (a re-run of that name is skipped).
    ``spec`` holds steps and rules: a YAML path, a :class:`Pipeline`, or a dict. Re-running the same load
    adds nothing; a load killed part-way leaves no partial partition visible and completes when re-run.
    ``archive``: where the Parquet copy goes (a folder or ``s3://bucket/prefix``); None = the default
    (``BICONIC_ARCHIVE_URL``, else a folder under the data folder); False = no archive copy.
    ``connection_id``: an int, a :class:`uuid.UUID` (or its text) or a short text id; it fixes the type of a new
    table's ``connection_id`` column (bigint, uuid, text). When the rows carry their own ``connection_id``
    values that differ from it, the load fails unless ``connection_override=True``.
    ``layout="document"`` stores each row as one jsonb document in the generic table
    ``(_import_id, connection_id, data jsonb, created_at)`` (for schemaless sources: MongoDB, REST).
    ``max_rejected``: a file or sheet with more rejected rows than this (``0.5``, ``"50%"``, ``1000`` rows,
    ``"off"``; see :mod:`engine.spec.limits`), or with every row rejected, fails and commits nothing.
    ``allow_empty=True``: a file with no rows is a 0-row success, not an :class:`~engine.errors.EmptySourceError`.
    ``indexes``: the table's index set, e.g. ``["btree(connection_id, created_at desc)", "gist(area)"]``; None
    = BRIN on the time column and that B-tree; ``[]`` = none (see :mod:`engine.index_set`).
    ``full_refresh=True`` loads every partition again on purpose (append adds the rows a second time; see
    :mod:`engine.pipeline.reload`).
    """
    in_memory = None if isinstance(source, (str, Path)) else open_source(
        source, options=_reader_options(options, sheet, source_name))
    spec_obj = load_spec(
        source if in_memory is None else in_memory.partitions()[0].label, into, connection_id=connection_id,
        connection_override=connection_override, partition_by=partition_by, hash_partitions=hash_partitions,
        mode=mode, key=key, spec=spec, sheet=sheet, format="python" if in_memory is not None else format,
        options=options, contract=contract, dsn=dsn, archive=archive, layout=layout, source_name=source_name,
        max_rejected=max_rejected, allow_empty=allow_empty, indexes=indexes)
    return run_load(spec_obj, progress=progress, source=in_memory, full_refresh=full_refresh)


def load_spec(
    source: str | Path,
    into: str,
    *,
    connection_id: ConnectionId | uuid.UUID | None = None,
    connection_override: bool = False,
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
    source_name: str | None = None,
    max_rejected: float | int | str | None = None,
    allow_empty: bool = False,
    indexes: Sequence[str] | None = None,
) -> LoadSpec:
    """The :class:`LoadSpec` that :func:`load` runs for these arguments (a job builds it again in a worker);
    bad arguments fail here, before anything runs."""
    pipeline = _steps(spec)
    opts = _reader_options(options, sheet, source_name)
    target = make_target({
        "table": into, "connection_id": connection_id, "connection_override": connection_override,
        "partition_by": partition_by,
        "hash_partitions": hash_partitions, "mode": mode,
        "key": [key] if isinstance(key, str) else list(key or []), "contract": contract, "dsn": dsn,
        "archive": archive, "layout": layout, "max_rejected": max_rejected,
        "allow_empty": allow_empty, "indexes": None if indexes is None else list(indexes),
    })
    return LoadSpec(source=SourceSpec(path=str(source), format=format, options=opts), target=target,
                    pipeline=pipeline)


def _steps(spec: str | Path | Pipeline | Mapping[str, Any] | None) -> Pipeline:
    """The steps and rules, from a YAML path, a :class:`Pipeline` or a dict."""
    if isinstance(spec, (str, Path)):
        return read_pipeline_spec(spec)
    return spec if isinstance(spec, Pipeline) else parse_pipeline(spec)


def _reader_options(options: Mapping[str, Any] | None, sheet: str | Sequence[str] | None,
                    source_name: str | None) -> dict[str, Any]:
    opts = dict(options or {})
    if sheet is not None:
        opts["sheet"] = list(sheet) if not isinstance(sheet, str) else sheet
    if source_name is not None:
        opts["source_name"] = source_name
    return opts


def run(pipeline_file: str | Path, *, dsn: str | None = None, archive: str | bool | None = None,
        contract: str | None = None, full_refresh: bool = False, progress: Progress | None = None,
        on_report: Callable[[LoadReport], None] | None = None) -> list[LoadReport]:
    """Run every load declared in a pipeline YAML file, in order; stops at the first failing load.

    ``dsn`` is used by loads whose target names none; ``archive`` (a URL, or False for none) and ``contract``
    (``evolve``/``freeze``) replace every load's own; ``full_refresh``: every load reloads on purpose (see
    :func:`load`). Values the file takes from the environment (``${VAR}``) come back as ``${VAR}`` in errors
    and in each report's ``source``. ``on_report`` is called with each load's report as soon as that load has
    committed, so a caller still has the reports of the loads before a failing one (the CLI prints them as
    they come).

    >>> engine.run("pipeline.yaml", archive=False, contract="freeze")  # doctest: +SKIP
    """
    overrides: dict[str, Any] = {}
    if archive is not None:
        overrides["archive"] = archive
    if contract is not None:
        overrides["contract"] = contract
    reports = []
    specs, used = read_pipeline_file(pipeline_file)
    for spec in specs:
        updates = {**overrides, **({"dsn": dsn} if dsn and not spec.target.dsn else {})}
        spec = spec.model_copy(update={"target": replace_target(spec.target, updates)})
        try:
            report = run_load(spec, progress=progress, full_refresh=full_refresh)
        except BiconicError as exc:
            _unexpand_error(exc, used)
            raise
        report.source = unexpand(report.source, used)
        reports.append(report)
        if on_report is not None:
            on_report(report)
    return reports


def _unexpand_error(exc: BiconicError, used: dict[str, str]) -> None:
    """The error's text (and ``message``) with the values taken from the environment as their ``${VAR}``."""
    if not used:
        return
    exc.args = tuple(unexpand(a, used) if isinstance(a, str) else a for a in exc.args)
    message = getattr(exc, "message", None)
    if isinstance(message, str):
        exc.message = unexpand(message, used)  # type: ignore[attr-defined]
