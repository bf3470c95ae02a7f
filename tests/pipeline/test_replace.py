"""``mode: replace``: the new rows take the place of the old ones (of the table, or of one connection) in one
transaction; readers see the old rows or the new ones, never an empty table.

A test marked 'Regression (review fix N)' reproduces one defect reported in the review (commit
"Review fixes: replace scoped to the connection, ..."): it must fail if that fix is undone."""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path
from typing import Any

import engine
from engine.report import LoadReport
from tests.support import Sql, accounted, child_bounds, orders_frame, row_count


def _ledger(sql: Sql, table: str) -> list[tuple[Any, ...]]:
    """(connection_id, source file name, rows_loaded) of the table's ledger rows."""
    rows = sql("SELECT connection_id, source, rows_loaded FROM biconic.loads WHERE dataset = $1", [table])
    return sorted((r[0], Path(str(r[1]).split("#")[0].split("[")[0]).name, r[2]) for r in rows)


# --- what is replaced -------------------------------------------------------------------------------------------------
def test_replace_swaps_the_whole_table(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    old, new = tmp_path / "old.parquet", tmp_path / "new.parquet"
    orders_frame(10, start=dt.date(2024, 1, 1), step_days=3).write_parquet(old)
    orders_frame(4, start=dt.date(2025, 6, 1), step_days=1).write_parquet(new)
    engine.load(old, into=table, partition_by="created_at", dsn=pg_dsn)
    assert set(child_bounds(sql, table)) == {f"{table}_p2024_01"}
    report = engine.load(new, into=table, partition_by="created_at", mode="replace", dsn=pg_dsn)
    assert report.rows_loaded == 4
    assert report.partitions == [f"{table}_p2025_06"]
    assert row_count(sql, table) == 4
    # the old partition stays, emptied in the same transaction (dropping it would not be MVCC-safe)
    assert set(child_bounds(sql, table)) == {f"{table}_p2024_01", f"{table}_p2025_06"}
    assert row_count(sql, f"{table}_p2024_01") == 0
    index_names = {r[0] for r in sql("SELECT indexname FROM pg_indexes WHERE tablename = $1", [table])}
    assert index_names == {f"{table}_time_brin", f"{table}_conn_time_idx"}
    again = engine.load(new, into=table, partition_by="created_at", mode="replace", dsn=pg_dsn)
    assert again.rows_loaded == 0 and again.skipped_partitions == 1
    back = engine.load(old, into=table, partition_by="created_at", mode="replace", dsn=pg_dsn)
    assert back.rows_loaded == 10
    assert row_count(sql, table) == 10
    assert row_count(sql, f"{table}_p2024_01") == 10 and row_count(sql, f"{table}_p2025_06") == 0


# Regression (review fix 1): replace with a connection id replaces only that connection.
def test_replace_with_connection_id_keeps_other_connections(tmp_path: Path, pg_dsn: str, table: str,
                                                            sql: Sql) -> None:
    c7, c8, r7 = tmp_path / "c7.csv", tmp_path / "c8.csv", tmp_path / "r7.csv"
    c7.write_text("day,v\n2024-01-01,1\n2024-01-02,2\n")
    c8.write_text("day,v\n2024-01-03,8\n")
    r7.write_text("day,v\n2024-01-05,70\n")
    assert engine.load(c7, into=table, connection_id=7, dsn=pg_dsn).rows_loaded == 2
    assert engine.load(c8, into=table, connection_id=8, dsn=pg_dsn).rows_loaded == 1

    report = engine.load(r7, into=table, connection_id=7, mode="replace", dsn=pg_dsn)
    accounted(report)
    assert report.rows_loaded == 1
    rows = sql(f'SELECT connection_id, day, v FROM "{table}" ORDER BY connection_id, day')
    assert rows == [(7, dt.date(2024, 1, 5), 70), (8, dt.date(2024, 1, 3), 8)]
    assert _ledger(sql, table) == [("7", "r7.csv", 1), ("8", "c8.csv", 1)]

    again = engine.load(r7, into=table, connection_id=7, mode="replace", dsn=pg_dsn)
    assert again.rows_loaded == 0
    assert sql(f'SELECT connection_id, day, v FROM "{table}" ORDER BY connection_id, day') == rows
    assert _ledger(sql, table) == [("7", "r7.csv", 1), ("8", "c8.csv", 1)]

    # no connection id (and no connection_id column in the data): the whole table is replaced
    whole = tmp_path / "whole.csv"
    whole.write_text("day,v\n2024-02-01,100\n")
    report = engine.load(whole, into=table, mode="replace", dsn=pg_dsn)
    assert report.rows_loaded == 1
    assert sql(f'SELECT connection_id, day, v FROM "{table}"') == [(0, dt.date(2024, 2, 1), 100)]
    assert [r[1:] for r in _ledger(sql, table)] == [("whole.csv", 1)]


def test_replace_with_hash_partitions(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    orders_frame(6).write_parquet(a)
    orders_frame(3, start=dt.date(2024, 5, 1)).write_parquet(b)
    engine.load(a, into=table, partition_by="created_at", hash_partitions=2, dsn=pg_dsn)
    engine.load(b, into=table, partition_by="created_at", hash_partitions=2, mode="replace", dsn=pg_dsn)
    assert row_count(sql, table) == 3
    assert row_count(sql, f"{table}_p2024_05") == 3
    assert set(child_bounds(sql, f"{table}_p2024_05")) == {f"{table}_p2024_05_h0", f"{table}_p2024_05_h1"}


def test_replace_with_a_long_table_name(tmp_path: Path, pg_dsn: str, sql: Sql) -> None:
    """Stage and child names longer than 63 bytes are hashed; the swap must still find fresh names."""
    long = "r" * 55
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    orders_frame(3).write_parquet(a)
    orders_frame(2, start=dt.date(2024, 3, 1)).write_parquet(b)
    engine.load(a, into=long, partition_by="created_at", dsn=pg_dsn)
    engine.load(b, into=long, partition_by="created_at", mode="replace", dsn=pg_dsn)
    assert row_count(sql, long) == 2


# --- what readers see -------------------------------------------------------------------------------------------------
def test_replace_reader_queued_behind_the_swap_sees_old_or_new(tmp_path: Path, pg_dsn: str, table: str,
                                                               sql: Sql) -> None:
    """A reader that arrives while the swap holds its lock must see the old rows or the new ones, never an
    empty table. Made deterministic: a transaction holding a read lock keeps the swap waiting, a second
    reader queues behind the swap, then the first lets go."""
    import adbc_driver_postgresql.dbapi as pgdbapi

    old, new = tmp_path / "old.parquet", tmp_path / "new.parquet"
    orders_frame(300, step_days=1).write_parquet(old)
    orders_frame(200, start=dt.date(2025, 1, 1), step_days=1).write_parquet(new)
    engine.load(old, into=table, partition_by="created_at", dsn=pg_dsn)
    holder = pgdbapi.connect(pg_dsn)  # a transaction holding AccessShareLock on the table
    with holder.cursor() as cur:
        cur.execute(f'SELECT count(*) FROM "{table}"')
        cur.fetchall()
    results: dict[str, Any] = {}

    def replace() -> None:
        try:
            results["replace"] = engine.load(new, into=table, partition_by="created_at", mode="replace",
                                             dsn=pg_dsn)
        except BaseException as exc:  # noqa: BLE001 - recorded for the assert
            results["replace"] = exc

    def read() -> None:
        conn = pgdbapi.connect(pg_dsn, autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute(f'SELECT count(*) FROM "{table}"')
                results["count"] = int(cur.fetchall()[0][0])
        except BaseException as exc:  # noqa: BLE001 - recorded for the assert
            results["count"] = exc
        finally:
            conn.close()

    def lock_waiters() -> int:
        return int(sql("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND wait_event_type = 'Lock'")[0][0])

    def wait_for(n: int) -> None:
        deadline = time.monotonic() + 30
        while lock_waiters() < n and time.monotonic() < deadline and "replace" not in results:
            time.sleep(0.02)

    swapper = threading.Thread(target=replace)
    reader = threading.Thread(target=read)
    try:
        swapper.start()
        wait_for(1)  # the swap waits for the holder's lock
        reader.start()
        wait_for(2)  # the reader queues behind the swap
    finally:
        holder.commit()
        holder.close()
        swapper.join()
        if reader.is_alive() or reader.ident is not None:
            reader.join()
    assert isinstance(results["replace"], LoadReport)
    assert results["count"] in (300, 200)
    assert row_count(sql, table) == 200


def test_replace_never_shows_readers_an_empty_table(tmp_path: Path, pg_dsn: str, table: str) -> None:
    """Readers polling while replace swaps tables, ten times over: each count is the old or the new table's.

    A reader whose statement snapshot is taken just before the swap commits, but whose name lookup runs just
    after, finds the new table with rows its snapshot cannot see: it counts 0. Seen a few times per ten
    swaps with four readers."""
    import adbc_driver_postgresql.dbapi as pgdbapi

    old, new = tmp_path / "old.parquet", tmp_path / "new.parquet"
    orders_frame(30, step_days=0).write_parquet(old)
    orders_frame(20, start=dt.date(2025, 1, 1), step_days=0).write_parquet(new)
    engine.load(old, into=table, partition_by="created_at", dsn=pg_dsn)
    seen: list[int] = []
    errors: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        conn = pgdbapi.connect(pg_dsn, autocommit=True)
        try:
            while not stop.is_set():
                try:
                    with conn.cursor() as cur:
                        cur.execute(f'SELECT count(*) FROM "{table}"')
                        seen.append(int(cur.fetchall()[0][0]))
                except Exception as exc:  # noqa: BLE001 - any error is a failure, recorded for the assert
                    errors.append(str(exc).splitlines()[0])
        finally:
            conn.close()

    readers = [threading.Thread(target=reader) for _ in range(4)]
    for t in readers:
        t.start()
    try:
        for i in range(10):
            engine.load(new if i % 2 == 0 else old, into=table, partition_by="created_at", mode="replace",
                        dsn=pg_dsn)
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert not errors
    assert {30, 20} <= set(seen)
    assert set(seen) == {30, 20}, f"readers saw {sorted(set(seen))}: {seen.count(0)} empty reads"


def test_a_commit_that_attaches_children_locks_out_readers_planned_before_it(
        tmp_path: Path, pg_dsn: str, table: str, sql: Sql, monkeypatch: Any) -> None:
    """The race above, made certain: at the moment a replace (or an append) commits new children, the table is
    locked against readers, so none can plan with the old children and count with the new snapshot."""
    from engine.postgres.connection import Session

    old, new = tmp_path / "old.parquet", tmp_path / "new.parquet"
    orders_frame(30, step_days=0).write_parquet(old)
    orders_frame(20, start=dt.date(2025, 1, 1), step_days=0).write_parquet(new)
    engine.load(old, into=table, partition_by="created_at", dsn=pg_dsn)
    locked_at_commit: list[bool] = []
    real_commit = Session.commit

    def commit(self: Session, conn: Any = None) -> None:
        if conn is None:
            held = sql("SELECT count(*) FROM pg_locks WHERE relation = to_regclass($1) "
                       "AND mode = 'AccessExclusiveLock' AND granted", [table])
            locked_at_commit.append(held[0][0] > 0)
        real_commit(self, conn)

    monkeypatch.setattr(Session, "commit", commit)
    engine.load(new, into=table, partition_by="created_at", mode="replace", dsn=pg_dsn)
    assert True in locked_at_commit, "the replace committed its new child with readers let in"
    locked_at_commit.clear()
    engine.load(new, into=table, partition_by="created_at", mode="replace", dsn=pg_dsn)  # no new child: no lock
    assert True not in locked_at_commit
    assert row_count(sql, table) == 20
