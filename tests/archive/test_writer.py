"""The archive writer on its own (no PostgreSQL): files per connection and period, verified uploads, and the
clean-up of work folders that killed loads left behind."""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from engine.archive.store import Store
from engine.archive.writer import STALE_SECONDS, ArchiveWriter


def _rows(n: int, cid: int, start: dt.datetime) -> pl.DataFrame:
    return pl.DataFrame({"connection_id": [cid] * n, "id": range(n),
                         "created_at": [start + dt.timedelta(minutes=i) for i in range(n)]})


def test_one_verified_file_per_connection_and_period(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "archive"))
    writer = ArchiveWriter(store, "public.orders", "k1", time_column="created_at", workdir=tmp_path / "work")
    jan, feb = dt.date(2026, 1, 1), dt.date(2026, 2, 1)
    writer.add(jan, pl.concat([_rows(10, 1, dt.datetime(2026, 1, 3)), _rows(5, 2, dt.datetime(2026, 1, 9))]))
    writer.add(feb, _rows(7, 1, dt.datetime(2026, 2, 1)))
    writer.add(jan, _rows(3, 1, dt.datetime(2026, 1, 20)))
    files = writer.finish()
    got = {(f.connection_id, f.period): f.rows for f in files}
    assert got == {(1, jan): 13, (2, jan): 5, (1, feb): 7}
    for f in files:
        assert f.uri.endswith(f"orders/connection_id={f.connection_id}/period={f.period}/k1.parquet")
        meta = pq.ParquetFile(f.uri).metadata
        assert meta.num_rows == f.rows and meta.row_group(0).column(0).compression == "ZSTD"
    first = next(f for f in files if (f.connection_id, f.period) == (1, jan))
    assert first.min_time == dt.datetime(2026, 1, 3, tzinfo=dt.UTC)
    assert first.max_time == dt.datetime(2026, 1, 20, 0, 2, tzinfo=dt.UTC)
    assert not list((tmp_path / "work").glob("archive-*"))  # the local copies are gone


def test_work_folders_of_killed_loads_are_swept(tmp_path: Path) -> None:
    work = tmp_path / "work"
    stale, recent = work / "archive-stale", work / "archive-recent"
    for folder in (stale, recent):
        folder.mkdir(parents=True)
        (folder / "x.parquet").write_bytes(b"half a file")
    old = time.time() - STALE_SECONDS - 60
    os.utime(stale, (old, old))
    writer = ArchiveWriter(Store(str(tmp_path / "archive")), "t", "k", time_column="created_at", workdir=work)
    assert not stale.exists() and recent.exists()  # a folder in use by a running load stays
    writer.discard()


def test_sealed_writer_publishes_in_the_background_and_takes_no_more_rows(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "archive"))
    writer = ArchiveWriter(store, "orders", "k2", time_column="created_at", workdir=tmp_path / "work")
    jan = dt.date(2026, 1, 1)
    writer.add(jan, _rows(4, 1, dt.datetime(2026, 1, 2)))
    writer.seal()
    with pytest.raises(RuntimeError, match="sealed"):
        writer.add(jan, _rows(1, 1, dt.datetime(2026, 1, 3)))
    [f] = writer.finish()
    assert f.rows == 4 and pq.ParquetFile(f.uri).metadata.num_rows == 4


def test_discarding_a_sealed_writer_lists_nothing_and_cleans_up(tmp_path: Path) -> None:
    writer = ArchiveWriter(Store(str(tmp_path / "archive")), "orders", "k3", time_column="created_at",
                           workdir=tmp_path / "work")
    writer.add(dt.date(2026, 1, 1), _rows(4, 1, dt.datetime(2026, 1, 2)))
    writer.seal()
    writer.discard()  # the load failed after sealing: its files are never listed
    with pytest.raises(RuntimeError):
        writer.finish()
    assert not list((tmp_path / "work").glob("archive-*"))


def test_rows_in_any_connection_order_land_in_their_connection_file(tmp_path: Path) -> None:
    writer = ArchiveWriter(Store(str(tmp_path / "archive")), "orders", "k4", time_column="created_at",
                           workdir=tmp_path / "work")
    jan = dt.date(2026, 1, 1)
    start = dt.datetime(2026, 1, 2)
    writer.add(jan, pl.concat([_rows(2, 3, start), _rows(3, 1, start), _rows(4, 3, start)]))  # unsorted
    writer.add(jan, pl.concat([_rows(1, 1, start), _rows(5, 2, start)]))  # sorted: sliced, not split
    files = writer.finish()
    assert {f.connection_id: f.rows for f in files} == {1: 4, 2: 5, 3: 6}
    for f in files:
        assert set(pq.read_table(f.uri)["connection_id"].to_pylist()) == {f.connection_id}


def test_a_file_takes_a_bounded_number_of_row_groups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A long load moves on to a new part file, so the open writers' metadata stays bounded."""
    import engine.archive.writer as archive

    monkeypatch.setattr(archive, "BUFFER_ROWS", 10)
    monkeypatch.setattr(archive, "FILE_ROW_GROUPS", 3)
    writer = ArchiveWriter(Store(str(tmp_path / "archive")), "orders", "k5", time_column="created_at",
                           workdir=tmp_path / "work")
    jan = dt.date(2026, 1, 1)
    for i in range(8):  # 8 flushes of 10 rows
        writer.add(jan, _rows(10, 1, dt.datetime(2026, 1, 1 + i)))
    files = writer.finish()
    assert sorted(f.uri.rsplit("/", 1)[1] for f in files) == ["k5-1.parquet", "k5-2.parquet", "k5.parquet"]
    assert sorted(f.rows for f in files) == [20, 30, 30]
    assert [pq.ParquetFile(f.uri).metadata.num_row_groups for f in sorted(files, key=lambda f: f.uri)] == [3, 2, 3]
