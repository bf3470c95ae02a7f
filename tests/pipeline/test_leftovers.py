"""What a failed or killed load leaves behind: no archive files of rolled-back partitions (local or S3), no work
files of dead processes after the next load, no empty table nor dataset record after a failed first load."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq
import pytest

import engine
import engine.archive.store
import engine.archive.writer
import engine.pipeline.publish
from engine.errors import ArchiveError, SinkError, SourceError
from engine.retry import ARCHIVE_UPLOAD
from tests.mixed_data import make_source, write_csv

Sql = Callable[..., list[tuple[Any, ...]]]


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def _no_dataset(sql: Sql, table: str) -> None:
    assert sql("SELECT to_regclass($1) IS NULL", [f'"{table}"']) == [(True,)]
    assert sql("SELECT count(*) FROM biconic.datasets WHERE dataset = $1", [table]) == [(0,)]


def test_rolled_back_partition_leaves_no_archive_files(tmp_path: Path, pg_dsn: str, table: str, sql: Sql,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The files were placed under their final names; the transaction listing them failed."""
    data = write_csv(make_source(4_000, seed=1), tmp_path / "o.csv")

    def refused(*args: Any, **kwargs: Any) -> None:
        raise SinkError("record_files refused")

    archive = tmp_path / ".biconic" / "archive"
    with monkeypatch.context() as m:
        m.setattr(engine.pipeline.publish.meta, "record_files", refused)
        with pytest.raises(SinkError):
            engine.load(data, into=table, partition_by="created_at:month", dsn=pg_dsn)
    assert _files(archive) == []
    report = engine.load(data, into=table, partition_by="created_at:month", dsn=pg_dsn)  # a re-run completes
    assert report.archive_files == 9 and len(_files(archive)) == 9


def test_verify_failure_removes_the_files_placed_before_it(tmp_path: Path, pg_dsn: str, table: str, sql: Sql,
                                                           monkeypatch: pytest.MonkeyPatch, manual_clock: Any) -> None:
    data = write_csv(make_source(4_000, seed=2), tmp_path / "o.csv")
    real = engine.archive.writer.verify_parquet
    seen: list[int] = []

    def fifth_fails(expected: int) -> Any:
        seen.append(expected)
        return real(-1) if len(seen) == 5 else real(expected)

    archive = tmp_path / ".biconic" / "archive"
    monkeypatch.setattr(engine.archive.writer, "verify_parquet", fifth_fails)
    with pytest.raises(ArchiveError):
        engine.load(data, into=table, partition_by="created_at:month", dsn=pg_dsn)
    assert manual_clock.slept == ARCHIVE_UPLOAD.waits()
    assert _files(archive) == []  # four verified files were in place before the fifth failed


def test_a_rerun_keeps_the_committed_files(tmp_path: Path, pg_dsn: str, table: str, sql: Sql,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A full refresh re-places files under keys a committed load listed: a failure must not remove those."""
    data = write_csv(make_source(3_000, seed=3), tmp_path / "o.csv")
    engine.load(data, into=table, partition_by="created_at:month", mode="replace", dsn=pg_dsn)
    archive = tmp_path / ".biconic" / "archive"
    before = sorted(_files(archive))

    def refused(*args: Any, **kwargs: Any) -> None:
        raise SinkError("refused")

    monkeypatch.setattr(engine.pipeline.publish.meta, "bump_version", refused)
    with pytest.raises(SinkError):
        engine.load(data, into=table, partition_by="created_at:month", mode="replace", full_refresh=True,
                    dsn=pg_dsn)
    assert sorted(_files(archive)) == before


@pytest.mark.s3
def test_rolled_back_partition_leaves_no_s3_objects(tmp_path: Path, pg_dsn: str, table: str, sql: Sql,
                                                    s3_archive: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import s3fs

    data = write_csv(make_source(2_000, seed=4), tmp_path / "o.csv")

    def refused(*args: Any, **kwargs: Any) -> None:
        raise SinkError("refused")

    monkeypatch.setattr(engine.pipeline.publish.meta, "record_files", refused)
    with pytest.raises(SinkError):
        engine.load(data, into=table, partition_by="created_at:month", dsn=pg_dsn, archive=s3_archive)
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": os.environ["AWS_ENDPOINT_URL"]}, skip_instance_cache=True)
    root = s3_archive.removeprefix("s3://")
    assert [p for p in fs.find(root) if p.endswith(".parquet")] == []


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_work_folders_of_dead_processes_are_swept(tmp_path: Path, pg_dsn: str, table: str) -> None:
    work = tmp_path / ".biconic" / "tmp"
    dead = work / f"archive-{_dead_pid()}-abc123"
    alive = work / f"archive-{os.getppid()}-def456"  # another live process's load: left alone
    for folder in (dead, alive):
        folder.mkdir(parents=True)
        (folder / "part.parquet").write_bytes(b"x" * 1000)
    data = write_csv(make_source(1_000, seed=5), tmp_path / "o.csv")
    engine.load(data, into=table, dsn=pg_dsn)
    assert not dead.exists()
    assert alive.exists()
    assert sorted(p.name for p in work.iterdir()) == [alive.name]  # the load's own folder went too


def _corrupt_parquet(path: Path) -> Path:
    """A valid footer, first row groups that read, and a damaged page in the last row group."""
    n = 200_000
    df = pl.DataFrame({"id": range(n),
                       "created_at": [dt.datetime(2024, 1, 1) + dt.timedelta(minutes=i) for i in range(n)],
                       "name": [f"n{i % 977}" for i in range(n)]})
    pq.write_table(df.to_arrow(), path, row_group_size=20_000, compression="zstd")
    meta = pq.ParquetFile(path).metadata
    column = meta.row_group(meta.num_row_groups - 1).column(0)
    data = bytearray(path.read_bytes())
    middle = column.data_page_offset + column.total_compressed_size // 2
    data[middle:middle + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    return path


def test_failed_first_load_leaves_no_table(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    path = _corrupt_parquet(tmp_path / "bad.parquet")
    with pytest.raises(SourceError, match="bad.parquet"):
        engine.load(path, into=table, dsn=pg_dsn)
    _no_dataset(sql, table)


def test_failed_first_load_on_the_archive_leaves_no_table(tmp_path: Path, pg_dsn: str, table: str, sql: Sql,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise ArchiveError("x", "refused")

    monkeypatch.setattr(engine.archive.store.Store, "put_verified", refuse)
    with pytest.raises(ArchiveError):
        engine.load(write_csv(make_source(1_000, seed=6), tmp_path / "o.csv"), into=table, dsn=pg_dsn)
    _no_dataset(sql, table)


def test_a_failed_later_load_keeps_the_table(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    engine.load(write_csv(make_source(1_000, seed=7), tmp_path / "o.csv"), into=table, dsn=pg_dsn)
    with pytest.raises(SourceError):
        engine.load(_corrupt_parquet(tmp_path / "bad.parquet"), into=table, partition_by="created_at", dsn=pg_dsn)
    assert sql(f'SELECT count(*) FROM "{table}"') == [(1_000,)]
    assert sql("SELECT count(*) FROM biconic.datasets WHERE dataset = $1", [table]) == [(1,)]


def test_a_load_without_an_archive_sweeps_killed_loads_work_files_too(tmp_path: Path, pg_dsn: str,
                                                                       table: str) -> None:
    """A killed load's archive work folder and spool go at the next load's start, whatever that load writes."""
    work = tmp_path / ".biconic" / "tmp"
    pid = _dead_pid()
    dead = [work / f"archive-{pid}-abc123", work / f"api-{pid}-{'0' * 32}.ndjson"]
    alive = [work / f"archive-{os.getppid()}-def456", work / f"mongo-{os.getppid()}-{'1' * 32}.ndjson"]
    dead[0].mkdir(parents=True)
    alive[0].mkdir()
    for path in (dead[1], alive[1]):
        path.write_bytes(b"{}\n")
    engine.load(write_csv(make_source(500, seed=8), tmp_path / "o.csv"), into=table, dsn=pg_dsn, archive=False)
    assert sorted(p.name for p in work.iterdir()) == sorted(p.name for p in alive)
