"""A one-shot command's metrics, pushed to a Prometheus Pushgateway when it ends (``BICONIC_PUSHGATEWAY_URL``).

A ``biconic load`` lives shorter than a scrape interval, so nothing would ever scrape it: it pushes what it
recorded instead, once, at the end, failed or not (job ``biconic_cli``, grouped by host). A gateway that does
not answer costs one warning line on stderr and never the command's outcome or exit code.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import unquote, urlsplit, urlunsplit

from engine.errors import first_line
from engine.redact import redact
from engine.settings import settings

__all__ = ["JOB", "push", "pushed"]

JOB = "biconic_cli"


def push() -> None:
    """Push this process's metrics to the Pushgateway of the settings, if one is set."""
    limits = settings()
    url = limits.pushgateway_url
    if not url:
        return
    from prometheus_client import push_to_gateway

    from engine.metrics import recorded

    gateway, handler = _with_auth(url)
    try:
        push_to_gateway(gateway, job=JOB, grouping_key={"instance": socket.gethostname()}, registry=recorded(),
                        timeout=limits.connect_timeout, handler=handler)
    except Exception as exc:  # the command's own outcome stands
        print(f"warning: could not push metrics to {redact(url)}: {type(exc).__name__}: {first_line(exc)}",
              file=sys.stderr)


def _with_auth(url: str) -> tuple[str, Callable[..., Callable[[], None]]]:
    """The URL without its ``user:password@`` (urllib would take it for the host), and a handler sending them
    as basic auth (a gateway behind a proxy that asks for it)."""
    from prometheus_client.exposition import basic_auth_handler, default_handler

    parts = urlsplit(url)
    if parts.username is None:
        return url, default_handler
    user, password = unquote(parts.username), unquote(parts.password or "")
    bare = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))

    def handler(url: str, method: str, timeout: float | None, headers: list[tuple[str, str]],
                data: bytes) -> Callable[[], None]:
        return basic_auth_handler(url, method, timeout, headers, data, user, password)

    return bare, handler


@contextmanager
def pushed() -> Iterator[None]:
    """Push when the block ends, however it ends."""
    try:
        yield
    finally:
        push()
