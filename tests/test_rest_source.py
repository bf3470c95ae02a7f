"""REST and GraphQL sources against a real HTTP server on loopback (pytest-httpserver): every pagination
style, every auth, retries and rate limits, malformed pages, schema union, incremental bounds, and secrets that
never show."""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from engine.errors import SourceError, SpecError
from engine.plan.columns import ROW_COLUMN, is_hidden
from engine.sources import open_source
from engine.sources.api.rest import (
    GRAPHQL_OPTIONS,
    OPTIONS,
    GraphQLSource,
    RestSource,
    _retry_after,
    open_graphql,
    open_rest,
)

SECRET = "Zq9-SECRET-7f3kX"
FAST = {"backoff": 0.001, "max_wait": 0.05}
Handler = Callable[[Request], Response]


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, headers=headers, content_type="application/json")


def _serve(server: HTTPServer, handler: Handler, path: str = "/v1/items", method: str = "GET") -> list[Request]:
    """Route ``path`` to ``handler``; returns the list the requests are recorded in."""
    seen: list[Request] = []

    def record(request: Request) -> Response:
        seen.append(request)
        return handler(request)

    server.expect_request(path, method=method).respond_with_handler(record)
    return seen


def _rows(source: Any) -> pl.DataFrame:
    parts = source.partitions()
    assert len(parts) == 1
    df: pl.DataFrame = source.scan(parts[0]).collect()
    return df.select([c for c in df.columns if not is_hidden(c)])


def _items(start: int, n: int) -> list[dict[str, Any]]:
    return [{"id": i, "name": f"item {i}"} for i in range(start, start + n)]


PAGES = [_items(1, 3), _items(4, 3), _items(7, 2)]


# --- pagination -----------------------------------------------------------------------------------------------
def test_no_pagination_list_body(server: HTTPServer) -> None:
    _serve(server, lambda r: _json(_items(1, 4)))
    source = open_source(server.url_for("/v1/items"))
    assert isinstance(source, RestSource)
    df = _rows(source)
    assert df["id"].to_list() == [1, 2, 3, 4]
    assert source.scan(source.partitions()[0]).collect()[ROW_COLUMN].to_list() == [1, 2, 3, 4]


def test_page_number_stops_on_empty_page(server: HTTPServer) -> None:
    def handler(r: Request) -> Response:
        page = int(r.args["page"])
        assert r.args["per_page"] == "3"
        return _json({"data": {"items": PAGES[page - 1] if page <= len(PAGES) else []}})

    seen = _serve(server, handler)
    source = open_rest(server.url_for("/v1/items"), {"records": "data.items", "pagination": {
        "style": "page", "size_param": "per_page", "size": 3}})
    assert _rows(source)["id"].to_list() == list(range(1, 9))
    assert [r.args["page"] for r in seen] == ["1", "2", "3", "4"]


def test_page_number_total_pages_zero_based(server: HTTPServer) -> None:
    def handler(r: Request) -> Response:
        page = int(r.args["p"])
        return _json({"items": PAGES[page], "meta": {"pages": 3}})

    seen = _serve(server, handler)
    source = open_rest(server.url_for("/v1/items"), {"records": "items", "pagination": {
        "style": "page", "page_param": "p", "start": 0, "total_pages_path": "meta.pages"}})
    assert _rows(source)["id"].to_list() == list(range(1, 9))
    assert [r.args["p"] for r in seen] == ["0", "1", "2"]  # no extra request past the last page


@pytest.mark.parametrize("total", [True, False])
def test_offset_limit(server: HTTPServer, total: bool) -> None:
    everything = _items(1, 7)

    def handler(r: Request) -> Response:
        offset, limit = int(r.args["skip"]), int(r.args["take"])
        body: dict[str, Any] = {"results": everything[offset:offset + limit]}
        if total:
            body["total"] = len(everything)
        return _json(body)

    seen = _serve(server, handler)
    source = open_rest(server.url_for("/v1/items"), {"records": "results", "pagination": {
        "style": "offset", "offset_param": "skip", "limit_param": "take", "limit": 3,
        **({"total_path": "total"} if total else {})}})
    assert _rows(source)["id"].to_list() == list(range(1, 8))
    assert [r.args["skip"] for r in seen] == (["0", "3", "6"] if total else ["0", "3", "6", "7"])


def test_cursor_in_body(server: HTTPServer) -> None:
    cursors = {None: ("c2", PAGES[0]), "c2": ("c3", PAGES[1]), "c3": (None, PAGES[2])}

    def handler(r: Request) -> Response:
        assert r.args["status"] == "open"  # static params go with every page
        nxt, items = cursors[r.args.get("after")]
        return _json({"data": items, "meta": {"next": nxt}})

    seen = _serve(server, handler)
    source = open_rest(server.url_for("/v1/items"), {
        "records": "data", "params": {"status": "open"},
        "pagination": {"style": "cursor", "cursor_path": "meta.next", "cursor_param": "after"}})
    assert _rows(source)["id"].to_list() == list(range(1, 9))
    assert [r.args.get("after") for r in seen] == [None, "c2", "c3"]


def test_cursor_that_repeats_is_an_error(server: HTTPServer) -> None:
    _serve(server, lambda r: _json({"data": PAGES[0], "next": "same"}))
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
        return _json(PAGES[page - 1], headers=headers)

    seen = _serve(server, handler)
    source = open_rest(server.url_for("/v1/items"), {"pagination": {"style": "link"}, "params": {"limit": 3}})
    assert _rows(source)["id"].to_list() == list(range(1, 9))
    assert [r.args.get("page") for r in seen] == [None, "2", "3"]


def test_next_url_in_body_relative_and_absolute(server: HTTPServer) -> None:
    def handler(r: Request) -> Response:
        page = int(r.args.get("page", "1"))
        nxt = {1: "/v1/items?page=2", 2: server.url_for("/v1/items?page=3"), 3: None}[page]
        return _json({"items": PAGES[page - 1], "links": {"next": nxt}})

    seen = _serve(server, handler)
    source = open_rest(server.url_for("/v1/items"), {"records": "items", "pagination": {
        "style": "next_url", "next_path": "links.next"}})
    assert _rows(source)["id"].to_list() == list(range(1, 9))
    assert len(seen) == 3


def test_max_pages_caps_the_fetch(server: HTTPServer) -> None:
    seen = _serve(server, lambda r: _json({"items": PAGES[0]}))
    source = open_rest(server.url_for("/v1/items"), {"records": "items", "max_pages": 2,
                                                     "pagination": {"style": "page"}})
    assert len(_rows(source)) == 6 and len(seen) == 2


# --- auth -----------------------------------------------------------------------------------------------------
AUTHS: dict[str, tuple[dict[str, Any], Callable[[Request], bool]]] = {
    "bearer": ({"type": "bearer", "token_env": "T_TOKEN"},
               lambda r: r.headers.get("Authorization") == f"Bearer {SECRET}"),
    "basic": ({"type": "basic", "username": "ana", "password_env": "T_PASSWORD"},
              lambda r: r.headers.get("Authorization")
              == "Basic " + base64.b64encode(f"ana:{SECRET}".encode()).decode()),
    "api_key_header": ({"type": "api_key", "key_env": "T_KEY", "name": "X-Api-Key"},
                       lambda r: r.headers.get("X-Api-Key") == SECRET and "api_key" not in r.args),
    "api_key_query": ({"type": "api_key", "key_env": "T_KEY", "name": "api_key", "in": "query"},
                      lambda r: r.args.get("api_key") == SECRET and "X-Api-Key" not in r.headers),
}


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("T_TOKEN", "T_PASSWORD", "T_KEY"):
        monkeypatch.setenv(name, SECRET)


@pytest.mark.parametrize("kind", list(AUTHS))
@pytest.mark.usefixtures("secrets")
def test_auth(server: HTTPServer, kind: str) -> None:
    auth, ok = AUTHS[kind]

    def handler(r: Request) -> Response:
        if not ok(r):
            return _json({"error": "unauthorized"}, status=401)
        page = int(r.args.get("page", "1"))
        return _json({"items": PAGES[page - 1] if page <= 3 else []})

    seen = _serve(server, handler)
    source = open_rest(server.url_for("/v1/items"), {"records": "items", "auth": auth,
                                                     "pagination": {"style": "page"}})
    assert _rows(source)["id"].to_list() == list(range(1, 9))
    assert len(seen) == 4
    assert SECRET not in repr(source)


@pytest.mark.parametrize("kind", list(AUTHS))
def test_wrong_credentials_fail_at_once_without_the_secret(server: HTTPServer, monkeypatch: pytest.MonkeyPatch,
                                                           kind: str) -> None:
    for name in ("T_TOKEN", "T_PASSWORD", "T_KEY"):
        monkeypatch.setenv(name, "wrong-" + SECRET)
    auth, ok = AUTHS[kind]
    seen = _serve(server, lambda r: _json({"items": []}) if ok(r) else
                  _json({"error": "bad credentials", "echo": dict(r.headers), "args": dict(r.args)}, status=401))
    source = open_rest(server.url_for("/v1/items"), {"records": "items", "auth": auth, **FAST})
    with pytest.raises(SourceError) as info:
        source.partitions()
    text = str(info.value)
    assert "HTTP 401" in text and "page 1" in text and "check the credentials in $T_" in text
    assert SECRET not in text
    assert len(seen) == 1  # a 401 is not retried


def test_credentials_go_only_to_the_sources_own_host(server: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_TOKEN", SECRET)
    other = server.url_for("/v1/items?page=2").replace("127.0.0.1", "localhost")  # same server, other origin

    def handler(r: Request) -> Response:
        page = int(r.args.get("page", "1"))
        return _json({"items": PAGES[page - 1], "next": other if page == 1 else None})

    seen = _serve(server, handler)
    source = open_rest(server.url_for("/v1/items"), {"records": "items", "auth": {
        "type": "bearer", "token_env": "T_TOKEN"}, "pagination": {"style": "next_url", "next_path": "next"}})
    assert len(_rows(source)) == 6
    assert seen[0].headers.get("Authorization") == f"Bearer {SECRET}"
    assert "Authorization" not in seen[1].headers


def test_missing_env_var_is_a_spec_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE_TOKEN", raising=False)
    with pytest.raises(SpecError, match=r"source\.auth\.token_env: environment variable NOPE_TOKEN is not set"):
        open_rest("https://api.example.com/v1", {"auth": {"type": "bearer", "token_env": "NOPE_TOKEN"}})


# --- retries and rate limits ----------------------------------------------------------------------------------
def _flaky(failures: list[Response], then: Response) -> Handler:
    pending = list(failures)
    return lambda r: pending.pop(0) if pending else then


def test_429_with_retry_after_seconds_then_success(server: HTTPServer) -> None:
    seen = _serve(server, _flaky([_json({"error": "slow down"}, status=429, headers={"Retry-After": "1"})],
                                 _json(_items(1, 2))))
    source = open_rest(server.url_for("/v1/items"), {"backoff": 0.001, "max_wait": 5})
    started = time.perf_counter()
    assert len(_rows(source)) == 2
    assert time.perf_counter() - started >= 0.9  # Retry-After wins over the tiny backoff
    assert len(seen) == 2


def test_429_with_retry_after_http_date(server: HTTPServer) -> None:
    past = email.utils.format_datetime(email.utils.localtime().replace(year=2020), usegmt=False)
    seen = _serve(server, _flaky([_json({}, status=429, headers={"Retry-After": past})], _json(_items(1, 2))))
    assert len(_rows(open_rest(server.url_for("/v1/items"), {"backoff": 5.0, "max_wait": 5}))) == 2
    assert len(seen) == 2


def test_retry_after_parsing() -> None:
    assert _retry_after("3") == 3.0
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= (_retry_after(later) or 0) <= 30
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert _retry_after("soon") is None and _retry_after(None) is None


def test_500_then_success(server: HTTPServer) -> None:
    seen = _serve(server, _flaky([_json({}, status=500), _json({}, status=503)], _json(_items(1, 2))))
    assert len(_rows(open_rest(server.url_for("/v1/items"), FAST))) == 2
    assert len(seen) == 3


def test_500_forever_gives_up_naming_the_page(server: HTTPServer) -> None:
    def handler(r: Request) -> Response:
        if r.args.get("page") == "2":
            return Response("upstream exploded", status=500)
        return _json({"items": PAGES[0]})

    seen = _serve(server, handler)
    source = open_rest(server.url_for("/v1/items"), {"records": "items", "retries": 4,
                                                     "pagination": {"style": "page"}, **FAST})
    with pytest.raises(SourceError) as info:
        source.partitions()
    text = str(info.value)
    assert "page 2" in text and "/v1/items?page=2" in text and "HTTP 500" in text
    assert "after 4 attempts" in text
    assert [r.args["page"] for r in seen] == ["1", "2", "2", "2", "2"]
    assert not list(_tmp().glob("api-*"))  # the spool is gone


def _tmp() -> Path:
    from engine.settings import settings

    return settings().data_path / "tmp"


def test_backoff_grows_exponentially(server: HTTPServer) -> None:
    seen = _serve(server, lambda r: _json({}, status=502))
    source = open_rest(server.url_for("/v1/items"), {"retries": 4, "backoff": 0.05, "max_wait": 1})
    started = time.perf_counter()
    with pytest.raises(SourceError, match="after 4 attempts"):
        source.partitions()
    # waits 0.05 + 0.1 + 0.2 (each jittered down to 80 % at most)
    assert 0.25 <= time.perf_counter() - started < 2
    assert len(seen) == 4


def test_timeout_is_retried(server: HTTPServer) -> None:
    calls: list[float] = []

    def handler(r: Request) -> Response:
        calls.append(time.perf_counter())
        if len(calls) == 1:
            time.sleep(0.6)
        return _json(_items(1, 3))

    _serve(server, handler)
    source = open_rest(server.url_for("/v1/items"), {"timeout": 0.2, **FAST})
    assert len(_rows(source)) == 3
    assert len(calls) == 2


def test_timeout_forever(server: HTTPServer) -> None:
    def handler(r: Request) -> Response:
        time.sleep(0.3)
        return _json([])

    _serve(server, handler)
    source = open_rest(server.url_for("/v1/items"), {"timeout": 0.1, "retries": 2, **FAST})
    with pytest.raises(SourceError, match=r"page 1 \(http://.*/v1/items\): timed out after 0.1 s; gave up after 2"):
        source.partitions()


def test_connection_refused_is_retried_then_clear() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    source = open_rest(f"http://127.0.0.1:{port}/v1/items", {"retries": 2, **FAST})
    with pytest.raises(SourceError, match="page 1 .*connection failed .*gave up after 2 attempts"):
        source.partitions()


# --- malformed pages ------------------------------------------------------------------------------------------
def test_non_json_page(server: HTTPServer) -> None:
    def handler(r: Request) -> Response:
        if r.args.get("page") == "2":
            return Response("<html>maintenance</html>", content_type="text/html")
        return _json({"items": PAGES[0]})

    _serve(server, handler)
    source = open_rest(server.url_for("/v1/items"), {"records": "items", "pagination": {"style": "page"}})
    with pytest.raises(SourceError, match=r"page 2 \(http://.*/v1/items\?page=2\): the response is not JSON "
                                          r"\(text/html.*maintenance"):
        source.partitions()


def test_records_path_missing(server: HTTPServer) -> None:
    _serve(server, lambda r: _json({"data": {"rows": []}, "meta": {}}))
    source = open_rest(server.url_for("/v1/items"), {"records": "data.items"})
    with pytest.raises(SourceError, match=r"page 1 .*no 'data\.items' in the response \(an object with keys "
                                          r"data, meta\)"):
        source.partitions()


def test_object_body_without_records_path_hints_at_the_list(server: HTTPServer) -> None:
    _serve(server, lambda r: _json({"results": _items(1, 2), "count": 2}))
    with pytest.raises(SourceError, match="set records to 'results'"):
        open_rest(server.url_for("/v1/items"), {}).partitions()


def test_record_that_is_not_an_object(server: HTTPServer) -> None:
    _serve(server, lambda r: _json({"items": [{"id": 1}, 7]}))
    with pytest.raises(SourceError, match="page 1: record 2 is a int, not an object"):
        open_rest(server.url_for("/v1/items"), {"records": "items"}).partitions()


def test_http_404_is_not_retried(server: HTTPServer) -> None:
    seen = _serve(server, lambda r: _json({"error": "nope"}, status=404))
    with pytest.raises(SourceError, match="HTTP 404 NOT FOUND; check the URL"):
        open_rest(server.url_for("/v1/items"), FAST).partitions()
    assert len(seen) == 1


# --- schema, nesting, partition -------------------------------------------------------------------------------
def test_schema_is_the_union_over_pages(server: HTTPServer) -> None:
    pages = [[{"id": 1, "amount": 10}, {"id": 2, "amount": 20}],
             [{"id": 3, "amount": 2.5}],
             [{"id": 4, "amount": 7, "note": "late field"}]]

    def handler(r: Request) -> Response:
        page = int(r.args["page"])
        return _json({"items": pages[page - 1], "pages": 3})

    _serve(server, handler)
    source = open_rest(server.url_for("/v1/items"), {"records": "items", "pagination": {
        "style": "page", "total_pages_path": "pages"}})
    df = _rows(source)
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
    _serve(server, lambda r: _json([{"id": 1, "customer": {"id": 7, "address": {"city": "Lima"}}, "tags": ["a"]}]))
    df = _rows(open_rest(server.url_for("/v1/items"), {}))
    assert df.columns == ["id", "customer.id", "customer.address", "tags"]
    assert df["customer.address"].to_list() == [{"city": "Lima"}]
    flat = _rows(open_rest(server.url_for("/v1/items"), {"flatten": 2}))
    assert flat.columns == ["id", "customer.id", "customer.address.city", "tags"]
    nested = _rows(open_rest(server.url_for("/v1/items"), {"flatten": 0}))
    assert nested.columns == ["id", "customer", "tags"]


def test_iso_times_become_timestamps(server: HTTPServer) -> None:
    _serve(server, lambda r: _json([
        {"id": 1, "at": "2024-03-05T09:30:00Z", "day": "2024-03-05", "local": "2024-03-05 09:30",
         "mixed": "2024-03-05"},
        {"id": 2, "at": "2024-03-06T10:00:00.25+02:00", "day": "2024-03-06", "local": None, "mixed": "soon"}]))
    source = open_rest(server.url_for("/v1/items"), {})
    df = _rows(source)
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
    data = {"items": _items(1, 3)}
    _serve(server, lambda r: _json(data))
    url = server.url_for("/v1/items")
    first = open_rest(url, {"records": "items"}).partitions()[0]
    again = open_rest(url, {"records": "items"}).partitions()[0]
    assert first.fingerprint == again.fingerprint and first.key == again.key == first.label == url
    data["items"] = _items(1, 4)
    changed = open_rest(url, {"records": "items"}).partitions()[0]
    assert changed.fingerprint != first.fingerprint
    other_params = open_rest(url, {"records": "items", "params": {"x": 1}}).partitions()[0]
    assert other_params.fingerprint != changed.fingerprint


def test_spool_lives_under_the_data_dir_until_closed(server: HTTPServer) -> None:
    seen = _serve(server, lambda r: _json(_items(1, 2)))
    source = open_rest(server.url_for("/v1/items"), {})
    part = source.partitions()
    assert source.partitions() == part and len(seen) == 1  # fetched once
    assert part[0].path is not None and part[0].path.parent == _tmp() and part[0].path.exists()
    source.close()
    assert not part[0].path.exists()
    with pytest.raises(SourceError, match="closed"):
        source.scan(part[0])


def test_no_records_means_no_partition(server: HTTPServer) -> None:
    _serve(server, lambda r: _json({"items": []}))
    source = open_rest(server.url_for("/v1/items"), {"records": "items"})
    assert source.partitions() == []
    assert not list(_tmp().glob("api-*"))
    with pytest.raises(SourceError, match="no records"):
        source.schema()


# --- incremental ----------------------------------------------------------------------------------------------
def test_incremental_param_and_high_watermark(server: HTTPServer) -> None:
    rows: list[dict[str, Any]] = [{"id": 1, "updated_at": "2024-03-01T10:00:00Z"},
                                  {"id": 2, "updated_at": "2024-03-05T09:30:00.5Z"},
                                  {"id": 3, "updated_at": "2024-03-05T09:30:00Z"}]

    def handler(r: Request) -> Response:
        since = dt.datetime.fromisoformat(r.args.get("since", "2000-01-01T00:00:00Z"))
        return _json({"data": [x for x in rows if dt.datetime.fromisoformat(x["updated_at"]) >= since]})

    seen = _serve(server, handler)
    source = open_rest(server.url_for("/v1/items"), {"records": "data", "cursor": "updated_at",
                                                     "incremental_param": "since"})
    assert source.watermark_key() == server.url_for("/v1/items") + "#data"
    first = source.with_watermark(None)
    assert len(_rows(first)) == 3 and "since" not in seen[0].args
    assert first.high_watermark() == "2024-03-05T09:30:00.5Z"  # compared as times, not text
    second = source.with_watermark("2024-03-05T09:30:00Z")
    assert _rows(second)["id"].to_list() == [2, 3]
    assert seen[-1].args["since"] == "2024-03-05T09:30:00Z"
    assert first.partitions()[0].fingerprint != second.partitions()[0].fingerprint
    nothing = source.with_watermark("2024-04-01T00:00:00Z")
    assert nothing.partitions() == [] and nothing.high_watermark() == "2024-04-01T00:00:00Z"


def test_incremental_lag_and_numeric_cursor(server: HTTPServer) -> None:
    seen = _serve(server, lambda r: _json([{"id": 1, "version": 41}, {"id": 2, "version": 45}]))
    url = server.url_for("/v1/items")
    source = open_rest(url, {"cursor": "version", "incremental_param": "after", "lag": 5})
    bounded = source.with_watermark("44")
    assert bounded.high_watermark() == "45" and seen[-1].args["after"] == "39"
    timed = open_rest(url, {"cursor": "version", "incremental_param": "since", "lag": "1.5m"})
    timed.with_watermark("2024-03-05T10:00:00Z").partitions()
    assert seen[-1].args["since"] == "2024-03-05T09:58:30Z"
    assert open_rest(url, {"cursor": "version"}).with_watermark("50").high_watermark() == "50"  # never backwards


def test_nested_cursor_and_records_without_it(server: HTTPServer) -> None:
    _serve(server, lambda r: _json([{"id": 1, "meta": {"v": 3}}, {"id": 2, "meta": {}}, {"id": 3}]))
    source = open_rest(server.url_for("/v1/items"), {"cursor": "meta.v"}).with_watermark(None)
    assert source.high_watermark() == "3"
    assert _rows(source).columns == ["id", "meta.v"]


def test_incremental_param_needs_a_cursor() -> None:
    with pytest.raises(SpecError, match=r"source\.cursor: is required with incremental_param"):
        open_rest("https://api.example.com/v1", {"incremental_param": "since"})


# --- options --------------------------------------------------------------------------------------------------
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


def test_url_and_graphql_options_are_validated() -> None:
    with pytest.raises(SpecError, match=r"source\.path: .* is not an http\(s\) URL"):
        open_rest("ftp://example.com/x", {})
    with pytest.raises(SpecError, match=r"source\.query: is required"):
        open_graphql("https://api.example.com/graphql", {})
    with pytest.raises(SpecError, match=r"source\.records: unknown option"):
        open_graphql("https://api.example.com/graphql", {"query": "{ x }", "records": "data"})


def test_options_listings_cover_every_option() -> None:
    assert {"records", "pagination.style", "auth.type", "incremental_param", "cursor"} <= set(OPTIONS)
    assert {"query", "connection_path", "variables", "cursor_variable"} <= set(GRAPHQL_OPTIONS)
    assert all(isinstance(v, str) and v and "\n" not in v for v in [*OPTIONS.values(), *GRAPHQL_OPTIONS.values()])
    # every option the listing names is accepted by the parser
    open_rest("https://a.example/x", {k.split(".")[0]: v for k, v in {
        "records": "data", "params": {}, "headers": {}, "flatten": 0, "cursor": "u", "lag": 0, "max_pages": 2,
        "timeout": 1, "retries": 1, "backoff": 0, "max_wait": 0, "incremental_param": "since"}.items()})
    assert {k.split(".")[0] for k in OPTIONS} == {
        "records", "params", "pagination", "headers", "auth", "flatten", "cursor", "lag", "max_pages", "timeout",
        "retries", "backoff", "max_wait", "incremental_param"}


def test_open_source_dispatch(server: HTTPServer) -> None:
    assert isinstance(open_source("https://api.example.com/v1/orders"), RestSource)
    assert isinstance(open_source("https://api.example.com/graphql", format="graphql",
                                  options={"query": "{ a }"}), GraphQLSource)


def _client_log(caplog: pytest.LogCaptureFixture) -> str:
    """Every log line but the test server's own (werkzeug logs the requests it received, keys included)."""
    return "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("werkzeug"))


# --- secrets --------------------------------------------------------------------------------------------------
def test_secrets_never_show(server: HTTPServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                            secrets: None) -> None:
    """The API key rides in the query and the server echoes it in next links, error bodies and headers: it must
    appear in no label, key, fingerprint, error, log line or repr."""
    caplog.set_level(logging.DEBUG)

    def handler(r: Request) -> Response:
        assert r.args.get("api_key") == SECRET
        page = int(r.args.get("page", "1"))
        if page == 3:
            return Response(f"failed for key {SECRET} (Authorization: {r.headers.get('Authorization')})",
                            status=503, headers={"X-Echo": SECRET})
        nxt = server.url_for(f"/v1/items?page={page + 1}&api_key={SECRET}")
        return _json({"items": PAGES[page - 1], "next": nxt}, headers={"Link": f'<{nxt}>; rel="next"'})

    _serve(server, handler)
    url = server.url_for("/v1/items")
    options = {"records": "items", "auth": {"type": "api_key", "key_env": "T_KEY", "name": "api_key", "in": "query"},
               "pagination": {"style": "link"}, "retries": 2, **FAST}
    source = open_rest(url, options)
    with pytest.raises(SourceError) as info:
        source.partitions()
    assert "page 3" in str(info.value) and "api_key=***" in str(info.value)
    assert "HTTP 503" in str(info.value)
    shown = [str(info.value), repr(info.value.args), info.value.source, repr(source), source.label,
             source.watermark_key(), _client_log(caplog)]
    assert "retry 1/1" in caplog.text  # our own log line ran (and is scrubbed)

    # bodies that echo the secret (a failing page, a non-JSON page) are scrubbed too
    server.clear()
    _serve(server, lambda r: Response(f"bad key {SECRET}", status=400))
    with pytest.raises(SourceError) as bad:
        open_rest(url, options).partitions()
    server.clear()
    _serve(server, lambda r: Response(f"<p>{SECRET}</p>", content_type="text/html"))
    with pytest.raises(SourceError) as html:
        open_rest(url, options).partitions()
    assert "***" in str(bad.value) and "***" in str(html.value)
    shown += [str(bad.value), str(html.value)]

    # a successful incremental load: partitions, keys, fingerprints, watermark key
    server.clear()
    _serve(server, lambda r: _json({"items": _items(1, 2)}))
    ok = open_rest(f"{url}?token={SECRET}", {**options, "pagination": {"style": "none"}, "cursor": "id",
                                             "incremental_param": "since"}).with_watermark("0")
    part = ok.partitions()[0]
    shown += [part.key, part.label, part.fingerprint, repr(part), ok.watermark_key(), repr(ok), _client_log(caplog)]
    for text in shown:
        assert SECRET not in text, text
    assert "api_key=" in caplog.text  # httpx logged the request URLs, scrubbed


# --- GraphQL --------------------------------------------------------------------------------------------------
QUERY = """query Orders($first: Int!, $after: String, $status: String) {
  orders(first: $first, after: $after, status: $status) {
    pageInfo { hasNextPage endCursor }
    edges { node { id total customer { name } } }
  }
}"""


def _graphql_pages(shape: str) -> Handler:
    pages = {None: ("c1", True, _items(1, 2)), "c1": ("c2", True, _items(3, 2)), "c2": ("c3", False, _items(5, 1))}

    def handler(r: Request) -> Response:
        body = r.get_json()
        assert body["query"] == QUERY
        variables = body["variables"]
        assert variables["first"] == 2 and variables["status"] == "open"
        end, more, items = pages[variables.get("after")]
        nodes = [{**x, "total": x["id"] * 1.5, "customer": {"name": x["name"]}} for x in items]
        connection: dict[str, Any] = {"pageInfo": {"hasNextPage": more, "endCursor": end}}
        connection.update({"edges": [{"node": n, "cursor": "x"} for n in nodes]} if shape == "edges"
                          else {"nodes": nodes})
        return _json({"data": {"orders": connection}})

    return handler


@pytest.mark.parametrize("shape", ["edges", "nodes"])
def test_graphql_cursor_pagination(server: HTTPServer, shape: str) -> None:
    seen = _serve(server, _graphql_pages(shape), path="/graphql", method="POST")
    source = open_source(server.url_for("/graphql"), format="graphql", options={
        "query": QUERY, "variables": {"first": 2, "status": "open"},
        **({"connection_path": "data.orders"} if shape == "edges" else {})})
    assert isinstance(source, GraphQLSource)
    df = _rows(source)
    assert df["id"].to_list() == [1, 2, 3, 4, 5]
    assert df["customer.name"].to_list() == [f"item {i}" for i in range(1, 6)]
    assert [r.get_json()["variables"].get("after") for r in seen] == [None, "c1", "c2"]


def test_graphql_errors_and_bad_connection(server: HTTPServer) -> None:
    _serve(server, lambda r: _json({"errors": [{"message": "Field 'x' doesn't exist"}, {"message": "2"}]}),
           path="/graphql", method="POST")
    with pytest.raises(SourceError, match=r"page 1 .*GraphQL error: Field 'x' doesn't exist \(and 1 more\)"):
        open_graphql(server.url_for("/graphql"), {"query": QUERY}).partitions()
    server.clear()
    _serve(server, lambda r: _json({"data": {"orders": {"count": 1}}}), path="/graphql", method="POST")
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
        return _json({"data": {"orders": {"nodes": nodes, "pageInfo": {"hasNextPage": False, "endCursor": None}}}})

    seen = _serve(server, handler, path="/graphql", method="POST")
    source = open_graphql(server.url_for("/graphql"), {
        "query": QUERY, "cursor": "updatedAt", "incremental_variable": "since",
        "auth": {"type": "bearer", "token_env": "T_TOKEN"}})
    first = source.with_watermark(None)
    assert len(_rows(first)) == 2 and first.high_watermark() == "2024-02-01"
    second = source.with_watermark("2024-01-15")
    assert _rows(second)["id"].to_list() == [2]
    assert seen[-1].get_json()["variables"]["since"] == "2024-01-15"
    assert source.watermark_key().startswith(server.url_for("/graphql") + "#")
