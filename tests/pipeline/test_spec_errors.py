"""Loads refused before anything is written: spec errors only the data can reveal (unknown or text partition
columns, unknown columns in steps), targets that are not range-partitioned tables, and connection ids beyond
bigint (the limit itself loads).

A test marked 'Regression (review fix N)' reproduces one defect reported in the review (commit
"Review fixes: replace scoped to the connection, ..."): it must fail if that fix is undone."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

import engine
from engine.errors import SpecError
from tests.support import Sql, column_types


# --- spec errors found at load time -----------------------------------------------------------------------------------
def test_unknown_partition_column_did_you_mean(tmp_path: Path, pg_dsn: str, table: str) -> None:
    path = tmp_path / "a.csv"
    path.write_text("Fecha,v\n2024-01-01,1\n")
    with pytest.raises(SpecError) as info:
        engine.load(path, into=table, partition_by="fecha_x", dsn=pg_dsn)
    assert info.value.path == "target.partition_by"
    assert "unknown column 'fecha_x'; did you mean" in info.value.message


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


# --- targets that are not range-partitioned ---------------------------------------------------------------------------
# Regression (review fix 4): refuse non-partitioned targets before any DDL.
def test_plain_table_is_refused_and_left_alone(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    sql(f'CREATE TABLE "{table}" (day date, v integer)')
    sql(f"INSERT INTO \"{table}\" VALUES ('2023-12-31', 0)")
    path = tmp_path / "a.csv"
    path.write_text("day,v,extra\n2024-01-01,1,x\n")
    with pytest.raises(SpecError) as info:
        engine.load(path, into=table, dsn=pg_dsn)
    assert "not range-partitioned" in str(info.value)
    assert column_types(sql, table) == {"day": "date", "v": "integer"}
    assert sql(f'SELECT day, v FROM "{table}"') == [(dt.date(2023, 12, 31), 0)]
    assert sql("SELECT count(*) FROM biconic.loads WHERE dataset = $1", [table]) == [(0,)]


# Regression (review fix 4): refuse non-partitioned targets before any DDL.
def test_view_is_refused_and_left_alone(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    view = f"{table}_v"
    sql(f"CREATE VIEW \"{view}\" AS SELECT DATE '2024-01-01' AS day, 1 AS v")
    path = tmp_path / "a.csv"
    path.write_text("day,v,extra\n2024-01-01,1,x\n")
    with pytest.raises(SpecError) as info:
        engine.load(path, into=view, dsn=pg_dsn)
    assert "not range-partitioned" in str(info.value)
    assert column_types(sql, view) == {"day": "date", "v": "integer"}
    assert sql("SELECT relkind::text FROM pg_class WHERE oid = to_regclass($1)", [f'"{view}"']) == [("v",)]


# --- connection ids ---------------------------------------------------------------------------------------------------
# Regression (review fix 5): connection ids outside bigint.
@pytest.mark.parametrize("cid", [2**63, -(2**63) - 1])
def test_connection_id_beyond_bigint_is_a_spec_error(tmp_path: Path, pg_dsn: str, table: str, sql: Sql,
                                                     cid: int) -> None:
    path = tmp_path / "a.csv"
    path.write_text("day,v\n2024-01-01,1\n")
    with pytest.raises(SpecError) as info:
        engine.load(path, into=table, connection_id=cid, dsn=pg_dsn)
    assert info.value.path == "target.connection_id"
    assert sql("SELECT to_regclass($1)", [f'"{table}"']) == [(None,)]


# Regression (review fix 5): connection ids outside bigint.
def test_connection_id_at_bigint_limit_loads(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    path = tmp_path / "a.csv"
    path.write_text("day,v\n2024-01-01,1\n")
    assert engine.load(path, into=table, connection_id=2**63 - 1, dsn=pg_dsn).rows_loaded == 1
    assert sql(f'SELECT connection_id FROM "{table}"') == [(2**63 - 1,)]
