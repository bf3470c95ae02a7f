"""``/v1/datasets`` and ``/v1/sql``: what the imports filled, read through the engine's catalog and DuckDB.

A connection's token sees a dataset only once it has loaded into it, and then only its own rows, counts and
partitions: the connection filter is the server's (:func:`engine.service.auth.scoped_connection`). Raw SQL reads
every connection's rows, so it is for admin tokens only.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from engine.errors import BiconicError, SpecError
from engine.ids import ConnectionId
from engine.reads.structured import StructuredQuery
from engine.service.auth import Admin, Caller, dsn_of, scoped_connection
from engine.service.problems import COMMON_PROBLEMS, ProblemError
from engine.service.tokens import TokenInfo

__all__ = ["router"]

router = APIRouter(tags=["datasets"], responses=COMMON_PROBLEMS)

_NAME = Annotated[str, Field(min_length=1, max_length=200)]


def _info(dsn: str, name: str, connection: ConnectionId | None) -> dict[str, Any]:
    """The dataset's metadata (of the connection), or a 404 when it does not exist or holds nothing of it."""
    from engine.reads.catalog import metadata

    try:
        info = metadata(name, connection, dsn=dsn)
    except SpecError as exc:  # unknown, keyed by another kind of id, or not a dataset a connection can read
        if connection is not None or "no dataset" in str(exc):
            raise ProblemError(404, f"no dataset {name!r}") from exc
        raise
    if connection is not None and not info["rows"] and info["last_load"] is None:
        raise ProblemError(404, f"no dataset {name!r}")
    return info


def _shown(info: dict[str, Any], caller: TokenInfo) -> dict[str, Any]:
    """Metadata as the API shows it: the server's file paths stay on the server."""
    out = dict(info)
    if not caller.is_admin:  # the version moves with every connection's loads: not one connection's to see
        out.pop("version", None)
        if out.get("last_load"):
            out["last_load"] = {k: v for k, v in out["last_load"].items() if k != "source"}
    return out


@router.get("/v1/datasets", summary="The datasets this token may read, with its row counts")
def list_datasets(caller: Caller, request: Request,
                  connection_id: Annotated[str | None, Query(max_length=64)] = None) -> list[dict[str, Any]]:
    """A connection's token: the datasets its connection loaded into; an admin's: every dataset. A dataset
    that cannot be described (a table dropped by hand, say) is left out rather than failing the list."""
    from engine.postgres import meta
    from engine.postgres.pool import meta_db

    dsn = dsn_of(request)
    connection = scoped_connection(caller, connection_id)
    with meta_db(dsn) as db:
        existing = {name for name, _, exists in meta.versions(db) if exists}
        names = existing if connection is None else set(meta.datasets_loaded_by(db, connection)) & existing
    out = []
    for name in sorted(names):
        try:
            info = _info(dsn, name, connection)
        except (ProblemError, BiconicError):
            continue
        out.append({"dataset": info["dataset"], "rows": info["rows"], "time_column": info["time_column"],
                    "columns": len(info["columns"]), "last_load": _shown(info, caller)["last_load"]})
    return out


@router.get("/v1/datasets/{name}", summary="A dataset's columns, rows per connection and partitions")
def get_dataset(name: str, caller: Caller, request: Request,
                connection_id: Annotated[str | None, Query(max_length=64)] = None) -> dict[str, Any]:
    return _shown(_info(dsn_of(request), name, scoped_connection(caller, connection_id)), caller)


@router.get("/v1/datasets/{name}/latest", summary="The connection's latest rows (cached)",
            responses={200: {"content": {"application/json": {"schema": {"type": "object"}}}}})
def latest_rows(name: str, caller: Caller, request: Request,
                connection_id: Annotated[str | None, Query(max_length=64)] = None) -> Response:
    from engine.reads.catalog import hot_rows

    dsn = dsn_of(request)
    connection = scoped_connection(caller, connection_id)
    if connection is None:
        raise ProblemError(400, "connection_id: an admin token names the connection whose rows to show")
    _info(dsn, name, connection)
    frame = hot_rows(name, connection, dsn=dsn)
    rows = frame.write_json() if frame.height else "[]"
    return Response(f'{{"dataset": {_json(name)}, "connection_id": {_json(connection)}, "rows": {rows}}}',
                    media_type="application/json")


def _json(value: Any) -> str:
    import json

    return json.dumps(value)


class SqlRequest(BaseModel):
    sql: str = Field(min_length=1, max_length=100_000, description="DuckDB SQL over every dataset")
    limit: int = Field(1000, ge=1, le=100_000, description="rows returned at most")


@router.post("/v1/sql", summary="Raw SQL over every dataset (admin tokens only)")
def raw_sql(body: SqlRequest, caller: Admin, request: Request) -> Response:
    from engine.reads.duck import run_query

    result = run_query(body.sql, dsn=dsn_of(request))
    frame = result.frame
    shown = frame.head(body.limit)
    return Response(f'{{"rows": {shown.write_json() if shown.height else "[]"}, "row_count": {frame.height}, '
                    f'"truncated": {str(frame.height > body.limit).lower()}, "cached": '
                    f'{str(result.cached).lower()}, "seconds": {result.seconds:.4f}}}', media_type="application/json")


@router.post("/v1/datasets/{name}/query", summary="A structured query of the connection's rows (cached)")
def structured_query(name: str, body: StructuredQuery, caller: Caller, request: Request,
                     connection_id: Annotated[str | None, Query(max_length=64)] = None) -> Response:
    """Columns, filters, group by, aggregates, a time range and a limit, compiled with bound parameters; the
    connection filter is the server's. Answered from the cache when the same query ran since the last load."""
    from engine.reads.structured import run_structured

    dsn = dsn_of(request)
    connection = scoped_connection(caller, connection_id)
    _info(dsn, name, connection)
    result = run_structured(name, body, connection_id=connection, dsn=dsn)
    frame = result.frame
    return Response(f'{{"rows": {frame.write_json() if frame.height else "[]"}, "row_count": {frame.height}, '
                    f'"cached": {str(result.cached).lower()}, "seconds": {result.seconds:.4f}}}',
                    media_type="application/json")
