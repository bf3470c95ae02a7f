"""``biconic metrics serve``: a Prometheus exporter of its own, for a machine that runs no worker and no API
(or to watch the broker's queues from one place)."""

from __future__ import annotations

import signal
import threading
from typing import Any

import click

__all__ = ["metrics"]


@click.group()
def metrics() -> None:
    """Expose the engine's metrics to Prometheus (see the README's Monitoring section)."""


@metrics.command("serve")
@click.option("--port", type=click.IntRange(1, 65535), default=9464, show_default=True,
              help="Port of GET /metrics.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: all).")
def serve(port: int, host: str) -> None:
    """Answer GET /metrics until stopped (SIGTERM or Ctrl-C): this machine's CPU, memory and disks (data,
    uploads, embedded PostgreSQL), the engine's version and, when a broker is configured (BICONIC_BROKER_URL or
    BICONIC_REDIS_URL), the depth of the job queues.

    \b
    Example:
      biconic metrics serve --port 9464 --host 0.0.0.0
    """
    from engine.metrics import read_queues_with
    from engine.metrics_http import close, serve_metrics
    from engine.settings import settings

    broker = settings().broker()  # never the embedded Redis: an exporter must not start one
    if broker is not None:
        from engine.jobs.broker import CONTROL_QUEUE, QUEUE, queue_depths

        read_queues_with(lambda: queue_depths([QUEUE, CONTROL_QUEUE], broker))
    server = serve_metrics(host, port, option="--port")
    stopped = threading.Event()

    def stop(signum: int, frame: Any) -> None:
        stopped.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    click.echo(f"biconic metrics: http://{host}:{port}/metrics", err=True)
    while not stopped.wait(1.0):  # woken by the signal, or once a second
        pass
    close(server)
    click.echo("biconic metrics: stopped", err=True)
