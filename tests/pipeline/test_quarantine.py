"""Bad rows are data: they go to ``biconic.quarantine`` with their rule, column, reason, source row and raw values
as in the file, the other rows load, and every row is accounted for. Covers rule failures, values COPY cannot
carry (NUL, dates out of range, unsigned overflow), invalid UTF-8 and lone surrogates.

A test marked 'Regression (review fix N)' reproduces one defect reported in the review (commit
"Review fixes: replace scoped to the connection, ..."): it must fail if that fix is undone."""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from pathlib import Path
from typing import Any

import polars as pl

import engine
from tests.support import Sql, accounted, data_types, quarantine_rows


def _quarantine_raw(sql: Sql, table: str) -> list[dict[str, Any]]:
    rows = sql("SELECT raw FROM biconic.quarantine WHERE dataset = $1 ORDER BY row_number", [table])
    return [json.loads(str(r[0])) for r in rows]


# --- rules and raw values ---------------------------------------------------------------------------------------------
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
    accounted(report)
    assert (report.rows_in, report.rows_loaded, report.rows_quarantined, report.rows_filtered) == (6, 1, 4, 1)
    assert report.quarantine_by_rule == {"range": 1, "parse_date": 1, "parse_number": 1, "not_null": 1}
    assert sql(f'SELECT order_id, fecha, importe FROM "{table}"') == [(1, dt.date(2024, 2, 1), 1234.56)]
    q = quarantine_rows(sql, table)
    assert [(r["row_number"], r["rule"], r["column"]) for r in q] == [
        (3, "range", "importe"), (4, "parse_date", "fecha"), (5, "parse_number", "importe"),
        (6, "not_null", "order_id"),
    ]
    assert all(r["source"] == "orders_bad.csv" and r["connection_id"] == "9" for r in q)
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
    (row,) = quarantine_rows(sql, table)
    assert json.loads(row["raw"]) == {"day": "2024-01-02", "qty": "lots"}


def test_quarantine_raw_keeps_source_names_and_text_after_inference(tmp_path: Path, pg_dsn: str, table: str,
                                                                    sql: Sql) -> None:
    """A value past the type sample fails the table's type (evolve keeps an existing table's types, see
    test_late_drift); raw shows the file's own header and text."""
    first = tmp_path / "first.csv"
    first.write_text("Fecha Pedido,Cantidad\n2023-12-31,0\n")
    engine.load(first, into=table, dsn=pg_dsn)
    path = tmp_path / "t.csv"
    lines = [f"2024-01-01,{i}" for i in range(30)] + ["2024-01-02,12abc"]
    path.write_text("Fecha Pedido,Cantidad\n" + "\n".join(lines) + "\n")
    report = engine.load(path, into=table, dsn=pg_dsn, options={"infer_rows": 10})
    assert (report.rows_loaded, report.rows_quarantined) == (30, 1)
    (row,) = quarantine_rows(sql, table)
    assert json.loads(row["raw"]) == {"Fecha Pedido": "2024-01-02", "Cantidad": "12abc"}
    assert row["rule"] == "type" and row["row_number"] == 32


# Regression (review fix 3): quarantine raw for nested and duration values.
def test_parquet_list_and_duration_in_quarantine_raw(tmp_path: Path, pg_dsn: str, table: str,
                                                      sql: Sql) -> None:
    path = tmp_path / "nested.parquet"
    pl.DataFrame({
        "id": [1, None, 3],
        "day": [dt.date(2024, 1, 1), dt.date(2024, 1, 2), dt.date(2024, 1, 3)],
        "tags": [["a", "b"], ["x", "y z"], []],
        "took": [dt.timedelta(seconds=5), dt.timedelta(minutes=1, seconds=30), dt.timedelta(hours=2)],
    }, schema_overrides={"tags": pl.List(pl.String)}).write_parquet(path)
    report = engine.load(path, into=table, dsn=pg_dsn, spec={"rules": [{"not_null": ["id"]}]})
    accounted(report)
    assert (report.rows_in, report.rows_loaded, report.rows_quarantined) == (3, 2, 1)
    assert sql(f'SELECT id FROM "{table}" ORDER BY id') == [(1,), (3,)]
    (raw,) = _quarantine_raw(sql, table)
    assert raw["id"] is None
    assert isinstance(raw["tags"], str) and json.loads(raw["tags"]) == ["x", "y z"]
    assert isinstance(raw["took"], str) and raw["took"] == "PT1M30S"


# Regression (review fix 3): quarantine raw for nested and duration values.
def test_json_array_nested_list_in_quarantine_raw(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    path = tmp_path / "nested.json"
    path.write_text(json.dumps([
        {"id": 1, "pts": [[1, 2], [3]], "name": "a"},
        {"id": None, "pts": [[4], [5, 6]], "name": "b"},
        {"id": 3, "pts": [], "name": "c"},
    ]))
    report = engine.load(path, into=table, dsn=pg_dsn, spec={"rules": [{"not_null": ["id"]}]})
    accounted(report)
    assert (report.rows_in, report.rows_loaded, report.rows_quarantined) == (3, 2, 1)
    assert sql(f'SELECT id, name FROM "{table}" ORDER BY id') == [(1, "a"), (3, "c")]
    (raw,) = _quarantine_raw(sql, table)
    assert raw["id"] is None and raw["name"] == "b"
    assert isinstance(raw["pts"], str) and json.loads(raw["pts"]) == [[4], [5, 6]]


# --- values COPY cannot carry -----------------------------------------------------------------------------------------
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
    accounted(report)
    assert (report.rows_loaded, report.rows_quarantined) == (2, 4)
    assert report.quarantine_by_rule == {"copy_safe": 4}
    assert sql(f'SELECT u, nested FROM "{table}" ORDER BY ts') == [(1, '{"k":[1,2]}'), (5, '{"k":[]}')]
    q = quarantine_rows(sql, table)
    assert [(r["row_number"], r["column"]) for r in q] == [(2, "s"), (3, "d"), (4, "u"), (6, "u")]
    assert "NUL" in q[0]["reason"]
    assert "date range" in q[1]["reason"]
    assert q[2]["reason"] == f"{2**64 - 1} overflows bigint"
    cols = data_types(sql, table)
    assert cols["u"] == "bigint" and cols["nested"] == "text"


def test_invalid_utf8_row_is_quarantined_others_load(tmp_path: Path, pg_dsn: str, table: str,
                                                     sql: Sql) -> None:
    path = tmp_path / "surrogate.csv"
    path.write_bytes(b"id,day,name\n1,2024-01-01,ok\n2,2024-01-02,bad\xed\xa0\x80x\n3,2024-01-03,fine\n")
    report = engine.load(path, into=table, dsn=pg_dsn)
    accounted(report)
    assert (report.rows_in, report.rows_loaded, report.rows_quarantined) == (3, 2, 1)
    assert report.quarantine_by_rule == {"invalid_utf8": 1}
    assert sql(f'SELECT id, name FROM "{table}" ORDER BY id') == [(1, "ok"), (3, "fine")]
    (row,) = quarantine_rows(sql, table)
    assert (row["rule"], row["column"], row["row_number"], row["source"]) == ("invalid_utf8", "name", 3,
                                                                             "surrogate.csv")


def test_invalid_utf8_in_a_typed_column(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    path = tmp_path / "bad_num.csv"
    path.write_bytes(b"id,day\n1,2024-01-01\n2\xff,2024-01-02\n")
    report = engine.load(path, into=table, dsn=pg_dsn)
    accounted(report)
    assert (report.rows_loaded, report.rows_quarantined) == (1, 1)
    assert quarantine_rows(sql, table)[0]["rule"] == "invalid_utf8"


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
