"""The error cells of an OpenDocument sheet, which calamine reads as the number 0.

LibreOffice saves ``=1/0`` as ``office:value-type="float" office:value="0" calcext:value-type="error"`` with
``#DIV/0!`` as its text; calamine keeps the 0, a silent wrong value. This streams ``content.xml`` once to find
those cells. Loaded by file from ``excel_worker`` (in the child process): it must not import the engine.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator
from typing import Any

__all__ = ["error_cells"]

_TABLE = "{urn:oasis:names:tc:opendocument:xmlns:table:1.0}"
_CALC = "{urn:org:documentfoundation:names:experimental:calc:xmlns:calcext:1.0}value-type"
_CELLS = (f"{_TABLE}table-cell", f"{_TABLE}covered-table-cell")


def error_cells(path: str, sheet: str) -> list[tuple[int, int, str]]:
    """``(row, column, "#DIV/0!")`` for each error cell of ``sheet``, 0-based from A1; [] if not an .ods."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        return []
    with archive, archive.open("content.xml") as content:
        return _scan(ET.iterparse(content, events=("start", "end")), sheet)


def _scan(events: Iterator[tuple[str, Any]], sheet: str) -> list[tuple[int, int, str]]:
    out: list[tuple[int, int, str]] = []
    in_sheet, row, col = False, 0, 0
    pending: list[tuple[int, str]] = []  # this row's error cells, repeated with the row
    for event, element in events:
        tag = element.tag
        if event == "start":
            if tag == f"{_TABLE}table":
                in_sheet, row = element.get(f"{_TABLE}name") == sheet, 0
            elif tag == f"{_TABLE}table-row":
                col, pending = 0, []
            continue
        if tag in _CELLS:
            repeat = int(element.get(f"{_TABLE}number-columns-repeated", "1"))
            if in_sheet and element.get(_CALC) == "error":
                text = "".join(element.itertext()).strip() or "#ERROR"
                pending.extend((col + k, text) for k in range(repeat))
            col += repeat
            element.clear()
        elif tag == f"{_TABLE}table-row":
            repeat = int(element.get(f"{_TABLE}number-rows-repeated", "1"))
            if in_sheet:
                out.extend((row + k, c, text) for k in range(repeat) for c, text in pending)
            row += repeat
            element.clear()
        elif tag == f"{_TABLE}table" and in_sheet:
            break
    return out
