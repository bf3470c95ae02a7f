"""The HTTP client of one fetch: credentials only to the source's own host, retries, secrets kept out of text.

>>> with HttpClient("https://api.example.com/v1/orders", options, label="orders") as http:  # doctest: +SKIP
...     response = http.send("GET", "https://api.example.com/v1/orders", page=1, params={"page": 1})

* Secrets come only from the environment variables ``auth`` names; they are read per fetch, sent only to the
  URL's own origin (a next link to another host gets none), and scrubbed from every message and log line,
  httpx's own request log included (it prints whole URLs, query keys and all).
* 429, 408 and 5xx answers, timeouts and connection failures are retried by an
  :class:`engine.retry.RetryPolicy` (``backoff`` * 2^n with jitter, capped at ``max_wait``; a ``Retry-After``
  in seconds or as an HTTP date wins), then a :class:`SourceUnavailableError` names the URL and the page.
  Other 4xx fail at once, with a hint where one helps.

Uses ``httpx`` (sync client), imported on first use.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from engine.errors import SourceError, SourceUnavailableError
from engine.redact import redact, scrub
from engine.retry import RetryPolicy
from engine.settings import settings
from engine.sources.api.options import ApiKeyAuth, Auth, BasicAuth, BearerAuth, EndpointOptions

if TYPE_CHECKING:
    import httpx

__all__ = ["SECRET_PARAMS", "HttpClient", "Secrets", "retry_after"]

_RETRY_STATUS = frozenset({408, 429})
#: query parameters whose values are secrets wherever they appear (next links echo them back)
SECRET_PARAMS = frozenset({"access_token", "api_key", "apikey", "api-key", "key", "token", "secret",
                           "client_secret", "password", "signature", "sig", "auth"})
_SNIPPET = 120
_HTTP_LOGGERS = ("httpx", "httpcore.connection", "httpcore.http11", "httpcore.http2", "httpcore.proxy",
                 "httpcore.socks")
log = logging.getLogger(__name__)


class Secrets:
    """The secret values of one fetch (read from the environment now), and the means to keep them out of text.

    ``Secrets(None)`` holds none: its :meth:`url` still hides passwords and secret query parameters.
    """

    def __init__(self, auth: Auth | None) -> None:
        self.headers: dict[str, str] = {}
        self.params: dict[str, str] = {}
        self.values: list[str] = []
        self.names: set[str] = set(SECRET_PARAMS)
        if isinstance(auth, BearerAuth):
            self.headers["Authorization"] = f"Bearer {self._read(auth.token_env)}"
        elif isinstance(auth, BasicAuth):
            user = auth.username if auth.username is not None else self._read(auth.username_env)
            pair = base64.b64encode(f"{user}:{self._read(auth.password_env)}".encode()).decode()
            self.values.append(pair)
            self.headers["Authorization"] = f"Basic {pair}"
        elif isinstance(auth, ApiKeyAuth):
            key = self._read(auth.key_env)
            if auth.location == "query":
                self.params[auth.name] = key
                self.names.add(auth.name.lower())
            else:
                self.headers[auth.name] = key

    def _read(self, name: str | None) -> str:
        assert name is not None
        value = os.environ.get(name)
        if value is None:
            raise SourceError(f"${name}", "the environment variable holding the credential is not set")
        if value:
            self.values.append(value)
        return value

    def scrub(self, text: str) -> str:
        """``text`` with every secret value replaced by ``***``."""
        return scrub(text, self.values)

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

    def __init__(self, secrets: Secrets) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets.values:
            record.msg = self.secrets.scrub(record.getMessage())
            record.args = ()
        return True


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: a number of seconds or an HTTP date (None: no hint)."""
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


class _Retryable(Exception):
    """One attempt failed in a way a later one may not: why, and how long the server asked us to wait."""

    def __init__(self, reason: str, wait: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.wait = wait


class HttpClient:
    """One fetch's HTTP client: credentials to the source's own host only, retries, clear errors naming the
    page and its URL (without secrets). Close it (or use it in a ``with`` block) to drop the log filters."""

    def __init__(self, url: str, options: EndpointOptions, *, label: str) -> None:
        import httpx

        self.options = options
        self.label = label
        self.secrets = Secrets(options.auth)
        self.origin = httpx.URL(url).copy_with(path="/", query=None, fragment=None)
        self.policy = RetryPolicy(attempts=options.retries, first_wait=options.backoff, max_wait=options.max_wait,
                                  jitter=0.2, what="http")
        limits = settings()
        self.timeout = options.timeout if options.timeout is not None else limits.read_timeout
        # a mute server costs one read timeout per attempt, never forever; connecting takes the shorter bound
        timeout = httpx.Timeout(self.timeout, connect=min(self.timeout, limits.connect_timeout))
        self.client = httpx.Client(timeout=timeout, follow_redirects=True,
                                   headers={"Accept": "application/json", "User-Agent": "biconic-engine",
                                            **options.headers})
        self.filter = _ScrubLog(self.secrets)
        # a logger's filters see only its own records, so every httpcore module logger gets one
        self.loggers = [logging.getLogger(name) for name in _HTTP_LOGGERS]
        for logger in self.loggers:
            logger.addFilter(self.filter)

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections and remove the log filters."""
        for logger in self.loggers:
            logger.removeFilter(self.filter)
        self.client.close()

    def fail(self, page: int, url: str, message: str, *, transient: bool = False) -> SourceError:
        """The error for ``page`` (at ``url``, already safe to show), its text scrubbed of secrets."""
        kind = SourceUnavailableError if transient else SourceError
        return kind(self.label, self.secrets.scrub(f"page {page} ({url}): {message}"))

    def send(self, method: str, url: str, *, page: int, params: Mapping[str, Any] | None = None,
             body: Any = None) -> httpx.Response:
        """The 2xx (or 3xx) response for one page, after retries (429/408/5xx, timeouts, connection failures)."""
        import httpx

        target = httpx.URL(url)
        if params:
            target = target.copy_merge_params({k: _param(v) for k, v in params.items()})
        headers: dict[str, str] = {}
        if target.copy_with(path="/", query=None, fragment=None) == self.origin:
            target = target.copy_merge_params(self.secrets.params) if self.secrets.params else target
            headers = self.secrets.headers
        shown = self.secrets.url(target)

        def attempt() -> httpx.Response:
            return self._attempt(method, target, headers=headers, body=body, page=page, shown=shown)

        def retrying(number: int, exc: BaseException, wait: float) -> None:
            log.info("%s: page %d (%s): %s; retry %d/%d in %.2f s", self.label, page, shown, exc, number,
                     self.policy.attempts - 1, wait)

        try:
            return self.policy.call(attempt, retry_if=lambda exc: isinstance(exc, _Retryable),
                                    wait_hint=lambda exc: exc.wait if isinstance(exc, _Retryable) else None,
                                    on_retry=retrying)
        except _Retryable as exc:
            attempts = self.policy.attempts
            plural = "s" if attempts > 1 else ""
            raise self.fail(page, shown, f"{exc.reason}; gave up after {attempts} attempt{plural} "
                                         "(raise retries or max_wait, or try later)", transient=True) from exc

    def _attempt(self, method: str, target: httpx.URL, *, headers: dict[str, str], body: Any, page: int,
                 shown: str) -> httpx.Response:
        """One request: the response, a :class:`_Retryable` failure, or a :class:`SourceError` (other 4xx)."""
        import httpx

        try:
            response = self.client.request(method, target, headers=headers, json=body)
        except httpx.TimeoutException as exc:
            raise _Retryable(f"timed out after {self.timeout:g} s") from exc
        except httpx.TransportError as exc:
            raise _Retryable(f"connection failed ({type(exc).__name__}: "
                             f"{self.secrets.scrub(str(exc))[:_SNIPPET]})") from exc
        status = response.status_code
        if status < 400:
            return response
        reason = f"HTTP {status} {response.reason_phrase}".rstrip()
        if status not in _RETRY_STATUS and status < 500:
            raise self.fail(page, shown, f"{reason}{_hint(status, self.options.auth)}{self._snippet(response)}")
        raise _Retryable(reason, retry_after(response.headers.get("Retry-After")))

    def json(self, response: httpx.Response, page: int) -> Any:
        """The response's body as JSON, or an error naming the page and what came instead."""
        try:
            return response.json()
        except ValueError as exc:
            kind = response.headers.get("Content-Type", "no content type")
            raise self.fail(page, self.secrets.url(response.url),
                            f"the response is not JSON ({kind}){self._snippet(response)}") from exc

    def _snippet(self, response: httpx.Response) -> str:
        text = " ".join(response.text[:_SNIPPET].split())
        return f"; body starts: {self.secrets.scrub(text)!r}" if text else ""


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
        env = auth.token_env if isinstance(auth, BearerAuth) else \
            auth.password_env if isinstance(auth, BasicAuth) else auth.key_env
        return f"; check the credentials in ${env}"
    if status == 404:
        return "; check the URL"
    return ""
