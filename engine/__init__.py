"""Biconic Engine: files in, partitioned PostgreSQL out, effectively once.

>>> import engine
>>> report = engine.load("orders.csv", into="orders", partition_by="created_at:month")  # doctest: +SKIP
>>> reports = engine.run("pipeline.yaml")  # doctest: +SKIP
"""

from __future__ import annotations

from engine.errors import (
    BiconicError, HostileInputError, IntegrityError, SchemaDriftError, SinkError, SinkUnavailableError,
    SourceError, SpecError, TransientError,
)
from engine.pipeline import load, run
from engine.report import LoadReport
from engine.spec import LoadSpec, Pipeline

__all__ = [
    "BiconicError",
    "HostileInputError",
    "IntegrityError",
    "LoadReport",
    "LoadSpec",
    "Pipeline",
    "SchemaDriftError",
    "SinkError",
    "SinkUnavailableError",
    "SourceError",
    "SpecError",
    "TransientError",
    "load",
    "run",
]
__version__ = "0.1.0"
