"""Regression tests for the review fixes (commit "Review fixes: replace scoped to the connection, ..."):
each test reproduces one reported defect against a real PostgreSQL and must fail if the fix is undone."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner

import engine
from engine.cli import cli
from engine.errors import SinkError, SpecError
from engine.report import LoadReport

Sql = Callable[..., list[tuple[Any, ...]]]


def _accounted(report: LoadReport) -> None:
    assert report.rows_in == report.rows_loaded + report.rows_quarantined + report.rows_filtered


def _count(sql: Sql, table: str) -> int:
    return int(sql(f'SELECT count(*) FROM "{table}"')[0][0])


def _types(sql: Sql, table: str, schema: str = "public") -> dict[str, str]:
    """column -> format_type (so numeric(38,0) shows its precision), in table order."""
    rows = sql("SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
               "WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
               [f'"{schema}"."{table}"'])
    return {str(r[0]): str(r[1]) for r in rows}


def _ledger(sql: Sql, table: str) -> list[tuple[Any, ...]]:
    """(connection_id, source file name, rows_loaded) of the table's ledger rows."""
    rows = sql("SELECT connection_id, source, rows_loaded FROM biconic.loads WHERE dataset = $1", [table])
    return sorted((r[0], Path(str(r[1]).split("#")[0].split("[")[0]).name, r[2]) for r in rows)


def _quarantine_raw(sql: Sql, table: str) -> list[dict[str, Any]]:
    rows = sql("SELECT raw FROM biconic.quarantine WHERE dataset = $1 ORDER BY row_number", [table])
    return [json.loads(str(r[0])) for r in rows]


def _one_line_error(stderr: str) -> str:
    text = stderr.strip()
    assert "Traceback" not in stderr, stderr
    assert text.count("\n") == 0, f"expected one line, got:\n{stderr}"
    assert text.startswith("error: "), text
    return text


# --- 1. replace with a connection id replaces only that connection ------------------------------------------
def test_replace_with_connection_id_keeps_other_connections(tmp_path: Path, pg_dsn: str, table: str,
                                                            sql: Sql) -> None:
    c7, c8, r7 = tmp_path / "c7.csv", tmp_path / "c8.csv", tmp_path / "r7.csv"
    c7.write_text("day,v\n2024-01-01,1\n2024-01-02,2\n")
    c8.write_text("day,v\n2024-01-03,8\n")
    r7.write_text("day,v\n2024-01-05,70\n")
    assert engine.load(c7, into=table, connection_id=7, dsn=pg_dsn).rows_loaded == 2
    assert engine.load(c8, into=table, connection_id=8, dsn=pg_dsn).rows_loaded == 1

    report = engine.load(r7, into=table, connection_id=7, mode="replace", dsn=pg_dsn)
    _accounted(report)
    assert report.rows_loaded == 1
    rows = sql(f'SELECT connection_id, day, v FROM "{table}" ORDER BY connection_id, day')
    assert rows == [(7, dt.date(2024, 1, 5), 70), (8, dt.date(2024, 1, 3), 8)]
    assert _ledger(sql, table) == [(7, "r7.csv", 1), (8, "c8.csv", 1)]

    again = engine.load(r7, into=table, connection_id=7, mode="replace", dsn=pg_dsn)
    assert again.rows_loaded == 0
    assert sql(f'SELECT connection_id, day, v FROM "{table}" ORDER BY connection_id, day') == rows
    assert _ledger(sql, table) == [(7, "r7.csv", 1), (8, "c8.csv", 1)]

    # no connection id (and no connection_id column in the data): the whole table is replaced
    whole = tmp_path / "whole.csv"
    whole.write_text("day,v\n2024-02-01,100\n")
    report = engine.load(whole, into=table, mode="replace", dsn=pg_dsn)
    assert report.rows_loaded == 1
    assert sql(f'SELECT connection_id, day, v FROM "{table}"') == [(0, dt.date(2024, 2, 1), 100)]
    assert [r[1:] for r in _ledger(sql, table)] == [("whole.csv", 1)]


# --- 2. public.T and T share one ledger ---------------------------------------------------------------------
def test_public_schema_spelling_shares_the_ledger(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    path = tmp_path / "a.csv"
    path.write_text("day,v\n2024-01-01,1\n2024-01-02,2\n")
    first = engine.load(path, into=f"public.{table}", dsn=pg_dsn)
    assert first.rows_loaded == 2
    second = engine.load(path, into=table, dsn=pg_dsn)
    assert (second.rows_loaded, second.skipped_partitions) == (0, 1)
    third = engine.load(path, into=f"public.{table}", dsn=pg_dsn)
    assert (third.rows_loaded, third.skipped_partitions) == (0, 1)
    assert _count(sql, table) == 2
    assert len(sql("SELECT 1 FROM biconic.loads WHERE dataset IN ($1, $2)", [table, f"public.{table}"])) == 1


# --- 3. quarantine raw for nested and duration values -------------------------------------------------------
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
    _accounted(report)
    assert (report.rows_in, report.rows_loaded, report.rows_quarantined) == (3, 2, 1)
    assert sql(f'SELECT id FROM "{table}" ORDER BY id') == [(1,), (3,)]
    (raw,) = _quarantine_raw(sql, table)
    assert raw["id"] is None
    assert isinstance(raw["tags"], str) and json.loads(raw["tags"]) == ["x", "y z"]
    assert isinstance(raw["took"], str) and raw["took"] == "PT1M30S"


def test_json_array_nested_list_in_quarantine_raw(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    path = tmp_path / "nested.json"
    path.write_text(json.dumps([
        {"id": 1, "pts": [[1, 2], [3]], "name": "a"},
        {"id": None, "pts": [[4], [5, 6]], "name": "b"},
        {"id": 3, "pts": [], "name": "c"},
    ]))
    report = engine.load(path, into=table, dsn=pg_dsn, spec={"rules": [{"not_null": ["id"]}]})
    _accounted(report)
    assert (report.rows_in, report.rows_loaded, report.rows_quarantined) == (3, 2, 1)
    assert sql(f'SELECT id, name FROM "{table}" ORDER BY id') == [(1, "a"), (3, "c")]
    (raw,) = _quarantine_raw(sql, table)
    assert raw["id"] is None and raw["name"] == "b"
    assert isinstance(raw["pts"], str) and json.loads(raw["pts"]) == [[4], [5, 6]]


# --- 4. refuse non-partitioned targets before any DDL -------------------------------------------------------
def test_plain_table_is_refused_and_left_alone(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    sql(f'CREATE TABLE "{table}" (day date, v integer)')
    sql(f"INSERT INTO \"{table}\" VALUES ('2023-12-31', 0)")
    path = tmp_path / "a.csv"
    path.write_text("day,v,extra\n2024-01-01,1,x\n")
    with pytest.raises(SpecError) as info:
        engine.load(path, into=table, dsn=pg_dsn)
    assert "not range-partitioned" in str(info.value)
    assert _types(sql, table) == {"day": "date", "v": "integer"}
    assert sql(f'SELECT day, v FROM "{table}"') == [(dt.date(2023, 12, 31), 0)]
    assert sql("SELECT count(*) FROM biconic.loads WHERE dataset = $1", [table]) == [(0,)]


def test_view_is_refused_and_left_alone(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    view = f"{table}_v"
    sql(f"CREATE VIEW \"{view}\" AS SELECT DATE '2024-01-01' AS day, 1 AS v")
    path = tmp_path / "a.csv"
    path.write_text("day,v,extra\n2024-01-01,1,x\n")
    with pytest.raises(SpecError) as info:
        engine.load(path, into=view, dsn=pg_dsn)
    assert "not range-partitioned" in str(info.value)
    assert _types(sql, view) == {"day": "date", "v": "integer"}
    assert sql("SELECT relkind::text FROM pg_class WHERE oid = to_regclass($1)", [f'"{view}"']) == [("v",)]


# --- 5. connection ids outside bigint -----------------------------------------------------------------------
@pytest.mark.parametrize("cid", [2**63, -(2**63) - 1])
def test_connection_id_beyond_bigint_is_a_spec_error(tmp_path: Path, pg_dsn: str, table: str, sql: Sql,
                                                     cid: int) -> None:
    path = tmp_path / "a.csv"
    path.write_text("day,v\n2024-01-01,1\n")
    with pytest.raises(SpecError) as info:
        engine.load(path, into=table, connection_id=cid, dsn=pg_dsn)
    assert info.value.path == "target.connection_id"
    assert sql("SELECT to_regclass($1)", [f'"{table}"']) == [(None,)]


def test_connection_id_at_bigint_limit_loads(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    path = tmp_path / "a.csv"
    path.write_text("day,v\n2024-01-01,1\n")
    assert engine.load(path, into=table, connection_id=2**63 - 1, dsn=pg_dsn).rows_loaded == 1
    assert sql(f'SELECT connection_id FROM "{table}"') == [(2**63 - 1,)]


def test_cli_connection_beyond_bigint_is_one_line_exit_2(tmp_path: Path, pg_dsn: str, table: str) -> None:
    path = tmp_path / "a.csv"
    path.write_text("day,v\n2024-01-01,1\n")
    result = CliRunner().invoke(cli, ["load", str(path), "--into", table, "--connection",
                                      "99999999999999999999", "--dsn", pg_dsn])
    assert result.exit_code == 2, (result.output, result.exception)
    line = _one_line_error(result.stderr)
    assert line.startswith("error: target.connection_id"), line
    assert "99999999999999999999" in line


# --- 6. CSV option types checked up front -------------------------------------------------------------------
@pytest.mark.parametrize(("option", "name"), [("infer_rows=abc", "infer_rows"), ("skip_rows=-1", "skip_rows"),
                                              ("has_header=maybe", "has_header"),
                                              ("comment_prefix=", "comment_prefix")])
def test_cli_bad_csv_option_is_one_line_exit_2(tmp_path: Path, pg_dsn: str, table: str, sql: Sql, option: str,
                                               name: str) -> None:
    path = tmp_path / "a.csv"
    path.write_text("day,v\n2024-01-01,1\n")
    result = CliRunner().invoke(cli, ["load", str(path), "--into", table, "--option", option, "--dsn", pg_dsn])
    assert result.exit_code == 2, (result.output, repr(result.exception))
    line = _one_line_error(result.stderr)
    assert line.startswith(f"error: source.{name}:"), line
    assert "Traceback" not in result.output
    assert sql("SELECT to_regclass($1)", [f'"{table}"']) == [(None,)]


# --- 7. 20+ digit integers ----------------------------------------------------------------------------------
def test_csv_20_to_23_digit_integers_load_as_numeric(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    values = ["12345678901234567890123", "99999999999999999999", "-12345678901234567890", "9223372036854775808",
              "1"]
    path = tmp_path / "big.csv"
    path.write_text("day,big\n" + "".join(f"2024-01-0{i + 1},{v}\n" for i, v in enumerate(values)))
    report = engine.load(path, into=table, dsn=pg_dsn)
    _accounted(report)
    assert (report.rows_loaded, report.rows_quarantined) == (5, 0)
    assert _types(sql, table)["big"] == "numeric(38,0)"
    assert [r[0] for r in sql(f'SELECT big::text FROM "{table}" ORDER BY day')] == values


# --- 8. NDJSON keys first seen late in the file -------------------------------------------------------------
@pytest.mark.parametrize("chunk_mb", [None, "0.05"])
def test_ndjson_key_first_seen_after_row_10020(tmp_path: Path, pg_dsn: str, table: str, sql: Sql,
                                               monkeypatch: pytest.MonkeyPatch, chunk_mb: str | None) -> None:
    if chunk_mb:
        monkeypatch.setenv("BICONIC_CHUNK_MB", chunk_mb)
    path = tmp_path / "late.ndjson"
    with path.open("w") as f:
        for i in range(1, 10_051):
            row: dict[str, Any] = {"id": i, "name": f"n{i}"}
            if i > 10_020:
                row["late"] = f"v{i}"
                row["late_n"] = i * 2
            f.write(json.dumps(row) + "\n")
    report = engine.load(path, into=table, dsn=pg_dsn)
    _accounted(report)
    assert (report.rows_in, report.rows_loaded, report.rows_quarantined) == (10_050, 10_050, 0)
    types = _types(sql, table)
    assert "late" in types and "late_n" in types, types
    rows = sql(f'SELECT id, late, late_n FROM "{table}" WHERE late IS NOT NULL OR late_n IS NOT NULL '
               "ORDER BY id")
    assert rows == [(i, f"v{i}", i * 2) for i in range(10_021, 10_051)]


# --- 9. names that normalise alike keep their columns -------------------------------------------------------
def test_names_that_normalise_alike_keep_their_columns(tmp_path: Path, pg_dsn: str, table: str,
                                                       sql: Sql) -> None:
    a, b, c = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    a.write_text("day,a b,a-b\n2024-01-01,space1,dash1\n")
    b.write_text("day,a-b,a b\n2024-01-02,dash2,space2\n")
    c.write_text("day,a-b\n2024-01-03,dash3\n")
    engine.load(a, into=table, dsn=pg_dsn)
    engine.load(b, into=table, dsn=pg_dsn)
    engine.load(c, into=table, dsn=pg_dsn)
    cols = list(_types(sql, table))
    assert len(cols) == 4, cols  # connection_id, day and one column per source name: nothing added
    data = [c for c in cols if c not in ("connection_id", "day")]
    rows = sql(f'SELECT day, {", ".join(chr(34) + c + chr(34) for c in data)} FROM "{table}" ORDER BY day')
    first = dict(zip(data, rows[0][1:], strict=True))
    space = next(col for col, v in first.items() if v == "space1")
    dash = next(col for col, v in first.items() if v == "dash1")
    by_day = {r[0]: dict(zip(data, r[1:], strict=True)) for r in rows}
    assert (by_day[dt.date(2024, 1, 2)][space], by_day[dt.date(2024, 1, 2)][dash]) == ("space2", "dash2")
    assert (by_day[dt.date(2024, 1, 3)][space], by_day[dt.date(2024, 1, 3)][dash]) == (None, "dash3")


# --- 10. PostgreSQL's own words in SinkError ----------------------------------------------------------------
def test_merge_over_duplicate_rows_keeps_the_server_detail(tmp_path: Path, pg_dsn: str, table: str,
                                                           sql: Sql) -> None:
    dup, upd = tmp_path / "dup.csv", tmp_path / "upd.csv"
    dup.write_text("k,day,v\n1,2024-01-01,a\n1,2024-01-01,b\n")
    upd.write_text("k,day,v\n1,2024-01-01,c\n")
    engine.load(dup, into=table, dsn=pg_dsn)
    with pytest.raises(SinkError) as info:
        engine.load(upd, into=table, mode="merge", key="k", dsn=pg_dsn)
    message = str(info.value)
    assert "could not create unique index" in message, message
    assert "DETAIL" in message and "(connection_id, k, day)" in message and "is duplicated" in message, message
    assert info.value.exit_code == 5
    assert sorted(r[0] for r in sql(f'SELECT v FROM "{table}"')) == ["a", "b"]


def test_missing_schema_keeps_the_server_words(tmp_path: Path, pg_dsn: str) -> None:
    path = tmp_path / "a.csv"
    path.write_text("day,v\n2024-01-01,1\n")
    with pytest.raises(SinkError) as info:
        engine.load(path, into="no_such_schema.t", dsn=pg_dsn)
    assert 'schema "no_such_schema" does not exist' in str(info.value), str(info.value)
