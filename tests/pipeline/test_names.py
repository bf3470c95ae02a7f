"""Names end to end: hostile, long, blank, duplicate and unicode column names, names that normalise alike, names
kept as they are, and quoted, schema-qualified or unusable table names.

A test marked 'Regression (review fix N)' reproduces one defect reported in the review (commit
"Review fixes: replace scoped to the connection, ..."): it must fail if that fix is undone."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import engine
from engine.errors import SinkError, SpecError
from tests.support import Sql, column_types, data_types, row_count


# --- column names -----------------------------------------------------------------------------------------------------
def test_hostile_column_names(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    names = ["ts", '"; DROP TABLE x; --', "a" * 70, "a" * 69 + "b", "", "Dup", "dup", "Ñandú Año", "日付",
             "é" * 40]
    path = tmp_path / "hostile.parquet"
    pq.write_table(pa.table([pa.array([dt.date(2024, 1, 1)])] + [pa.array([i]) for i in range(1, len(names))],
                            names=names), path)
    report = engine.load(path, into=table, dsn=pg_dsn)
    assert report.rows_loaded == 1
    cols = list(data_types(sql, table))
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
    assert list(data_types(sql, table)) == ["connection_id", "day", "biconic_row", "biconic_note"]
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
    assert row_count(sql, table) == 2


def test_names_kept_as_is_when_normalising_is_off(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    """normalize_names: false keeps 'Mixed Case'; a name over 63 bytes must still be shortened (PostgreSQL
    would truncate it silently and the COPY would then name a column the table does not have)."""
    path = tmp_path / "raw.parquet"
    pl.DataFrame({"day": [dt.date(2024, 1, 1)], "Mixed Case": [1], "L" * 70: [2]}).write_parquet(path)
    engine.load(path, into=table, dsn=pg_dsn, spec={"normalize_names": False})
    cols = list(data_types(sql, table))
    assert cols[:3] == ["connection_id", "day", "Mixed Case"]
    assert cols[3].startswith("L" * 50) and len(cols[3].encode()) <= 63
    assert sql(f'SELECT "Mixed Case" FROM "{table}"') == [(1,)]


# Regression (review fix 9): names that normalise alike keep their columns.
def test_names_that_normalise_alike_keep_their_columns(tmp_path: Path, pg_dsn: str, table: str,
                                                       sql: Sql) -> None:
    a, b, c = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    a.write_text("day,a b,a-b\n2024-01-01,space1,dash1\n")
    b.write_text("day,a-b,a b\n2024-01-02,dash2,space2\n")
    c.write_text("day,a-b\n2024-01-03,dash3\n")
    engine.load(a, into=table, dsn=pg_dsn)
    engine.load(b, into=table, dsn=pg_dsn)
    engine.load(c, into=table, dsn=pg_dsn)
    cols = list(column_types(sql, table))
    assert len(cols) == 4, cols  # connection_id, day and one column per source name: nothing added
    data = [c for c in cols if c not in ("connection_id", "day")]
    rows = sql(f'SELECT day, {", ".join(chr(34) + c + chr(34) for c in data)} FROM "{table}" ORDER BY day')
    first = dict(zip(data, rows[0][1:], strict=True))
    space = next(col for col, v in first.items() if v == "space1")
    dash = next(col for col, v in first.items() if v == "dash1")
    by_day = {r[0]: dict(zip(data, r[1:], strict=True)) for r in rows}
    assert (by_day[dt.date(2024, 1, 2)][space], by_day[dt.date(2024, 1, 2)][dash]) == ("space2", "dash2")
    assert (by_day[dt.date(2024, 1, 3)][space], by_day[dt.date(2024, 1, 3)][dash]) == (None, "dash3")


# --- table names ------------------------------------------------------------------------------------------------------
def test_quoted_and_schema_qualified_table_names(tmp_path: Path, pg_dsn: str, sql: Sql) -> None:
    path = tmp_path / "a.csv"
    path.write_text("day,v\n2024-01-01,1\n")
    sql('CREATE SCHEMA IF NOT EXISTS "Sales Data"')
    engine.load(path, into="Sales Data.Order Lines", dsn=pg_dsn)
    assert sql('SELECT v FROM "Sales Data"."Order Lines"') == [(1,)]


@pytest.mark.parametrize("name", ["", "x" * 64, "s" * 64 + ".t"])
def test_unusable_table_names(tmp_path: Path, pg_dsn: str, name: str) -> None:
    path = tmp_path / "a.csv"
    path.write_text("day,v\n2024-01-01,1\n")
    with pytest.raises(SpecError) as info:
        engine.load(path, into=name, dsn=pg_dsn)
    assert info.value.path == "target.table"


@pytest.mark.parametrize(("name", "said"), [
    ("Order's", "a quote (')"), ('orders"; DROP TABLE x; --', 'a double quote ("), a semicolon (;)'),
    ("or`ders", "a backquote (`)"), ("a;b", "a semicolon (;)"), ("sales\\orders", "a backslash (\\)"),
    ("a\x00b", "a control character"), ("a\nb", "a control character"), ("tab\there", "a control character"),
    ("zero\u200bwidth", "a control character"),
])
def test_table_names_with_quotes_semicolons_or_control_characters_are_refused(
        tmp_path: Path, pg_dsn: str, sql: Sql, name: str, said: str) -> None:
    path = tmp_path / "a.csv"
    path.write_text("day,v\n2024-01-01,1\n")
    with pytest.raises(SpecError) as info:
        engine.load(path, into=name, dsn=pg_dsn)
    assert info.value.path == "target.table"
    assert said in str(info.value) and "\n" not in str(info.value)
    if "\x00" not in name:  # PostgreSQL text cannot hold NUL: that one cannot have made a table anyway
        assert sql("SELECT count(*) FROM pg_class WHERE relname = $1", [name.split(".")[-1]]) == [(0,)]


def test_into_names_the_flag_for_a_refused_table_name(tmp_path: Path, pg_dsn: str) -> None:
    from click.testing import CliRunner

    from engine.cli import cli

    path = tmp_path / "a.csv"
    path.write_text("day,v\n2024-01-01,1\n")
    result = CliRunner().invoke(cli, ["load", str(path), "--into", "x'; DROP TABLE y; --", "--dsn", pg_dsn])
    assert result.exit_code == 2
    assert result.output.startswith("error: --into: ") and result.output.count("\n") == 1, result.output
    assert "a quote (')" in result.output and "a semicolon (;)" in result.output


def test_a_dash_or_space_in_a_table_name_makes_readable_child_names(tmp_path: Path, pg_dsn: str, sql: Sql,
                                                                     table: str) -> None:
    path = tmp_path / "a.csv"
    path.write_text("day,v\n2024-01-01,1\n2024-02-01,2\n")
    for name, stem in [(f"{table}-eu", f"{table}_eu"), (f"{table} año", f"{table}_año")]:
        engine.load(path, into=name, partition_by="day:month", dsn=pg_dsn)
        children = sql("SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                       "WHERE i.inhparent = to_regclass($1) ORDER BY 1", ['"' + name + '"'])
        assert children == [(f"{stem}_p2024_01",), (f"{stem}_p2024_02",)]
        assert engine.query(f'SELECT sum(v) AS s FROM "{name}"', dsn=pg_dsn, cache=False)["s"].to_list() == [3]


def test_children_named_by_an_older_release_keep_their_rows(tmp_path: Path, pg_dsn: str, sql: Sql,
                                                            table: str) -> None:
    """A table ``x-eu`` made before children got readable names has ``xmeu_p2024_01``: a later load into
    that period must find it (a second child for the same range could not attach)."""
    name = f"{table}-eu"
    path = tmp_path / "a.csv"
    path.write_text("day,v\n2024-01-01,1\n")
    engine.load(path, into=name, partition_by="day:month", dsn=pg_dsn)
    sql(f'ALTER TABLE "{table}_eu_p2024_01" RENAME TO "{table}meu_p2024_01"')  # as the older release named it
    more = tmp_path / "b.csv"
    more.write_text("day,v\n2024-01-02,2\n2024-02-01,3\n")
    report = engine.load(more, into=name, partition_by="day:month", dsn=pg_dsn)
    assert sorted(report.partitions) == [f"{table}_eu_p2024_02", f"{table}meu_p2024_01"]
    assert sql(f'SELECT sum(v)::int FROM "{table}meu_p2024_01"') == [(3,)]
    assert sql(f'SELECT v FROM "{table}_eu_p2024_02"') == [(3,)]


def test_a_missing_schema_is_created(tmp_path: Path, pg_dsn: str, sql: Sql, table: str) -> None:
    path = tmp_path / "a.csv"
    path.write_text("day,v\n2024-01-01,1\n")
    engine.load(path, into=f"s_{table}.orders", dsn=pg_dsn)
    assert sql(f'SELECT v FROM "s_{table}".orders') == [(1,)]


def test_a_schema_that_cannot_be_created_is_one_line(tmp_path: Path, pg_dsn: str, table: str) -> None:
    path = tmp_path / "a.csv"
    path.write_text("day,v\n2024-01-01,1\n")
    with pytest.raises(SinkError) as info:  # "pg_" is reserved for the server's own schemas
        engine.load(path, into=f"pg_{table}.orders", dsn=pg_dsn)
    assert 'unacceptable schema name "pg_' in str(info.value) and "\n" not in str(info.value), str(info.value)
