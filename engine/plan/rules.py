"""Validation rules as Polars expressions, the COPY-safety guard, and the final loaded/quarantined split.

Each rule adds a reject column (see :mod:`engine.plan.frame`); a row with any reason is quarantined with the
first failing rule, its column, and every reason joined with ``; ``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl

from engine.errors import SpecError
from engine.plan.columns import COLUMN, DROP_COLUMN, GLOBAL_PREFIX, REASON, REJECT_PREFIX, RULE, STATUS
from engine.plan.frame import Plan, convert, preview
from engine.spec.models import Allowed, Castable, NotNull, Pipeline, Range, Regex, Unique
from engine.types import parse_type, to_loadable

__all__ = ["apply_rules", "as_text", "finish", "guard_copy"]

_INT64_MAX = 2**63 - 1
_NUMERIC38 = 10**38
_PG_DATE_MIN, _PG_DATE_MAX = -4712, 5874897
_PG_TS_MAX = 294275


def _literal(value: Any, dtype: pl.DataType, path: str) -> Any:
    try:
        if dtype.is_integer() and isinstance(value, float) and not value.is_integer():
            raise ValueError(value)  # a cast would truncate 2.5 to 2
        if dtype == pl.Date and isinstance(value, str):
            return dt.date.fromisoformat(value)
        if isinstance(dtype, pl.Datetime) and isinstance(value, (str, dt.datetime)):
            stamp = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
            if dtype.time_zone is None:
                if stamp.tzinfo is not None:
                    raise ValueError(value)  # an instant cannot be compared with wall-clock times
                return stamp
            # a bound without an offset is read in the column's time zone
            return stamp if stamp.tzinfo else stamp.replace(tzinfo=ZoneInfo(dtype.time_zone))
        return pl.select(pl.lit(value).cast(dtype, strict=True)).item()
    except Exception:
        raise SpecError(path, f"{value!r} cannot be compared with a {dtype} column") from None


def _bound(value: Any, dtype: pl.DataType, path: str) -> Any:
    if dtype.is_integer() and isinstance(value, float):
        return value  # compared as a float: 2 < 2.5 must hold
    return _literal(value, dtype, path)


def apply_rules(plan: Plan, pipeline: Pipeline) -> None:
    """Add one reject column per rule (and per column for multi-column rules)."""
    for i, rule in enumerate(pipeline.rules):
        if isinstance(rule, NotNull):
            path = f"rules[{i}].not_null"
            for c in rule.columns:
                plan.need(c, path)
                plan.reject("not_null", c, pl.col(c).is_null(), pl.lit(f"{c} is null"))
        elif isinstance(rule, Unique):
            path = f"rules[{i}].unique"
            for c in rule.columns:
                plan.need(c, path)
            key = pl.struct(list(rule.columns))
            label = ", ".join(rule.columns)
            plan.reject("unique", label, plan.global_repeat(path, rule.columns),
                        pl.format("duplicate ({}) = {}", pl.lit(label), preview(key.struct.json_encode())))
        elif isinstance(rule, Range):
            path = f"rules[{i}].range"
            plan.need(rule.column, f"{path}.column")
            dtype = plan.schema[rule.column]
            col = pl.col(rule.column)
            failed = pl.lit(False)
            if rule.min is not None:
                failed = failed | (col < _bound(rule.min, dtype, f"{path}.min"))
            if rule.max is not None:
                failed = failed | (col > _bound(rule.max, dtype, f"{path}.max"))
            bounds = f"[{'' if rule.min is None else rule.min}, {'' if rule.max is None else rule.max}]"
            plan.reject("range", rule.column, failed.fill_null(False),
                        pl.format("{} is outside {}", preview(col), pl.lit(bounds)))
        elif isinstance(rule, Regex):
            path = f"rules[{i}].regex"
            plan.need(rule.column, f"{path}.column")
            text = pl.col(rule.column).cast(pl.String)
            plan.reject("regex", rule.column, (~text.str.contains(rule.pattern)).fill_null(False),
                        pl.format("{} does not match {}", preview(text), pl.lit(rule.pattern)))
        elif isinstance(rule, Allowed):
            path = f"rules[{i}].allowed"
            plan.need(rule.column, f"{path}.column")
            dtype = plan.schema[rule.column]
            values = [_literal(v, dtype, f"{path}.values") for v in rule.values]
            col = pl.col(rule.column)
            plan.reject("allowed", rule.column, (~col.is_in(values)).fill_null(False),
                        pl.format("{} is not one of the allowed values", preview(col)))
        elif isinstance(rule, Castable):
            path = f"rules[{i}].castable"
            plan.need(rule.column, f"{path}.column")
            target = parse_type(rule.type)
            converted = convert(pl.col(rule.column), plan.schema[rule.column], target)
            plan.reject("castable", rule.column, converted.is_null() & pl.col(rule.column).is_not_null(),
                        pl.format("{} is not castable to {}", preview(pl.col(rule.column)), pl.lit(rule.type)))
    plan.refresh()


def guard_copy(plan: Plan) -> None:
    """Reject what binary COPY would refuse, then cast every column to a type we can COPY.

    NUL bytes in text, dates/timestamps outside PostgreSQL's range and integers outside int64 would otherwise
    abort the whole COPY; lone surrogates reach us as NULs (JSON) or invalid UTF-8 (CSV, see the CSV source).
    """
    casts: list[pl.Expr] = []
    for name in list(plan.columns):
        dtype = plan.schema[name]
        col = pl.col(name)
        if dtype == pl.String:
            plan.reject("copy_safe", name, col.str.contains("\x00", literal=True).fill_null(False),
                        pl.lit(f"{name} contains a NUL byte (or a lone surrogate), which PostgreSQL text refuses"))
        elif dtype == pl.Date:
            year = col.dt.year()
            plan.reject("copy_safe", name, ((year < _PG_DATE_MIN) | (year > _PG_DATE_MAX)).fill_null(False),
                        pl.format("{} is outside PostgreSQL's date range", col.cast(pl.String)))
        elif isinstance(dtype, pl.Datetime):
            year = col.dt.year()
            plan.reject("copy_safe", name, ((year < _PG_DATE_MIN) | (year > _PG_TS_MAX)).fill_null(False),
                        pl.format("{} is outside PostgreSQL's timestamp range", col.cast(pl.String)))
        elif dtype == pl.UInt64:
            plan.reject("copy_safe", name, (col > _INT64_MAX).fill_null(False),
                        pl.format("{} overflows bigint", col.cast(pl.String)))
        elif dtype in (pl.Int128, pl.UInt128):
            plan.reject("copy_safe", name, ((col >= _NUMERIC38) | (col <= -_NUMERIC38)).fill_null(False),
                        pl.format("{} has more than 38 digits", col.cast(pl.String)))
        elif isinstance(dtype, (pl.List, pl.Array, pl.Struct)):
            casts.append(_json_text(name))
            continue
        target = to_loadable(dtype)
        if target != dtype:
            casts.append(col.cast(target, strict=False))
    if casts:
        plan.frame = plan.frame.with_columns(casts)
    plan.refresh()


def as_text(name: str, dtype: pl.DataType) -> pl.Expr:
    """Any column as text, for quarantine's ``raw``: nested values as JSON, bytes as hex, durations as ISO."""
    col = pl.col(name)
    if isinstance(dtype, (pl.List, pl.Array, pl.Struct)):
        return _json_text(name)
    if dtype == pl.Binary:
        return col.bin.encode("hex")
    if isinstance(dtype, pl.Duration):
        return col.dt.to_string("iso")
    if dtype == pl.Object:
        return pl.lit(None, dtype=pl.String)
    return col.cast(pl.String)


def _json_text(name: str) -> pl.Expr:
    """Nested values stored as JSON text: wrap in a struct to encode, then strip the wrapper."""
    encoded = pl.struct(pl.col(name).alias("v")).struct.json_encode()
    inner = encoded.str.slice(5, encoded.str.len_chars() - 6)
    return pl.when(pl.col(name).is_null()).then(None).otherwise(inner).alias(name)


def finish(plan: Plan) -> None:
    """Collapse reject columns and the drop flag into status, rule, column and reason."""
    rejects = [c for c in plan.schema if c.startswith(REJECT_PREFIX)]
    flags = [c for c in plan.schema if c.startswith(GLOBAL_PREFIX)]
    parsed = [c[len(REJECT_PREFIX):].split(":", 2) for c in rejects]
    if rejects:
        reason = pl.concat_str([pl.col(c) for c in rejects], separator="; ", ignore_nulls=True)
        pairs = list(zip(rejects, parsed, strict=True))
        rule = pl.coalesce([pl.when(pl.col(c).is_not_null()).then(pl.lit(p[1])) for c, p in pairs])
        column = pl.coalesce([pl.when(pl.col(c).is_not_null()).then(pl.lit(p[2])) for c, p in pairs])
        rejected = pl.any_horizontal([pl.col(c).is_not_null() for c in rejects])
    else:
        reason = rule = column = pl.lit(None, dtype=pl.String)
        rejected = pl.lit(False)
    dropped = pl.col(DROP_COLUMN).fill_null(False) if DROP_COLUMN in plan.schema else pl.lit(False)
    status = pl.when(dropped).then(2).when(rejected).then(1).otherwise(0).cast(pl.Int8)
    plan.frame = plan.frame.with_columns(
        status.alias(STATUS), rule.alias(RULE), column.alias(COLUMN), reason.alias(REASON)
    ).drop([*rejects, *flags, *([DROP_COLUMN] if DROP_COLUMN in plan.schema else [])])
    plan.refresh()
