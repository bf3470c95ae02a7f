"""Type names users write in specs, mapped to Polars dtypes, and Polars dtypes mapped to PostgreSQL types.

The PostgreSQL side must match what ADBC's binary COPY writes for each Arrow type, so the table we create
always accepts the batches we send.
"""

from __future__ import annotations

import re

import polars as pl

__all__ = ["ISO_FORMS", "TYPE_NAMES", "VOCABULARY", "parse_type", "pg_type", "to_loadable"]

#: The one type vocabulary, for spec steps and rules, CSV ``dtypes`` and Excel ``dtypes`` alike: each name with
#: its aliases (older spellings, Polars' and PostgreSQL's) and its Polars dtype; the README's table lists it.
#: ``int8`` is Polars' one-byte integer, not PostgreSQL's ``int8``; ``integer`` is ``bigint``, as it always was.
VOCABULARY: tuple[tuple[str, tuple[str, ...], pl.DataType], ...] = (
    ("bigint", ("int", "integer", "int64"), pl.Int64()),
    ("int32", (), pl.Int32()),
    ("smallint", ("int16",), pl.Int16()),
    ("int8", (), pl.Int8()),
    ("double", ("float", "float64", "double precision", "float8"), pl.Float64()),
    ("real", ("float32", "float4"), pl.Float32()),
    ("text", ("string", "str", "varchar"), pl.String()),
    ("boolean", ("bool",), pl.Boolean()),
    ("date", (), pl.Date()),
    ("timestamp", ("datetime", "timestamp without time zone"), pl.Datetime("us")),
    ("timestamptz", ("timestamp with time zone",), pl.Datetime("us", "UTC")),
    ("time", (), pl.Time()),
    ("interval", ("duration",), pl.Duration("us")),
    ("binary", ("bytea",), pl.Binary()),
)
_SIMPLE: dict[str, pl.DataType] = {
    name: dtype for canonical, aliases, dtype in VOCABULARY for name in (canonical, *aliases)
}
_DECIMAL = re.compile(r"^(?:decimal|numeric)\s*(?:\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\))?$")

#: Text forms read as dates and times without being asked (ISO 8601 only: ``01/02/2026`` is 1 February in
#: Madrid and 2 January in Boston), each with the dtype it converts to; CSV and API sources guess with these.
ISO_FORMS: tuple[tuple[str, pl.DataType], ...] = (
    (r"^\d{4}-\d{2}-\d{2}$", pl.Date()),
    (r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?$", pl.Datetime("us")),
    (r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})$", pl.Datetime("us", "UTC")),
)

#: The names accepted by :func:`parse_type`, for error hints.
TYPE_NAMES = sorted([*_SIMPLE, "decimal(p,s)"])


def parse_type(name: str) -> pl.DataType:
    """``parse_type('decimal(12,2)') == pl.Decimal(12, 2)``; raises ``ValueError`` naming the known types."""
    key = " ".join(name.split()).lower()
    if key in _SIMPLE:
        return _SIMPLE[key]
    m = _DECIMAL.match(key)
    if m:
        precision = int(m.group(1) or 38)
        scale = int(m.group(2) or 0)
        if not 1 <= precision <= 38 or scale > precision:
            raise ValueError(f"decimal precision must be 1..38 and scale <= precision, got {name!r}")
        return pl.Decimal(precision, scale)
    raise ValueError(f"unknown type {name!r}; known types: {', '.join(TYPE_NAMES)}")


def to_loadable(dtype: pl.DataType) -> pl.DataType:
    """The dtype a column is cast to before COPY (unsigned/128-bit ints, categoricals, nested values...)."""
    if dtype in (pl.Int8, pl.UInt8):
        return pl.Int16()
    if dtype == pl.UInt16:
        return pl.Int32()
    if dtype in (pl.UInt32, pl.UInt64):
        return pl.Int64()  # values above bigint's range are quarantined by the COPY guard
    if dtype in (pl.Int128, pl.UInt128):
        return pl.Decimal(38, 0)  # 20+ digit integers (ids, card numbers) fit numeric(38,0)
    if isinstance(dtype, pl.Datetime):
        return pl.Datetime("us", dtype.time_zone)
    if isinstance(dtype, pl.Duration):
        return pl.Duration("us")
    if isinstance(dtype, (pl.Categorical, pl.Enum, pl.Null, pl.Object)):
        return pl.String()
    if isinstance(dtype, (pl.List, pl.Array, pl.Struct)):
        return pl.String()  # stored as JSON text
    if dtype.is_float() and dtype not in (pl.Float32, pl.Float64):
        return pl.Float32()  # Float16
    return dtype


#: loadable dtypes with one PostgreSQL type each
_PG_TYPES: list[tuple[pl.DataType, str]] = [
    (pl.Boolean(), "boolean"), (pl.Int16(), "smallint"), (pl.Int32(), "integer"), (pl.Int64(), "bigint"),
    (pl.Float32(), "real"), (pl.Float64(), "double precision"), (pl.String(), "text"), (pl.Binary(), "bytea"),
    (pl.Date(), "date"), (pl.Time(), "time without time zone"),
]


def pg_type(dtype: pl.DataType) -> str:
    """The PostgreSQL column type for a loadable Polars dtype (see :func:`to_loadable`)."""
    for simple, pg in _PG_TYPES:
        if dtype == simple:
            return pg
    if isinstance(dtype, pl.Decimal):
        return f"numeric({dtype.precision},{dtype.scale})"
    if isinstance(dtype, pl.Datetime):
        return "timestamp with time zone" if dtype.time_zone else "timestamp without time zone"
    if isinstance(dtype, pl.Duration):
        return "interval"
    raise ValueError(f"no PostgreSQL type for {dtype}")
