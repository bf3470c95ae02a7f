"""The generic ADBC source, with the SQLite driver and with the PostgreSQL driver reading the test database:
tables and queries, bounded chunks, incremental reads, missing drivers, bad queries, secrets, and a load end to
end. Live Snowflake and BigQuery warehouses are not tested here."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest

import engine
import engine.sources.sql.adbc as adbc
from engine.errors import SourceError, SourceUnavailableError, SpecError, TransientError
from engine.plan.columns import ROW_COLUMN
from engine.sources import open_source
from engine.sources.base import IncrementalSource, Source
from tests.sources._helpers import chunked
from tests.sources.sql._helpers import column_types
from tests.support import Sql


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A SQLite file with an ``orders`` table (5 rows) and a table whose name needs quoting."""
    path = tmp_path / "shop.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER, amount REAL, status TEXT, updated_at TEXT)")
        conn.executemany("INSERT INTO orders VALUES (?, ?, ?, ?)",
                         [(i, i * 1.5, "paid" if i % 2 else "open", f"2024-01-0{i} 10:00:00") for i in range(1, 6)])
        conn.execute('CREATE TABLE "Order Lines" (line INTEGER, "Sku Code" TEXT)')
        conn.execute("INSERT INTO \"Order Lines\" VALUES (1, 'A-1')")
    return path


def _open(db: Path, **options: Any) -> adbc.AdbcSource:
    source = open_source("adbc://sqlite", options={"uri": str(db), **options})
    assert isinstance(source, adbc.AdbcSource)
    return source


def _frame(source: adbc.AdbcSource) -> pl.DataFrame:
    return chunked(source)


def _insert(db: Path, *rows: tuple[Any, ...]) -> None:
    with sqlite3.connect(db) as conn:
        conn.executemany("INSERT INTO orders VALUES (?, ?, ?, ?)", rows)


# --- the protocol, the URL and options ------------------------------------------------------------------------
def test_is_an_incremental_source_with_one_partition(db: Path) -> None:
    source = _open(db, table="orders", cursor="id")
    assert isinstance(source, Source) and isinstance(source, IncrementalSource)
    parts = source.partitions()
    assert len(parts) == 1 and parts[0].label == f"adbc:sqlite:{db}#orders"


def test_every_accepted_option_is_documented() -> None:
    assert set(adbc.OPTIONS) == {"driver", "uri", "uri_env", "db_kwargs", "entrypoint", "table", "query", "cursor",
                                 "lag"}


def test_reads_a_table(db: Path) -> None:
    df = _frame(_open(db, table="orders"))
    assert df.columns == [ROW_COLUMN, "id", "amount", "status", "updated_at"]
    assert df["id"].to_list() == [1, 2, 3, 4, 5] and df[ROW_COLUMN].to_list() == [1, 2, 3, 4, 5]
    assert df.schema["amount"] == pl.Float64 and df.schema["status"] == pl.String


def test_reads_a_query(db: Path) -> None:
    source = _open(db, query="SELECT id, amount * 2 AS doubled FROM orders WHERE status = 'paid';")
    df = _frame(source)
    assert df.drop(ROW_COLUMN).to_dicts() == [{"id": 1, "doubled": 3.0}, {"id": 3, "doubled": 9.0},
                                              {"id": 5, "doubled": 15.0}]
    assert source.schema().names == ["id", "doubled"]
    assert "#query:" in source.partitions()[0].label


def test_url_forms(db: Path) -> None:
    by_url = open_source(f"adbc://sqlite?table=orders&uri={db}")
    as_format = open_source(str(db), format="adbc", options={"driver": "adbc_driver_sqlite", "table": "orders"})
    assert isinstance(by_url, adbc.AdbcSource) and isinstance(as_format, adbc.AdbcSource)
    assert _frame(by_url).height == _frame(as_format).height == 5
    assert by_url.watermark_key() == as_format.watermark_key()


def test_table_names_are_quoted(db: Path) -> None:
    df = _frame(_open(db, table="Order Lines"))
    assert df.drop(ROW_COLUMN).to_dicts() == [{"line": 1, "Sku Code": "A-1"}]


def test_read_and_schema(db: Path) -> None:
    source = _open(db, table="orders")
    reader = source.read(source.partitions()[0], columns=["id", "status"])
    table = reader.read_all()
    assert table.schema.names == ["id", "status"] and table.num_rows == 5
    assert source.schema().field("id").type == pa.int64()
    assert source.scan(source.partitions()[0]).collect().height == 5


def test_chunks_are_bounded(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BICONIC_CHUNK_ROWS", "2")
    with sqlite3.connect(db) as conn:
        conn.executemany("INSERT INTO orders VALUES (?, 0, 'x', '2024-02-01')", [(i,) for i in range(6, 2001)])
    source = _open(db, table="orders")
    sizes, before = [], 0
    for factory in source.chunks(source.partitions()[0]):
        df = factory(before).collect()
        assert df[ROW_COLUMN][0] == before + 1
        before += df.height
        sizes.append(df.height)
    assert before == 2000 and max(sizes) <= 1024 and len(sizes) >= 1000


def test_empty_result_keeps_its_columns(db: Path) -> None:
    df = _frame(_open(db, query="SELECT id, status FROM orders WHERE id < 0"))
    assert df.height == 0 and df.columns == [ROW_COLUMN, "id", "status"]


def test_full_read_fingerprint_is_the_source_and_table(db: Path) -> None:
    """As for the database source: a re-run of a full read is recognised (and skipped) like any re-run."""
    first = _open(db, table="orders").partitions()[0].fingerprint
    assert _open(db, table="orders").partitions()[0].fingerprint == first
    assert _open(db, query="SELECT * FROM orders").partitions()[0].fingerprint != first


@pytest.mark.parametrize(("options", "path"), [
    ({"tabel": "orders"}, "source.tabel"), ({}, "source.table"), ({"table": "orders", "query": "SELECT 1"},
                                                                    "source.table"),
    ({"table": "orders", "db_kwargs": ["x"]}, "source.db_kwargs"), ({"table": "orders", "lag": "-5"}, "source.lag"),
    ({"table": "orders", "cursor": ""}, "source.cursor"), ({"table": "orders", "uri_env": "X"}, "source.uri_env"),
])
def test_bad_options_are_spec_errors(db: Path, options: dict[str, Any], path: str) -> None:
    with pytest.raises(SpecError) as err:
        _open(db, **options)
    assert err.value.path == path


def test_driver_is_required() -> None:
    with pytest.raises(SpecError) as err:
        open_source("shop.db", format="adbc", options={"table": "orders"})
    assert err.value.path == "source.driver" and "snowflake" in str(err.value)


def test_missing_driver_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "adbc_driver_snowflake", None)  # import fails as if not installed
    source = open_source("adbc://snowflake", options={"uri": "app@acct/db/sch", "table": "ORDERS"})
    with pytest.raises(SpecError) as err:
        list(source.chunks(source.partitions()[0]))
    assert err.value.path == "source.driver"
    assert "pip install 'biconic-engine[snowflake]'" in str(err.value) and "adbc-driver-snowflake" in str(err.value)


def test_driver_package_connects_through_its_own_dbapi(db: Path) -> None:
    """No driver-manager path for a package: an entrypoint is refused, a URI the package needs is asked for."""
    with pytest.raises(SpecError) as err:
        open_source("adbc://sqlite", options={"uri": str(db), "table": "orders", "entrypoint": "init"}).schema()
    assert err.value.path == "source.entrypoint"
    with pytest.raises(SpecError) as err:
        open_source("adbc://postgresql", options={"table": "t"}).schema()
    assert err.value.path == "source.uri" and "needs a URI" in str(err.value)


def test_unloadable_driver_library_is_a_clear_error(tmp_path: Path) -> None:
    source = open_source("adbc://", options={"driver": str(tmp_path / "libnope.so"), "table": "t"})
    with pytest.raises(SourceError, match="cannot connect"):
        source.schema()


# --- errors -----------------------------------------------------------------------------------------------
def test_bad_query_is_a_clear_error(db: Path) -> None:
    with pytest.raises(SourceError) as err:
        _frame(_open(db, query="SELEC id FROM orders"))
    assert "the query failed" in str(err.value) and "syntax error" in str(err.value)
    assert "SELEC id FROM orders" in str(err.value)
    assert err.value.source.startswith("adbc:sqlite:")


def test_missing_table_is_a_clear_error(db: Path) -> None:
    with pytest.raises(SourceError, match="no such table"):
        _frame(_open(db, table="nope"))


# --- incremental ------------------------------------------------------------------------------------------
def test_incremental_second_run_reads_only_new_rows(db: Path) -> None:
    first = _open(db, table="orders", cursor="updated_at").with_watermark(None)
    assert _frame(first)["id"].to_list() == [1, 2, 3, 4, 5]
    high = first.high_watermark()
    assert high == "2024-01-05 10:00:00"
    _insert(db, (6, 9.0, "paid", "2024-01-06 10:00:00"), (0, 1.0, "late", "2023-12-31 00:00:00"))
    second = _open(db, table="orders", cursor="updated_at").with_watermark(high)
    assert _frame(second)["id"].to_list() == [6]
    assert second.high_watermark() == "2024-01-06 10:00:00"
    assert second.partitions()[0].fingerprint != first.partitions()[0].fingerprint
    # the same marks give the same fingerprint: a retried load is recognised
    again = _open(db, table="orders", cursor="updated_at").with_watermark(high)
    assert again.partitions()[0].fingerprint == second.partitions()[0].fingerprint


def test_incremental_query_with_numeric_cursor_and_lag(db: Path) -> None:
    source = _open(db, query="SELECT id, status FROM orders", cursor="id", lag=2).with_watermark("4")
    assert _frame(source)["id"].to_list() == [3, 4, 5]
    assert source.high_watermark() == "5"


def test_incremental_with_nothing_new_keeps_the_mark(db: Path) -> None:
    source = _open(db, table="orders", cursor="id").with_watermark("5")
    df = _frame(source)
    assert df.height == 0 and "amount" in df.columns
    assert source.high_watermark() == "5"
    assert _open(db, table="orders", cursor="id").with_watermark("99").high_watermark() == "99"


def test_incremental_on_an_empty_table(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM orders")
    source = _open(db, table="orders", cursor="id").with_watermark(None)
    assert source.high_watermark() is None and _frame(source).height == 0


def test_watermark_values_are_bound_not_spliced(db: Path) -> None:
    hostile = "2024-01-03' OR '1'='1"
    source = _open(db, table="orders", cursor="updated_at").with_watermark(hostile)
    assert _frame(source)["id"].to_list() == [4, 5]  # compared as text, never run as SQL


# --- secrets ----------------------------------------------------------------------------------------------
def test_secrets_from_the_environment_never_printed(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOP_DB", str(db))
    monkeypatch.setenv("SHOP_SECRET", "hunter2-XYZ")
    source = open_source("adbc://sqlite", options={"uri_env": "SHOP_DB", "table": "orders",
                                                   "db_kwargs": {"password_env": "SHOP_SECRET"}})
    assert isinstance(source, adbc.AdbcSource)
    assert str(db) not in source.label and "$SHOP_DB" in source.label
    for text in (repr(source), source.label, source.watermark_key(), source.partitions()[0].key):
        assert "hunter2-XYZ" not in text
    with pytest.raises(SourceError) as err:  # SQLite has no password option: its error must not echo it
        source.schema()
    assert "hunter2-XYZ" not in str(err.value)


def test_short_password_scrubbed_without_mangling_the_message() -> None:
    with pytest.raises(SourceUnavailableError) as err:  # refused: a retry may work
        open_source("adbc://postgresql", options={"uri": "postgresql://u:p@127.0.0.1:1/x", "table": "t"}).schema()
    assert isinstance(err.value, TransientError)
    assert "Connection refused" in str(err.value) and "libpq" in str(err.value) and ":p@" not in str(err.value)


def test_uri_password_never_printed() -> None:
    source = open_source("adbc://snowflake", options={"uri": "app:pw-Secret1@acct/db/sch?warehouse=wh",
                                                      "table": "ORDERS"})
    assert isinstance(source, adbc.AdbcSource)
    assert "pw-Secret1" not in repr(source) + source.label + source.watermark_key()
    assert source.label == "adbc:snowflake:app:***@acct/db/sch?warehouse=wh#ORDERS"


def test_missing_environment_variable(db: Path) -> None:
    source = open_source("adbc://sqlite", options={"uri": str(db), "table": "orders",
                                                   "db_kwargs": {"password_env": "BICONIC_NOT_SET_XYZ"}})
    with pytest.raises(SpecError, match="BICONIC_NOT_SET_XYZ is not set"):
        source.schema()


# --- the PostgreSQL driver, reading the test database ---------------------------------------------------------
@pytest.fixture
def events(sql: Sql, table: str) -> str:
    sql(f'CREATE TABLE "{table}" (id bigint, at timestamptz, amount numeric(12, 2), note text)')
    sql(f"INSERT INTO \"{table}\" SELECT i, timestamptz '2024-01-01 00:00+00' + i * interval '1 hour', i * 1.25, "
        f"'n' || i FROM generate_series(1, 5) i")
    return table


def _pg(pg_dsn: str, **options: Any) -> adbc.AdbcSource:
    source = open_source("adbc://postgresql", options={"uri": pg_dsn, **options})
    assert isinstance(source, adbc.AdbcSource)
    return source


def test_adbc_postgresql_table_and_query(pg_dsn: str, events: str) -> None:
    df = _frame(_pg(pg_dsn, table=events))
    assert df["id"].to_list() == [1, 2, 3, 4, 5]
    assert df.schema["at"] == pl.Datetime("us", "UTC")
    assert df.schema["amount"] == pl.String and df["amount"][0] == "1.25"  # the driver's numeric: opaque text
    q = _frame(_pg(pg_dsn, query=f'SELECT id, note FROM "{events}" WHERE id > 3 ORDER BY id'))
    assert q.drop(ROW_COLUMN).to_dicts() == [{"id": 4, "note": "n4"}, {"id": 5, "note": "n5"}]


def test_adbc_postgresql_incremental_on_timestamptz(pg_dsn: str, events: str, sql: Sql) -> None:
    first = _pg(pg_dsn, table=events, cursor="at").with_watermark(None)
    assert _frame(first).height == 5
    high = first.high_watermark()
    assert high == "2024-01-01T05:00:00+00:00"
    sql(f"INSERT INTO \"{events}\" VALUES (6, '2024-01-01 06:00+00', 1, 'new'), (0, '2023-01-01+00', 1, 'old')")
    second = _pg(pg_dsn, table=events, cursor="at").with_watermark(high)
    assert _frame(second)["id"].to_list() == [6]
    lagged = _pg(pg_dsn, query=f'SELECT * FROM "{events}"', cursor="at", lag="90m").with_watermark(high)
    assert sorted(_frame(lagged)["id"].to_list()) == [4, 5, 6]
    by_number = _pg(pg_dsn, table=events, cursor="id").with_watermark("4")
    assert _frame(by_number)["id"].to_list() == [5, 6]
    with pytest.raises(SpecError, match="'amount' is numeric, which cannot be a watermark"):
        _pg(pg_dsn, table=events, cursor="amount").with_watermark(None)


def test_adbc_postgresql_mixed_case_table(pg_dsn: str, sql: Sql, table: str) -> None:
    name = f"Mixed {table}"
    sql(f'CREATE TABLE "{name}" ("Id" int)')
    sql(f'INSERT INTO "{name}" VALUES (7)')
    assert _frame(_pg(pg_dsn, table=name, cursor="Id").with_watermark("1"))["Id"].to_list() == [7]


def test_adbc_postgresql_bad_query_and_hidden_password(pg_dsn: str) -> None:
    with pytest.raises(SourceError) as err:
        _frame(_pg(pg_dsn, query="SELECT no_such_column FROM pg_class"))
    assert "no_such_column" in str(err.value) and "the query failed" in str(err.value)
    bad = open_source("adbc://postgresql", options={"uri": "postgresql://u:pw-Hidden9@nonexistent.invalid:5432/x",
                                                    "table": "t"})
    with pytest.raises(SourceError) as err:
        bad.schema()
    assert "pw-Hidden9" not in str(err.value) and "cannot connect" in str(err.value)


# --- end to end: SQLite through ADBC into PostgreSQL ----------------------------------------------------------
def test_load_sqlite_table(pg_dsn: str, sql: Sql, table: str, tmp_path: Path) -> None:
    db = tmp_path / "shop.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER, created_at TEXT, amount REAL, status TEXT)")
        conn.executemany("INSERT INTO orders VALUES (?, ?, ?, ?)",
                         [(i, f"2024-0{i}-10T08:00:00", i * 1.5, "paid") for i in range(1, 5)])
    spec = {"steps": [{"parse_date": {"column": "created_at", "format": "%Y-%m-%dT%H:%M:%S", "kind": "datetime"}}]}
    options = {"uri": str(db), "table": "orders", "cursor": "id"}

    def run() -> Any:
        return engine.load("adbc://sqlite", into=table, dsn=pg_dsn, partition_by="created_at", spec=spec,
                           options=options, archive=False)

    first = run()
    assert first.rows_loaded == 4 and len(first.partitions) == 4
    cols = column_types(sql, table)
    assert cols["id"] == "bigint" and cols["amount"] == "double precision" and cols["status"] == "text"
    assert cols["created_at"].startswith("timestamp")
    assert run().rows_loaded == 0
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO orders VALUES (5, '2024-05-10T08:00:00', 7.5, 'open')")
    assert run().rows_loaded == 1
    assert sql(f'SELECT count(*), sum(amount) FROM "{table}"')[0] == (5, 22.5)
