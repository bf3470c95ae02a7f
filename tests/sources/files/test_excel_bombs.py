"""Zip bombs and shared-string bombs are refused from the zip's own directory, before the sandboxed parser
inflates them (it reached 2-2.6 GB first); real workbooks, deflated about 7:1, still load."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import pytest

from engine.errors import HostileInputError
from engine.sources.files.excel import ExcelSource
from tests.sources.files.test_excel import ORDERS, collect, write_sheet_bomb, write_xlsx


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The sandboxed parses run (``read`` jobs), recorded: a refused bomb must never get one."""
    ran: list[str] = []
    original = ExcelSource._run_worker

    def spy(self: ExcelSource, request: dict[str, Any], work_dir: Path, *, label: str) -> dict[str, Any]:
        ran.append(str(request["op"]))
        return original(self, request, work_dir, label=label)

    monkeypatch.setattr(ExcelSource, "_run_worker", spy)
    return ran


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_xlsx(tmp_path_factory.mktemp("bombs") / "template.xlsx", {"S": [["a"]]})


def test_a_zip_bomb_is_refused_before_parsing(tmp_path: Path, template: Path, parses: list[str]) -> None:
    cells = b"<row>" + b"<c><v>1</v></c>" * 1000 + b"</row>"
    bomb = write_sheet_bomb(tmp_path / "bomb.xlsx", template, row=cells, sheet_bytes=2 << 30)
    source = ExcelSource(paths=(bomb,))
    part = source.partitions()[0]
    with pytest.raises(HostileInputError, match=r"^bomb.xlsx\[S\]: xl/worksheets/sheet1.xml inflates to 2047 MiB, "
                                                 r"over BICONIC_EXCEL_MAX_UNZIPPED_MB=1024 .*refused before parsing"):
        source.scan(part)
    assert "read" not in parses


def test_a_highly_compressed_part_is_refused_by_its_ratio(tmp_path: Path, template: Path,
                                                          parses: list[str]) -> None:
    bomb = write_sheet_bomb(tmp_path / "ratio.xlsx", template, row=b"<row/>", sheet_bytes=64 << 20)
    source = ExcelSource(paths=(bomb,))
    with pytest.raises(HostileInputError, match=r"sheet1.xml inflates \d{3,}:1 to \d+ MiB, over "
                                                 r"BICONIC_EXCEL_MAX_RATIO=100"):
        source.scan(source.partitions()[0])
    assert "read" not in parses


def test_a_shared_string_bomb_is_refused_by_its_declared_count(tmp_path: Path, parses: list[str]) -> None:
    real = write_xlsx(tmp_path / "real.xlsx", {"S": ORDERS})
    bomb = tmp_path / "sst.xlsx"
    with zipfile.ZipFile(real) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as out:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "xl/sharedStrings.xml":
                data = data.replace(b'uniqueCount="', b'uniqueCount="4000000')  # 4 in front of 9
            out.writestr(item.filename, data)
    source = ExcelSource(paths=(bomb,))
    with pytest.raises(HostileInputError, match=r"declares 40,000,009 shared strings, over "
                                                 r"BICONIC_EXCEL_MAX_SHARED_STRINGS=10,000,000"):
        source.scan(source.partitions()[0])
    assert "read" not in parses


def test_real_workbooks_still_load(tmp_path: Path, parses: list[str]) -> None:
    """20,000 rows of mixed values (strings shared): ratios near real ones, far under the limits."""
    rows: list[list[object]] = [["id", "name", "amount"]]
    rows += [[i, f"customer {i % 997}", i * 1.25] for i in range(20_000)]
    path = write_xlsx(tmp_path / "real.xlsx", {"S": rows})
    with zipfile.ZipFile(path) as book:
        sheet = book.getinfo("xl/worksheets/sheet1.xml")
        assert sheet.file_size > 1 << 20 and sheet.file_size / sheet.compress_size < 20
    frame = collect(ExcelSource(paths=(path,)))
    assert frame.height == 20_000 and frame["name"][996] == "customer 996"
    assert "read" in parses


def test_the_limits_are_settings(tmp_path: Path, template: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = write_sheet_bomb(tmp_path / "ratio.xlsx", template, row=b"<row/>", sheet_bytes=4 << 20)
    monkeypatch.setenv("BICONIC_EXCEL_MAX_RATIO", "0")  # off: the sandbox alone bounds the parse
    assert collect(ExcelSource(paths=(bomb,))).height == 0
    monkeypatch.setenv("BICONIC_EXCEL_MAX_UNZIPPED_MB", "2")
    with pytest.raises(HostileInputError, match=r"over BICONIC_EXCEL_MAX_UNZIPPED_MB=2 "):
        collect(ExcelSource(paths=(bomb,)))
