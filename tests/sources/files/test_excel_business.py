"""ExcelSource on workbooks as businesses make them: one odd cell or row never refuses the whole workbook.

Formula errors quarantine their row, mixed-type columns read as text, blank and formatted-but-empty rows
are filtered (counted, not loaded). Workbooks are written here: xlsxwriter caches formula error values,
openpyxl writes error cells and styled empty rows.
"""

from __future__ import annotations

import datetime as dt
import struct
import zipfile
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from engine.errors import SourceError, SpecError
from engine.plan.columns import DROP_COLUMN, REJECT_PREFIX, ROW_COLUMN
from engine.sources.files.excel import ExcelSource

xlsxwriter = pytest.importorskip("xlsxwriter")
openpyxl = pytest.importorskip("openpyxl")
pytest.importorskip("openpyxl.chart")


def collect(source: ExcelSource, index: int = 0) -> pl.DataFrame:
    return source.scan(source.partitions()[index]).collect()


def reasons(frame: pl.DataFrame) -> dict[int, list[str]]:
    """Spreadsheet row -> the reject reasons the source gave it."""
    rejects = [c for c in frame.columns if c.startswith(REJECT_PREFIX)]
    out: dict[int, list[str]] = {}
    for row in frame.select(ROW_COLUMN, *rejects).iter_rows():
        found = [r for r in row[1:] if r is not None]
        if found:
            out[row[0]] = found
    return out


def kept(frame: pl.DataFrame) -> list[int]:
    """Spreadsheet rows not filtered by the source."""
    if DROP_COLUMN not in frame.columns:
        return frame[ROW_COLUMN].to_list()
    return frame.filter(~pl.col(DROP_COLUMN))[ROW_COLUMN].to_list()


def cached_errors_xlsx(path: Path) -> Path:
    """Formulas whose cached values are errors, as Excel saves them."""
    book = xlsxwriter.Workbook(str(path))
    sheet = book.add_worksheet("s")
    sheet.write_row(0, 0, ["id", "ratio", "name"])
    sheet.write_row(1, 0, [1, 0.5, "a"])
    sheet.write(2, 0, 2)
    sheet.write_formula(2, 1, "=1/0", None, "#DIV/0!")
    sheet.write(2, 2, "b")
    sheet.write(3, 0, 3)
    sheet.write(3, 1, 1.5)
    sheet.write_formula(3, 2, "=VLOOKUP(9,A1:A2,1,FALSE)", None, "#N/A")
    sheet.write_row(4, 0, [4, 2.5, "d"])
    book.close()
    return path


def test_formula_errors_quarantine_their_row_not_the_workbook(tmp_path: Path) -> None:
    frame = collect(ExcelSource(paths=(cached_errors_xlsx(tmp_path / "errors.xlsx"),)))
    assert frame.select("id", "ratio", "name").rows() == [
        (1.0, 0.5, "a"), (2.0, None, "b"), (3.0, 1.5, None), (4.0, 2.5, "d")
    ]
    assert reasons(frame) == {3: ["cell error #DIV/0! in column ratio"], 4: ["cell error #N/A in column name"]}


def test_error_cells_of_every_kind_even_a_column_of_only_errors(tmp_path: Path) -> None:
    """openpyxl error cells; a column holding nothing but errors once refused the workbook."""
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "s"
    for row in (["id", "v", "only_errors"], [1, "#REF!", "#NAME?"], [2, "#VALUE!", "#NULL!"], [3, 7, "#NUM!"]):
        sheet.append(row)
    for cell in ("B2", "C2", "B3", "C3", "C4"):
        sheet[cell].data_type = "e"
    path = tmp_path / "kinds.xlsx"
    book.save(path)
    frame = collect(ExcelSource(paths=(path,)))
    assert frame["only_errors"].to_list() == [None, None, None]
    assert reasons(frame) == {
        2: ["cell error #REF! in column v", "cell error #NAME? in column only_errors"],
        3: ["cell error #VALUE! in column v", "cell error #NULL! in column only_errors"],
        4: ["cell error #NUM! in column only_errors"],
    }


def test_cell_errors_keep_keeps_the_row_with_the_cell_null(tmp_path: Path) -> None:
    source = ExcelSource(paths=(cached_errors_xlsx(tmp_path / "errors.xlsx"),), cell_errors="keep")
    frame = collect(source)
    assert reasons(frame) == {}
    assert frame["ratio"].to_list() == [0.5, None, 1.5, 2.5]
    with pytest.raises(SpecError, match="cell_errors"):
        ExcelSource(paths=(Path("x.xlsx"),), cell_errors="drop")  # type: ignore[arg-type]


def test_mixed_type_columns_read_as_text(tmp_path: Path) -> None:
    """Dates with text, or dates with durations, in one column once refused the whole workbook."""
    book = xlsxwriter.Workbook(str(tmp_path / "mixed.xlsx"))
    sheet = book.add_worksheet("s")
    day = book.add_format({"num_format": "yyyy-mm-dd"})
    sheet.write_row(0, 0, ["id", "due", "spent", "n"])
    sheet.write_row(1, 0, [1])
    sheet.write_datetime(1, 1, dt.datetime(2024, 1, 2), day)
    sheet.write_datetime(1, 2, dt.datetime(2024, 1, 3), day)
    sheet.write(1, 3, 5)
    sheet.write_row(2, 0, [2, "next week"])
    sheet.write_datetime(2, 2, dt.timedelta(hours=5), book.add_format({"num_format": "[h]:mm"}))
    sheet.write(2, 3, "five")
    book.close()
    frame = collect(ExcelSource(paths=(tmp_path / "mixed.xlsx",)))
    assert frame.schema["due"] == pl.String and frame.schema["spent"] == pl.String
    assert frame["due"].to_list() == ["2024-01-02 00:00:00", "next week"]
    assert frame["n"].to_list() == ["5", "five"]
    assert frame["id"].to_list() == [1.0, 2.0]


def test_blank_and_formatted_empty_rows_are_filtered_not_loaded(tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "s"
    for row in (["id", "name"], [1, "a"], [None, None], [2, "b"]):
        sheet.append(row)
    bold = openpyxl.styles.Font(bold=True)
    for r in range(5, 40):  # formatted but empty: Excel saves these when a whole range was styled
        for c in (1, 2):
            sheet.cell(row=r, column=c).font = bold
    path = tmp_path / "styled.xlsx"
    book.save(path)
    frame = collect(ExcelSource(paths=(path,)))
    assert kept(frame) == [2, 4]
    assert frame.filter(~pl.col(DROP_COLUMN)).select("id", "name").rows() == [(1.0, "a"), (2.0, "b")]


def test_a_row_of_only_error_cells_is_quarantined_not_filtered(tmp_path: Path) -> None:
    book = xlsxwriter.Workbook(str(tmp_path / "e.xlsx"))
    sheet = book.add_worksheet("s")
    sheet.write_row(0, 0, ["a", "b"])
    sheet.write_row(1, 0, [1, 2])
    sheet.write_formula(2, 0, "=1/0", None, "#DIV/0!")
    sheet.write_formula(2, 1, "=1/0", None, "#DIV/0!")
    sheet.write_row(4, 0, [3, 4])
    book.close()
    frame = collect(ExcelSource(paths=(tmp_path / "e.xlsx",)))
    assert kept(frame) == [2, 3, 5]
    assert list(reasons(frame)) == [3]


def test_star_skips_chart_sheets_and_says_so(tmp_path: Path) -> None:
    """A chart sheet once failed a ``--sheet '*'`` load; hidden sheets load unless ``skip_hidden``."""
    book = openpyxl.Workbook()
    data = book.active
    data.title = "data"
    for row in (["k", "v"], ["a", 1], ["b", 2]):
        data.append(row)
    secret = book.create_sheet("secret")
    secret.append(["k"])
    secret.append(["x"])
    secret.sheet_state = "hidden"
    chart = openpyxl.chart.BarChart()
    chart.add_data(openpyxl.chart.Reference(data, min_col=2, min_row=1, max_row=3))
    book.create_chartsheet("Chart1").add_chart(chart)
    path = tmp_path / "charts.xlsx"
    book.save(path)

    source = ExcelSource(paths=(path,), sheets="*")
    assert [p.label for p in source.partitions()] == ["charts.xlsx[data]", "charts.xlsx[secret]"]
    assert source.notes() == ["charts.xlsx[Chart1]: sheet skipped (chart sheet)"]
    hiding = ExcelSource(paths=(path,), sheets="*", skip_hidden=True)
    assert [p.label for p in hiding.partitions()] == ["charts.xlsx[data]"]
    assert "charts.xlsx[secret]: sheet skipped (hidden, and skip_hidden is set)" in hiding.notes()
    with pytest.raises(SourceError, match="'Chart1' is a chart sheet, not a worksheet"):
        ExcelSource(paths=(path,), sheets="Chart1").partitions()


def test_a_column_of_dates_and_durations_is_named_in_the_notes(tmp_path: Path) -> None:
    book = xlsxwriter.Workbook(str(tmp_path / "m.xlsx"))
    sheet = book.add_worksheet("s")
    sheet.write_row(0, 0, ["due"])
    sheet.write_datetime(1, 0, dt.datetime(2024, 1, 2), book.add_format({"num_format": "yyyy-mm-dd"}))
    sheet.write_datetime(2, 0, dt.timedelta(hours=5), book.add_format({"num_format": "[h]:mm"}))
    book.close()
    source = ExcelSource(paths=(tmp_path / "m.xlsx",))
    collect(source)
    assert source.notes() == [
        "m.xlsx[s]: column(s) 'due' read as text (mixed types: dates, durations, numbers, text)"
    ]


def titled_report(path: Path) -> Path:
    book = xlsxwriter.Workbook(str(path))
    sheet = book.add_worksheet("S")
    rows: list[list[object]] = [
        ["Monthly report"],  # row 1: a title
        [],  # row 2
        ["Region: North", None, "printed 2024-05-01"],  # row 3: fewer cells than the header
        ["id", "name", "amount"],  # row 4: the header
        ["", "", "EUR"],  # row 5: units
        [1, "a", 2.5],  # row 6
        [2, "b", 3],  # row 7
    ]
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            if value is not None:
                sheet.write(r, c, value)
    book.close()
    return path


def test_a_table_below_title_rows_with_header_row_and_skip_rows(tmp_path: Path) -> None:
    path = titled_report(tmp_path / "report.xlsx")
    frame = collect(ExcelSource(paths=(path,), header_row=3, skip_rows=1))
    assert frame.select("id", "name", "amount", ROW_COLUMN).rows() == [(1.0, "a", 2.5, 6), (2.0, "b", 3.0, 7)]
    with pytest.raises(SpecError, match="skip_rows"):
        ExcelSource(paths=(path,), skip_rows=-1)
    with pytest.raises(SpecError, match="header_row"):
        ExcelSource(paths=(path,), header_row="first")  # type: ignore[arg-type]


def test_header_row_auto_finds_the_header_under_the_titles(tmp_path: Path) -> None:
    path = titled_report(tmp_path / "report.xlsx")
    frame = collect(ExcelSource(paths=(path,), header_row="auto", skip_rows=1))
    assert frame.select("id", "name", "amount", ROW_COLUMN).rows() == [(1.0, "a", 2.5, 6), (2.0, "b", 3.0, 7)]
    plain = collect(ExcelSource(paths=(cached_errors_xlsx(tmp_path / "plain.xlsx"),), header_row="auto"))
    assert plain.columns[:3] == ["id", "ratio", "name"] and plain[ROW_COLUMN].to_list()[0] == 2


def test_a_password_protected_workbook_says_so(tmp_path: Path) -> None:
    """Not "truncated, corrupt, or not this format?": the file is fine, it is encrypted."""
    ooxml = pytest.importorskip("msoffcrypto.format.ooxml")
    plain = cached_errors_xlsx(tmp_path / "plain.xlsx")
    locked = tmp_path / "locked.xlsx"
    with open(plain, "rb") as src, open(locked, "wb") as out:
        ooxml.OOXMLFile(src).encrypt("secret", out)
    with pytest.raises(SourceError, match="password protected") as caught:
        ExcelSource(paths=(locked,)).partitions()
    assert "corrupt" not in str(caught.value)


def _record(opcode: int, data: bytes) -> bytes:
    return struct.pack("<HH", opcode, len(data)) + data


def biff2(rows: list[list[object]]) -> bytes:
    """A raw BIFF2 (Excel 2.x) worksheet stream, written by hand: no writer for it exists any more.

    Records: BOF, DIMENSIONS, NUMBER / LABEL / BOOLERR (an error cell is ``("error", code)``), EOF."""
    out = _record(0x0009, struct.pack("<HH", 0x0002, 0x0010))
    out += _record(0x0000, struct.pack("<HHHH", 0, len(rows), 0, max(len(r) for r in rows)))
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            head = struct.pack("<HH", r, c) + b"\0\0\0"
            if isinstance(value, tuple):
                out += _record(0x0005, head + bytes([value[1], 1]))
            elif isinstance(value, str):
                out += _record(0x0004, head + bytes([len(value)]) + value.encode("latin-1"))
            elif isinstance(value, float | int):
                out += _record(0x0003, head + struct.pack("<d", value))
    return out + _record(0x000A, b"")


def test_a_biff2_xls_is_read_by_the_fallback_reader(tmp_path: Path) -> None:
    """calamine reads BIFF5/8 only ("Invalid OLE ... not an office document?"); xlrd reads Excel 2.x files."""
    pytest.importorskip("xlrd")
    path = tmp_path / "legacy.xls"
    path.write_bytes(biff2([["id", "name", "ratio"], [1, "a", 0.5], [2, "b", ("error", 0x07)], [], [3, "c", 1.5]]))
    source = ExcelSource(paths=(path,))
    frame = collect(source)
    assert frame.filter(~pl.col(DROP_COLUMN)).select("id", "name", "ratio", ROW_COLUMN).rows() == [
        (1.0, "a", 0.5, 2), (2.0, "b", None, 3), (3.0, "c", 1.5, 5)
    ]
    assert reasons(frame) == {3: ["cell error #DIV/0! in column ratio"]}
    assert source.notes() == [
        "legacy.xls: read by the fallback reader (xlrd, BIFF2 (Excel 2.x)): the main one could not"
    ]


def test_an_xls_neither_reader_can_read_names_its_format_version(tmp_path: Path) -> None:
    path = tmp_path / "broken.xls"
    path.write_bytes(_record(0x0009, struct.pack("<HH", 0x0002, 0x0010)) + b"\x03\x00\xff\xff" + b"x" * 10)
    with pytest.raises(SourceError, match=r"cannot read this BIFF2 \(Excel 2\.x\) workbook"):
        ExcelSource(paths=(path,)).partitions()


def write_ods(path: Path, rows: list[list[object]]) -> Path:
    """An .ods sheet "S" written by odfpy; an error cell (``("error", "#DIV/0!")``) is written as LibreOffice
    saves one: a float 0 marked ``calcext:value-type="error"`` with the error as its text."""
    opendocument = pytest.importorskip("odf.opendocument")
    from odf.table import Table, TableCell, TableRow
    from odf.text import P

    doc = opendocument.OpenDocumentSpreadsheet()
    table = Table(name="S")
    for row in rows:
        line = TableRow()
        for value in row:
            if value is None:
                cell = TableCell()
            elif isinstance(value, tuple):
                cell = TableCell(formula="of:=1/0", valuetype="float", value=0)
                cell.setAttrNS(_CALCEXT, "value-type", "error")
                cell.addElement(P(text=str(value[1])))
            elif isinstance(value, str):
                cell = TableCell(valuetype="string")
                cell.addElement(P(text=value))
            else:
                cell = TableCell(valuetype="float", value=value)
                cell.addElement(P(text=str(value)))
            line.addElement(cell)
        table.addElement(line)
    doc.spreadsheet.addElement(table)
    doc.save(str(path))
    return path


_CALCEXT = "urn:org:documentfoundation:names:experimental:calc:xmlns:calcext:1.0"


def test_ods_error_cells_blank_rows_and_title_rows(tmp_path: Path) -> None:
    """calamine reads an .ods error cell as 0: a silent wrong value, now a null and a quarantined row."""
    path = write_ods(tmp_path / "report.ods", [
        ["Report"], [], ["id", "note", "ratio"], [1, "x", 0.5], [None, None, None], [2, 3.5, ("error", "#DIV/0!")],
        [3, "y", 2],
    ])
    frame = collect(ExcelSource(paths=(path,), header_row="auto"))
    assert kept(frame) == [4, 6, 7]
    assert frame.filter(~pl.col(DROP_COLUMN)).select("id", "note", "ratio").rows() == [
        (1.0, "x", 0.5), (2.0, "3.5", None), (3.0, "y", 2.0)
    ]
    assert reasons(frame) == {6: ["cell error #DIV/0! in column ratio"]}


def test_cell_errors_text_keeps_the_error_as_the_value(tmp_path: Path) -> None:
    source = ExcelSource(paths=(cached_errors_xlsx(tmp_path / "errors.xlsx"),), cell_errors="text")
    frame = collect(source)
    assert source.schema().field("ratio").type == pa.large_string()  # the schema says what scan gives
    assert reasons(frame) == {}
    assert frame.select("ratio", "name").rows() == [("0.5", "a"), ("#DIV/0!", "b"), ("1.5", "#N/A"), ("2.5", "d")]


def test_star_skips_macro_and_dialog_sheets_by_their_part_type(tmp_path: Path) -> None:
    """The workbook part's relationship type tells a sheet's kind (the chart workbook relabelled). calamine
    refuses to open a workbook with an Excel 4.0 macro sheet at all: it reads a relabelled copy instead."""
    charts = tmp_path / "charts.xlsx"
    test_star_skips_chart_sheets_and_says_so(tmp_path)  # writes charts.xlsx
    for kind, folder, content, said in (
        ("http://schemas.microsoft.com/office/2006/relationships/xlMacrosheet", "macrosheets",
         "application/vnd.ms-excel.macrosheet+xml", "macro sheet"),
        ("http://schemas.openxmlformats.org/officeDocument/2006/relationships/dialogsheet", "dialogsheets",
         "application/vnd.openxmlformats-officedocument.spreadsheetml.dialogsheet+xml", "dialog sheet"),
    ):
        relabelled = tmp_path / f"{folder}.xlsx"
        with zipfile.ZipFile(charts) as src, zipfile.ZipFile(relabelled, "w") as out:
            for item in src.infolist():
                data = src.read(item.filename).replace(
                    b"http://schemas.openxmlformats.org/officeDocument/2006/relationships/chartsheet", kind.encode())
                data = data.replace(b"/chartsheets/", f"/{folder}/".encode()).replace(
                    b"application/vnd.openxmlformats-officedocument.spreadsheetml.chartsheet+xml", content.encode())
                out.writestr(item.filename.replace("chartsheets/", f"{folder}/"), data)
        source = ExcelSource(paths=(relabelled,), sheets="*")
        assert [p.label for p in source.partitions()] == [f"{folder}.xlsx[data]", f"{folder}.xlsx[secret]"]
        assert source.notes() == [f"{folder}.xlsx[Chart1]: sheet skipped ({said})"]
        assert collect(source).select("k", "v").rows() == [("a", 1.0), ("b", 2.0)]
