"""Schema drift of an existing table: new columns are added, missing ones left null, numbers widened, narrower
values cast to the table, values the table's type cannot hold quarantined, and an incompatible change or a new
column under ``contract: freeze`` refused."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

import engine
from engine.errors import SchemaDriftError
from tests.support import Sql, accounted, data_types, quarantine_rows, row_count


def test_new_column_is_added(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("day,qty\n2024-01-01,1\n")
    b.write_text("day,qty,Nueva Columna\n2024-01-02,2,x\n")
    engine.load(a, into=table, dsn=pg_dsn)
    report = engine.load(b, into=table, dsn=pg_dsn)
    assert report.columns_added == ["nueva_columna"]
    assert data_types(sql, table)["nueva_columna"] == "text"
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
    assert data_types(sql, table)["n"] == "integer"
    report = engine.load(b, into=table, dsn=pg_dsn)
    assert sorted(report.columns_widened) == ["f", "n", "r"]
    cols = data_types(sql, table)
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
    assert data_types(sql, table)["n"] == "bigint"
    assert sql(f'SELECT n, f FROM "{table}" ORDER BY day') == [(2**40, 1.5), (7, 3.0)]


def test_text_into_an_existing_date_column(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    a, b = tmp_path / "a.parquet", tmp_path / "b.csv"
    pl.DataFrame({"ts": [dt.date(2024, 1, 1)], "born": [dt.date(1990, 1, 1)]}).write_parquet(a)
    b.write_text("ts,born\n2024-01-02,not a date\n2024-01-03,1991-02-03\n")
    engine.load(a, into=table, dsn=pg_dsn)
    report = engine.load(b, into=table, dsn=pg_dsn)
    accounted(report)
    assert (report.rows_loaded, report.rows_quarantined) == (1, 1)
    assert data_types(sql, table)["born"] == "date"
    assert sql(f'SELECT born FROM "{table}" ORDER BY ts') == [(dt.date(1990, 1, 1),), (dt.date(1991, 2, 3),)]
    (row,) = quarantine_rows(sql, table)
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
    assert row_count(sql, table) == 1
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
    assert "extra" not in data_types(sql, table)
    same_shape = tmp_path / "c.csv"
    same_shape.write_text("day,qty\n2024-01-03,3\n")
    assert engine.load(same_shape, into=table, dsn=pg_dsn, contract="freeze").rows_loaded == 1
