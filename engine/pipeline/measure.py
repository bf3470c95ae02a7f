"""A load's numbers into the engine's metrics (:mod:`engine.metrics`), where the load already knows them: each
committed partition's rows, bytes and steps (:func:`partition_committed`), and the load's outcome, duration
and error once it ends (:func:`measured`). Counted once here, so a load run by the CLI, the API or a job
moves the same counters."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from engine.errors import BiconicError
from engine.metrics import metrics
from engine.report import LoadReport

__all__ = ["Measured", "measured", "partition_committed", "source_kind"]

#: source class name -> the bounded ``source_kind`` label (a subclass finds its base's name in its MRO)
_KINDS = {
    "CsvSource": "csv", "ExcelSource": "excel", "JsonSource": "json", "ParquetSource": "parquet",
    "PostgresSource": "postgresql", "MySqlSource": "mysql", "MongoSource": "mongodb", "EndpointSource": "api",
    "FrameSource": "frame",
}


def source_kind(source: Any) -> str:
    """The source's kind as a label: csv, excel, json, parquet, postgresql, mysql, mongodb, api, frame or
    other (a set of tables counts as its database's kind)."""
    inner = getattr(source, "source", None)
    if type(source).__name__ == "TableSet" and inner is not None:
        return source_kind(inner)
    for cls in type(source).__mro__:
        if cls.__name__ in _KINDS:
            return _KINDS[cls.__name__]
    return "other"


def partition_committed(*, source: Any, mode: str, size_bytes: int, rows_in: int, loaded: int, filtered: int,
                        by_rule: dict[str, int], steps: Iterable[str]) -> None:
    """One committed source partition: its rows read, loaded, quarantined (by rule) and filtered, its bytes,
    and each transformation step that ran over it."""
    m, kind = metrics(), source_kind(source)
    m.rows_read.labels(source_kind=kind).inc(rows_in)
    m.bytes_read.labels(source_kind=kind).inc(max(size_bytes, 0))
    m.rows_loaded.labels(mode=mode).inc(loaded)
    m.rows_filtered.inc(filtered)
    for rule, n in by_rule.items():
        m.rows_quarantined.labels(rule=rule).inc(n)
    for step in steps:
        m.transform_steps.labels(step=step).inc()


@dataclass
class Measured:
    """What a running load has to say when it ends: its report, once it has one."""

    started: float = field(default_factory=time.perf_counter)
    report: LoadReport | None = None


@contextmanager
def measured() -> Iterator[Measured]:
    """Count the load run in the block: ``loads_total`` and its duration by outcome (succeeded, nothing_to_do
    when every partition was loaded before, failed), the archive bytes of the report, and a failure's
    ``errors_total`` by class and exit code (the code the CLI exits with; 1 for what the engine did not
    raise on purpose). The error goes on unchanged."""
    seen = Measured()
    try:
        yield seen
    except BaseException as exc:
        _ended(seen, "failed")
        code = exc.exit_code if isinstance(exc, BiconicError) else 1
        if isinstance(exc, Exception):  # an interrupt is not an engine error
            metrics().errors.labels(type=type(exc).__name__, exit_code=str(code)).inc()
        raise
    details = seen.report.source_details if seen.report is not None else []
    _ended(seen, "nothing_to_do" if details and all(d.status == "skipped" for d in details) else "succeeded")


def _ended(seen: Measured, outcome: str) -> None:
    m = metrics()
    m.loads.labels(outcome=outcome).inc()
    m.load_duration.labels(outcome=outcome).observe(time.perf_counter() - seen.started)
    if seen.report is not None:
        m.bytes_archived.inc(seen.report.archive_bytes)
