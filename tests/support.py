"""What many test modules share: types of the shared fixtures, small data helpers, and the look-ups the load
tests make in PostgreSQL (row counts, children, column types, quarantine rows)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import polars as pl

if TYPE_CHECKING:
    from engine.report import LoadReport

__all__ = ["FIXTURES", "Sql", "accounted", "child_bounds", "column_types", "data_types", "orders_frame",
           "quarantine_rows", "row_count"]

#: the repository's sample files
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

#: the ``sql`` fixture: run one statement on the test database, get its rows
Sql: TypeAlias = Callable[..., list[tuple[Any, ...]]]


def accounted(report: LoadReport) -> None:
    """Every row read was loaded, quarantined or filtered."""
    assert report.rows_in == report.rows_loaded + report.rows_quarantined + report.rows_filtered


def row_count(sql: Sql, table: str) -> int:
    return int(sql(f'SELECT count(*) FROM "{table}"')[0][0])


def child_bounds(sql: Sql, table: str) -> dict[str, str]:
    """child name -> its partition bound, of a partitioned table."""
    rows = sql("SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
               "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass($1) ORDER BY 1",
               [f'"{table}"'])
    return {str(r[0]): str(r[1]) for r in rows}


def data_types(sql: Sql, table: str) -> dict[str, str]:
    """column -> information_schema data type (``numeric``, ``text``...), in table order."""
    rows = sql("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = $1 "
               "ORDER BY ordinal_position", [table])
    return {str(r[0]): str(r[1]) for r in rows}


def column_types(sql: Sql, table: str, schema: str = "public") -> dict[str, str]:
    """column -> format_type (so numeric(38,0) shows its precision), in table order."""
    rows = sql("SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
               "WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
               [f'"{schema}"."{table}"'])
    return {str(r[0]): str(r[1]) for r in rows}


def quarantine_rows(sql: Sql, table: str) -> list[dict[str, Any]]:
    """The table's quarantine rows, by source and row number."""
    rows = sql("SELECT rule, column_name, reason, source, row_number, raw, connection_id, load_id "
               "FROM biconic.quarantine WHERE dataset = $1 ORDER BY source, row_number", [table])
    keys = ["rule", "column", "reason", "source", "row_number", "raw", "connection_id", "load_id"]
    return [dict(zip(keys, r, strict=True)) for r in rows]


def orders_frame(n: int = 30, *, start: dt.date = dt.date(2024, 1, 1), step_days: int = 7) -> pl.DataFrame:
    """``n`` orders at noon, ``step_days`` apart from ``start``, cycling through three cities."""
    return pl.DataFrame({
        "order_id": list(range(1, n + 1)),
        "created_at": [dt.datetime.combine(start + dt.timedelta(days=i * step_days), dt.time(12))
                       for i in range(n)],
        "amount": [round(i * 1.5, 2) for i in range(n)],
        "city": [["Madrid", "Lima", "Bogotá"][i % 3] for i in range(n)],
    })
