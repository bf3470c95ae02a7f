"""Reads move the engine's metrics: cache hits and misses by kind (latest, metadata, query) and each read's
latency by where it was answered (the Redis cache, PostgreSQL, or the archive for a query over archive files)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

import engine
from engine.metrics import recorded
from engine.reads.cache import get_cache, reset_caches
from engine.reads.catalog import hot_rows, metadata
from engine.reads.duck import run_query

REDIS_URL = os.environ.get("BICONIC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def value(name: str, **labels: str) -> float:
    return recorded().get_sample_value(name, labels) or 0.0


@pytest.fixture
def redis_cache(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError:
        if os.environ.get("CI"):
            pytest.fail("Redis is not running on 127.0.0.1:6379")
        pytest.skip("no Redis on 127.0.0.1:6379")
    monkeypatch.setenv("BICONIC_REDIS_URL", REDIS_URL)
    reset_caches()
    assert get_cache().backend == "redis"
    yield
    reset_caches()


def _load(tmp_path: Path, pg_dsn: str, table: str) -> None:
    (tmp_path / "a.csv").write_text("id,connection_id,created_at\n" + "".join(
        f"{i},{1 + i % 2},2026-05-0{1 + i % 5} 10:00:00\n" for i in range(20)), encoding="utf-8")
    engine.load(tmp_path / "a.csv", into=table, partition_by="created_at:month", dsn=pg_dsn)


@pytest.mark.redis
def test_a_query_misses_then_hits_the_cache_and_times_each(redis_cache: None, tmp_path: Path, pg_dsn: str,
                                                           table: str) -> None:
    _load(tmp_path, pg_dsn, table)
    names = [("biconic_cache_misses_total", {"kind": "query"}), ("biconic_cache_hits_total", {"kind": "query"}),
             ("biconic_query_duration_seconds_count", {"source": "postgresql"}),
             ("biconic_query_duration_seconds_count", {"source": "cache"})]
    before = [value(n, **labels) for n, labels in names]
    first = run_query(f'SELECT count(*) AS n FROM "{table}"', dsn=pg_dsn)
    second = run_query(f'SELECT count(*) AS n FROM "{table}"', dsn=pg_dsn)
    assert (first.cached, second.cached) == (False, True)
    assert [value(n, **labels) - b for (n, labels), b in zip(names, before, strict=True)] == [1, 1, 1, 1]


@pytest.mark.redis
def test_latest_rows_and_metadata_count_their_lookups(redis_cache: None, tmp_path: Path, pg_dsn: str,
                                                      table: str) -> None:
    _load(tmp_path, pg_dsn, table)  # the load put connection 1's latest rows in Redis itself
    hits, cached = value("biconic_cache_hits_total", kind="latest"), value(
        "biconic_query_duration_seconds_count", source="cache")
    assert hot_rows(table, 1, dsn=pg_dsn).height == 10
    assert value("biconic_cache_hits_total", kind="latest") == hits + 1
    assert value("biconic_query_duration_seconds_count", source="cache") == cached + 1
    uncached = value("biconic_query_duration_seconds_count", source="postgresql")
    hot_rows(table, 1, dsn=pg_dsn, cache=False)  # not looked up: read from PostgreSQL
    assert value("biconic_cache_hits_total", kind="latest") == hits + 1
    assert value("biconic_query_duration_seconds_count", source="postgresql") == uncached + 1
    misses = value("biconic_cache_misses_total", kind="metadata")
    hits = value("biconic_cache_hits_total", kind="metadata")
    metadata(table, dsn=pg_dsn)
    metadata(table, dsn=pg_dsn)
    assert (value("biconic_cache_misses_total", kind="metadata") - misses,
            value("biconic_cache_hits_total", kind="metadata") - hits) == (1, 1)


def test_a_query_over_archive_files_is_timed_as_the_archive(tmp_path: Path, pg_dsn: str, table: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BICONIC_REDIS_URL", raising=False)
    reset_caches()
    _load(tmp_path, pg_dsn, table)
    before = value("biconic_query_duration_seconds_count", source="archive")
    result = run_query(f'SELECT count(*) AS n FROM archive."{table}"', dsn=pg_dsn, cache=False)
    assert result.frame["n"][0] == 20
    assert value("biconic_query_duration_seconds_count", source="archive") == before + 1
