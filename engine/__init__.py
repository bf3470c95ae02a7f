"""Biconic Engine: files in, partitioned PostgreSQL out, effectively once.

>>> import engine
>>> report = engine.load("orders.csv", into="orders", partition_by="created_at:month")  # doctest: +SKIP
>>> reports = engine.run("pipeline.yaml")  # doctest: +SKIP
>>> engine.query("SELECT count(*) FROM orders")  # doctest: +SKIP

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
]
__version__ = "0.1.0"

_LAZY = {"load": "engine.pipeline", "run": "engine.pipeline", "query": "engine.reads.duck",
         "loads": "engine.reads.history", "quarantined": "engine.reads.history",
         "LoadReport": "engine.report", "LoadSpec": "engine.spec.models", "Pipeline": "engine.spec.models"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
