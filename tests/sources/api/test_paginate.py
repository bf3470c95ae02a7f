"""Every pagination style against a real HTTP server on loopback (pytest-httpserver), the page cap, loops that
would never end, and the paginators on their own (no I/O)."""

from __future__ import annotations

from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from engine.errors import SourceError
from engine.sources import open_source
from engine.sources.api.options import CursorPaging, NextUrlPaging, OffsetPaging, PagePaging
from engine.sources.api.paginate import Connections, Cursors, NextLinks, Offsets, Page, PageNumbers, PagingLoop
from engine.sources.api.rest import RestSource, open_rest
from tests.sources.api._helpers import PAGES, items, json_response, rows, serve


def test_no_pagination_list_body(server: HTTPServer) -> None:
    serve(server, lambda r: json_response(items(1, 4)))
    source = open_source(server.url_for("/v1/items"))
    assert isinstance(source, RestSource)
    assert rows(source)["id"].to_list() == [1, 2, 3, 4]


def test_page_number_stops_on_empty_page(server: HTTPServer) -> None:
    def handler(r: Request) -> Response:
        page = int(r.args["page"])
        assert r.args["per_page"] == "3"
        return json_response({"data": {"items": PAGES[page - 1] if page <= len(PAGES) else []}})

    seen = serve(server, handler)
    source = open_rest(server.url_for("/v1/items"), {"records": "data.items", "pagination": {
        "style": "page", "size_param": "per_page", "size": 3}})
    assert rows(source)["id"].to_list() == list(range(1, 9))
    assert [r.args["page"] for r in seen] == ["1", "2", "3", "4"]


def test_page_number_total_pages_zero_based(server: HTTPServer) -> None:
    def handler(r: Request) -> Response:
        page = int(r.args["p"])
        return json_response({"items": PAGES[page], "meta": {"pages": 3}})

    seen = serve(server, handler)
    source = open_rest(server.url_for("/v1/items"), {"records": "items", "pagination": {
        "style": "page", "page_param": "p", "start": 0, "total_pages_path": "meta.pages"}})
    assert rows(source)["id"].to_list() == list(range(1, 9))
    assert [r.args["p"] for r in seen] == ["0", "1", "2"]  # no extra request past the last page


@pytest.mark.parametrize("total", [True, False])
def test_offset_limit(server: HTTPServer, total: bool) -> None:
    everything = items(1, 7)

    def handler(r: Request) -> Response:
        offset, limit = int(r.args["skip"]), int(r.args["take"])
        body: dict[str, Any] = {"results": everything[offset:offset + limit]}
        if total:
            body["total"] = len(everything)
        return json_response(body)

    seen = serve(server, handler)
    source = open_rest(server.url_for("/v1/items"), {"records": "results", "pagination": {
        "style": "offset", "offset_param": "skip", "limit_param": "take", "limit": 3,
        **({"total_path": "total"} if total else {})}})
    assert rows(source)["id"].to_list() == list(range(1, 8))
    assert [r.args["skip"] for r in seen] == (["0", "3", "6"] if total else ["0", "3", "6", "7"])


def test_cursor_in_body(server: HTTPServer) -> None:
    cursors = {None: ("c2", PAGES[0]), "c2": ("c3", PAGES[1]), "c3": (None, PAGES[2])}

    def handler(r: Request) -> Response:
        assert r.args["status"] == "open"  # static params go with every page
        nxt, found = cursors[r.args.get("after")]
        return json_response({"data": found, "meta": {"next": nxt}})

    seen = serve(server, handler)
    source = open_rest(server.url_for("/v1/items"), {
        "records": "data", "params": {"status": "open"},
        "pagination": {"style": "cursor", "cursor_path": "meta.next", "cursor_param": "after"}})
    assert rows(source)["id"].to_list() == list(range(1, 9))
    assert [r.args.get("after") for r in seen] == [None, "c2", "c3"]


def test_cursor_that_repeats_is_an_error(server: HTTPServer) -> None:
    serve(server, lambda r: json_response({"data": PAGES[0], "next": "same"}))
    source = open_rest(server.url_for("/v1/items"), {"records": "data", "pagination": {
        "style": "cursor", "cursor_path": "next"}})
    with pytest.raises(SourceError, match="page 2 .*already read"):
        source.partitions()


def test_link_header(server: HTTPServer) -> None:
    def handler(r: Request) -> Response:
        page = int(r.args.get("page", "1"))
        headers = {}
        if page < 3:
            nxt = server.url_for(f"/v1/items?page={page + 1}&limit=3")
            headers["Link"] = f'<{nxt}>; rel="next", <{server.url_for("/v1/items?page=3")}>; rel="last"'
        return json_response(PAGES[page - 1], headers=headers)

    seen = serve(server, handler)
    source = open_rest(server.url_for("/v1/items"), {"pagination": {"style": "link"}, "params": {"limit": 3}})
    assert rows(source)["id"].to_list() == list(range(1, 9))
    assert [r.args.get("page") for r in seen] == [None, "2", "3"]


def test_next_url_in_body_relative_and_absolute(server: HTTPServer) -> None:
    def handler(r: Request) -> Response:
        page = int(r.args.get("page", "1"))
        nxt = {1: "/v1/items?page=2", 2: server.url_for("/v1/items?page=3"), 3: None}[page]
        return json_response({"items": PAGES[page - 1], "links": {"next": nxt}})

    seen = serve(server, handler)
    source = open_rest(server.url_for("/v1/items"), {"records": "items", "pagination": {
        "style": "next_url", "next_path": "links.next"}})
    assert rows(source)["id"].to_list() == list(range(1, 9))
    assert len(seen) == 3


def test_max_pages_caps_the_fetch(server: HTTPServer) -> None:
    seen = serve(server, lambda r: json_response({"items": PAGES[0]}))
    source = open_rest(server.url_for("/v1/items"), {"records": "items", "max_pages": 2,
                                                     "pagination": {"style": "page"}})
    assert len(rows(source)) == 6 and len(seen) == 2


# --- the paginators on their own ----------------------------------------------------------------------------
def _page(body: Any, records: list[Any], url: str = "https://a.example/v1?page=1") -> Page:
    return Page(url=url, shown=url, records=records, body=body)


def test_page_numbers_and_offsets_stop_at_the_total() -> None:
    pages = PageNumbers("https://a.example/v1", {"q": 1}, PagePaging(style="page", total_pages_path="n"))
    assert pages.request().params == {"q": 1, "page": 1}
    assert pages.advance(_page({"n": 2}, [1])) and pages.request().params == {"q": 1, "page": 2}
    assert not pages.advance(_page({"n": 2}, [1]))
    offsets = Offsets("https://a.example/v1", {}, OffsetPaging(style="offset", limit=2))
    assert offsets.advance(_page({}, [1, 2])) and offsets.request().params == {"offset": 2, "limit": 2}
    assert not offsets.advance(_page({}, []))  # an empty page ends it


def test_cursors_and_links_refuse_to_loop() -> None:
    cursors = Cursors("https://a.example/v1", {}, CursorPaging(style="cursor", cursor_path="next"))
    assert cursors.advance(_page({"next": "c2"}, [1])) and cursors.request().params == {"cursor": "c2"}
    with pytest.raises(PagingLoop):
        cursors.advance(_page({"next": "c2"}, [1]))
    links = NextLinks("https://a.example/v1", {"q": 1}, NextUrlPaging(style="next_url", next_path="next"))
    assert links.advance(_page({"next": "/v1?page=2"}, [1]))
    assert links.request().url == "https://a.example/v1?page=2" and links.request().params == {}
    with pytest.raises(PagingLoop):
        links.advance(_page({"next": "https://a.example/v1?page=2"}, [1]))


def test_graphql_connections_follow_end_cursor() -> None:
    connections = Connections("https://a.example/graphql", "{ q }", {"first": 2}, cursor_variable="after")
    assert connections.request().body == {"query": "{ q }", "variables": {"first": 2}}
    assert connections.advance(_page({"pageInfo": {"hasNextPage": True, "endCursor": "c1"}}, [1]))
    assert connections.request().body["variables"] == {"first": 2, "after": "c1"}
    assert not connections.advance(_page({"pageInfo": {"hasNextPage": False, "endCursor": "c2"}}, [1]))
