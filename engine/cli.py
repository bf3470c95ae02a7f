"""The ``biconic`` command line: each command is one call of the Python API.

Errors print one line (``error: orders.csv, row 17, column 'fecha': ...``) and exit with the error's code;
no traceback for anything the engine raises on purpose.
"""

from __future__ import annotations

import gc
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import click

from engine.cli_health import health, top
from engine.cli_history import list_loads, show_quarantine
from engine.cli_jobs import beat, jobs, submit, worker
from engine.cli_metrics import metrics
from engine.cli_options import (
    CONNECTION_ID,
    archive_option,
    dsn_option,
    full_refresh_option,
    json_option,
    load_arguments,
    load_options,
)
from engine.cli_service import serve, tokens
from engine.errors import BiconicError, SpecError, first_line
from engine.ids import ConnectionId
from engine.pushgateway import pushed

__all__ = ["main"]


class _Engine(click.Group):
    """The command group: one place turns an engine error into its one line and exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BiconicError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except OSError as exc:  # the disk (full, read-only, a missing folder) anywhere: one line, not a traceback
            from engine.storage import is_storage, storage_error

            if not is_storage(exc) and exc.filename is None:
                click.echo(f"error: {type(exc).__name__}: {first_line(exc)}", err=True)
                ctx.exit(1)
            error = storage_error(exc)
            click.echo(f"error: {error}", err=True)
            ctx.exit(error.exit_code)


#: a load's spec fields as ``biconic load`` spells them: its errors name the flag the user typed
_LOAD_FLAGS = {
    "target.table": "--into", "target.connection_id": "--connection", "target.partition_by": "--partition-by",
    "target.hash_partitions": "--hash-partitions", "target.mode": "--mode", "target.key": "--key",
    "target.contract": "--contract", "target.dsn": "--dsn", "target.archive": "--archive",
    "target.layout": "--layout", "target.indexes": "--index", "source.format": "--format", "source.sheet": "--sheet",
    "source.path": "PATH",
}


def _flag_path(path: str) -> str:
    """A spec field path as the load's command line spells it: ``target.key`` -> ``--key``, a reader option
    ``source.delimiter`` -> ``--option delimiter``; anything else (``steps[2].derive``) as it is."""
    m = re.match(r"^((?:target|source)\.[A-Za-z_]+)(.*)$", path)
    if m is None:
        return path
    field, rest = m.groups()
    if field in _LOAD_FLAGS:
        return _LOAD_FLAGS[field] + rest
    if field.startswith("source."):
        return f"--option {field.removeprefix('source.')}{rest}"
    return path


@contextmanager
def _as_flags() -> Iterator[None]:
    """Spec errors of a load given on the command line name its flags, not the YAML fields."""
    try:
        yield
    except SpecError as exc:
        flagged = _flag_path(exc.path)
        if flagged == exc.path:
            raise
        raise SpecError(flagged, exc.message) from exc.__cause__


def _progress(enabled: bool) -> Any:
    if enabled and sys.stderr.isatty():
        from engine.progress import TerminalProgress

        return TerminalProgress()
    return nullcontext(None)


def _import_for_loads() -> None:
    """Import what every load runs with Python's cycle collector off, then freeze what the imports made: those
    objects live as long as the process, and the collector walking them again and again cost ~0.2 CPU-s of a
    1M-row load (perf: the collector's functions held 4.4% of the process's samples; 0.04% after this)."""
    gc.disable()
    try:
        import adbc_driver_postgresql.dbapi  # noqa: F401

        import engine.pipeline  # noqa: F401
    finally:
        gc.freeze()
        gc.enable()


@click.group(cls=_Engine, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="biconic-engine")
def cli() -> None:
    """Biconic Engine: load files into partitioned PostgreSQL, fast and effectively once.

    With no --dsn and no BICONIC_PG_DSN, an embedded PostgreSQL is started in BICONIC_HOME (default
    ~/.local/share/biconic), where the archive also goes unless BICONIC_ARCHIVE_URL says otherwise.
    Logs go to stderr: JSON lines unless it is a terminal (BICONIC_LOG_FORMAT, BICONIC_LOG_LEVEL).
    """
    from engine.logs import configure_logging

    try:
        configure_logging()
    except SpecError as exc:  # another bad setting is the command's to report (help still shows)
        if exc.path.startswith("BICONIC_LOG_"):
            raise
        configure_logging("WARNING", json_format=not sys.stderr.isatty())


@cli.command()
@click.argument("path")
@load_options
@json_option("the LoadReport (one object)")
def load(path: str, as_json: bool, **params: Any) -> None:
    """Load PATH (a file, folder or glob, or a database/API URL: see biconic sources) into a partitioned
    PostgreSQL table.

    \b
    Example:
      biconic load orders.csv --into orders --partition-by created_at:month --connection 7
    """
    _import_for_loads()
    import engine

    try:
        with pushed(), _as_flags(), _progress(not as_json) as progress:
            report = engine.load(path, **load_arguments(params), progress=progress)
    except engine.PartialLoadError as exc:  # the others committed: show what did, then the error and its code
        click.echo(exc.report.to_json() if as_json else exc.report.summary())
        raise
    click.echo(report.to_json() if as_json else report.summary())


@cli.command()
@click.argument("pipeline", type=click.Path(dir_okay=False))
@dsn_option
@archive_option
@click.option("--no-archive", is_flag=True, help="Write no archive copy (same as --archive off).")
@click.option("--contract", type=click.Choice(["evolve", "freeze"]), default=None,
              help="Schema drift for every load, instead of each target's contract (default: the file's, else "
                   "evolve).")
@full_refresh_option
@json_option("each LoadReport (one object per line, as its load commits)")
def run(pipeline: str, dsn: str | None, archive: str | None, no_archive: bool, contract: str | None,
        full_refresh: bool, as_json: bool) -> None:
    """Run every load declared in a PIPELINE YAML file, in order, printing each report as its load commits
    (a failing load stops the run: the reports before it are printed, then the error). --archive,
    --no-archive and --contract replace the targets' own values.

    \b
    Example:
      biconic run pipelines/orders.yaml --json
    """
    _import_for_loads()
    import engine

    with pushed(), _progress(not as_json) as progress:
        engine.run(pipeline, dsn=dsn, archive=False if no_archive else archive, contract=contract,
                   full_refresh=full_refresh, progress=progress, on_report=_reporter(as_json))


@cli.command()
@click.option("--rows", type=int, default=200_000, show_default=True, help="Rows in the generated CSV.")
@click.option("--folder", type=click.Path(file_okay=False), default=None,
              help="Where to write the sample files (default: ./biconic-demo).")
@dsn_option
@json_option("each LoadReport (one object per line)")
def demo(rows: int, folder: str | None, dsn: str | None, as_json: bool) -> None:
    """Generate a sample workbook and CSV in ./biconic-demo, load them, and print the reports (needs no server:
    the embedded PostgreSQL and the archive live in BICONIC_HOME)."""
    from engine.demo import DEMO_QUERY, run_demo

    with _progress(not as_json) as progress:
        run_demo(rows=rows, folder=Path(folder) if folder else None, dsn=dsn, progress=progress,
                 on_report=_reporter(as_json))
    if not as_json:
        from engine.reads.duck import run_query

        result = run_query(DEMO_QUERY, dsn=dsn)
        click.echo(f"\n$ biconic query \"{DEMO_QUERY}\"")
        click.echo(result.frame)
        click.echo(f"({'cached' if result.cached else 'DuckDB over PostgreSQL + archive'}, "
                   f"{result.seconds * 1000:.0f} ms)")


@cli.command()
@click.argument("sql")
@json_option("the rows (an array of objects)")
@click.option("--csv", "as_csv", is_flag=True, help="Print the rows as CSV.")
@click.option("--no-cache", is_flag=True, help="Run the query even if a cached result is current.")
@dsn_option
@archive_option
def query(sql: str, as_json: bool, as_csv: bool, no_cache: bool, dsn: str | None, archive: str | None) -> None:
    """Run SQL (DuckDB dialect) over every dataset: hot rows in PostgreSQL plus cold rows in the archive.

    \b
    Each dataset is a view named like its table (orders, sales.orders); archive.orders is the raw archive
    with its hive columns connection_id and period.
    Example:
      biconic query "SELECT connection_id, count(*) FROM orders GROUP BY 1" --json
    """
    from engine.reads.duck import run_query

    if as_json and as_csv:
        raise SpecError("query", "choose one of --json and --csv")
    result = run_query(sql, dsn=dsn, archive=archive, cache=not no_cache)
    frame = result.frame
    if as_json:
        click.echo(frame.write_json())
    elif as_csv:
        click.echo(frame.write_csv(), nl=False)
    else:
        import polars as pl

        with pl.Config(tbl_rows=50, tbl_cols=-1, fmt_str_lengths=60, tbl_width_chars=200):
            click.echo(frame)
        source = "cache" if result.cached else "DuckDB"
        click.echo(f"{frame.height:,} row(s) from {source} in {result.seconds * 1000:.0f} ms", err=True)


@cli.command()
@click.option("--dry-run", is_flag=True, help="Report what would move, change nothing.")
@click.option("--older-than", "days", type=int, default=None, metavar="DAYS",
              help="Archive age for PostgreSQL partitions [env BICONIC_TIER_ARCHIVE_DAYS; default 90].")
@click.option("--dataset", "datasets", multiple=True, help="Only these datasets (repeat); default all.")
@click.option("--no-uploads", is_flag=True, help="Leave the raw uploads folder alone.")
@dsn_option
@archive_option
@json_option("the report")
def tier(dry_run: bool, days: int | None, datasets: tuple[str, ...], no_uploads: bool, dsn: str | None,
         archive: str | None, as_json: bool) -> None:
    """Apply the tiering policy: old partitions verified against the archive, then detached and dropped;
    raw uploads compressed after 30 days and moved to the archive after 90."""
    import dataclasses

    from engine.archive.tiering import TierPolicy
    from engine.archive.tiering import tier as run_tier
    from engine.names import canonical_table

    policy = TierPolicy.from_env()
    if days is not None:
        if days < 0:
            raise SpecError("--older-than", f"expected 0 or more days, got {days}")
        policy = dataclasses.replace(policy, archive_days=days)
    report = run_tier(dsn=dsn, archive=archive, policy=policy, dry_run=dry_run, uploads=not no_uploads,
                      datasets=[canonical_table(d) for d in datasets] or None)
    click.echo(json.dumps(report.to_dict(), default=str) if as_json else report.summary())


@cli.command()
@click.argument("dataset")
@click.option("--from", "start", required=True, type=click.DateTime(["%Y-%m-%d"]), help="First day (YYYY-MM-DD).")
@click.option("--to", "end", required=True, type=click.DateTime(["%Y-%m-%d"]), help="Last day (YYYY-MM-DD).")
@dsn_option
@archive_option
@json_option("the report")
def restore(dataset: str, start: Any, end: Any, dsn: str | None, archive: str | None, as_json: bool) -> None:
    """Load a tiered DATASET's archived rows from --from to --to back into PostgreSQL (whole periods;
    idempotent: re-running restores nothing twice)."""
    from engine.archive.restore import restore as run_restore

    report = run_restore(dataset, start=start.date(), end=end.date(), dsn=dsn, archive=archive)
    click.echo(json.dumps(report.to_dict(), default=str) if as_json else report.summary())


@cli.command()
@click.argument("dataset")
@click.option("--connection", "connection_id", type=CONNECTION_ID, default=None, help="One connection's share only.")
@dsn_option
@click.option("--no-cache", is_flag=True, help="Read PostgreSQL even if a cached answer is current.")
def info(dataset: str, connection_id: ConnectionId | None, dsn: str | None, no_cache: bool) -> None:
    """Print a dataset's metadata as JSON: columns, rows per connection, last load, partitions, cold periods."""
    from engine.reads.catalog import metadata

    click.echo(json.dumps(metadata(dataset, connection_id, dsn=dsn, cache=not no_cache), indent=2, default=str))


@cli.command()
@click.argument("dataset")
@click.option("--connection", "connection_id", type=CONNECTION_ID, required=True,
              help="The connection id (an integer, a UUID or a text id).")
@click.option("--limit", type=int, default=20, show_default=True, help="Rows to print (at most 1000 are kept).")
@dsn_option
@json_option("the rows (an array of objects)")
def latest(dataset: str, connection_id: ConnectionId, limit: int, dsn: str | None, as_json: bool) -> None:
    """Print a connection's latest rows (served from the cache, refreshed by every load)."""
    from engine.reads.catalog import hot_rows

    frame = hot_rows(dataset, connection_id, dsn=dsn).head(max(limit, 0))
    click.echo(frame.write_json() if as_json else frame)


@cli.command()
@json_option("the list")
def sources(as_json: bool) -> None:
    """List every source kind (files, databases, APIs) with how to name it and its options."""
    from engine.sources import describe_sources

    found = describe_sources()
    if as_json:
        click.echo(json.dumps(found, indent=2, default=str))
        return
    for entry in found:
        click.echo(f"{entry['kind']}: {entry['summary']}")
        click.echo(f"  source: {entry['how']}")
        for name, text in entry["options"].items():
            click.echo(f"  --option {name}=...  {text}")


@cli.command(name="settings")
@json_option("the settings")
def show_settings(as_json: bool) -> None:
    """Print the effective BICONIC_* settings (secrets shown as **********).

    \b
    Example:
      BICONIC_BATCH_ROWS=50000 biconic settings
    """
    from engine.settings import settings

    current = settings().model_dump(mode="json")
    if as_json:
        click.echo(json.dumps(current, indent=2))
        return
    for name, value in current.items():
        click.echo(f"BICONIC_{name.upper():<22} {value if value is not None else '-'}")


def _reporter(as_json: bool) -> Callable[[Any], None]:
    """Prints each LoadReport as its load commits: one JSON line, or its summary."""
    def echo(report: Any) -> None:
        click.echo(report.to_json() if as_json else report.summary())

    return echo


cli.add_command(list_loads)
cli.add_command(show_quarantine)
cli.add_command(health)
cli.add_command(top)
for command in (worker, submit, jobs, beat, serve, tokens, metrics):
    cli.add_command(command)


def main() -> None:
    """Entry point of the ``biconic`` console script."""
    # the engine does no linear algebra, but pyarrow imports NumPy, whose OpenBLAS starts a thread per core
    # that spins at start-up: ~0.07 CPU-s of every command (set before NumPy loads; the user's value wins)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:
        click.echo("interrupted: the partition in progress was rolled back; re-run to finish", err=True)
        sys.exit(130)
