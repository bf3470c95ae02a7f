"""Pipeline steps compiled onto a :class:`~engine.plan.frame.Plan`. No I/O here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import polars as pl

from engine.errors import SpecError
from engine.names import normalize_names, shorten, unique_names
from engine.plan.columns import is_hidden
from engine.plan.frame import Plan, keep_source_values, preview
from engine.spec.models import (
    Cast,
    Dedupe,
    Derive,
    FillNull,
    Filter,
    ParseDate,
    ParseNumber,
    Pipeline,
    Rename,
    Select,
    Trim,
)
from engine.types import parse_type

__all__ = ["compile_steps", "fit_names", "normalize", "step_names"]


def _sql(text: str, path: str, plan: Plan) -> pl.Expr:
    try:
        expr = pl.sql_expr(text)
        roots = expr.meta.root_names()
    except Exception as exc:  # polars raises several SQL error types; all mean the same to the user
        raise SpecError(path, f"invalid SQL expression {text!r}: {str(exc).splitlines()[0]}") from exc
    for name in roots:
        plan.need(name, path)
    return expr


def _check_runs(plan: Plan, path: str) -> None:
    """Resolve the new schema now, so type errors point at the step that caused them."""
    try:
        plan.refresh()
    except Exception as exc:
        raise SpecError(path, str(exc).splitlines()[0]) from exc


def _select(plan: Plan, step: Select, path: str) -> None:
    for c in step.columns:
        plan.need(c, path)
    keep = [*step.columns, *(c for c in plan.schema if is_hidden(c))]
    plan.frame = plan.frame.select(keep)


def _rename(plan: Plan, step: Rename, path: str) -> None:
    for old, new in step.mapping.items():
        plan.need(old, f"{path}.{old}")
        if new in plan.columns and new not in step.mapping:
            raise SpecError(f"{path}.{old}", f"cannot rename to {new!r}: that column already exists")
    plan.frame = plan.frame.rename(dict(step.mapping))


def _cast(plan: Plan, step: Cast, path: str) -> None:
    for col in step.types:
        plan.need(col, f"{path}.{col}")
    plan.convert_columns({c: parse_type(t) for c, t in step.types.items()}, "cast")


def _derive(plan: Plan, step: Derive, path: str) -> None:
    exprs = [_sql(text, f"{path}.{name}", plan).alias(name) for name, text in step.exprs.items()]
    plan.frame = plan.frame.with_columns(exprs)


def _filter(plan: Plan, step: Filter, path: str) -> None:
    predicate = _sql(step.expr, path, plan)
    try:
        dtype = plan.frame.select(predicate).collect_schema().dtypes()[0]
    except Exception as exc:
        raise SpecError(path, str(exc).splitlines()[0]) from exc
    if dtype != pl.Boolean:  # ~ on a number is a bitwise not, and the drop flag must stay boolean
        raise SpecError(path, f"expected a true/false predicate, got a {dtype} expression {step.expr!r}")
    plan.drop_where(~predicate)


def _fill_null(plan: Plan, step: FillNull, path: str) -> None:
    fills = []
    for col, value in step.values.items():
        plan.need(col, f"{path}.{col}")
        dtype = plan.schema[col]
        try:
            literal = pl.select(pl.lit(value).cast(dtype, strict=True)).item()
        except Exception as exc:
            raise SpecError(f"{path}.{col}", f"{value!r} does not fit column type {dtype}") from exc
        fills.append(pl.col(col).fill_null(pl.lit(literal, dtype=dtype)))
    plan.frame = plan.frame.with_columns(fills)


def _text_column(plan: Plan, column: str, path: str) -> None:
    plan.need(column, path)
    if plan.schema[column] != pl.String:
        raise SpecError(path, f"column {column!r} is {plan.schema[column]}, not text")


def _trim(plan: Plan, step: Trim, path: str) -> None:
    exprs = []
    for col in step.columns:
        _text_column(plan, col, f"{path}.columns")
        e = pl.col(col).str.strip_chars()
        if step.collapse_spaces:
            e = e.str.replace_all(r"\s+", " ")
        if step.unicode:
            e = e.str.normalize(step.unicode)
        if step.case == "lower":
            e = e.str.to_lowercase()
        elif step.case == "upper":
            e = e.str.to_uppercase()
        elif step.case == "title":
            e = e.str.to_titlecase()
        exprs.append(e)
    plan.frame = plan.frame.with_columns(exprs)


def _parse_date(plan: Plan, step: ParseDate, path: str) -> None:
    _text_column(plan, step.column, f"{path}.column")
    text = pl.col(step.column).str.strip_chars()
    if step.kind == "date":
        parsed = text.str.to_date(step.format, strict=False)
    else:
        parsed = text.str.to_datetime(step.format, time_unit="us", strict=False)
    failed = parsed.is_null() & pl.col(step.column).is_not_null()
    reason = pl.format("{} does not match the date format {}", preview(pl.col(step.column)), pl.lit(step.format))
    plan.reject("parse_date", step.column, failed, reason)
    plan.frame = plan.frame.with_columns(parsed.alias(step.into or step.column))


def _parse_number(plan: Plan, step: ParseNumber, path: str) -> None:
    _text_column(plan, step.column, f"{path}.column")
    text = pl.col(step.column).str.strip_chars().str.replace_all(r"\s", "")
    if step.thousands:
        text = text.str.replace_all(step.thousands, "", literal=True)
    if step.decimal != ".":
        text = text.str.replace_all(step.decimal, ".", literal=True)
    target = parse_type(step.type)
    parsed = text.cast(target, strict=False)
    source = preview(pl.col(step.column))
    failed = parsed.is_null() & pl.col(step.column).is_not_null()
    reason = pl.format("{} is not a number (decimal {}, thousands {})", source,
                       pl.lit(repr(step.decimal)), pl.lit(repr(step.thousands)))
    if isinstance(target, pl.Decimal):
        # exact or quarantined: rounding (half to even here, half away from zero in PostgreSQL) would change
        # the number silently; trailing zeros past the scale are exact, so they pass
        scale = target.scale or 0
        inexact = text.str.contains(rf"\.\d{{{scale}}}0*[1-9]").fill_null(False)
        too_big = parsed.is_null() & text.cast(pl.Float64, strict=False).is_not_null()
        reason = (pl.when(inexact).then(pl.format("{} has more decimals than {} keeps", source, pl.lit(step.type)))
                  .when(too_big).then(pl.format("{} does not fit {}", source, pl.lit(step.type)))
                  .otherwise(reason))
        failed = failed | inexact
    plan.reject("parse_number", step.column, failed, reason)
    plan.frame = plan.frame.with_columns(parsed.alias(step.into or step.column))


def _dedupe(plan: Plan, step: Dedupe, path: str) -> None:
    for c in step.keys:
        plan.need(c, f"{path}.keys")
    plan.drop_where(plan.global_repeat(path, step.keys, keep=step.keep))


#: step type -> (its key in a spec, the function that applies it)
_STEPS: dict[type[Any], tuple[str, Callable[[Plan, Any, str], None]]] = {
    Select: ("select", _select), Rename: ("rename", _rename), Cast: ("cast", _cast), Derive: ("derive", _derive),
    Filter: ("filter", _filter), FillNull: ("fill_null", _fill_null), Trim: ("trim", _trim),
    ParseDate: ("parse_date", _parse_date), ParseNumber: ("parse_number", _parse_number),
    Dedupe: ("dedupe", _dedupe),
}


def compile_steps(pipeline: Pipeline, frame: pl.LazyFrame, *,
                  precomputed: dict[str, pl.Series] | None = None, collect_for: str | None = None) -> Plan:
    """The pipeline's steps applied to one partition's (or chunk's) frame; raises SpecError naming the step.

    ``precomputed`` holds the rows flagged by partition-wide steps and rules when planning a chunk.
    """
    plan = Plan.start(keep_source_values(frame))
    plan.precomputed = precomputed
    plan.collect_for = collect_for
    for i, step in enumerate(pipeline.steps):
        kind, apply = _STEPS[type(step)]
        path = f"steps[{i}].{kind}"
        apply(plan, step, path)
        _check_runs(plan, path)
    return plan


def step_names(pipeline: Pipeline) -> list[str]:
    """Each step's key in a spec (``rename``, ``cast``, ...), in order: a bounded set, the metrics' labels."""
    return [_STEPS[type(step)][0] for step in pipeline.steps]


def fit_names(plan: Plan) -> None:
    """With normalising off, names are kept but still made to fit: at most 63 bytes (PostgreSQL would
    truncate silently and two long names could collide) and unique after that."""
    new = unique_names([shorten(c) for c in plan.columns])
    mapping = {old: n for old, n in zip(plan.columns, new, strict=True) if old != n}
    if mapping:
        plan.frame = plan.frame.rename(mapping)
        plan.renamed_from.update({n: old for old, n in mapping.items()})
        plan.refresh()


def normalize(plan: Plan, known: dict[str, str] | None = None) -> None:
    """Rename visible columns to safe SQL identifiers, remembering the originals.

    ``known`` maps source names to the table's columns from earlier loads, so that names that normalise alike
    (``a b`` and ``a-b``) keep their columns whatever order a later file lists them in.
    """
    known = known or {}
    fixed = {c: known[c] for c in plan.columns if c in known}
    taken = set(fixed.values())
    rest = [c for c in plan.columns if c not in fixed]
    final: dict[str, str] = {}
    for old, new in zip(rest, normalize_names(rest), strict=True):
        candidate, n = new, 1
        while candidate in taken:
            n += 1
            candidate = shorten(f"{new}_{n}")
        taken.add(candidate)
        final[old] = candidate
    names = {**fixed, **final}
    mapping = {old: names[old] for old in plan.columns if names[old] != old}
    if mapping:
        plan.frame = plan.frame.rename(mapping)
        plan.renamed_from.update({n: old for old, n in mapping.items()})
        plan.refresh()
