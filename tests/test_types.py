"""Spec type names -> Polars dtypes -> the PostgreSQL types binary COPY writes."""

from __future__ import annotations

import re

import polars as pl
import pytest

from engine.types import TYPE_NAMES, parse_type, pg_type, to_loadable
from tests.support import FIXTURES


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


def _readme_types() -> list[tuple[str, list[str], str]]:
    """The README's type table: (name, aliases, PostgreSQL type) per row."""
    readme = (FIXTURES.parent / "README.md").read_text(encoding="utf-8")
    table = readme.split("| Type | Aliases | PostgreSQL |", 1)[1].split("\n\n", 1)[0]
    rows = []
    for line in table.strip().splitlines()[1:]:
        name, aliases, pg = (cell.strip() for cell in line.strip().strip("|").split("|"))
        rows.append((name.strip("`"), re.findall(r"`([^`]+)`", aliases),
                     pg.strip("`")))
    return rows


def test_the_readme_lists_the_one_vocabulary() -> None:
    """Spec steps, rules, CSV and Excel dtypes all take these names: the README's table is the whole list,
    and says the PostgreSQL column each one loads as."""
    rows = _readme_types()
    listed = {n for name, aliases, _ in rows for n in (name, *aliases)}
    assert listed == {*TYPE_NAMES, "decimal", "numeric", "numeric(p,s)"}
    for name, aliases, pg in rows:
        for spelling in (name, *aliases):
            given = spelling.replace("(p,s)", "(12,2)")
            # a bare decimal/numeric is numeric(38,0), as the note under the table says
            expected = pg.replace("(p,s)", "(12,2)" if "(p,s)" in spelling else "(38,0)")
            assert pg_type(to_loadable(parse_type(given))) == expected, spelling


@pytest.mark.parametrize(("name", "dtype"), [
    ("double precision", pl.Float64()), ("Double  Precision", pl.Float64()), ("float8", pl.Float64()),
    ("float4", pl.Float32()), ("varchar", pl.String()), ("bytea", pl.Binary()),
    ("timestamp with time zone", pl.Datetime("us", "UTC")), ("timestamp without time zone", pl.Datetime("us")),
])
def test_postgresql_spellings_are_aliases(name: str, dtype: pl.DataType) -> None:
    assert parse_type(name) == dtype
