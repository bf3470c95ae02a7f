"""Excel ``dtypes`` in the engine's one type vocabulary (:func:`engine.types.parse_type`).

fastexcel knows seven kinds (int, float, string, boolean, date, datetime, duration); a column is read as the
nearest kind and then converted to the exact type asked for (``smallint``, ``decimal(12,2)``...), a value that
does not fit being rejected (quarantined) as CSV's are.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from engine.errors import SpecError
from engine.types import parse_type

__all__ = ["check_dtypes", "fastexcel_dtypes", "typed"]


def check_dtypes(dtypes: Mapping[str, str] | None) -> dict[str, pl.DataType]:
    """Each column's dtype; an unknown name raises a :class:`SpecError` listing the known ones."""
    out: dict[str, pl.DataType] = {}
    for column, name in (dtypes or {}).items():
        try:
            out[column] = parse_type(str(name))
        except ValueError as exc:
            raise SpecError(f"dtypes.{column}", str(exc)) from exc
    return out


def _kind(dtype: pl.DataType) -> str:
    """The fastexcel type read before the exact conversion (text for what fastexcel has no kind for)."""
    if dtype.is_integer():
        return "int"
    if dtype.is_float():
        return "float"
    if dtype == pl.Boolean:
        return "boolean"
    if dtype == pl.Date:
        return "date"
    if isinstance(dtype, pl.Datetime) or dtype == pl.Time:  # a time cell is a datetime on 1899-12-31
        return "datetime"
    if isinstance(dtype, pl.Duration):
        return "duration"
    return "string"  # text, decimal (read from the cell's text, not through a float), binary


def fastexcel_dtypes(dtypes: Mapping[str, str] | None) -> dict[str, str] | None:
    """``{"id": "bigint", "amount": "decimal(12,2)"}`` -> ``{"id": "int", "amount": "string"}``."""
    return {c: _kind(t) for c, t in check_dtypes(dtypes).items()} or None


def typed(frame: pl.LazyFrame, dtypes: Mapping[str, str] | None) -> pl.LazyFrame:
    """``frame`` (as fastexcel gave it) with each ``dtypes`` column converted to its exact type; values that
    do not convert are flagged for quarantine under the rule ``type``."""
    from engine.plan.frame import Plan, keep_source_values

    schema = frame.collect_schema()
    targets = {c: t for c, t in check_dtypes(dtypes).items() if c in schema and schema[c] != t}
    if not targets:
        return frame
    plan = Plan.start(keep_source_values(frame))
    plan.convert_columns(targets, rule="type")
    return plan.frame
