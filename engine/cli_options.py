"""Options the ``biconic`` commands share: where PostgreSQL and the archive are, connection ids, JSON output."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from engine.errors import SpecError
from engine.ids import ConnectionId, parse_connection_id

__all__ = ["CONNECTION_ID", "archive_option", "dsn_option", "full_refresh_option", "json_option"]

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
