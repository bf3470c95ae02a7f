"""``layout: document``: each row as one jsonb document in the seed's generic table
``(_import_id, connection_id, data jsonb, created_at)``, for schemaless sources (MongoDB, REST).

Binary COPY writes jsonb as a version byte followed by the JSON text, so the document column is sent as bytes:
no staging table and no ``::jsonb`` cast. The archive keeps the JSON text without the byte.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import polars as pl

from engine.errors import SpecError
from engine.plan.frame import Plan
from engine.postgres.ddl import CONNECTION_COLUMN

__all__ = ["DOC_DATA", "DOC_IMPORT", "DOC_TIME", "archivable", "to_document"]

#: the document layout's columns (the seed's generic ``import_data`` table)
DOC_IMPORT, DOC_DATA, DOC_TIME = "_import_id", "data", "created_at"
#: jsonb's binary COPY format: a version byte, then the JSON text
JSONB_VERSION = "\x01"


def _document_time(plan: Plan, partition_by: str | None, loaded_at: dt.datetime,
                   rename: Callable[[Plan, str], str]) -> pl.Expr:
    """The row's ``created_at``: the ``partition_by`` column (text is parsed, rows that do not parse are
    rejected) in UTC, else the load time."""
    if not partition_by:
        return pl.lit(loaded_at, dtype=pl.Datetime("us", "UTC"))
    source = partition_by if partition_by in plan.columns else rename(plan, partition_by)
    plan.need(source, "target.partition_by")
    if plan.schema[source] == pl.String:  # JSON has no time type
        plan.convert_columns({source: pl.Datetime("us")}, "type")
    dtype = plan.schema[source]
    if dtype == pl.Date:
        return pl.col(source).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    if isinstance(dtype, pl.Datetime):
        return pl.col(source).dt.replace_time_zone("UTC") if dtype.time_zone is None \
            else pl.col(source).dt.convert_time_zone("UTC")
    raise SpecError("target.partition_by", f"column {source!r} is {dtype}, not a date or timestamp")


def to_document(plan: Plan, *, partition_by: str | None, loaded_at: dt.datetime, load_id: str,
                rename: Callable[[Plan, str], str]) -> None:
    """Every visible field into one JSON document per row, beside the import id and a timestamp."""
    fields = [c for c in plan.columns if c != CONNECTION_COLUMN]
    when = _document_time(plan, partition_by, loaded_at, rename)
    document = pl.struct(fields).struct.json_encode() if fields else pl.lit("{}")
    plan.reject("copy_safe", DOC_DATA, document.str.contains("\\u0000", literal=True).fill_null(False),
                pl.lit("the document holds a NUL character (\\u0000), which jsonb refuses"))
    hidden = [c for c in plan.schema if c not in plan.columns]
    plan.frame = plan.frame.with_columns(
        pl.lit(load_id).alias(DOC_IMPORT),
        (pl.lit(JSONB_VERSION) + document).cast(pl.Binary).alias(DOC_DATA),
        when.alias(DOC_TIME),
    ).select(*hidden, CONNECTION_COLUMN, DOC_IMPORT, DOC_DATA, DOC_TIME)
    plan.refresh()


def archivable(part: pl.DataFrame, layout: str) -> pl.DataFrame:
    """The rows as the archive keeps them: documents as JSON text (without jsonb's COPY version byte)."""
    if layout != "document":
        return part
    return part.with_columns(pl.col(DOC_DATA).cast(pl.String).str.slice(1))
