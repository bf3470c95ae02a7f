"""Time partitions: children and their bounds per granularity (UTC bounds for timestamptz, MAXVALUE at year 9999),
hash sub-partitions, the indexes every child inherits, which column is the time column, and partition values out
of range."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import engine
from tests.support import Sql, accounted, child_bounds, data_types, orders_frame, row_count


# --- children and indexes ---------------------------------------------------------------------------------------------
def test_partitions_and_indexes_exist(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    path = tmp_path / "o.parquet"
    orders_frame(11, step_days=10).write_parquet(path)  # Jan 1 .. Apr 10
    report = engine.load(path, into=table, partition_by="created_at:month", connection_id=1, dsn=pg_dsn)
    children = child_bounds(sql, table)
    expected = {f"{table}_p2024_{m:02d}" for m in (1, 2, 3, 4)}
    assert set(children) == expected
    assert sorted(report.partitions) == sorted(expected)
    assert children[f"{table}_p2024_02"] == \
        "FOR VALUES FROM ('2024-02-01 00:00:00') TO ('2024-03-01 00:00:00')"
    assert sql("SELECT pg_get_partkeydef(to_regclass($1))", [f'"{table}"'])[0][0] == "RANGE (created_at)"
    defs = [r[0] for r in sql("SELECT indexdef FROM pg_indexes WHERE tablename = $1", [table])]
    assert any("USING brin (created_at)" in d for d in defs), defs
    assert any("USING btree (connection_id, created_at DESC)" in d for d in defs), defs
    # no single-column B-tree on connection_id: the composite index's first column answers those lookups
    assert len(defs) == 2, defs
    # every child inherits the two indexes
    child_defs = sql("SELECT indexdef FROM pg_indexes WHERE tablename = $1", [f"{table}_p2024_03"])
    assert len(child_defs) == 2
    nullable: dict[Any, Any] = dict(sql("SELECT column_name, is_nullable FROM information_schema.columns "
                                        "WHERE table_name = $1", [table]))
    assert (nullable["connection_id"], nullable["created_at"], nullable["amount"]) == ("NO", "NO", "YES")


@pytest.mark.parametrize(("granularity", "children"), [
    ("day", {"p2024_01_30": ("2024-01-30", "2024-01-31"), "p2024_02_01": ("2024-02-01", "2024-02-02"),
             "p2025_12_31": ("2025-12-31", "2026-01-01")}),
    # ISO weeks: 2025-12-31 is in week 1 of 2026
    ("week", {"p2024_w05": ("2024-01-29", "2024-02-05"), "p2026_w01": ("2025-12-29", "2026-01-05")}),
    ("month", {"p2024_01": ("2024-01-01", "2024-02-01"), "p2024_02": ("2024-02-01", "2024-03-01"),
               "p2025_12": ("2025-12-01", "2026-01-01")}),
    ("year", {"p2024": ("2024-01-01", "2025-01-01"), "p2025": ("2025-01-01", "2026-01-01")}),
])
def test_granularity(tmp_path: Path, pg_dsn: str, table: str, sql: Sql, granularity: str,
                     children: dict[str, tuple[str, str]]) -> None:
    path = tmp_path / "d.parquet"
    pl.DataFrame({"day": [dt.date(2024, 1, 30), dt.date(2024, 2, 1), dt.date(2025, 12, 31)],
                  "v": [1, 2, 3]}).write_parquet(path)
    report = engine.load(path, into=table, partition_by=f"day:{granularity}", dsn=pg_dsn)
    assert report.rows_loaded == 3
    got = child_bounds(sql, table)
    assert got == {f"{table}_{k}": f"FOR VALUES FROM ('{lo}') TO ('{hi}')"
                   for k, (lo, hi) in children.items()}
    assert row_count(sql, table) == 3
    for child in got:  # each row sits in its own partition
        assert row_count(sql, child) >= 1


def test_timestamptz_partitions_use_utc_bounds(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    path = tmp_path / "tz.parquet"
    ts = pl.Series([dt.datetime(2024, 1, 31, 23, 30), dt.datetime(2024, 2, 1, 0, 30)])
    ts = ts.dt.replace_time_zone("UTC")
    pl.DataFrame({"ts": ts, "v": [1, 2]}).write_parquet(path)
    engine.load(path, into=table, partition_by="ts", dsn=pg_dsn)
    assert data_types(sql, table)["ts"] == "timestamp with time zone"
    assert row_count(sql, f"{table}_p2024_01") == 1 and row_count(sql, f"{table}_p2024_02") == 1


def test_hash_sub_partitions(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    path = tmp_path / "h.parquet"
    n = 200
    pl.DataFrame({"ts": [dt.date(2024, 1, 1 + i % 28) for i in range(n)],
                  "connection_id": [i % 10 for i in range(n)], "v": list(range(n))}).write_parquet(path)
    report = engine.load(path, into=table, partition_by="ts", hash_partitions=4, dsn=pg_dsn)
    assert report.rows_loaded == n
    month = f"{table}_p2024_01"
    assert set(child_bounds(sql, table)) == {month}
    subs = child_bounds(sql, month)
    assert subs == {f"{month}_h{i}": f"FOR VALUES WITH (modulus 4, remainder {i})" for i in range(4)}
    assert sum(row_count(sql, s) for s in subs) == n
    assert sum(1 for s in subs if row_count(sql, s) > 0) >= 2  # rows spread over several buckets
    assert sql("SELECT pg_get_partkeydef(to_regclass($1))", [f'"{month}"'])[0][0] == "HASH (connection_id)"
    assert sorted(r[0] for r in sql(f'SELECT DISTINCT connection_id FROM "{table}"')) == list(range(10))


# --- the time column --------------------------------------------------------------------------------------------------
def test_loaded_at_when_there_is_no_time_column(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    path = tmp_path / "plain.csv"
    path.write_text("name,qty\na,1\nb,2\n")
    report = engine.load(path, into=table, dsn=pg_dsn)
    assert report.time_column == "_loaded_at"
    assert data_types(sql, table)["_loaded_at"] == "timestamp with time zone"
    assert row_count(sql, table) == 2


def test_first_date_column_is_the_default_time_column(tmp_path: Path, pg_dsn: str, table: str,
                                                      sql: Sql) -> None:
    path = tmp_path / "d.csv"
    path.write_text("name,day,other\na,2024-03-05,2024-01-01\n")
    report = engine.load(path, into=table, dsn=pg_dsn)
    assert report.time_column == "day"
    assert set(child_bounds(sql, table)) == {f"{table}_p2024_03"}


def test_partition_by_source_name_is_normalised(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    path = tmp_path / "a.csv"
    path.write_text("Fecha Pedido,v\n2024-01-01,1\n")
    report = engine.load(path, into=table, partition_by="Fecha Pedido", dsn=pg_dsn)
    assert report.time_column == "fecha_pedido"
    again = tmp_path / "b.csv"
    again.write_text("Fecha Pedido,v\n2024-02-01,2\n")
    engine.load(again, into=table, partition_by="Fecha Pedido", dsn=pg_dsn)
    assert row_count(sql, table) == 2


# --- partition values out of range ------------------------------------------------------------------------------------
def test_partition_column_out_of_range_or_null(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    path = tmp_path / "t.parquet"
    days = pl.Series([19_800, None, 3_000_000, -800_000]).cast(pl.Date)  # 2024, null, year ~10183, year ~-221
    pl.DataFrame({"day": days, "v": [1, 2, 3, 4]}).write_parquet(path)
    report = engine.load(path, into=table, partition_by="day", dsn=pg_dsn)
    accounted(report)
    assert (report.rows_loaded, report.rows_quarantined) == (1, 3)
    assert report.quarantine_by_rule == {"partition": 3}
    assert row_count(sql, table) == 1


@pytest.mark.parametrize("granularity", ["day", "week", "month", "year"])
def test_dates_in_year_9999_load(tmp_path: Path, pg_dsn: str, table: str, sql: Sql, granularity: str) -> None:
    path = tmp_path / "late.parquet"
    pl.DataFrame({"d": [dt.date(9999, 12, 31), dt.date(2024, 1, 1)], "v": [1, 2]}).write_parquet(path)
    report = engine.load(path, into=table, partition_by=f"d:{granularity}", dsn=pg_dsn)
    assert (report.rows_loaded, report.rows_quarantined) == (2, 0)
    bounds = child_bounds(sql, table)
    assert sum("MAXVALUE" in b for b in bounds.values()) == 1
    assert sql(f'SELECT v FROM "{table}" WHERE d = $1', [dt.date(9999, 12, 31)]) == [(1,)]
