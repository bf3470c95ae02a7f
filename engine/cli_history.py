"""``biconic loads`` and ``biconic quarantine``: what past loads did, and the rows they rejected."""

from __future__ import annotations

import json
from typing import Any

import click

from engine.cli_options import dsn_option, json_option

__all__ = ["list_loads", "show_quarantine"]


@click.command(name="loads")
@click.option("--dataset", default=None, help="Only this dataset's loads.")
@click.option("--since", default=None, metavar="WHEN",
              help="Only loads started since WHEN: an ISO date/time (2026-12-01, 2026-12-01T08:00; local time "
                   "unless it has an offset) or a span back from now (30m, 2h, 7d, 2w).")
@click.option("--limit", type=int, default=50, show_default=True, help="At most this many loads.")
@dsn_option
@json_option("the loads (an array of objects, newest first)")
def list_loads(dataset: str | None, since: str | None, limit: int, dsn: str | None, as_json: bool) -> None:
    """List past load runs, newest first: counts, partitions, duration and outcome (succeeded, failed with
    its error, nothing to do, running, killed).

    \b
    Example:
      biconic loads --dataset orders --since 7d
    """
    from engine.reads.history import loads

    found = loads(dataset, since=since, limit=limit, dsn=dsn)
    if as_json:
        click.echo(json.dumps(found, default=_iso))
        return
    for run in found:
        click.echo(_run_line(run))
    click.echo(f"{len(found):,} load(s)", err=True)


@click.command(name="quarantine")
@click.argument("dataset")
@click.option("--load", "load_id", default=None, metavar="ID",
              help="This load's rows (default: the newest load that left open rejected rows).")
@click.option("--all", "superseded", is_flag=True,
              help="Include rows a later load of the same source partition superseded.")
@click.option("--limit", type=int, default=50, show_default=True, help="Rows to print (--csv writes them all).")
@click.option("--csv", "csv_file", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Write every matching row to FILE as CSV (streamed, any size).")
@dsn_option
@json_option("the rows (an array of objects)")
def show_quarantine(dataset: str, load_id: str | None, superseded: bool, limit: int, csv_file: str | None,
                    dsn: str | None, as_json: bool) -> None:
    """Show the rows a load of DATASET rejected: rule, column, reason, row number, source, load id, raw values.

    \b
    Example:
      biconic quarantine orders --load 3f2a9c... --csv rejected.csv
    """
    from engine.reads.history import export_quarantine, quarantined

    if csv_file is not None:
        n = export_quarantine(dataset, csv_file, load_id=load_id, superseded=superseded, dsn=dsn)
        click.echo(f"{n:,} row(s) written to {csv_file}", err=True)
        return
    rows = quarantined(dataset, load_id=load_id, superseded=superseded, limit=limit, dsn=dsn)
    if as_json:
        click.echo(json.dumps(rows, default=_iso))
        return
    _echo_table(rows, ["load_id", "source", "row_number", "rule", "column_name", "reason", "raw",
                       *(["superseded_by"] if superseded else [])])


def _iso(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _run_line(run: dict[str, Any]) -> str:
    """One load run for people: when, what, outcome, counts, time, id; a failure's error on a second line."""
    started = run["started_at"].strftime("%Y-%m-%d %H:%M:%S %Z") if run["started_at"] else "-"
    seconds = f"{run['seconds']:.2f} s" if run["seconds"] is not None else "-"
    line = (f"{started}  {run['dataset']}  {run['outcome']}: {run['rows_in']:,} in, {run['rows_loaded']:,} loaded, "
            f"{run['rows_quarantined']:,} quarantined, {run['rows_filtered']:,} filtered; partitions "
            f"{run['partitions_done']} done, {run['partitions_skipped']} skipped; {seconds}  load {run['load_id']}")
    return line + (f"\n    {run['error_class']}: {run['error']}" if run["error"] else "")


def _echo_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Rows for people: an aligned table of the chosen columns, and how many there are."""
    import polars as pl

    frame = pl.DataFrame([{c: r.get(c) for c in columns} for r in rows], schema=columns if not rows else None)
    with pl.Config(tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=60, tbl_width_chars=250, tbl_hide_dataframe_shape=True,
                   tbl_hide_column_data_types=True):
        click.echo(frame)
    click.echo(f"{len(rows):,} row(s)", err=True)
