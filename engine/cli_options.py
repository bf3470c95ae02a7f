"""Options the ``biconic`` commands share: where PostgreSQL and the archive are, connection ids, JSON output."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from engine.errors import SpecError
from engine.ids import ConnectionId, parse_connection_id

__all__ = ["CONNECTION_ID", "archive_option", "dsn_option", "full_refresh_option", "json_option", "load_arguments",
           "load_options", "parse_options", "submit_options"]

F = TypeVar("F", bound=Callable[..., Any])


class _ConnectionIdType(click.ParamType):  # type: ignore[type-arg,unused-ignore]
    """``--connection``: an integer, a UUID (canonicalised) or a short text id."""

    name = "ID"

    def __init__(self, path: str) -> None:
        self.path = path  # where a bad id is reported: the load's target, or a reading command's option

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> ConnectionId:
        try:
            return parse_connection_id(value)
        except ValueError as exc:  # one line and exit 2, like every spec error
            raise SpecError(self.path, str(exc)) from None


CONNECTION_ID = _ConnectionIdType("--connection")


def dsn_option(f: F) -> F:
    """``--dsn`` (else ``BICONIC_PG_DSN``, else the embedded server)."""
    return click.option("--dsn", default=None, envvar="BICONIC_PG_DSN",
                        help="PostgreSQL URL [env BICONIC_PG_DSN; default: embedded].")(f)


def archive_option(f: F) -> F:
    """``--archive`` (else ``BICONIC_ARCHIVE_URL``, else the data folder's archive)."""
    return click.option("--archive", default=None, metavar="URL",
                        help="Archive location: a folder or s3://bucket/prefix [env BICONIC_ARCHIVE_URL].")(f)


def full_refresh_option(f: F) -> F:
    """``--full-refresh``: reload on purpose, whatever the ledger says."""
    return click.option("--full-refresh", is_flag=True,
                        help="Reload every partition on purpose, ignoring the ledger and any stored watermark: "
                             "merge updates the rows, replace replaces even if nothing changed, append ADDS THE "
                             "ROWS AGAIN (duplicates). An interrupted full refresh is finished by re-running it.")(f)


def json_option(what: str) -> Callable[[F], F]:
    """``--json``: print ``what`` as JSON instead of for people."""
    return click.option("--json", "as_json", is_flag=True, help=f"Print {what} as JSON.")


def load_options(f: F) -> F:
    """The options of a load (``biconic load`` and ``biconic submit`` take the same ones)."""
    for option in reversed(_LOAD_OPTIONS):
        f = option(f)
    return click.option("--into", "table", required=True, help=_INTO)(f)


def submit_options(f: F) -> F:
    """A load's options for ``biconic submit``, where ``--into`` is not needed for a pipeline file."""
    for option in reversed(_LOAD_OPTIONS):
        f = option(f)
    return click.option("--into", "table", default=None, help=_INTO + " Required, except for a pipeline file.")(f)


def load_arguments(params: dict[str, Any]) -> dict[str, Any]:
    """``engine.load``'s keyword arguments from the parsed :func:`load_options`."""
    sheets: tuple[str, ...] = params["sheets"]
    key: str | None = params["key"]
    return {
        "into": params["table"], "connection_id": params["connection_id"],
        "connection_override": params["connection_override"], "partition_by": params["partition_by"],
        "hash_partitions": params["hash_partitions"], "mode": params["mode"],
        "key": [k.strip() for k in key.split(",") if k.strip()] if key else None, "spec": params["spec"],
        "sheet": None if not sheets else sheets[0] if len(sheets) == 1 else list(sheets), "format": params["fmt"],
        "options": parse_options(params["options"]), "contract": params["contract"], "dsn": params["dsn"],
        "archive": False if params["no_archive"] else params["archive"], "layout": params["layout"],
        "max_rejected": params["max_rejected"], "allow_empty": params["allow_empty"],
        "indexes": _indexes(params["indexes"]), "full_refresh": params["full_refresh"],
    }


def _indexes(given: tuple[str, ...]) -> list[str] | None:
    """``--index`` values: none given = the default set; ``--index none`` = no index."""
    if not given:
        return None
    return [] if [g.strip().lower() for g in given] == ["none"] else list(given)


def parse_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``--option NAME=VALUE`` pairs as reader options, each value read as YAML (``true``, ``5``, ``[a, b]``)."""
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


_INTO = "Target table (optionally schema.table; a missing schema is created)."
_LOAD_OPTIONS: list[Callable[[Any], Any]] = [
    click.option("--connection", "connection_id", type=CONNECTION_ID, default=None,
                 help="Connection id stored in every row: an integer, a UUID or a text id (default: the data's "
                      "connection_id column, else 0)."),
    click.option("--connection-override", is_flag=True,
                 help="Let --connection replace the rows' own connection_id values (else differing ones are an "
                      "error)."),
    click.option("--sheet", "sheets", multiple=True, help="Excel sheet name; repeat for several, '*' for all."),
    click.option("--partition-by", default=None, metavar="COL[:day|week|month|year]",
                 help="Time column for range partitions (default: the first date/timestamp column, month)."),
    click.option("--hash-partitions", type=int, default=0, help="Sub-partition each period BY HASH (connection_id)."),
    click.option("--mode", type=click.Choice(["append", "replace", "merge"]), default="append", show_default=True),
    click.option("--key", default=None, metavar="COL,...", help="Key columns for --mode merge."),
    click.option("--spec", type=click.Path(dir_okay=False), default=None, help="YAML file with steps and rules."),
    click.option("--format", "fmt", default=None,
                 help="Force the format: csv, tsv, parquet, json, ndjson, excel; or a source kind: rest, graphql, "
                      "mongodb, adbc (see biconic sources)."),
    click.option("--option", "options", multiple=True, metavar="NAME=VALUE",
                 help="Reader option, e.g. --option delimiter=';' --option encoding=latin-1."),
    click.option("--contract", type=click.Choice(["evolve", "freeze"]), default="evolve", show_default=True,
                 help="Schema drift: evolve adds columns and widens types; freeze refuses any change."),
    dsn_option,
    archive_option,
    click.option("--no-archive", is_flag=True, help="Write no archive copy (same as --archive off)."),
    click.option("--layout", type=click.Choice(["table", "document"]), default="table", show_default=True,
                 help="document: the generic table (_import_id, connection_id, data jsonb, created_at)."),
    click.option("--max-rejected", default=None, metavar="SHARE|N%|ROWS|off",
                 help="A file (or sheet) with more rejected rows than this, or with every row rejected, fails and "
                      "commits nothing: 0.5, 50%, 1000 rows, or off [default: 50%]."),
    click.option("--allow-empty", is_flag=True, default=False,
                 help="A file with no rows (empty, a header only, blank lines) loads as 0 rows instead of failing."),
    click.option("--index", "indexes", multiple=True, metavar="METHOD(COL[ DESC],...)",
                 help="The table's indexes, repeated for several (e.g. --index 'gist(area)'); 'none' for no index "
                      "[default: brin(TIME) and btree(connection_id, TIME desc)]. Missing ones are created."),
    full_refresh_option,
]
