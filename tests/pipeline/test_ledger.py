"""The ledger makes loads effectively once: a re-run adds nothing, a changed file or another connection or spec
is a new load, concurrent loads of one file load it once, each file commits on its own, and ``public.T`` and
``T`` are one table.

A test marked 'Regression (review fix N)' reproduces one defect reported in the review (commit
"Review fixes: replace scoped to the connection, ..."): it must fail if that fix is undone."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import engine
from engine.errors import PartialLoadError, SourceError
from engine.report import LoadReport
from tests.support import Sql, orders_frame, row_count


def test_rerun_adds_nothing(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    path = tmp_path / "o.csv"
    orders_frame(12).write_csv(path)
    first = engine.load(path, into=table, partition_by="created_at", connection_id=1, dsn=pg_dsn)
    assert first.rows_loaded == 12 and first.skipped_partitions == 0
    again = engine.load(path, into=table, partition_by="created_at", connection_id=1, dsn=pg_dsn)
    assert again.rows_loaded == 0
    assert again.skipped_partitions == 1
    assert again.rows_in == 0
    assert row_count(sql, table) == 12
    ledger = sql("SELECT state, rows_in, rows_loaded, rows_quarantined, rows_filtered, connection_id, mode "
                 "FROM biconic.loads WHERE dataset = $1", [table])
    assert ledger == [("committed", 12, 12, 0, 0, "1", "append")]


def test_a_changed_file_loads_again(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    path = tmp_path / "o.csv"
    orders_frame(5).write_csv(path)
    engine.load(path, into=table, partition_by="created_at", dsn=pg_dsn)
    orders_frame(8).write_csv(path)
    again = engine.load(path, into=table, partition_by="created_at", dsn=pg_dsn)
    assert again.rows_loaded == 8 and again.skipped_partitions == 0
    assert row_count(sql, table) == 13  # append mode: the new version is added
    assert len(sql("SELECT 1 FROM biconic.loads WHERE dataset = $1", [table])) == 2


def test_another_connection_or_spec_is_another_load(tmp_path: Path, pg_dsn: str, table: str,
                                                    sql: Sql) -> None:
    path = tmp_path / "o.parquet"
    orders_frame(4).write_parquet(path)
    engine.load(path, into=table, partition_by="created_at", connection_id=1, dsn=pg_dsn)
    other = engine.load(path, into=table, partition_by="created_at", connection_id=2, dsn=pg_dsn)
    assert other.rows_loaded == 4
    filtered = engine.load(path, into=table, partition_by="created_at", connection_id=1, dsn=pg_dsn,
                           spec={"steps": [{"filter": "amount > 2"}]})
    assert filtered.skipped_partitions == 0
    assert (filtered.rows_loaded, filtered.rows_filtered) == (2, 2)
    assert sql(f'SELECT connection_id, count(*) FROM "{table}" GROUP BY 1 ORDER BY 1') == [(1, 6), (2, 4)]


def test_concurrent_loads_of_the_same_file_load_it_once(tmp_path: Path, pg_dsn: str, table: str,
                                                        sql: Sql) -> None:
    path = tmp_path / "o.parquet"
    orders_frame(2000, step_days=0).write_parquet(path)
    reports: list[LoadReport] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            reports.append(engine.load(path, into=table, partition_by="created_at", dsn=pg_dsn))
        except BaseException as exc:  # noqa: BLE001 - recorded for the assert
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(r.rows_loaded for r in reports) == [0, 0, 2000]
    assert sum(r.skipped_partitions for r in reports) == 2
    assert row_count(sql, table) == 2000


def test_a_file_that_breaks_mid_stream_commits_nothing(tmp_path: Path, pg_dsn: str, table: str,
                                                       sql: Sql) -> None:
    good, ragged, later = tmp_path / "a_good.csv", tmp_path / "b_ragged.csv", tmp_path / "c_good.csv"
    good.write_text("id,day\n1,2024-01-01\n")
    ragged.write_text("id,day\n2,2024-01-02\n3,2024-01-03,surprise,extra\n")
    later.write_text("id,day\n4,2024-01-04\n")
    with pytest.raises(PartialLoadError, match="1 of 3 source partitions failed") as info:
        engine.load(tmp_path, into=table, dsn=pg_dsn)
    (label, error), = info.value.failures
    assert label == "b_ragged.csv" and isinstance(error, SourceError) and info.value.exit_code == 3
    # the files before and after committed on their own; the report says what happened to each
    assert sql(f'SELECT id FROM "{table}" ORDER BY id') == [(1,), (4,)]
    assert sorted(sql("SELECT source FROM biconic.loads WHERE dataset = $1", [table])) == [("a_good.csv",),
                                                                                           ("c_good.csv",)]
    report = info.value.report
    assert [(d.source, d.status, d.rows_loaded) for d in report.source_details] == [
        ("a_good.csv", "loaded", 1), ("b_ragged.csv", "failed", 0), ("c_good.csv", "loaded", 1)]
    assert report.source_details[1].error is not None and report.source_details[1].error.startswith("row 3")
    ragged.write_text("id,day\n2,2024-01-02\n3,2024-01-03\n")  # fixed: the re-run loads only it
    again = engine.load(tmp_path, into=table, dsn=pg_dsn)
    assert (again.rows_loaded, again.skipped_partitions, again.failed_partitions) == (2, 2, 0)


def test_a_single_failing_partition_raises_its_own_error(tmp_path: Path, pg_dsn: str, table: str) -> None:
    (tmp_path / "ragged.csv").write_text("id,day\n3,2024-01-03,surprise,extra\n")
    with pytest.raises(SourceError):
        engine.load(tmp_path / "ragged.csv", into=table, dsn=pg_dsn)


# Regression (review fix 2): public.T and T share one ledger.
def test_public_schema_spelling_shares_the_ledger(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    path = tmp_path / "a.csv"
    path.write_text("day,v\n2024-01-01,1\n2024-01-02,2\n")
    first = engine.load(path, into=f"public.{table}", dsn=pg_dsn)
    assert first.rows_loaded == 2
    second = engine.load(path, into=table, dsn=pg_dsn)
    assert (second.rows_loaded, second.skipped_partitions) == (0, 1)
    third = engine.load(path, into=f"public.{table}", dsn=pg_dsn)
    assert (third.rows_loaded, third.skipped_partitions) == (0, 1)
    assert row_count(sql, table) == 2
    assert len(sql("SELECT 1 FROM biconic.loads WHERE dataset IN ($1, $2)", [table, f"public.{table}"])) == 1
