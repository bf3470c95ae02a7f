"""The reads' numbers into the engine's metrics (:mod:`engine.metrics`): each cache lookup as a hit or a miss by
what was looked up (``latest``, ``metadata``, ``query``), and each read's latency by where it was answered:
``cache``, ``archive`` (it read cold archive files) or ``postgresql``."""

from __future__ import annotations

import time

from engine.metrics import metrics

__all__ = ["answered", "looked_up"]


def looked_up(kind: str, hit: bool) -> None:
    """One cache lookup of ``kind``."""
    m = metrics()
    (m.cache_hits if hit else m.cache_misses).labels(kind=kind).inc()


def answered(source: str, started: float) -> None:
    """A read begun at ``started`` (``time.perf_counter()``) was answered from ``source``."""
    metrics().query_duration.labels(source=source).observe(time.perf_counter() - started)
