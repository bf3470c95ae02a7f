"""DuckDB queries over loaded datasets against a real PostgreSQL: results equal the source, in the table views and
the raw archive; the result cache (in memory and in a real Redis we start and kill) never serves a stale or
foreign answer; errors are the engine's."""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import engine
from engine.errors import BiconicError, QueryError, SpecError
from engine.reads import cache as cache_module
from engine.reads.cache import get_cache, reset_caches
from engine.reads.duck import query, run_query
from tests.mixed_data import TYPES, expected, make_source, write_csv

Sql = Callable[..., list[tuple[Any, ...]]]

@pytest.fixture(autouse=True)
def _memory_cache(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts with an empty in-process cache (unless it sets BICONIC_REDIS_URL itself)."""
    monkeypatch.delenv("BICONIC_REDIS_URL", raising=False)
    reset_caches()
    yield
    reset_caches()


def _load(path: Path, table: str, dsn: str, **kwargs: Any) -> engine.LoadReport:
    return engine.load(path, into=table, partition_by="created_at:month", dsn=dsn, **kwargs)


# --- answers ------------------------------------------------------------------------------------------------
def test_query_equals_the_source(tmp_path: Path, pg_dsn: str, table: str) -> None:
    source = make_source(5_000, seed=21)
    _load(write_csv(source, tmp_path / "o.csv"), table, pg_dsn)
    want = expected(source)
    rows = query(f"SELECT * FROM {table} ORDER BY id", dsn=pg_dsn)
    assert dict(rows.schema) == {"connection_id": pl.Int64, **{c: t for c, t in TYPES.items() if c != "connection_id"}}
    assert rows.select(list(TYPES)).equals(want)
    totals = query(f"SELECT count(*) AS n, sum(qty)::BIGINT AS qty, sum(price) AS price, sum(amount) AS amount, "
                   f"count(note) AS notes, sum(active::INT)::BIGINT AS active FROM {table}", dsn=pg_dsn)
    assert totals["n"][0] == source.height
    assert totals["qty"][0] == want["qty"].sum()
    assert totals["price"][0] == pytest.approx(want["price"].sum(), rel=1e-9)
    assert totals["amount"][0] == pytest.approx(want["amount"].sum(), rel=1e-12)
    assert totals["notes"][0] == want["note"].count()
    assert totals["active"][0] == want["active"].sum()
    empty = query(f"SELECT id, note, created_at FROM {table} WHERE id < 0", dsn=pg_dsn)
    assert (empty.height, dict(empty.schema)) == (0, {"id": pl.Int64, "note": pl.String,
                                                      "created_at": pl.Datetime("us")})
    by_conn = query(f"SELECT connection_id, count(*) AS n FROM {table} GROUP BY 1 ORDER BY 1", dsn=pg_dsn)
    assert by_conn.equals(want.group_by("connection_id").agg(pl.len().cast(pl.Int64).alias("n")).sort("connection_id"))
    # the raw archive holds the same rows, with the period each file sits in
    raw = query(f"SELECT * FROM archive.{table} ORDER BY id", dsn=pg_dsn)
    assert raw.select(list(TYPES)).equals(want)
    assert raw["period"].equals(raw["created_at"].dt.truncate("1mo").dt.date().alias("period"))


def test_schema_qualified_and_public_tables_of_one_name(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    """``orders`` and ``sales.orders`` are two datasets: each has its own view and its own raw archive view."""
    schema = f"s_{uuid.uuid4().hex[:8]}"
    sql(f'CREATE SCHEMA "{schema}"')
    public, other = make_source(300, seed=1), make_source(700, seed=2, first_id=1_000)
    _load(write_csv(public, tmp_path / "a.csv"), table, pg_dsn)
    _load(write_csv(other, tmp_path / "b.csv"), f"{schema}.{table}", pg_dsn)
    got = query(f"SELECT (SELECT count(*) FROM {table}) AS a, (SELECT count(*) FROM {schema}.{table}) AS b, "
                f"(SELECT count(*) FROM archive.{table}) AS c, (SELECT count(*) FROM archive.{schema}.{table}) AS d, "
                f"(SELECT min(id) FROM archive.{schema}.{table}) AS e", dsn=pg_dsn)
    assert got.row(0) == (300, 700, 300, 700, 1_000)


def test_archive_under_a_key_value_folder_adds_no_columns(tmp_path: Path, pg_dsn: str, table: str) -> None:
    """DuckDB reads every ``key=value`` folder of a path as a hive column; the archive's own are the only ones."""
    archive = str(tmp_path / "env=prod" / "archive")
    source = make_source(400, seed=3)
    _load(write_csv(source, tmp_path / "o.csv"), table, pg_dsn, archive=archive)
    raw = query(f"SELECT * FROM archive.{table} ORDER BY id", dsn=pg_dsn, archive=archive)
    assert raw.columns == [*query(f"SELECT * FROM {table} LIMIT 0", dsn=pg_dsn).columns, "period"]
    assert raw.select(list(TYPES)).equals(expected(source))


def test_a_listed_file_that_is_gone_is_a_query_error(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    _load(write_csv(make_source(300), tmp_path / "o.csv"), table, pg_dsn)
    uri = str(sql("SELECT uri FROM biconic.archive_files WHERE dataset = $1 LIMIT 1", [table])[0][0])
    Path(uri).unlink()
    with pytest.raises(QueryError) as info:
        query(f"SELECT count(*) FROM archive.{table}", dsn=pg_dsn)
    assert Path(uri).name in str(info.value)


# --- errors -------------------------------------------------------------------------------------------------
def test_bad_sql_is_a_query_error_with_duckdbs_message(tmp_path: Path, pg_dsn: str, table: str) -> None:
    _load(write_csv(make_source(100), tmp_path / "o.csv"), table, pg_dsn)
    with pytest.raises(QueryError) as info:
        query("SELEC 1", dsn=pg_dsn)
    assert "syntax error" in str(info.value).lower() and "SELEC" in str(info.value)
    with pytest.raises(QueryError) as info:
        query(f"SELECT no_such_column FROM {table}", dsn=pg_dsn)
    assert "no_such_column" in str(info.value) and "Binder Error" in str(info.value)
    with pytest.raises(QueryError) as info:
        query("SELECT * FROM no_such_table_xyz", dsn=pg_dsn)
    assert "no_such_table_xyz" in str(info.value)
    assert isinstance(info.value, BiconicError) and info.value.exit_code == 2


@pytest.mark.parametrize("text", ["", "   \n\t"])
def test_empty_sql_is_a_spec_error(pg_dsn: str, text: str) -> None:
    with pytest.raises(SpecError) as info:
        query(text, dsn=pg_dsn)
    assert info.value.path == "sql"


# --- the cache ----------------------------------------------------------------------------------------------
def test_cache_hits_and_invalidation_by_version(tmp_path: Path, pg_dsn: str, table: str) -> None:
    other = f"{table}_other"
    first, more = make_source(1_000, seed=1), make_source(500, seed=2, first_id=100_000)
    _load(write_csv(first, tmp_path / "a.csv"), table, pg_dsn)
    _load(write_csv(make_source(200, seed=3), tmp_path / "c.csv"), other, pg_dsn)
    q = f"SELECT count(*) AS n, max(id) AS hi FROM {table}"
    q_other = f"SELECT count(*) AS n FROM {other}"
    a = run_query(q, dsn=pg_dsn)
    assert (a.cached, a.frame.row(0), a.datasets) == (False, (1_000, 1_000), [table])
    b = run_query(q, dsn=pg_dsn)
    assert b.cached and b.frame.equals(a.frame)
    assert run_query(q_other, dsn=pg_dsn).cached is False
    assert run_query(q_other, dsn=pg_dsn).cached is True
    hits = get_cache().stats.hits
    # cache=False neither reads nor is answered by the cache
    c = run_query(q, dsn=pg_dsn, cache=False)
    assert c.cached is False and c.frame.equals(a.frame) and get_cache().stats.hits == hits
    # a load into the dataset bumps its version: the next query runs again and sees the new rows
    _load(write_csv(more, tmp_path / "b.csv"), table, pg_dsn)
    d = run_query(q, dsn=pg_dsn)
    assert (d.cached, d.frame.row(0)) == (False, (1_500, 100_499))
    assert run_query(q, dsn=pg_dsn).cached is True
    # ...and leaves a query naming only another dataset cached
    e = run_query(q_other, dsn=pg_dsn)
    assert (e.cached, e.frame.item()) == (True, 200)
    # a re-run that loads nothing changes nothing
    _load(tmp_path / "b.csv", table, pg_dsn)
    assert run_query(q, dsn=pg_dsn).cached is True


def test_quoted_names_are_seen_by_the_cache(tmp_path: Path, pg_dsn: str) -> None:
    """A name only written quoted (spaces, a dash: quotes themselves are refused); its loads must still
    invalidate cached results."""
    name = f"odd {uuid.uuid4().hex[:6]}-name año"
    q = f'SELECT count(*) FROM "{name}"'
    _load(write_csv(make_source(100, seed=1), tmp_path / "a.csv"), name, pg_dsn)
    first = run_query(q, dsn=pg_dsn)
    assert (first.cached, first.frame.item(), first.datasets) == (False, 100, [name])
    _load(write_csv(make_source(50, seed=2, first_id=1_000), tmp_path / "b.csv"), name, pg_dsn)
    second = run_query(q, dsn=pg_dsn)
    assert (second.cached, second.frame.item()) == (False, 150)


def test_the_cache_never_answers_for_another_database(tmp_path: Path, pg_dsn: str, server_dsn: str,
                                                      table: str) -> None:
    """Two databases with a dataset of the same name at the same version (staging and prod on one Redis)."""
    import adbc_driver_postgresql.dbapi as pgdbapi

    name = f"biconic_test_{uuid.uuid4().hex[:10]}"
    with pgdbapi.connect(server_dsn, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    base, _, params = server_dsn.partition("?")
    second = f"{base.rpartition('/')[0]}/{name}" + (f"?{params}" if params else "")
    try:
        _load(write_csv(make_source(100, seed=1), tmp_path / "a.csv"), table, pg_dsn)
        _load(write_csv(make_source(70, seed=2), tmp_path / "b.csv"), table, second)
        q = f"SELECT count(*) FROM {table}"
        assert run_query(q, dsn=pg_dsn).frame.item() == 100
        other = run_query(q, dsn=second)
        assert (other.cached, other.frame.item()) == (False, 70)
    finally:
        with pgdbapi.connect(server_dsn, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- Redis --------------------------------------------------------------------------------------------------
class _Redis:
    """Our own redis-server on a free port (never the shared one on 6379), stopped and started at will."""

    def __init__(self, folder: Path) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            pytest.fail("redis-server is not on PATH")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.folder = folder
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no", "--dir", str(self.folder)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        pytest.fail(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[_Redis]:
    server = _Redis(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.mark.redis
def test_redis_cache_survives_an_outage(tmp_path: Path, pg_dsn: str, table: str, redis_server: _Redis,
                                        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                                        manual_clock: Any) -> None:
    import redis

    monkeypatch.setenv("BICONIC_REDIS_URL", redis_server.url)
    reset_caches()
    assert get_cache().backend == "redis"
    _load(write_csv(make_source(800, seed=1), tmp_path / "a.csv"), table, pg_dsn)
    q = f"SELECT connection_id, count(*) AS n, sum(qty)::BIGINT AS s FROM {table} GROUP BY 1 ORDER BY 1"

    miss = run_query(q, dsn=pg_dsn)
    assert miss.cached is False and miss.frame["n"].sum() == 800
    client = redis.Redis.from_url(redis_server.url)
    assert len(list(client.scan_iter(match="biconic:q:*"))) == 1  # the result went to Redis
    client.close()
    hit = run_query(q, dsn=pg_dsn)
    assert hit.cached is True and hit.frame.equals(miss.frame)

    redis_server.stop()  # connection refused from now on
    with caplog.at_level(logging.WARNING, logger="biconic.cache"):
        down = run_query(q, dsn=pg_dsn)
        assert down.cached is False and down.frame.equals(miss.frame)
        manual_clock.advance(cache_module.RETRY_EVERY)  # the next call probes, fails again, and stays quiet
        assert run_query(q, dsn=pg_dsn).frame.equals(miss.frame)
        # a load while Redis is down is seen by the next query
        _load(write_csv(make_source(200, seed=2, first_id=10_000), tmp_path / "b.csv"), table, pg_dsn)
        after = run_query(q, dsn=pg_dsn)
        assert after.cached is False and after.frame["n"].sum() == 1_000
    warnings = [r for r in caplog.records if r.name == "biconic.cache" and r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert str(redis_server.port) in warnings[0].getMessage()
    assert get_cache().stats.errors > 0

    redis_server.start()  # same port, empty
    manual_clock.advance(cache_module.RETRY_EVERY)
    again = run_query(q, dsn=pg_dsn)
    assert again.cached is False and again.frame.equals(after.frame)
    back = run_query(q, dsn=pg_dsn)
    assert back.cached is True and back.frame.equals(after.frame)


# --- latency ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_latency_cold_and_cached(tmp_path: Path, pg_dsn: str, table: str) -> None:
    """Printed, not asserted (``pytest -s`` shows it): a 200k-row dataset, first run vs. cached."""
    n = 200_000
    start = dt.datetime(2024, 1, 1)
    source = pl.DataFrame({
        "id": pl.int_range(0, n, eager=True),
        "connection_id": pl.int_range(0, n, eager=True) % 3 + 1,
        "created_at": pl.datetime_range(start, start + dt.timedelta(seconds=n * 40 - 40), "40s", eager=True),
        "amount": (pl.int_range(0, n, eager=True) * 37 % 10_007).cast(pl.Float64) / 100,
    })
    path = tmp_path / "big.parquet"
    source.write_parquet(path)
    _load(path, table, pg_dsn)
    q = f"SELECT connection_id, date_trunc('month', created_at) AS m, count(*) AS n, sum(amount) AS s " \
        f"FROM {table} GROUP BY ALL ORDER BY ALL"
    raw_q = q.replace(f"FROM {table}", f"FROM archive.{table}")
    cold = run_query(q, dsn=pg_dsn)
    cached = run_query(q, dsn=pg_dsn)
    uncached = run_query(q, dsn=pg_dsn, cache=False)
    archive_cold = run_query(raw_q, dsn=pg_dsn)
    archive_cached = run_query(raw_q, dsn=pg_dsn)
    assert (cold.cached, cached.cached, uncached.cached) == (False, True, False)
    assert cold.frame["n"].sum() == n and archive_cold.frame.equals(cold.frame)
    print(f"\nquery latency over {n:,} rows: hot view first run {cold.seconds * 1000:.1f} ms, "
          f"cache=False {uncached.seconds * 1000:.1f} ms, cached {cached.seconds * 1000:.1f} ms; "
          f"archive view first run {archive_cold.seconds * 1000:.1f} ms, cached {archive_cached.seconds * 1000:.1f} ms")


def test_uuid_and_text_connection_ids_compare_in_queries(tmp_path: Path, pg_dsn: str, table: str) -> None:
    """Issue 11: a dataset keyed by UUIDs is queried with the UUID's text, in PostgreSQL and in the archive."""
    a, b = "3f2504e0-4f89-11d3-9a0c-0305e82c3301", "9b2e6c1a-0d4f-4a8e-b1c2-7f3e5d6a8b90"
    pl.DataFrame({"connection_id": [a, b, b], "day": [dt.date(2024, 1, d) for d in (1, 2, 3)], "v": [1, 2, 3]}
                 ).write_parquet(tmp_path / "u.parquet")
    engine.load(tmp_path / "u.parquet", into=table, dsn=pg_dsn)
    hot = run_query(f"SELECT sum(v) AS s FROM {table} WHERE connection_id = '{b}'", dsn=pg_dsn, cache=False)
    assert hot.frame.item() == 5
    raw = run_query(f"SELECT connection_id::text AS c, count(*) AS n FROM archive.{table} GROUP BY 1 ORDER BY 1",
                    dsn=pg_dsn, cache=False)
    assert raw.frame.rows() == [(a, 1), (b, 2)]


# --- an S3 archive, read with nothing but the manifest and s3fs ---------------------------------------------------
def test_an_s3_archived_dataset_is_queried_without_the_archive_url_or_httpfs(
        tmp_path: Path, pg_dsn: str, table: str, sql: Sql, s3_archive: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows only in an S3 archive come back with BICONIC_ARCHIVE_URL unset, and DuckDB can neither install nor
    autoload an extension (no ``httpfs``: no network beyond the loopback S3)."""
    import duckdb

    from engine.archive.tiering import tier

    real_connect = duckdb.connect

    def offline(*args: Any, config: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        config = {**(config or {}), "autoinstall_known_extensions": False, "autoload_known_extensions": False,
                  "extension_directory": str(tmp_path / "no-extensions")}
        return real_connect(*args, config=config, **kwargs)

    monkeypatch.setattr(duckdb, "connect", offline)
    source = make_source(2_000, seed=21)
    _load(write_csv(source, tmp_path / "orders.csv"), table, pg_dsn, archive=s3_archive)
    tiered = tier(dsn=pg_dsn, archive=s3_archive, now=dt.datetime(2030, 1, 1, tzinfo=dt.UTC), datasets=[table],
                  uploads=False)
    assert sum(p.rows for p in tiered.partitions) == source.height
    assert sql(f'SELECT count(*) FROM "{table}"') == [(0,)]  # every row is only in the archive now
    monkeypatch.delenv("BICONIC_ARCHIVE_URL", raising=False)
    got = run_query(f"SELECT * FROM {table} ORDER BY id", dsn=pg_dsn, cache=False)
    assert got.frame.select(list(TYPES)).equals(expected(source))
    raw = query(f"SELECT count(*) AS n FROM archive.{table}", dsn=pg_dsn, cache=False)
    assert raw["n"].to_list() == [source.height]
