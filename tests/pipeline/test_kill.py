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
from typing import Any

import polars as pl
import pytest

import engine

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


def _killed_run(dsn: str, table: str) -> dict[str, Any]:
    """The killed load's run, once PostgreSQL has seen its connection go (it shows ``running`` until then)."""
    deadline = time.monotonic() + 30
    while True:
        [run] = engine.loads(table, dsn=dsn)
        if run["outcome"] != "running" or time.monotonic() > deadline:
            assert run["outcome"] == "killed", run
            return run
        time.sleep(0.1)


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
    killed = _killed_run(pg_dsn, table)
    assert "its process was killed" in killed["error"]

    rerun = _start(folder, table, pg_dsn)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err.decode()
    outcomes = {r["load_id"]: r["outcome"] for r in engine.loads(table, dsn=pg_dsn)}
    assert outcomes == {killed["load_id"]: "killed", json.loads(out)["load_id"]: "succeeded"}
    report = json.loads(out)
    assert report["skipped_partitions"] == committed
    assert report["rows_loaded"] == (FILES - committed) * ROWS
    assert _visible(sql, table) == FILES * ROWS
    distinct = sql(f'SELECT count(DISTINCT id) FROM "{table}"')[0][0]
    assert distinct == FILES * ROWS


def _visible_or_streaming(sql) -> bool:  # type: ignore[no-untyped-def]
    """True once a backend of the test database is running a COPY (the load is mid-partition). Not this query's
    own backend: ADBC runs a SELECT as ``COPY (SELECT ...) TO STDOUT``, so it matched itself at once, and the
    load was killed before it began; nor other sessions' loads on the server."""
    rows = sql("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
               "AND query ILIKE 'COPY %' AND state = 'active'")
    return int(rows[0][0]) > 0


# --- kill -9 right after the helper connections committed the new children ------------------------------------
#: a load whose helpers, once they committed, say STAGED and wait for a line on stdin (the test kills it there,
#: or lets it go on)
_STAGED_SCRIPT = """
import sys
import engine.postgres.staging as staging
from engine.cli import main

finish = staging.FreshChildren.finish
def paused(self):
    finish(self)
    print("STAGED", flush=True)
    sys.stdin.readline()
staging.FreshChildren.finish = paused
main()
"""


def _month_file(path: Path, month: int, first_id: int, rows: int = 20_000) -> Path:
    pl.DataFrame({"id": pl.int_range(first_id, first_id + rows, eager=True),
                  "created_at": [dt.datetime(2026, month, 1 + i % 27, 10) for i in range(rows)]}).write_csv(path)
    return path


def _staged_load(path: Path, table: str, dsn: str) -> subprocess.Popen[str]:
    env = {**os.environ, "BICONIC_COPY_STREAMS": "2", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-c", _STAGED_SCRIPT, "load", str(path), "--into", table,
                             "--partition-by", "created_at:month", "--dsn", dsn, "--archive", "off", "--json"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "STAGED":
        proc.kill()
        raise AssertionError(f"the load ended before its helpers committed: {line}{proc.communicate()[1]}")
    return proc


def _staged(sql) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """The staged tables (top level) and their rows."""
    names = [r[0] for r in sql("SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                               "WHERE n.nspname = 'biconic_stage' AND c.relkind IN ('r', 'p') "
                               "AND NOT c.relispartition")]
    return {n: int(sql(f'SELECT count(*) FROM biconic_stage."{n}"')[0][0]) for n in names}


def test_kill_9_after_the_helpers_committed_leaves_nothing_beside_the_table(tmp_path: Path, pg_dsn: str, table: str,  # type: ignore[no-untyped-def]
                                                                            sql) -> None:
    import engine

    engine.load(_month_file(tmp_path / "jan.csv", 1, 0), into=table, partition_by="created_at:month", dsn=pg_dsn,
                archive=False)
    killed = _staged_load(_month_file(tmp_path / "feb.csv", 2, 100_000), table, pg_dsn)
    os.kill(killed.pid, signal.SIGKILL)
    killed.communicate(timeout=30)
    # nothing but the table itself (and its attached children) in the user's schema; the rows wait in the stage
    beside = sql("SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relname LIKE $1 "
                 "AND relkind IN ('r', 'p') AND NOT relispartition", [f"{table}%"])
    assert beside == [(table,)]
    dead = _staged(sql)
    assert sum(dead.values()) == 20_000
    # a live load of the same table, paused with its children staged: a sweep must leave them alone
    live = _staged_load(_month_file(tmp_path / "mar.csv", 3, 200_000), table, pg_dsn)
    try:
        alive = {n: rows for n, rows in _staged(sql).items() if n not in dead}
        assert sum(alive.values()) == 20_000
        # the next load of the dataset, another period, sweeps the dead load's tables first
        engine.load(_month_file(tmp_path / "apr.csv", 4, 300_000), into=table, partition_by="created_at:month",
                    dsn=pg_dsn, archive=False)
        assert _staged(sql) == alive
        out, err = live.communicate("\n", timeout=120)
        assert live.returncode == 0, err
    finally:
        if live.poll() is None:
            live.kill()
    assert _staged(sql) == {}
    assert sql(f'SELECT count(*), count(DISTINCT id) FROM "{table}"') == [(60_000, 60_000)]
    # the killed month loads again, whole
    engine.load(tmp_path / "feb.csv", into=table, partition_by="created_at:month", dsn=pg_dsn, archive=False)
    assert sql(f'SELECT count(*), count(DISTINCT id) FROM "{table}"') == [(80_000, 80_000)]


# --- kill -9 of a replace that COPYed its rows: the re-run vacuums what the killed attempt left -----------------
#: a replace that, with every row COPYed and not committed, says COPIED and waits (the test kills it there)
_COPIED_SCRIPT = """
import sys
import engine.postgres.meta as meta
from engine.cli import main

def paused(*a, **k):
    print("COPIED", flush=True)
    sys.stdin.readline()
meta.bump_version = paused
main()
"""


def _dead_tuples(sql, table: str) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Each partition's dead tuples as the heap holds them (pgstattuple reads the pages: nothing asynchronous)."""
    return {r[0]: int(r[1]) for r in sql(
        "SELECT c.relname, (pgstattuple(c.oid)).dead_tuple_count FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass($1)", [table])}


def _size(sql, table: str) -> int:  # type: ignore[no-untyped-def]
    """The bytes of the table's partitions' heaps."""
    return int(sql("SELECT sum(pg_relation_size(inhrelid))::bigint FROM pg_inherits "
                   "WHERE inhparent = to_regclass($1)", [table])[0][0])


def test_rerun_of_a_killed_replace_vacuums_the_rows_it_left(tmp_path: Path, pg_dsn: str, table: str, sql) -> None:  # type: ignore[no-untyped-def]
    import engine

    rows = 30_000
    sql("CREATE EXTENSION IF NOT EXISTS pgstattuple")
    old = pl.concat([pl.read_csv(_month_file(tmp_path / f"old{m}.csv", m, m * rows, rows)) for m in (1, 2)])
    old.write_csv(tmp_path / "old.csv")
    engine.load(tmp_path / "old.csv", into=table, partition_by="created_at:month", dsn=pg_dsn, archive=False)
    new = old.with_columns(pl.col("id") + 1_000_000)
    new.write_csv(tmp_path / "new.csv")
    proc = subprocess.Popen([sys.executable, "-c", _COPIED_SCRIPT, "load", str(tmp_path / "new.csv"), "--into", table,
                             "--partition-by", "created_at:month", "--mode", "replace", "--dsn", pg_dsn,
                             "--archive", "off"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "COPIED", proc.communicate()[1]
    loading = [r[0] for r in sql("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                 "AND state = 'idle in transaction' AND pid <> pg_backend_pid()")]
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    for pid in loading:  # wait (server side) until its backend has aborted and reported its dead tuples
        sql("SELECT pg_terminate_backend($1::int, 30000::bigint)", [pid])
    killed = _dead_tuples(sql, table)
    assert sorted(killed.values()) == [rows, rows]  # the killed attempt's COPYed rows, dead
    size = _size(sql, table)
    vacuums = sql("SELECT sum(pg_stat_get_vacuum_count(inhrelid))::bigint FROM pg_inherits "
                  "WHERE inhparent = to_regclass($1)", [table])[0][0]

    report = engine.load(tmp_path / "new.csv", into=table, partition_by="created_at:month", mode="replace",
                         dsn=pg_dsn, archive=False)
    assert report.rows_loaded == 2 * rows
    assert sql(f'SELECT count(*), min(id) FROM "{table}"') == [(2 * rows, 1_000_000 + rows)]
    # the re-run vacuumed both partitions first, and its rows took the space the killed attempt's held: the
    # table did not grow (without the vacuum it grows by another copy of the rows)
    assert sql("SELECT sum(pg_stat_get_vacuum_count(inhrelid))::bigint FROM pg_inherits "
               "WHERE inhparent = to_regclass($1)", [table])[0][0] == vacuums + 2
    assert _size(sql, table) <= size
