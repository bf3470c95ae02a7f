"""A business workbook loads end to end: formula errors quarantine their row with a reason naming the error
and the column, blank rows are counted as filtered, a mixed column lands as text."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

import engine
from tests.support import Sql, accounted, quarantine_rows

xlsxwriter = pytest.importorskip("xlsxwriter")


def test_cell_errors_blank_rows_and_mixed_columns_load(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    path = tmp_path / "sales.xlsx"
    book = xlsxwriter.Workbook(str(path))
    sheet = book.add_worksheet("sales")
    sheet.write_row(0, 0, ["id", "ratio", "due"])
    sheet.write_row(1, 0, [1, 0.5])
    sheet.write_datetime(1, 2, dt.datetime(2024, 1, 2), book.add_format({"num_format": "yyyy-mm-dd"}))
    sheet.write(2, 0, 2)
    sheet.write_formula(2, 1, "=1/0", None, "#DIV/0!")
    sheet.write(2, 2, "later")
    sheet.write_row(4, 0, [3, 1.5, "soon"])  # row 4 is blank
    book.close()
    report = engine.load(path, into=table, dsn=pg_dsn)
    accounted(report)
    assert (report.rows_in, report.rows_loaded, report.rows_quarantined, report.rows_filtered) == (4, 2, 1, 1)
    (bad,) = quarantine_rows(sql, table)
    assert (bad["rule"], bad["column"], bad["row_number"]) == ("cell_error", "ratio", 3)
    assert bad["reason"] == "cell error #DIV/0! in column ratio"
    assert sql(f'SELECT id, ratio, due FROM "{table}" ORDER BY id') == [
        (1, 0.5, "2024-01-02 00:00:00"), (3, 1.5, "soon")
    ]


def test_a_titled_report_loads_with_header_row_auto_and_charts_are_noted(tmp_path: Path, pg_dsn: str, table: str,
                                                                         sql: Sql) -> None:
    openpyxl = pytest.importorskip("openpyxl")
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "report"
    for row in (["Sales by region"], [], ["id", "region", "amount"], ["", "", "EUR"], [1, "North", 2.5],
                [2, "South", 4]):
        sheet.append(row)
    chart = openpyxl.chart.BarChart()
    chart.add_data(openpyxl.chart.Reference(sheet, min_col=3, min_row=5, max_row=6))
    book.create_chartsheet("Chart").add_chart(chart)
    path = tmp_path / "report.xlsx"
    book.save(path)
    report = engine.load(path, into=table, dsn=pg_dsn, sheet="*", options={"header_row": "auto", "skip_rows": 1})
    accounted(report)
    assert (report.rows_loaded, report.source_partitions) == (2, 1)
    assert report.notes == ["report.xlsx[Chart]: sheet skipped (chart sheet)"]
    assert sql(f'SELECT id, region, amount FROM "{table}" ORDER BY id') == [(1, "North", 2.5), (2, "South", 4.0)]
