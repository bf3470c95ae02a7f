"""ExcelSource: sheet selection, headers, types and row numbers, other formats, and hostile workbooks.

Workbooks are written with xlsxwriter into tmp_path; .xls/.ods/.xlsb come from fixtures/excel/ (no PyPI
writer is needed at test time). Hostile ones are built by hand: a zip bomb of 2 GiB of sheet XML in ~4 MB.
"""

from __future__ import annotations

import datetime as dt
import struct
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
import xxhash

from engine.errors import HostileInputError, SourceError, SpecError
from engine.plan.columns import DROP_COLUMN, ROW_COLUMN
from engine.sources.base import Source, file_fingerprint
from engine.sources.files.excel import ExcelSource
from tests.support import FIXTURES as SAMPLES

xlsxwriter = pytest.importorskip("xlsxwriter")

Rows = Sequence[Sequence[object]]

FIXTURES = SAMPLES / "excel"
ORDERS: list[list[object]] = [
    ["order_id", "customer", "amount", "ordered_on", "paid"],
    [1, "Ana", 10.5, dt.date(2024, 1, 2), True],
    [2, "Bruno", 20.25, dt.date(2024, 1, 3), False],
    [3, "Chloé", 0.0, dt.date(2024, 2, 29), True],
    [4, "Dmitri", 1234.5, dt.date(2024, 12, 31), False],
]


def write_xlsx(path: Path, sheets: Mapping[str, Rows]) -> Path:
    """A workbook with one sheet per entry; ``None`` leaves a cell empty, dates get a date format."""
    book = xlsxwriter.Workbook(str(path))
    date_format = book.add_format({"num_format": "yyyy-mm-dd"})
    for name, rows in sheets.items():
        sheet = book.add_worksheet(name)
        for r, row in enumerate(rows):
            for c, value in enumerate(row):
                if isinstance(value, dt.date):
                    sheet.write_datetime(r, c, value, date_format)
                elif value is not None:
                    sheet.write(r, c, value)
    book.close()
    return path


def collect(source: ExcelSource, index: int = 0) -> pl.DataFrame:
    return source.scan(source.partitions()[index]).collect()


# -- reading -------------------------------------------------------------------------------------------


def test_one_sheet_gives_columns_types_and_spreadsheet_rows(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "orders.xlsx", {"Orders": ORDERS})
    source = ExcelSource(paths=(path,))
    assert isinstance(source, Source)

    [part] = source.partitions()
    # keyed by the workbook's bytes and the sheet; known also by the key of releases before content hashing
    assert part.key == f"{part.fingerprint}[Orders]"
    assert part.label == "orders.xlsx[Orders]"
    assert part.fingerprint == xxhash.xxh3_128(path.read_bytes()).hexdigest()
    assert part.former == ((f"{path}#Orders", file_fingerprint(path, "Orders")),)
    assert part.size_bytes == path.stat().st_size
    assert part.options == {"sheet": "Orders"}

    frame = source.scan(part).collect()
    assert frame.columns == ["order_id", "customer", "amount", "ordered_on", "paid", ROW_COLUMN]
    assert frame.schema[ROW_COLUMN] == pl.Int64
    assert frame[ROW_COLUMN].to_list() == [2, 3, 4, 5]
    assert frame["customer"].to_list() == ["Ana", "Bruno", "Chloé", "Dmitri"]
    assert frame["amount"].to_list() == [10.5, 20.25, 0.0, 1234.5]
    assert frame["paid"].to_list() == [True, False, True, False]
    # xlsx stores every number as a float and dates as formatted serials: whole-number columns become int64.
    assert frame.schema["order_id"] == pl.Int64
    assert frame.schema["amount"] == pl.Float64
    assert frame["ordered_on"].dt.date().to_list() == [row[3] for row in ORDERS[1:]]


def test_read_streams_arrow_without_the_row_column_unless_asked(tmp_path: Path) -> None:
    source = ExcelSource(paths=(write_xlsx(tmp_path / "orders.xlsx", {"Orders": ORDERS}),))
    part = source.partitions()[0]

    reader = source.read(part)
    assert isinstance(reader, pa.RecordBatchReader)
    table = reader.read_all()
    assert table.column_names == ORDERS[0]
    assert table.num_rows == 4
    assert source.schema() == table.schema

    picked = source.read(part, columns=["customer", ROW_COLUMN]).read_all()
    assert picked.to_pydict() == {"customer": ["Ana", "Bruno", "Chloé", "Dmitri"], ROW_COLUMN: [2, 3, 4, 5]}


def test_sheet_selection(tmp_path: Path) -> None:
    first = write_xlsx(tmp_path / "a.xlsx", {"One": [["x"], [1]], "Two": [["y"], [2]], "Three": [["z"], [3]]})
    second = write_xlsx(tmp_path / "b.xlsx", {"Two": [["y"], [20]], "Other": [["w"], [0]]})

    def labels(sheets: str | tuple[str, ...] | None, paths: tuple[Path, ...] = (first,)) -> list[str]:
        return [p.label for p in ExcelSource(paths=paths, sheets=sheets).partitions()]

    assert labels(None) == ["a.xlsx[One]"]
    assert labels("*") == ["a.xlsx[One]", "a.xlsx[Two]", "a.xlsx[Three]"]
    assert labels("Three") == ["a.xlsx[Three]"]
    assert labels(("Three", "One")) == ["a.xlsx[Three]", "a.xlsx[One]"]
    assert labels("Two", (first, second)) == ["a.xlsx[Two]", "b.xlsx[Two]"]
    assert labels(None, (first, second)) == ["a.xlsx[One]", "b.xlsx[Two]"]

    source = ExcelSource(paths=(first, second), sheets="Two")
    assert [collect(source, i)["y"].to_list() for i in (0, 1)] == [[2.0], [20.0]]


def test_a_missing_sheet_lists_the_sheets_there_are(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "a.xlsx", {"One": [["x"]], "Two": [["y"]]})
    with pytest.raises(SourceError) as info:
        ExcelSource(paths=(path,), sheets=("One", "Nope")).partitions()
    assert not isinstance(info.value, HostileInputError)
    assert str(info.value) == "a.xlsx: sheet 'Nope' not found; the workbook has 'One', 'Two'"


def test_header_row_is_the_absolute_row_and_row_numbers_follow_it(tmp_path: Path) -> None:
    rows: Rows = [
        ["Monthly report"],  # row 1
        [],  # row 2
        ["id", "name"],  # row 3: header_row=2
        [1, "a"],  # row 4
        [2, "b"],  # row 5
        [],  # row 6, blank: filtered (not a record), yet row numbers stay true
        [3, "c"],  # row 7
    ]
    path = write_xlsx(tmp_path / "report.xlsx", {"S": rows})
    frame = collect(ExcelSource(paths=(path,), header_row=2))
    assert frame.columns == ["id", "name", ROW_COLUMN, DROP_COLUMN]
    assert frame.rows() == [(1.0, "a", 4, False), (2.0, "b", 5, False), (None, None, 6, True), (3.0, "c", 7, False)]

    # header_row=0 means row 1 even when the data starts lower (fastexcel alone would skip blank rows).
    padded = write_xlsx(tmp_path / "padded.xlsx", {"S": [[], ["id"], [1]]})
    frame = collect(ExcelSource(paths=(padded,)))
    assert frame.columns == ["column_1", ROW_COLUMN]
    assert frame.rows() == [("id", 2), ("1", 3)]


def test_blank_and_duplicate_headers_get_engine_names(tmp_path: Path) -> None:
    header = ["id", "", "id", "id_1", " ", "score", "score_1", "__UNNAMED__7"]
    path = write_xlsx(tmp_path / "h.xlsx", {"S": [header, list(range(len(header)))]})
    frame = collect(ExcelSource(paths=(path,)))
    # unique_names semantics (``_2`` for the second 'id'), not fastexcel's own ('id_1', '__UNNAMED__1').
    assert frame.columns == [
        "id", "column_2", "id_2", "id_1", "column_5", "score", "score_1", "__UNNAMED__7", ROW_COLUMN,
    ]  # fmt: skip
    assert frame.row(0) == (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 2)


def test_a_header_named_like_the_row_column_does_not_clash(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "h.xlsx", {"S": [[ROW_COLUMN, "x"], ["sneaky", 1]]})
    frame = collect(ExcelSource(paths=(path,)))
    assert len(set(frame.columns)) == 3
    assert frame[ROW_COLUMN].to_list() == [2]
    assert "sneaky" in frame.row(0)


def test_explicit_dtypes_by_final_column_name(tmp_path: Path) -> None:
    rows: Rows = [
        ["id", "code", "when", "ok", "x", "x"],
        [1, 7, dt.date(2024, 5, 6), 1, 1.5, "1"],
        [2, 8, dt.date(2024, 5, 7), 0, 2.5, "2"],
    ]
    path = write_xlsx(tmp_path / "t.xlsx", {"S": rows})
    dtypes = {"id": "int", "code": "string", "when": "date", "ok": "boolean", "x_2": "int"}
    frame = collect(ExcelSource(paths=(path,), dtypes=dtypes))
    assert frame.schema == pl.Schema(
        {
            "id": pl.Int64,
            "code": pl.String,
            "when": pl.Date,
            "ok": pl.Boolean,
            "x": pl.Float64,
            "x_2": pl.Int64,
            ROW_COLUMN: pl.Int64,
        }
    )
    assert frame.drop(ROW_COLUMN).rows() == [
        (1, "7", dt.date(2024, 5, 6), True, 1.5, 1),
        (2, "8", dt.date(2024, 5, 7), False, 2.5, 2),
    ]


def test_dtypes_are_checked(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "t.xlsx", {"S": [["amount"], [1]]})
    with pytest.raises(SpecError, match="dtypes.amount: unknown type 'intger'; known types: .*bigint"):
        ExcelSource(paths=(path,), dtypes={"amount": "intger"})
    with pytest.raises(SourceError, match=r"t.xlsx\[S\]: dtypes names column\(s\) 'amont' not in the sheet"):
        collect(ExcelSource(paths=(path,), dtypes={"amont": "int"}))


def test_inference_reads_every_row(tmp_path: Path) -> None:
    # fastexcel samples 1000 rows by default and would turn the late text into null; we sample them all.
    rows: list[list[object]] = [["n"]]
    rows += [[i] for i in range(1500)]
    rows[1400] = ["oops"]
    frame = collect(ExcelSource(paths=(write_xlsx(tmp_path / "late.xlsx", {"S": rows}),)))
    assert frame.schema["n"] == pl.String
    assert frame["n"][1399] == "oops"
    assert frame["n"].null_count() == 0


def test_empty_sheets_are_empty_frames(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "e.xlsx", {"Empty": [], "HeaderOnly": [["a", "b"]]})
    source = ExcelSource(paths=(path,), sheets="*", dtypes={"a": "int"})
    empty, header_only = collect(source, 0), collect(source, 1)
    assert empty.columns == [ROW_COLUMN] and empty.height == 0
    assert header_only.columns == ["a", "b", ROW_COLUMN] and header_only.height == 0
    assert header_only.schema["b"] == pl.String  # no values to type it by
    assert collect(ExcelSource(paths=(path,), sheets="HeaderOnly", header_row=5)).columns == [ROW_COLUMN]


def test_a_changed_file_is_not_read_under_its_old_fingerprint(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "o.xlsx", {"S": ORDERS})
    source = ExcelSource(paths=(path,))
    part = source.partitions()[0]
    write_xlsx(path, {"S": ORDERS[:2]})
    with pytest.raises(SourceError, match="changed since its partitions were listed"):
        source.scan(part)


@pytest.mark.parametrize("suffix", ["xls", "ods", "xlsb"])
def test_other_formats(suffix: str) -> None:
    path = FIXTURES / f"orders_small.{suffix}"
    source = ExcelSource(paths=(path,), sheets="*")
    labels = [p.label for p in source.partitions()]
    assert labels == [f"orders_small.{suffix}[orders]", f"orders_small.{suffix}[notes]"]
    frame = collect(source)
    # Formats differ in what they store: .xls/.xlsb keep integers, .ods/.xlsx only floats; .ods keeps dates.
    normalised = frame.with_columns(pl.col("order_id").cast(pl.Int64), pl.col("ordered_on").cast(pl.Date))
    assert normalised.rows() == [(*row, i) for i, row in enumerate(ORDERS[1:], start=2)]
    notes = collect(source, 1)
    assert notes.rows() == [("first note", 2), ("second line", 3)]
    # a header below the last row: calamine panics on .xls/.ods; we give an empty frame, like for .xlsx
    assert collect(ExcelSource(paths=(path,), sheets="notes", header_row=3)).height == 0


def test_a_small_memory_limit_still_reads_a_small_workbook(tmp_path: Path) -> None:
    # The child's limit covers its imports too: were it to import the engine (polars...), or let mimalloc
    # reserve address space in big blocks, a modest limit would fail every read.
    path = write_xlsx(tmp_path / "orders.xlsx", {"Orders": ORDERS})
    for limit in (320, 400, 448, 512):
        assert collect(ExcelSource(paths=(path,), memory_limit_mb=limit)).height == 4


# -- bad and hostile input ----------------------------------------------------------------------------


def test_truncated_workbook_is_a_source_error(tmp_path: Path) -> None:
    good = write_xlsx(tmp_path / "good.xlsx", {"S": ORDERS})
    bad = tmp_path / "orders.xlsx"
    bad.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(SourceError) as info:
        ExcelSource(paths=(bad,)).partitions()
    assert not isinstance(info.value, HostileInputError)
    assert str(info.value).startswith("orders.xlsx: cannot read the workbook: ")


def test_text_renamed_xlsx_is_a_source_error(tmp_path: Path) -> None:
    bad = tmp_path / "export.xlsx"
    bad.write_text("id,name\n1,a\n")
    with pytest.raises(SourceError, match=r"^export.xlsx: cannot read the workbook: .*Zip") as info:
        ExcelSource(paths=(bad,)).partitions()
    assert "\n" not in str(info.value)


def test_missing_file_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"^ghost.xlsx: file not found: "):
        ExcelSource(paths=(tmp_path / "ghost.xlsx",)).partitions()


def test_options_are_checked() -> None:
    with pytest.raises(SpecError, match="header_row"):
        ExcelSource(paths=(Path("x.xlsx"),), header_row=-1)
    with pytest.raises(SpecError, match="memory_limit_mb"):
        ExcelSource(paths=(Path("x.xlsx"),), memory_limit_mb=10)
    with pytest.raises(SpecError, match="timeout_s"):
        ExcelSource(paths=(Path("x.xlsx"),), timeout_s=0)


def _raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    return packer.compress(data) + packer.flush()


def write_sheet_bomb(path: Path, template: Path, *, row: bytes, sheet_bytes: int) -> Path:
    """``template`` with its sheet XML replaced by ``row`` repeated to ``sheet_bytes``: a valid zip.

    One MiB of rows is deflated once after a full flush (so its bytes stand alone) and that block is written
    again and again: a few MB on disk, gigabytes inflated, and no time spent compressing them.
    """
    head = (
        b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
    )
    tail = b"</sheetData></worksheet>"
    chunk = row * max(1, (1 << 20) // len(row))
    copies = (sheet_bytes - len(head) - len(tail)) // len(chunk)
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = packer.compress(head) + packer.flush(zlib.Z_FULL_FLUSH)
    block = packer.compress(chunk) + packer.flush(zlib.Z_FULL_FLUSH)
    last = packer.compress(tail) + packer.flush()
    crc = zlib.crc32(head)
    for _ in range(copies):
        crc = zlib.crc32(chunk, crc)
    crc = zlib.crc32(tail, crc)
    sheet_size = len(head) + copies * len(chunk) + len(tail)
    assert sheet_size < 0xFFFFFFFF, "no zip64 here"

    with zipfile.ZipFile(template) as original:
        sheet = "xl/worksheets/sheet1.xml"
        others = [(i.filename, original.read(i)) for i in original.infolist() if i.filename != sheet]
    directory: list[bytes] = []
    with open(path, "wb") as out:

        def member(name: str, crc: int, packed_size: int, size: int, parts: list[bytes]) -> None:
            encoded, offset = name.encode(), out.tell()
            fields = (20, 0, 8, 0, 0x21, crc, packed_size, size, len(encoded))
            out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, *fields, 0) + encoded)
            entry = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, *fields, 0, 0, 0, 0, 0, offset)
            directory.append(entry + encoded)
            for part in parts:
                out.write(part)

        for name, data in others:
            packed = _raw_deflate(data)
            member(name, zlib.crc32(data), len(packed), len(data), [packed])
        packed_size = len(first) + copies * len(block) + len(last)
        member(sheet, crc, packed_size, sheet_size, [first, *[block] * copies, last])
        start = out.tell()
        out.write(b"".join(directory))
        end_record = (0, 0, len(directory), len(directory), out.tell() - start, start, 0)
        out.write(struct.pack("<IHHHHIIH", 0x06054B50, *end_record))
    return path


@pytest.fixture(scope="module")
def good_and_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("excel")
    good = write_xlsx(folder / "good.xlsx", {"S": ORDERS})
    return good, write_xlsx(folder / "template.xlsx", {"S": [["a"]]})


def test_zip_bomb_hits_the_memory_limit_and_the_engine_lives_on(
    tmp_path: Path, good_and_template: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    good, template = good_and_template
    monkeypatch.setenv("BICONIC_EXCEL_MAX_RATIO", "0")  # the checks before parsing off (test_excel_bombs)
    monkeypatch.setenv("BICONIC_EXCEL_MAX_UNZIPPED_MB", "4096")
    cells = b"<row>" + b"<c><v>1</v></c>" * 1000 + b"</row>"
    bomb = write_sheet_bomb(tmp_path / "bomb.xlsx", template, row=cells, sheet_bytes=2 << 30)
    assert bomb.stat().st_size < 6_000_000  # 2 GiB of sheet XML, ~4.5 MB on disk
    assert zipfile.ZipFile(bomb).getinfo("xl/worksheets/sheet1.xml").file_size > 2_000_000_000

    source = ExcelSource(paths=(bomb,), memory_limit_mb=512)
    part = source.partitions()[0]  # listing reads only the workbook part: fine
    with pytest.raises(HostileInputError, match=r"^bomb.xlsx\[S\]: the Excel parser .*memory_limit_mb=512"):
        source.scan(part)

    assert collect(ExcelSource(paths=(good,)))["customer"].to_list() == ["Ana", "Bruno", "Chloé", "Dmitri"]


def test_a_parse_over_the_time_limit_is_killed(tmp_path: Path, good_and_template: tuple[Path, Path],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    good, template = good_and_template
    monkeypatch.setenv("BICONIC_EXCEL_MAX_RATIO", "0")  # the checks before parsing off (test_excel_bombs)
    # 1 GiB of empty rows: no memory to speak of, but ~8 s of parsing.
    slow = write_sheet_bomb(tmp_path / "slow.xlsx", template, row=b"<row/>", sheet_bytes=1 << 30)
    source = ExcelSource(paths=(slow,), timeout_s=1.0)
    with pytest.raises(
        HostileInputError, match=r"^slow.xlsx\[S\]: the Excel parser did not finish within 1 s "
    ):
        source.scan(source.partitions()[0])
    assert collect(ExcelSource(paths=(good,))).height == 4


def test_a_stray_cell_in_the_last_column_reads(tmp_path: Path) -> None:
    path = tmp_path / "wide.xlsx"
    book = xlsxwriter.Workbook(str(path))
    sheet = book.add_worksheet("S")
    sheet.write_row(0, 0, ["a", "b"])
    sheet.write_row(1, 0, [1, 2])
    sheet.write(1, 16383, "stray")  # XFD2
    book.close()
    frame = collect(ExcelSource(paths=(path,)))
    assert frame.width == 16384 + 1
    assert frame.columns[-2:] == ["column_16384", ROW_COLUMN]
    assert frame.row(0)[:2] == (1.0, 2.0) and frame.row(0)[-2:] == ("stray", 2)


def test_a_stray_cell_in_the_last_row_and_column_is_hostile(tmp_path: Path) -> None:
    book = xlsxwriter.Workbook(str(tmp_path / "corner.xlsx"))
    sheet = book.add_worksheet("S")
    sheet.write_row(0, 0, ["a", "b"])
    sheet.write(1_048_575, 16_383, "stray")  # XFD1048576: calamine asks for 512 GiB and aborts
    book.close()
    source = ExcelSource(paths=(tmp_path / "corner.xlsx",))
    with pytest.raises(HostileInputError) as info:
        source.scan(source.partitions()[0])
    assert str(info.value).startswith("corner.xlsx[S]: the Excel parser was killed by SIGABRT")
    assert "memory allocation of" in str(info.value)
