"""A one-shot command's metrics, pushed to a Prometheus Pushgateway when it ends (``BICONIC_PUSHGATEWAY_URL``).

A ``biconic load`` lives shorter than a scrape interval, so nothing would ever scrape it: it pushes what it
recorded instead, once, at the end, failed or not (job ``biconic_cli``, grouped by host). A gateway that does
not answer costs one warning line on stderr and never the command's outcome or exit code.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager

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

    try:
        push_to_gateway(url, job=JOB, grouping_key={"instance": socket.gethostname()}, registry=recorded(),
                        timeout=limits.connect_timeout)
    except Exception as exc:  # the command's own outcome stands
        print(f"warning: could not push metrics to {redact(url)}: {type(exc).__name__}: {first_line(exc)}",
              file=sys.stderr)


@contextmanager
def pushed() -> Iterator[None]:
    """Push when the block ends, however it ends."""
    try:
        yield
    finally:
        push()
