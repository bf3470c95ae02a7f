"""Spec type names -> Polars dtypes -> the PostgreSQL types binary COPY writes."""

from __future__ import annotations

import polars as pl
import pytest

from engine.types import TYPE_NAMES, parse_type, pg_type, to_loadable


@pytest.mark.parametrize(("name", "dtype"), [
    ("int", pl.Int64()), ("INT32", pl.Int32()), (" bigint ", pl.Int64()), ("smallint", pl.Int16()),
    ("float", pl.Float64()), ("real", pl.Float32()), ("text", pl.String()), ("bool", pl.Boolean()),
    ("date", pl.Date()), ("timestamp", pl.Datetime("us")), ("timestamptz", pl.Datetime("us", "UTC")),
    ("decimal", pl.Decimal(38, 0)), ("numeric(12,2)", pl.Decimal(12, 2)), ("decimal( 5 )", pl.Decimal(5, 0)),
    ("binary", pl.Binary()), ("interval", pl.Duration("us")), ("time", pl.Time()),
])
def test_parse_type(name: str, dtype: pl.DataType) -> None:
    assert parse_type(name) == dtype


@pytest.mark.parametrize("name", ["int9", "decimal(0,0)", "decimal(39,2)", "decimal(5,6)", "varchar(x)", ""])
def test_parse_type_rejects(name: str) -> None:
    with pytest.raises(ValueError):
        parse_type(name)


def test_unknown_type_lists_known_ones() -> None:
    with pytest.raises(ValueError, match="known types: .*bigint"):
        parse_type("nope")
    assert "decimal(p,s)" in TYPE_NAMES


@pytest.mark.parametrize(("dtype", "loadable", "pg"), [
    (pl.Int8(), pl.Int16(), "smallint"), (pl.UInt8(), pl.Int16(), "smallint"),
    (pl.UInt16(), pl.Int32(), "integer"), (pl.UInt32(), pl.Int64(), "bigint"),
    (pl.UInt64(), pl.Int64(), "bigint"), (pl.Int32(), pl.Int32(), "integer"),
    (pl.Float32(), pl.Float32(), "real"), (pl.Float64(), pl.Float64(), "double precision"),
    (pl.Datetime("ns"), pl.Datetime("us"), "timestamp without time zone"),
    (pl.Datetime("ms", "Europe/Madrid"), pl.Datetime("us", "Europe/Madrid"), "timestamp with time zone"),
    (pl.Duration("ns"), pl.Duration("us"), "interval"), (pl.Categorical(), pl.String(), "text"),
    (pl.Null(), pl.String(), "text"), (pl.List(pl.Int64()), pl.String(), "text"),
    (pl.Struct({"a": pl.Int64()}), pl.String(), "text"),
    (pl.Decimal(10, 3), pl.Decimal(10, 3), "numeric(10,3)"), (pl.Binary(), pl.Binary(), "bytea"),
    (pl.Date(), pl.Date(), "date"), (pl.Boolean(), pl.Boolean(), "boolean"),
    (pl.Time(), pl.Time(), "time without time zone"),
])
def test_to_loadable_and_pg_type(dtype: pl.DataType, loadable: pl.DataType, pg: str) -> None:
    assert to_loadable(dtype) == loadable
    assert pg_type(loadable) == pg


def test_pg_type_refuses_what_cannot_be_copied() -> None:
    with pytest.raises(ValueError):
        pg_type(pl.UInt64())
