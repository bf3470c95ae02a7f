"""The second reader for legacy ``.xls`` (BIFF2-8): xlrd, used by the sandboxed worker when calamine fails.

calamine reads BIFF5/8 in a compound file only, and gives up on a record it cannot parse; xlrd (pure Python,
kept for exactly these files) also reads the raw BIFF2-4 streams of Excel 2.x-4.0 and skips what it does not
know. Loaded by file from ``excel_worker`` (in the child process): it must not import the engine.
"""

from __future__ import annotations

import io
import re
from typing import Any

import pyarrow as pa

__all__ = ["biff_version", "read_sheet", "sheet_names"]

_CFB = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
#: a raw BIFF stream starts with its BOF record, whose opcode names the version
_BOF = {
    b"\x09\x00": "BIFF2 (Excel 2.x)", b"\x09\x02": "BIFF3 (Excel 3.0)", b"\x09\x04": "BIFF4 (Excel 4.0)",
    b"\x09\x08": "BIFF5-8 (a bare stream)",
}
#: BIFF error codes, as Excel shows them
_ERRORS = {0x00: "#NULL!", 0x07: "#DIV/0!", 0x0F: "#VALUE!", 0x17: "#REF!", 0x1D: "#NAME?", 0x24: "#NUM!",
           0x2A: "#N/A"}
_DETECT_ROWS = 50
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
# xlrd's cell types
_TEXT, _NUMBER_CELL, _DATE, _BOOLEAN, _ERROR = 1, 2, 3, 4, 5


def biff_version(path: str) -> str | None:
    """The BIFF version the file claims (``"BIFF2 (Excel 2.x)"``), or None if it is not a BIFF .xls."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head == _CFB:
        return "BIFF5-8 (Excel 5.0-2003)"
    return _BOF.get(head[:2])


def _open(path: str) -> Any:
    import xlrd

    return xlrd.open_workbook(path, on_demand=True, logfile=io.StringIO())


def sheet_names(path: str) -> tuple[list[str], list[str]]:
    """The worksheets, and the hidden ones among them."""
    book = _open(path)
    try:
        names = list(book.sheet_names())
        return names, [n for n, v in zip(names, book._sheet_visibility, strict=False) if v]
    finally:
        book.release_resources()


def read_sheet(
    path: str, sheet: str, *, header_row: int | None, skip_rows: int
) -> tuple[list[str], pa.RecordBatch, list[list[Any]], int]:
    """The header cells ('' for blanks), the data rows as one batch, the error cells ``[data row, column
    index, "#N/A"]``, and the header row used (found as in ``excel_worker`` when ``header_row`` is None).
    A sheet that is not there raises ``LookupError``."""
    book = _open(path)
    try:
        if sheet not in book.sheet_names():
            raise LookupError(sheet)
        ws = book.sheet_by_name(sheet)
        rows = [ws.row(r) for r in range(ws.nrows)]
        datemode = book.datemode
    finally:
        book.release_resources()
    if header_row is None:
        header_row = _detect_header(rows)
    width = max((len(r) for r in rows), default=0)
    header = rows[header_row] if header_row < len(rows) else []
    names = [_text(header[c]) if c < len(header) else "" for c in range(width)]
    body = rows[header_row + 1 + skip_rows:]
    columns: list[pa.Array] = []
    errors: list[list[Any]] = []
    for c in range(width):
        values = []
        for i, row in enumerate(body):
            cell = row[c] if c < len(row) else None
            if cell is not None and cell.ctype == _ERROR:
                errors.append([i, c, _ERRORS.get(cell.value, f"#ERROR{cell.value}")])
            values.append(_value(cell, datemode))
        columns.append(_column(values))
    batch = pa.record_batch(columns, names=[f"c{i}" for i in range(width)]) if width else None
    return names, batch if batch is not None else pa.record_batch([], schema=pa.schema([])), errors, header_row


def _text(cell: Any) -> str:
    if cell.ctype == _NUMBER_CELL and float(cell.value).is_integer():
        return str(int(cell.value))
    return "" if cell.value is None else str(cell.value)


def _value(cell: Any, datemode: int) -> Any:
    if cell is None:
        return None
    if cell.ctype == _TEXT:
        return cell.value if cell.value != "" else None
    if cell.ctype == _NUMBER_CELL:
        return float(cell.value)
    if cell.ctype == _DATE:
        import xlrd

        return xlrd.xldate.xldate_as_datetime(cell.value, datemode)
    if cell.ctype == _BOOLEAN:
        return bool(cell.value)
    return None  # empty, blank, error


def _column(values: list[Any]) -> pa.Array:
    """One type when every value has it (numbers are floats, as calamine gives them), else text."""
    kinds = {type(v) for v in values if v is not None}
    if len(kinds) <= 1:
        return pa.array(values, type=None if kinds else pa.string())
    return pa.array([None if v is None else str(v) for v in values], type=pa.string())


def _detect_header(rows: list[list[Any]]) -> int:
    best, widest = 0, 0
    for i, row in enumerate(rows[:_DETECT_ROWS]):
        filled = [c for c in row if c.ctype in (_TEXT, _NUMBER_CELL, _DATE, _BOOLEAN) and str(c.value).strip()]
        numeric = any(c.ctype == _NUMBER_CELL or _NUMBER.fullmatch(str(c.value).strip()) for c in filled)
        if len(filled) > widest and not numeric:
            best, widest = i, len(filled)
    return best

