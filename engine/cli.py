"""The ``biconic`` command line: each command is one call of the Python API.

Errors print one line (``error: orders.csv, row 17, column 'fecha': ...``) and exit with the error's code;
no traceback for anything the engine raises on purpose.
"""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import click

from engine.errors import BiconicError

__all__ = ["main"]


def _fail(exc: BiconicError) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(exc.exit_code)


def _progress(enabled: bool) -> Any:
    if enabled and sys.stderr.isatty():
        from engine.progress import TerminalProgress

        return TerminalProgress()
    return nullcontext(None)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="biconic-engine")
def cli() -> None:
    """Biconic Engine: load files into partitioned PostgreSQL, fast and effectively once.

    With no --dsn and no BICONIC_PG_DSN, an embedded PostgreSQL is started under ./.biconic.
    """


@cli.command()
@click.argument("path")
@click.option("--into", "table", required=True, help="Target table (optionally schema.table).")
@click.option("--connection", "connection_id", type=int, default=None,
              help="Connection id stored in every row (default: the data's connection_id column, else 0).")
@click.option("--sheet", "sheets", multiple=True, help="Excel sheet name; repeat for several, '*' for all.")
@click.option("--partition-by", default=None, metavar="COL[:day|week|month|year]",
              help="Time column for range partitions (default: the first date/timestamp column, month).")
@click.option("--hash-partitions", type=int, default=0, help="Sub-partition each period BY HASH (connection_id).")
@click.option("--mode", type=click.Choice(["append", "replace", "merge"]), default="append", show_default=True)
@click.option("--key", default=None, metavar="COL,...", help="Key columns for --mode merge.")
@click.option("--spec", type=click.Path(dir_okay=False), default=None, help="YAML file with steps and rules.")
@click.option("--format", "fmt", default=None, help="Force the format: csv, tsv, parquet, json, ndjson, excel.")
@click.option("--option", "options", multiple=True, metavar="NAME=VALUE",
              help="Reader option, e.g. --option delimiter=';' --option encoding=latin-1.")
@click.option("--contract", type=click.Choice(["evolve", "freeze"]), default="evolve", show_default=True,
              help="Schema drift: evolve adds columns and widens types; freeze refuses any change.")
@click.option("--dsn", default=None, envvar="BICONIC_PG_DSN", help="PostgreSQL URL [env BICONIC_PG_DSN].")
@click.option("--json", "as_json", is_flag=True, help="Print the LoadReport as one JSON object.")
def load(path: str, table: str, connection_id: int | None, sheets: tuple[str, ...], partition_by: str | None,
         hash_partitions: int, mode: str, key: str | None, spec: str | None, fmt: str | None,
         options: tuple[str, ...], contract: str, dsn: str | None, as_json: bool) -> None:
    """Load PATH (a file, folder or glob) into a partitioned PostgreSQL table.

    \b
    Example:
      biconic load orders.csv --into orders --partition-by created_at:month --connection 7
    """
    import engine

    sheet: str | list[str] | None = None
    if sheets:
        sheet = sheets[0] if len(sheets) == 1 else list(sheets)
    try:
        opts = _parse_options(options)
        with _progress(not as_json) as progress:
            report = engine.load(
                path, into=table, connection_id=connection_id, partition_by=partition_by,
                hash_partitions=hash_partitions, mode=mode,  # type: ignore[arg-type]
                key=[k.strip() for k in key.split(",") if k.strip()] if key else None,
                spec=spec, sheet=sheet, format=fmt, options=opts, contract=contract, dsn=dsn, progress=progress,
            )
    except BiconicError as exc:
        _fail(exc)
        return
    click.echo(report.to_json() if as_json else report.summary())


@cli.command()
@click.argument("pipeline", type=click.Path(dir_okay=False))
@click.option("--dsn", default=None, envvar="BICONIC_PG_DSN", help="PostgreSQL URL [env BICONIC_PG_DSN].")
@click.option("--json", "as_json", is_flag=True, help="Print the LoadReports as a JSON array.")
def run(pipeline: str, dsn: str | None, as_json: bool) -> None:
    """Run every load declared in a PIPELINE YAML file.

    \b
    Example:
      biconic run pipelines/orders.yaml --json
    """
    import engine

    try:
        with _progress(not as_json) as progress:
            reports = engine.run(pipeline, dsn=dsn, progress=progress)
    except BiconicError as exc:
        _fail(exc)
        return
    _echo_reports(reports, as_json)


@cli.command()
@click.option("--rows", type=int, default=200_000, show_default=True, help="Rows in the generated CSV.")
@click.option("--folder", type=click.Path(file_okay=False), default=None,
              help="Where to write the sample files (default: .biconic/demo).")
@click.option("--dsn", default=None, envvar="BICONIC_PG_DSN", help="PostgreSQL URL (default: embedded).")
@click.option("--json", "as_json", is_flag=True, help="Print the LoadReports as a JSON array.")
def demo(rows: int, folder: str | None, dsn: str | None, as_json: bool) -> None:
    """Generate a sample workbook and CSV, load them, and print the reports (needs no server)."""
    from engine.demo import run_demo

    try:
        with _progress(not as_json) as progress:
            reports = run_demo(rows=rows, folder=Path(folder) if folder else None, dsn=dsn, progress=progress)
    except BiconicError as exc:
        _fail(exc)
        return
    _echo_reports(reports, as_json)


def _echo_reports(reports: list[Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in reports]))
    else:
        click.echo("\n".join(r.summary() for r in reports))


def _parse_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    from engine.errors import SpecError

    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise SpecError("--option", f"expected NAME=VALUE, got {pair!r}")
        try:
            import yaml

            parsed = yaml.safe_load(value) if value.strip() else value
            # "#" (a comment to YAML) and other text that parses to nothing stay the text they are
            out[name.strip()] = value if parsed is None and value.strip() not in ("null", "~") else parsed
        except Exception:
            out[name.strip()] = value
    return out


def main() -> None:
    """Entry point of the ``biconic`` console script."""
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:
        click.echo("interrupted: the partition in progress was rolled back; re-run to finish", err=True)
        sys.exit(130)
