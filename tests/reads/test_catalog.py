"""Latest rows per connection and dataset metadata: cached under the dataset's version, so a load invalidates;
and the CLI commands over them (query, tier, restore, info, latest)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

import engine
from engine.cli import cli
from engine.errors import SpecError
from engine.reads.cache import get_cache, reset_caches
from engine.reads.catalog import HOT_ROWS, hot_rows, metadata, refresh_hot_rows


@pytest.fixture(autouse=True)
def _memory_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BICONIC_REDIS_URL", raising=False)
    reset_caches()


def _orders(path: Path, n: int, *, start: dt.datetime = dt.datetime(2026, 5, 1), first_id: int = 0) -> Path:
    pl.DataFrame({
        "id": range(first_id, first_id + n),
        "connection_id": [1 + i % 2 for i in range(n)],
        "created_at": [start + dt.timedelta(hours=i) for i in range(n)],
        "amount": [float(i) for i in range(n)],
    }).write_csv(path)
    return path


def test_hot_rows_are_the_newest_per_connection_and_a_load_invalidates(tmp_path: Path, pg_dsn: str,
                                                                        table: str) -> None:
    engine.load(_orders(tmp_path / "a.csv", 2500), into=table, partition_by="created_at:month", dsn=pg_dsn)
    rows = hot_rows(table, 1, dsn=pg_dsn)
    assert rows.height == HOT_ROWS
    assert set(rows["connection_id"].to_list()) == {1}
    assert rows["created_at"].to_list() == sorted(rows["created_at"].to_list(), reverse=True)
    assert rows["id"][0] == 2498  # the newest even id
    before = get_cache().stats.hits
    assert hot_rows(table, 1, dsn=pg_dsn).equals(rows)
    assert get_cache().stats.hits == before + 1

    engine.load(_orders(tmp_path / "b.csv", 10, start=dt.datetime(2026, 9, 1), first_id=10_000), into=table,
                dsn=pg_dsn)
    fresh = hot_rows(table, 1, dsn=pg_dsn)
    assert fresh["id"][0] == 10_008  # the new load's newest row, not the cached answer
    assert hot_rows(table, 3, dsn=pg_dsn).height == 0


def test_metadata_counts_partitions_and_last_load(tmp_path: Path, pg_dsn: str, table: str) -> None:
    report = engine.load(_orders(tmp_path / "a.csv", 1000), into=table, partition_by="created_at:month", dsn=pg_dsn)
    info = metadata(table, dsn=pg_dsn)
    assert info["rows"] == 1000
    assert info["rows_by_connection"] == {"1": 500, "2": 500}
    assert info["columns"]["amount"] == "double precision"
    assert info["last_load"]["load_id"] == report.load_id
    assert [p["name"] for p in info["partitions"]] == sorted(report.partitions)
    one = metadata(table, 2, dsn=pg_dsn)
    assert one["rows"] == 500 and one["rows_by_connection"] == {"2": 500}
    assert metadata(table, dsn=pg_dsn) == info  # served from the cache
    engine.load(_orders(tmp_path / "b.csv", 5, first_id=5000), into=table, dsn=pg_dsn)
    assert metadata(table, dsn=pg_dsn)["rows"] == 1005
    with pytest.raises(SpecError, match="no dataset"):
        metadata("no_such_dataset", dsn=pg_dsn)


@pytest.mark.redis
def test_a_load_refreshes_the_latest_rows_in_redis(tmp_path: Path, pg_dsn: str, table: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError:
        if __import__("os").environ.get("CI"):
            pytest.fail("Redis is not running on 127.0.0.1:6379")
        pytest.skip("no Redis on 127.0.0.1:6379")
    monkeypatch.setenv("BICONIC_REDIS_URL", "redis://127.0.0.1:6379/0")
    reset_caches()
    cache = get_cache()
    assert cache.backend == "redis"
    engine.load(_orders(tmp_path / "a.csv", 300), into=table, partition_by="created_at:month", dsn=pg_dsn)
    misses = cache.stats.misses
    rows = hot_rows(table, 2, dsn=pg_dsn)  # put there by the load itself
    assert cache.stats.misses == misses and rows.height == 150
    assert refresh_hot_rows(table, [1, 2], dsn=pg_dsn) == 2


def test_cli_query_tier_restore_info_latest(tmp_path: Path, pg_dsn: str, table: str) -> None:
    # six months ending well before "now": the first ones are older than the archive age
    engine.load(_orders(tmp_path / "a.csv", 4000, start=dt.datetime(2020, 1, 1)), into=table,
                partition_by="created_at:month", dsn=pg_dsn)
    run = CliRunner().invoke
    total = f"SELECT count(*) AS n, sum(amount) AS s FROM {table}"
    out = run(cli, ["query", total, "--json", "--dsn", pg_dsn])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == [{"n": 4000, "s": float(sum(range(4000)))}]

    dry = run(cli, ["tier", "--dry-run", "--json", "--dataset", table, "--no-uploads", "--dsn", pg_dsn])
    assert dry.exit_code == 0, dry.output
    assert len(json.loads(dry.output)["partitions"]) == 6  # every month is years old
    done = run(cli, ["tier", "--json", "--dataset", table, "--no-uploads", "--dsn", pg_dsn])
    assert done.exit_code == 0, done.output
    assert sum(p["rows"] for p in json.loads(done.output)["partitions"]) == 4000
    assert json.loads(run(cli, ["query", total, "--json", "--no-cache", "--dsn", pg_dsn]).output)[0]["n"] == 4000
    csv = run(cli, ["query", f"SELECT id FROM {table} ORDER BY id LIMIT 2", "--csv", "--dsn", pg_dsn])
    assert csv.output.splitlines() == ["id", "0", "1"]

    back = run(cli, ["restore", table, "--from", "2020-02-10", "--to", "2020-02-20", "--json", "--dsn", pg_dsn])
    assert back.exit_code == 0, back.output
    assert json.loads(back.output)["periods"] == ["2020-02-01"]
    info = json.loads(run(cli, ["info", table, "--dsn", pg_dsn]).output)
    assert [p["name"] for p in info["partitions"]] == [f"{table}_p2020_02"]
    assert len(info["cold_periods"]) == 5
    assert json.loads(run(cli, ["query", total, "--json", "--dsn", pg_dsn]).output)[0]["n"] == 4000

    latest = run(cli, ["latest", table, "--connection", "1", "--limit", "3", "--json", "--dsn", pg_dsn])
    assert latest.exit_code == 0, latest.output
    assert len(json.loads(latest.output)) == 3


def test_cli_query_errors_are_one_line(pg_dsn: str) -> None:
    bad = subprocess.run([sys.executable, "-m", "engine", "query", "SELEC nonsense", "--dsn", pg_dsn],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr
    restore = subprocess.run([sys.executable, "-m", "engine", "restore", "t", "--from", "2020-02-01", "--to",
                              "2020-01-01", "--dsn", pg_dsn], capture_output=True, text=True)
    assert restore.returncode == 2 and "before" in restore.stderr


# --- connection ids that are UUIDs or text (issue 11) ----------------------------------------------------------
A = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
B = "9b2e6c1a-0d4f-4a8e-b1c2-7f3e5d6a8b90"


def test_latest_and_info_with_uuid_connections(tmp_path: Path, pg_dsn: str, table: str) -> None:
    engine.load(_orders(tmp_path / "a.csv", 10), into=table, connection_id=A, connection_override=True,
                partition_by="created_at:month", dsn=pg_dsn)
    engine.load(_orders(tmp_path / "b.csv", 4, first_id=100), into=table, connection_id=B.upper(),
                connection_override=True, partition_by="created_at:month", dsn=pg_dsn)
    rows = hot_rows(table, A, dsn=pg_dsn)
    assert rows.height == 10 and rows["connection_id"].unique().to_list() == [A]
    assert hot_rows(table, A, dsn=pg_dsn).equals(rows)  # the cached copy
    info = metadata(table, B, dsn=pg_dsn)
    assert (info["rows"], info["rows_by_connection"], info["columns"]["connection_id"]) == (4, {B: 4}, "uuid")
    assert info["last_load"]["rows_loaded"] == 4
    assert metadata(table, dsn=pg_dsn)["rows_by_connection"] == {A: 10, B: 4}
    with pytest.raises(SpecError, match=f"{table}.connection_id is uuid; connection id 7 is an integer"):
        hot_rows(table, 7, dsn=pg_dsn)
    run = CliRunner().invoke
    latest = run(cli, ["latest", table, "--connection", B.upper(), "--json", "--dsn", pg_dsn])
    assert latest.exit_code == 0, latest.output
    assert {r["connection_id"] for r in json.loads(latest.output)} == {B}
    info_cli = run(cli, ["info", table, "--connection", A, "--dsn", pg_dsn])
    assert info_cli.exit_code == 0, info_cli.output
    assert json.loads(info_cli.output)["rows"] == 10
    bad = run(cli, ["latest", table, "--connection", "not an id", "--dsn", pg_dsn])
    assert bad.exit_code == 2 and bad.stderr.strip().startswith("error: --connection: expected a connection id")


def test_reads_take_an_id_in_any_spelling(tmp_path: Path, pg_dsn: str, table: str) -> None:
    """A UUID in capitals or as a uuid.UUID (as engine.load takes it) is the same connection in the reads: the
    same rows, the same last load and cold periods, the id shown canonical."""
    import uuid

    engine.load(_orders(tmp_path / "a.csv", 6), into=table, connection_id=A, connection_override=True,
                partition_by="created_at:month", dsn=pg_dsn)
    want = hot_rows(table, A, dsn=pg_dsn, cache=False)
    for spelled in (A.upper(), uuid.UUID(A)):
        assert hot_rows(table, spelled, dsn=pg_dsn).equals(want)
        info = metadata(table, spelled, dsn=pg_dsn)
        assert (info["connection_id"], info["rows"]) == (A, 6)
        assert info["last_load"] is not None and info["last_load"]["rows_loaded"] == 6
    with pytest.raises(SpecError, match="connection_id: expected a connection id"):
        hot_rows(table, "not an id", dsn=pg_dsn)


def test_latest_with_text_connections(tmp_path: Path, pg_dsn: str, table: str) -> None:
    engine.load(_orders(tmp_path / "a.csv", 5), into=table, connection_id="shop-eu", connection_override=True,
                partition_by="created_at:month", dsn=pg_dsn)
    assert hot_rows(table, "shop-eu", dsn=pg_dsn).height == 5
    assert hot_rows(table, "other", dsn=pg_dsn).height == 0


def test_two_warehouses_sharing_a_cache_never_answer_each_others_reads(tmp_path: Path, pg_dsn: str,
                                                                        server_dsn: str, table: str) -> None:
    """Staging and prod on one Redis both hold the dataset at version 1: the keys carry the database."""
    import uuid

    import adbc_driver_postgresql.dbapi as pgdbapi

    name = f"biconic_test_other_{uuid.uuid4().hex[:8]}"
    with pgdbapi.connect(server_dsn, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    other = pg_dsn.rpartition("/")[0] + f"/{name}"
    try:
        engine.load(_orders(tmp_path / "a.csv", 10), into=table, dsn=pg_dsn)
        engine.load(_orders(tmp_path / "b.csv", 10, first_id=500), into=table, dsn=other)
        assert hot_rows(table, 1, dsn=pg_dsn)["id"].max() == 8
        assert hot_rows(table, 1, dsn=other)["id"].max() == 508  # not the first warehouse's cached rows
        assert metadata(table, dsn=pg_dsn)["last_load"] != metadata(table, dsn=other)["last_load"]
    finally:
        with pgdbapi.connect(server_dsn, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
