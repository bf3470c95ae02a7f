"""Parquet through ``open_source``: types kept, folders and globs, corrupt and truncated files."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.errors import SourceError, SpecError
from engine.plan.columns import ROW_COLUMN, is_hidden
from engine.sources import open_source
from engine.sources.files.parquet import ParquetSource


def _one(path: Path | str) -> pl.DataFrame:
    source = open_source(path)
    parts = source.partitions()
    assert len(parts) == 1
    return source.scan(parts[0]).collect()


def _visible(df: pl.DataFrame) -> pl.DataFrame:
    return df.select([c for c in df.columns if not is_hidden(c)])


def test_types_survive(tmp_path: Path) -> None:
    path = tmp_path / "typed.parquet"
    original = pl.DataFrame({
        "i32": pl.Series([1, 2], dtype=pl.Int32),
        "u64": pl.Series([1, 2**64 - 1], dtype=pl.UInt64),
        "f": [1.5, None],
        "d": [dt.date(2024, 1, 1), None],
        "ts": [dt.datetime(2024, 1, 1, 12), dt.datetime(2024, 6, 1)],
        "tz": pl.Series([dt.datetime(2024, 1, 1, 12)] * 2).dt.replace_time_zone("UTC"),
        "dec": pl.Series([Decimal("1.25"), Decimal("2.50")], dtype=pl.Decimal(10, 2)),
        "s": ["x", "ñ"],
        "l": [[1], [2, 3]],
    })
    original.write_parquet(path)
    source = open_source(path)
    assert isinstance(source, ParquetSource)
    df = source.scan(source.partitions()[0]).collect()
    assert df[ROW_COLUMN].to_list() == [1, 2]
    assert _visible(df).equals(original)
    assert _visible(df).schema == original.schema


def test_pq_extension_folder_and_glob(tmp_path: Path) -> None:
    pl.DataFrame({"n": [1]}).write_parquet(tmp_path / "a.parquet")
    pl.DataFrame({"n": [2]}).write_parquet(tmp_path / "b.pq")
    source = open_source(tmp_path)
    assert [p.label for p in source.partitions()] == ["a.parquet", "b.pq"]
    assert [source.scan(p).collect()["n"].to_list() for p in source.partitions()] == [[1], [2]]
    only = open_source(str(tmp_path / "*.pq"))
    assert [p.label for p in only.partitions()] == ["b.pq"]


def test_blank_column_names_get_positions(tmp_path: Path) -> None:
    path = tmp_path / "blank.parquet"
    pq.write_table(pa.table([pa.array([1]), pa.array([2])], names=["a", ""]), path)
    df = _visible(_one(path))
    assert df.columns == ["a", "column_2"]
    assert df.row(0) == (1, 2)


def test_duplicate_column_names_are_a_clear_source_error(tmp_path: Path) -> None:
    path = tmp_path / "dup.parquet"
    pq.write_table(pa.table([pa.array([1]), pa.array([2])], names=["a", "a"]), path)
    with pytest.raises(SourceError) as info:
        _one(path)
    assert info.value.source == "dup.parquet"
    assert "'a'" in info.value.message


def test_binary_garbage_is_a_source_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "garbage.parquet"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(SourceError) as info:
        _one(path)
    assert info.value.source == "garbage.parquet"
    assert "Parquet" in info.value.message


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_parquet(tmp_path: Path, keep: float) -> None:
    good = tmp_path / "good.parquet"
    pl.DataFrame({"n": list(range(1000)), "s": [str(i) for i in range(1000)]}).write_parquet(good)
    data = good.read_bytes()
    path = tmp_path / "truncated.parquet"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(SourceError) as info:
        _one(path)
    assert info.value.source == "truncated.parquet"


def test_corrupt_footer_keeps_magic(tmp_path: Path) -> None:
    """PAR1 at both ends but garbage between: still a SourceError, never a crash."""
    path = tmp_path / "fake.parquet"
    path.write_bytes(b"PAR1" + b"\x07" * 100 + b"PAR1")
    with pytest.raises(SourceError) as info:
        _one(path)
    assert info.value.source == "fake.parquet"


def test_empty_parquet_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.parquet"
    path.write_bytes(b"")
    with pytest.raises(SourceError, match="empty.parquet"):
        _one(path)


def test_zero_row_parquet_has_columns(tmp_path: Path) -> None:
    path = tmp_path / "zero.parquet"
    pl.DataFrame({"a": pl.Series([], dtype=pl.Int64)}).write_parquet(path)
    df = _one(path)
    assert df.height == 0
    assert _visible(df).columns == ["a"]


def test_unknown_option(tmp_path: Path) -> None:
    path = tmp_path / "a.parquet"
    pl.DataFrame({"a": [1]}).write_parquet(path)
    with pytest.raises(SpecError) as info:
        open_source(path, options={"encoding": "latin-1"})
    assert info.value.path == "source.encoding"
