"""Numbers past what float64 holds (1e400, 0.1000000000000000055511151231257827, integers past 128 bits) in
JSON: read digit for digit as text, never rounded, never Infinity, and never a refused file; numbers float64
or Int64/Int128 hold stay numbers."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from engine.sources.files.json import JsonSource
from tests.sources._helpers import chunked, visible

_BIG = ["1e400", "-1E+309", "0.1000000000000000055511151231257827", "1" * 45]


@pytest.mark.parametrize("lines", [True, False])
def test_numbers_past_float64_keep_their_digits(tmp_path: Path, lines: bool) -> None:
    records = [f'{{"id": {i}, "n": {n}, "f": 1.5, "big_id": 9007199254740993}}' for i, n in enumerate(_BIG)]
    path = tmp_path / ("n.ndjson" if lines else "n.json")
    path.write_text("\n".join(records) + "\n" if lines else "[" + ",\n".join(records) + "]")
    source = JsonSource(paths=(path,), lines=lines)
    df = visible(chunked(source) if lines else source.scan(source.partitions()[0]).collect())
    assert df["n"].to_list() == _BIG
    assert df.schema["f"] == pl.Float64 and df["f"].to_list() == [1.5] * 4
    assert df.schema["big_id"] == pl.Int64 and df["big_id"][0] == 9007199254740993


def test_a_string_holding_long_digits_stays_as_written(tmp_path: Path) -> None:
    path = tmp_path / "s.ndjson"
    path.write_text('{"s": "ref: 12345678901234567890, 1e999", "n": 2.5}\n')
    df = visible(chunked(JsonSource(paths=(path,), lines=True)))
    assert df.row(0) == ("ref: 12345678901234567890, 1e999", 2.5)
