"""End to end against a real PostgreSQL: every source kind, partitions and indexes, the ledger, quarantine,
the three modes, schema drift and hostile names."""

from __future__ import annotations

import datetime as dt
import json
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import engine
from engine.errors import SchemaDriftError, SourceError, SpecError
from engine.report import LoadReport

Sql = Callable[..., list[tuple[Any, ...]]]
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def _accounted(report: LoadReport) -> None:
    assert report.rows_in == report.rows_loaded + report.rows_quarantined + report.rows_filtered


def _count(sql: Sql, table: str) -> int:
    return int(sql(f'SELECT count(*) FROM "{table}"')[0][0])


def _children(sql: Sql, table: str) -> dict[str, str]:
    rows = sql("SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
               "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass($1) ORDER BY 1",
               [f'"{table}"'])
    return {str(r[0]): str(r[1]) for r in rows}


def _columns(sql: Sql, table: str) -> dict[str, str]:
    rows = sql("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = $1 "
               "ORDER BY ordinal_position", [table])
    return {str(r[0]): str(r[1]) for r in rows}


def _quarantine(sql: Sql, table: str) -> list[dict[str, Any]]:
    rows = sql("SELECT rule, column_name, reason, source, row_number, raw, connection_id, load_id "
               "FROM biconic.quarantine WHERE dataset = $1 ORDER BY source, row_number", [table])
    keys = ["rule", "column", "reason", "source", "row_number", "raw", "connection_id", "load_id"]
    return [dict(zip(keys, r, strict=True)) for r in rows]


def _orders(n: int = 30, *, start: dt.date = dt.date(2024, 1, 1), step_days: int = 7) -> pl.DataFrame:
    return pl.DataFrame({
        "order_id": list(range(1, n + 1)),
        "created_at": [dt.datetime.combine(start + dt.timedelta(days=i * step_days), dt.time(12))
                       for i in range(n)],
        "amount": [round(i * 1.5, 2) for i in range(n)],
        "city": [["Madrid", "Lima", "Bogotá"][i % 3] for i in range(n)],
    })


# --- every source kind --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["csv", "tsv", "parquet", "json", "ndjson"])
def test_every_source_kind_loads(tmp_path: Path, pg_dsn: str, table: str, sql: Sql, kind: str) -> None:
    df = _orders(20)
    path = tmp_path / f"orders.{kind}"
    if kind == "csv":
        df.write_csv(path)
    elif kind == "tsv":
        df.write_csv(path, separator="\t")
    elif kind == "parquet":
        df.write_parquet(path)
    elif kind == "json":
        path.write_text(json.dumps([{**r, "created_at": r["created_at"].isoformat()} for r in df.to_dicts()]))
    else:
        path.write_text("".join(json.dumps({**r, "created_at": r["created_at"].isoformat()}) + "\n"
                                for r in df.to_dicts()))
    steps = [{"parse_date": {"column": "created_at", "format": "%Y-%m-%dT%H:%M:%S", "kind": "datetime"}}] \
        if kind in ("json", "ndjson") else []
    report = engine.load(path, into=table, partition_by="created_at", connection_id=3, dsn=pg_dsn,
                         spec={"steps": steps})
    _accounted(report)
    assert (report.rows_in, report.rows_loaded, report.rows_quarantined) == (20, 20, 0)
    assert report.time_column == "created_at"
    assert _count(sql, table) == 20
    rows = sql(f'SELECT connection_id, order_id, created_at, amount, city FROM "{table}" ORDER BY order_id')
    assert rows[0] == (3, 1, dt.datetime(2024, 1, 1, 12), 0.0, "Madrid")
    assert rows[-1][1:] == (20, dt.datetime(2024, 1, 1, 12) + dt.timedelta(days=133), 28.5, "Lima")
    assert rows[2][4] == "Bogotá"


def test_folder_and_glob_load_one_partition_per_file(tmp_path: Path, pg_dsn: str, table: str,
                                                     sql: Sql) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        _orders(5, start=dt.date(2024, 1 + i, 1), step_days=1).write_parquet(folder / f"part{i}.parquet")
    report = engine.load(folder, into=table, partition_by="created_at", dsn=pg_dsn)
    assert report.source_partitions == 3
    assert report.rows_loaded == 15
    assert sorted(_children(sql, table)) == [f"{table}_p2024_01", f"{table}_p2024_02", f"{table}_p2024_03"]
    again = engine.load(str(folder / "part*.parquet"), into=table, partition_by="created_at", dsn=pg_dsn)
    assert again.rows_loaded == 0 and again.skipped_partitions == 3
    assert _count(sql, table) == 15


# --- partitions and indexes ---------------------------------------------------------------------------------
def test_partitions_and_indexes_exist(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    path = tmp_path / "o.parquet"
    _orders(11, step_days=10).write_parquet(path)  # Jan 1 .. Apr 10
    report = engine.load(path, into=table, partition_by="created_at:month", connection_id=1, dsn=pg_dsn)
    children = _children(sql, table)
    expected = {f"{table}_p2024_{m:02d}" for m in (1, 2, 3, 4)}
    assert set(children) == expected
    assert sorted(report.partitions) == sorted(expected)
    assert children[f"{table}_p2024_02"] == \
        "FOR VALUES FROM ('2024-02-01 00:00:00') TO ('2024-03-01 00:00:00')"
    assert sql("SELECT pg_get_partkeydef(to_regclass($1))", [f'"{table}"'])[0][0] == "RANGE (created_at)"
    defs = [r[0] for r in sql("SELECT indexdef FROM pg_indexes WHERE tablename = $1", [table])]
    assert any("USING brin (created_at)" in d for d in defs), defs
    assert any("USING btree (connection_id)" in d for d in defs), defs
    assert any("USING btree (connection_id, created_at DESC)" in d for d in defs), defs
    # every child inherits the three indexes
    child_defs = sql("SELECT indexdef FROM pg_indexes WHERE tablename = $1", [f"{table}_p2024_03"])
    assert len(child_defs) == 3
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
    got = _children(sql, table)
    assert got == {f"{table}_{k}": f"FOR VALUES FROM ('{lo}') TO ('{hi}')"
                   for k, (lo, hi) in children.items()}
    assert _count(sql, table) == 3
    for child in got:  # each row sits in its own partition
        assert _count(sql, child) >= 1


def test_timestamptz_partitions_use_utc_bounds(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    path = tmp_path / "tz.parquet"
    ts = pl.Series([dt.datetime(2024, 1, 31, 23, 30), dt.datetime(2024, 2, 1, 0, 30)])
    ts = ts.dt.replace_time_zone("UTC")
    pl.DataFrame({"ts": ts, "v": [1, 2]}).write_parquet(path)
    engine.load(path, into=table, partition_by="ts", dsn=pg_dsn)
    assert _columns(sql, table)["ts"] == "timestamp with time zone"
    assert _count(sql, f"{table}_p2024_01") == 1 and _count(sql, f"{table}_p2024_02") == 1


def test_hash_sub_partitions(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    path = tmp_path / "h.parquet"
    n = 200
    pl.DataFrame({"ts": [dt.date(2024, 1, 1 + i % 28) for i in range(n)],
                  "connection_id": [i % 10 for i in range(n)], "v": list(range(n))}).write_parquet(path)
    report = engine.load(path, into=table, partition_by="ts", hash_partitions=4, dsn=pg_dsn)
    assert report.rows_loaded == n
    month = f"{table}_p2024_01"
    assert set(_children(sql, table)) == {month}
    subs = _children(sql, month)
    assert subs == {f"{month}_h{i}": f"FOR VALUES WITH (modulus 4, remainder {i})" for i in range(4)}
    assert sum(_count(sql, s) for s in subs) == n
    assert sum(1 for s in subs if _count(sql, s) > 0) >= 2  # rows spread over several buckets
    assert sql("SELECT pg_get_partkeydef(to_regclass($1))", [f'"{month}"'])[0][0] == "HASH (connection_id)"
    assert sorted(r[0] for r in sql(f'SELECT DISTINCT connection_id FROM "{table}"')) == list(range(10))


def test_loaded_at_when_there_is_no_time_column(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    path = tmp_path / "plain.csv"
    path.write_text("name,qty\na,1\nb,2\n")
    report = engine.load(path, into=table, dsn=pg_dsn)
    assert report.time_column == "_loaded_at"
    assert _columns(sql, table)["_loaded_at"] == "timestamp with time zone"
    assert _count(sql, table) == 2


def test_first_date_column_is_the_default_time_column(tmp_path: Path, pg_dsn: str, table: str,
                                                      sql: Sql) -> None:
    path = tmp_path / "d.csv"
    path.write_text("name,day,other\na,2024-03-05,2024-01-01\n")
    report = engine.load(path, into=table, dsn=pg_dsn)
    assert report.time_column == "day"
    assert set(_children(sql, table)) == {f"{table}_p2024_03"}


def test_every_loadable_type_round_trips(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    from decimal import Decimal

    frame = pl.DataFrame({
        "ts": [dt.datetime(2024, 1, 1, 1, 2, 3, 456789)],
        "b": [True], "i8": pl.Series([-5], dtype=pl.Int8), "u8": pl.Series([250], dtype=pl.UInt8),
        "u16": pl.Series([65000], dtype=pl.UInt16), "i32": pl.Series([-70000], dtype=pl.Int32),
        "u32": pl.Series([4_000_000_000], dtype=pl.UInt32), "i64": [2**62],
        "f32": pl.Series([1.5], dtype=pl.Float32), "f64": [2.25],
        "dec": pl.Series([Decimal("1234.56")], dtype=pl.Decimal(12, 2)), "s": ["ñ€"], "bin": [b"\x00\xff"],
        "d": [dt.date(2024, 2, 29)],
        "tz": pl.Series([dt.datetime(2024, 1, 1, 12)]).dt.replace_time_zone("Europe/Madrid"),
        "t": [dt.time(13, 14, 15, 123456)], "l": [[1, 2]], "st": [{"a": 1}],
        "cat": pl.Series(["x"], dtype=pl.Categorical), "nul": pl.Series([None], dtype=pl.Null),
    })
    first, second = tmp_path / "a.parquet", tmp_path / "b.parquet"
    frame.write_parquet(first)
    frame.write_parquet(second)
    engine.load(first, into=table, partition_by="ts", dsn=pg_dsn)
    types = sql("SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                "WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 ORDER BY a.attnum", [f'"{table}"'])
    assert dict(types) == {
        "connection_id": "bigint", "ts": "timestamp without time zone", "b": "boolean", "i8": "smallint",
        "u8": "smallint", "u16": "integer", "i32": "integer", "u32": "bigint", "i64": "bigint", "f32": "real",
        "f64": "double precision", "dec": "numeric(12,2)", "s": "text", "bin": "bytea", "d": "date",
        "tz": "timestamp with time zone", "t": "time without time zone", "l": "text", "st": "text",
        "cat": "text", "nul": "text",
    }
    (row,) = sql(f'SELECT ts, b, i8, u8, u16, i32, u32, i64, f32, f64, dec::text, s, bin, d, tz, t, l, st, '
                 f'cat, nul FROM "{table}"')
    assert row == (dt.datetime(2024, 1, 1, 1, 2, 3, 456789), True, -5, 250, 65000, -70000, 4_000_000_000,
                   2**62, 1.5, 2.25, "1234.56", "ñ€", b"\x00\xff", dt.date(2024, 2, 29),
                   dt.datetime(2024, 1, 1, 11, tzinfo=dt.UTC), dt.time(13, 14, 15, 123456), "[1,2]",
                   '{"a":1}', "x", None)
    report = engine.load(second, into=table, partition_by="ts", dsn=pg_dsn)  # same shape: no drift at all
    assert (report.rows_loaded, report.columns_added, report.columns_widened) == (1, [], [])


# --- the ledger: effectively once ---------------------------------------------------------------------------
def test_rerun_adds_nothing(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    path = tmp_path / "o.csv"
    _orders(12).write_csv(path)
    first = engine.load(path, into=table, partition_by="created_at", connection_id=1, dsn=pg_dsn)
    assert first.rows_loaded == 12 and first.skipped_partitions == 0
    again = engine.load(path, into=table, partition_by="created_at", connection_id=1, dsn=pg_dsn)
    assert again.rows_loaded == 0
    assert again.skipped_partitions == 1
    assert again.rows_in == 0
    assert _count(sql, table) == 12
    ledger = sql("SELECT state, rows_in, rows_loaded, rows_quarantined, rows_filtered, connection_id, mode "
                 "FROM biconic.loads WHERE dataset = $1", [table])
    assert ledger == [("committed", 12, 12, 0, 0, 1, "append")]


def test_a_changed_file_loads_again(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    path = tmp_path / "o.csv"
    _orders(5).write_csv(path)
    engine.load(path, into=table, partition_by="created_at", dsn=pg_dsn)
    _orders(8).write_csv(path)
    again = engine.load(path, into=table, partition_by="created_at", dsn=pg_dsn)
    assert again.rows_loaded == 8 and again.skipped_partitions == 0
    assert _count(sql, table) == 13  # append mode: the new version is added
    assert len(sql("SELECT 1 FROM biconic.loads WHERE dataset = $1", [table])) == 2


def test_another_connection_or_spec_is_another_load(tmp_path: Path, pg_dsn: str, table: str,
                                                    sql: Sql) -> None:
    path = tmp_path / "o.parquet"
    _orders(4).write_parquet(path)
    engine.load(path, into=table, partition_by="created_at", connection_id=1, dsn=pg_dsn)
    other = engine.load(path, into=table, partition_by="created_at", connection_id=2, dsn=pg_dsn)
    assert other.rows_loaded == 4
    filtered = engine.load(path, into=table, partition_by="created_at", connection_id=1, dsn=pg_dsn,
                           spec={"steps": [{"filter": "amount > 2"}]})
    assert filtered.skipped_partitions == 0
    assert (filtered.rows_loaded, filtered.rows_filtered) == (2, 2)
    assert sql(f'SELECT connection_id, count(*) FROM "{table}" GROUP BY 1 ORDER BY 1') == [(1, 6), (2, 4)]


# --- quarantine ---------------------------------------------------------------------------------------------
def test_quarantine_rows_and_accounting(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    path = tmp_path / "orders_bad.csv"
    path.write_text(textwrap.dedent("""\
        order_id,fecha,importe,city
        1,01/02/2024,"1.234,56",Madrid
        2,02/02/2024,"-5,00",Lima
        3,31/02/2024,"7,00",Lima
        4,03/02/2024,"abc",Quito
        ,04/02/2024,"8,00",Madrid
        6,05/02/2024,"9,00",Bogotá
        """), encoding="utf-8")
    spec = {
        "steps": [
            {"parse_date": {"column": "fecha", "format": "%d/%m/%Y"}},
            {"parse_number": {"column": "importe", "decimal": ",", "thousands": "."}},
            {"filter": "city <> 'Bogotá'"},
        ],
        "rules": [{"not_null": "order_id"}, {"range": {"column": "importe", "min": 0}}],
    }
    report = engine.load(path, into=table, partition_by="fecha", connection_id=9, spec=spec, dsn=pg_dsn)
    _accounted(report)
    assert (report.rows_in, report.rows_loaded, report.rows_quarantined, report.rows_filtered) == (6, 1, 4, 1)
    assert report.quarantine_by_rule == {"range": 1, "parse_date": 1, "parse_number": 1, "not_null": 1}
    assert sql(f'SELECT order_id, fecha, importe FROM "{table}"') == [(1, dt.date(2024, 2, 1), 1234.56)]
    q = _quarantine(sql, table)
    assert [(r["row_number"], r["rule"], r["column"]) for r in q] == [
        (3, "range", "importe"), (4, "parse_date", "fecha"), (5, "parse_number", "importe"),
        (6, "not_null", "order_id"),
    ]
    assert all(r["source"] == "orders_bad.csv" and r["connection_id"] == 9 for r in q)
    assert all(r["load_id"] == report.load_id for r in q)
    assert q[0]["reason"] == "-5.0 is outside [0, ]"
    assert q[1]["reason"].startswith("31/02/2024 does not match the date format %d/%m/%Y")
    raw = json.loads(q[0]["raw"])
    assert raw["order_id"] == "2" and raw["city"] == "Lima" and raw["importe"] == "-5,00"  # as in the file
    ledger = sql("SELECT rows_in, rows_loaded, rows_quarantined, rows_filtered FROM biconic.loads "
                 "WHERE dataset = $1", [table])
    assert ledger == [(6, 1, 4, 1)]


def test_quarantine_raw_keeps_the_original_text(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    path = tmp_path / "t.csv"
    path.write_text("day,qty\n2024-01-01,1\n2024-01-02,lots\n")
    engine.load(path, into=table, dsn=pg_dsn, spec={"steps": [{"cast": {"qty": "int"}}]})
    (row,) = _quarantine(sql, table)
    assert json.loads(row["raw"]) == {"day": "2024-01-02", "qty": "lots"}


def test_quarantine_raw_keeps_source_names_and_text_after_inference(tmp_path: Path, pg_dsn: str, table: str,
                                                                    sql: Sql) -> None:
    """A value past the type sample fails its inferred type; raw shows the file's own header and text."""
    path = tmp_path / "t.csv"
    lines = [f"2024-01-01,{i}" for i in range(30)] + ["2024-01-02,12abc"]
    path.write_text("Fecha Pedido,Cantidad\n" + "\n".join(lines) + "\n")
    report = engine.load(path, into=table, dsn=pg_dsn, options={"infer_rows": 10})
    assert (report.rows_loaded, report.rows_quarantined) == (30, 1)
    (row,) = _quarantine(sql, table)
    assert json.loads(row["raw"]) == {"Fecha Pedido": "2024-01-02", "Cantidad": "12abc"}
    assert row["rule"] == "type" and row["row_number"] == 32


def test_copy_unsafe_values_are_quarantined_and_the_load_succeeds(tmp_path: Path, pg_dsn: str, table: str,
                                                                  sql: Sql) -> None:
    path = tmp_path / "unsafe.parquet"
    n = 6
    pl.DataFrame({
        "ts": [dt.datetime(2024, 1, 1 + i) for i in range(n)],
        "s": ["ok", "a\x00b", "ok", "ok", "ok", "ok"],
        "d": pl.Series([0, 0, -3_000_000, 0, 0, 0]).cast(pl.Date),  # year -6244
        "u": pl.Series([1, 2, 3, 2**64 - 1, 5, 2**63], dtype=pl.UInt64),
        "nested": [{"k": [1, 2]}, None, None, None, {"k": []}, None],
    }).write_parquet(path)
    report = engine.load(path, into=table, partition_by="ts", dsn=pg_dsn)
    _accounted(report)
    assert (report.rows_loaded, report.rows_quarantined) == (2, 4)
    assert report.quarantine_by_rule == {"copy_safe": 4}
    assert sql(f'SELECT u, nested FROM "{table}" ORDER BY ts') == [(1, '{"k":[1,2]}'), (5, '{"k":[]}')]
    q = _quarantine(sql, table)
    assert [(r["row_number"], r["column"]) for r in q] == [(2, "s"), (3, "d"), (4, "u"), (6, "u")]
    assert "NUL" in q[0]["reason"]
    assert "date range" in q[1]["reason"]
    assert q[2]["reason"] == f"{2**64 - 1} overflows bigint"
    cols = _columns(sql, table)
    assert cols["u"] == "bigint" and cols["nested"] == "text"


def test_partition_column_out_of_range_or_null(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    path = tmp_path / "t.parquet"
    days = pl.Series([19_800, None, 3_000_000, -800_000]).cast(pl.Date)  # 2024, null, year ~10183, year ~-221
    pl.DataFrame({"day": days, "v": [1, 2, 3, 4]}).write_parquet(path)
    report = engine.load(path, into=table, partition_by="day", dsn=pg_dsn)
    _accounted(report)
    assert (report.rows_loaded, report.rows_quarantined) == (1, 3)
    assert report.quarantine_by_rule == {"partition": 3}
    assert _count(sql, table) == 1


@pytest.mark.parametrize("granularity", ["day", "week", "month", "year"])
def test_dates_in_year_9999_load(tmp_path: Path, pg_dsn: str, table: str, sql: Sql, granularity: str) -> None:
    path = tmp_path / "late.parquet"
    pl.DataFrame({"d": [dt.date(9999, 12, 31), dt.date(2024, 1, 1)], "v": [1, 2]}).write_parquet(path)
    report = engine.load(path, into=table, partition_by=f"d:{granularity}", dsn=pg_dsn)
    assert (report.rows_loaded, report.rows_quarantined) == (2, 0)
    bounds = _children(sql, table)
    assert sum("MAXVALUE" in b for b in bounds.values()) == 1
    assert sql(f'SELECT v FROM "{table}" WHERE d = $1', [dt.date(9999, 12, 31)]) == [(1,)]


def test_invalid_utf8_row_is_quarantined_others_load(tmp_path: Path, pg_dsn: str, table: str,
                                                     sql: Sql) -> None:
    path = tmp_path / "surrogate.csv"
    path.write_bytes(b"id,day,name\n1,2024-01-01,ok\n2,2024-01-02,bad\xed\xa0\x80x\n3,2024-01-03,fine\n")
    report = engine.load(path, into=table, dsn=pg_dsn)
    _accounted(report)
    assert (report.rows_in, report.rows_loaded, report.rows_quarantined) == (3, 2, 1)
    assert report.quarantine_by_rule == {"invalid_utf8": 1}
    assert sql(f'SELECT id, name FROM "{table}" ORDER BY id') == [(1, "ok"), (3, "fine")]
    (row,) = _quarantine(sql, table)
    assert (row["rule"], row["column"], row["row_number"], row["source"]) == ("invalid_utf8", "name", 3,
                                                                             "surrogate.csv")


def test_invalid_utf8_in_a_typed_column(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    path = tmp_path / "bad_num.csv"
    path.write_bytes(b"id,day\n1,2024-01-01\n2\xff,2024-01-02\n")
    report = engine.load(path, into=table, dsn=pg_dsn)
    _accounted(report)
    assert (report.rows_loaded, report.rows_quarantined) == (1, 1)
    assert _quarantine(sql, table)[0]["rule"] == "invalid_utf8"


def test_replace_quarantines_invalid_utf8_rows(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_text("id,day\n1,2024-01-01\n")
    bad.write_bytes(b"id,day,name\n2,2024-01-02,caf\xe9\n3,2024-01-03,ok\n")
    engine.load(good, into=table, dsn=pg_dsn)
    report = engine.load(bad, into=table, mode="replace", dsn=pg_dsn)
    assert (report.rows_loaded, report.rows_quarantined) == (1, 1)
    assert report.quarantine_by_rule == {"invalid_utf8": 1}
    assert sql(f'SELECT id, name FROM "{table}"') == [(3, "ok")]
    assert len(sql("SELECT 1 FROM biconic.loads WHERE dataset = $1", [table])) == 1


def test_lone_surrogate_in_json_is_quarantined(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    path = tmp_path / "s.ndjson"
    path.write_text('{"day": "2024-01-01", "s": "x\\ud800y"}\n{"day": "2024-01-02", "s": "ok"}\n')
    report = engine.load(path, into=table, dsn=pg_dsn, spec={"steps": [{"cast": {"day": "date"}}]})
    assert (report.rows_loaded, report.rows_quarantined) == (1, 1)
    assert report.quarantine_by_rule == {"copy_safe": 1}
    assert sql(f'SELECT s FROM "{table}"') == [("ok",)]


def test_a_file_that_breaks_mid_stream_commits_nothing(tmp_path: Path, pg_dsn: str, table: str,
                                                       sql: Sql) -> None:
    good, ragged = tmp_path / "a_good.csv", tmp_path / "b_ragged.csv"
    good.write_text("id,day\n1,2024-01-01\n")
    ragged.write_text("id,day\n2,2024-01-02\n3,2024-01-03,surprise,extra\n")
    with pytest.raises(SourceError) as info:
        engine.load(tmp_path, into=table, dsn=pg_dsn)
    assert info.value.source == "b_ragged.csv"
    assert sql(f'SELECT id FROM "{table}"') == [(1,)]  # the first file committed on its own
    assert sql("SELECT source FROM biconic.loads WHERE dataset = $1", [table]) == [("a_good.csv",)]


def test_concurrent_loads_of_the_same_file_load_it_once(tmp_path: Path, pg_dsn: str, table: str,
                                                        sql: Sql) -> None:
    path = tmp_path / "o.parquet"
    _orders(2000, step_days=0).write_parquet(path)
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
    assert _count(sql, table) == 2000


def test_latin1_file_with_the_encoding_option(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("día;ciudad;importe\n2024-01-01;Peñíscola;€5\n".encode("cp1252"))
    engine.load(path, into=table, options={"delimiter": ";", "encoding": "cp1252"}, dsn=pg_dsn)
    assert sql(f'SELECT día, ciudad, importe FROM "{table}"') == [(dt.date(2024, 1, 1), "Peñíscola", "€5")]


def test_corrupt_parquet_is_a_source_error(tmp_path: Path, pg_dsn: str, table: str) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(SourceError) as info:
        engine.load(path, into=table, dsn=pg_dsn)
    assert "broken.parquet" in str(info.value)
    assert info.value.exit_code == 3


# --- modes --------------------------------------------------------------------------------------------------
def test_replace_swaps_the_whole_table(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    old, new = tmp_path / "old.parquet", tmp_path / "new.parquet"
    _orders(10, start=dt.date(2024, 1, 1), step_days=3).write_parquet(old)
    _orders(4, start=dt.date(2025, 6, 1), step_days=1).write_parquet(new)
    engine.load(old, into=table, partition_by="created_at", dsn=pg_dsn)
    assert set(_children(sql, table)) == {f"{table}_p2024_01"}
    report = engine.load(new, into=table, partition_by="created_at", mode="replace", dsn=pg_dsn)
    assert report.rows_loaded == 4
    assert report.partitions == [f"{table}_p2025_06"]
    assert _count(sql, table) == 4
    # the old partition stays, emptied in the same transaction (dropping it would not be MVCC-safe)
    assert set(_children(sql, table)) == {f"{table}_p2024_01", f"{table}_p2025_06"}
    assert _count(sql, f"{table}_p2024_01") == 0
    index_names = {r[0] for r in sql("SELECT indexname FROM pg_indexes WHERE tablename = $1", [table])}
    assert index_names == {f"{table}_time_brin", f"{table}_conn_idx", f"{table}_conn_time_idx"}
    again = engine.load(new, into=table, partition_by="created_at", mode="replace", dsn=pg_dsn)
    assert again.rows_loaded == 0 and again.skipped_partitions == 1
    back = engine.load(old, into=table, partition_by="created_at", mode="replace", dsn=pg_dsn)
    assert back.rows_loaded == 10
    assert _count(sql, table) == 10
    assert _count(sql, f"{table}_p2024_01") == 10 and _count(sql, f"{table}_p2025_06") == 0


def test_replace_with_hash_partitions(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    _orders(6).write_parquet(a)
    _orders(3, start=dt.date(2024, 5, 1)).write_parquet(b)
    engine.load(a, into=table, partition_by="created_at", hash_partitions=2, dsn=pg_dsn)
    engine.load(b, into=table, partition_by="created_at", hash_partitions=2, mode="replace", dsn=pg_dsn)
    assert _count(sql, table) == 3
    assert _count(sql, f"{table}_p2024_05") == 3
    assert set(_children(sql, f"{table}_p2024_05")) == {f"{table}_p2024_05_h0", f"{table}_p2024_05_h1"}


def test_replace_with_a_long_table_name(tmp_path: Path, pg_dsn: str, sql: Sql) -> None:
    """Stage and child names longer than 63 bytes are hashed; the swap must still find fresh names."""
    long = "r" * 55
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    _orders(3).write_parquet(a)
    _orders(2, start=dt.date(2024, 3, 1)).write_parquet(b)
    engine.load(a, into=long, partition_by="created_at", dsn=pg_dsn)
    engine.load(b, into=long, partition_by="created_at", mode="replace", dsn=pg_dsn)
    assert _count(sql, long) == 2


def test_replace_reader_queued_behind_the_swap_sees_old_or_new(tmp_path: Path, pg_dsn: str, table: str,
                                                               sql: Sql) -> None:
    """A reader that arrives while the swap holds its lock must see the old rows or the new ones, never an
    empty table. Made deterministic: a transaction holding a read lock keeps the swap waiting, a second
    reader queues behind the swap, then the first lets go."""
    import adbc_driver_postgresql.dbapi as pgdbapi

    old, new = tmp_path / "old.parquet", tmp_path / "new.parquet"
    _orders(300, step_days=1).write_parquet(old)
    _orders(200, start=dt.date(2025, 1, 1), step_days=1).write_parquet(new)
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
    assert _count(sql, table) == 200


def test_replace_never_shows_readers_an_empty_table(tmp_path: Path, pg_dsn: str, table: str) -> None:
    """Readers polling while replace swaps tables, ten times over: each count is the old or the new table's.

    A reader whose statement snapshot is taken just before the swap commits, but whose name lookup runs just
    after, finds the new table with rows its snapshot cannot see: it counts 0. Seen a few times per ten
    swaps with four readers."""
    import adbc_driver_postgresql.dbapi as pgdbapi

    old, new = tmp_path / "old.parquet", tmp_path / "new.parquet"
    _orders(30, step_days=0).write_parquet(old)
    _orders(20, start=dt.date(2025, 1, 1), step_days=0).write_parquet(new)
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
    _accounted(report)
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
    assert _count(sql, table) == 4


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


def test_merge_on_a_key_whose_name_is_normalised(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    """The key is named as in the source ('OrderID'); the table column is 'orderid'."""
    path = tmp_path / "m.parquet"
    pl.DataFrame({"OrderID": [1, 2], "Fecha": [dt.date(2024, 1, 1)] * 2, "v": [1, 2]}).write_parquet(path)
    engine.load(path, into=table, mode="merge", key="OrderID", partition_by="Fecha", dsn=pg_dsn)
    engine.load(path, into=table, mode="merge", key="OrderID", partition_by="Fecha", connection_id=0,
                dsn=pg_dsn)
    assert sql(f'SELECT orderid, fecha FROM "{table}" ORDER BY 1') == [(1, dt.date(2024, 1, 1)),
                                                                        (2, dt.date(2024, 1, 1))]


# --- schema drift -------------------------------------------------------------------------------------------
def test_new_column_is_added(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("day,qty\n2024-01-01,1\n")
    b.write_text("day,qty,Nueva Columna\n2024-01-02,2,x\n")
    engine.load(a, into=table, dsn=pg_dsn)
    report = engine.load(b, into=table, dsn=pg_dsn)
    assert report.columns_added == ["nueva_columna"]
    assert _columns(sql, table)["nueva_columna"] == "text"
    assert sql(f'SELECT qty, nueva_columna FROM "{table}" ORDER BY day') == [(1, None), (2, "x")]
    comment = sql("SELECT col_description(to_regclass($1), 4)", [f'"{table}"'])[0][0]
    assert comment == "source name: Nueva Columna"


def test_missing_column_is_left_null(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("day,qty,note\n2024-01-01,1,n\n")
    b.write_text("day,qty\n2024-01-02,2\n")
    engine.load(a, into=table, dsn=pg_dsn)
    engine.load(b, into=table, dsn=pg_dsn)
    assert sql(f'SELECT qty, note FROM "{table}" ORDER BY day') == [(1, "n"), (2, None)]


def test_integer_and_float_widening(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pl.DataFrame({"day": [dt.date(2024, 1, 1)], "n": pl.Series([1], dtype=pl.Int32),
                  "f": pl.Series([1], dtype=pl.Int64),
                  "r": pl.Series([1.5], dtype=pl.Float32)}).write_parquet(a)
    pl.DataFrame({"day": [dt.date(2024, 1, 2)], "n": pl.Series([2**40], dtype=pl.Int64),
                  "f": [2.25], "r": [1e300]}).write_parquet(b)
    engine.load(a, into=table, dsn=pg_dsn)
    assert _columns(sql, table)["n"] == "integer"
    report = engine.load(b, into=table, dsn=pg_dsn)
    assert sorted(report.columns_widened) == ["f", "n", "r"]
    cols = _columns(sql, table)
    assert (cols["n"], cols["f"], cols["r"]) == ("bigint", "double precision", "double precision")
    assert sql(f'SELECT n, f, r FROM "{table}" ORDER BY day') == [(1, 1.0, 1.5), (2**40, 2.25, 1e300)]


def test_narrower_incoming_values_are_cast_to_the_table(tmp_path: Path, pg_dsn: str, table: str,
                                                       sql: Sql) -> None:
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pl.DataFrame({"day": [dt.date(2024, 1, 1)], "n": [2**40], "f": [1.5]}).write_parquet(a)
    pl.DataFrame({"day": [dt.date(2024, 1, 2)], "n": pl.Series([7], dtype=pl.Int16),
                  "f": pl.Series([3], dtype=pl.Int32)}).write_parquet(b)
    engine.load(a, into=table, dsn=pg_dsn)
    report = engine.load(b, into=table, dsn=pg_dsn)
    assert report.columns_widened == [] and report.rows_loaded == 1
    assert _columns(sql, table)["n"] == "bigint"
    assert sql(f'SELECT n, f FROM "{table}" ORDER BY day') == [(2**40, 1.5), (7, 3.0)]


def test_text_into_an_existing_date_column(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    a, b = tmp_path / "a.parquet", tmp_path / "b.csv"
    pl.DataFrame({"ts": [dt.date(2024, 1, 1)], "born": [dt.date(1990, 1, 1)]}).write_parquet(a)
    b.write_text("ts,born\n2024-01-02,not a date\n2024-01-03,1991-02-03\n")
    engine.load(a, into=table, dsn=pg_dsn)
    report = engine.load(b, into=table, dsn=pg_dsn)
    _accounted(report)
    assert (report.rows_loaded, report.rows_quarantined) == (1, 1)
    assert _columns(sql, table)["born"] == "date"
    assert sql(f'SELECT born FROM "{table}" ORDER BY ts') == [(dt.date(1990, 1, 1),), (dt.date(1991, 2, 3),)]
    (row,) = _quarantine(sql, table)
    assert (row["rule"], row["column"], row["row_number"]) == ("type", "born", 2)
    assert row["reason"] == "not a date is not a valid date"


def test_text_into_the_existing_partition_column(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    """The table is partitioned on a date column; a later CSV has an unparseable value there, so that
    column samples as text: the bad row is quarantined, the others load."""
    a, b = tmp_path / "a.parquet", tmp_path / "b.csv"
    pl.DataFrame({"ts": [dt.date(2024, 1, 1)], "n": [1]}).write_parquet(a)
    b.write_text("ts,n\nnot a date,2\n2024-01-09,3\n")
    engine.load(a, into=table, partition_by="ts", dsn=pg_dsn)
    report = engine.load(b, into=table, partition_by="ts", dsn=pg_dsn)
    assert (report.rows_loaded, report.rows_quarantined) == (1, 1)
    assert sql(f'SELECT n FROM "{table}" ORDER BY ts') == [(1,), (3,)]


def test_incompatible_change_names_column_and_types(tmp_path: Path, pg_dsn: str, table: str,
                                                    sql: Sql) -> None:
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pl.DataFrame({"day": [dt.date(2024, 1, 1)], "n": [1]}).write_parquet(a)
    pl.DataFrame({"day": [dt.date(2024, 1, 2)], "n": [True]}).write_parquet(b)
    engine.load(a, into=table, dsn=pg_dsn)
    with pytest.raises(SchemaDriftError) as info:
        engine.load(b, into=table, dsn=pg_dsn)
    err = info.value
    assert (err.column, err.existing, err.incoming) == ("n", "bigint", "boolean")
    assert "'n'" in str(err) and "bigint" in str(err) and "boolean" in str(err)
    assert err.exit_code == 4
    assert _count(sql, table) == 1
    assert len(sql("SELECT 1 FROM biconic.loads WHERE dataset = $1", [table])) == 1


def test_freeze_contract_refuses_new_columns(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("day,qty\n2024-01-01,1\n")
    b.write_text("day,qty,extra\n2024-01-02,2,x\n")
    engine.load(a, into=table, dsn=pg_dsn, contract="freeze")
    with pytest.raises(SchemaDriftError) as info:
        engine.load(b, into=table, dsn=pg_dsn, contract="freeze")
    assert info.value.column == "extra" and info.value.existing is None
    assert "freeze" in str(info.value)
    assert "extra" not in _columns(sql, table)
    same_shape = tmp_path / "c.csv"
    same_shape.write_text("day,qty\n2024-01-03,3\n")
    assert engine.load(same_shape, into=table, dsn=pg_dsn, contract="freeze").rows_loaded == 1


# --- names --------------------------------------------------------------------------------------------------
def test_hostile_column_names(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    names = ["ts", '"; DROP TABLE x; --', "a" * 70, "a" * 69 + "b", "", "Dup", "dup", "Ñandú Año", "日付",
             "é" * 40]
    path = tmp_path / "hostile.parquet"
    pq.write_table(pa.table([pa.array([dt.date(2024, 1, 1)])] + [pa.array([i]) for i in range(1, len(names))],
                            names=names), path)
    report = engine.load(path, into=table, dsn=pg_dsn)
    assert report.rows_loaded == 1
    cols = list(_columns(sql, table))
    assert cols[:3] == ["connection_id", "ts", "drop_table_x"]
    assert cols[3].startswith("a" * 50) and cols[4].startswith("a" * 50) and cols[3] != cols[4]
    assert cols[5:9] == ["column_5", "dup", "dup_2", "ñandú_año"]
    assert cols[9] == "日付"
    assert cols[10].startswith("é" * 20)
    assert all(len(c.encode()) <= 63 for c in cols)
    assert sql(f'SELECT * FROM "{table}"')[0][2:] == tuple(range(1, len(names)))
    assert sql("SELECT to_regclass('x')") == [(None,)]  # nothing was dropped or created by a name
    again = engine.load(path, into=table, dsn=pg_dsn)  # the normalised names match on the next run
    assert again.skipped_partitions == 1


def test_columns_named_like_engine_bookkeeping_load(tmp_path: Path, pg_dsn: str, table: str,
                                                    sql: Sql) -> None:
    path = tmp_path / "sneaky.csv"
    path.write_text("day,__biconic_row,__biconic_note\n2024-01-01,7,secret\n")
    report = engine.load(path, into=table, dsn=pg_dsn)
    assert report.rows_loaded == 1
    assert list(_columns(sql, table)) == ["connection_id", "day", "biconic_row", "biconic_note"]
    assert sql(f'SELECT biconic_row, biconic_note FROM "{table}"') == [(7, "secret")]


def test_hostile_names_in_csv_header_load_twice_with_drift(tmp_path: Path, pg_dsn: str, table: str,
                                                          sql: Sql) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    long = "x" * 80
    a.write_text(f'day,"{long}",""\n2024-01-01,1,2\n')
    b.write_text(f'day,"{long}","",new\n2024-01-02,3,4,5\n')
    engine.load(a, into=table, dsn=pg_dsn)
    report = engine.load(b, into=table, dsn=pg_dsn)
    assert report.columns_added == ["new"]
    assert _count(sql, table) == 2


def test_names_kept_as_is_when_normalising_is_off(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    """normalize_names: false keeps 'Mixed Case'; a name over 63 bytes must still be shortened (PostgreSQL
    would truncate it silently and the COPY would then name a column the table does not have)."""
    path = tmp_path / "raw.parquet"
    pl.DataFrame({"day": [dt.date(2024, 1, 1)], "Mixed Case": [1], "L" * 70: [2]}).write_parquet(path)
    engine.load(path, into=table, dsn=pg_dsn, spec={"normalize_names": False})
    cols = list(_columns(sql, table))
    assert cols[:3] == ["connection_id", "day", "Mixed Case"]
    assert cols[3].startswith("L" * 50) and len(cols[3].encode()) <= 63
    assert sql(f'SELECT "Mixed Case" FROM "{table}"') == [(1,)]


def test_quoted_and_schema_qualified_table_names(tmp_path: Path, pg_dsn: str, sql: Sql) -> None:
    path = tmp_path / "a.csv"
    path.write_text("day,v\n2024-01-01,1\n")
    sql('CREATE SCHEMA IF NOT EXISTS "Sales Data"')
    engine.load(path, into="Sales Data.Order's", dsn=pg_dsn)
    assert sql('SELECT v FROM "Sales Data"."Order\'s"') == [(1,)]


@pytest.mark.parametrize("name", ["", "a\x00b", "x" * 64])
def test_unusable_table_names(tmp_path: Path, pg_dsn: str, name: str) -> None:
    path = tmp_path / "a.csv"
    path.write_text("day,v\n2024-01-01,1\n")
    with pytest.raises(SpecError) as info:
        engine.load(path, into=name, dsn=pg_dsn)
    assert info.value.path == "target.table"


# --- spec errors and run() ----------------------------------------------------------------------------------
def test_unknown_partition_column_did_you_mean(tmp_path: Path, pg_dsn: str, table: str) -> None:
    path = tmp_path / "a.csv"
    path.write_text("Fecha,v\n2024-01-01,1\n")
    with pytest.raises(SpecError) as info:
        engine.load(path, into=table, partition_by="fecha_x", dsn=pg_dsn)
    assert info.value.path == "target.partition_by"
    assert "unknown column 'fecha_x'; did you mean" in info.value.message


def test_partition_by_source_name_is_normalised(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    path = tmp_path / "a.csv"
    path.write_text("Fecha Pedido,v\n2024-01-01,1\n")
    report = engine.load(path, into=table, partition_by="Fecha Pedido", dsn=pg_dsn)
    assert report.time_column == "fecha_pedido"
    again = tmp_path / "b.csv"
    again.write_text("Fecha Pedido,v\n2024-02-01,2\n")
    engine.load(again, into=table, partition_by="Fecha Pedido", dsn=pg_dsn)
    assert _count(sql, table) == 2


def test_partition_by_a_text_column(tmp_path: Path, pg_dsn: str, table: str) -> None:
    path = tmp_path / "a.csv"
    path.write_text("day,v\n01/02/2024,1\n")
    with pytest.raises(SpecError, match="not a date or timestamp"):
        engine.load(path, into=table, partition_by="day", dsn=pg_dsn)


def test_unknown_column_in_the_spec_at_load(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    path = tmp_path / "a.csv"
    path.write_text("Fecha,v\n01/02/2024,1\n")
    with pytest.raises(SpecError) as info:
        engine.load(path, into=table, dsn=pg_dsn,
                    spec={"steps": [{"parse_date": {"column": "fecha", "format": "%d/%m/%Y"}}]})
    assert info.value.path == "steps[0].parse_date.column"
    assert "did you mean 'Fecha'?" in str(info.value)
    assert sql("SELECT to_regclass($1)", [f'"{table}"']) == [(None,)]


def test_run_pipeline_yaml_with_several_loads(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "orders_1.csv").write_text('order_id;Fecha;importe\n'
                                       '1;01/02/2024;"1.234,56"\n2;02/02/2024;"-1,00"\n')
    (data / "orders_2.csv").write_text('order_id;Fecha;importe\n1;01/02/2024;"10,00"\n3;03/03/2024;"5,00"\n')
    _orders(5).write_parquet(data / "customers.parquet")
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(textwrap.dedent(f"""\
        loads:
          - source: {{path: data/orders_*.csv, delimiter: ";"}}
            target: {{table: {table}, connection_id: 7, partition_by: "fecha:month", mode: merge,
                      key: [order_id]}}
            steps:
              - rename: {{Fecha: fecha}}
              - parse_date: {{column: fecha, format: "%d/%m/%Y"}}
              - parse_number: {{column: importe, decimal: ",", thousands: "."}}
              - derive: {{total: "importe * 1.21"}}
            rules:
              - range: {{column: importe, min: 0}}
          - source: data/customers.parquet
            target: {{table: {table}_c, partition_by: created_at}}
        """), encoding="utf-8")
    reports = engine.run(spec, dsn=pg_dsn)
    assert [r.table for r in reports] == [table, f"{table}_c"]
    orders, customers = reports
    assert orders.source_partitions == 2
    assert (orders.rows_in, orders.rows_loaded, orders.rows_quarantined) == (4, 3, 1)
    rows = sql(f'SELECT order_id, fecha, importe, total, connection_id FROM "{table}" ORDER BY 1')
    assert [r[:3] for r in rows] == [(1, dt.date(2024, 2, 1), 10.0), (3, dt.date(2024, 3, 3), 5.0)]
    assert [r[3] for r in rows] == [pytest.approx(12.1), pytest.approx(6.05)]
    assert {r[4] for r in rows} == {7}
    assert customers.rows_loaded == 5
    again = engine.run(spec, dsn=pg_dsn)
    assert [r.rows_loaded for r in again] == [0, 0]
    assert [r.skipped_partitions for r in again] == [2, 1]


def test_fixture_spanish_orders_pipeline(pg_dsn: str, sql: Sql) -> None:
    """fixtures/orders_es.yaml: cp1252, ';', day-first dates, '1.234,56' amounts, three bad rows."""
    (report,) = engine.run(FIXTURES / "orders_es.yaml", dsn=pg_dsn)
    _accounted(report)
    assert (report.rows_in, report.rows_loaded, report.rows_quarantined) == (6, 3, 3)
    assert report.quarantine_by_rule == {"parse_date": 1, "parse_number": 1, "range": 1}
    table = report.table
    assert list(_columns(sql, table)) == ["connection_id", "no_pedido", "fecha", "cliente", "importe",
                                          "ciudad"]
    assert sql(f'SELECT no_pedido, fecha, cliente, importe, ciudad FROM "{table}" ORDER BY 1') == [
        (1, dt.date(2024, 1, 5), "José Pérez", 1234.56, "Málaga"),
        (2, dt.date(2024, 1, 17), "Ñandú S.L.", 89.9, "A Coruña"),
        (6, dt.date(2024, 2, 29), "Íñigo", 2000.0, "Éibar"),
    ]
    assert set(_children(sql, table)) == {f"{table}_p2024_01", f"{table}_p2024_02"}
    assert [r["row_number"] for r in _quarantine(sql, table)] == [4, 5, 6]



def test_tiny_chunks_load_the_same_as_one_chunk(tmp_path: Path, pg_dsn: str, table: str, sql: Sql,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Partition-wide steps and rules (dedupe, unique) and row numbers must not depend on chunking."""
    lines = ["id,day,amount,note"]
    for i in range(1, 121):
        amount = "oops" if i % 17 == 0 else f"{(i % 7) - 1},5"
        note = '"multi\nline"' if i % 13 == 0 else "n"
        lines.append(f"{i % 40},2024-0{1 + i % 3}-{1 + i % 27:02d},\"{amount}\",{note}")
    path = tmp_path / "mixed.csv"
    path.write_bytes(("\n".join(lines) + "\n").encode() + b"999,2024-01-01,\"1,0\",bad\xed\xa0\x80\n")
    spec = {"steps": [{"parse_number": {"column": "amount", "decimal": ","}}, {"filter": "amount <> 0.5"},
                      {"dedupe": {"keys": ["id", "day"], "keep": "last"}}],
            "rules": [{"unique": "id"}, {"range": {"column": "amount", "min": 0}}]}

    def load(into: str) -> tuple[LoadReport, list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        report = engine.load(path, into=into, dsn=pg_dsn, spec=spec)
        rows = sql(f'SELECT id, day, amount, note FROM "{into}" ORDER BY id, day')
        quarantined = sql("SELECT row_number, rule FROM biconic.quarantine WHERE dataset = $1 ORDER BY 1",
                          [into])
        return report, rows, quarantined

    whole, whole_rows, whole_q = load(table)
    monkeypatch.setenv("BICONIC_CHUNK_MB", str(64 / (1 << 20)))
    monkeypatch.setenv("BICONIC_BATCH_ROWS", "3")
    tiny, tiny_rows, tiny_q = load(f"{table}_tiny")
    _accounted(whole)
    assert whole.rows_in == 121
    assert whole.rows_loaded > 0 and whole.rows_quarantined > 0 and whole.rows_filtered > 0
    assert "invalid_utf8" in whole.quarantine_by_rule
    assert (tiny.rows_in, tiny.rows_loaded, tiny.rows_quarantined, tiny.rows_filtered) == \
        (whole.rows_in, whole.rows_loaded, whole.rows_quarantined, whole.rows_filtered)
    assert tiny.quarantine_by_rule == whole.quarantine_by_rule
    assert tiny_rows == whole_rows
    assert tiny_q == whole_q
