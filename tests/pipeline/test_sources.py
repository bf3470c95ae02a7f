"""Every file source kind loads end to end (CSV, TSV, Parquet, JSON, NDJSON), a folder or a glob loads one
partition per file, the encoding option is honoured, and a broken file is a SourceError."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

import engine
from engine.errors import EmptySourceError, SourceError
from tests.support import Sql, accounted, child_bounds, orders_frame, row_count


# --- every source kind ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["csv", "tsv", "parquet", "json", "ndjson"])
def test_every_source_kind_loads(tmp_path: Path, pg_dsn: str, table: str, sql: Sql, kind: str) -> None:
    df = orders_frame(20)
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
    accounted(report)
    assert (report.rows_in, report.rows_loaded, report.rows_quarantined) == (20, 20, 0)
    assert report.time_column == "created_at"
    assert row_count(sql, table) == 20
    rows = sql(f'SELECT connection_id, order_id, created_at, amount, city FROM "{table}" ORDER BY order_id')
    assert rows[0] == (3, 1, dt.datetime(2024, 1, 1, 12), 0.0, "Madrid")
    assert rows[-1][1:] == (20, dt.datetime(2024, 1, 1, 12) + dt.timedelta(days=133), 28.5, "Lima")
    assert rows[2][4] == "Bogotá"


def test_folder_and_glob_load_one_partition_per_file(tmp_path: Path, pg_dsn: str, table: str,
                                                     sql: Sql) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        orders_frame(5, start=dt.date(2024, 1 + i, 1), step_days=1).write_parquet(folder / f"part{i}.parquet")
    report = engine.load(folder, into=table, partition_by="created_at", dsn=pg_dsn)
    assert report.source_partitions == 3
    assert report.rows_loaded == 15
    assert sorted(child_bounds(sql, table)) == [f"{table}_p2024_01", f"{table}_p2024_02", f"{table}_p2024_03"]
    again = engine.load(str(folder / "part*.parquet"), into=table, partition_by="created_at", dsn=pg_dsn)
    assert again.rows_loaded == 0 and again.skipped_partitions == 3
    assert row_count(sql, table) == 15


def test_latin1_file_with_the_encoding_option(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("día;ciudad;importe\n2024-01-01;Peñíscola;€5\n".encode("cp1252"))
    engine.load(path, into=table, options={"delimiter": ";", "encoding": "cp1252"}, dsn=pg_dsn)
    assert sql(f'SELECT día, ciudad, importe FROM "{table}"') == [(dt.date(2024, 1, 1), "Peñíscola", "€5")]


def test_a_semicolon_file_loads_in_columns_and_the_report_names_the_delimiter(tmp_path: Path, pg_dsn: str,
                                                                              table: str, sql: Sql) -> None:
    """Read with ``,`` it used to load as one column ``id_created_at_name`` with exit 0."""
    path = tmp_path / "semi.csv"
    path.write_text("id;created_at;name\n1;2024-01-01;a\n2;2024-01-02;b\n", encoding="utf-8")
    report = engine.load(path, into=table, dsn=pg_dsn)
    assert sql(f'SELECT id, name FROM "{table}" ORDER BY id') == [(1, "a"), (2, "b")]
    assert report.notes == ["semi.csv: delimiter ';' (sniffed; set --option delimiter=... to override)"]
    assert "read: semi.csv: delimiter ';'" in report.summary()


def test_a_cp1252_file_without_the_encoding_option_is_detected(tmp_path: Path, pg_dsn: str, table: str,
                                                                sql: Sql) -> None:
    """It used to end with every accented row quarantined; now it loads and the report says cp1252."""
    path = tmp_path / "latin.csv"
    path.write_bytes("".join(["día;ciudad\n"] + [f"{i};Peñíscola {i}\n" for i in range(10)]).encode("cp1252"))
    report = engine.load(path, into=table, dsn=pg_dsn)
    assert (report.rows_loaded, report.rows_quarantined) == (10, 0)
    assert sql(f'SELECT ciudad FROM "{table}" ORDER BY día LIMIT 1') == [("Peñíscola 0",)]
    assert report.notes[0].startswith("latin.csv: encoding cp1252 (detected")


def _wide(path: Path, names: list[str]) -> Path:
    path.write_text(",".join(names) + "\n" + ",".join("1" for _ in names) + "\n")
    return path


def test_more_columns_than_postgresql_allows_names_the_file(tmp_path: Path, pg_dsn: str, table: str,
                                                            sql: Sql) -> None:
    """It used to be PostgreSQL's raw CREATE/ALTER error, which names no file; nothing is created."""
    with pytest.raises(SourceError) as info:
        engine.load(_wide(tmp_path / "wide.csv", [f"c{i}" for i in range(1700)]), into=table, dsn=pg_dsn)
    message = str(info.value)
    assert message.startswith("wide.csv: the table would need 1702 columns, more than the 1600")
    assert "--layout document" in message and "\n" not in message
    assert sql("SELECT to_regclass($1) IS NULL", [f'"{table}"']) == [(True,)]
    engine.load(_wide(tmp_path / "half.csv", [f"a{i}" for i in range(900)]), into=table, dsn=pg_dsn)
    with pytest.raises(SourceError, match=r"^more.csv: the table would need 1802 columns \(it has 902\)"):
        engine.load(_wide(tmp_path / "more.csv", [f"b{i}" for i in range(900)]), into=table, dsn=pg_dsn)


@pytest.mark.parametrize("content", [b"", b"id,day\n"])
def test_replace_with_an_empty_file_only_when_allowed(tmp_path: Path, pg_dsn: str, table: str, sql: Sql,
                                                    content: bytes) -> None:
    """Refused, an empty export keeps the table's rows; allowed, it replaces them with nothing."""
    (tmp_path / "full.csv").write_text("id,day\n1,2024-01-01\n")
    engine.load(tmp_path / "full.csv", into=table, dsn=pg_dsn)
    empty = tmp_path / "empty.csv"
    empty.write_bytes(content)
    with pytest.raises(EmptySourceError, match="^empty.csv: .*--allow-empty"):
        engine.load(empty, into=table, mode="replace", dsn=pg_dsn)
    assert row_count(sql, table) == 1
    report = engine.load(empty, into=table, mode="replace", allow_empty=True, dsn=pg_dsn)
    assert (report.rows_in, report.rows_loaded) == (0, 0)
    assert row_count(sql, table) == 0


# --- a broken source --------------------------------------------------------------------------------------------------
def test_corrupt_parquet_is_a_source_error(tmp_path: Path, pg_dsn: str, table: str) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(SourceError) as info:
        engine.load(path, into=table, dsn=pg_dsn)
    assert "broken.parquet" in str(info.value)
    assert info.value.exit_code == 3
