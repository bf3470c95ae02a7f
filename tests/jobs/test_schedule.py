"""``biconic beat``: the schedule, and one beat per deployment (a second one exits with its one-line error)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.redis, pytest.mark.postgres]


def test_the_schedule_sends_every_maintenance_job_with_the_beats_dsn() -> None:
    from engine.jobs.app import app
    from engine.jobs.schedule import SCHEDULE, beat_schedule

    schedule = beat_schedule("postgresql://wh/db")
    assert set(schedule) == set(SCHEDULE)
    for name, entry in schedule.items():
        assert entry["task"] == name and entry["args"] == ("postgresql://wh/db",)
        assert name in app.tasks  # a worker knows every task the beat sends


def test_a_second_beat_exits_with_one_line_while_the_first_runs(tmp_path: Path, pg_dsn: str) -> None:
    env = {**os.environ, "BICONIC_PG_DSN": pg_dsn, "BICONIC_BROKER_URL": "redis://127.0.0.1:6379/12",
           "BICONIC_HOME": str(tmp_path / "home")}
    log = (tmp_path / "beat1.log").open("w")
    first = subprocess.Popen([sys.executable, "-m", "engine", "beat"], env=env, stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while "beat: Starting" not in (tmp_path / "beat1.log").read_text():
            assert first.poll() is None, (tmp_path / "beat1.log").read_text()
            assert time.monotonic() < deadline, "the first beat did not start"
            time.sleep(0.2)
        second = subprocess.run([sys.executable, "-m", "engine", "beat"], env=env, capture_output=True, text=True,
                                timeout=60)
        assert second.returncode == 9
        assert "another biconic beat is running" in second.stderr
        assert "Traceback" not in second.stderr and len(second.stderr.strip().splitlines()) == 1
    finally:
        first.terminate()
        try:
            first.wait(timeout=20)
        except subprocess.TimeoutExpired:
            first.kill()
        log.close()
    third = subprocess.Popen([sys.executable, "-m", "engine", "beat"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:  # the first one gone, its lock went with it: a new beat starts
        time.sleep(5)
        assert third.poll() is None
    finally:
        third.kill()
        third.wait()
