"""Reconciling an incoming column type with the table's: keep, cast the incoming values, or widen the table."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import polars as pl

from engine.types import pg_type, to_loadable

__all__ = ["Decision", "pg_to_polars", "reconcile"]

_INTS = ["smallint", "integer", "bigint"]
_FLOATS = ["real", "double precision"]
_NUMERIC = re.compile(r"^numeric\((\d+),(\d+)\)$")
_TS = "timestamp without time zone"
_TSTZ = "timestamp with time zone"

#: (narrower, wider): a value of the first type converts to the second without loss of meaning.
_WIDENS: set[tuple[str, str]] = {
    ("smallint", "integer"), ("smallint", "bigint"), ("integer", "bigint"),
    ("smallint", "real"), ("smallint", "double precision"), ("integer", "double precision"),
    ("bigint", "double precision"), ("real", "double precision"),
    ("date", _TS), ("date", _TSTZ),
}


@dataclass(frozen=True)
class Decision:
    """What to do with one column: ``keep``; ``cast`` incoming to ``pg`` (values checked); ``alter`` the table
    column to ``pg`` (a safe widening); ``add`` a new column; or ``error``."""

    action: Literal["keep", "cast", "alter", "add", "error"]
    pg: str
    hint: str = ""


def pg_to_polars(pg: str) -> pl.DataType | None:
    """The Polars dtype whose binary COPY matches an existing column type, or None when we cannot write it."""
    simple: dict[str, pl.DataType] = {
        "smallint": pl.Int16(), "integer": pl.Int32(), "bigint": pl.Int64(), "real": pl.Float32(),
        "double precision": pl.Float64(), "text": pl.String(), "boolean": pl.Boolean(), "date": pl.Date(),
        _TS: pl.Datetime("us"), _TSTZ: pl.Datetime("us", "UTC"), "bytea": pl.Binary(),
        "interval": pl.Duration("us"), "time without time zone": pl.Time(),
    }
    if pg in simple:
        return simple[pg]
    if pg.startswith(("character varying", "character(")) or pg == "character":
        return pl.String()
    m = _NUMERIC.match(pg)
    if m:
        return pl.Decimal(int(m.group(1)), int(m.group(2)))
    if pg == "numeric":
        return pl.Decimal(38, 10)
    return None


def _numeric_parts(pg: str) -> tuple[int, int] | None:
    if pg in _INTS:
        return {"smallint": (5, 0), "integer": (10, 0), "bigint": (19, 0)}[pg]
    m = _NUMERIC.match(pg)
    return (int(m.group(1)), int(m.group(2))) if m else None


def reconcile(existing: str | None, incoming: pl.DataType, *, is_key: bool = False) -> Decision:
    """Decide how an incoming Polars column meets the existing PostgreSQL column type."""
    inc = pg_type(to_loadable(incoming))
    if existing is None:
        return Decision("add", inc)
    if existing == inc:
        return Decision("keep", existing)
    if pg_to_polars(existing) is None:
        return Decision("error", existing, f"the engine cannot write into a {existing} column")
    if existing == "text" or existing.startswith("character"):
        return Decision("cast", existing)  # any value has a text form
    if inc == "text":
        return Decision("cast", existing)  # text is parsed; unparseable values are quarantined
    if (inc, existing) in _WIDENS:
        return Decision("cast", existing)
    if (existing, inc) in _WIDENS:
        if is_key:
            return Decision("error", existing, "a partition column's type cannot change")
        return Decision("alter", inc)
    e_num, i_num = _numeric_parts(existing), _numeric_parts(inc)
    if e_num and i_num and (existing.startswith("numeric") or inc.startswith("numeric")):
        (ep, es), (ip, is_) = e_num, i_num
        if ip - is_ <= ep - es and is_ <= es:
            return Decision("cast", existing)
        scale = max(es, is_)
        precision = max(ep - es, ip - is_) + scale
        if precision > 1000 or is_key:
            return Decision("error", existing, "no numeric type holds both")
        return Decision("alter", f"numeric({precision},{scale})")
    if existing == "numeric" and inc in (*_INTS, "numeric"):
        return Decision("cast", existing)
    return Decision("error", existing, "cast it in the pipeline spec (steps: - cast: {...}) or load into a new table")
