"""Late schema drift inside one file: values past the rows the types were inferred from that do not fit them.
Under ``evolve`` (the default) the column is widened and the file read again; under ``freeze`` the load is
refused, naming the file, row and column; a table's own type is kept (``freeze`` refuses text for it)."""

from __future__ import annotations

from pathlib import Path

import pytest

import engine
from engine.errors import SchemaDriftError
from tests.support import Sql, accounted, data_types, quarantine_rows, row_count


def _ints_then(tmp_path: Path, late: str, rows: int = 50) -> Path:
    path = tmp_path / "late.csv"
    body = "".join(f"2024-01-01,{i}\n" for i in range(rows))
    path.write_text(f"day,n\n{body}2024-01-02,{late}\n")
    return path


def test_evolve_widens_an_integer_column_to_text(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    path = _ints_then(tmp_path, "n/a")
    report = engine.load(path, into=table, dsn=pg_dsn, options={"infer_rows": 10})
    accounted(report)
    assert (report.rows_loaded, report.rows_quarantined) == (51, 0)
    assert data_types(sql, table)["n"] == "text"
    assert sql(f"SELECT n FROM \"{table}\" WHERE day = DATE '2024-01-02'") == [("n/a",)]
    assert quarantine_rows(sql, table) == []


def test_evolve_widens_integers_to_double_for_a_late_decimal(tmp_path: Path, pg_dsn: str, table: str,
                                                            sql: Sql) -> None:
    path = _ints_then(tmp_path, "2.5")
    report = engine.load(path, into=table, dsn=pg_dsn, options={"infer_rows": 10})
    assert (report.rows_loaded, report.rows_quarantined) == (51, 0)
    assert data_types(sql, table)["n"] == "double precision"
    assert sql(f"SELECT n FROM \"{table}\" WHERE day = DATE '2024-01-02'") == [(2.5,)]


def test_freeze_refuses_a_late_value_of_another_type(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    path = _ints_then(tmp_path, "n/a")
    with pytest.raises(SchemaDriftError) as info:
        engine.load(path, into=table, dsn=pg_dsn, options={"infer_rows": 10}, contract="freeze")
    err = info.value
    assert (err.column, err.existing, err.incoming) == ("n", "bigint", "text")
    assert "late.csv row 52" in str(err) and "'n/a'" in str(err) and "freeze" in str(err)
    assert err.exit_code == 4
    assert sql("SELECT to_regclass($1)", [f'"{table}"']) == [(None,)]


def test_freeze_refuses_text_for_an_integer_column_of_the_table(tmp_path: Path, pg_dsn: str, table: str,
                                                                sql: Sql) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("day,n\n2024-01-01,1\n")
    b.write_text("day,n\n2024-01-02,2\n2024-01-03,many\n")
    engine.load(a, into=table, dsn=pg_dsn, contract="freeze")
    with pytest.raises(SchemaDriftError) as info:
        engine.load(b, into=table, dsn=pg_dsn, contract="freeze")
    assert (info.value.column, info.value.existing, info.value.incoming) == ("n", "bigint", "text")
    assert "b.csv row 3" in str(info.value)
    assert row_count(sql, table) == 1 and quarantine_rows(sql, table) == []


def test_evolve_keeps_the_tables_type_and_quarantines_what_does_not_parse(tmp_path: Path, pg_dsn: str,
                                                                          table: str, sql: Sql) -> None:
    a = tmp_path / "a.csv"
    a.write_text("day,n\n2024-01-01,1\n")
    engine.load(a, into=table, dsn=pg_dsn)
    late = _ints_then(tmp_path, "n/a", rows=20)
    report = engine.load(late, into=table, dsn=pg_dsn, options={"infer_rows": 10})
    assert (report.rows_loaded, report.rows_quarantined) == (20, 1)
    assert data_types(sql, table)["n"] == "bigint"
    assert [(q["rule"], q["column"], q["row_number"]) for q in quarantine_rows(sql, table)] == [("type", "n", 22)]


def test_a_value_given_a_type_in_dtypes_is_quarantined_not_widened(tmp_path: Path, pg_dsn: str, table: str,
                                                                   sql: Sql) -> None:
    path = _ints_then(tmp_path, "n/a")
    report = engine.load(path, into=table, dsn=pg_dsn, options={"infer_rows": 10, "dtypes": {"n": "bigint"}})
    assert (report.rows_loaded, report.rows_quarantined) == (50, 1)
    assert data_types(sql, table)["n"] == "bigint"
