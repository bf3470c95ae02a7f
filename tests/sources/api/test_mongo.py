"""The MongoDB source, against mongomock (no MongoDB server can be installed on these machines): filters and
projections, flattening, document mode, union schemas, BSON conversions, incremental reads, secrets."""

from __future__ import annotations

import datetime as dt
import decimal
import gc
import json
from collections.abc import Iterator
from typing import Any

import mongomock
import polars as pl
import pytest
from bson import Binary, Decimal128, ObjectId

import engine.sources.api.mongo as mongo
from engine.errors import SourceError, SourceUnavailableError, SpecError, TransientError
from engine.plan.columns import ROW_COLUMN
from engine.settings import settings
from engine.sources import open_source
from engine.sources.base import IncrementalSource, Source
from tests.sources._helpers import chunked, visible

PASSWORD = "s3cr3t-Pa55"
URL = f"mongodb://app:{PASSWORD}@db.example:27017/shop?collection=orders"


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Any:
    """One in-process mongomock server, handed to every source opened in the test."""
    fake = mongomock.MongoClient()
    monkeypatch.setattr(mongo, "_client_factory", lambda url: fake)
    return fake


def _open(options: dict[str, Any] | None = None, url: str = URL) -> mongo.MongoSource:
    source = open_source(url, options=options or {})
    assert isinstance(source, mongo.MongoSource)
    return source


def _frame(source: mongo.MongoSource) -> pl.DataFrame:
    """The rows the pipeline would load: every chunk, visible columns only."""
    return visible(chunked(source))


def _visible(frame: pl.LazyFrame | pl.DataFrame) -> list[str]:
    names = frame.collect_schema().names() if isinstance(frame, pl.LazyFrame) else frame.columns
    return [c for c in names if not c.startswith("__biconic")]


def _orders(client: Any, n: int = 6) -> None:
    client.shop.orders.insert_many([
        {"n": i, "status": "paid" if i % 2 else "open", "amount": i * 10,
         "customer": {"name": f"c{i}", "address": {"city": "Madrid", "geo": {"lat": 40.4}}},
         "items": [{"sku": "a", "qty": i}], "updated_at": dt.datetime(2024, 1, 1) + dt.timedelta(hours=i)}
        for i in range(1, n + 1)])


# --- the protocol and options -----------------------------------------------------------------------------
def test_is_an_incremental_source_with_one_partition(client: Any) -> None:
    _orders(client)
    source = _open({"cursor": "updated_at"})
    assert isinstance(source, Source) and isinstance(source, IncrementalSource)
    parts = source.partitions()
    assert len(parts) == 1
    assert parts[0].label == "mongodb://app:***@db.example:27017/shop.orders"


def test_every_accepted_option_is_documented() -> None:
    assert set(mongo.OPTIONS) == {"collection", "database", "filter", "projection", "flatten", "json_columns",
                                  "mode", "batch_rows", "cursor", "lag"}
    assert all(isinstance(v, str) and v for v in mongo.OPTIONS.values())


def test_unknown_option_lists_the_known_ones(client: Any) -> None:
    with pytest.raises(SpecError) as err:
        _open({"colection": "x"})
    assert err.value.path == "source.colection"
    assert "collection" in str(err.value) and "flatten" in str(err.value)


@pytest.mark.parametrize(("options", "path"), [
    ({"flatten": -1}, "source.flatten"), ({"flatten": "deep"}, "source.flatten"), ({"mode": "rows"}, "source.mode"),
    ({"batch_rows": 0}, "source.batch_rows"), ({"filter": "{not json"}, "source.filter"),
    ({"filter": [1, 2]}, "source.filter"), ({"lag": "soon"}, "source.lag"),
    ({"json_columns": [1]}, "source.json_columns"),
])
def test_bad_option_values_are_spec_errors(client: Any, options: dict[str, Any], path: str) -> None:
    with pytest.raises(SpecError) as err:
        _open(options)
    assert err.value.path == path


def test_collection_and_database_are_required(client: Any) -> None:
    with pytest.raises(SpecError, match="collection"):
        _open(url="mongodb://db.example:27017/shop")
    with pytest.raises(SpecError, match="database"):
        _open({"collection": "orders"}, url="mongodb://db.example:27017")
    _orders(client)
    assert _frame(_open({"collection": "orders", "database": "shop"}, url="mongodb://db.example")).height == 6


# --- filter, projection, flattening, document mode -----------------------------------------------------------
def test_filter_and_projection(client: Any) -> None:
    _orders(client)
    df = _frame(_open({"filter": {"status": "paid", "amount": {"$gte": 20}}, "projection": ["n", "amount"]}))
    assert sorted(df.columns) == ["_id", "amount", "n"]
    assert df["n"].to_list() == [3, 5]
    excluded = _frame(_open({"projection": {"customer": 0, "items": 0, "_id": 0}}))
    assert sorted(excluded.columns) == ["amount", "n", "status", "updated_at"]


def test_filter_in_extended_json_text(client: Any) -> None:
    _orders(client)
    oid = client.shop.orders.find_one({"n": 4})["_id"]
    df = _frame(_open({"filter": json.dumps({"_id": {"$oid": str(oid)}})}))
    assert df["n"].to_list() == [4]
    df = _frame(_open({"filter": {"updated_at": {"$gt": {"$date": "2024-01-01T04:30:00Z"}}}}))
    assert df["n"].to_list() == [5, 6]


@pytest.mark.parametrize(("depth", "columns", "json_column", "json_value"), [
    (0, {"customer", "items"}, "customer",
     {"name": "c1", "address": {"city": "Madrid", "geo": {"lat": 40.4}}}),
    (1, {"customer.name", "customer.address", "items"}, "customer.address",
     {"city": "Madrid", "geo": {"lat": 40.4}}),
    (2, {"customer.name", "customer.address.city", "customer.address.geo", "items"}, "customer.address.geo",
     {"lat": 40.4}),
])
def test_flatten_depth(client: Any, depth: int, columns: set[str], json_column: str, json_value: Any) -> None:
    _orders(client, 1)
    df = _frame(_open({"flatten": depth}))
    assert set(df.columns) == columns | {"_id", "n", "status", "amount", "updated_at"}
    assert df[json_column].dtype == pl.String
    assert json.loads(df[json_column][0]) == json_value
    assert json.loads(df["items"][0]) == [{"sku": "a", "qty": 1}]  # arrays are always JSON text


def test_flatten_defaults_to_one_level(client: Any) -> None:
    _orders(client, 1)
    assert "customer.name" in _frame(_open()).columns
    assert "customer.address" in _frame(_open()).columns


def test_json_columns_keep_a_field_whole(client: Any) -> None:
    _orders(client, 1)
    df = _frame(_open({"flatten": 3, "json_columns": ["customer.address"]}))
    assert "customer.name" in df.columns and "customer.address.city" not in df.columns
    assert json.loads(df["customer.address"][0]) == {"city": "Madrid", "geo": {"lat": 40.4}}


def test_document_mode(client: Any) -> None:
    _orders(client, 2)
    df = _frame(_open({"mode": "document"}))
    assert df.columns == ["_id", "document"]
    doc = json.loads(df["document"][0])
    assert doc["_id"] == df["_id"][0] and len(df["_id"][0]) == 24
    assert doc["customer"]["address"]["geo"] == {"lat": 40.4}
    assert doc["updated_at"] == "2024-01-01T01:00:00Z"


# --- schemas that vary from document to document -------------------------------------------------------------
def test_heterogeneous_documents_give_the_union_schema(client: Any) -> None:
    client.shop.orders.insert_many([
        {"k": 1, "price": 3, "only_first": "x"},
        {"k": 2, "price": 2.5},
        {"k": 3, "price": None, "late": True},
    ])
    source = _open()
    schema = source.scan(source.partitions()[0]).collect_schema()
    assert schema["price"] == pl.Float64 and schema["late"] == pl.Boolean and schema["only_first"] == pl.String
    df = _frame(source)
    assert df.sort("k")["price"].to_list() == [3.0, 2.5, None]
    assert df.sort("k")["only_first"].to_list() == ["x", None, None]
    assert df.sort("k")["late"].to_list() == [None, None, True]


def test_fields_first_seen_late_survive_chunking(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BICONIC_CHUNK_MB", "0.001")  # chunks of one 64 KB read each
    client.shop.orders.insert_many([{"k": i, "pad": "x" * 100} for i in range(2000)])
    client.shop.orders.insert_one({"k": 2000, "pad": "y", "late": 1.5, "when": dt.datetime(2024, 5, 1)})
    source = _open()
    part = source.partitions()[0]
    factories = list(source.chunks(part))
    assert len(factories) >= 3
    before = 0
    for factory in factories:
        df = factory(before).collect()
        assert {"late", "when"} <= set(df.columns)  # every chunk has the union's columns and types
        assert df.schema["late"] == pl.Float64 and df.schema["when"] == pl.Datetime("us", "UTC")
        assert df[ROW_COLUMN][0] == before + 1
        before += df.height
    assert before == 2001


def test_mixed_types_fall_back_to_text(client: Any) -> None:
    client.shop.orders.insert_many([{"k": 1, "code": 7}, {"k": 2, "code": "A7"},
                                    {"k": 3, "t": dt.datetime(2024, 1, 1)}, {"k": 4, "t": "yesterday"}])
    df = _frame(_open()).sort("k")
    assert df.schema["code"] == pl.String and df["code"].to_list() == ["7", "A7", None, None]
    assert df.schema["t"] == pl.String  # dates and free text in one field: kept as text, nothing lost
    assert df["t"].to_list()[2:] == ["2024-01-01T00:00:00.000000", "yesterday"]


# --- BSON values ------------------------------------------------------------------------------------------
def test_bson_conversions(client: Any) -> None:
    oid = ObjectId("65a1b2c3d4e5f60718293a4b")
    client.shop.orders.insert_many([
        {"_id": oid, "k": 1, "at": dt.datetime(2024, 3, 1, 10, 30, 15, 123000), "price": Decimal128("12.50"),
         "blob": Binary(b"\x00\x01hi"), "ref": ObjectId("65a1b2c3d4e5f60718293a4c"), "nan": float("nan"),
         "big": 2**53 + 1},
        {"k": 2, "at": None, "price": Decimal128("-1234567.125"), "ref": None, "nan": 1.5, "big": 1},
        {"k": 3, "price": 7},
    ])
    source = _open()
    df = _frame(source).sort("k")
    assert df["_id"][0] == "65a1b2c3d4e5f60718293a4b" and df.schema["_id"] == pl.String
    assert df.schema["at"] == pl.Datetime("us", "UTC")
    assert df["at"][0] == dt.datetime(2024, 3, 1, 10, 30, 15, 123000, tzinfo=dt.UTC)
    assert isinstance(df.schema["price"], pl.Decimal) and df.schema["price"].scale == 3
    assert df["price"].to_list() == [decimal.Decimal("12.500"), decimal.Decimal("-1234567.125"),
                                     decimal.Decimal("7.000")]
    assert df["blob"][0] == "AAFoaQ=="  # base64
    assert df["ref"].to_list() == ["65a1b2c3d4e5f60718293a4c", None, None]
    assert df["nan"].to_list() == [None, 1.5, None]
    assert df["big"].to_list() == [2**53 + 1, 1, None] and df.schema["big"] == pl.Int64
    assert source.schema().field("at").type.tz == "UTC"


def test_decimal_column_holds_every_whole_number_too(client: Any) -> None:
    client.shop.orders.insert_many([{"k": 1, "v": Decimal128("0.125")}, {"k": 2, "v": 10**17},
                                    {"k": 3, "v": Decimal128("1E-40")}, {"k": 4, "w": Decimal128("NaN")}])
    df = _frame(_open()).sort("k")
    assert df["v"].to_list()[:2] == ["0.125", "100000000000000000"]  # 1E-40 needs 41 digits: kept as text
    assert df["w"].to_list() == [None, None, None, None]
    client.shop.orders.delete_one({"k": 3})
    df = _frame(_open()).sort("k")
    assert df.schema["v"] == pl.Decimal(38, 3)
    assert df["v"].to_list()[:2] == [decimal.Decimal("0.125"), decimal.Decimal("100000000000000000.000")]


def test_nested_bson_values_inside_json_text(client: Any) -> None:
    client.shop.orders.insert_one({"meta": {"id": ObjectId("65a1b2c3d4e5f60718293a4b"),
                                            "at": dt.datetime(2024, 1, 2, 3, 4, 5), "d": Decimal128("1E+3"),
                                            "inf": float("inf")}})
    value = json.loads(_frame(_open({"flatten": 0}))["meta"][0])
    assert value == {"id": "65a1b2c3d4e5f60718293a4b", "at": "2024-01-02T03:04:05Z", "d": "1000", "inf": None}


def test_empty_collection_reads_as_no_rows(client: Any) -> None:
    source = _open()
    df = _frame(source)
    assert df.height == 0 and df.columns == ["_id"]


# --- fingerprints and the spool ---------------------------------------------------------------------------
def test_full_read_fingerprint_follows_the_content(client: Any) -> None:
    _orders(client, 3)
    first = _open().partitions()[0].fingerprint
    assert _open().partitions()[0].fingerprint == first
    client.shop.orders.update_one({"n": 2}, {"$set": {"amount": 999}})
    assert _open().partitions()[0].fingerprint != first


def test_spool_is_removed_with_its_source(client: Any) -> None:
    _orders(client, 3)
    source = _open()
    assert _frame(source).height == 3
    spools = list((settings().data_path / "tmp").glob("mongo-*.ndjson"))
    assert len(spools) == 1
    del source
    gc.collect()
    assert not spools[0].exists()


def test_spools_of_dead_processes_are_swept(client: Any) -> None:
    folder = settings().data_path / "tmp"
    folder.mkdir(parents=True)
    stale = folder / "mongo-999999999-abc.ndjson"
    stale.write_text("{}\n")
    _orders(client, 1)
    _frame(_open())
    assert not stale.exists()


# --- incremental ------------------------------------------------------------------------------------------
def test_incremental_second_run_reads_only_new_documents(client: Any) -> None:
    _orders(client, 4)
    source = _open({"cursor": "updated_at"})
    first = source.with_watermark(None)
    assert _frame(first)["n"].to_list() == [1, 2, 3, 4]
    high = first.high_watermark()
    assert high == "2024-01-01T04:00:00+00:00"

    client.shop.orders.insert_many([{"n": 5, "updated_at": dt.datetime(2024, 1, 1, 5)},
                                    {"n": 0, "updated_at": dt.datetime(2023, 12, 31)},  # late, below the mark
                                    {"n": 9}])  # no cursor value: never read incrementally
    second = _open({"cursor": "updated_at"}).with_watermark(high)
    assert _frame(second)["n"].to_list() == [5]
    assert second.high_watermark() == "2024-01-01T05:00:00+00:00"
    assert second.partitions()[0].fingerprint != first.partitions()[0].fingerprint
    assert second.watermark_key() == first.watermark_key()


def test_incremental_with_nothing_new_keeps_the_mark_and_the_columns(client: Any) -> None:
    _orders(client, 2)
    mark = "2024-01-01T02:00:00+00:00"
    again = _open({"cursor": "updated_at"}).with_watermark(mark)
    df = _frame(again)
    assert df.height == 0
    assert {"n", "amount", "updated_at", "customer.name"} <= set(df.columns)
    assert df.schema["updated_at"] == pl.Datetime("us", "UTC")
    assert again.high_watermark() == mark
    later = _open({"cursor": "updated_at"}).with_watermark("2030-01-01T00:00:00+00:00")
    assert later.high_watermark() == "2030-01-01T00:00:00+00:00"  # never moves back


def test_incremental_on_an_empty_collection(client: Any) -> None:
    source = _open({"cursor": "updated_at"}).with_watermark(None)
    assert source.high_watermark() is None
    assert _frame(source).height == 0


def test_lag_rereads_behind_the_watermark(client: Any) -> None:
    _orders(client, 4)
    source = _open({"cursor": "updated_at", "lag": "90m"}).with_watermark("2024-01-01T03:00:00+00:00")
    assert source.lag == 5400
    assert _frame(source)["n"].to_list() == [2, 3, 4]


def test_incremental_numeric_and_objectid_cursors(client: Any) -> None:
    _orders(client, 5)
    by_number = _open({"cursor": "n"}).with_watermark("3")
    assert _frame(by_number)["n"].to_list() == [4, 5] and by_number.high_watermark() == "5"
    ids = [d["_id"] for d in client.shop.orders.find().sort("_id", 1)]
    by_id = _open({"cursor": "_id"}).with_watermark(str(ids[2]))
    assert _frame(by_id)["n"].to_list() == [4, 5] and by_id.high_watermark() == str(ids[-1])


def test_incremental_combines_with_the_filter(client: Any) -> None:
    _orders(client, 6)
    source = _open({"cursor": "updated_at", "filter": {"status": "paid"}}).with_watermark("2024-01-01T02:00:00Z")
    assert _frame(source)["n"].to_list() == [3, 5]
    assert source.watermark_key() != _open({"cursor": "updated_at"}).watermark_key()


def test_bad_stored_watermark_is_a_clear_error(client: Any) -> None:
    _orders(client, 1)
    with pytest.raises(SpecError, match="does not fit"):
        _open({"cursor": "updated_at"}).with_watermark("not a date")


# --- secrets ----------------------------------------------------------------------------------------------
def test_password_never_in_labels_keys_or_repr(client: Any) -> None:
    _orders(client, 2)
    source = _open({"cursor": "updated_at"})
    bounded = source.with_watermark(None)
    part = bounded.partitions()[0]
    for text in (part.key, part.label, source.watermark_key(), repr(source), repr(bounded), str(source.label)):
        assert PASSWORD not in text


def test_password_never_in_errors(client: Any) -> None:
    _orders(client, 1)
    with pytest.raises(SourceError) as err:
        _frame(_open({"filter": {"$where_not": 1}}))
    assert PASSWORD not in str(err.value)
    assert "unknown top level operator" in str(err.value)
    assert err.value.source == "mongodb://app:***@db.example:27017/shop.orders"


def test_password_scrubbed_from_driver_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    import pymongo.errors

    def refuse(url: str) -> Iterator[Any]:
        raise pymongo.errors.ServerSelectionTimeoutError(f"cannot reach {url}")

    monkeypatch.setattr(mongo, "_client_factory", refuse)
    with pytest.raises(SourceUnavailableError) as err:  # unreachable: a retry may work
        _open().partitions()
    assert isinstance(err.value, TransientError)
    assert PASSWORD not in str(err.value) and "cannot reach" in str(err.value)
