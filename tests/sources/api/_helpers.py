"""Helpers shared by the REST and GraphQL tests: JSON answers, routes on the loopback server, collected rows."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import polars as pl
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from engine.plan.columns import is_hidden

#: the value every credential environment variable holds in these tests; it must never show
SECRET = "Zq9-SECRET-7f3kX"
#: a route's handler
Handler = Callable[[Request], Response]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, headers=headers, content_type="application/json")


def serve(server: HTTPServer, handler: Handler, path: str = "/v1/items", method: str = "GET") -> list[Request]:
    """Route ``path`` to ``handler``; returns the list the requests are recorded in."""
    seen: list[Request] = []

    def record(request: Request) -> Response:
        seen.append(request)
        return handler(request)

    server.expect_request(path, method=method).respond_with_handler(record)
    return seen


def flaky(failures: list[Response], then: Response) -> Handler:
    """A handler answering ``failures`` one by one, then ``then`` for good."""
    pending = list(failures)
    return lambda r: pending.pop(0) if pending else then


def rows(source: Any) -> pl.DataFrame:
    """The one partition's rows, visible columns only."""
    parts = source.partitions()
    assert len(parts) == 1
    df: pl.DataFrame = source.scan(parts[0]).collect()
    return df.select([c for c in df.columns if not is_hidden(c)])


def items(start: int, n: int) -> list[dict[str, Any]]:
    return [{"id": i, "name": f"item {i}"} for i in range(start, start + n)]


PAGES = [items(1, 3), items(4, 3), items(7, 2)]
