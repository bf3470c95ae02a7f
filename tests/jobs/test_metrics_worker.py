"""``biconic worker --metrics-port``: a real worker (spawned pool) runs a real import, and its main process's
``/metrics`` shows what the pool's child counted (the shared multiprocess folder), the broker's queues as the
autoscaler reads them, the pool's size; a child killed with -9 stops counting as running."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import polars as pl
import pytest

from tests.jobs.conftest import READY_TIMEOUT, Worker, biconic
from tests.service.conftest import free_port

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    """Every sample of the worker's ``/metrics``: (name, labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    answer = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(answer.text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def until(what: str, check: Callable[[], object], timeout: float, worker: Worker) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not after {timeout:g} s\n{worker.tail()}")
        time.sleep(0.2)


def run_import(tmp_path: Path, worker_env: dict[str, str], table: str, worker: Worker, rows: int = 50) -> str:
    """Submit a small CSV through the CLI and wait until the job is done; its id."""
    from engine.jobs.client import Job

    path = tmp_path / "small.csv"
    pl.DataFrame({"id": range(rows), "v": ["x"] * rows}).write_csv(path)
    submitted = biconic(worker_env, "submit", str(path), "--into", table, "--json")
    assert submitted.returncode == 0, submitted.stderr
    job = Job(json.loads(submitted.stdout)["job_id"], worker_env["BICONIC_PG_DSN"])
    until("the job finished", lambda: job.state in ("done", "failed", "cancelled"), 90, worker)
    assert job.state == "done", job.status()
    return job.job_id


def test_the_worker_shows_what_its_pool_counted_and_forgets_a_killed_child(
        tmp_path: Path, start_worker: Callable[..., Worker], worker_env: dict[str, str], table: str) -> None:
    port = free_port()
    worker = start_worker(concurrency=1, args=("--metrics-port", str(port)))
    folder = Path(worker_env["BICONIC_HOME"]) / "metrics" / f"worker-{worker.proc.pid}"
    assert value(scrape(port), "biconic_jobs_total", outcome="succeeded") is None  # nothing finished yet
    run_import(tmp_path, worker_env, table, worker)
    until("the job counted", lambda: value(scrape(port), "biconic_jobs_total", outcome="succeeded") == 1, 10,
          worker)
    samples = scrape(port)
    assert value(samples, "biconic_job_duration_seconds_count", outcome="succeeded") == 1
    [child] = worker.children()
    assert list(folder.glob(f"*_{child}.db")), "the pool's child recorded nothing in the shared folder"
    assert value(samples, "biconic_running_jobs", connection="") == 0  # raised, then lowered, by the child
    assert value(samples, "biconic_rows_loaded_total", mode="append") == 50  # counted by the child's load
    assert value(samples, "biconic_queue_depth", queue="biconic") == 0
    assert value(samples, "biconic_queue_depth", queue="biconic.control") == 0
    assert (value(samples, "biconic_workers") or 0) >= 1
    # a child killed without a word: its live gauge is dropped at the next scrape, its counts stay
    os.kill(child, signal.SIGKILL)
    until("a new pool process", lambda: worker.children() and worker.children() != [child], READY_TIMEOUT, worker)
    samples = scrape(port)
    assert not list(folder.glob(f"gauge_live*_{child}.db"))
    assert value(samples, "biconic_jobs_total", outcome="succeeded") == 1
    assert worker.alive()
