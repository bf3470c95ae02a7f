"""The job layer with an in-process Celery worker (threads) on the real Redis and PostgreSQL: submit, fan-out,
status, cancel, retry, fairness between connections. The real worker process (spawn pool, time limits, kill -9)
is tested in test_worker_process.py."""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from engine.errors import SpecError
from tests.support import Sql, orders_frame, row_count

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

@pytest.fixture
def jobs_env(pg_dsn: str, broker_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The real Redis (a spare db this session claimed, emptied) as broker and result store, the test database
    as warehouse. Not a fixed db: two test sessions on one machine would take each other's tasks."""
    monkeypatch.setenv("BICONIC_BROKER_URL", broker_url)
    monkeypatch.setenv("BICONIC_PG_DSN", pg_dsn)
    monkeypatch.setenv("BICONIC_ARCHIVE_URL", "off")
    monkeypatch.setenv("BICONIC_JOB_BACKOFF", "0.2")
    from engine.jobs.app import configure

    configure()
    yield pg_dsn


@pytest.fixture
def worker(jobs_env: str) -> Iterator[None]:
    """A Celery worker in this process: a pool of 8 threads (they mostly wait on PostgreSQL)."""
    from celery.contrib.testing.worker import start_worker

    from engine.jobs.app import app

    with start_worker(app, pool="threads", concurrency=8, perform_ping_check=False, loglevel="WARNING",
                      shutdown_timeout=30):
        yield


def _files(folder: Path, count: int, rows: int = 20, *, connection: int | None = None) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(count):
        frame = orders_frame(rows, start=dt.date(2024, 1 + i % 12, 1), step_days=0)
        if connection is not None:
            frame = frame.with_columns(pl.lit(connection).alias("connection_id"))
        path = folder / f"part_{i:03d}.csv"
        frame.with_columns(pl.col("order_id") + i * rows).write_csv(path)
        out.append(path)
    return out


def test_a_folder_fans_out_one_task_per_file_and_loads_every_row_once(
        tmp_path: Path, worker: None, jobs_env: str, sql: Sql, table: str) -> None:
    import engine

    _files(tmp_path / "in", 5)
    job = engine.submit(tmp_path / "in", into=table, partition_by="created_at")
    assert job.wait(timeout=120).state == "done", job.status()["error"]
    status = job.status()
    assert status["progress"]["partitions_total"] == 5 and status["progress"]["partitions_done"] == 5
    assert status["reports"][0]["rows_loaded"] == 100 and status["reports"][0]["rows_in"] == 100
    assert row_count(sql, table) == 100
    assert sql(f'SELECT count(DISTINCT order_id) FROM "{table}"')[0][0] == 100
    # submitted again: every partition is in the ledger, nothing is added
    again = engine.submit(tmp_path / "in", into=table, partition_by="created_at").wait(timeout=120)
    assert again.status()["reports"][0]["skipped_partitions"] == 5
    assert row_count(sql, table) == 100


def test_a_single_csv_with_split_mb_fans_out_by_byte_ranges(
        tmp_path: Path, worker: None, jobs_env: str, sql: Sql, table: str) -> None:
    """One big file is not one worker's job: its byte ranges are tasks of their own, and every row loads once."""
    import engine

    (path,) = _files(tmp_path / "in", 1, rows=400)
    split = path.stat().st_size / 5 / (1 << 20)  # five ranges, give or take a record
    job = engine.submit(path, into=table, partition_by="created_at", options={"split_mb": split})
    assert job.wait(timeout=120).state == "done", job.status()["error"]
    report = job.status()["reports"][0]
    assert len(report["tasks"]) >= 4 and all(t["part"] >= 0 for t in report["tasks"])
    assert report["rows_loaded"] == 400 and report["rows_in"] == 400
    assert row_count(sql, table) == 400
    assert sql(f'SELECT count(DISTINCT order_id) FROM "{table}"')[0][0] == 400
    again = engine.submit(path, into=table, partition_by="created_at", options={"split_mb": split}).wait(timeout=120)
    assert again.status()["reports"][0]["skipped_partitions"] == len(report["tasks"])
    assert row_count(sql, table) == 400


def test_replace_runs_as_one_task_so_it_stays_one_transaction(
        tmp_path: Path, worker: None, jobs_env: str, sql: Sql, table: str) -> None:
    import engine

    _files(tmp_path / "in", 3)
    job = engine.submit(tmp_path / "in", into=table, partition_by="created_at", mode="replace").wait(timeout=120)
    assert job.state == "done"
    parts = job.status()["reports"][0]["tasks"]
    assert [p["part"] for p in parts] == [-1]
    assert row_count(sql, table) == 60


def test_a_bad_file_fails_its_job_at_once_with_the_files_error_and_the_others_commit(
        tmp_path: Path, worker: None, jobs_env: str, sql: Sql, table: str) -> None:
    import engine

    _files(tmp_path / "in", 2)
    (tmp_path / "in" / "part_009.csv").write_text("order_id,created_at,amount\n1,not a date at all,x\n" * 3)
    job = engine.submit(tmp_path / "in", into=table, partition_by="created_at", max_rejected="off")
    job.wait(timeout=120)
    status = job.status()
    if status["state"] == "done":  # rows with a bad date are quarantined, not an error: then all three loaded
        assert row_count(sql, table) == 40
        return
    assert status["state"] == "failed"
    assert "part_009.csv" in status["error"]
    failed = [a for a in status["attempts"] if a["outcome"] == "failed"]
    assert len(failed) == 1 and not [a for a in status["attempts"] if a["outcome"] == "retry"]  # not retried


def test_a_bad_spec_fails_at_submit_and_records_nothing(tmp_path: Path, jobs_env: str) -> None:
    import engine
    from engine.jobs.client import list_jobs

    _files(tmp_path / "in", 1)
    before = list_jobs(dsn=jobs_env)
    with pytest.raises(SpecError, match="mode"):
        engine.submit(tmp_path / "in", into="t", mode="upsert")
    with pytest.raises(SpecError, match="not an option"):
        engine.submit(tmp_path / "in", into="t", colour="red")
    assert list_jobs(dsn=jobs_env) == before


def test_a_queued_job_cancelled_never_runs(tmp_path: Path, jobs_env: str, sql: Sql, table: str) -> None:
    """No worker yet: the job sits queued; cancelled, then a worker starts: its tasks are skipped."""
    from celery.contrib.testing.worker import start_worker

    import engine
    from engine.jobs.app import app

    _files(tmp_path / "in", 3)
    job = engine.submit(tmp_path / "in", into=table, partition_by="created_at")
    assert job.state == "queued"
    assert job.cancel()
    assert not job.cancel()  # a second cancel: already finished
    with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False, loglevel="WARNING"):
        time.sleep(2)  # the plan task is delivered and must do nothing
    assert job.state == "cancelled"
    assert sql("SELECT to_regclass($1) IS NULL", [table])[0][0]


def test_a_failed_job_retried_skips_what_committed(tmp_path: Path, worker: None, jobs_env: str, sql: Sql,
                                                   table: str) -> None:
    import engine
    from engine.jobs.client import retry

    files = _files(tmp_path / "in", 3)
    files[1].write_bytes(b"\x00\x01garbage" * 10)
    job = engine.submit(tmp_path / "in", into=table, partition_by="created_at").wait(timeout=120)
    assert job.state == "failed", job.status()
    loaded = row_count(sql, table)
    assert loaded == 40
    _files(tmp_path / "in", 3)  # the bad file is fixed (the others are rewritten with the same bytes)
    again = retry(job.job_id[:8], dsn=jobs_env).wait(timeout=120)
    assert again.state == "done", again.status()["error"]
    assert row_count(sql, table) == 60
    tasks = again.status()["reports"][0]["tasks"]
    assert sorted(t["attempts"] for t in tasks) == [1, 1, 2]  # only the failed partition ran again


def test_the_soft_time_limit_rolls_the_partition_back_and_records_a_clean_timeout(
        tmp_path: Path, worker: None, jobs_env: str, sql: Sql, table: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Celery's soft limit raises SoftTimeLimitExceeded wherever the task's Python code is (a threads pool has no
    time limits, so it is raised here where a real worker's signal would land: between two batches)."""
    from celery.exceptions import SoftTimeLimitExceeded

    import engine
    from engine.jobs.tasks import JobProgress

    def out_of_time(self: JobProgress, *, label: str, rows: int, done: int, total: int) -> None:
        if rows > 0:
            raise SoftTimeLimitExceeded()

    monkeypatch.setattr(JobProgress, "update", out_of_time)
    monkeypatch.setenv("BICONIC_CHUNK_MB", "0.01")  # several batches: the limit strikes inside the partition
    [path] = _files(tmp_path / "in", 1, rows=2000)
    job = engine.submit(path, into=table, partition_by="created_at").wait(timeout=120)
    status = job.status()
    assert job.state == "failed"
    assert status["error"] == (f"{path.name}: timed out: the time limit of 1800 s (BICONIC_JOB_TIME_LIMIT) "
                               "was reached")
    outcomes = sql("SELECT outcome FROM biconic.job_attempts WHERE job_id = $1::uuid", [job.job_id])
    assert outcomes == [("timeout",)]
    if sql("SELECT to_regclass($1) IS NOT NULL", [table])[0][0]:
        assert row_count(sql, table) == 0  # the partition's transaction rolled back: nothing half-loaded


def test_jobs_are_listed_by_state_and_connection(tmp_path: Path, worker: None, jobs_env: str, table: str) -> None:
    import engine
    from engine.jobs.client import list_jobs

    _files(tmp_path / "a", 1)
    connection = random.randrange(10**6, 10**9)
    done = engine.submit(tmp_path / "a", into=table, connection_id=connection).wait(timeout=120)
    assert done.state == "done"
    assert [j["job_id"] for j in list_jobs(dsn=jobs_env, connection_id=str(connection))] == [done.job_id]
    assert list_jobs(dsn=jobs_env, connection_id=str(connection + 1)) == []
    assert done.job_id in [j["job_id"] for j in list_jobs(dsn=jobs_env, state="done")]
    assert done.job_id not in [j["job_id"] for j in list_jobs(dsn=jobs_env, state="failed")]


def test_a_hundred_imports_from_ten_connections_all_load_once_within_each_connections_limit(
        tmp_path: Path, worker: None, jobs_env: str, sql: Sql, table: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """100 single-file imports, 10 connections, the limit at 1 running partition per connection: every row
    lands exactly once, and no two partitions of one connection ever ran at the same time."""
    import engine
    from engine.jobs.client import Job

    monkeypatch.setenv("BICONIC_CONNECTION_LIMIT", "1")
    files = [_files(tmp_path / f"c{c}", 10, rows=10, connection=c) for c in range(10)]
    jobs: list[Job] = [engine.submit(files[c][i], into=table, partition_by="created_at", connection_id=c)
                       for i in range(10) for c in range(10)]
    for job in jobs:
        assert job.wait(timeout=300).state == "done", job.status()["error"]
    assert row_count(sql, table) == 1000
    assert sql(f'SELECT count(*) FROM (SELECT DISTINCT connection_id, order_id FROM "{table}") d')[0][0] == 1000
    spans = sql("SELECT j.connection_id, a.started_at, a.finished_at FROM biconic.job_attempts a "
                "JOIN biconic.jobs j USING (job_id) WHERE a.outcome = 'done' AND j.dataset = $1", [table])
    by_connection: dict[Any, list[tuple[Any, Any]]] = {}
    for connection, start, end in spans:
        by_connection.setdefault(connection, []).append((start, end))
    for connection, runs in by_connection.items():
        runs.sort()
        overlaps = [(a, b) for a, b in zip(runs, runs[1:], strict=False) if b[0] < a[1]]
        assert not overlaps, f"connection {connection} ran {len(overlaps) + 1} partitions at once"


def test_one_connections_backlog_does_not_hold_up_another_connection(
        tmp_path: Path, worker: None, jobs_env: str, table: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Connection 1 queues 16 imports first; connection 2's one import, queued after them, finishes long before
    connection 1's backlog does (the limit, 1 here, leaves the other worker threads to others)."""
    import engine

    monkeypatch.setenv("BICONIC_CONNECTION_LIMIT", "1")
    backlog = [engine.submit(p, into=table, partition_by="created_at", connection_id=1)
               for p in _files(tmp_path / "c1", 16, rows=10, connection=1)]
    [late] = _files(tmp_path / "c2", 1, rows=10, connection=2)
    other = engine.submit(late, into=table, partition_by="created_at", connection_id=2).wait(timeout=120)
    assert other.state == "done"
    still = [j for j in backlog if j.state != "done"]
    assert len(still) >= 8, f"only {len(still)} of connection 1's 16 imports were left when connection 2's ended"
    for job in backlog:
        job.wait(timeout=300)


def test_a_job_finishes_when_its_rows_are_in_not_when_the_whole_backlog_is(
        tmp_path: Path, jobs_env: str, sql: Sql, table: str) -> None:
    """One worker thread; job A (one file) is queued before job B's six partitions. A's finishing step goes to
    the control queue, so A is done before most of B runs (on one FIFO queue it waited behind all six)."""
    from celery.contrib.testing.worker import start_worker

    import engine
    from engine.jobs.app import app

    [first] = _files(tmp_path / "a", 1, rows=10)
    _files(tmp_path / "b", 6, rows=10)
    with start_worker(app, pool="threads", concurrency=1, perform_ping_check=False, loglevel="WARNING",
                      shutdown_timeout=30):
        a = engine.submit(first, into=table, partition_by="created_at")
        b = engine.submit(tmp_path / "b", into=table, partition_by="created_at")
        assert a.wait(timeout=120).state == "done"
        assert b.wait(timeout=120).state == "done"
    [(before,)] = sql("SELECT count(*) FROM biconic.job_tasks t, biconic.jobs a WHERE t.job_id = $1::uuid "
                      "AND a.job_id = $2::uuid AND t.finished_at < a.finished_at", [b.job_id, a.job_id])
    assert before <= 2, f"{before} of job B's 6 partitions ran before job A (queued first) was finished"


def test_the_jobs_finishing_steps_go_to_the_control_queue_that_every_worker_takes_from() -> None:
    from engine.jobs.app import CONTROL_QUEUE, QUEUE, app, consumed_queues

    route = app.amqp.router.route
    assert route({}, "biconic.stage_done")["queue"].name == CONTROL_QUEUE
    assert route({}, "biconic.plan")["queue"].name == QUEUE  # a burst's plans must not queue before it
    assert route({}, "biconic.partition")["queue"].name == QUEUE
    assert consumed_queues(None) == f"{QUEUE},{CONTROL_QUEUE}"
    assert consumed_queues("big, small") == f"big,small,{CONTROL_QUEUE}"
    assert consumed_queues(f"{CONTROL_QUEUE},x") == f"{CONTROL_QUEUE},x"


def test_connection_slots_are_limited_across_threads_and_freed_after_use(pg_dsn: str) -> None:
    """Each worker thread (a worker process in production) holds its slot on its own connection."""
    import threading

    from engine.jobs.fairness import connection_slot, slots_in_use

    connection = f"c{random.randrange(10**9)}"
    release = threading.Event()
    got: list[int | None] = []

    def hold() -> None:
        with connection_slot(pg_dsn, connection, 2) as slot:
            got.append(slot)
            release.wait(30)

    holders = [threading.Thread(target=hold) for _ in range(2)]
    for t in holders:
        t.start()
    deadline = time.monotonic() + 30
    while len(got) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        assert sorted(s for s in got if s is not None) == [0, 1]
        assert slots_in_use(pg_dsn, connection, 2) == 2
        with connection_slot(pg_dsn, connection, 2) as third:
            assert third is None
        with connection_slot(pg_dsn, "someone else", 2) as other:
            assert other == 0
    finally:
        release.set()
        for t in holders:
            t.join()
    assert slots_in_use(pg_dsn, connection, 2) == 0
    with connection_slot(pg_dsn, connection, 2) as again:
        assert again == 0


def test_progress_is_written_at_most_once_a_second_and_sees_a_cancel(tmp_path: Path, jobs_env: str) -> None:
    from engine.jobs.tasks import JobCancelled, JobProgress
    from engine.postgres import meta_jobs as store

    job_id = store.create(jobs_env, kind="load", request={"path": "x"}, connection_id=None, dataset="t", stages=1)
    store.plan_tasks(jobs_env, job_id, 0, [(0, "x", "task-1")])
    now = [100.0]
    progress = JobProgress(jobs_env, job_id, 0, 0, clock=lambda: now[0])
    progress.update(label="x", rows=10, done=0, total=1)
    progress.update(label="x", rows=20, done=0, total=1)  # within the second: not written
    assert store.tasks(jobs_env, job_id, 0)[0].rows_in == 10
    store.set_state(jobs_env, job_id, "cancelled")
    progress.update(label="x", rows=30, done=0, total=1)  # still within the second: the cancel is not seen yet
    now[0] += 1.0
    with pytest.raises(JobCancelled):
        progress.update(label="x", rows=40, done=0, total=1)


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    from engine.jobs.app import MAX_BACKOFF
    from engine.jobs.tasks import backoff

    rng = random.Random(1)
    delays = [backoff(n, base=10, rng=rng) for n in range(1, 5)]
    for n, delay in enumerate(delays, start=1):
        assert 10 * 2 ** (n - 1) <= delay <= 1.25 * 10 * 2 ** (n - 1)
    assert MAX_BACKOFF <= backoff(20, base=10, rng=rng) <= 1.25 * MAX_BACKOFF


def test_the_stored_request_masks_passwords() -> None:
    from engine.jobs.request import JobRequest

    request = JobRequest("load", "postgresql://app:hunter2@db/shop?table=orders",
                         {"into": "t", "dsn": "postgresql://app:hunter2@wh/warehouse"})
    shown = str(request.shown())
    assert "hunter2" not in shown and "***" in shown
    assert "hunter2" in str(request.to_json())  # the broker's copy: the worker needs it


def test_fan_out_is_for_append_and_merge_of_several_partitions() -> None:
    from engine.jobs.request import JobRequest
    from engine.jobs.tasks import fans_out

    def spec(mode: str) -> Any:
        return JobRequest("load", "x.csv", {"into": "t", "mode": mode, "key": "id"}).specs()[0]

    assert fans_out(spec("append"), 3, False, False)
    assert fans_out(spec("merge"), 3, False, False)
    assert not fans_out(spec("replace"), 3, False, False)
    assert not fans_out(spec("append"), 1, False, False)
    assert not fans_out(spec("append"), 3, True, False)
    assert not fans_out(spec("append"), 3, False, True)


def test_cancelling_a_running_job_rolls_back_its_partition(tmp_path: Path, worker: None, jobs_env: str, sql: Sql,
                                                          table: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cancel seen between two batches of a partition: the partition's transaction rolls back (nothing of it
    is visible), the job ends cancelled."""
    import engine

    monkeypatch.setenv("BICONIC_CHUNK_MB", "0.05")  # batches of about 25 rows, each a slow regex rule
    path = tmp_path / "big.csv"
    pl.DataFrame({"id": range(2000), "v": ["é" + "ab" * 1000 + "z"] * 2000}).write_csv(path)
    job = engine.submit(path, into=table, spec={"rules": [{"regex": {"column": "v", "pattern": r"[\w\d]{1,200}z"}}]})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until the partition has read some rows
        tasks = job.status()["reports"] or []
        rows = sql("SELECT coalesce(max(rows_in), 0) FROM biconic.job_tasks WHERE job_id = $1::uuid", [job.job_id])
        if rows[0][0] > 0 or tasks:
            break
        time.sleep(0.05)
    assert job.cancel(), "the job finished before it could be cancelled"
    assert job.wait(timeout=60).state == "cancelled"
    if sql("SELECT to_regclass($1) IS NOT NULL", [table])[0][0]:
        assert row_count(sql, table) == 0


def test_the_cli_submits_lists_shows_and_names_a_missing_job(tmp_path: Path, worker: None, jobs_env: str,
                                                             table: str) -> None:
    import json

    from click.testing import CliRunner

    from engine.cli import cli
    from engine.jobs.client import Job

    _files(tmp_path / "in", 2)
    runner = CliRunner()
    submitted = runner.invoke(cli, ["submit", str(tmp_path / "in"), "--into", table, "--connection", "5", "--json"])
    assert submitted.exit_code == 0, submitted.output
    job_id = json.loads(submitted.output)["job_id"]
    assert Job(job_id, jobs_env).wait(timeout=120).state == "done"
    shown = json.loads(runner.invoke(cli, ["jobs", "show", job_id[:8], "--json"]).output)
    assert shown["state"] == "done" and shown["connection_id"] == "5"
    assert [t["state"] for t in shown["tasks"]] == ["done", "done"]
    assert shown["progress"]["rows"] == 40 and shown["reports"][0]["rows_loaded"] == 40
    listed = json.loads(runner.invoke(cli, ["jobs", "--state", "done", "--connection", "5", "--json"]).output)
    assert job_id in [j["job_id"] for j in listed]
    text = runner.invoke(cli, ["jobs", "show", job_id]).output
    assert "2/2 partitions" in text and "part_000.csv: done, 20 rows" in text
    missing = runner.invoke(cli, ["jobs", "show", "0000aaaa"])
    assert missing.exit_code == 2 and "no such job" in missing.output
    no_table = runner.invoke(cli, ["submit", str(tmp_path / "in")])
    assert no_table.exit_code == 2 and "--into" in no_table.output


def test_submit_takes_exactly_the_options_of_load_plus_pipeline() -> None:
    import click

    from engine.cli import cli

    def options(name: str) -> set[str]:
        return {o for p in cli.commands[name].params if isinstance(p, click.Option) for o in p.opts}

    assert options("submit") == options("load") | {"--pipeline"}


def test_a_finished_threads_cached_connections_are_closed(pg_dsn: str, sql: Sql) -> None:
    """Worker threads come and go (a thread pool, a test's worker): the connections each cached must not
    outlive it (they once piled up to PostgreSQL's connection limit)."""
    import gc
    import threading

    from engine.jobs.fairness import connection_slot
    from engine.postgres import meta_jobs as store

    def mine() -> int:
        return int(sql("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND pid <> pg_backend_pid()")[0][0])

    def use() -> None:
        store.list_jobs(pg_dsn, limit=1)
        with connection_slot(pg_dsn, "leak-check", 1):
            pass

    before = mine()
    for _ in range(3):
        threads = [threading.Thread(target=use) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        del threads
        gc.collect()
    deadline = time.monotonic() + 10
    while mine() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mine() <= before


def test_a_submitted_load_keeps_its_declared_indexes_through_the_queue() -> None:
    """``biconic submit --index ...`` (and ``submit(..., indexes=[...])``) reach the worker's spec: the option is
    one a job may carry, and it survives the broker's JSON copy."""
    from engine.jobs.request import LOAD_OPTIONS, JobRequest

    assert "indexes" in LOAD_OPTIONS
    request = JobRequest("load", "orders.csv", load={"into": "orders", "indexes": ["gist(area)", "(connection_id)"]})
    [spec] = JobRequest.from_json(request.to_json()).specs()
    assert spec.target.indexes == ("gist(area)", "btree(connection_id)")
