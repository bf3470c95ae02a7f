"""GraphQL sources against a real HTTP server on loopback: connection paging over edges or nodes, GraphQL
errors and connections that are not there, incremental reads with a bearer token, loops."""

from __future__ import annotations

from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from engine.errors import SourceError
from engine.sources import open_source
from engine.sources.api.graphql import GraphQLSource, open_graphql
from tests.sources.api._helpers import SECRET, Handler, items, json_response, rows, serve

QUERY = """query Orders($first: Int!, $after: String, $status: String) {
  orders(first: $first, after: $after, status: $status) {
    pageInfo { hasNextPage endCursor }
    edges { node { id total customer { name } } }
  }
}"""


def _graphql_pages(shape: str) -> Handler:
    pages = {None: ("c1", True, items(1, 2)), "c1": ("c2", True, items(3, 2)), "c2": ("c3", False, items(5, 1))}

    def handler(r: Request) -> Response:
        body = r.get_json()
        assert body["query"] == QUERY
        variables = body["variables"]
        assert variables["first"] == 2 and variables["status"] == "open"
        end, more, found = pages[variables.get("after")]
        nodes = [{**x, "total": x["id"] * 1.5, "customer": {"name": x["name"]}} for x in found]
        connection: dict[str, Any] = {"pageInfo": {"hasNextPage": more, "endCursor": end}}
        connection.update({"edges": [{"node": n, "cursor": "x"} for n in nodes]} if shape == "edges"
                          else {"nodes": nodes})
        return json_response({"data": {"orders": connection}})

    return handler


@pytest.mark.parametrize("shape", ["edges", "nodes"])
def test_graphql_cursor_pagination(server: HTTPServer, shape: str) -> None:
    seen = serve(server, _graphql_pages(shape), path="/graphql", method="POST")
    source = open_source(server.url_for("/graphql"), format="graphql", options={
        "query": QUERY, "variables": {"first": 2, "status": "open"},
        **({"connection_path": "data.orders"} if shape == "edges" else {})})
    assert isinstance(source, GraphQLSource)
    df = rows(source)
    assert df["id"].to_list() == [1, 2, 3, 4, 5]
    assert df["customer.name"].to_list() == [f"item {i}" for i in range(1, 6)]
    assert [r.get_json()["variables"].get("after") for r in seen] == [None, "c1", "c2"]


def test_graphql_errors_and_bad_connection(server: HTTPServer) -> None:
    serve(server, lambda r: json_response({"errors": [{"message": "Field 'x' doesn't exist"}, {"message": "2"}]}),
           path="/graphql", method="POST")
    with pytest.raises(SourceError, match=r"page 1 .*GraphQL error: Field 'x' doesn't exist \(and 1 more\)"):
        open_graphql(server.url_for("/graphql"), {"query": QUERY}).partitions()
    server.clear()
    serve(server, lambda r: json_response({"data": {"orders": {"count": 1}}}), path="/graphql", method="POST")
    with pytest.raises(SourceError, match="the connection has no edges or nodes"):
        open_graphql(server.url_for("/graphql"), {"query": QUERY}).partitions()
    with pytest.raises(SourceError, match="no connection object at 'data.shop.orders'"):
        open_graphql(server.url_for("/graphql"), {"query": QUERY, "connection_path": "data.shop.orders"}).partitions()


@pytest.mark.usefixtures("secrets")
def test_graphql_incremental_with_bearer(server: HTTPServer) -> None:
    def handler(r: Request) -> Response:
        assert r.headers["Authorization"] == f"Bearer {SECRET}"
        since = r.get_json()["variables"].get("since")
        nodes = [n for n in [{"id": 1, "updatedAt": "2024-01-01"}, {"id": 2, "updatedAt": "2024-02-01"}]
                 if since is None or n["updatedAt"] > since]
        last = {"hasNextPage": False, "endCursor": None}
        return json_response({"data": {"orders": {"nodes": nodes, "pageInfo": last}}})

    seen = serve(server, handler, path="/graphql", method="POST")
    source = open_graphql(server.url_for("/graphql"), {
        "query": QUERY, "cursor": "updatedAt", "incremental_variable": "since",
        "auth": {"type": "bearer", "token_env": "T_TOKEN"}})
    first = source.with_watermark(None)
    assert len(rows(first)) == 2 and first.high_watermark() == "2024-02-01"
    second = source.with_watermark("2024-01-15")
    assert rows(second)["id"].to_list() == [2]
    assert seen[-1].get_json()["variables"]["since"] == "2024-01-15"
    assert source.watermark_key().startswith(server.url_for("/graphql") + "#")



def test_graphql_end_cursor_that_repeats_is_an_error(server: HTTPServer) -> None:
    page = {"nodes": items(1, 2), "pageInfo": {"hasNextPage": True, "endCursor": "same"}}
    seen = serve(server, lambda r: json_response({"data": {"orders": page}}), path="/graphql", method="POST")
    with pytest.raises(SourceError, match="page 2 .*pageInfo.endCursor repeats an earlier page's"):
        open_graphql(server.url_for("/graphql"), {"query": QUERY}).partitions()
    assert len(seen) == 2


def test_label_names_the_connection(server: HTTPServer) -> None:
    source = open_graphql(server.url_for("/graphql"), {"query": QUERY, "connection_path": "data.orders"})
    assert source.label == server.url_for("/graphql") + "#data.orders"
    assert source.watermark_key().startswith(server.url_for("/graphql") + "#data.orders#")
