"""A structured query over one dataset (columns, filters, group by, aggregates, time range, order, page) for
the HTTP API, which takes no SQL text: compiled to DuckDB SQL and answered by :func:`~engine.reads.duck.run_query`
(cache included). Every column is checked against the dataset's and quoted, every value is a bound parameter,
and a connection's caller sees only its rows through a ``connection_id`` filter the server adds, never the query.

>>> q = StructuredQuery.model_validate({"group_by": ["city"], "aggregates": [{"fn": "count", "as": "n"}]})
>>> run_structured("orders", q, connection_id=7).frame  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal, TypeAlias

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from engine.errors import SpecError
from engine.ids import ConnectionId, kind_mismatch
from engine.names import qualified, quote_ident
from engine.postgres.ddl import CONNECTION_COLUMN
from engine.reads.catalog import canonical_connection_id, metadata
from engine.reads.duck import run_query
from engine.settings import settings

__all__ = ["Aggregate", "Filter", "OrderBy", "StructuredQuery", "StructuredResult", "TimeRange", "compile_query",
           "run_structured"]

#: items in each list of a query, values in one ``in`` list: a hostile body stays small
MAX_ITEMS, MAX_VALUES = 64, 1000
Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Alias = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")]
Scalar: TypeAlias = Annotated[str, StringConstraints(max_length=1000)] | int | float | bool
Op: TypeAlias = Literal["=", "!=", "<", "<=", ">", ">=", "in", "not_in", "between", "is_null", "not_null", "like",
                        "contains", "starts_with"]
Fn: TypeAlias = Literal["count", "count_distinct", "sum", "avg", "min", "max"]
_COMPARE = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_TEXT_OPS = ("like", "contains", "starts_with")
_NUMERIC = ("int", "float", "decimal")
_STRICT = ConfigDict(extra="forbid", populate_by_name=True)
#: PostgreSQL type -> how a value for it is read (numeric(p,s) is "decimal", varchar(n) "text", the rest "other")
_KINDS = {"smallint": "int", "integer": "int", "bigint": "int", "real": "float", "double precision": "float",
          "boolean": "bool", "date": "date", "uuid": "uuid", "text": "text",
          "timestamp without time zone": "timestamp", "timestamp with time zone": "timestamptz"}


class Filter(BaseModel):
    """``{"column": "city", "op": "in", "values": ["Madrid", "Lyon"]}``; ``like`` takes a pattern (``%``, ``_``),
    ``contains`` / ``starts_with`` plain text; ``between`` is inclusive of both ``values``."""

    model_config = _STRICT
    column: Name
    op: Op
    value: Scalar | None = None
    values: list[Scalar] | None = Field(default=None, max_length=MAX_VALUES)

    @model_validator(mode="after")
    def _shape(self) -> Filter:
        unary, listed = self.op in ("is_null", "not_null"), self.op in ("in", "not_in", "between")
        if unary and (self.value is not None or self.values is not None):
            raise ValueError(f"{self.op} takes neither value nor values")
        if listed and (self.value is not None or not self.values or self.op == "between" and len(self.values) != 2):
            raise ValueError(f"{self.op} takes values (a list of {'2' if self.op == 'between' else '1 or more'})")
        if not unary and not listed and (self.value is None or self.values is not None):
            raise ValueError(f"{self.op} takes one value, not values (for null: is_null / not_null)")
        return self


class Aggregate(BaseModel):
    """``{"fn": "sum", "column": "amount", "as": "total"}``; ``count`` without a column counts rows."""

    model_config = _STRICT
    fn: Fn
    column: Name | None = None
    as_: Alias | None = Field(default=None, alias="as")

    @model_validator(mode="after")
    def _column(self) -> Aggregate:
        if self.column is None and self.fn != "count":
            raise ValueError(f"{self.fn} needs a column")
        return self

    @property
    def name(self) -> str:  # the output column: "as", else "count" / "sum_amount"
        return self.as_ or (self.fn if self.column is None else f"{self.fn}_{self.column}")


class TimeRange(BaseModel):
    """Rows whose time column is in ``[from, to)``; a time without a zone is UTC."""

    model_config = _STRICT
    from_: dt.datetime | None = Field(default=None, alias="from")
    to: dt.datetime | None = None

    @model_validator(mode="after")
    def _order(self) -> TimeRange:
        if self.from_ is None and self.to is None:
            raise ValueError("time_range needs from, to or both")
        if self.from_ is not None and self.to is not None and _utc(self.from_) >= _utc(self.to):
            raise ValueError("time_range: from must be before to")
        return self


class OrderBy(BaseModel):
    """A column of the dataset or, when grouping, an output column (a group_by column or an aggregate's name)."""

    model_config = _STRICT
    column: Name
    desc: bool = False


class StructuredQuery(BaseModel):
    """What to read from one dataset. Empty ``columns`` means all of them (or the ``group_by`` ones)."""

    model_config = _STRICT
    columns: list[Name] = Field(default_factory=list, max_length=MAX_ITEMS)
    filters: list[Filter] = Field(default_factory=list, max_length=MAX_ITEMS)
    group_by: list[Name] = Field(default_factory=list, max_length=MAX_ITEMS)
    aggregates: list[Aggregate] = Field(default_factory=list, max_length=MAX_ITEMS)
    time_range: TimeRange | None = None
    order_by: list[OrderBy] = Field(default_factory=list, max_length=MAX_ITEMS)
    limit: int = Field(default=100, ge=1, description="rows in the page, at most BICONIC_API_PAGE_MAX")
    offset: int = Field(default=0, ge=0, le=2**53)

    @field_validator("limit")
    @classmethod
    def _page(cls, value: int) -> int:
        if value > settings().api_page_max:
            raise ValueError(f"limit is at most {settings().api_page_max} (BICONIC_API_PAGE_MAX)")
        return value


@dataclass
class StructuredResult:
    """The page of rows, whether the cache answered, and the SQL it ran (for logs, never for the caller)."""

    frame: pl.DataFrame
    cached: bool
    seconds: float
    sql: str = field(repr=False)


def run_structured(dataset: str, query: StructuredQuery, *, connection_id: ConnectionId | uuid.UUID | None,
                   dsn: str | None = None, archive: str | None = None, cache: bool = True) -> StructuredResult:
    """Answer ``query`` over ``dataset``; with a ``connection_id``, only that connection's rows are read."""
    connection_id = None if connection_id is None else canonical_connection_id(connection_id)
    info = metadata(dataset, dsn=dsn, cache=cache)
    sql, params = compile_query(info["dataset"], query, info["columns"], info.get("time_column"), connection_id)
    result = run_query(sql, dsn=dsn, archive=archive, cache=cache, params=params)
    return StructuredResult(result.frame, result.cached, result.seconds, sql)


def compile_query(dataset: str, query: StructuredQuery, columns: Mapping[str, str], time_column: str | None,
                  connection_id: ConnectionId | None) -> tuple[str, list[Any]]:
    """DuckDB SQL and its parameters; ``columns`` maps each column of the dataset to its PostgreSQL type."""
    sql = _Sql(dataset, columns)
    where = _where(sql, query, time_column, connection_id)
    group = [sql.column(f"group_by[{i}]", c) for i, c in enumerate(query.group_by)]
    grouping = bool(group or query.aggregates)
    plain = [sql.column(f"columns[{i}]", c) for i, c in enumerate(query.columns)] or \
        (group if grouping else list(columns))
    for i, name in enumerate(plain):
        if grouping and name not in group:
            raise SpecError(f"columns[{i}]", f"{name!r} is neither in group_by nor an aggregate")
    outputs = plain + [a.name for a in query.aggregates]
    if len(set(outputs)) < len(outputs):
        raise SpecError("aggregates", f"two output columns of one name: {', '.join(outputs)}")
    select = [quote_ident(c) for c in plain] + [
        f"{sql.aggregate(f'aggregates[{i}]', a)} AS {quote_ident(a.name)}" for i, a in enumerate(query.aggregates)]
    text = f"SELECT {', '.join(select)} FROM {qualified(dataset)}"
    text += f" WHERE {' AND '.join(where)}" if where else ""
    text += f" GROUP BY {', '.join(quote_ident(c) for c in group)}" if group else ""
    order = [_order_term(sql, i, o, outputs if grouping else None) for i, o in enumerate(query.order_by)]
    order = order or [str(plain.index(g) + 1) for g in group if g in plain]  # pages of groups: a stable order
    text += f" ORDER BY {', '.join(order)}" if order else ""
    text += f" LIMIT {sql.bind(query.limit)} OFFSET {sql.bind(query.offset)}"
    return text, sql.params


def _where(sql: _Sql, query: StructuredQuery, time_column: str | None, connection_id: ConnectionId | None) -> list[str]:
    where = []
    if connection_id is not None:
        problem = kind_mismatch(sql.dataset, sql.columns[sql.column("connection_id", CONNECTION_COLUMN)],
                                connection_id)
        if problem:
            raise SpecError("connection_id", problem)
        value = connection_id if sql.kind(CONNECTION_COLUMN) == "int" else str(connection_id)
        where.append(f"{quote_ident(CONNECTION_COLUMN)} = {sql.value('connection_id', CONNECTION_COLUMN, value)}")
    if query.time_range is not None:
        if time_column is None or time_column not in sql.columns:
            raise SpecError("time_range", f"dataset {sql.dataset} has no time column")
        bounds = ((">=", query.time_range.from_, "time_range.from"), ("<", query.time_range.to, "time_range.to"))
        where += [f"{quote_ident(time_column)} {op} {sql.value(path, time_column, value.isoformat())}"
                  for op, value, path in bounds if value is not None]
    return where + [_condition(sql, f"filters[{i}]", f) for i, f in enumerate(query.filters)]


def _condition(sql: _Sql, path: str, rule: Filter) -> str:
    name = sql.column(f"{path}.column", rule.column)
    kind = sql.kind(name)
    # a type DuckDB may not compare with text (json, arrays, ...), or text matching on a number: read as text
    as_text = kind == "other" or (rule.op in _TEXT_OPS and kind != "text")
    column = f"CAST({quote_ident(name)} AS VARCHAR)" if as_text else quote_ident(name)
    if rule.op in ("is_null", "not_null"):
        return f"{column} IS {'NOT ' if rule.op == 'not_null' else ''}NULL"
    if rule.op in _TEXT_OPS:
        if not isinstance(rule.value, str):
            raise SpecError(f"{path}.value", f"{rule.op} takes text")
        pattern = sql.bind(rule.value)
        return {"like": f"{column} LIKE {pattern}", "contains": f"contains({column}, {pattern})",
                "starts_with": f"starts_with({column}, {pattern})"}[rule.op]
    if rule.op in _COMPARE:
        return f"{column} {_COMPARE[rule.op]} {sql.value(f'{path}.value', name, rule.value)}"
    bound = [sql.value(f"{path}.values[{j}]", name, v) for j, v in enumerate(rule.values or [])]
    if rule.op == "between":
        return f"{column} BETWEEN {bound[0]} AND {bound[1]}"
    return f"{column} {'NOT ' if rule.op == 'not_in' else ''}IN ({', '.join(bound)})"


def _order_term(sql: _Sql, i: int, order: OrderBy, outputs: list[str] | None) -> str:
    direction = " DESC" if order.desc else ""
    if outputs is None:  # rows: any column of the dataset
        return quote_ident(sql.column(f"order_by[{i}].column", order.column)) + direction
    if order.column not in outputs:  # by position: an aggregate named like a column is never ambiguous
        raise SpecError(f"order_by[{i}].column", f"{order.column!r} is not an output column: {', '.join(outputs)}")
    return f"{outputs.index(order.column) + 1}{direction}"


class _Sql:
    """The dataset's columns and the parameters bound so far."""

    def __init__(self, dataset: str, columns: Mapping[str, str]) -> None:
        self.dataset, self.columns = dataset, dict(columns)
        self.params: list[Any] = []

    def bind(self, value: Any) -> str:
        self.params.append(value)
        return f"${len(self.params)}"

    def column(self, path: str, name: str) -> str:
        if name in self.columns:
            return name
        close = difflib.get_close_matches(name, list(self.columns), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SpecError(path, f"no column {name!r} in {self.dataset}{hint}")

    def kind(self, name: str) -> str:  # how a value for the column is read
        pg = self.columns[name]
        return "decimal" if pg.startswith("numeric") else "text" if pg.startswith("character") else \
            _KINDS.get(pg, "other")

    def value(self, path: str, name: str, value: Any) -> str:
        """``$n`` bound to ``value`` read as the column's type (a value it cannot be is a SpecError)."""
        try:
            return self.bind(_as_kind(value, self.kind(name)))
        except (ValueError, TypeError, KeyError, InvalidOperation):
            raise SpecError(path, f"{repr(value)[:80]} is not a {self.columns[name]} (column {name})") from None

    def aggregate(self, path: str, agg: Aggregate) -> str:
        if agg.column is None:
            return "count(*)"
        name = quote_ident(self.column(f"{path}.column", agg.column))
        kind = self.kind(agg.column)
        if agg.fn in ("sum", "avg") and kind not in _NUMERIC:
            raise SpecError(f"{path}.fn", f"{agg.fn} needs a number; {agg.column} is {self.columns[agg.column]}")
        if agg.fn == "sum" and kind == "int":  # a HUGEINT in DuckDB; a BIGINT is a plain number everywhere
            return f"CAST(sum({name}) AS BIGINT)"
        return f"count(DISTINCT {name})" if agg.fn == "count_distinct" else f"{agg.fn}({name})"


def _as_kind(value: Any, kind: str) -> Any:
    """The Python value DuckDB binds for a column of ``kind``; a ValueError/TypeError if ``value`` is not one."""
    if isinstance(value, bool) != (kind == "bool") and not isinstance(value, str) or value is None:
        raise TypeError(kind)
    if kind == "int":
        number = int(value) if isinstance(value, int) or re.fullmatch(r"[+-]?\d{1,19}", str(value)) else 2**63
        if not -(2**63) <= number < 2**63:
            raise ValueError(kind)
        return number
    if kind in ("float", "decimal"):
        return float(value) if kind == "float" else Decimal(str(value))
    if kind == "bool":
        return value if isinstance(value, bool) else {"true": True, "false": False}[value.lower()]
    if not isinstance(value, str):
        raise TypeError(kind)
    if kind == "date":
        return _utc(dt.datetime.fromisoformat(value)).date()  # "2024-01-01" or a time on that day (UTC)
    if kind in ("timestamp", "timestamptz"):
        moment = _utc(dt.datetime.fromisoformat(value))
        return moment if kind == "timestamptz" else moment.replace(tzinfo=None)
    return uuid.UUID(value) if kind == "uuid" else value


def _utc(moment: dt.datetime) -> dt.datetime:  # a time without a zone is UTC
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)
