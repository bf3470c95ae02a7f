"""``biconic top``: one frame of a running job read from the real jobs tables, the speed between two
refreshes, and the live view in a real terminal (tmux) quitting cleanly on Ctrl-C."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli import cli
from engine.postgres import meta_jobs as store

ROOT = Path(__file__).resolve().parent.parent


def _running_job(dsn: str, rows: int) -> str:
    """A job that a worker would have started: running, two partitions planned, the first at ``rows``."""
    job_id = store.create(dsn, kind="load", request={"source": "/data/orders.csv", "into": "orders"},
                          connection_id="42", dataset="orders", stages=1)
    assert store.set_state(dsn, job_id, "running")
    store.plan_tasks(dsn, job_id, 0, [(0, "orders.csv#0", "task-0"), (1, "orders.csv#1", "task-1")])
    store.start_task(dsn, job_id, 0, 0)
    store.task_progress(dsn, job_id, 0, 0, rows)
    return job_id


def test_once_prints_the_running_job_with_its_progress(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "160")
    monkeypatch.delenv("BICONIC_BROKER_URL", raising=False)
    monkeypatch.delenv("BICONIC_REDIS_URL", raising=False)
    job_id = _running_job(pg_dsn, 1234)
    result = CliRunner().invoke(cli, ["top", "--once", "--dsn", pg_dsn])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if job_id[:8] in line)
    for shown in ("42", "orders", "running", "0/2 partitions", "1,234"):
        assert shown in line, (shown, line)
    assert "queues: no broker configured" in result.output


def test_rows_per_second_come_from_two_refreshes(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.top import Watcher

    monkeypatch.delenv("BICONIC_BROKER_URL", raising=False)
    monkeypatch.delenv("BICONIC_REDIS_URL", raising=False)
    job_id = _running_job(pg_dsn, 100)
    watcher = Watcher(pg_dsn, with_workers=False)
    first = next(j for j in watcher.frame().jobs if job_id.startswith(j.job_id))
    store.task_progress(pg_dsn, job_id, 0, 0, 100_100)
    second = next(j for j in watcher.frame().jobs if job_id.startswith(j.job_id))
    assert (first.rows, second.rows) == (100, 100_100)
    assert second.rows_per_s > 0 and second.rows_per_s != first.rows_per_s


def _tmux(socket_name: str, *args: str) -> str:
    return subprocess.run(["tmux", "-L", socket_name, *args], capture_output=True, text=True, check=True,
                          timeout=10).stdout


@pytest.mark.slow
def test_top_refreshes_live_in_a_terminal_and_quits_on_ctrl_c(pg_dsn: str, tmp_path: Path) -> None:
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed")
    job_id = _running_job(pg_dsn, 0)
    socket_name, session = f"biconic-top-{uuid.uuid4().hex[:8]}", "top"
    command = (f"env -u BICONIC_BROKER_URL -u BICONIC_REDIS_URL PYTHONPATH={ROOT} BICONIC_HOME={tmp_path} "
               f"{sys.executable} -m engine top --every 0.5 --dsn '{pg_dsn}'; echo biconic-top-exit=$?")
    _tmux(socket_name, "new-session", "-d", "-s", session, "-x", "200", "-y", "50", command)
    try:
        _tmux(socket_name, "set-option", "-t", session, "remain-on-exit", "on")
        screen, rows, speed = "", 0, 0.0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and speed <= 0:
            rows += 5000
            store.task_progress(pg_dsn, job_id, 0, 0, rows)
            time.sleep(0.5)  # the view refreshes on its own clock, in another process
            screen = _tmux(socket_name, "capture-pane", "-p", "-t", session)
            line = next((line for line in screen.splitlines() if job_id[:8] in line), "")
            figures = re.findall(r"([0-9][0-9,]*\.[0-9])\s*│?\s*$", line)
            speed = float(figures[-1].replace(",", "")) if figures else 0.0
        assert speed > 0, f"no rows/s for job {job_id[:8]} within 30 s:\n{screen}"
        _tmux(socket_name, "send-keys", "-t", session, "C-c")
        deadline = time.monotonic() + 10  # the shell prints the exit status (tmux's own is not reliable)
        while "biconic-top-exit=" not in (after := _tmux(socket_name, "capture-pane", "-p", "-t", session,
                                                         "-S", "-200")):
            assert time.monotonic() < deadline, "biconic top did not quit on Ctrl-C"
            time.sleep(0.1)
        assert "Traceback" not in after and "KeyboardInterrupt" not in after, after
        assert "biconic-top-exit=0" in after, after[-2000:]
    finally:
        subprocess.run(["tmux", "-L", socket_name, "kill-server"], capture_output=True, timeout=10, check=False)
