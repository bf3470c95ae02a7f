"""REST and GraphQL endpoints loaded end to end into a real PostgreSQL: every record lands, a re-run adds
nothing, and an incremental merge sends the stored watermark and loads only what changed."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

import engine
from engine.settings import settings
from tests.support import Sql

SECRET = "pg-SECRET-41x"


def _json(body: Any) -> Response:
    return Response(json.dumps(body), content_type="application/json")


def _orders(n: int) -> list[dict[str, Any]]:
    start = dt.datetime(2024, 1, 10, 12, tzinfo=dt.UTC)
    return [{"id": i, "status": "open", "amount": i * 10, "customer": {"name": f"c{i % 3}"},
             "updated_at": (start + dt.timedelta(days=20 * i)).isoformat().replace("+00:00", "Z")}
            for i in range(1, n + 1)]


class Api:
    """A paged orders endpoint (cursor in the body, bearer auth) that honours ``updated_since``."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.requests: list[Request] = []

    def __call__(self, r: Request) -> Response:
        self.requests.append(r)
        if r.headers.get("Authorization") != f"Bearer {SECRET}":
            return Response("unauthorized", status=401)
        since = r.args.get("updated_since")
        rows = [x for x in self.rows if since is None
                or dt.datetime.fromisoformat(x["updated_at"]) >= dt.datetime.fromisoformat(since)]
        at = int(r.args.get("cursor", "0"))
        page = rows[at:at + 4]
        nxt = str(at + 4) if at + 4 < len(rows) else None
        return _json({"data": page, "meta": {"next": nxt}})


OPTIONS = {"records": "data", "pagination": {"style": "cursor", "cursor_path": "meta.next", "cursor_param": "cursor"},
           "auth": {"type": "bearer", "token_env": "ORDERS_TOKEN"}, "params": {"status": "open"}}


@pytest.fixture
def api(server: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> Api:
    monkeypatch.setenv("ORDERS_TOKEN", SECRET)
    handler = Api(_orders(10))
    server.expect_request("/v1/orders").respond_with_handler(handler)
    return handler


def _count(sql: Sql, table: str) -> int:
    return int(sql(f'SELECT count(*) FROM "{table}"')[0][0])


def test_rest_load_then_rerun_adds_nothing(server: HTTPServer, api: Api, pg_dsn: str, table: str, sql: Sql) -> None:
    url = server.url_for("/v1/orders")
    report = engine.load(url, into=table, partition_by="updated_at:month", dsn=pg_dsn, options=OPTIONS,
                         archive=False)
    assert report.rows_loaded == 10 and report.rows_quarantined == 0
    assert len(api.requests) == 3  # pages of 4, 4, 2
    assert _count(sql, table) == 10
    cols = {r[0]: r[1] for r in sql("SELECT column_name, data_type FROM information_schema.columns "
                                    "WHERE table_name = $1", [table])}
    assert cols["amount"] == "bigint" and cols["customer_name"] == "text"
    assert cols["updated_at"].startswith("timestamp")
    assert int(sql(f'SELECT sum(amount) FROM "{table}"')[0][0]) == 550  # numeric comes back as text
    again = engine.load(url, into=table, partition_by="updated_at:month", dsn=pg_dsn, options=OPTIONS,
                        archive=False)
    assert again.rows_loaded == 0 and again.skipped_partitions == 1
    assert _count(sql, table) == 10
    text = again.to_json() + report.summary() + report.to_json()
    assert SECRET not in text
    ledger = sql("SELECT source, partition_key FROM biconic.loads WHERE dataset = $1", [table])
    assert ledger and all(SECRET not in str(row) for row in ledger)
    assert not list((settings().data_path / "tmp").glob("api-*"))  # the spool went with the source


def test_rest_incremental_merge_sends_the_watermark(server: HTTPServer, api: Api, pg_dsn: str, table: str,
                                                    sql: Sql) -> None:
    url = server.url_for("/v1/orders")
    options = {**OPTIONS, "cursor": "updated_at", "incremental_param": "updated_since"}

    def load() -> Any:
        return engine.load(url, into=table, partition_by="updated_at:month", mode="merge", key="id", dsn=pg_dsn,
                           options=options, archive=False)

    first = load()
    assert first.rows_loaded == 10
    assert all("updated_since" not in r.args for r in api.requests)
    high = api.rows[-1]["updated_at"]
    assert sql("SELECT source, cursor_column, value FROM biconic.watermarks WHERE dataset = $1", [table]) == [
        (url + "#data", "updated_at", high)]

    # order 4 changes, order 11 is new
    changed = dt.datetime.fromisoformat(high) + dt.timedelta(days=1)
    api.rows[3] = {**api.rows[3], "amount": 999, "updated_at": changed.isoformat().replace("+00:00", "Z")}
    api.rows.append({**api.rows[0], "id": 11, "amount": 1,
                     "updated_at": (changed + dt.timedelta(hours=1)).isoformat().replace("+00:00", "Z")})
    api.requests.clear()
    second = load()
    assert {r.args.get("updated_since") for r in api.requests} == {high}
    # the server's filter is inclusive: the last order of the first run comes back and merges onto itself
    assert second.rows_in == 3
    assert _count(sql, table) == 11
    assert sql(f'SELECT amount FROM "{table}" WHERE id = 4')[0][0] == 999
    assert sql(f'SELECT amount FROM "{table}" WHERE id = 11')[0][0] == 1

    api.requests.clear()
    third = load()  # the watermark moved on: only the newest order is sent back, and it merges onto itself
    assert {r.args.get("updated_since") for r in api.requests} == {api.rows[-1]["updated_at"]}
    assert third.rows_in == 1 and _count(sql, table) == 11


def test_graphql_load(server: HTTPServer, pg_dsn: str, table: str, sql: Sql) -> None:
    rows = _orders(5)

    def handler(r: Request) -> Response:
        variables = r.get_json()["variables"]
        at = int(variables.get("after") or 0)
        page = rows[at:at + variables["first"]]
        more = at + len(page) < len(rows)
        return _json({"data": {"orders": {"edges": [{"node": n} for n in page],
                                          "pageInfo": {"hasNextPage": more, "endCursor": str(at + len(page))}}}})

    server.expect_request("/graphql", method="POST").respond_with_handler(handler)
    query = "query($first: Int!, $after: String) { orders(first: $first, after: $after) { " \
            "edges { node { id amount updated_at customer { name } } } pageInfo { hasNextPage endCursor } } }"
    report = engine.load(server.url_for("/graphql"), into=table, format="graphql", partition_by="updated_at:month",
                         dsn=pg_dsn, archive=False, options={"query": query, "variables": {"first": 2}})
    assert report.rows_loaded == 5 and _count(sql, table) == 5
