"""The embedded default end to end: with no DSN anywhere, `biconic load` starts PostgreSQL in the per-user data
folder, says so, and a run from another working folder (a cron job) finds the same data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _biconic(args: list[str], cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BICONIC_", "XDG_"))}
    env.update(HOME=str(home), PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=180, check=False)


def test_loads_with_no_dsn_go_to_the_embedded_server_in_the_users_data_folder(tmp_path: Path) -> None:
    home, first, second = tmp_path / "me", tmp_path / "a", tmp_path / "b"
    for folder in (home, first, second):
        folder.mkdir()
    (first / "one.csv").write_text("id,created_at\n1,2024-01-02\n2,2024-01-03\n")
    (second / "two.csv").write_text("id,created_at\n3,2024-02-02\n")
    data = home / ".local" / "share" / "biconic"

    loaded = _biconic(["load", "one.csv", "--into", "events", "--partition-by", "created_at:month"], first, home)
    assert loaded.returncode == 0, loaded.stderr
    assert f"embedded PostgreSQL in {data / 'pg'}" in loaded.stdout + loaded.stderr
    assert not (first / ".biconic").exists()  # nothing lands in the working folder

    again = _biconic(["load", "two.csv", "--into", "events", "--partition-by", "created_at:month", "--json"],
                     second, home)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout.splitlines()[-1])["database"] == f"embedded PostgreSQL in {data / 'pg'}"
    counted = _biconic(["query", "SELECT count(*) AS n FROM events", "--json"], second, home)
    assert counted.returncode == 0, counted.stderr
    assert json.loads(counted.stdout.splitlines()[-1])[0]["n"] == 3
