"""MongoDB (mongomock) and ADBC (SQLite, PostgreSQL) sources against a real PostgreSQL: the ADBC source reading
the test database through adbc_driver_postgresql, and end-to-end loads with partitions, types, incremental
re-runs."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mongomock
import polars as pl
import pytest
from bson import Decimal128

import engine
import engine.sources.api.mongo as mongo
import engine.sources.sql.adbc as adbc
from engine.errors import SourceError, SpecError
from engine.plan.columns import ROW_COLUMN
from engine.sources import open_source

Sql = Callable[..., list[tuple[Any, ...]]]
PASSWORD = "m0ngo-Secret"
MONGO_URL = f"mongodb://app:{PASSWORD}@db.example:27017/shop?collection=orders"


def _columns(sql: Sql, table: str) -> dict[str, str]:
    rows = sql("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = $1 "
               "ORDER BY ordinal_position", [table])
    return {str(r[0]): str(r[1]) for r in rows}


def _frame(source: adbc.AdbcSource) -> pl.DataFrame:
    part = source.partitions()[0]
    return pl.concat([factory(0).collect() for factory in source.chunks(part)])


# --- the ADBC source over adbc_driver_postgresql ---------------------------------------------------------------
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


# --- end to end: MongoDB ------------------------------------------------------------------------------------
@pytest.fixture
def mongo_client(monkeypatch: pytest.MonkeyPatch) -> Any:
    fake = mongomock.MongoClient()
    monkeypatch.setattr(mongo, "_client_factory", lambda url: fake)
    return fake


def _docs(start: int, n: int) -> list[dict[str, Any]]:
    base = dt.datetime(2024, 1, 15, 12)
    return [{"n": i, "created_at": base + dt.timedelta(days=20 * i), "updated_at": base + dt.timedelta(hours=i),
             "amount": Decimal128(f"{i}.25"), "qty": i if i % 2 else i + 0.5,
             "customer": {"name": f"c{i}", "geo": {"lat": 40.4}}, "tags": ["a", "b"]}
            for i in range(start, start + n)]


def test_load_mongodb_collection(pg_dsn: str, sql: Sql, table: str, mongo_client: Any) -> None:
    mongo_client.shop.orders.insert_many(_docs(0, 5))
    options = {"cursor": "updated_at"}
    report = engine.load(MONGO_URL, into=table, dsn=pg_dsn, partition_by="created_at", options=options, archive=False)
    assert report.rows_loaded == 5 and report.rows_quarantined == 0
    assert PASSWORD not in report.source
    assert len(report.partitions) == 4  # January to April
    cols = _columns(sql, table)
    assert cols["created_at"] == cols["updated_at"] == "timestamp with time zone"
    assert cols["amount"] == "numeric" and cols["qty"] == "double precision" and cols["n"] == "bigint"
    assert cols["customer_name"] == "text" and cols["customer_geo"] == "text" and cols["id"] == "text"
    row = sql(f'SELECT n, amount::text, qty, customer_geo, tags, length(id) FROM "{table}" WHERE n = 2')[0]
    assert row == (2, "2.25", 2.5, '{"lat":40.4}', '["a","b"]', 24)

    again = engine.load(MONGO_URL, into=table, dsn=pg_dsn, partition_by="created_at", options=options, archive=False)
    assert again.rows_loaded == 0
    assert sql(f'SELECT count(*) FROM "{table}"')[0][0] == 5

    mongo_client.shop.orders.insert_many(_docs(5, 2))
    more = engine.load(MONGO_URL, into=table, dsn=pg_dsn, partition_by="created_at", options=options, archive=False)
    assert more.rows_loaded == 2
    assert sorted(r[0] for r in sql(f'SELECT n FROM "{table}"')) == list(range(7))


def test_load_mongodb_full_read_reruns_add_nothing(pg_dsn: str, sql: Sql, table: str, mongo_client: Any) -> None:
    mongo_client.shop.orders.insert_many(_docs(0, 3))
    first = engine.load(MONGO_URL, into=table, dsn=pg_dsn, options={"mode": "document"}, archive=False)
    again = engine.load(MONGO_URL, into=table, dsn=pg_dsn, options={"mode": "document"}, archive=False)
    assert first.rows_loaded == 3 and again.rows_loaded == 0 and again.skipped_partitions == 1
    assert _columns(sql, table)["document"] == "text"
    assert sql(f"SELECT count(*) FROM \"{table}\" WHERE (document::jsonb ->> 'n') IS NOT NULL")[0][0] == 3


# --- end to end: SQLite through ADBC --------------------------------------------------------------------------
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
    cols = _columns(sql, table)
    assert cols["id"] == "bigint" and cols["amount"] == "double precision" and cols["status"] == "text"
    assert cols["created_at"].startswith("timestamp")
    assert run().rows_loaded == 0
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO orders VALUES (5, '2024-05-10T08:00:00', 7.5, 'open')")
    assert run().rows_loaded == 1
    assert sql(f'SELECT count(*), sum(amount) FROM "{table}"')[0] == (5, 22.5)
