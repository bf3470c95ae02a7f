"""The maintenance beat runs (engine.jobs.sweeps): each sweep removes what dead loads left and keeps what a live
load owns, one beat per database, and one failing job does not stop the others."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import engine
from engine.errors import BeatRunningError, SinkError
from engine.jobs import _leftovers, sweeps
from engine.names import quote_ident
from engine.postgres import ddl, stage_area
from engine.postgres.connection import connect, execute
from engine.reads.catalog import database_tag
from tests.support import Sql, orders_frame

NOW = dt.datetime.now(dt.UTC)
OLD = (NOW - dt.timedelta(days=2)).timestamp()


def _staged(sql: Sql) -> set[str]:
    return {str(r[0]) for r in sql("SELECT tablename FROM pg_tables WHERE schemaname = 'biconic_stage'")}


def _stage(sql: Sql, load_id: str) -> str:
    """A staged table of ``load_id`` holding rows, as a killed load's helper connection leaves it."""
    name = stage_area.staged_name(load_id, "orders_p2026_02")
    sql("CREATE SCHEMA IF NOT EXISTS biconic_stage")
    sql(f'CREATE TABLE biconic_stage."{name}" AS SELECT g AS id FROM generate_series(1, 100) g')
    return name


def _unattached(sql: Sql, table: str, child: str, *, check: bool = True) -> None:
    """A child of ``table`` created standalone (as releases before biconic_stage staged it) and never attached."""
    for stmt in ddl.standalone_child_sql(quote_ident(table), "public", child, 0,
                                         check=(ddl.bounds_constraint(child), "created_at >= '2026-02-01'")
                                         if check else None):
        sql(stmt)


def _exists(sql: Sql, name: str) -> bool:
    return bool(sql("SELECT to_regclass($1) IS NOT NULL", [name])[0][0])


def test_sweep_staged_drops_every_dead_loads_tables_and_keeps_a_live_ones(pg_dsn: str, sql: Sql, table: str) -> None:
    engine.load(orders_frame(3), into=table, partition_by="created_at:month", dsn=pg_dsn, archive="off")
    dead_child, live_child, foreign = f"{table}_p2026_02", f"{table}_p2026_03", f"{table}_p2026_04"
    for child in (dead_child, live_child):
        _unattached(sql, table, child)
    _unattached(sql, table, foreign, check=False)  # no bounds CHECK: not a staged child, someone else's table
    live_id = uuid.uuid4().hex
    dead, live = _stage(sql, uuid.uuid4().hex), _stage(sql, live_id)
    holder = connect(pg_dsn)  # the live load: its id's session lock, and the lock of the child it is creating
    try:
        stage_area.hold_load(holder, pg_dsn, live_id)
        execute(holder, "SELECT pg_advisory_xact_lock(hashtext($1))", [f"child:public.{live_child}"], pg_dsn)
        dry = sweeps.sweep_staged(pg_dsn, dry_run=True)
        assert f"public.{dead_child}" in dry.done and dry.dry_run and "would remove" in dry.summary()
        assert dead in _staged(sql) and _exists(sql, f'"{dead_child}"')  # a dry run changes nothing
        outcome = sweeps.sweep_staged(pg_dsn)
        assert f"biconic_stage.{dead}" in outcome.done and f"public.{dead_child}" in outcome.done
        assert f"public.{live_child}" in outcome.left and f"biconic_stage.{live}" not in outcome.done
        assert live in _staged(sql) and dead not in _staged(sql)
        assert _exists(sql, f'"{live_child}"') and not _exists(sql, f'"{dead_child}"')
        again = sweeps.sweep_staged(pg_dsn)  # idempotent
        assert f"public.{dead_child}" not in again.done and f"biconic_stage.{dead}" not in again.done
    finally:
        holder.close()  # the load ends: its locks go with its connection
    outcome = sweeps.sweep_staged(pg_dsn)
    assert f"biconic_stage.{live}" in outcome.done and f"public.{live_child}" in outcome.done
    assert _exists(sql, f'"{foreign}"') and sql(f'SELECT count(*) FROM "{table}"') == [(3,)]


def _archive_with_leftovers(tmp_path: Path, pg_dsn: str, table: str) -> tuple[Path, dict[str, Path]]:
    """An archive holding a committed load's listed files and what killed loads leave beside them."""
    archive = tmp_path / "archive"
    engine.load(orders_frame(6, step_days=40), into=table, partition_by="created_at:month", dsn=pg_dsn,
                archive=str(archive))
    listed = sorted(archive.rglob("*.parquet"))
    folder = listed[0].parent
    files = {"listed": listed[0], "unlisted": folder / f"{uuid.uuid4().hex}.parquet",
             "young": folder / f"{uuid.uuid4().hex}-1.parquet", "temporary": folder / ".x.parquet.tmp-0badf00d",
             "upload": archive / "_uploads" / "connection_id=1" / "period=2024-01-01" / "a.parquet",
             "foreign": folder / "notes.txt"}
    for name, path in files.items():
        if name != "listed":
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(listed[0], path)
        if name != "young":
            os.utime(path, (OLD, OLD))
    for path in listed:
        os.utime(path, (OLD, OLD))
    return archive, files


def test_sweep_unlisted_archive_removes_old_unlisted_files_only(tmp_path: Path, pg_dsn: str, table: str) -> None:
    archive, files = _archive_with_leftovers(tmp_path, pg_dsn, table)
    before = sorted(archive.rglob("*"))
    dry = sweeps.sweep_unlisted_archive(pg_dsn, str(archive), now=NOW, grace=3600, dry_run=True)
    assert sorted(dry.done) == sorted([str(files["unlisted"]), str(files["temporary"])])
    assert sorted(archive.rglob("*")) == before
    outcome = sweeps.sweep_unlisted_archive(pg_dsn, str(archive), now=NOW, grace=3600)
    assert sorted(outcome.done) == sorted(dry.done) and outcome.left == [str(files["young"])]
    assert not files["unlisted"].exists() and not files["temporary"].exists()
    for kept in ("listed", "young", "upload", "foreign"):  # a running load's file is young; the rest not ours
        assert files[kept].exists(), kept
    assert engine.query(f"SELECT count(*) AS n FROM {table}", dsn=pg_dsn, archive=str(archive))["n"][0] == 6
    assert sweeps.sweep_unlisted_archive(pg_dsn, str(archive), now=NOW, grace=3600).done == []  # idempotent


@pytest.mark.s3
def test_sweep_unlisted_archive_on_s3(tmp_path: Path, pg_dsn: str, table: str, s3_archive: str) -> None:
    import s3fs

    engine.load(orders_frame(3), into=table, partition_by="created_at:month", dsn=pg_dsn, archive=s3_archive)
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": os.environ["AWS_ENDPOINT_URL"]}, skip_instance_cache=True)
    listed = sorted(p for p in fs.find(s3_archive.removeprefix("s3://")) if p.endswith(".parquet"))
    folder = listed[0].rpartition("/")[0]
    leftovers = [f"{folder}/{uuid.uuid4().hex}.parquet", f"{folder}/.y.parquet.tmp-0badf00d"]
    for path in leftovers:
        fs.copy(listed[0], path)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)  # S3 sets its own times: move the clock instead
    assert sweeps.sweep_unlisted_archive(pg_dsn, s3_archive, now=later - dt.timedelta(days=2), grace=3600).kept == 2
    outcome = sweeps.sweep_unlisted_archive(pg_dsn, s3_archive, now=later, grace=3600)
    assert sorted(outcome.done) == sorted(f"s3://{p}" for p in leftovers) and outcome.errors == []
    fs.invalidate_cache()
    assert sorted(p for p in fs.find(s3_archive.removeprefix("s3://")) if "parquet" in p) == listed


def test_a_file_placed_inside_an_open_transaction_is_kept_past_the_grace(tmp_path: Path, pg_dsn: str,
                                                                        table: str) -> None:
    """A live load lists its files in a transaction begun before it placed them: however old they get, they
    stay while that transaction is open."""
    archive, files = _archive_with_leftovers(tmp_path, pg_dsn, table)
    load = connect(pg_dsn)  # the live load's data transaction, begun before its file was placed
    try:
        execute(load, "SELECT 1", None, pg_dsn)
        placed = files["unlisted"].parent / f"{uuid.uuid4().hex}.parquet"
        shutil.copy(files["listed"], placed)
        outcome = sweeps.sweep_unlisted_archive(pg_dsn, str(archive), now=dt.datetime.now(dt.UTC), grace=0)
        assert str(placed) in outcome.left and placed.exists()
        assert str(files["unlisted"]) in outcome.done  # placed long before: not the open transaction's
    finally:
        load.close()
    outcome = sweeps.sweep_unlisted_archive(pg_dsn, str(archive), now=dt.datetime.now(dt.UTC), grace=0)
    assert str(placed) in outcome.done and not placed.exists() and files["listed"].exists()


def test_sweep_unlisted_archive_refuses_an_archive_the_manifest_does_not_know(tmp_path: Path, pg_dsn: str,
                                                                              table: str) -> None:
    archive, files = _archive_with_leftovers(tmp_path, pg_dsn, table)
    moved = tmp_path / "moved"
    shutil.copytree(archive, moved, copy_function=shutil.copy2)
    outcome = sweeps.sweep_unlisted_archive(pg_dsn, str(moved), now=NOW, grace=3600)
    assert not outcome.ok and "is this the archive the loads wrote to" in outcome.summary()
    assert sorted(p.relative_to(moved) for p in moved.rglob("*")) == \
        sorted(p.relative_to(archive) for p in archive.rglob("*"))


def test_a_cache_key_is_stale_only_under_every_reading() -> None:
    versions = {"a": (3, True), "a:b": (1, True), "gone": (5, False)}
    assert _leftovers.stale_cache_key("hot:a:7:v2", versions) is True  # a load moved "a" past v2
    assert _leftovers.stale_cache_key("hot:a:7:v3", versions) is False
    assert _leftovers.stale_cache_key("hot:a:b:1:v2", versions) is False  # "a:b" at v2 may be live
    assert _leftovers.stale_cache_key("meta:gone:*:v5", versions) is True  # its table was dropped
    assert _leftovers.stale_cache_key("meta:nobody:*:v1", versions) is True  # no such dataset
    assert _leftovers.stale_cache_key("q:0123abcd", versions) is None


@pytest.fixture
def redis_url() -> Iterator[str]:
    import redis

    url = os.environ.get("BICONIC_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5).ping()
    except redis.RedisError:
        if os.environ.get("CI"):
            pytest.fail(f"Redis is not running at {url}")
        pytest.skip(f"Redis is not running at {url}")
    yield url


def test_sweep_cache_deletes_entries_no_one_can_read(pg_dsn: str, sql: Sql, table: str, redis_url: str) -> None:
    import redis

    engine.load(orders_frame(3), into=table, partition_by="created_at:month", dsn=pg_dsn, archive="off")
    engine.load(orders_frame(4), into=table, partition_by="created_at:month", dsn=pg_dsn, archive="off",
                mode="replace")
    version = int(sql("SELECT version FROM biconic.datasets WHERE dataset = $1", [table])[0][0])
    gone = f"gone_{uuid.uuid4().hex[:8]}"  # a dataset whose table was dropped
    sql("INSERT INTO biconic.datasets (dataset, time_column, granularity) VALUES ($1, 'created_at', 'month')", [gone])
    prefix = f"biconic-test-{uuid.uuid4().hex[:8]}:"
    tag, other = database_tag(pg_dsn), database_tag(pg_dsn + "_other")
    stale = [f"hot:{tag}:{table}:1:v{version - 1}", f"meta:{tag}:{table}:*:v{version - 1}", f"hot:{tag}:{gone}:1:v0",
             f"hot:{tag}:nobody_{uuid.uuid4().hex[:8]}:1:v1"]
    live = [f"hot:{tag}:{table}:1:v{version}", f"meta:{tag}:{table}:*:v{version}", "q:0123abcd", "hot:unversioned",
            f"hot:{other}:nobody_{uuid.uuid4().hex[:8]}:1:v1"]  # another warehouse's dataset: not this sweep's
    client = redis.Redis.from_url(redis_url)
    try:
        for key in stale + live:
            client.set(prefix + key, b"x", ex=600)
        dry = sweeps.sweep_cache(pg_dsn, redis_url, prefix=prefix, dry_run=True)
        assert sorted(dry.done) == sorted(stale) and client.exists(*(prefix + k for k in stale)) == len(stale)
        outcome = sweeps.sweep_cache(pg_dsn, redis_url, prefix=prefix)
        assert sorted(outcome.done) == sorted(stale) and outcome.ok
        assert client.exists(*(prefix + k for k in stale)) == 0
        assert client.exists(*(prefix + k for k in live)) == len(live)
        assert sweeps.sweep_cache(pg_dsn, redis_url, prefix=prefix).done == []
    finally:
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.unlink(*keys)
        client.close()
        sql("DELETE FROM biconic.datasets WHERE dataset = $1", [gone])


def test_sweep_cache_without_redis_says_so(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BICONIC_REDIS_URL", raising=False)
    outcome = sweeps.sweep_cache(pg_dsn)
    assert outcome.ok and outcome.done == [] and "no Redis" in outcome.summary()


def test_tier_and_tier_uploads_call_what_biconic_tier_runs(tmp_path: Path, pg_dsn: str, table: str) -> None:
    archive = str(tmp_path / "archive")
    engine.load(orders_frame(3), into=table, partition_by="created_at:month", dsn=pg_dsn, archive=archive)
    outcome = sweeps.tier(pg_dsn, archive, now=NOW, datasets=[table])
    assert len(outcome.done) == 1 and outcome.done[0].startswith(f"{table}.") and "3 rows" in outcome.summary()
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    (uploads / "a.csv").write_text("id\n1\n")
    old = (NOW - dt.timedelta(days=40)).timestamp()
    os.utime(uploads / "a.csv", (old, old))
    moved = sweeps.tier_uploads(pg_dsn, archive, folder=uploads, now=NOW)
    assert moved.done == [f"compress {uploads / 'a.csv'}"] and (uploads / "a.csv.zst").exists()
    for job in (sweeps.tier, sweeps.tier_uploads, sweeps.sweep_unlisted_archive):  # no archive: nothing to do
        outcome = job(pg_dsn, "off")
        assert outcome.ok and outcome.removed == 0 and "archiving is off" in outcome.summary()


def test_run_maintenance_survives_a_failing_job(tmp_path: Path, pg_dsn: str, table: str,
                                                monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    archive, files = _archive_with_leftovers(tmp_path, pg_dsn, table)
    monkeypatch.delenv("BICONIC_REDIS_URL", raising=False)
    monkeypatch.setenv("BICONIC_UPLOADS_DIR", str(tmp_path / "uploads"))

    def broken(*args: Any, **kwargs: Any) -> sweeps.Outcome:
        raise SinkError("tier: PostgreSQL at postgresql://u:s3cretpw@db/x is unreachable")

    monkeypatch.setattr(sweeps, "tier", broken)
    monkeypatch.setattr(sweeps, "grace_seconds", lambda: 3600.0)
    with caplog.at_level("INFO", logger="biconic.maintenance"):
        report = sweeps.run_maintenance(pg_dsn, str(archive), now=NOW)
    assert [o.job for o in report.outcomes] == ["sweep_staged", "tier", "tier_uploads", "sweep_unlisted_archive",
                                                "sweep_cache"]
    assert [o.job for o in report.failed] == ["tier"]
    assert "SinkError" in report.failed[0].summary() and "s3cretpw" not in report.summary()
    assert not files["unlisted"].exists()  # the jobs after the failed one ran
    assert "tier: failed: SinkError" in caplog.text and "sweep_unlisted_archive: removed 2" in caplog.text


def test_a_job_already_running_elsewhere_is_skipped(tmp_path: Path, pg_dsn: str, table: str) -> None:
    """Two workers handed the same job (a slow run overlapping the next tick): the second one does nothing."""
    archive, files = _archive_with_leftovers(tmp_path, pg_dsn, table)
    other = connect(pg_dsn, autocommit=True)
    try:
        execute(other, "SELECT pg_advisory_lock(hashtext('biconic_jobs'), hashtext('job:sweep_unlisted_archive'))",
                None, pg_dsn)
        outcome = sweeps.sweep_unlisted_archive(pg_dsn, str(archive), now=NOW, grace=3600)
        assert outcome.ok and outcome.removed == 0 and "already running elsewhere" in outcome.summary()
        assert files["unlisted"].exists()
    finally:
        other.close()
    assert sweeps.sweep_unlisted_archive(pg_dsn, str(archive), now=NOW, grace=3600).removed == 2


def test_one_beat_per_database(pg_dsn: str, sql: Sql) -> None:
    with sweeps.one_beat(pg_dsn) as lock:
        lock.check()
        with pytest.raises(BeatRunningError) as second, sweeps.one_beat(pg_dsn):
            pytest.fail("a second beat ran")
        assert str(second.value).startswith("another biconic beat is running (biconic beat pid=")
        assert f"pid={os.getpid()}" in str(second.value) and "\n" not in str(second.value)
    with sweeps.one_beat(pg_dsn) as lock:  # the first one's connection closed: the lock went with it
        sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", [lock.holder])
        with pytest.raises(BeatRunningError, match="lost its lock"):
            lock.check()


def test_a_killed_beat_does_not_block_the_next(pg_dsn: str) -> None:
    code = ("import sys, time; from engine.jobs.sweeps import one_beat\n"
            "with one_beat(sys.argv[1]):\n    print('held', flush=True); time.sleep(600)")
    child = subprocess.Popen([sys.executable, "-c", code, pg_dsn], stdout=subprocess.PIPE, text=True,
                             cwd=Path(__file__).resolve().parents[2])
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        with pytest.raises(BeatRunningError, match=f"pid={child.pid} "), sweeps.one_beat(pg_dsn):
            pass
    finally:
        child.kill()
        child.wait()
    deadline = time.monotonic() + 10  # the server ends the dead client's backend as it sees the socket close
    while True:
        try:
            with sweeps.one_beat(pg_dsn):
                break
        except BeatRunningError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
