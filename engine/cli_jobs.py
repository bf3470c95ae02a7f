"""``biconic worker``, ``submit``, ``jobs`` and ``beat``: the job queue from the command line (see
:mod:`engine.jobs`)."""

from __future__ import annotations

import json
import os
from typing import Any

import click

from engine.cli_options import dsn_option, json_option, load_arguments, submit_options
from engine.errors import SpecError

__all__ = ["beat", "jobs", "submit", "worker"]


@click.command()
@click.option("--concurrency", type=int, default=None,
              help="Worker processes [default: the machine's cores].")
@click.option("--autoscale", default=None, metavar="MAX,MIN",
              help="Grow towards MAX processes while more than BICONIC_AUTOSCALE_GROW_ABOVE tasks are queued, "
                   "shrink towards MIN while fewer than BICONIC_AUTOSCALE_SHRINK_BELOW (e.g. 16,2).")
@click.option("--queues", default=None, metavar="NAME,...",
              help="Queues to take tasks from [default: biconic]; biconic.control (the jobs' finishing steps) "
                   "is always added.")
@click.option("--loglevel", default=None, help="Log level [default: BICONIC_LOG_LEVEL, else INFO].")
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None, metavar="PORT",
              help="Answer Prometheus scrapes on GET /metrics at this port (the whole pool's metrics).")
@click.option("--metrics-host", default="127.0.0.1", show_default=True, metavar="ADDRESS",
              help="Address of the metrics port (0.0.0.0: every interface).")
def worker(concurrency: int | None, autoscale: str | None, queues: str | None, loglevel: str | None,
           metrics_port: int | None, metrics_host: str) -> None:
    """Start a worker: a Celery prefork pool of spawn-started processes that run the queued imports.

    \b
    Run one per machine, all on the same broker (BICONIC_BROKER_URL) and warehouse (BICONIC_PG_DSN).
    Example:
      biconic worker --concurrency 2 --autoscale 16,2 --metrics-port 9465
    """
    from engine.jobs.app import configure, consumed_queues
    from engine.settings import settings

    loglevel = loglevel or settings().log_level or "INFO"
    if metrics_port is not None:  # before the pool starts: its children share the metrics folder
        from engine.jobs.monitor import expose_worker

        expose_worker(metrics_host, metrics_port, consumed_queues(queues).split(","))

    processes = concurrency or (int(autoscale.split(",")[0]) if autoscale else os.cpu_count() or 1)
    # Polars in each process uses a share of the cores, not all of them (set before the children start)
    os.environ.setdefault("POLARS_MAX_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, processes))))
    argv = ["worker", f"--loglevel={loglevel}", "--pool=prefork", f"--queues={consumed_queues(queues)}",
            "--without-gossip", "--without-mingle"]
    if autoscale:
        argv.append(f"--autoscale={autoscale}")
    else:
        argv.append(f"--concurrency={processes}")
    configure().worker_main(argv)


@click.command()
@click.option("--loglevel", default=None, help="Log level [default: BICONIC_LOG_LEVEL, else INFO].")
@dsn_option
def beat(loglevel: str | None, dsn: str | None) -> None:
    """Run the periodic jobs (tiering, upload tiering, sweeps of what killed loads left): exactly one per
    deployment; a second one exits with an error."""
    from engine.jobs.schedule import run_beat
    from engine.settings import settings

    run_beat(dsn=dsn, loglevel=loglevel or settings().log_level or "INFO")


@click.command()
@click.argument("path")
@submit_options
@json_option('{"job_id": ...}')
@click.option("--pipeline", is_flag=True,
              help="PATH is a pipeline YAML file (as biconic run takes); detected from .yaml/.yml otherwise.")
def submit(path: str, as_json: bool, pipeline: bool, **params: Any) -> None:
    """Queue an import of PATH (or of a pipeline YAML file) for the workers; prints its job id at once.

    \b
    Takes the options of biconic load (--into is required, except for a pipeline file).
    Example:
      biconic submit 'exports/*.csv' --into orders --connection 7 --json
    """
    from engine.jobs.client import submit as submit_load
    from engine.jobs.client import submit_pipeline

    if pipeline or (path.endswith((".yaml", ".yml")) and not params.get("table")):
        job = submit_pipeline(path, dsn=params["dsn"], archive=False if params["no_archive"] else params["archive"],
                              full_refresh=params["full_refresh"])
    elif not params.get("table"):
        raise SpecError("--into", "required: the table to load into (or give a pipeline YAML file)")
    else:
        job = submit_load(path, **load_arguments(params))
    click.echo(json.dumps({"job_id": job.job_id}) if as_json else job.job_id)


class _JobsGroup(click.Group):
    """``biconic jobs`` lists; ``biconic jobs show|cancel|retry ID`` act on one."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or args[0].startswith("-"):
            args = ["list", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_JobsGroup, invoke_without_command=False)
def jobs() -> None:
    """List jobs (newest first), or show, cancel or retry one.

    \b
    Examples:
      biconic jobs --state failed --since 7d
      biconic jobs show 3f2a9c1e
      biconic jobs cancel 3f2a9c1e
    """


@jobs.command(name="list")
@click.option("--state", type=click.Choice(["queued", "running", "done", "failed", "cancelled"]), default=None)
@click.option("--connection", "connection_id", default=None, metavar="ID", help="Only this connection's jobs.")
@click.option("--since", default=None, metavar="WHEN", help="Only jobs submitted since WHEN (2026-12-01, 7d, 2h).")
@click.option("--limit", type=int, default=50, show_default=True)
@dsn_option
@json_option("the jobs (an array of objects, newest first)")
def list_jobs(state: str | None, connection_id: str | None, since: str | None, limit: int, dsn: str | None,
              as_json: bool) -> None:
    """List jobs, newest first."""
    from engine.ids import parse_connection_id
    from engine.jobs.client import list_jobs as listed
    from engine.postgres.server import resolve_dsn
    from engine.reads.history import parse_since

    connection = str(parse_connection_id(connection_id)) if connection_id is not None else None
    found = listed(dsn=resolve_dsn(dsn), state=state, connection_id=connection, since=parse_since(since),
                   limit=limit)
    if as_json:
        click.echo(json.dumps(found))
        return
    for job in found:
        said = f"  {job['error']}" if job["error"] else ""
        click.echo(f"{job['job_id']}  {job['state']:<9}  {job['submitted_at'][:19]}  {job['dataset'] or '-'}  "
                   f"connection {job['connection_id'] or '-'}  {job['rows_loaded']:,} rows{said}")
    click.echo(f"{len(found):,} job(s)", err=True)


@jobs.command(name="show")
@click.argument("job_id")
@dsn_option
@json_option("the job (one object)")
def show(job_id: str, dsn: str | None, as_json: bool) -> None:
    """A job's state, progress (partitions, rows, rows/s, ETA), attempts, error and reports."""
    from engine.jobs.client import describe
    from engine.postgres.server import resolve_dsn

    found = describe(resolve_dsn(dsn), job_id)
    if as_json:
        click.echo(json.dumps(found))
        return
    click.echo(_shown(found))


def _shown(job: dict[str, Any]) -> str:
    p = job["progress"]
    eta = f", ETA {p['eta_s']:.0f} s" if p["eta_s"] is not None else ""
    lines = [f"job {job['job_id']}: {job['state']}",
             f"  {job['kind']} of {job['request']['path']}" + (f" into {job['dataset']}" if job["dataset"] else "")
             + (f" (connection {job['connection_id']})" if job["connection_id"] else ""),
             f"  stage {p['stage']}/{p['stages']}: {p['partitions_done']}/{p['partitions_total']} partitions, "
             f"{p['rows']:,} rows, {p['rows_per_s']:,.0f} rows/s, {p['seconds']:.1f} s{eta}"]
    if job["error"]:
        lines.append(f"  error: {job['error']}")
    for t in job["tasks"]:
        tries = f", {t['attempts']} attempts" if t["attempts"] > 1 else ""
        lines.append(f"  {t['label']}: {t['state']}, {t['rows_in']:,} rows{tries}")
    for a in job["attempts"]:
        if a["outcome"] not in (None, "done"):
            lines.append(f"  attempt {a['attempt']} of part {a['part']} on {a['worker']}: {a['outcome']}"
                         + (f" ({a['error']})" if a["error"] else ""))
    for r in job["reports"]:
        lines.append(f"  {r.get('table')}: {r.get('rows_loaded', 0):,} loaded, {r.get('rows_quarantined', 0):,} "
                     f"quarantined of {r.get('rows_in', 0):,} rows, {r.get('skipped_partitions', 0)} partitions "
                     "skipped")
    return "\n".join(lines)


@jobs.command(name="cancel")
@click.argument("job_id")
@dsn_option
def cancel(job_id: str, dsn: str | None) -> None:
    """Cancel a queued or running job (a running partition rolls back; nothing is half-loaded)."""
    from engine.jobs.client import cancel as cancel_job
    from engine.postgres.server import resolve_dsn

    if cancel_job(job_id, dsn=resolve_dsn(dsn)):
        click.echo(f"job {job_id}: cancelled")
    else:
        click.echo(f"job {job_id}: already finished, nothing to cancel")


@jobs.command(name="retry")
@click.argument("job_id")
@dsn_option
def retry(job_id: str, dsn: str | None) -> None:
    """Run a failed or cancelled job again; partitions it committed are skipped."""
    from engine.jobs.client import retry as retry_job
    from engine.postgres.server import resolve_dsn

    job = retry_job(job_id, dsn=resolve_dsn(dsn))
    click.echo(f"job {job.job_id}: queued again")
