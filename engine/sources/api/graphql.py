"""GraphQL connections as sources: every page of one (``edges { node }`` or ``nodes``), spooled, as one partition.

>>> query = '''query($after: String) { orders(first: 100, after: $after) {
...     pageInfo { hasNextPage endCursor } nodes { id total updatedAt } } }'''
>>> engine.load("https://api.example.com/graphql", into="orders", format="graphql",
...             options={"query": query, "connection_path": "data.orders"})  # doctest: +SKIP

The query declares the cursor variable (``$after``) and returns a connection; its ``pageInfo { hasNextPage
endCursor }`` pages it (:class:`~engine.sources.api.paginate.Connections`). The HTTP client, spooling and
watermarks are shared with REST (:mod:`~engine.sources.api.endpoint`). Options are checked by
:class:`~engine.sources.api.options.GraphQLOptions`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.sources.api.endpoint import EndpointSource
from engine.sources.api.http import HttpClient
from engine.sources.api.options import COMMON_OPTIONS, GraphQLOptions, check_url, parse
from engine.sources.api.paginate import Connections, Page, Paginator
from engine.sources.api.records import MISSING, describe, get_path

if TYPE_CHECKING:
    import httpx

__all__ = ["OPTIONS", "GraphQLSource", "open_graphql"]

#: ``graphql`` options (``biconic sources``): option -> one-line description
OPTIONS: dict[str, str] = {
    "query": "the GraphQL query; it declares $after and returns a connection (required)",
    "connection_path": "dotted path to the connection (e.g. data.orders; default: the only field under data)",
    "variables": "variables sent with every page (e.g. first: 100)",
    "cursor_variable": "variable receiving pageInfo.endCursor (default after)",
    "incremental_variable": "incremental: variable receiving the stored watermark",
    **COMMON_OPTIONS,
}


@dataclass(frozen=True, kw_only=True, repr=False)
class GraphQLSource(EndpointSource):
    """A GraphQL connection, paged by ``pageInfo { hasNextPage endCursor }``, its ``edges { node }`` or
    ``nodes`` as records, in one partition (see ``OPTIONS``).

    >>> open_graphql("https://api.example.com/graphql", {"query": QUERY, "variables": {"first": 100}})
    ... # doctest: +SKIP
    """

    options: GraphQLOptions

    @property
    def label(self) -> str:
        path = self.options.connection_path
        return f"{super().label}#{path}" if path else super().label

    def _identity(self) -> list[str]:
        o = self.options
        query = hashlib.sha256(o.query.encode()).hexdigest()[:16]
        return [self.url, f"{o.connection_path or ''}#{query}", json.dumps(o.variables, sort_keys=True, default=str),
                o.cursor_variable, o.incremental_variable or "", str(o.flatten)]

    def _paginator(self, sent: str | None) -> Paginator:
        variables = dict(self.options.variables)
        if self.options.incremental_variable and sent is not None:
            variables[self.options.incremental_variable] = sent
        return Connections(self.url, self.options.query, variables, cursor_variable=self.options.cursor_variable)

    def _page(self, http: HttpClient, response: httpx.Response, number: int) -> Page:
        shown = http.secrets.url(self.url)
        connection = self._connection(http, http.json(response, number), number, shown)
        if isinstance(connection.get("edges"), list):
            edges = connection["edges"]
            if not all(isinstance(e, Mapping) and "node" in e for e in edges):
                raise http.fail(number, shown, "an edge has no node; select edges { node { ... } }")
            records = [e["node"] for e in edges]
        elif isinstance(connection.get("nodes"), list):
            records = connection["nodes"]
        else:
            raise http.fail(number, shown, f"the connection has no edges or nodes ({describe(connection)}); select "
                                            "edges { node { ... } } or nodes { ... }")
        return Page(url=str(response.url), shown=shown, records=records, body=connection)

    def _connection(self, http: HttpClient, body: Any, page: int, url: str) -> Mapping[str, Any]:
        if not isinstance(body, Mapping):
            raise http.fail(page, url, f"the response is {describe(body)}, not a GraphQL response")
        errors = body.get("errors")
        if errors:
            first = errors[0].get("message", errors[0]) if isinstance(errors[0], Mapping) else errors[0]
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise http.fail(page, url, f"GraphQL error: {str(first)[:300]}{more}")
        path = self.options.connection_path
        if path is None:
            data = body.get("data")
            if not isinstance(data, Mapping) or len(data) != 1:
                raise http.fail(page, url, f"cannot tell the connection in data ({describe(data)}); set "
                                           "connection_path (e.g. data.orders)")
            path = f"data.{next(iter(data))}"
        found = get_path(body, path)
        if found is MISSING or not isinstance(found, Mapping):
            raise http.fail(page, url, f"no connection object at {path!r} ({describe(body.get('data'))}); check "
                                       "connection_path")
        return found


def open_graphql(url: str, options: Mapping[str, Any]) -> GraphQLSource:
    """A :class:`GraphQLSource` from a URL and spec options (``query`` is required).

    >>> open_graphql("https://api.example.com/graphql", {"query": QUERY, "variables": {"first": 100}})
    ... # doctest: +SKIP
    """
    checked = parse(GraphQLOptions, options)
    return GraphQLSource(url=check_url(url), options=checked)
