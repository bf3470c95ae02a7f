"""Excel columns get the types users expect: whole numbers as int64, and ``dtypes`` in the engine's one type
vocabulary (engine.types), converted with rejects."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from engine.plan.columns import REJECT_PREFIX
from engine.sources.files.excel import ExcelSource
from tests.sources.files.test_excel import Rows, collect, write_xlsx

xlsxwriter = pytest.importorskip("xlsxwriter")


def test_whole_number_columns_are_int64_in_every_chunk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """xlsx stores numbers as floats: an id column must still load as bigint, decided over the whole sheet so
    that a late 2.5 keeps the column a float in every chunk, and a type the user gave is kept."""
    monkeypatch.setenv("BICONIC_CHUNK_ROWS", "2")
    rows: Rows = [
        ["id", "late_half", "asked_float", "huge", "blank"],
        [1, 1, 1, None, None],
        [2, None, 2, 1e19, None],
        [-3, 4, 3, None, None],
        [4, 2.5, 4, None, None],
    ]
    source = ExcelSource(paths=(write_xlsx(tmp_path / "n.xlsx", {"S": rows}),), dtypes={"asked_float": "float"})
    part = source.partitions()[0]
    chunks = [make(0).collect() for make in source.chunks(part)]
    assert len(chunks) == 2
    for chunk in chunks:
        assert chunk.schema["id"] == pl.Int64
        assert chunk.schema["late_half"] == pl.Float64
        assert chunk.schema["asked_float"] == pl.Float64
        assert chunk.schema["huge"] == pl.Float64  # whole, but past bigint's range
    assert pl.concat(chunks)["id"].to_list() == [1, 2, -3, 4]
    assert source.schema().field("id").type == pa.int64()  # the schema pass agrees with the load


def test_dtypes_take_the_engine_type_names(tmp_path: Path) -> None:
    """The one type vocabulary (engine.types) works in Excel dtypes as in CSV dtypes and spec steps; a value
    that does not fit the type asked for is rejected (quarantined), not turned into a silent null."""
    rows: Rows = [
        ["id", "amount", "small", "label", "ok", "at"],
        [1, 10.25, 7, 5, 1, dt.date(2024, 5, 6)],
        [2, 3.5, 70000, "x", 0, dt.date(2024, 5, 7)],
    ]
    path = write_xlsx(tmp_path / "t.xlsx", {"S": rows})
    dtypes = {"id": "integer", "amount": "numeric(12,2)", "small": "smallint", "label": "text", "ok": "bool",
              "at": "timestamp"}
    source = ExcelSource(paths=(path,), dtypes=dtypes)
    frame = collect(source)
    wanted = {"id": pl.Int64(), "amount": pl.Decimal(12, 2), "small": pl.Int16(), "label": pl.String(),
              "ok": pl.Boolean(), "at": pl.Datetime("us")}
    assert {c: frame.schema[c] for c in wanted} == wanted
    assert frame["amount"].to_list() == [Decimal("10.25"), Decimal("3.50")]
    assert frame["small"].to_list() == [7, None]
    reasons = frame.select(pl.col(f"^{REJECT_PREFIX}.*$")).rows()
    assert [any(r) for r in reasons] == [False, True]
    assert "70000" in str(reasons[1])
    assert source.schema().field("amount").type == pa.decimal128(12, 2)


def test_time_and_binary_dtypes(tmp_path: Path) -> None:
    """A time cell is a datetime on 1899-12-31 to fastexcel: ``time`` keeps the time of day, not a reject."""
    path = tmp_path / "t.xlsx"
    with xlsxwriter.Workbook(str(path)) as book:
        sheet = book.add_worksheet("S")
        sheet.write_row(0, 0, ["t", "raw"])
        sheet.write_datetime(1, 0, dt.time(13, 14, 15), book.add_format({"num_format": "hh:mm:ss"}))
        sheet.write(1, 1, "ab")
    frame = collect(ExcelSource(paths=(path,), dtypes={"t": "time", "raw": "bytea"}))
    assert frame.select("t", "raw").row(0) == (dt.time(13, 14, 15), b"ab")
    assert not any(frame.select(pl.col(f"^{REJECT_PREFIX}.*$")).row(0))
