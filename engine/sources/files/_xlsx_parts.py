"""What calamine does not tell about an .xlsx/.xlsm's sheets, read from the package's parts.

fastexcel lists a chart sheet as an empty worksheet and does not say which sheets are hidden, and calamine
refuses to open a workbook holding an Excel 4.0 macro sheet. Loaded by file from ``excel_worker`` (in the child
process): it must not import the engine.
"""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

__all__ = ["macro_sheets_relabelled", "sheet_facts"]

#: relationship types of workbook parts that are sheets but not worksheets
_SHEET_KINDS = {
    "chartsheet": "chart sheet", "dialogsheet": "dialog sheet", "xlMacrosheet": "macro sheet",
    "xlIntlMacrosheet": "macro sheet",
}
_MACRO_TYPE = b"http://schemas.microsoft.com/office/2006/relationships/xlMacrosheet"
_INTL_MACRO_TYPE = b"http://schemas.microsoft.com/office/2006/relationships/xlIntlMacrosheet"
_WORKSHEET_TYPE = b"http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet"


def sheet_facts(path: str) -> tuple[dict[str, str], list[str]] | None:
    """Sheet kinds and states from an .xlsx/.xlsm's workbook part (fastexcel lists a chart sheet as an empty
    worksheet); None for other formats."""
    main = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
    rel = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}id"
    try:
        with zipfile.ZipFile(path) as archive:
            book = ET.fromstring(archive.read("xl/workbook.xml"))
            rels = ET.fromstring(archive.read("xl/_rels/workbook.xml.rels"))
    except (zipfile.BadZipFile, KeyError, ET.ParseError):
        return None
    types = {r.get("Id"): str(r.get("Type", "")).rsplit("/", 1)[-1] for r in rels}
    kinds: dict[str, str] = {}
    hidden: list[str] = []
    for sheet in book.iter(f"{main}sheet"):
        name, kind = str(sheet.get("name")), types.get(sheet.get(rel), "worksheet")
        if kind != "worksheet":
            kinds[name] = _SHEET_KINDS.get(kind, f"{kind} sheet")
        if sheet.get("state", "visible") != "visible":
            hidden.append(name)
    return kinds, hidden


def macro_sheets_relabelled(path: str, out: Path) -> str:
    """A copy of the workbook whose Excel 4.0 macro sheets are labelled worksheets: calamine refuses to open a
    workbook that has one ("Unrecognized sheet:type"); the listing, from the original, still skips them."""
    copy = out / "relabelled.xlsx"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(copy, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            if item.filename == "xl/_rels/workbook.xml.rels":
                rels = src.read(item).replace(_MACRO_TYPE, _WORKSHEET_TYPE).replace(_INTL_MACRO_TYPE, _WORKSHEET_TYPE)
                dst.writestr(item.filename, rels)
                continue
            with src.open(item) as reader, dst.open(item.filename, "w") as writer:
                shutil.copyfileobj(reader, writer)
    return str(copy)
