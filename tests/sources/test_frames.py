"""Data already in Python as a source: Polars, pandas and pyarrow objects loaded through the same pipeline in
bounded chunks, one partition; loaded again on each run unless a ``source_name`` names it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import polars as pl
import pyarrow as pa
import pytest

import engine
from engine.errors import SpecError
from engine.sources import open_source
from engine.sources.frames import FrameSource
from tests.support import Sql, accounted, row_count


def _frame(n: int = 10) -> pl.DataFrame:
    return pl.DataFrame({"id": list(range(1, n + 1)), "day": [dt.date(2024, 1 + i % 3, 1) for i in range(n)],
                         "v": [f"x{i}" for i in range(n)]})


def _batches(n: int = 10, size: int = 4) -> Iterator[pa.RecordBatch]:
    yield from _frame(n).to_arrow().to_batches(max_chunksize=size)


@pytest.mark.parametrize("make", [
    lambda: _frame(), lambda: _frame().lazy(), lambda: _frame().to_arrow(),
    lambda: pa.RecordBatchReader.from_batches(_frame().to_arrow().schema, _batches()), lambda: _batches(),
], ids=["polars", "lazy", "arrow-table", "reader", "iterator"])
def test_each_kind_loads_every_row(make: Any, pg_dsn: str, table: str, sql: Sql) -> None:
    report = engine.load(make(), into=table, dsn=pg_dsn, options={"batch_rows": 3})
    accounted(report)
    assert (report.rows_in, report.rows_loaded, report.source_partitions) == (10, 10, 1)
    assert report.source.startswith("python:") and report.compression_ratio is None
    assert sql(f'SELECT min(id), max(id), count(DISTINCT v) FROM "{table}"') == [(1, 10, 10)]
    assert len(report.partitions) == 3  # January to March, by the day column


def test_pandas_frames_load_when_pandas_is_installed(pg_dsn: str, table: str, sql: Sql) -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"id": [1, 2], "day": pd.to_datetime(["2024-01-01", "2024-02-01"])})
    assert engine.load(frame, into=table, dsn=pg_dsn).rows_loaded == 2
    assert row_count(sql, table) == 2


def test_an_unnamed_frame_loads_again_a_named_one_once(pg_dsn: str, table: str, sql: Sql) -> None:
    frame = _frame(4)
    engine.load(frame, into=table, dsn=pg_dsn)
    engine.load(frame, into=table, dsn=pg_dsn)
    assert row_count(sql, table) == 8  # no identity: each load is new data
    named = f"{table}_n"
    first = engine.load(frame, into=named, dsn=pg_dsn, source_name="orders-2024-06")
    again = engine.load(frame, into=named, dsn=pg_dsn, source_name="orders-2024-06")
    assert (first.rows_loaded, again.rows_loaded, again.skipped_partitions) == (4, 0, 1)
    assert first.source == "python:orders-2024-06"
    assert sql("SELECT DISTINCT source FROM biconic.loads WHERE dataset = $1", [named]) == [("python:orders-2024-06",)]


def test_an_iterator_is_read_in_chunks_as_it_goes() -> None:
    taken: list[int] = []

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in _batches(10, 2):
            taken.append(batch.num_rows)
            yield batch

    source = open_source(batches(), options={"batch_rows": 4})
    [partition] = source.partitions()
    chunks = source.chunks(partition)
    first = next(chunks)(0).collect()
    assert first.height == 4 and sum(taken) < 10  # the rest is not read yet: memory holds one chunk
    assert sum(next(chunks)(4).collect().height for _ in range(2)) == 6
    with pytest.raises(SpecError, match="read only once"):
        next(source.chunks(partition))


def test_a_stream_read_twice_is_a_clear_error(pg_dsn: str, table: str) -> None:
    with pytest.raises(SpecError, match="read only once"):
        engine.load(_batches(), into=table, dsn=pg_dsn, spec={"steps": [{"dedupe": ["id"]}]})


def test_what_is_not_data_is_refused() -> None:
    with pytest.raises(SpecError, match="expected a file path, URL or in-memory data"):
        FrameSource(data=42)
    with pytest.raises(SpecError, match="source.sheet: unknown option for in-memory data"):
        open_source(_frame(), options={"sheet": "x"})
    with pytest.raises(SpecError, match="source_name"):
        open_source(_frame(), options={"source_name": " "})
