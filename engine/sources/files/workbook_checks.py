"""A zipped workbook (.xlsx/.xlsm/.xlsb/.ods) looked at before it is parsed: refused when its own directory says
it inflates past what a sheet parse can hold.

The sandboxed parser is bounded by ``memory_limit_mb`` anyway, but reaches 2-2.6 GB before a zip bomb or a
shared-string bomb kills it. Reading the zip's directory and the first bytes of ``sharedStrings.xml`` costs
milliseconds and no memory, and refuses such files at once. The limits (``BICONIC_EXCEL_*``) sit well above
real workbooks: one sheet of 1,048,576 rows and 12 columns is ~500 MB of XML deflated about 7:1 (the parser
then peaks at ~960 MB); a bomb's XML is deflated 200-1000:1, and 10 million shared strings take ~500 MB.
Declared sizes can lie: a lying file still meets the sandbox's own limit.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

from engine.errors import HostileInputError
from engine.settings import settings

__all__ = ["check_workbook"]

#: members smaller than this are never called bombs, whatever their ratio (tiny XML parts compress well)
_SMALL = 1 << 20
_SST_HEAD = 4096
_COUNT = re.compile(rb"""\buniqueCount\s*=\s*["'](\d+)["']|\bcount\s*=\s*["'](\d+)["']""")


def check_workbook(path: Path, label: str) -> None:
    """Raise :class:`HostileInputError` when one of the zip's members inflates past
    ``BICONIC_EXCEL_MAX_UNZIPPED_MB`` or more than ``BICONIC_EXCEL_MAX_RATIO`` times its packed size, or the
    shared strings declare more than ``BICONIC_EXCEL_MAX_SHARED_STRINGS``. Not a zip (.xls): nothing to do."""
    if not zipfile.is_zipfile(path):
        return
    s = settings()
    try:
        with zipfile.ZipFile(path) as book:
            members = book.infolist()
            biggest = max(members, key=lambda m: m.file_size, default=None)
            if biggest is not None and biggest.file_size > s.excel_max_unzipped_mb << 20:
                raise HostileInputError(label, f"{biggest.filename} inflates to {biggest.file_size >> 20} MiB, "
                                               f"over BICONIC_EXCEL_MAX_UNZIPPED_MB={s.excel_max_unzipped_mb} "
                                               "(a zip bomb? else raise it); refused before parsing")
            for m in members:
                ratio = m.file_size / max(m.compress_size, 1)
                if m.file_size > _SMALL and s.excel_max_ratio and ratio > s.excel_max_ratio:
                    raise HostileInputError(label, f"{m.filename} inflates {ratio:.0f}:1 to {m.file_size >> 20} "
                                                   f"MiB, over BICONIC_EXCEL_MAX_RATIO={s.excel_max_ratio} (a "
                                                   "zip bomb? else raise it); refused before parsing")
            strings = _shared_strings(book)
    except (zipfile.BadZipFile, OSError, EOFError):
        return  # the parser says what is wrong with it, in its own words
    if strings > s.excel_max_shared_strings:
        raise HostileInputError(label, f"the workbook declares {strings:,} shared strings, over "
                                       f"BICONIC_EXCEL_MAX_SHARED_STRINGS={s.excel_max_shared_strings:,} (a "
                                       "shared-string bomb? else raise it); refused before parsing")


def _shared_strings(book: zipfile.ZipFile) -> int:
    """The larger of ``count`` and ``uniqueCount`` on the shared strings' root element (read from its first
    KiB only), 0 when there are none."""
    name = next((n for n in book.namelist() if n.lower().endswith("sharedstrings.xml")), None)
    if name is None:
        return 0
    with book.open(name) as f:
        head = f.read(_SST_HEAD)
    root = head[head.find(b"<sst"):]
    root = root[:root.find(b">") + 1] if b">" in root else root
    found = [int(a or b) for a, b in _COUNT.findall(root)]
    return max(found, default=0)
