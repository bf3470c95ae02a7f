"""Biconic Engine: files in, partitioned PostgreSQL out, effectively once.

>>> import engine
>>> report = engine.load("orders.csv", into="orders", partition_by="created_at:month")  # doctest: +SKIP
>>> reports = engine.run("pipeline.yaml")  # doctest: +SKIP
>>> engine.query("SELECT count(*) FROM orders")  # doctest: +SKIP
>>> job = engine.submit("orders/*.csv", into="orders")  # a queued job, run by `biconic worker`  # doctest: +SKIP

Heavy modules (polars, ADBC) load on first use, so ``import engine`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from engine.errors import (
    ArchiveError,
    BiconicError,
    HostileInputError,
    IntegrityError,
    PartialLoadError,
    QueryError,
    RejectedError,
    SchemaDriftError,
    SinkConflictError,
    SinkError,
    SinkUnavailableError,
    SourceError,
    SourceUnavailableError,
    SpecError,
    StoppedLoadError,
    TransientError,
)

if TYPE_CHECKING:
    from engine.jobs.client import Job, submit, submit_pipeline
    from engine.pipeline import load, run
    from engine.reads.duck import query
    from engine.reads.history import loads, quarantined
    from engine.report import LoadReport
    from engine.spec.models import LoadSpec, Pipeline

__all__ = [
    "ArchiveError",
    "BiconicError",
    "HostileInputError",
    "IntegrityError",
    "Job",
    "LoadReport",
    "LoadSpec",
    "PartialLoadError",
    "Pipeline",
    "QueryError",
    "RejectedError",
    "SchemaDriftError",
    "SinkConflictError",
    "SinkError",
    "SinkUnavailableError",
    "SourceError",
    "SourceUnavailableError",
    "SpecError",
    "StoppedLoadError",
    "TransientError",
    "load",
    "loads",
    "quarantined",
    "query",
    "run",
    "submit",
    "submit_pipeline",
]
__version__ = "0.1.0"

_LAZY = {"load": "engine.pipeline", "run": "engine.pipeline", "query": "engine.reads.duck",
         "loads": "engine.reads.history", "quarantined": "engine.reads.history",
         "LoadReport": "engine.report", "submit": "engine.jobs.client", "submit_pipeline": "engine.jobs.client",
         "Job": "engine.jobs.client", "LoadSpec": "engine.spec.models", "Pipeline": "engine.spec.models"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
