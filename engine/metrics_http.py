"""``/metrics`` over HTTP for the processes that have no web server of their own: ``biconic worker
--metrics-port`` and ``biconic metrics serve`` (the API answers ``/metrics`` itself, see
:mod:`engine.service.metrics`).

Every scrape builds :func:`engine.metrics.registry` again: the pool's files are read, and the machine, the
disks and the queues measured, at that moment, never cached from the start.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector

from engine.errors import SpecError
from engine.metrics import mark_process_dead, multiprocess_folder, registry

__all__ = ["close", "forget_dead", "serve_metrics"]

#: the files of a live gauge (running jobs, connections) of one process: ``gauge_livesum_<pid>.db``
_LIVE_FILE = re.compile(r"gauge_live\w*_(\d+)\.db")


def forget_dead() -> list[int]:
    """Drop the live gauges of pool processes that ended without saying so (killed by the hard time limit, kill
    -9, out of memory): a killed child's running job would otherwise count for ever. The pids dropped."""
    import psutil

    folder = multiprocess_folder()
    if folder is None:
        return []
    dead = set()
    for path in folder.glob("gauge_live*_*.db"):
        found = _LIVE_FILE.fullmatch(path.name)
        if found and not psutil.pid_exists(int(found.group(1))):
            dead.add(int(found.group(1)))
    for pid in sorted(dead):
        mark_process_dead(pid)
    return sorted(dead)


class _Scraped(Collector):
    """The engine's registry, built again at each scrape (after the dead processes are forgotten)."""

    def collect(self) -> Iterable[Any]:
        forget_dead()
        return registry().collect()


def serve_metrics(host: str, port: int, *, option: str = "--metrics-port") -> WSGIServer:
    """Answer ``GET /metrics`` on ``host:port`` from a daemon thread; the server (``shutdown()`` stops it).
    A port that cannot be listened on is a one-line :class:`~engine.errors.SpecError` naming ``option``."""
    from prometheus_client import start_http_server

    shown = CollectorRegistry()
    shown.register(_Scraped())
    try:
        server, _ = start_http_server(port, host, registry=shown)
    except OSError as exc:
        raise SpecError(option, f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return server


def close(server: WSGIServer) -> None:
    """Stop a server of :func:`serve_metrics` and free its port."""
    with contextlib.suppress(OSError):
        server.shutdown()
        server.server_close()
