"""The HTTP client of REST and GraphQL fetches, against a real HTTP server on loopback: every auth, credentials
kept to the source's own host, retries and rate limits (waits recorded on the manual clock, never slept), pages
that are not JSON, and secrets that never show."""

from __future__ import annotations

import base64
import email.utils
import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from engine.clock import ManualClock
from engine.errors import SourceError, SourceUnavailableError, SpecError, TransientError
from engine.settings import settings
from engine.sources.api.http import retry_after
from engine.sources.api.rest import open_rest
from tests.sources.api._helpers import PAGES, SECRET, flaky, items, json_response, rows, serve


def _tmp() -> Path:
    return settings().data_path / "tmp"


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


@pytest.mark.parametrize("kind", list(AUTHS))
@pytest.mark.usefixtures("secrets")
def test_auth(server: HTTPServer, kind: str) -> None:
    auth, ok = AUTHS[kind]

    def handler(r: Request) -> Response:
        if not ok(r):
            return json_response({"error": "unauthorized"}, status=401)
        page = int(r.args.get("page", "1"))
        return json_response({"items": PAGES[page - 1] if page <= 3 else []})

    seen = serve(server, handler)
    source = open_rest(server.url_for("/v1/items"), {"records": "items", "auth": auth,
                                                     "pagination": {"style": "page"}})
    assert rows(source)["id"].to_list() == list(range(1, 9))
    assert len(seen) == 4
    assert SECRET not in repr(source)


@pytest.mark.parametrize("kind", list(AUTHS))
def test_wrong_credentials_fail_at_once_without_the_secret(server: HTTPServer, monkeypatch: pytest.MonkeyPatch,
                                                           manual_clock: ManualClock, kind: str) -> None:
    for name in ("T_TOKEN", "T_PASSWORD", "T_KEY"):
        monkeypatch.setenv(name, "wrong-" + SECRET)
    auth, ok = AUTHS[kind]
    seen = serve(server, lambda r: json_response({"items": []}) if ok(r) else
                 json_response({"error": "bad credentials", "echo": dict(r.headers), "args": dict(r.args)}, status=401))
    source = open_rest(server.url_for("/v1/items"), {"records": "items", "auth": auth})
    with pytest.raises(SourceError) as info:
        source.partitions()
    text = str(info.value)
    assert "HTTP 401" in text and "page 1" in text and "check the credentials in $T_" in text
    assert SECRET not in text
    assert len(seen) == 1 and manual_clock.slept == []  # a 401 is not retried


def test_credentials_go_only_to_the_sources_own_host(server: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_TOKEN", SECRET)
    other = server.url_for("/v1/items?page=2").replace("127.0.0.1", "localhost")  # same server, other origin

    def handler(r: Request) -> Response:
        page = int(r.args.get("page", "1"))
        return json_response({"items": PAGES[page - 1], "next": other if page == 1 else None})

    seen = serve(server, handler)
    source = open_rest(server.url_for("/v1/items"), {"records": "items", "auth": {
        "type": "bearer", "token_env": "T_TOKEN"}, "pagination": {"style": "next_url", "next_path": "next"}})
    assert len(rows(source)) == 6
    assert seen[0].headers.get("Authorization") == f"Bearer {SECRET}"
    assert "Authorization" not in seen[1].headers


def test_missing_env_var_is_a_spec_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE_TOKEN", raising=False)
    with pytest.raises(SpecError, match=r"source\.auth\.token_env: environment variable NOPE_TOKEN is not set"):
        open_rest("https://api.example.com/v1", {"auth": {"type": "bearer", "token_env": "NOPE_TOKEN"}})


# --- retries and rate limits ----------------------------------------------------------------------------------
def test_429_with_retry_after_seconds_then_success(server: HTTPServer, manual_clock: ManualClock) -> None:
    seen = serve(server, flaky([json_response({"error": "slow down"}, status=429, headers={"Retry-After": "1"})],
                               json_response(items(1, 2))))
    source = open_rest(server.url_for("/v1/items"), {"backoff": 0.001, "max_wait": 5})
    assert len(rows(source)) == 2
    assert manual_clock.slept == [1.0]  # Retry-After wins over the tiny backoff
    assert len(seen) == 2


def test_429_with_retry_after_http_date(server: HTTPServer, manual_clock: ManualClock) -> None:
    past = email.utils.format_datetime(email.utils.localtime().replace(year=2020), usegmt=False)
    seen = serve(server, flaky([json_response({}, status=429, headers={"Retry-After": past})],
                               json_response(items(1, 2))))
    assert len(rows(open_rest(server.url_for("/v1/items"), {"backoff": 5.0, "max_wait": 5}))) == 2
    assert manual_clock.slept == [0.0]  # a date already past: no wait, whatever the backoff
    assert len(seen) == 2


def test_retry_after_is_capped_at_max_wait(server: HTTPServer, manual_clock: ManualClock) -> None:
    serve(server, flaky([json_response({}, status=503, headers={"Retry-After": "3600"})], json_response(items(1, 1))))
    assert len(rows(open_rest(server.url_for("/v1/items"), {"max_wait": 7}))) == 1
    assert manual_clock.slept == [7.0]


def test_retry_after_parsing() -> None:
    assert retry_after("3") == 3.0
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= (retry_after(later) or 0) <= 30
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert retry_after("soon") is None and retry_after(None) is None


def test_500_then_success(server: HTTPServer, manual_clock: ManualClock) -> None:
    seen = serve(server, flaky([json_response({}, status=500), json_response({}, status=503)],
                               json_response(items(1, 2))))
    assert len(rows(open_rest(server.url_for("/v1/items"), {}))) == 2
    assert len(seen) == 3
    first, second = manual_clock.slept  # backoff 1 s, doubled, each shortened by up to 20 % of jitter
    assert 0.8 <= first <= 1.0 and 1.6 <= second <= 2.0


def test_500_forever_gives_up_naming_the_page(server: HTTPServer, manual_clock: ManualClock) -> None:
    def handler(r: Request) -> Response:
        if r.args.get("page") == "2":
            return Response("upstream exploded", status=500)
        return json_response({"items": PAGES[0]})

    seen = serve(server, handler)
    source = open_rest(server.url_for("/v1/items"), {"records": "items", "retries": 4,
                                                     "pagination": {"style": "page"}})
    with pytest.raises(SourceUnavailableError) as info:
        source.partitions()
    text = str(info.value)
    assert "page 2" in text and "/v1/items?page=2" in text and "HTTP 500" in text
    assert "after 4 attempts" in text
    assert [r.args["page"] for r in seen] == ["1", "2", "2", "2", "2"]
    assert len(manual_clock.slept) == 3
    assert not list(_tmp().glob("api-*"))  # the spool is gone


def test_backoff_grows_exponentially_up_to_max_wait(server: HTTPServer, manual_clock: ManualClock) -> None:
    seen = serve(server, lambda r: json_response({}, status=502))
    source = open_rest(server.url_for("/v1/items"), {"retries": 5, "backoff": 0.05, "max_wait": 0.15})
    with pytest.raises(SourceError, match="after 5 attempts"):
        source.partitions()
    # waits 0.05, 0.1, then 0.2 and 0.4 capped at 0.15, each jittered down to 80 % at most
    for wait, full in zip(manual_clock.slept, [0.05, 0.1, 0.15, 0.15], strict=True):
        assert 0.8 * full <= wait <= full
    assert len(seen) == 5


def test_timeout_is_retried(server: HTTPServer, manual_clock: ManualClock) -> None:
    calls: list[float] = []

    def handler(r: Request) -> Response:
        calls.append(time.perf_counter())
        if len(calls) == 1:
            time.sleep(0.6)  # a slow server (the client's timeout is real time)
        return json_response(items(1, 3))

    serve(server, handler)
    source = open_rest(server.url_for("/v1/items"), {"timeout": 0.2})
    assert len(rows(source)) == 3
    assert len(calls) == 2 and len(manual_clock.slept) == 1


def test_timeout_forever(server: HTTPServer, manual_clock: ManualClock) -> None:
    def handler(r: Request) -> Response:
        time.sleep(0.3)  # a slow server (the client's timeout is real time)
        return json_response([])

    serve(server, handler)
    source = open_rest(server.url_for("/v1/items"), {"timeout": 0.1, "retries": 2})
    with pytest.raises(SourceError, match=r"page 1 \(http://.*/v1/items\): timed out after 0.1 s; gave up after 2"):
        source.partitions()


def test_connection_refused_is_retried_then_clear(manual_clock: ManualClock) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    source = open_rest(f"http://127.0.0.1:{port}/v1/items", {"retries": 2})
    with pytest.raises(SourceUnavailableError, match="page 1 .*connection failed .*gave up after 2 attempts") as info:
        source.partitions()
    assert info.value.__cause__ is not None  # the driver's error is kept for logs
    assert len(manual_clock.slept) == 1


def test_http_404_is_not_retried(server: HTTPServer, manual_clock: ManualClock) -> None:
    seen = serve(server, lambda r: json_response({"error": "nope"}, status=404))
    with pytest.raises(SourceError, match="HTTP 404 NOT FOUND; check the URL"):
        open_rest(server.url_for("/v1/items"), {}).partitions()
    assert len(seen) == 1 and manual_clock.slept == []


def test_non_json_page(server: HTTPServer) -> None:
    def handler(r: Request) -> Response:
        if r.args.get("page") == "2":
            return Response("<html>maintenance</html>", content_type="text/html")
        return json_response({"items": PAGES[0]})

    serve(server, handler)
    source = open_rest(server.url_for("/v1/items"), {"records": "items", "pagination": {"style": "page"}})
    with pytest.raises(SourceError, match=r"page 2 \(http://.*/v1/items\?page=2\): the response is not JSON "
                                          r"\(text/html.*maintenance"):
        source.partitions()


# --- secrets --------------------------------------------------------------------------------------------------
def _client_log(caplog: pytest.LogCaptureFixture) -> str:
    """Every log line but the test server's own (werkzeug logs the requests it received, keys included)."""
    return "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("werkzeug"))


@pytest.mark.usefixtures("secrets", "manual_clock")
def test_secrets_never_show(server: HTTPServer, caplog: pytest.LogCaptureFixture) -> None:
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
        return json_response({"items": PAGES[page - 1], "next": nxt}, headers={"Link": f'<{nxt}>; rel="next"'})

    serve(server, handler)
    url = server.url_for("/v1/items")
    options = {"records": "items", "auth": {"type": "api_key", "key_env": "T_KEY", "name": "api_key", "in": "query"},
               "pagination": {"style": "link"}, "retries": 2}
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
    serve(server, lambda r: Response(f"bad key {SECRET}", status=400))
    with pytest.raises(SourceError) as bad:
        open_rest(url, options).partitions()
    server.clear()
    serve(server, lambda r: Response(f"<p>{SECRET}</p>", content_type="text/html"))
    with pytest.raises(SourceError) as html:
        open_rest(url, options).partitions()
    assert "***" in str(bad.value) and "***" in str(html.value)
    shown += [str(bad.value), str(html.value)]

    # a successful incremental load: partitions, keys, fingerprints, watermark key
    server.clear()
    serve(server, lambda r: json_response({"items": items(1, 2)}))
    ok = open_rest(f"{url}?token={SECRET}", {**options, "pagination": {"style": "none"}, "cursor": "id",
                                             "incremental_param": "since"}).with_watermark("0")
    part = ok.partitions()[0]
    shown += [part.key, part.label, part.fingerprint, repr(part), ok.watermark_key(), repr(ok), _client_log(caplog)]
    for text in shown:
        assert SECRET not in text, text
    assert "api_key=" in caplog.text  # httpx logged the request URLs, scrubbed


def test_a_mute_server_costs_the_read_timeout_per_attempt(mute_server: Any, short_timeouts: None,
                                                          manual_clock: ManualClock) -> None:
    """A server that accepts and never answers: each attempt ends at BICONIC_READ_TIMEOUT, then a transient
    error names the host and port."""
    source = open_rest(f"http://{mute_server.address}/v1/items", {"retries": 2})
    started = time.monotonic()
    with pytest.raises(SourceUnavailableError) as info:
        source.partitions()
    assert time.monotonic() - started < 2 * settings().read_timeout + 3
    text = str(info.value)
    assert mute_server.address in text and "timed out after 1 s; gave up after 2 attempts" in text
    assert "\n" not in text and isinstance(info.value, TransientError)
