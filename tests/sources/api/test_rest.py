"""REST sources against a real HTTP server on loopback (pytest-httpserver): where the records are, malformed
pages, the schema as the union over pages, flattening, ISO times, the one partition and its spool, and
incremental bounds. (Paging is in test_paginate.py, auth, retries and secrets in test_http.py.)"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from engine.errors import SourceError, SpecError
from engine.plan.columns import ROW_COLUMN
from engine.settings import settings
from engine.sources import open_source
from engine.sources.api.graphql import GraphQLSource, open_graphql
from engine.sources.api.rest import RestSource, open_rest
from tests.sources.api._helpers import items, json_response, rows, serve


def _tmp() -> Path:
    return settings().data_path / "tmp"


def test_every_record_with_its_row_number(server: HTTPServer) -> None:
    serve(server, lambda r: json_response(items(1, 4)))
    source = open_rest(server.url_for("/v1/items"), {})
    assert rows(source)["id"].to_list() == [1, 2, 3, 4]
    assert source.scan(source.partitions()[0]).collect()[ROW_COLUMN].to_list() == [1, 2, 3, 4]


def test_records_path_missing(server: HTTPServer) -> None:
    serve(server, lambda r: json_response({"data": {"rows": []}, "meta": {}}))
    source = open_rest(server.url_for("/v1/items"), {"records": "data.items"})
    with pytest.raises(SourceError, match=r"page 1 .*no 'data\.items' in the response \(an object with keys "
                                          r"data, meta\)"):
        source.partitions()


def test_object_body_without_records_path_hints_at_the_list(server: HTTPServer) -> None:
    serve(server, lambda r: json_response({"results": items(1, 2), "count": 2}))
    with pytest.raises(SourceError, match="set records to 'results'"):
        open_rest(server.url_for("/v1/items"), {}).partitions()


def test_record_that_is_not_an_object(server: HTTPServer) -> None:
    serve(server, lambda r: json_response({"items": [{"id": 1}, 7]}))
    with pytest.raises(SourceError, match="page 1: record 2 is a int, not an object"):
        open_rest(server.url_for("/v1/items"), {"records": "items"}).partitions()


def test_schema_is_the_union_over_pages(server: HTTPServer) -> None:
    pages = [[{"id": 1, "amount": 10}, {"id": 2, "amount": 20}],
             [{"id": 3, "amount": 2.5}],
             [{"id": 4, "amount": 7, "note": "late field"}]]

    def handler(r: Request) -> Response:
        page = int(r.args["page"])
        return json_response({"items": pages[page - 1], "pages": 3})

    serve(server, handler)
    source = open_rest(server.url_for("/v1/items"), {"records": "items", "pagination": {
        "style": "page", "total_pages_path": "pages"}})
    df = rows(source)
    assert df.schema["amount"] == pl.Float64 and df.schema["id"] == pl.Int64
    assert df["amount"].to_list() == [10.0, 20.0, 2.5, 7.0]
    assert df["note"].to_list() == [None, None, None, "late field"]
    assert source.schema().names == ["id", "amount", "note"]
    # chunks and read agree with scan
    part = source.partitions()[0]
    chunked = pl.concat([make(0).collect() for make in source.chunks(part)])
    assert chunked[ROW_COLUMN].to_list() == [1, 2, 3, 4]
    assert source.read(part).read_all().num_rows == 4


def test_nested_objects_flatten_one_level_by_default(server: HTTPServer) -> None:
    record = {"id": 1, "customer": {"id": 7, "address": {"city": "Lima"}}, "tags": ["a"]}
    serve(server, lambda r: json_response([record]))
    df = rows(open_rest(server.url_for("/v1/items"), {}))
    assert df.columns == ["id", "customer.id", "customer.address", "tags"]
    assert df["customer.address"].to_list() == [{"city": "Lima"}]
    flat = rows(open_rest(server.url_for("/v1/items"), {"flatten": 2}))
    assert flat.columns == ["id", "customer.id", "customer.address.city", "tags"]
    nested = rows(open_rest(server.url_for("/v1/items"), {"flatten": 0}))
    assert nested.columns == ["id", "customer", "tags"]


def test_iso_times_become_timestamps(server: HTTPServer) -> None:
    serve(server, lambda r: json_response([
        {"id": 1, "at": "2024-03-05T09:30:00Z", "day": "2024-03-05", "local": "2024-03-05 09:30",
         "mixed": "2024-03-05"},
        {"id": 2, "at": "2024-03-06T10:00:00.25+02:00", "day": "2024-03-06", "local": None, "mixed": "soon"}]))
    source = open_rest(server.url_for("/v1/items"), {})
    df = rows(source)
    assert df.schema["at"] == pl.Datetime("us", "UTC") and df.schema["day"] == pl.Date
    assert df.schema["local"] == pl.Datetime("us") and df.schema["mixed"] == pl.String
    assert df["at"].to_list()[1] == dt.datetime(2024, 3, 6, 8, 0, 0, 250000, tzinfo=dt.UTC)
    assert source.schema().field("at").type.tz == "UTC"
    part = source.partitions()[0]
    chunk = next(iter(source.chunks(part)))(0).collect()
    assert chunk.schema["at"] == pl.Datetime("us", "UTC") and chunk[ROW_COLUMN].to_list() == [1, 2]


def test_sources_satisfy_the_protocols() -> None:
    from engine.sources.base import IncrementalSource, Source

    rest = open_rest("https://api.example.com/v1", {})
    graphql = open_graphql("https://api.example.com/graphql", {"query": "{ a }"})
    for source in (rest, graphql):
        assert isinstance(source, Source) and isinstance(source, IncrementalSource)
    assert rest.cursor is None and rest.with_watermark("5").bounds == ("5",)


def test_one_partition_whose_fingerprint_follows_the_content(server: HTTPServer) -> None:
    data = {"items": items(1, 3)}
    serve(server, lambda r: json_response(data))
    url = server.url_for("/v1/items")
    first = open_rest(url, {"records": "items"}).partitions()[0]
    again = open_rest(url, {"records": "items"}).partitions()[0]
    assert first.fingerprint == again.fingerprint and first.key == again.key == first.label == url
    data["items"] = items(1, 4)
    changed = open_rest(url, {"records": "items"}).partitions()[0]
    assert changed.fingerprint != first.fingerprint
    other_params = open_rest(url, {"records": "items", "params": {"x": 1}}).partitions()[0]
    assert other_params.fingerprint != changed.fingerprint


def test_spool_lives_under_the_data_dir_until_closed(server: HTTPServer) -> None:
    seen = serve(server, lambda r: json_response(items(1, 2)))
    source = open_rest(server.url_for("/v1/items"), {})
    part = source.partitions()
    assert source.partitions() == part and len(seen) == 1  # fetched once
    assert part[0].path is not None and part[0].path.parent == _tmp() and part[0].path.exists()
    source.close()
    assert not part[0].path.exists()
    with pytest.raises(SourceError, match="closed"):
        source.scan(part[0])


def test_no_records_means_no_partition(server: HTTPServer) -> None:
    serve(server, lambda r: json_response({"items": []}))
    source = open_rest(server.url_for("/v1/items"), {"records": "items"})
    assert source.partitions() == []
    assert not list(_tmp().glob("api-*"))
    with pytest.raises(SourceError, match="no records"):
        source.schema()


def test_incremental_param_and_high_watermark(server: HTTPServer) -> None:
    changes: list[dict[str, Any]] = [{"id": 1, "updated_at": "2024-03-01T10:00:00Z"},
                                     {"id": 2, "updated_at": "2024-03-05T09:30:00.5Z"},
                                     {"id": 3, "updated_at": "2024-03-05T09:30:00Z"}]

    def handler(r: Request) -> Response:
        since = dt.datetime.fromisoformat(r.args.get("since", "2000-01-01T00:00:00Z"))
        return json_response({"data": [x for x in changes if dt.datetime.fromisoformat(x["updated_at"]) >= since]})

    seen = serve(server, handler)
    source = open_rest(server.url_for("/v1/items"), {"records": "data", "cursor": "updated_at",
                                                     "incremental_param": "since"})
    assert source.watermark_key() == server.url_for("/v1/items") + "#data"
    first = source.with_watermark(None)
    assert len(rows(first)) == 3 and "since" not in seen[0].args
    assert first.high_watermark() == "2024-03-05T09:30:00.5Z"  # compared as times, not text
    second = source.with_watermark("2024-03-05T09:30:00Z")
    assert rows(second)["id"].to_list() == [2, 3]
    assert seen[-1].args["since"] == "2024-03-05T09:30:00Z"
    assert first.partitions()[0].fingerprint != second.partitions()[0].fingerprint
    nothing = source.with_watermark("2024-04-01T00:00:00Z")
    assert nothing.partitions() == [] and nothing.high_watermark() == "2024-04-01T00:00:00Z"


def test_incremental_lag_and_numeric_cursor(server: HTTPServer) -> None:
    seen = serve(server, lambda r: json_response([{"id": 1, "version": 41}, {"id": 2, "version": 45}]))
    url = server.url_for("/v1/items")
    source = open_rest(url, {"cursor": "version", "incremental_param": "after", "lag": 5})
    bounded = source.with_watermark("44")
    assert bounded.high_watermark() == "45" and seen[-1].args["after"] == "39"
    timed = open_rest(url, {"cursor": "version", "incremental_param": "since", "lag": "1.5m"})
    timed.with_watermark("2024-03-05T10:00:00Z").partitions()
    assert seen[-1].args["since"] == "2024-03-05T09:58:30Z"
    assert open_rest(url, {"cursor": "version"}).with_watermark("50").high_watermark() == "50"  # never backwards


def test_nested_cursor_and_records_without_it(server: HTTPServer) -> None:
    serve(server, lambda r: json_response([{"id": 1, "meta": {"v": 3}}, {"id": 2, "meta": {}}, {"id": 3}]))
    source = open_rest(server.url_for("/v1/items"), {"cursor": "meta.v"}).with_watermark(None)
    assert source.high_watermark() == "3"
    assert rows(source).columns == ["id", "meta.v"]


def test_incremental_param_needs_a_cursor() -> None:
    with pytest.raises(SpecError, match=r"source\.cursor: is required with incremental_param"):
        open_rest("https://api.example.com/v1", {"incremental_param": "since"})


def test_open_source_dispatch(server: HTTPServer) -> None:
    assert isinstance(open_source("https://api.example.com/v1/orders"), RestSource)
    assert isinstance(open_source("https://api.example.com/graphql", format="graphql",
                                  options={"query": "{ a }"}), GraphQLSource)

