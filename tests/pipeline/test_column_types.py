"""The PostgreSQL type each column gets, and values that come back as they went in: every loadable Arrow type,
and integers too wide for bigint.

A test marked 'Regression (review fix N)' reproduces one defect reported in the review (commit
"Review fixes: replace scoped to the connection, ..."): it must fail if that fix is undone."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl

import engine
from tests.support import Sql, accounted, column_types


def test_every_loadable_type_round_trips(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    from decimal import Decimal

    frame = pl.DataFrame({
        "ts": [dt.datetime(2024, 1, 1, 1, 2, 3, 456789)],
        "b": [True], "i8": pl.Series([-5], dtype=pl.Int8), "u8": pl.Series([250], dtype=pl.UInt8),
        "u16": pl.Series([65000], dtype=pl.UInt16), "i32": pl.Series([-70000], dtype=pl.Int32),
        "u32": pl.Series([4_000_000_000], dtype=pl.UInt32), "i64": [2**62],
        "f32": pl.Series([1.5], dtype=pl.Float32), "f64": [2.25],
        "dec": pl.Series([Decimal("1234.56")], dtype=pl.Decimal(12, 2)), "s": ["ñ€"], "bin": [b"\x00\xff"],
        "d": [dt.date(2024, 2, 29)],
        "tz": pl.Series([dt.datetime(2024, 1, 1, 12)]).dt.replace_time_zone("Europe/Madrid"),
        "t": [dt.time(13, 14, 15, 123456)], "l": [[1, 2]], "st": [{"a": 1}],
        "cat": pl.Series(["x"], dtype=pl.Categorical), "nul": pl.Series([None], dtype=pl.Null),
    })
    first, second = tmp_path / "a.parquet", tmp_path / "b.parquet"
    frame.write_parquet(first)
    # other bytes, the same shape (identical bytes would be the file already loaded, whatever its name)
    frame.with_columns(pl.lit(2**61).alias("i64")).write_parquet(second)
    engine.load(first, into=table, partition_by="ts", dsn=pg_dsn)
    types = sql("SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                "WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 ORDER BY a.attnum", [f'"{table}"'])
    assert dict(types) == {
        "connection_id": "bigint", "ts": "timestamp without time zone", "b": "boolean", "i8": "smallint",
        "u8": "smallint", "u16": "integer", "i32": "integer", "u32": "bigint", "i64": "bigint", "f32": "real",
        "f64": "double precision", "dec": "numeric(12,2)", "s": "text", "bin": "bytea", "d": "date",
        "tz": "timestamp with time zone", "t": "time without time zone", "l": "text", "st": "text",
        "cat": "text", "nul": "text",
    }
    (row,) = sql(f'SELECT ts, b, i8, u8, u16, i32, u32, i64, f32, f64, dec::text, s, bin, d, tz, t, l, st, '
                 f'cat, nul FROM "{table}"')
    assert row == (dt.datetime(2024, 1, 1, 1, 2, 3, 456789), True, -5, 250, 65000, -70000, 4_000_000_000,
                   2**62, 1.5, 2.25, "1234.56", "ñ€", b"\x00\xff", dt.date(2024, 2, 29),
                   dt.datetime(2024, 1, 1, 11, tzinfo=dt.UTC), dt.time(13, 14, 15, 123456), "[1,2]",
                   '{"a":1}', "x", None)
    report = engine.load(second, into=table, partition_by="ts", dsn=pg_dsn)  # same shape: no drift at all
    assert (report.rows_loaded, report.columns_added, report.columns_widened) == (1, [], [])


# Regression (review fix 7): 20+ digit integers.
def test_csv_20_to_23_digit_integers_load_as_numeric(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    values = ["12345678901234567890123", "99999999999999999999", "-12345678901234567890", "9223372036854775808",
              "1"]
    path = tmp_path / "big.csv"
    path.write_text("day,big\n" + "".join(f"2024-01-0{i + 1},{v}\n" for i, v in enumerate(values)))
    report = engine.load(path, into=table, dsn=pg_dsn)
    accounted(report)
    assert (report.rows_loaded, report.rows_quarantined) == (5, 0)
    assert column_types(sql, table)["big"] == "numeric(38,0)"
    assert [r[0] for r in sql(f'SELECT big::text FROM "{table}" ORDER BY day')] == values


def test_excel_whole_numbers_and_parsed_decimals_get_their_types(tmp_path: Path, pg_dsn: str, table: str,
                                                                 sql: Sql) -> None:
    """An xlsx id column (stored as floats) becomes a bigint merge key, and a Spanish amount parsed into
    decimal(12,2) becomes numeric(12,2), values exact."""
    import xlsxwriter

    path = tmp_path / "pedidos.xlsx"
    with xlsxwriter.Workbook(str(path)) as book:
        sheet = book.add_worksheet("S")
        for r, row in enumerate([["id", "importe", "peso"], [1, "1.234,56", 2.5], [2, "-0,10", 3]]):
            for c, value in enumerate(row):
                sheet.write(r, c, value)
    spec = {"steps": [{"parse_number": {"column": "importe", "decimal": ",", "thousands": ".",
                                        "type": "decimal(12,2)"}}]}
    report = engine.load(path, into=table, mode="merge", key="id", spec=spec, dsn=pg_dsn)
    assert report.rows_loaded == 2
    types = column_types(sql, table)
    assert (types["id"], types["importe"], types["peso"]) == ("bigint", "numeric(12,2)", "double precision")
    assert sql(f'SELECT id, importe::text FROM "{table}" ORDER BY id') == [(1, "1234.56"), (2, "-0.10")]
