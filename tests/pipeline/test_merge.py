"""``mode: merge``: upserts on the key, per connection, across hash partitions and time partitions; null keys
are quarantined, and a table that cannot take the key keeps PostgreSQL's own words.

A test marked 'Regression (review fix N)' reproduces one defect reported in the review (commit
"Review fixes: replace scoped to the connection, ..."): it must fail if that fix is undone."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

import engine
from engine.errors import SinkError
from tests.support import Sql, accounted, quarantine_rows, row_count


def test_merge_upserts_on_key(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    first, second = tmp_path / "m1.parquet", tmp_path / "m2.parquet"
    jan = dt.datetime(2024, 1, 5)
    pl.DataFrame({"k": [1, 2, 3], "ts": [jan] * 3, "v": ["a", "b", "c"]}).write_parquet(first)
    pl.DataFrame({"k": [2, 3, 4, 4], "ts": [jan, dt.datetime(2024, 3, 1), dt.datetime(2024, 2, 2),
                                             dt.datetime(2024, 2, 3)],
                  "v": ["B", "C", "D0", "D"]}).write_parquet(second)
    engine.load(first, into=table, partition_by="ts", mode="merge", key="k", connection_id=1, dsn=pg_dsn)
    report = engine.load(second, into=table, partition_by="ts", mode="merge", key="k", connection_id=1,
                         dsn=pg_dsn)
    accounted(report)
    assert (report.rows_in, report.rows_loaded, report.rows_filtered) == (4, 3, 1)  # k=4 twice: last wins
    rows = sql(f'SELECT k, ts, v FROM "{table}" ORDER BY k')
    assert rows == [(1, jan, "a"), (2, jan, "B"), (3, dt.datetime(2024, 3, 1), "C"),
                    (4, dt.datetime(2024, 2, 3), "D")]
    # the key that moved from January to March is there once
    assert sql(f'SELECT count(*) FROM "{table}" WHERE k = 3')[0][0] == 1
    # merging the same file again changes nothing
    again = engine.load(second, into=table, partition_by="ts", mode="merge", key="k", connection_id=1,
                        dsn=pg_dsn)
    assert again.skipped_partitions == 1
    assert row_count(sql, table) == 4


def test_merge_keys_are_per_connection(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    path = tmp_path / "m.parquet"
    pl.DataFrame({"k": [1], "ts": [dt.date(2024, 1, 1)], "v": [10]}).write_parquet(path)
    engine.load(path, into=table, mode="merge", key=["k"], connection_id=1, dsn=pg_dsn)
    engine.load(path, into=table, mode="merge", key=["k"], connection_id=2, dsn=pg_dsn)
    assert sql(f'SELECT connection_id, k FROM "{table}" ORDER BY 1') == [(1, 1), (2, 1)]


def test_merge_keys_per_connection_from_the_file(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    """Without --connection the rows carry their own connection_id: the same key under two connections is
    two rows, not a duplicate to drop."""
    path = tmp_path / "m.parquet"
    pl.DataFrame({"k": [1, 1], "connection_id": [1, 2], "ts": [dt.date(2024, 1, 1)] * 2,
                  "v": ["a", "b"]}).write_parquet(path)
    report = engine.load(path, into=table, mode="merge", key="k", dsn=pg_dsn)
    assert (report.rows_loaded, report.rows_filtered) == (2, 0)
    assert sql(f'SELECT connection_id, k, v FROM "{table}" ORDER BY 1') == [(1, 1, "a"), (2, 1, "b")]


def test_merge_with_hash_partitions_and_the_time_in_the_key(tmp_path: Path, pg_dsn: str, table: str,
                                                            sql: Sql) -> None:
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pl.DataFrame({"k": [1, 2], "ts": [dt.date(2024, 1, 1)] * 2, "v": ["a", "b"]}).write_parquet(a)
    pl.DataFrame({"k": [1, 2], "ts": [dt.date(2024, 1, 1), dt.date(2024, 5, 1)],
                  "v": ["A", "B"]}).write_parquet(b)
    for path in (a, b):
        engine.load(path, into=table, mode="merge", key=["k", "ts"], hash_partitions=3, connection_id=4,
                    dsn=pg_dsn)
    assert sql(f'SELECT k, ts, v FROM "{table}" ORDER BY 1, 2') == [
        (1, dt.date(2024, 1, 1), "A"), (2, dt.date(2024, 1, 1), "b"), (2, dt.date(2024, 5, 1), "B")]


def test_merge_null_keys_are_quarantined(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    path = tmp_path / "m.csv"
    path.write_text("k,day,v\n1,2024-01-01,a\n,2024-01-02,b\n")
    report = engine.load(path, into=table, mode="merge", key="k", dsn=pg_dsn)
    assert (report.rows_loaded, report.rows_quarantined) == (1, 1)
    assert report.quarantine_by_rule == {"not_null": 1}


def test_merge_with_a_not_null_rule_on_the_key_gives_the_reason_once(tmp_path: Path, pg_dsn: str, table: str,
                                                                    sql: Sql) -> None:
    path = tmp_path / "m.csv"
    path.write_text("k,j,day,v\n1,1,2024-01-01,a\n,,2024-01-02,b\n")
    report = engine.load(path, into=table, mode="merge", key=["k", "j"], dsn=pg_dsn,
                         spec={"rules": [{"not_null": ["k", "v"]}]})
    assert (report.rows_loaded, report.rows_quarantined) == (1, 1)
    [row] = quarantine_rows(sql, table)
    reasons = row["reason"].split("; ")
    assert len(reasons) == len(set(reasons)) == 2, row["reason"]  # k once (not twice), j once


def test_merge_on_a_key_whose_name_is_normalised(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    """The key is named as in the source ('OrderID'); the table column is 'orderid'."""
    path = tmp_path / "m.parquet"
    pl.DataFrame({"OrderID": [1, 2], "Fecha": [dt.date(2024, 1, 1)] * 2, "v": [1, 2]}).write_parquet(path)
    engine.load(path, into=table, mode="merge", key="OrderID", partition_by="Fecha", dsn=pg_dsn)
    engine.load(path, into=table, mode="merge", key="OrderID", partition_by="Fecha", connection_id=0,
                dsn=pg_dsn)
    assert sql(f'SELECT orderid, fecha FROM "{table}" ORDER BY 1') == [(1, dt.date(2024, 1, 1)),
                                                                        (2, dt.date(2024, 1, 1))]


# Regression (review fix 10): the server's detail (which key repeats) in SinkError, now in one clear line.
def test_merge_over_duplicate_rows_names_the_table_the_key_and_the_fix(tmp_path: Path, pg_dsn: str, table: str,
                                                                       sql: Sql) -> None:
    dup, upd = tmp_path / "dup.csv", tmp_path / "upd.csv"
    dup.write_text("k,day,v\n1,2024-01-01,a\n1,2024-01-01,b\n")
    upd.write_text("k,day,v\n1,2024-01-01,c\n")
    engine.load(dup, into=table, dsn=pg_dsn)
    with pytest.raises(SinkError) as info:
        engine.load(upd, into=table, mode="merge", key="k", dsn=pg_dsn)
    message = str(info.value)
    assert message == (f"merge into {table}: the table already holds several rows with the same (connection_id, k, "
                       "day), e.g. (0, 1, 2024-01-01), so the unique index merge needs cannot be built; remove the "
                       "repeated rows (or reload the table with --mode replace) and re-run"), message
    assert info.value.exit_code == 5
    assert sorted(r[0] for r in sql(f'SELECT v FROM "{table}"')) == ["a", "b"]
