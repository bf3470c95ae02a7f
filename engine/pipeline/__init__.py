"""The load: source -> plan -> validate -> PostgreSQL + archive -> ledger, one source partition at a time.

``load()`` is the Python API behind ``biconic load``; ``run()`` runs every load of a pipeline YAML file. The
steps, each a module: key the partitions and drive them (:mod:`~engine.pipeline.runner`), plan a chunk
(:mod:`~engine.pipeline.planner`, :mod:`~engine.pipeline.document`), fit the table to it
(:mod:`~engine.pipeline.fit`), stream its batches (:mod:`~engine.pipeline.batches`,
:mod:`~engine.pipeline.stream`) into one of the row targets (:mod:`~engine.pipeline.targets`), and commit by
mode (:mod:`~engine.pipeline.publish`).

May import: every lower layer (``engine.sources``, ``engine.plan``, ``engine.spec``, ``engine.postgres``,
``engine.archive``, ``engine.reads`` to refresh cached rows) and the core modules. Only the CLI, the demo and
(later) jobs and the service import this.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from engine.pipeline.runner import run_load
from engine.progress import Progress
from engine.report import LoadReport
from engine.spec.models import LoadSpec, Mode, Pipeline, SourceSpec
from engine.spec.parse import load_pipeline_file, make_target, parse_pipeline, read_pipeline_spec

__all__ = ["load", "run", "run_load"]


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
    full_refresh: bool = False,
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
    ``full_refresh=True`` loads every partition again on purpose, ignoring the ledger and any stored watermark:
    append adds the rows a second time, merge updates them, replace replaces even when nothing changed. A
    full refresh interrupted part-way is finished by the next one, never loading a partition twice.
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
    return run_load(spec_obj, progress=progress, full_refresh=full_refresh)


def run(pipeline_file: str | Path, *, dsn: str | None = None, full_refresh: bool = False,
        progress: Progress | None = None) -> list[LoadReport]:
    """Run every load declared in a pipeline YAML file, in order; stops at the first failing load.
    ``full_refresh``: every load reloads on purpose (see :func:`load`)."""
    reports = []
    for spec in load_pipeline_file(pipeline_file):
        if dsn and not spec.target.dsn:
            spec = spec.model_copy(update={"target": spec.target.model_copy(update={"dsn": dsn})})
        reports.append(run_load(spec, progress=progress, full_refresh=full_refresh))
    return reports

