"""The MongoDB source (mongomock standing in for the server) loaded end to end into the real PostgreSQL:
partitions, types, incremental re-runs, the document layout."""

from __future__ import annotations

import datetime as dt
from typing import Any

import mongomock
import pytest
from bson import Decimal128

import engine
import engine.sources.api.mongo as mongo
from tests.support import Sql

PASSWORD = "m0ngo-Secret"
MONGO_URL = f"mongodb://app:{PASSWORD}@db.example:27017/shop?collection=orders"


def _columns(sql: Sql, table: str) -> dict[str, str]:
    rows = sql("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = $1 "
               "ORDER BY ordinal_position", [table])
    return {str(r[0]): str(r[1]) for r in rows}


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
