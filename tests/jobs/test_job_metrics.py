"""The job layer's counts (``biconic_jobs_total`` and its duration, time-limit kills, running jobs), recorded
where a job's final state is written, with an in-process Celery worker (threads) on the real Redis and
PostgreSQL. This process records in its own registry (no multiprocess folder): each test reads differences."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.jobs.test_jobs_inprocess import _files, jobs_env, worker  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.redis, pytest.mark.postgres]


def sample(name: str, **labels: str) -> float:
    from engine.metrics import registry

    return registry().get_sample_value(name, labels) or 0.0


@pytest.fixture
def counted() -> Iterator[dict[str, float]]:
    """The job counters before the test (they accumulate over the session)."""
    yield {outcome: sample("biconic_jobs_total", outcome=outcome)
           for outcome in ("succeeded", "failed", "cancelled", "timeout")}


def test_a_done_job_is_counted_once_with_its_duration_and_stops_running(
        tmp_path: Path, worker: None, jobs_env: str, table: str, counted: dict[str, float]) -> None:  # noqa: F811
    import engine

    durations = sample("biconic_job_duration_seconds_count", outcome="succeeded")
    _files(tmp_path / "in", 2)
    job = engine.submit(tmp_path / "in", into=table, connection_id=7)
    assert job.wait(timeout=120).state == "done"
    assert sample("biconic_jobs_total", outcome="succeeded") == counted["succeeded"] + 1
    assert sample("biconic_job_duration_seconds_count", outcome="succeeded") == durations + 1
    assert sample("biconic_running_jobs", connection="7") == 0  # raised by each partition, lowered after it
    assert sample("biconic_jobs_total", outcome="failed") == counted["failed"]


def test_a_cancelled_job_is_counted_where_it_was_cancelled(tmp_path: Path, jobs_env: str,  # noqa: F811
                                                           table: str, counted: dict[str, float]) -> None:
    import engine

    _files(tmp_path / "in", 1)
    job = engine.submit(tmp_path / "in", into=table)
    assert job.cancel() and not job.cancel()  # the second finds it finished: not counted again
    assert sample("biconic_jobs_total", outcome="cancelled") == counted["cancelled"] + 1


def test_a_soft_time_limit_counts_a_soft_kill_and_a_timed_out_job(
        tmp_path: Path, worker: None, jobs_env: str, table: str, counted: dict[str, float],  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    from celery.exceptions import SoftTimeLimitExceeded

    import engine
    from engine.jobs.tasks import JobProgress

    def out_of_time(self: JobProgress, *, label: str, rows: int, done: int, total: int) -> None:
        if rows > 0:
            raise SoftTimeLimitExceeded()

    monkeypatch.setattr(JobProgress, "update", out_of_time)
    monkeypatch.setenv("BICONIC_CHUNK_MB", "0.01")
    kills = sample("biconic_time_limit_kills_total", kind="soft")
    [path] = _files(tmp_path / "in", 1, rows=2000)
    assert engine.submit(path, into=table).wait(timeout=120).state == "failed"
    assert sample("biconic_time_limit_kills_total", kind="soft") == kills + 1
    assert sample("biconic_jobs_total", outcome="timeout") == counted["timeout"] + 1
    assert sample("biconic_jobs_total", outcome="failed") == counted["failed"]


def test_a_hard_kill_counts_a_hard_kill_and_a_timed_out_job(tmp_path: Path, jobs_env: str,  # noqa: F811
                                                            table: str, counted: dict[str, float]) -> None:
    """What the worker's main process runs when the hard limit killed a partition's process."""
    from billiard.exceptions import TimeLimitExceeded

    import engine
    from engine.jobs.tasks import partition
    from engine.postgres import meta_jobs as store

    _files(tmp_path / "in", 1)
    job = engine.submit(tmp_path / "in", into=table)  # no worker: it stays queued
    request = store.get(jobs_env, job.job_id).request  # type: ignore[union-attr]
    kills = sample("biconic_time_limit_kills_total", kind="hard")
    args = (job.job_id, 0, 0, "part_000.csv", 1, request, None)
    partition.on_failure(TimeLimitExceeded(4.0), "task", args, {}, None)
    partition.on_failure(TimeLimitExceeded(4.0), "task", args, {}, None)  # its next attempt too: one job
    assert job.state == "failed"
    assert sample("biconic_time_limit_kills_total", kind="hard") == kills + 2
    assert sample("biconic_jobs_total", outcome="timeout") == counted["timeout"] + 1
    took = sample("biconic_job_duration_seconds_sum", outcome="timeout")
    assert 0 <= took < dt.timedelta(hours=1).total_seconds()
