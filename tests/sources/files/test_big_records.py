"""One huge record (a 50 MB cell, a 50 MB NDJSON line) costs about 13 times its size in memory while it is
parsed: a record over ``BICONIC_MAX_RECORD_MB`` is refused in one line naming the file, the line and the
setting, before it is read whole, rather than growing the load past 1 GiB."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import SourceError
from engine.sources.files.csv import CsvSource
from engine.sources.files.json import JsonSource
from tests.sources._helpers import chunked


def test_a_csv_cell_over_the_limit_is_refused_naming_file_line_and_setting(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BICONIC_MAX_RECORD_MB", "1")
    monkeypatch.setenv("BICONIC_CHUNK_MB", "0.25")
    path = tmp_path / "big.csv"
    path.write_text("id,note\n1,small\n2,small\n3,\"" + "x\n" * 700_000 + "\"\n4,after\n")
    with pytest.raises(SourceError) as info:
        chunked(CsvSource(paths=(path,)))
    message = str(info.value)
    assert "big.csv" in message and "line 4" in message and "BICONIC_MAX_RECORD_MB" in message
    assert "1 MiB" in message


def test_a_csv_cell_under_the_limit_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BICONIC_MAX_RECORD_MB", "2")
    monkeypatch.setenv("BICONIC_CHUNK_MB", "0.25")
    path = tmp_path / "big.csv"
    path.write_text("id,note\n1,\"" + "x" * 1_500_000 + "\"\n2,after\n")
    df = chunked(CsvSource(paths=(path,)))
    assert df["note"].str.len_bytes().to_list() == [1_500_000, 5]


def test_an_ndjson_line_over_the_limit_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BICONIC_MAX_RECORD_MB", "1")
    monkeypatch.setenv("BICONIC_CHUNK_MB", "0.25")
    path = tmp_path / "big.ndjson"
    path.write_text('{"id": 1}\n{"id": 2, "note": "' + "x" * 1_300_000 + '"}\n')
    with pytest.raises(SourceError, match=r"big\.ndjson.*line 2.*BICONIC_MAX_RECORD_MB"):
        chunked(JsonSource(paths=(path,), lines=True))
