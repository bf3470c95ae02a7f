"""kill -9 of a load in progress: nothing partial is visible, and a re-run completes with no loss or duplicates."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

FILES, ROWS = 4, 150_000


def _write_files(folder: Path) -> None:
    folder.mkdir()
    for f in range(FILES):
        n = ROWS
        start = f * n
        pl.DataFrame({
            "id": pl.int_range(start, start + n, eager=True),
            "created_at": pl.datetime_range(dt.datetime(2026, 1, 1),
                                            dt.datetime(2026, 1, 1) + dt.timedelta(minutes=n - 1), "1m", eager=True),
            "amount": pl.int_range(0, n, eager=True).cast(pl.Float64) / 7,
        }).with_columns(name=pl.format("name {}", pl.col("id"))).write_csv(folder / f"part_{f}.csv")


def _start(folder: Path, table: str, dsn: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "BICONIC_BATCH_ROWS": "10000"}
    return subprocess.Popen([sys.executable, "-m", "engine", "load", str(folder), "--into", table, "--dsn", dsn,
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def _committed(sql, table: str) -> int:  # type: ignore[no-untyped-def]
    if not sql("SELECT to_regclass('biconic.loads')")[0][0]:
        return 0
    rows = sql("SELECT count(*) FROM biconic.loads WHERE dataset = $1 AND state = 'committed'", [table])
    return int(rows[0][0])


def _visible(sql, table: str) -> int:  # type: ignore[no-untyped-def]
    if not sql("SELECT to_regclass($1)", [table])[0][0]:
        return 0
    return int(sql(f'SELECT count(*) FROM "{table}"')[0][0])


@pytest.mark.slow
@pytest.mark.parametrize("after_partitions", [0, 1, 2])
def test_kill_9_mid_load_then_rerun(tmp_path: Path, pg_dsn: str, table: str, sql, after_partitions: int) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "in"
    _write_files(folder)
    proc = _start(folder, table, pg_dsn)
    deadline = time.monotonic() + 120
    try:
        # wait until the wanted number of partitions committed and the next one is streaming
        while time.monotonic() < deadline and proc.poll() is None:
            if _committed(sql, table) >= after_partitions and _visible_or_streaming(sql):
                break
            time.sleep(0.05)
        time.sleep(0.3)
        assert proc.poll() is None, "the load finished before it could be killed; make the input larger"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    committed = _committed(sql, table)
    visible = _visible(sql, table)
    assert committed < FILES
    assert visible == committed * ROWS, "rows of an uncommitted partition are visible"

    rerun = _start(folder, table, pg_dsn)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err.decode()
    report = json.loads(out)
    assert report["skipped_partitions"] == committed
    assert report["rows_loaded"] == (FILES - committed) * ROWS
    assert _visible(sql, table) == FILES * ROWS
    distinct = sql(f'SELECT count(DISTINCT id) FROM "{table}"')[0][0]
    assert distinct == FILES * ROWS


def _visible_or_streaming(sql) -> bool:  # type: ignore[no-untyped-def]
    """True once some backend is running a COPY (the load is mid-partition)."""
    rows = sql("SELECT count(*) FROM pg_stat_activity WHERE query ILIKE 'COPY %' AND state = 'active'")
    return int(rows[0][0]) > 0
