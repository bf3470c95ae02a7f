"""REST and GraphQL options: every wrong one is a SpecError at its dotted path, saying what is wrong; the
listings ``biconic sources`` prints match what the models accept."""

from __future__ import annotations

from typing import Any

import pytest

from engine.errors import SpecError
from engine.sources.api import graphql, rest
from engine.sources.api.graphql import open_graphql
from engine.sources.api.options import (
    GraphQLOptions,
    PagePaging,
    RestOptions,
    pagination_text,
    parse,
)
from engine.sources.api.rest import open_rest


@pytest.mark.parametrize(("options", "path"), [
    ({"paginaton": {}}, r"source\.paginaton: unknown option; did you mean 'pagination'\?"),
    ({"pagination": {"style": "cursor"}}, r"source\.pagination\.cursor_path: is required"),
    ({"pagination": {"style": "pages"}}, r"source\.pagination\.style: must be one of"),
    ({"pagination": {"style": "page", "limit": 3}}, r"source\.pagination\.limit: unknown option"),
    ({"pagination": {"style": "offset", "limit": 0}}, r"source\.pagination\.limit: must be an integer >= 1"),
    ({"pagination": {"style": "next_url"}}, r"source\.pagination\.next_path: is required"),
    ({"auth": {"type": "oauth"}}, r"source\.auth\.type: must be one of bearer, basic, api_key"),
    ({"auth": {"type": "bearer", "token": "x"}}, r"source\.auth\.token: unknown option"),
    ({"auth": {"type": "api_key", "key_env": "HOME", "in": "cookie"}}, r"source\.auth\.in: must be header or query"),
    ({"auth": {"type": "basic", "password_env": "HOME"}}, r"source\.auth\.username: set exactly one"),
    ({"retries": 0}, r"source\.retries: must be an integer >= 1"),
    ({"lag": "soon"}, r"source\.lag: expected a number or a duration"),
    ({"lag": -1}, r"source\.lag: must not be negative"),
    ({"params": {"ids": {"a": 1}}}, r"source\.params\.ids: must be a string"),
    ({"query": "{ x }"}, r"source\.query: unknown option"),
])
def test_rest_options_are_validated(options: dict[str, Any], path: str) -> None:
    with pytest.raises(SpecError, match=path):
        open_rest("https://api.example.com/v1/orders", options)


@pytest.mark.parametrize(("options", "message"), [
    ({"records": ""}, "source.records: must be a non-empty string, not ''"),
    ({"timeout": "fast"}, "source.timeout: must be a number >= 0, not 'fast'"),
    ({"flatten": True}, "source.flatten: must be an integer >= 0, not True"),
    ({"max_pages": None}, "source.max_pages: must be an integer >= 1, not None"),
    ({"headers": ["x"]}, "source.headers: must be a mapping, not list"),
    ({"headers": {"X-Tag": 3}}, "source.headers.X-Tag: must be a non-empty string, not 3"),
    ({"pagination": "page"}, "source.pagination: must be a mapping, not str"),
    ({"pagination": {"style": "page", "size": 10}}, "source.pagination.size_param: is required with size (the "
                                                    "parameter to send it in)"),
    ({"auth": {"token_env": "HOME"}}, "source.auth.type: must be one of bearer, basic, api_key, not None"),
    ({"auth": {"type": "link"}}, "source.auth.type: must be one of bearer, basic, api_key, not 'link'"),
    ({"pagination": {"style": "link", "next_path": "x"}}, "source.pagination.next_path: unknown option; known: style"),
    ({"incremental_param": "since"}, "source.cursor: is required with incremental_param (the record field the "
                                     "watermark comes from, e.g. updated_at)"),
])
def test_messages_say_what_is_wrong(options: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as info:
        open_rest("https://api.example.com/v1/orders", options)
    assert str(info.value) == message
    assert info.value.__cause__ is not None  # pydantic's error stays on the cause, for logs


def test_url_and_graphql_options_are_validated() -> None:
    with pytest.raises(SpecError, match=r"source\.path: .* is not an http\(s\) URL"):
        open_rest("ftp://example.com/x", {})
    with pytest.raises(SpecError, match=r"source\.query: is required"):
        open_graphql("https://api.example.com/graphql", {})
    with pytest.raises(SpecError, match=r"source\.records: unknown option"):
        open_graphql("https://api.example.com/graphql", {"query": "{ x }", "records": "data"})
    with pytest.raises(SpecError, match=r"source\.cursor: is required with incremental_variable"):
        open_graphql("https://api.example.com/graphql", {"query": "{ x }", "incremental_variable": "since"})


def test_options_listings_cover_every_option() -> None:
    assert {"records", "pagination.style", "auth.type", "incremental_param", "cursor"} <= set(rest.OPTIONS)
    assert {"query", "connection_path", "variables", "cursor_variable"} <= set(graphql.OPTIONS)
    assert all(isinstance(v, str) and v and "\n" not in v for v in [*rest.OPTIONS.values(), *graphql.OPTIONS.values()])
    # every option the listing names is accepted by the parser
    open_rest("https://a.example/x", {k.split(".")[0]: v for k, v in {
        "records": "data", "params": {}, "headers": {}, "flatten": 0, "cursor": "u", "lag": 0, "max_pages": 2,
        "timeout": 1, "retries": 1, "backoff": 0, "max_wait": 0, "incremental_param": "since"}.items()})
    assert {k.split(".")[0] for k in rest.OPTIONS} == {
        "records", "params", "pagination", "headers", "auth", "flatten", "cursor", "lag", "max_pages", "timeout",
        "retries", "backoff", "max_wait", "incremental_param"}
    assert {k.split(".")[0] for k in rest.OPTIONS} == set(RestOptions.model_fields)
    assert {k.split(".")[0] for k in graphql.OPTIONS} == set(GraphQLOptions.model_fields)


def test_parsed_values_keep_their_types() -> None:
    options = parse(RestOptions, {"params": {"n": 1, "on": True, "ids": [1, "a"]}, "timeout": 5, "lag": "2m",
                                  "auth": {"type": "api_key", "key_env": "HOME", "in": "query"}})
    assert options.params == {"n": 1, "on": True, "ids": [1, "a"]}  # sent (and fingerprinted) as written
    assert options.timeout == 5 and options.lag == 120
    assert options.auth is not None and options.auth.type == "api_key" and options.auth.location == "query"


def test_pagination_text_is_what_fingerprints_always_hashed() -> None:
    """Partition fingerprints hash this text: it must not change, or re-runs after an upgrade load again."""
    assert pagination_text(parse(RestOptions, {}).pagination) == (
        "Pagination(style='none', page_param='page', start=None, size_param=None, size=None, total_pages_path=None, "
        "offset_param='offset', limit_param='limit', limit=100, total_path=None, cursor_path=None, "
        "cursor_param='cursor', next_path=None)")
    page = PagePaging(style="page", page_param="p", start=0, size_param="n", size=5)
    assert pagination_text(page).startswith("Pagination(style='page', page_param='p', start=0, size_param='n', "
                                            "size=5, total_pages_path=None, offset_param='offset'")
