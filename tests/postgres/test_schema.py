"""Reconciling incoming column types with an existing table's: keep, cast, widen, add, or refuse."""

from __future__ import annotations

from decimal import Decimal

import polars as pl
import pytest

from engine.postgres.schema import pg_to_polars, reconcile
from engine.types import pg_type, to_loadable

TS, TSTZ = "timestamp without time zone", "timestamp with time zone"


@pytest.mark.parametrize(("existing", "incoming", "action", "pg"), [
    (None, pl.Int8(), "add", "smallint"),
    (None, pl.String(), "add", "text"),
    ("bigint", pl.Int64(), "keep", "bigint"),
    ("bigint", pl.UInt64(), "keep", "bigint"),  # loaded as bigint, overflow quarantined by the guard
    ("integer", pl.Int64(), "alter", "bigint"),
    ("smallint", pl.Int32(), "alter", "integer"),
    ("integer", pl.UInt32(), "alter", "bigint"),
    ("integer", pl.Float64(), "alter", "double precision"),
    ("real", pl.Float64(), "alter", "double precision"),
    ("date", pl.Datetime("us"), "alter", TS),
    ("date", pl.Datetime("us", "UTC"), "alter", TSTZ),
    ("bigint", pl.Int32(), "cast", "bigint"),
    ("double precision", pl.Int64(), "cast", "double precision"),
    (TS, pl.Date(), "cast", TS),
    ("text", pl.Int64(), "cast", "text"),
    ("text", pl.Boolean(), "cast", "text"),
    ("character varying(10)", pl.Int64(), "cast", "character varying(10)"),
    ("bigint", pl.String(), "cast", "bigint"),
    ("date", pl.String(), "cast", "date"),
    ("numeric(10,2)", pl.Int16(), "cast", "numeric(10,2)"),
    ("numeric(12,4)", pl.Decimal(10, 2), "cast", "numeric(12,4)"),
    ("numeric(10,2)", pl.Decimal(12, 4), "alter", "numeric(12,4)"),
    ("numeric(10,2)", pl.Int64(), "alter", "numeric(21,2)"),
    ("numeric", pl.Int64(), "cast", "numeric"),
    ("bigint", pl.Boolean(), "error", "bigint"),
    (TSTZ, pl.Datetime("us"), "error", TSTZ),
    ("jsonb", pl.String(), "error", "jsonb"),
    ("boolean", pl.Int64(), "error", "boolean"),
])
def test_reconcile(existing: str | None, incoming: pl.DataType, action: str, pg: str) -> None:
    decision = reconcile(existing, incoming)
    assert (decision.action, decision.pg) == (action, pg)
    if action == "error":
        assert decision.hint


@pytest.mark.parametrize(("existing", "incoming"), [
    ("integer", pl.Int64()), ("date", pl.Datetime("us")), ("numeric(10,2)", pl.Int64()),
])
def test_key_columns_never_change_type(existing: str, incoming: pl.DataType) -> None:
    assert reconcile(existing, incoming, is_key=True).action == "error"


def test_key_columns_still_accept_narrower_values() -> None:
    assert reconcile("bigint", pl.Int32(), is_key=True).action == "cast"
    assert reconcile(TS, pl.Date(), is_key=True).action == "cast"


@pytest.mark.parametrize(("pg", "dtype"), [
    ("smallint", pl.Int16()), ("integer", pl.Int32()), ("bigint", pl.Int64()), ("real", pl.Float32()),
    ("double precision", pl.Float64()), ("text", pl.String()), ("boolean", pl.Boolean()), ("date", pl.Date()),
    (TS, pl.Datetime("us")), (TSTZ, pl.Datetime("us", "UTC")), ("bytea", pl.Binary()),
    ("interval", pl.Duration("us")), ("time without time zone", pl.Time()),
    ("character varying(20)", pl.String()), ("character(3)", pl.String()),
    ("numeric(12,2)", pl.Decimal(12, 2)),
])
def test_pg_to_polars_round_trips_with_pg_type(pg: str, dtype: pl.DataType) -> None:
    assert pg_to_polars(pg) == dtype
    if not pg.startswith("character"):
        assert pg_type(to_loadable(dtype)) == pg


def test_pg_to_polars_unknown() -> None:
    assert pg_to_polars("jsonb") is None
    assert pg_to_polars("integer[]") is None


def test_decimal_values_survive_the_cast_target() -> None:
    dtype = pg_to_polars("numeric(12,2)")
    assert dtype is not None
    s = pl.Series([Decimal("1.25")]).cast(dtype)
    assert s.to_list() == [Decimal("1.25")]
