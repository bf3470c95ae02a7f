"""``biconic top`` in a real terminal (tmux) watching a real ``biconic worker`` load a slow job: the job's id,
its rows/s, the queues and the worker answering a ping appear on screen. (Here, not in tests/test_top.py: the
worker fixtures live in this folder's conftest.)"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.jobs.conftest import Worker, biconic
from tests.jobs.test_worker_process import SLOW_RULE, SMALL_BATCHES, _csv, _tasks, _until
from tests.support import Sql

pytestmark = [pytest.mark.redis, pytest.mark.postgres]


def _tmux(socket_name: str, *args: str) -> str:
    return subprocess.run(["tmux", "-L", socket_name, *args], capture_output=True, text=True, check=True,
                          timeout=10).stdout


def _speed(screen: str, short_id: str) -> float:
    """The rows/s figure (last column) on the job's line, 0 when the line is not there yet."""
    line = next((line for line in screen.splitlines() if short_id in line), "")
    figures = re.findall(r"([0-9][0-9,]*\.[0-9])\s*│?\s*$", line)
    return float(figures[-1].replace(",", "")) if figures else 0.0


@pytest.mark.slow
def test_top_shows_a_real_workers_job_with_its_speed(
        tmp_path: Path, start_worker: Callable[..., Worker], jobs_client: str, worker_env: dict[str, str],
        sql: Sql, table: str) -> None:
    import engine

    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed")
    for i in range(3):  # several seconds each on one core, in batches of about 25 rows
        _csv(tmp_path / "in" / f"part_{i}.csv", i * 10_000, 1600, 2000)
    worker = start_worker(concurrency=1, env=SMALL_BATCHES)
    job = engine.submit(tmp_path / "in", into=table, spec=SLOW_RULE)
    _until("a partition loading", lambda: any(t["rows_in"] > 0 for t in _tasks(sql, job.job_id).values()), 60,
           worker)
    socket_name = f"biconic-top-{uuid.uuid4().hex[:8]}"
    env = " ".join(f"{k}='{v}'" for k, v in worker_env.items() if k.startswith("BICONIC_") or k == "PYTHONPATH")
    command = f"env {env} {sys.executable} -m engine top --every 0.5"
    _tmux(socket_name, "new-session", "-d", "-s", "top", "-x", "200", "-y", "50", command)
    try:
        screen, deadline = "", time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.5)  # the view refreshes on its own clock, in another process
            screen = _tmux(socket_name, "capture-pane", "-p", "-t", "top")
            if _speed(screen, job.job_id[:8]) > 0 and "workers: 1" in screen:
                break
        assert _speed(screen, job.job_id[:8]) > 0, f"no rows/s for job {job.job_id[:8]} within 30 s:\n{screen}"
        assert "workers: 1" in screen and "queues: biconic:" in screen, screen
    finally:
        subprocess.run(["tmux", "-L", socket_name, "kill-server"], capture_output=True, timeout=10, check=False)
        biconic(worker_env, "jobs", "cancel", job.job_id)  # no need to load the rest
