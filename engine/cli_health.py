"""``biconic health`` and ``biconic top``: the platform's alert thresholds checked now, and a live view of the
running jobs."""

from __future__ import annotations

import json
import sys

import click

from engine.cli_options import dsn_option, json_option

__all__ = ["health", "top"]


@click.command(name="health")
@json_option('the result ({"status": ..., "checks": [...]})')
@click.option("--metrics-url", "metrics_urls", multiple=True, metavar="URL",
              help="A /metrics endpoint to read the query latency p99 from (repeatable; the bearer token in "
                   "BICONIC_API_TOKEN is sent if set).")
@dsn_option
def health(as_json: bool, metrics_urls: tuple[str, ...], dsn: str | None) -> None:
    """Check the alert thresholds now: host CPU and memory, disks, the share of failed jobs and the job
    timeouts of the last hour, queue depth (a scaling signal) and the query latency p99 of each --metrics-url.
    Exits 2 when a check is critical or cannot be read (e.g. PostgreSQL unreachable), else 0.

    Each reading is instantaneous: a threshold that Prometheus applies "for 5 minutes" is held against one
    reading here (CPU is sampled over 1 s; the latency p99 is over everything the endpoint counted since it
    started).

    \b
    Example:
      biconic health --metrics-url http://127.0.0.1:8000/metrics
    """
    from engine.health import overall, reason, run_checks
    from engine.postgres.server import resolve_dsn

    checks = run_checks(resolve_dsn(dsn), metrics_urls)
    status, why = overall(checks), reason(checks)
    if as_json:
        click.echo(json.dumps({"status": status, "reason": why, "checks": [c.to_dict() for c in checks]}))
    else:
        for check in checks:
            value = "-" if check.value is None else f"{check.value:.4g}"
            line = f"{check.name:<24} {value:>8}  {check.threshold:<56} {check.state}"
            click.echo(line + (f"  ({check.detail})" if check.detail else ""))
        click.echo(f"status: {status}" + (f" ({why})" if why else ""))
    if status == "critical":
        sys.exit(2)


@click.command(name="top")
@click.option("--once", is_flag=True, help="Print one frame and exit (for scripts).")
@click.option("--every", type=click.FloatRange(min=0.1), default=2.0, show_default=True, metavar="SECONDS",
              help="Seconds between refreshes.")
@dsn_option
def top(once: bool, every: float, dsn: str | None) -> None:
    """A live view of the running jobs (progress, rows/s), the queues, the workers answering a ping, and the
    health checks that are firing (readings of now, as in `biconic health`). Quit with Ctrl-C.

    \b
    Example:
      biconic top --every 1
    """
    from rich.console import Console
    from rich.live import Live

    from engine.postgres.server import resolve_dsn
    from engine.top import Watcher, render

    watcher = Watcher(resolve_dsn(dsn))
    console = Console()
    if once:
        console.print(render(watcher.frame()))
        return
    try:
        with Live(render(watcher.frame()), console=console, auto_refresh=False, screen=False) as live:
            while True:
                from engine.clock import clock

                clock().sleep(every)
                live.update(render(watcher.frame()), refresh=True)
    except KeyboardInterrupt:
        return
