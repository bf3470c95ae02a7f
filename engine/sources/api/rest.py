"""REST (JSON over HTTP) and GraphQL endpoints as sources.

Every page is fetched first, into a *spool*: an NDJSON file under ``settings().data_path/tmp`` holding one record per
line, written page by page (memory holds one page). Reading is then the NDJSON source's job
(:class:`engine.sources.files.json.JsonSource`), so the schema is the union of fields over all pages (a field first
seen on page 3 is a column; ``1`` then ``1.5`` is a float) and row numbers are record numbers.

>>> engine.load("https://api.example.com/v1/orders", into="orders", partition_by="updated_at:month",
...             options={"records": "data", "auth": {"type": "bearer", "token_env": "ORDERS_TOKEN"},
...                      "pagination": {"style": "cursor", "cursor_path": "meta.next"}})  # doctest: +SKIP

The whole response set is **one partition**: its key and label are the URL without secrets, its fingerprint
hashes URL, params, watermark bounds and the spooled content, so re-running against unchanged data is skipped
by the ledger. The spool is written on first need (``partitions()``) and removed by :meth:`close`, when the
source is garbage-collected, or at process exit.

Design choices:

* Nested objects are flattened ``flatten`` levels deep (default 1): ``{"customer": {"id": 7}}`` becomes a
  column ``customer.id`` (normalised to ``customer_id`` by the load); deeper objects and lists stay nested and
  are stored as JSON text, as the NDJSON source does.
* JSON has no time type: a field whose every value is an ISO 8601 date or time (one form, as the CSV source
  guesses them) is read as a date or timestamp, so ``partition_by="updated_at:month"`` works as is.
* Secrets come only from environment variables named in ``auth`` (``token_env``, ``password_env``,
  ``key_env``); the source keeps the names, reads the values per fetch, sends them only to the URL's own host,
  and scrubs them from every message, label, key and log line (httpx's request log included).
* Retries: 429, 408 and 5xx answers, timeouts and connection failures are retried up to ``retries``
  attempts with exponential backoff (``backoff`` * 2^n, capped at ``max_wait``; a ``Retry-After`` in seconds
  or as an HTTP date wins), then a :class:`SourceError` names the URL and the page. Other 4xx fail at once.
* Incremental: ``cursor`` is the record field holding the change time or number; ``incremental_param``
  (GraphQL: ``incremental_variable``) receives the stored watermark minus ``lag``. Which records come back is
  the server's call (``updated_since`` is often inclusive), so use ``mode="merge"`` with a key.

Uses ``httpx`` (sync client), imported on first fetch.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import difflib
import email.utils
import functools
import hashlib
import json
import logging
import os
import random
import re
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args
from urllib.parse import unquote_plus

import polars as pl
import pyarrow as pa

from engine.errors import SourceError, SourceUnavailableError, SpecError
from engine.redact import redact
from engine.settings import settings
from engine.sources.base import Partition, reader_from_frame
from engine.sources.chunks import ChunkFactory
from engine.sources.incremental import lag_units
from engine.types import ISO_FORMS

if TYPE_CHECKING:
    import httpx

    from engine.sources.files.json import JsonSource

__all__ = ["GRAPHQL_OPTIONS", "OPTIONS", "Auth", "GraphQLSource", "Pagination", "RestSource", "open_graphql",
           "open_rest"]

PaginationStyle = Literal["none", "page", "offset", "cursor", "link", "next_url"]
AuthType = Literal["bearer", "basic", "api_key"]

_COMMON_OPTIONS: dict[str, str] = {
    "headers": "extra request headers (not secrets: use auth)",
    "auth.type": "bearer | basic | api_key",
    "auth.token_env": "bearer: environment variable holding the token",
    "auth.username": "basic: the user name (or auth.username_env)",
    "auth.password_env": "basic: environment variable holding the password",
    "auth.key_env": "api_key: environment variable holding the key",
    "auth.name": "api_key: header or query parameter name (default X-API-Key)",
    "auth.in": "api_key: header (default) or query",
    "flatten": "levels of nested objects turned into parent.child columns (default 1; 0 keeps them nested)",
    "cursor": "incremental: record field holding the change time or number (dotted path)",
    "lag": "incremental: re-read this far behind the watermark: seconds (or 15m, 2h, 1d) for times, units for "
           "numbers (needs mode merge)",
    "max_pages": "stop after this many pages (a safety cap; default none)",
    "timeout": "seconds per request (default 30)",
    "retries": "attempts per page on 429/5xx/timeouts (default 5)",
    "backoff": "first retry wait in seconds, doubled each attempt (default 1)",
    "max_wait": "longest wait between attempts, Retry-After included (default 60)",
}

#: ``rest`` options (``biconic sources``): option -> one-line description
OPTIONS: dict[str, str] = {
    "records": "dotted path to the list of records in each response (e.g. data.items; default: the body)",
    "params": "query parameters sent with every request",
    "pagination.style": "none | page | offset | cursor | link | next_url (default none)",
    "pagination.page_param": "page: page number parameter (default page)",
    "pagination.start": "page: first page number (default 1); offset: first offset (default 0)",
    "pagination.size_param": "page: page size parameter (optional)",
    "pagination.size": "page: page size sent in size_param",
    "pagination.total_pages_path": "page: dotted path to the total page count (else stop on an empty page)",
    "pagination.offset_param": "offset: offset parameter (default offset)",
    "pagination.limit_param": "offset: limit parameter (default limit)",
    "pagination.limit": "offset: records per page (default 100)",
    "pagination.total_path": "offset: dotted path to the total record count (else stop on an empty page)",
    "pagination.cursor_path": "cursor: dotted path to the next cursor in the body (required)",
    "pagination.cursor_param": "cursor: parameter the cursor is sent in (default cursor)",
    "pagination.next_path": "next_url: dotted path to the next page's URL in the body (required)",
    "incremental_param": "incremental: query parameter receiving the stored watermark (e.g. updated_since)",
    **_COMMON_OPTIONS,
}

#: ``graphql`` options (``biconic sources``): option -> one-line description
GRAPHQL_OPTIONS: dict[str, str] = {
    "query": "the GraphQL query; it declares $after and returns a connection (required)",
    "connection_path": "dotted path to the connection (e.g. data.orders; default: the only field under data)",
    "variables": "variables sent with every page (e.g. first: 100)",
    "cursor_variable": "variable receiving pageInfo.endCursor (default after)",
    "incremental_variable": "incremental: variable receiving the stored watermark",
    **_COMMON_OPTIONS,
}

_RETRY_STATUS = frozenset({408, 429})
#: query parameters whose values are secrets wherever they appear (next links echo them back)
_SECRET_PARAMS = frozenset({"access_token", "api_key", "apikey", "api-key", "key", "token", "secret",
                            "client_secret", "password", "signature", "sig", "auth"})
_SNIPPET = 120
_HTTP_LOGGERS = ("httpx", "httpcore.connection", "httpcore.http11", "httpcore.http2", "httpcore.proxy",
                 "httpcore.socks")
log = logging.getLogger(__name__)


# --- options -------------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Auth:
    """How requests authenticate; secrets are named by environment variable, never held.

    >>> Auth(type="api_key", key_env="SHOP_KEY", name="api_key", location="query")  # doctest: +SKIP
    """

    type: AuthType
    token_env: str | None = None
    username: str | None = None
    username_env: str | None = None
    password_env: str | None = None
    key_env: str | None = None
    name: str = "X-API-Key"
    #: where an API key goes (option ``auth.in``)
    location: Literal["header", "query"] = "header"


_STYLE_KEYS: dict[str, frozenset[str]] = {
    "none": frozenset(),
    "page": frozenset({"page_param", "start", "size_param", "size", "total_pages_path"}),
    "offset": frozenset({"offset_param", "limit_param", "limit", "start", "total_path"}),
    "cursor": frozenset({"cursor_path", "cursor_param"}),
    "link": frozenset(),
    "next_url": frozenset({"next_path"}),
}


@dataclass(frozen=True, kw_only=True)
class Pagination:
    """How a REST endpoint pages (see ``OPTIONS`` for each style's settings).

    >>> Pagination(style="cursor", cursor_path="meta.next", cursor_param="cursor")  # doctest: +SKIP
    """

    style: PaginationStyle = "none"
    page_param: str = "page"
    start: int | None = None
    size_param: str | None = None
    size: int | None = None
    total_pages_path: str | None = None
    offset_param: str = "offset"
    limit_param: str = "limit"
    limit: int = 100
    total_path: str | None = None
    cursor_path: str | None = None
    cursor_param: str = "cursor"
    next_path: str | None = None


def _unknown(data: Mapping[str, Any], known: set[str] | frozenset[str], prefix: str) -> None:
    for name in data:
        if name not in known:
            close = difflib.get_close_matches(str(name), sorted(known), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(sorted(known)) or '(none)'}"
            raise SpecError(f"{prefix}{name}", f"unknown option; {hint}")


def _text(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise SpecError(path, f"must be a non-empty string, not {value!r}")
    return value


def _number(value: Any, path: str, *, integer: bool = False, minimum: float = 0) -> Any:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if not ok or isinstance(value, bool) or value < minimum:
        kind = "an integer" if integer else "a number"
        raise SpecError(path, f"must be {kind} >= {minimum:g}, not {value!r}")
    return value




def _mapping(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise SpecError(path, f"must be a mapping, not {type(value).__name__}")
    return {str(k): v for k, v in value.items()}


def _env(name: str, path: str) -> str:
    _text(name, path)
    if name not in os.environ:
        raise SpecError(path, f"environment variable {name} is not set; export it before the load")
    return name


def _parse_auth(value: Any) -> Auth:
    data = _mapping(value, "source.auth")
    kind = str(data.get("type"))
    if kind not in get_args(AuthType):
        raise SpecError("source.auth.type", f"must be one of {', '.join(get_args(AuthType))}, not "
                                            f"{data.get('type')!r}")
    allowed = {"bearer": {"token_env"}, "basic": {"username", "username_env", "password_env"},
               "api_key": {"key_env", "name", "in"}}[kind]
    _unknown(data, allowed | {"type"}, "source.auth.")
    if kind == "bearer":
        return Auth(type="bearer", token_env=_env(data.get("token_env", ""), "source.auth.token_env"))
    if kind == "basic":
        if ("username" in data) == ("username_env" in data):
            raise SpecError("source.auth.username", "set exactly one of username and username_env")
        return Auth(type="basic", username=_text(data["username"], "source.auth.username") if "username" in data
                    else None,
                    username_env=_env(data["username_env"], "source.auth.username_env") if "username_env" in data
                    else None,
                    password_env=_env(data.get("password_env", ""), "source.auth.password_env"))
    location = data.get("in", "header")
    if location not in ("header", "query"):
        raise SpecError("source.auth.in", f"must be header or query, not {location!r}")
    return Auth(type="api_key", key_env=_env(data.get("key_env", ""), "source.auth.key_env"),
                name=_text(data.get("name", "X-API-Key"), "source.auth.name"), location=location)


def _parse_pagination(value: Any) -> Pagination:
    data = _mapping(value, "source.pagination")
    style = data.get("style", "none")
    if style not in _STYLE_KEYS:
        raise SpecError("source.pagination.style", f"must be one of {', '.join(_STYLE_KEYS)}, not {style!r}")
    _unknown(data, _STYLE_KEYS[style] | {"style"}, "source.pagination.")
    kwargs: dict[str, Any] = {"style": style}
    for name, raw in data.items():
        path = f"source.pagination.{name}"
        if name in ("start",):
            kwargs[name] = _number(raw, path, integer=True)
        elif name in ("size", "limit"):
            kwargs[name] = _number(raw, path, integer=True, minimum=1)
        elif name != "style":
            kwargs[name] = _text(raw, path)
    if style == "cursor" and "cursor_path" not in data:
        raise SpecError("source.pagination.cursor_path", "is required for style cursor (e.g. meta.next)")
    if style == "next_url" and "next_path" not in data:
        raise SpecError("source.pagination.next_path", "is required for style next_url (e.g. links.next)")
    if "size" in data and "size_param" not in data:
        raise SpecError("source.pagination.size_param", "is required with size (the parameter to send it in)")
    return Pagination(**kwargs)


def _parse_params(value: Any, path: str) -> dict[str, Any]:
    params = _mapping(value, path)
    for name, v in params.items():
        items = v if isinstance(v, list) else [v]
        if not all(isinstance(x, (str, int, float, bool)) for x in items):
            raise SpecError(f"{path}.{name}", f"must be a string, number or boolean (or a list of them), not {v!r}")
    return params


def _common(options: dict[str, Any]) -> dict[str, Any]:
    """Options shared by REST and GraphQL, validated and removed from ``options``."""
    kwargs: dict[str, Any] = {}
    if "headers" in options:
        headers = _mapping(options.pop("headers"), "source.headers")
        for name, v in headers.items():
            _text(v, f"source.headers.{name}")
        kwargs["headers"] = headers
    if "auth" in options:
        kwargs["auth"] = _parse_auth(options.pop("auth"))
    if "flatten" in options:
        kwargs["flatten"] = _number(options.pop("flatten"), "source.flatten", integer=True)
    if "cursor" in options:
        kwargs["cursor"] = _text(options.pop("cursor"), "source.cursor")
    if "lag" in options:
        kwargs["lag"] = lag_units(options.pop("lag"))
    if "max_pages" in options:
        kwargs["max_pages"] = _number(options.pop("max_pages"), "source.max_pages", integer=True, minimum=1)
    for name in ("timeout", "backoff", "max_wait"):
        if name in options:
            kwargs[name] = _number(options.pop(name), f"source.{name}")
    if "retries" in options:
        kwargs["retries"] = _number(options.pop("retries"), "source.retries", integer=True, minimum=1)
    return kwargs


def _check_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest.split("/")[0]:
        raise SpecError("source.path", f"{redact(url)!r} is not an http(s) URL")
    return url


def open_rest(url: str, options: Mapping[str, Any]) -> RestSource:
    """A :class:`RestSource` from a URL and spec options (unknown or wrong options raise :class:`SpecError`).

    >>> open_rest("https://api.example.com/v1/orders", {"records": "data"})  # doctest: +SKIP
    """
    opts = dict(options)
    kwargs = _common(opts)
    if "records" in opts:
        kwargs["records"] = _text(opts.pop("records"), "source.records")
    if "params" in opts:
        kwargs["params"] = _parse_params(opts.pop("params"), "source.params")
    if "pagination" in opts:
        kwargs["pagination"] = _parse_pagination(opts.pop("pagination"))
    if "incremental_param" in opts:
        kwargs["incremental_param"] = _text(opts.pop("incremental_param"), "source.incremental_param")
    _unknown(opts, {k.split(".")[0] for k in OPTIONS}, "source.")
    if kwargs.get("incremental_param") and not kwargs.get("cursor"):
        raise SpecError("source.cursor", "is required with incremental_param (the record field the watermark "
                                         "comes from, e.g. updated_at)")
    return RestSource(url=_check_url(url), **kwargs)


def open_graphql(url: str, options: Mapping[str, Any]) -> GraphQLSource:
    """A :class:`GraphQLSource` from a URL and spec options (``query`` is required).

    >>> open_graphql("https://api.example.com/graphql", {"query": QUERY, "variables": {"first": 100}})  # doctest: +SKIP
    """
    opts = dict(options)
    kwargs = _common(opts)
    if "query" not in opts:
        raise SpecError("source.query", "is required for a GraphQL source (a query taking $after and returning a "
                                        "connection with pageInfo { hasNextPage endCursor })")
    kwargs["query"] = _text(opts.pop("query"), "source.query")
    if "connection_path" in opts:
        kwargs["connection_path"] = _text(opts.pop("connection_path"), "source.connection_path")
    if "variables" in opts:
        kwargs["variables"] = _mapping(opts.pop("variables"), "source.variables")
    for name in ("cursor_variable", "incremental_variable"):
        if name in opts:
            kwargs[name] = _text(opts.pop(name), f"source.{name}")
    _unknown(opts, {k.split(".")[0] for k in GRAPHQL_OPTIONS}, "source.")
    if kwargs.get("incremental_variable") and not kwargs.get("cursor"):
        raise SpecError("source.cursor", "is required with incremental_variable (the record field the watermark "
                                         "comes from, e.g. updatedAt)")
    return GraphQLSource(url=_check_url(url), **kwargs)


# --- JSON paths, records, watermarks ---------------------------------------------------------------------
_MISSING = object()


def _get(data: Any, path: str) -> Any:
    """The value at a dotted path (``meta.next``, ``data.0.items``), or ``_MISSING``."""
    for part in path.removeprefix("$.").split("."):
        if isinstance(data, Mapping) and part in data:
            data = data[part]
        elif isinstance(data, list) and part.lstrip("-").isdigit() and -len(data) <= int(part) < len(data):
            data = data[int(part)]
        else:
            return _MISSING
    return data


def _flatten(record: dict[str, Any], depth: int) -> dict[str, Any]:
    if depth <= 0 or not any(isinstance(v, dict) for v in record.values()):
        return record
    out: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict):  # an empty object has no values to give: no columns
            for sub, v in _flatten(value, depth - 1).items():
                out[f"{key}.{sub}"] = v
        else:
            out[key] = value
    return out


def _as_time(text: str) -> dt.datetime | None:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


class _Highest:
    """The largest cursor value seen, as text: numbers compare as numbers, ISO 8601 times as times (whatever
    their offset or precision), other text as text."""

    def __init__(self) -> None:
        self.number: float | None = None
        self.number_text: str | None = None
        self.time: tuple[dt.datetime, str] | None = None
        self.text: str | None = None
        self.all_times = True

    def add(self, value: Any) -> None:
        if value is None or isinstance(value, (bool, dict, list)):
            return
        if isinstance(value, (int, float)):
            if self.number is None or value > self.number:
                self.number, self.number_text = value, str(value)
            return
        text = str(value)
        self.text = text if self.text is None or text > self.text else self.text
        when = _as_time(text) if self.all_times else None
        if when is None:
            self.all_times = False
        elif self.time is None or when > self.time[0]:
            self.time = (when, text)

    def result(self) -> str | None:
        if self.text is not None:
            return self.time[1] if self.all_times and self.time is not None else self.text
        return self.number_text


def _later(a: str | None, b: str | None) -> str | None:
    highest = _Highest()
    for value in (a, b):
        if value is not None:
            highest.add(_as_number(value))
    return highest.result()


def _as_number(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text) if text.strip().lower() not in ("nan", "inf", "-inf", "infinity") else text
    except ValueError:
        return text


def _minus_lag(low: str, lag: float) -> str:
    """The watermark moved back by ``lag`` (seconds for times, units for numbers)."""
    if not lag:
        return low
    number = _as_number(low)
    if isinstance(number, (int, float)):
        return str(number - lag) if not (isinstance(number, int) and float(lag).is_integer()) \
            else str(number - int(lag))
    try:
        when = dt.datetime.fromisoformat(low)
    except ValueError:
        raise SpecError("source.lag", f"cannot move the watermark {low!r} back: it is neither a number nor an "
                                      "ISO 8601 time") from None
    text = (when - dt.timedelta(seconds=lag)).isoformat()
    return text.removesuffix("+00:00") + "Z" if low.endswith("Z") else text


_TIME_FORMS = [(re.compile(pattern), target) for pattern, target in ISO_FORMS]


class _Times:
    """Fields whose every value is an ISO 8601 date or time of one form (as the CSV source guesses them, but
    over every record): JSON has no time type, and partitioning by ``updated_at`` needs one."""

    def __init__(self) -> None:
        self.forms: dict[str, list[bool]] = {}
        self.other: set[str] = set()

    def add(self, record: Mapping[str, Any]) -> None:
        for key, value in record.items():
            if value is None or key in self.other:
                continue
            forms = self.forms.setdefault(key, [True] * len(_TIME_FORMS))
            text = value.strip() if isinstance(value, str) else None
            for i, (pattern, _) in enumerate(_TIME_FORMS):
                forms[i] = forms[i] and text is not None and pattern.match(text) is not None
            if not any(forms):
                self.other.add(key)
                del self.forms[key]

    def result(self) -> dict[str, pl.DataType]:
        return {key: _TIME_FORMS[forms.index(True)][1] for key, forms in self.forms.items()}


# --- secrets and HTTP ----------------------------------------------------------------------------------------
class _Secrets:
    """The secret values of one fetch, and the means to keep them out of text."""

    def __init__(self, auth: Auth | None) -> None:
        self.headers: dict[str, str] = {}
        self.params: dict[str, str] = {}
        self.values: list[str] = []
        self.names: set[str] = set(_SECRET_PARAMS)
        if auth is None:
            return
        if auth.type == "bearer":
            token = self._read(auth.token_env)
            self.headers["Authorization"] = f"Bearer {token}"
        elif auth.type == "basic":
            user = auth.username if auth.username is not None else self._read(auth.username_env)
            password = self._read(auth.password_env)
            pair = base64.b64encode(f"{user}:{password}".encode()).decode()
            self.values.append(pair)
            self.headers["Authorization"] = f"Basic {pair}"
        else:
            key = self._read(auth.key_env)
            if auth.location == "query":
                self.params[auth.name] = key
                self.names.add(auth.name.lower())
            else:
                self.headers[auth.name] = key
        self.values.sort(key=len, reverse=True)  # a secret containing another is replaced whole

    def _read(self, name: str | None) -> str:
        assert name is not None
        value = os.environ.get(name)
        if value is None:
            raise SourceError(f"${name}", "the environment variable holding the credential is not set")
        if value:
            self.values.append(value)
        return value

    def scrub(self, text: str) -> str:
        for value in self.values:
            text = text.replace(value, "***")
        return text

    def url(self, url: str | httpx.URL) -> str:
        """A URL safe to print: no password, no secret query values."""
        import httpx

        parsed = httpx.URL(str(url))
        query = parsed.query.decode("ascii", errors="replace")
        if query:
            pairs = []
            for pair in query.split("&"):
                name, sep, _ = pair.partition("=")
                pairs.append(f"{name}=***" if sep and unquote_plus(name).lower() in self.names else pair)
            parsed = parsed.copy_with(query="&".join(pairs).encode())
        return self.scrub(redact(str(parsed)))


class _ScrubLog(logging.Filter):
    """Scrubs secrets from httpx's own request log (it prints full URLs, query keys included)."""

    def __init__(self, secrets: _Secrets) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets.values:
            record.msg = self.secrets.scrub(record.getMessage())
            record.args = ()
        return True


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


class _Http:
    """One fetch's HTTP client: credentials to the source's own host only, retries, clear errors."""

    def __init__(self, source: _ApiSource, label: str) -> None:
        import httpx

        self.source = source
        self.label = label
        self.secrets = _Secrets(source.auth)
        self.origin = httpx.URL(source.url).copy_with(path="/", query=None, fragment=None)
        self.client = httpx.Client(timeout=source.timeout, follow_redirects=True,
                                   headers={"Accept": "application/json", "User-Agent": "biconic-engine",
                                            **source.headers})
        self.filter = _ScrubLog(self.secrets)
        # a logger's filters see only its own records, so every httpcore module logger gets one
        self.loggers = [logging.getLogger(name) for name in _HTTP_LOGGERS]
        for logger in self.loggers:
            logger.addFilter(self.filter)

    def close(self) -> None:
        for logger in self.loggers:
            logger.removeFilter(self.filter)
        self.client.close()

    def fail(self, page: int, url: str, message: str, *, transient: bool = False) -> SourceError:
        kind = SourceUnavailableError if transient else SourceError
        return kind(self.label, self.secrets.scrub(f"page {page} ({url}): {message}"))

    def send(self, method: str, url: str, *, page: int, params: Mapping[str, Any] | None = None,
             body: Any = None) -> httpx.Response:
        """The 2xx response for one page, after retries (429/408/5xx, timeouts, connection failures)."""
        import httpx

        target = httpx.URL(url)
        if params:
            target = target.copy_merge_params({k: _param(v) for k, v in params.items()})
        headers: dict[str, str] = {}
        if target.copy_with(path="/", query=None, fragment=None) == self.origin:
            target = target.copy_merge_params(self.secrets.params) if self.secrets.params else target
            headers = self.secrets.headers
        shown = self.secrets.url(target)
        attempts = self.source.retries
        for attempt in range(1, attempts + 1):
            wait: float | None = None
            try:
                response = self.client.request(method, target, headers=headers, json=body)
            except httpx.TimeoutException:
                reason = f"timed out after {self.source.timeout:g} s"
            except httpx.TransportError as exc:
                reason = f"connection failed ({type(exc).__name__}: {self.secrets.scrub(str(exc))[:_SNIPPET]})"
            else:
                status = response.status_code
                if status < 400:
                    return response
                reason = f"HTTP {status} {response.reason_phrase}".rstrip()
                if status not in _RETRY_STATUS and status < 500:
                    raise self.fail(page, shown, f"{reason}{_hint(status, self.source.auth)}"
                                                 f"{_snippet(response, self.secrets)}")
                wait = _retry_after(response.headers.get("Retry-After"))
            if attempt == attempts:
                break
            if wait is None:
                wait = self.source.backoff * 2 ** (attempt - 1) * random.uniform(0.8, 1.0)
            wait = min(wait, self.source.max_wait)
            log.info("%s: page %d (%s): %s; retry %d/%d in %.2f s", self.label, page, shown, reason, attempt,
                     attempts - 1, wait)
            time.sleep(wait)
        plural = "s" if attempts > 1 else ""
        raise self.fail(page, shown, f"{reason}; gave up after {attempts} attempt{plural} "
                                     "(raise retries or max_wait, or try later)", transient=True)

    def json(self, response: httpx.Response, page: int) -> Any:
        try:
            return response.json()
        except ValueError:
            kind = response.headers.get("Content-Type", "no content type")
            raise self.fail(page, self.secrets.url(response.url),
                            f"the response is not JSON ({kind}){_snippet(response, self.secrets)}") from None


def _param(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return [_param(v) for v in value]
    return value


def _hint(status: int, auth: Auth | None) -> str:
    if status in (401, 403):
        if auth is None:
            return "; the API wants credentials: set auth"
        env = auth.token_env or auth.password_env or auth.key_env
        return f"; check the credentials in ${env}"
    if status == 404:
        return "; check the URL"
    return ""


def _snippet(response: httpx.Response, secrets: _Secrets) -> str:
    text = " ".join(response.text[:_SNIPPET].split())
    return f"; body starts: {secrets.scrub(text)!r}" if text else ""


def _keys(body: Any) -> str:
    if isinstance(body, Mapping):
        return f"an object with keys {', '.join(map(str, list(body)[:12])) or '(none)'}"
    return f"a {type(body).__name__}"


# --- the sources -----------------------------------------------------------------------------------------
class _Spool:
    """What one source fetched: the spool file, its partition and high mark (filled once, under the lock)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.partitions: list[Partition] | None = None
        self.high: str | None = None
        #: fields holding ISO 8601 dates or times in every record, and their type
        self.times: dict[str, pl.DataType] = {}
        self.path: Path | None = None
        self.finalizer: weakref.finalize[Any, Any] | None = None

    def remove(self) -> None:
        if self.finalizer is not None:
            self.finalizer()


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)


@dataclass(frozen=True, kw_only=True)
class _ApiSource:
    """What REST and GraphQL sources share: HTTP settings, auth, flattening, the incremental cursor, the spool."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    auth: Auth | None = None
    flatten: int = 1
    cursor: str | None = None
    lag: float = 0
    max_pages: int | None = None
    timeout: float = 30.0
    retries: int = 5
    backoff: float = 1.0
    max_wait: float = 60.0
    #: set by :meth:`with_watermark`: (the stored low mark,) or () when not bounded
    bounds: tuple[str | None, ...] = ()
    _state: _Spool = field(default_factory=_Spool, init=False, repr=False, compare=False)

    def __repr__(self) -> str:
        # a URL or params may still carry a secret the user typed in: show them as reports do
        shown = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not f.repr:
                continue
            if f.name == "url":
                value = _Secrets(None).url(value)
            elif f.name == "params":
                value = {k: "***" if k.lower() in _SECRET_PARAMS else v for k, v in value.items()}
            shown.append(f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"

    # subclasses: the pages as lists of records, and what identifies the request set
    def _pages(self, http: _Http, sent: str | None) -> Iterator[list[Any]]:
        raise NotImplementedError

    def _identity(self) -> list[str]:
        raise NotImplementedError

    @property
    def label(self) -> str:
        """The URL as shown in reports and errors (no password, no secret query values)."""
        return _Secrets(None).url(self.url)

    def _sent(self) -> str | None:
        """The watermark value sent to the server (the low mark minus the lag), or None."""
        low = self.bounds[0] if self.bounds else None
        return _minus_lag(low, self.lag) if low is not None else None

    # --- incremental ---
    def watermark_key(self) -> str:
        """The endpoint the watermark belongs to: URL (without secrets) and records path or connection."""
        return "#".join([self.label, *self._identity()[1:2]])

    def with_watermark(self, low: str | None) -> _ApiSource:
        """A copy asking the server for records changed since ``low`` (minus ``lag``); all when None."""
        return dataclasses.replace(self, bounds=(low,))

    def high_watermark(self) -> str | None:
        """The largest ``cursor`` value fetched, or the low mark when nothing newer came back."""
        self.partitions()
        return self._state.high

    # --- fetching ---
    def partitions(self) -> list[Partition]:
        """One partition holding every record of every page (fetched now, once); none when there are none."""
        state = self._state
        with state.lock:
            if state.partitions is None:
                state.partitions = self._fetch()
            return list(state.partitions)

    def close(self) -> None:
        """Remove the spool file now (it also goes when the source is garbage-collected or the process exits)."""
        self._state.remove()

    def _fetch(self) -> list[Partition]:
        label = self.label
        low = self.bounds[0] if self.bounds else None
        sent = self._sent()
        content = hashlib.sha256()
        highest = _Highest()
        times = _Times()
        count = 0
        http = _Http(self, label)
        folder = settings().data_path / "tmp"
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="api-", suffix=".ndjson", dir=folder)
        path = Path(name)
        state = self._state
        state.path = path
        state.finalizer = weakref.finalize(state, _unlink, path)
        try:
            with os.fdopen(fd, "wb") as out:
                for page, records in enumerate(self._pages(http, sent), start=1):
                    lines = []
                    for number, record in enumerate(records, start=1):
                        if not isinstance(record, dict):
                            raise SourceError(label, f"page {page}: record {number} is a {type(record).__name__}, "
                                                     "not an object; point records at a list of objects")
                        if self.cursor is not None:
                            value = _get(record, self.cursor)
                            highest.add(None if value is _MISSING else value)
                        flat = _flatten(record, self.flatten)
                        times.add(flat)
                        lines.append(json.dumps(flat, ensure_ascii=False, separators=(",", ":")))
                    if lines:
                        data = ("\n".join(lines) + "\n").encode()
                        out.write(data)
                        content.update(data)
                        count += len(lines)
        except BaseException:
            state.remove()
            raise
        finally:
            http.close()
        state.high = _later(low, highest.result())
        state.times = times.result()
        if not count:
            state.remove()
            return []
        text = "\x1f".join([*self._identity(), repr(low), repr(sent), repr(state.high), content.hexdigest()])
        return [Partition(key=label, label=label, path=path, size_bytes=path.stat().st_size,
                          fingerprint=hashlib.sha256(text.encode()).hexdigest()[:32])]

    # --- reading: the NDJSON source over the spool ---
    def _json(self) -> JsonSource:
        from engine.sources.files.json import JsonSource

        state = self._state
        if state.path is None or not state.path.exists():
            raise SourceError(self.label, "the fetched records are gone (the source was closed); fetch again "
                                          "with a new source")
        return JsonSource(paths=(state.path,), lines=True)

    def _typed(self, frame: pl.LazyFrame) -> pl.LazyFrame:
        """ISO 8601 text fields as dates and times (a value that does not convert quarantines its row)."""
        schema = frame.collect_schema()
        times = {c: t for c, t in self._state.times.items() if schema.get(c) == pl.String}
        if not times:
            return frame
        from engine.plan.frame import Plan, keep_source_values

        plan = Plan.start(keep_source_values(frame))
        plan.convert_columns(times, rule="type")
        return plan.frame

    def scan(self, partition: Partition) -> pl.LazyFrame:
        """The records as a lazy frame (keep the source alive while using it: it owns the spool file)."""
        return self._typed(self._json().scan(partition))

    def chunks(self, partition: Partition) -> Iterator[ChunkFactory]:
        """The records in bounded chunks of whole lines of the spool."""
        for make in self._json().chunks(partition):
            yield functools.partial(_typed_chunk, self, make)

    def read(self, partition: Partition, *, columns: list[str] | None = None) -> pa.RecordBatchReader:
        """The records as an Arrow stream."""
        reader = reader_from_frame(self.scan(partition), columns=columns)
        return pa.RecordBatchReader.from_batches(reader.schema, _holding(self, reader))

    def schema(self) -> pa.Schema:
        """The union of fields over every fetched record."""
        parts = self.partitions()
        if not parts:
            raise SourceError(self.label, "the API returned no records, so there is no schema to show")
        return reader_from_frame(self.scan(parts[0]).head(0)).schema


def _typed_chunk(source: _ApiSource, make: ChunkFactory, rows_before: int) -> pl.LazyFrame:
    return source._typed(make(rows_before))


def _holding(owner: object, reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
    """The reader's batches, keeping ``owner`` (and its spool file) alive until they are read."""
    yield from reader  # ``owner`` stays a local of this frame until the last batch


@dataclass(frozen=True, kw_only=True, repr=False)
class RestSource(_ApiSource):
    """A JSON REST endpoint, every page of it, as one partition (see the module docstring and ``OPTIONS``).

    >>> src = open_rest("https://api.example.com/v1/orders", {"records": "data.items",
    ...                 "pagination": {"style": "page", "total_pages_path": "meta.pages"}})  # doctest: +SKIP
    >>> src.scan(src.partitions()[0]).collect()  # doctest: +SKIP
    """

    records: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    pagination: Pagination = field(default_factory=Pagination)
    incremental_param: str | None = None

    def _identity(self) -> list[str]:
        return [self.url, self.records or "", json.dumps(self.params, sort_keys=True, default=str),
                repr(self.pagination), self.incremental_param or "", str(self.flatten)]

    def _records(self, http: _Http, body: Any, page: int, url: str) -> list[Any]:
        if self.records is None:
            if isinstance(body, list):
                return body
            lists = [k for k, v in body.items() if isinstance(v, list)] if isinstance(body, Mapping) else []
            hint = f"set records to {' or '.join(map(repr, lists))}" if lists else "set records to its path"
            raise http.fail(page, url, f"the response is {_keys(body)}, not a list of records; {hint}")
        found = _get(body, self.records)
        if found is None:
            return []
        if found is _MISSING:
            raise http.fail(page, url, f"no {self.records!r} in the response ({_keys(body)}); check records")
        if not isinstance(found, list):
            raise http.fail(page, url, f"{self.records!r} is {_keys(found)}, not a list of records")
        return found

    def _pages(self, http: _Http, sent: str | None) -> Iterator[list[Any]]:
        import httpx

        p = self.pagination
        params: dict[str, Any] = dict(self.params)
        if self.incremental_param and sent is not None:
            params[self.incremental_param] = sent
        number = p.start if p.start is not None else (0 if p.style == "offset" else 1)
        url: str = self.url
        cursor: Any = None
        seen: set[str] = set()
        page = 0
        while True:
            page += 1
            query = dict(params)
            if p.style == "page":
                query[p.page_param] = number
                if p.size_param and p.size:
                    query[p.size_param] = p.size
            elif p.style == "offset":
                query.update({p.offset_param: number, p.limit_param: p.limit})
            elif p.style == "cursor" and cursor is not None:
                query[p.cursor_param] = cursor
            elif p.style in ("link", "next_url") and page > 1:
                query = {}  # the next URL carries its own query
            response = http.send("GET", url, page=page, params=query)
            shown = http.secrets.url(response.request.url)
            body = http.json(response, page)
            records = self._records(http, body, page, shown)
            yield records
            if p.style == "none" or (self.max_pages is not None and page >= self.max_pages):
                return
            if p.style in ("page", "offset"):
                if not records:
                    return
                total = _get(body, p.total_pages_path or p.total_path or "") \
                    if (p.total_pages_path or p.total_path) else None
                number += 1 if p.style == "page" else len(records)
                start = p.start if p.start is not None else (1 if p.style == "page" else 0)
                if isinstance(total, (int, float)) and not isinstance(total, bool) and number - start >= total:
                    return
                continue
            if p.style == "cursor":
                assert p.cursor_path is not None
                nxt = _get(body, p.cursor_path)
                if nxt is None or nxt is _MISSING or nxt is False or nxt == "" or not records:
                    return
                key = str(nxt)
            else:
                if p.style == "link":
                    nxt = response.links.get("next", {}).get("url")
                else:
                    assert p.next_path is not None
                    nxt = _get(body, p.next_path)
                if not nxt or nxt is _MISSING or not isinstance(nxt, str):
                    return
                nxt = str(httpx.URL(str(response.url)).join(nxt))
                key = nxt
            if key in seen:
                raise http.fail(page, shown, "the next page points back to a page already read; stopping to avoid "
                                             "a loop (check the pagination settings)")
            seen.add(key)
            if p.style == "cursor":
                cursor = nxt
            else:
                url = nxt


@dataclass(frozen=True, kw_only=True, repr=False)
class GraphQLSource(_ApiSource):
    """A GraphQL connection, paged by ``pageInfo { hasNextPage endCursor }``, its ``edges { node }`` or
    ``nodes`` as records, in one partition (see ``GRAPHQL_OPTIONS``).

    >>> query = '''query($after: String) { orders(first: 100, after: $after) {
    ...     pageInfo { hasNextPage endCursor } nodes { id total updatedAt } } }'''
    >>> engine.load("https://api.example.com/graphql", into="orders", format="graphql",
    ...             options={"query": query, "connection_path": "data.orders"})  # doctest: +SKIP
    """

    query: str
    connection_path: str | None = None
    variables: Mapping[str, Any] = field(default_factory=dict)
    cursor_variable: str = "after"
    incremental_variable: str | None = None

    @property
    def label(self) -> str:
        return f"{super().label}#{self.connection_path}" if self.connection_path else super().label

    def _identity(self) -> list[str]:
        query = hashlib.sha256(self.query.encode()).hexdigest()[:16]
        return [self.url, f"{self.connection_path or ''}#{query}", json.dumps(self.variables, sort_keys=True,
                default=str), self.cursor_variable, self.incremental_variable or "", str(self.flatten)]

    def watermark_key(self) -> str:
        return "#".join([_Secrets(None).url(self.url), self._identity()[1]])

    def _connection(self, http: _Http, body: Any, page: int, url: str) -> Any:
        if not isinstance(body, Mapping):
            raise http.fail(page, url, f"the response is {_keys(body)}, not a GraphQL response")
        errors = body.get("errors")
        if errors:
            first = errors[0].get("message", errors[0]) if isinstance(errors[0], Mapping) else errors[0]
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise http.fail(page, url, f"GraphQL error: {str(first)[:300]}{more}")
        path = self.connection_path
        if path is None:
            data = body.get("data")
            if not isinstance(data, Mapping) or len(data) != 1:
                raise http.fail(page, url, f"cannot tell the connection in data ({_keys(data)}); set "
                                           "connection_path (e.g. data.orders)")
            path = f"data.{next(iter(data))}"
        found = _get(body, path)
        if found is _MISSING or not isinstance(found, Mapping):
            raise http.fail(page, url, f"no connection object at {path!r} ({_keys(body.get('data'))}); check "
                                       "connection_path")
        return found

    def _pages(self, http: _Http, sent: str | None) -> Iterator[list[Any]]:
        variables = dict(self.variables)
        if self.incremental_variable and sent is not None:
            variables[self.incremental_variable] = sent
        after: Any = None
        seen: set[str] = set()
        page = 0
        shown = http.secrets.url(self.url)
        while True:
            page += 1
            if after is not None:
                variables[self.cursor_variable] = after
            response = http.send("POST", self.url, page=page,
                                 body={"query": self.query, "variables": variables})
            connection = self._connection(http, http.json(response, page), page, shown)
            if isinstance(connection.get("edges"), list):
                edges = connection["edges"]
                if not all(isinstance(e, Mapping) and "node" in e for e in edges):
                    raise http.fail(page, shown, "an edge has no node; select edges { node { ... } }")
                records = [e["node"] for e in edges]
            elif isinstance(connection.get("nodes"), list):
                records = connection["nodes"]
            else:
                raise http.fail(page, shown, f"the connection has no edges or nodes ({_keys(connection)}); select "
                                             "edges { node { ... } } or nodes { ... }")
            yield records
            info = connection.get("pageInfo")
            if not isinstance(info, Mapping) or not info.get("hasNextPage") or not info.get("endCursor"):
                return
            if self.max_pages is not None and page >= self.max_pages:
                return
            after = info["endCursor"]
            if str(after) in seen:
                raise http.fail(page, shown, "pageInfo.endCursor repeats an earlier page's; stopping to avoid a "
                                             "loop")
            seen.add(str(after))

