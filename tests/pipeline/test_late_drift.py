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


def test_evolve_widens_in_a_replace_too(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    """A replace reads each partition under a savepoint: the drift rolls back to it and reads again."""
    path = _ints_then(tmp_path, "n/a")
    report = engine.load(path, into=table, dsn=pg_dsn, mode="replace", options={"infer_rows": 10})
    assert (report.rows_loaded, report.rows_quarantined) == (51, 0)
    assert data_types(sql, table)["n"] == "text"


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


def _ndjson(tmp_path: Path, late: str, rows: int = 3000) -> Path:
    path = tmp_path / "late.ndjson"
    body = "".join(f'{{"day": "2024-01-01", "n": {i}}}\n' for i in range(rows))
    path.write_text(f'{body}{{"day": "2024-01-02", "n": {late}, "late_key": "new"}}\n')
    return path


@pytest.mark.parametrize("chunk_mb", ["0.01", "16"])  # the late line in a chunk of its own, or with the others
@pytest.mark.parametrize("late, stored", [('{"a": 1}', '{"a": 1}'), ("[1, 2]", "[1, 2]")])
def test_ndjson_a_number_that_becomes_an_object_late_is_read_as_text(tmp_path: Path, pg_dsn: str, table: str,
                                                                      sql: Sql, monkeypatch: pytest.MonkeyPatch,
                                                                      late: str, stored: str, chunk_mb: str) -> None:
    monkeypatch.setenv("BICONIC_CHUNK_MB", chunk_mb)
    report = engine.load(_ndjson(tmp_path, late), into=table, dsn=pg_dsn)
    assert (report.rows_loaded, report.rows_quarantined) == (3001, 0)
    types = data_types(sql, table)
    assert (types["n"], types["late_key"]) == ("text", "text")
    assert sql(f"SELECT n, late_key FROM \"{table}\" WHERE day = '2024-01-02'") == [(stored, "new")]
    assert sql(f"SELECT n FROM \"{table}\" WHERE day = '2024-01-01' ORDER BY n::int LIMIT 1") == [("0",)]


def test_ndjson_a_late_string_past_infer_rows_widens_under_evolve(tmp_path: Path, pg_dsn: str, table: str,
                                                                 sql: Sql) -> None:
    report = engine.load(_ndjson(tmp_path, '"many"'), into=table, dsn=pg_dsn, options={"infer_rows": 100})
    assert (report.rows_loaded, report.rows_quarantined) == (3001, 0)
    assert data_types(sql, table)["n"] == "text"
    with pytest.raises(SchemaDriftError, match=r"late\.ndjson row 3001 holds 'many'"):
        engine.load(_ndjson(tmp_path, '"many"'), into=f"{table}_f", dsn=pg_dsn, options={"infer_rows": 100},
                    contract="freeze")


def test_json_array_a_number_that_becomes_an_object_late_is_read_as_text(tmp_path: Path, pg_dsn: str,
                                                                         table: str, sql: Sql) -> None:
    path = tmp_path / "late.json"
    items = [f'{{"day": "2024-01-01", "n": {i}}}' for i in range(3000)]
    path.write_text("[" + ",\n".join([*items, '{"day": "2024-01-02", "n": {"a": 1}}']) + "]")
    report = engine.load(path, into=table, dsn=pg_dsn)
    assert (report.rows_loaded, report.rows_quarantined) == (3001, 0)
    assert data_types(sql, table)["n"] == "text"
    assert sql(f"SELECT n FROM \"{table}\" WHERE day = '2024-01-02'") == [('{"a": 1}',)]
