"""Connection ids of every kind (issue 11): integers, UUIDs (the platform's key) and short text ids. The column
type is fixed when the dataset is created; an id of another kind is a one-line error; rows whose own value does
not fit are quarantined; an id given twice (``--connection`` and the rows' own column) must agree."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import polars as pl
import pytest

import engine
from engine.errors import SpecError
from tests.support import Sql, accounted, column_types, quarantine_rows, row_count

A = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
B = "9b2e6c1a-0d4f-4a8e-b1c2-7f3e5d6a8b90"


def _csv(path: Path, rows: list[str], header: str = "day,v") -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_uuid_id_makes_a_uuid_column_and_loads(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    src = _csv(tmp_path / "a.csv", ["2024-01-01,1", "2024-02-01,2"])
    report = engine.load(src, into=table, connection_id=uuid.UUID(A.upper()), dsn=pg_dsn)
    accounted(report)
    assert report.rows_loaded == 2
    assert column_types(sql, table)["connection_id"] == "uuid"
    assert sql(f'SELECT DISTINCT connection_id::text FROM "{table}"') == [(A,)]
    # the engine's own tables keep its canonical text
    assert sql("SELECT DISTINCT connection_id FROM biconic.loads WHERE dataset = $1", [table]) == [(A,)]
    assert {r[0] for r in sql("SELECT connection_id FROM biconic.archive_files WHERE dataset = $1", [table])} == {A}
    uris = [str(r[0]) for r in sql("SELECT uri FROM biconic.archive_files WHERE dataset = $1", [table])]
    assert uris and all(f"/connection_id={A}/" in u for u in uris)  # the id given in capitals, written lowercase
    # the same id written in capitals is the same id: the load key is unchanged, nothing is loaded twice
    again = engine.load(src, into=table, connection_id=A.upper(), dsn=pg_dsn)
    assert again.rows_loaded == 0 and again.skipped_partitions == 1


def test_text_id_makes_a_text_column(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    src = _csv(tmp_path / "a.csv", ["2024-01-01,1"])
    engine.load(src, into=table, connection_id="shop-eu:7", dsn=pg_dsn)
    assert column_types(sql, table)["connection_id"] == "text"
    assert sql(f'SELECT connection_id FROM "{table}"') == [("shop-eu:7",)]


def test_integer_id_keeps_a_bigint_column(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    engine.load(_csv(tmp_path / "a.csv", ["2024-01-01,1"]), into=table, connection_id=7, dsn=pg_dsn)
    assert column_types(sql, table)["connection_id"] == "bigint"


@pytest.mark.parametrize(("first", "later", "words"), [
    (A, 42, "is uuid; connection id 42 is an integer"),
    (7, A, f"is bigint; connection id '{A}' is a UUID"),
    (7, "shop", "is bigint; connection id 'shop' is text"),
])
def test_an_id_of_another_kind_is_one_line_error(tmp_path: Path, pg_dsn: str, table: str, sql: Sql,
                                                  first: object, later: object, words: str) -> None:
    engine.load(_csv(tmp_path / "a.csv", ["2024-01-01,1"]), into=table, connection_id=first, dsn=pg_dsn)  # type: ignore[arg-type]
    with pytest.raises(SpecError) as caught:
        engine.load(_csv(tmp_path / "b.csv", ["2024-01-02,2"]), into=table, connection_id=later, dsn=pg_dsn)  # type: ignore[arg-type]
    assert f"{table}.connection_id {words}" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert row_count(sql, table) == 1


def test_a_text_column_takes_any_id(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    engine.load(_csv(tmp_path / "a.csv", ["2024-01-01,1"]), into=table, connection_id="shop", dsn=pg_dsn)
    engine.load(_csv(tmp_path / "b.csv", ["2024-01-02,2"]), into=table, connection_id=42, dsn=pg_dsn)
    engine.load(_csv(tmp_path / "c.csv", ["2024-01-03,3"]), into=table, connection_id=A, dsn=pg_dsn)
    assert sorted(r[0] for r in sql(f'SELECT connection_id FROM "{table}"')) == sorted(["shop", "42", A])


def test_rows_own_uuids_fix_a_uuid_column_and_misfits_are_quarantined(tmp_path: Path, pg_dsn: str, table: str,
                                                                        sql: Sql) -> None:
    first = _csv(tmp_path / "a.csv", [f"{A.upper()},2024-01-01,1", f"{B},2024-01-02,2"], "connection_id,day,v")
    assert engine.load(first, into=table, dsn=pg_dsn).rows_loaded == 2
    assert column_types(sql, table)["connection_id"] == "uuid"
    assert sorted(r[0] for r in sql(f'SELECT connection_id::text FROM "{table}"')) == sorted([A, B])
    later = _csv(tmp_path / "b.csv", [f"{A},2024-01-03,3", "not-a-uuid,2024-01-04,4"], "connection_id,day,v")
    report = engine.load(later, into=table, dsn=pg_dsn)
    accounted(report)
    assert (report.rows_loaded, report.rows_quarantined) == (1, 1)
    (bad,) = quarantine_rows(sql, table)
    assert (bad["rule"], bad["column"], bad["row_number"], bad["connection_id"]) == \
        ("type", "connection_id", 3, "not-a-uuid")
    assert "is not a UUID" in bad["reason"]


def test_rows_own_text_ids_fix_a_text_column(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    src = _csv(tmp_path / "a.csv", [f"{A},2024-01-01,1", "shop,2024-01-02,2"], "connection_id,day,v")
    engine.load(src, into=table, dsn=pg_dsn)
    assert column_types(sql, table)["connection_id"] == "text"
    bad = _csv(tmp_path / "b.csv", ["has space,2024-01-03,3", "ok,2024-01-03,3"], "connection_id,day,v")
    report = engine.load(bad, into=table, dsn=pg_dsn)
    assert (report.rows_loaded, report.rows_quarantined) == (1, 1)


def test_rows_own_integers_into_a_uuid_column_is_one_line_error(tmp_path: Path, pg_dsn: str, table: str) -> None:
    engine.load(_csv(tmp_path / "a.csv", ["2024-01-01,1"]), into=table, connection_id=A, dsn=pg_dsn)
    ints = _csv(tmp_path / "b.csv", ["5,2024-01-02,2"], "connection_id,day,v")
    with pytest.raises(SpecError, match=f"{table}.connection_id is uuid; the rows' own connection_id values"):
        engine.load(ints, into=table, dsn=pg_dsn)


def test_replace_with_a_uuid_replaces_only_that_connection(tmp_path: Path, pg_dsn: str, table: str,
                                                           sql: Sql) -> None:
    engine.load(_csv(tmp_path / "a.csv", ["2024-01-01,1", "2024-01-02,2"]), into=table, connection_id=A, dsn=pg_dsn)
    engine.load(_csv(tmp_path / "b.csv", ["2024-01-03,3"]), into=table, connection_id=B, dsn=pg_dsn)
    report = engine.load(_csv(tmp_path / "r.csv", ["2024-01-09,9"]), into=table, connection_id=A, mode="replace",
                         dsn=pg_dsn)
    assert report.rows_loaded == 1
    rows = sql(f'SELECT connection_id::text, v FROM "{table}" ORDER BY v')
    assert rows == [(B, 3), (A, 9)]


@pytest.mark.parametrize("hash_partitions", [0, 4])
def test_merge_and_hash_partitions_with_uuids(tmp_path: Path, pg_dsn: str, table: str, sql: Sql,
                                              hash_partitions: int) -> None:
    rows = pl.DataFrame({"connection_id": [A, B, A], "id": [1, 1, 2], "day": [dt.date(2024, 1, d) for d in (1, 2, 3)],
                         "v": [1, 2, 3]})
    rows.write_parquet(tmp_path / "a.parquet")
    engine.load(tmp_path / "a.parquet", into=table, hash_partitions=hash_partitions, dsn=pg_dsn)
    rows.with_columns(pl.col("v") * 10).write_parquet(tmp_path / "b.parquet")
    report = engine.load(tmp_path / "b.parquet", into=table, mode="merge", key="id", dsn=pg_dsn)
    assert report.rows_loaded == 3
    assert sql(f'SELECT connection_id::text, id, v FROM "{table}" ORDER BY v') == [(A, 1, 10), (B, 1, 20), (A, 2, 30)]
    if hash_partitions:
        leaves = sql("SELECT count(*) FROM pg_partition_tree($1) WHERE isleaf", [f'"{table}"'])
        assert leaves == [(4,)]


# --- an id given twice ----------------------------------------------------------------------------------------
def test_given_id_differing_from_the_rows_own_is_refused(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    src = _csv(tmp_path / "a.csv", ["7,2024-01-01,1", "8,2024-01-02,2"], "connection_id,day,v")
    with pytest.raises(SpecError) as caught:
        engine.load(src, into=table, connection_id=7, dsn=pg_dsn)
    text = str(caught.value)
    assert "a.csv row 3" in text and "'8'" in text and "--connection-override" in text and "\n" not in text
    assert sql("SELECT count(*) FROM biconic.loads WHERE dataset = $1", [table]) in ([(0,)], [])
    # the same values as the given id are fine, as are nulls (they take the given id)
    same = _csv(tmp_path / "b.csv", ["7,2024-01-01,1", ",2024-01-02,2"], "connection_id,day,v")
    assert engine.load(same, into=table, connection_id=7, dsn=pg_dsn).rows_loaded == 2


def test_connection_override_replaces_the_rows_own(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    src = _csv(tmp_path / "a.csv", [f"{B},2024-01-01,1", "8,2024-01-02,2"], "connection_id,day,v")
    report = engine.load(src, into=table, connection_id=A, connection_override=True, dsn=pg_dsn)
    assert report.rows_loaded == 2
    assert sql(f'SELECT DISTINCT connection_id::text FROM "{table}"') == [(A,)]


def test_given_uuid_matches_the_rows_own_in_any_case(tmp_path: Path, pg_dsn: str, table: str) -> None:
    src = _csv(tmp_path / "a.csv", [f"{A.upper()},2024-01-01,1"], "connection_id,day,v")
    assert engine.load(src, into=table, connection_id=A, dsn=pg_dsn).rows_loaded == 1


def test_no_id_into_a_text_column_is_0_as_text(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    engine.load(_csv(tmp_path / "a.csv", ["2024-01-01,1"]), into=table, connection_id="shop", dsn=pg_dsn)
    engine.load(_csv(tmp_path / "b.csv", ["2024-01-02,2"]), into=table, dsn=pg_dsn)
    assert sorted(r[0] for r in sql(f'SELECT connection_id FROM "{table}"')) == ["0", "shop"]
