"""The job layer with real ``biconic worker`` processes (Celery prefork pool, spawn-started children) on the real
Redis, RabbitMQ and PostgreSQL: a load, the hard time limit inside native Polars code, cancel, kill -9 of a pool
process, retries of a transient failure, a permanent failure, the same import twice at once, RabbitMQ.

Slow partitions are made with a regex rule that Rust's regex engine runs slowly on long non-ASCII text
(about 20 ms per 2,000-character value on one core): the time is spent in one Polars call per batch, so a small
``BICONIC_CHUNK_MB`` gives a partition of many short batches (progress, cancel, kill -9 in the middle) and one big
batch keeps a task inside native code for many seconds (the hard time limit)."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from tests.jobs.conftest import Worker, biconic
from tests.support import Sql, row_count

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

#: every value of column v matches, slowly (see the module docstring)
SLOW_RULE: dict[str, Any] = {"rules": [{"regex": {"column": "v", "pattern": r"[\w\d]{1,200}z"}}]}
#: settings of a worker whose partitions are many small batches, each a short native call
SMALL_BATCHES = {"BICONIC_CHUNK_MB": "0.05", "POLARS_MAX_THREADS": "1"}


def _csv(path: Path, first_id: int, rows: int, width: int) -> Path:
    """``rows`` rows (id from ``first_id``, v a non-ASCII text of about ``width`` characters ending in z)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "é" + "ab" * (width // 2) + "z"
    pl.DataFrame({"id": range(first_id, first_id + rows), "v": [text] * rows}).write_csv(path)
    return path


def _job(dsn: str, job_id: str) -> Any:
    from engine.jobs.client import Job

    return Job(job_id, dsn)


def _until(what: str, check: Callable[[], Any], timeout: float, worker: Worker | None = None) -> Any:
    """Poll ``check`` until it returns something true; fail naming ``what`` (with the worker's log) after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not after {timeout:g} s" + (f"\n{worker.tail()}" if worker else ""))
        time.sleep(0.1)


def _rows_if_there(sql: Sql, table: str) -> int:
    """The table's rows, 0 when it is not there: the empty table a killed first load created may be dropped
    by another load's cleanup at any moment, even between a check that it exists and the count."""
    try:
        return row_count(sql, table)
    except Exception as exc:  # noqa: BLE001 - only "does not exist" means 0
        if "does not exist" not in str(exc):
            raise
        return 0


def _tasks(sql: Sql, job_id: str) -> dict[int, dict[str, Any]]:
    """part -> its job_tasks row (state, attempts, rows_in)."""
    rows = sql("SELECT part, state, attempts, rows_in FROM biconic.job_tasks WHERE job_id = $1::uuid", [job_id])
    return {int(r[0]): {"state": r[1], "attempts": int(r[2]), "rows_in": int(r[3])} for r in rows}


def _attempts(sql: Sql, job_id: str) -> list[dict[str, Any]]:
    rows = sql("SELECT part, attempt, outcome, error, started_at, finished_at FROM biconic.job_attempts "
               "WHERE job_id = $1::uuid ORDER BY part, attempt", [job_id])
    keys = ("part", "attempt", "outcome", "error", "started_at", "finished_at")
    return [dict(zip(keys, r, strict=True)) for r in rows]


def _finished(dsn: str, job_id: str, timeout: float, worker: Worker) -> dict[str, Any]:
    """The job's status once it has finished."""
    job = _job(dsn, job_id)
    _until(f"job {job_id} finished", lambda: job.state in ("done", "failed", "cancelled"), timeout, worker)
    return dict(job.status())


def _distinct_ids(sql: Sql, table: str) -> int:
    return int(sql(f'SELECT count(DISTINCT id) FROM "{table}"')[0][0])


def test_a_load_through_a_real_worker_loads_every_row_and_shows_progress_and_reports(
        tmp_path: Path, start_worker: Callable[..., Worker], worker_env: dict[str, str], sql: Sql,
        table: str) -> None:
    for i in range(3):
        _csv(tmp_path / "in" / f"part_{i}.csv", i * 1000, 1000, 8)
    worker = start_worker(concurrency=2)
    submitted = biconic(worker_env, "submit", str(tmp_path / "in" / "*.csv"), "--into", table, "--json")
    assert submitted.returncode == 0, submitted.stderr
    job_id = json.loads(submitted.stdout)["job_id"]
    _finished(worker_env["BICONIC_PG_DSN"], job_id, 90, worker)
    shown = biconic(worker_env, "jobs", "show", job_id, "--json")
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert status["state"] == "done", status["error"]
    progress = status["progress"]
    assert (progress["partitions_done"], progress["partitions_total"], progress["rows"]) == (3, 3, 3000)
    [report] = status["reports"]
    assert (report["rows_in"], report["rows_loaded"], report["table"]) == (3000, 3000, table)
    assert sorted(t["state"] for t in report["tasks"]) == ["done"] * 3
    assert [a["outcome"] for a in status["attempts"]] == ["done"] * 3
    assert row_count(sql, table) == 3000 and _distinct_ids(sql, table) == 3000
    assert "SpawnPoolWorker" in worker.text()  # the pool's processes were spawned, not forked
    logged = [json.loads(line) for line in worker.text().splitlines() if line.startswith('{"ts": ')]
    loads = [line for line in logged if line["logger"] == "biconic.load"]  # each task's load: JSON with its ids
    assert len(loads) == 6, worker.tail()
    assert any(line["message"].endswith(" ready.") for line in logged)  # Celery's own lines too
    assert {(line["job_id"], line["dataset"], line["stage"]) for line in loads} == {(job_id, table, "0")}
    assert len({line["load_id"] for line in loads}) == 3
    done = [line for line in logged if "succeeded in" in line["message"]]  # the task's own context
    assert len(done) == 5 and {line["job_id"] for line in done} == {job_id} and "data" not in done[0]


@pytest.mark.slow
def test_a_task_stuck_in_native_polars_code_is_killed_at_the_hard_time_limit_and_the_worker_goes_on(
        tmp_path: Path, start_worker: Callable[..., Worker], jobs_client: str, sql: Sql, table: str) -> None:
    import engine
    from engine.jobs.app import soft_limit

    limit = 4.0
    # 200 values of 20,000 characters in one batch: about 25 s of regex in one Polars call on one core
    _csv(tmp_path / "big.csv", 0, 200, 20_000)
    worker = start_worker(concurrency=1, env={"BICONIC_JOB_TIME_LIMIT": f"{limit:g}", "POLARS_MAX_THREADS": "1"})
    job = engine.submit(tmp_path / "big.csv", into=table, spec=SLOW_RULE)
    status = _finished(jobs_client, job.job_id, 45, worker)
    assert status["state"] == "failed", status
    assert status["error"] == f"killed after the time limit of {limit:g} s (BICONIC_JOB_TIME_LIMIT)"
    assert status["error_type"] == "TimeLimitExceeded"
    assert [t["state"] for t in _tasks(sql, job.job_id).values()] == ["failed"]
    [attempt] = _attempts(sql, job.job_id)
    assert (attempt["outcome"], attempt["error"]) == ("timeout", status["error"])
    took = (attempt["finished_at"] - attempt["started_at"]).total_seconds()
    assert limit - 1 < took < limit + 5, f"the attempt took {took:.1f} s, not about its limit"
    log = worker.text()
    assert f"Hard time limit ({limit}s) exceeded" in log
    # the soft limit fired first, but cannot interrupt native code: the task never got to record a timeout
    assert f"Soft time limit ({soft_limit(limit)}s) exceeded" in log
    assert _rows_if_there(sql, table) == 0
    # the worker replaced its killed process and runs the next job
    assert worker.alive()
    _csv(tmp_path / "small.csv", 0, 50, 8)
    after = engine.submit(tmp_path / "small.csv", into=f"{table}_after")
    assert _finished(jobs_client, after.job_id, 60, worker)["state"] == "done"
    assert row_count(sql, f"{table}_after") == 50


@pytest.mark.slow
def test_cancel_rolls_back_the_running_partition_and_skips_the_queued_ones(
        tmp_path: Path, start_worker: Callable[..., Worker], jobs_client: str, worker_env: dict[str, str],
        sql: Sql, table: str) -> None:
    import engine

    _csv(tmp_path / "in" / "part_0.csv", 0, 100, 8)  # fast: committed before the cancel
    for i in (1, 2, 3):  # several seconds each (polars 2.1, one core), in batches of about 25 rows
        _csv(tmp_path / "in" / f"part_{i}.csv", i * 10_000, 1600, 2000)
    worker = start_worker(concurrency=1, env=SMALL_BATCHES)
    job = engine.submit(tmp_path / "in", into=table, spec=SLOW_RULE)

    def second_partition_loading() -> bool:
        tasks = _tasks(sql, job.job_id)
        return tasks.get(0, {}).get("state") == "done" and tasks.get(1, {}).get("rows_in", 0) > 0

    _until("part 1 loading after part 0 committed", second_partition_loading, 60, worker)
    cancelled = biconic(worker_env, "jobs", "cancel", job.job_id)
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout, cancelled.stderr
    _until("part 1 stopped", lambda: _tasks(sql, job.job_id)[1]["state"] != "running", 30, worker)

    def queued_ones_dropped() -> bool:  # taken and skipped: the job is cancelled
        attempts = [a for a in _attempts(sql, job.job_id) if a["part"] in (2, 3)]
        return len(attempts) >= 2

    _until("parts 2 and 3 dropped", queued_ones_dropped, 30, worker)
    tasks = _tasks(sql, job.job_id)
    assert job.state == "cancelled"
    assert tasks[0]["state"] == "done" and tasks[1]["state"] == "cancelled"
    outcomes = {(a["part"], a["attempt"]): a["outcome"] for a in _attempts(sql, job.job_id)}
    assert outcomes[(1, 1)] == "cancelled"
    for part in (2, 3):  # taken and skipped: never loaded
        assert tasks[part]["state"] == "cancelled", tasks
        assert tasks[part]["rows_in"] == 0
        assert {o for (p, _), o in outcomes.items() if p == part} == {"skipped"}
    assert row_count(sql, table) == 100  # part 0 only: nothing of part 1, not even its first batches
    assert sql(f'SELECT min(id), max(id) FROM "{table}"')[0] == (0, 99)
    assert worker.alive()
    assert "ChordError" not in worker.text()  # the chord ended normally: no revoked member failed it


@pytest.mark.slow
def test_kill_9_of_the_pool_process_in_the_middle_of_a_partition_redelivers_it_and_loads_it_once(
        tmp_path: Path, start_worker: Callable[..., Worker], jobs_client: str, sql: Sql, table: str) -> None:
    import engine
    from engine.postgres.meta_jobs import LOST

    _csv(tmp_path / "in" / "part_0.csv", 0, 800, 2000)  # a few seconds, in batches of about 25 rows
    _csv(tmp_path / "in" / "part_1.csv", 1000, 100, 8)
    worker = start_worker(concurrency=1, env=SMALL_BATCHES)
    job = engine.submit(tmp_path / "in", into=table, spec=SLOW_RULE)
    _until("part 0 loading", lambda: _tasks(sql, job.job_id).get(0, {}).get("rows_in", 0) > 0, 60, worker)
    assert _tasks(sql, job.job_id)[0]["state"] == "running"
    [child] = worker.children()
    os.kill(child, signal.SIGKILL)
    status = _finished(jobs_client, job.job_id, 90, worker)
    assert status["state"] == "done", (status["error"], worker.tail())
    assert row_count(sql, table) == 900 and _distinct_ids(sql, table) == 900
    assert status["reports"][0]["rows_loaded"] == 900
    tasks = _tasks(sql, job.job_id)
    assert tasks[0]["attempts"] == 2 and tasks[0]["state"] == "done"  # the killed attempt and its redelivery
    part0 = [(a["outcome"], a["error"]) for a in _attempts(sql, job.job_id) if a["part"] == 0]
    assert part0 == [("lost", LOST), ("done", None)]  # the killed attempt, told when it was delivered again
    assert child not in worker.children() and worker.alive()
    assert "WorkerLostError" in worker.text()


@pytest.mark.slow
def test_a_task_whose_process_dies_on_every_delivery_fails_its_job_after_the_retries(
        tmp_path: Path, start_worker: Callable[..., Worker], jobs_client: str, sql: Sql, table: str) -> None:
    """Out of memory on every delivery would otherwise kill a pool process forever (acks_late + reject on
    worker lost deliver it again each time)."""
    import engine
    from engine.postgres.meta_jobs import LOST

    _csv(tmp_path / "in.csv", 0, 400, 2000)
    worker = start_worker(concurrency=1, env={**SMALL_BATCHES, "BICONIC_JOB_RETRIES": "1"})
    job = engine.submit(tmp_path / "in.csv", into=table, spec=SLOW_RULE)
    for attempt in (1, 2):
        def running(attempt: int = attempt) -> bool:
            return any(t["attempts"] == attempt and t["state"] == "running"
                       for t in _tasks(sql, job.job_id).values())

        _until(f"attempt {attempt} running", running, 60, worker)
        [child] = worker.children()
        os.kill(child, signal.SIGKILL)
    status = _finished(jobs_client, job.job_id, 60, worker)
    assert status["state"] == "failed"
    assert status["error"] == "in.csv: the process running it died 2 times (killed, or out of memory); not run again"
    assert [(a["outcome"], a["error"]) for a in _attempts(sql, job.job_id)] == [
        ("lost", LOST), ("lost", LOST), ("failed", status["error"])]
    assert worker.alive()


def _copying(sql: Sql) -> list[int]:
    """The backends of the test database (only this test's job runs there now) whose statement is, or last
    was, a COPY in an open transaction: a COPY running, or the load's data transaction between two COPYs (a
    new table's rows go to a staged child first, so the statement does not name the table)."""
    rows = sql("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
               "AND query ILIKE 'COPY %' AND state IN ('active', 'idle in transaction')")
    return [int(r[0]) for r in rows]


@pytest.mark.slow
def test_a_transient_failure_is_retried_with_growing_delays_and_the_job_completes(
        tmp_path: Path, start_worker: Callable[..., Worker], jobs_client: str, sql: Sql, table: str) -> None:
    import engine

    backoff = 0.5
    _csv(tmp_path / "in.csv", 0, 80, 2000)  # about 2 s in batches of about 25 rows
    worker = start_worker(concurrency=1, env={**SMALL_BATCHES, "BICONIC_JOB_BACKOFF": f"{backoff:g}"})
    job = engine.submit(tmp_path / "in.csv", into=table, spec=SLOW_RULE)
    for attempt in (1, 2):  # the engine's connection terminated in the middle of its COPYs, twice
        def copying(attempt: int = attempt) -> list[int]:
            tasks = _tasks(sql, job.job_id)
            return _copying(sql) if tasks and tasks[-1]["attempts"] == attempt else []

        pids = _until(f"attempt {attempt} copying", copying, 60, worker)
        sql("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", [pids])
    status = _finished(jobs_client, job.job_id, 90, worker)
    assert status["state"] == "done", (status["error"], worker.tail())
    assert row_count(sql, table) == 80 and _distinct_ids(sql, table) == 80
    attempts = _attempts(sql, job.job_id)
    assert [a["outcome"] for a in attempts] == ["retry", "retry", "done"], attempts
    said = [float(re.findall(r"\(retry in ([0-9.]+) s\)$", a["error"])[0]) for a in attempts[:2]]
    assert backoff <= said[0] <= 1.25 * backoff and 2 * backoff <= said[1] <= 2.5 * backoff, said  # doubling
    waits = [(attempts[i + 1]["started_at"] - attempts[i]["finished_at"]).total_seconds() for i in (0, 1)]
    assert waits[0] >= said[0] - 0.1 and waits[1] >= said[1] - 0.1, (waits, said)  # and they were waited


def test_a_permanent_failure_is_not_retried_and_fails_the_job_with_its_one_line_error(
        tmp_path: Path, start_worker: Callable[..., Worker], jobs_client: str, sql: Sql, table: str) -> None:
    import engine

    (tmp_path / "ragged.csv").write_text("id,v\n1,a\n2,b,c,d\n3,c\n")
    _csv(tmp_path / "good.csv", 0, 10, 8)
    worker = start_worker(concurrency=2)
    bad_file = engine.submit(tmp_path / "ragged.csv", into=table)
    bad_spec = engine.submit(tmp_path / "good.csv", into=f"{table}_spec",
                             spec={"rules": [{"not_null": ["nosuch"]}]})
    for job, expected in ((bad_file, "ragged.csv, row 3: cannot read"),
                          (bad_spec, "rules[0].not_null: unknown column 'nosuch'")):
        status = _finished(jobs_client, job.job_id, 60, worker)
        assert status["state"] == "failed"
        assert expected in status["error"] and "\n" not in status["error"], status["error"]
        assert [a["outcome"] for a in _attempts(sql, job.job_id)] == ["failed"]  # one attempt, no retry


@pytest.mark.slow
def test_the_same_import_submitted_twice_at_once_is_loaded_once(
        tmp_path: Path, start_worker: Callable[..., Worker], jobs_client: str, sql: Sql, table: str) -> None:
    import engine

    _csv(tmp_path / "in.csv", 0, 100, 2000)  # about 2 s: the two jobs' tasks run at the same time
    worker = start_worker(concurrency=2, env={"POLARS_MAX_THREADS": "1"})
    jobs = [engine.submit(tmp_path / "in.csv", into=table, spec=SLOW_RULE) for _ in range(2)]
    reports = []
    for job in jobs:
        status = _finished(jobs_client, job.job_id, 90, worker)
        assert status["state"] == "done", status["error"]
        reports.append(status["reports"][0])
    assert row_count(sql, table) == 100 and _distinct_ids(sql, table) == 100
    assert sorted(r["rows_loaded"] for r in reports) == [0, 100]  # one loaded it, the other found it loaded
    assert sorted(r["skipped_partitions"] for r in reports) == [0, 1]
    first, second = (_attempts(sql, job.job_id)[-1] for job in jobs)
    assert first["started_at"] < second["finished_at"] and second["started_at"] < first["finished_at"], \
        "the two jobs did not run at the same time"


@pytest.mark.rabbitmq
def test_the_same_import_runs_through_rabbitmq(
        tmp_path: Path, start_worker: Callable[..., Worker], worker_env: dict[str, str], amqp_url: str,
        broker_url: str, sql: Sql, table: str) -> None:
    for i in range(2):
        _csv(tmp_path / "in" / f"part_{i}.csv", i * 1000, 1000, 8)
    rabbit = {"BICONIC_BROKER_URL": amqp_url, "BICONIC_RESULT_URL": broker_url}  # chords count in Redis
    worker = start_worker(concurrency=2, env=rabbit)
    assert "amqp://guest:**@127.0.0.1:5672" in worker.text()
    submitted = biconic({**worker_env, **rabbit}, "submit", str(tmp_path / "in"), "--into", table, "--json")
    assert submitted.returncode == 0, submitted.stderr
    job_id = json.loads(submitted.stdout)["job_id"]
    status = _finished(worker_env["BICONIC_PG_DSN"], job_id, 90, worker)
    assert status["state"] == "done", status["error"]
    assert status["reports"][0]["rows_loaded"] == 2000 and status["progress"]["partitions_done"] == 2
    assert row_count(sql, table) == 2000 and _distinct_ids(sql, table) == 2000
