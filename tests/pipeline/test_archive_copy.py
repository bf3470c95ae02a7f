"""The archive copy of every load against a real PostgreSQL (and a real S3 endpoint): layout, manifest, footers,
checksums and contents; idempotent re-runs; a failing archive commits nothing; unlisted files are never read;
replace supersedes; archiving off; hostile table names stay inside the archive."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq
import pytest

import engine
import engine.archive.store
import engine.archive.writer
from engine.errors import ArchiveError
from engine.reads.duck import run_query
from engine.report import LoadReport
from engine.retry import ARCHIVE_UPLOAD
from tests.mixed_data import TYPES, expected, make_source, write_csv

Sql = Callable[..., list[tuple[Any, ...]]]

MANIFEST_COLUMNS = ["uri", "dataset", "connection_id", "period", "load_key", "rows", "bytes", "sha256", "min_time",
                    "max_time", "state"]
def manifest(sql: Sql, table: str) -> list[dict[str, Any]]:
    rows = sql(f"SELECT {', '.join(MANIFEST_COLUMNS)} FROM biconic.archive_files WHERE dataset = $1 ORDER BY uri",
               [table])
    return [dict(zip(MANIFEST_COLUMNS, r, strict=True)) for r in rows]


def load_keys(sql: Sql, table: str) -> list[str]:
    return [str(r[0]) for r in sql("SELECT load_key FROM biconic.loads WHERE dataset = $1 ORDER BY 1", [table])]


def count(sql: Sql, table: str) -> int:
    exists = sql("SELECT to_regclass($1) IS NOT NULL", [f'"{table}"'])[0][0]
    return int(sql(f'SELECT count(*) FROM "{table}"')[0][0]) if exists else 0


def month(d: dt.datetime) -> dt.date:
    return dt.date(d.year, d.month, 1)


def check_round_trip(report: LoadReport, files: list[dict[str, Any]], *, fs: Any, root: str, uri_root: str,
                     table: str, source: pl.DataFrame, source_path: Path, keys: list[str]) -> None:
    """Everything the archive promises about one committed load of ``source``: layout, manifest, footers,
    checksums, codec, contents and the report's figures."""
    assert len(keys) == 1
    (key,) = keys
    groups = source.group_by("connection_id", pl.col("created_at").dt.truncate("1mo").dt.date().alias("period")).agg(
        pl.len().alias("rows"), pl.col("created_at").min().alias("lo"), pl.col("created_at").max().alias("hi"))
    assert groups.height == 9  # 3 connections x 3 months
    wanted = {f"{uri_root}/{table}/connection_id={g['connection_id']}/period={g['period']}/{key}.parquet": g
              for g in groups.iter_rows(named=True)}
    # exactly the layout paths, listed once each, nothing else left in the dataset's folder (no temporaries)
    assert sorted(f["uri"] for f in files) == sorted(wanted)
    on_disk = sorted(p for p in fs.find(f"{root}/{table}"))
    assert on_disk == sorted(u.removeprefix("s3://") for u in wanted)
    assert sum(f["rows"] for f in files) == report.rows_loaded == source.height
    frames = []
    for f in files:
        g = wanted[f["uri"]]
        assert (f["dataset"], f["connection_id"], f["period"], f["load_key"], f["state"]) == \
            (table, str(g["connection_id"]), g["period"], key, "hot")
        path = f["uri"].removeprefix("s3://")
        data = fs.cat_file(path)
        assert f["bytes"] == len(data) == fs.size(path)
        assert f["sha256"] == hashlib.sha256(data).hexdigest()
        with fs.open(path, "rb") as fh:
            meta = pq.ParquetFile(fh).metadata
            fh.seek(0)
            frame = pl.read_parquet(fh)
        assert meta.num_rows == f["rows"] == g["rows"]
        codecs = {meta.row_group(r).column(c).compression for r in range(meta.num_row_groups)
                  for c in range(meta.num_columns)}
        assert codecs == {"ZSTD"}
        assert f["min_time"] == g["lo"].replace(tzinfo=dt.UTC)
        assert f["max_time"] == g["hi"].replace(tzinfo=dt.UTC)
        # every row sits in its own connection's and month's file
        assert frame["connection_id"].unique().to_list() == [g["connection_id"]]
        assert frame["created_at"].dt.truncate("1mo").dt.date().unique().to_list() == [g["period"]]
        frames.append(frame)
    archived = pl.concat(frames).sort("id")
    assert archived.columns[0] == "connection_id"  # the table's layout
    assert archived.select(list(TYPES)).equals(expected(source))
    assert report.archive_files == len(files)
    assert report.archive_bytes == sum(f["bytes"] for f in files)
    assert report.source_bytes == source_path.stat().st_size
    assert report.compression_ratio == round(report.source_bytes / report.archive_bytes, 2)


# --- round trips --------------------------------------------------------------------------------------------
def test_round_trip_local(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    from fsspec.implementations.local import LocalFileSystem

    source = make_source()
    path = write_csv(source, tmp_path / "orders.csv")
    report = engine.load(path, into=table, partition_by="created_at:month", dsn=pg_dsn)
    root = str((tmp_path / ".biconic" / "archive").resolve())
    assert report.archive == root
    check_round_trip(report, manifest(sql, table), fs=LocalFileSystem(), root=root, uri_root=root, table=table,
                     source=source, source_path=path, keys=load_keys(sql, table))
    assert count(sql, table) == source.height
    # the writer's local staging files are gone
    assert not [p for p in (tmp_path / ".biconic" / "tmp").rglob("*") if p.is_file()]


@pytest.mark.s3
def test_round_trip_s3(tmp_path: Path, pg_dsn: str, table: str, sql: Sql, s3_archive: str) -> None:
    import s3fs

    source = make_source(seed=11)
    path = write_csv(source, tmp_path / "orders.csv")
    report = engine.load(path, into=table, partition_by="created_at:month", dsn=pg_dsn, archive=s3_archive)
    assert report.archive == s3_archive
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": os.environ["AWS_ENDPOINT_URL"],
                                          "region_name": "us-east-1"}, skip_instance_cache=True)
    check_round_trip(report, manifest(sql, table), fs=fs, root=s3_archive.removeprefix("s3://"), uri_root=s3_archive,
                     table=table, source=source, source_path=path, keys=load_keys(sql, table))
    # and DuckDB reads them back from S3
    got = run_query(f"SELECT * EXCLUDE (period) FROM archive.{table} ORDER BY id", dsn=pg_dsn, archive=s3_archive)
    assert got.frame.select(list(TYPES)).equals(expected(source))


def test_many_groups_split_into_part_files(tmp_path: Path, pg_dsn: str, table: str, sql: Sql,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """More live (connection, period) groups than open writers: the least recently used writer is closed, with
    the rows it had buffered, and its group goes on in a new part file. No row is lost or doubled."""
    monkeypatch.setattr(engine.archive.writer, "OPEN_WRITERS", 2)
    monkeypatch.setattr(engine.archive.writer, "ROW_GROUP_ROWS", 300)
    monkeypatch.setattr(engine.archive.writer, "BUFFER_ROWS", 2_000)
    monkeypatch.setenv("BICONIC_BATCH_ROWS", "1000")
    source = make_source(6_000, seed=3)
    path = write_csv(source, tmp_path / "o.csv")
    report = engine.load(path, into=table, partition_by="created_at:month", dsn=pg_dsn)
    files = manifest(sql, table)
    (key,) = load_keys(sql, table)
    assert len(files) > 9  # some groups needed part files
    assert any(f["uri"].endswith(f"{key}-1.parquet") for f in files)
    assert sum(f["rows"] for f in files) == report.rows_loaded == source.height
    frames = []
    for f in files:
        assert pq.ParquetFile(f["uri"]).metadata.num_rows == f["rows"]
        frame = pl.read_parquet(f["uri"])
        assert frame["connection_id"].unique().to_list() == [int(f["connection_id"])]
        frames.append(frame)
    assert pl.concat(frames).sort("id").select(list(TYPES)).equals(expected(source))


# --- re-runs ------------------------------------------------------------------------------------------------
def test_rerun_writes_nothing_new(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    source = make_source(3_000)
    path = write_csv(source, tmp_path / "o.csv")
    first = engine.load(path, into=table, partition_by="created_at:month", dsn=pg_dsn)
    before = sql("SELECT uri, sha256, load_id, created_at, changed_at, state FROM biconic.archive_files "
                 "WHERE dataset = $1 ORDER BY uri", [table])
    root = tmp_path / ".biconic" / "archive" / table
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert first.archive_files == len(before) == 9
    again = engine.load(path, into=table, partition_by="created_at:month", dsn=pg_dsn)
    assert (again.skipped_partitions, again.rows_loaded, again.archive_files, again.archive_bytes) == (1, 0, 0, 0)
    assert again.compression_ratio is None
    assert sql("SELECT uri, sha256, load_id, created_at, changed_at, state FROM biconic.archive_files "
               "WHERE dataset = $1 ORDER BY uri", [table]) == before
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == stamps
    assert count(sql, table) == source.height


# --- a failing archive commits nothing ----------------------------------------------------------------------
def _nothing_committed(sql: Sql, table: str) -> None:
    assert count(sql, table) == 0
    assert load_keys(sql, table) == []
    assert manifest(sql, table) == []


@pytest.mark.s3
def test_missing_bucket_commits_nothing_and_a_rerun_completes(tmp_path: Path, pg_dsn: str, table: str, sql: Sql,
                                                               s3_archive: str,
                                                               manual_clock: Any) -> None:
    source = make_source(4_000, seed=5)
    path = write_csv(source, tmp_path / "o.csv")
    missing = "s3://biconic-no-such-bucket-" + table.replace("_", "-") + "/archive"
    with pytest.raises(ArchiveError) as info:
        engine.load(path, into=table, partition_by="created_at:month", dsn=pg_dsn, archive=missing)
    assert info.value.attempts == ARCHIVE_UPLOAD.attempts
    assert info.value.exit_code == 7
    assert "nothing of its partition was committed" in str(info.value)  # its only partition
    _nothing_committed(sql, table)
    report = engine.load(path, into=table, partition_by="created_at:month", dsn=pg_dsn, archive=s3_archive)
    assert (report.rows_loaded, report.skipped_partitions, report.archive_files) == (source.height, 0, 9)
    assert count(sql, table) == source.height
    assert sql(f'SELECT count(DISTINCT id) FROM "{table}"')[0][0] == source.height
    files = manifest(sql, table)
    assert sum(f["rows"] for f in files) == source.height
    assert all(f["uri"].startswith(s3_archive + "/") for f in files)


def test_local_archive_failure_commits_nothing_and_a_rerun_completes(tmp_path: Path, pg_dsn: str, table: str,
                                                                     sql: Sql, monkeypatch: pytest.MonkeyPatch,
                                                                     manual_clock: Any) -> None:
    from fsspec.implementations.local import LocalFileSystem

    calls: list[str] = []

    def broken(self: Any, lpath: str, rpath: str, **kwargs: Any) -> None:
        calls.append(rpath)
        raise OSError(5, "Input/output error", rpath)  # a disk full or read-only is no retry's: test_disk_errors

    source = make_source(4_000, seed=6)
    path = write_csv(source, tmp_path / "o.csv")
    with monkeypatch.context() as m:
        m.setattr(LocalFileSystem, "put_file", broken)
        with pytest.raises(ArchiveError) as info:
            engine.load(path, into=table, partition_by="created_at:month", dsn=pg_dsn)
    assert len(calls) == ARCHIVE_UPLOAD.attempts  # retried, then reported
    assert manual_clock.slept == ARCHIVE_UPLOAD.waits()  # backing off on the clock, not the wall
    assert "Input/output error" in str(info.value)
    _nothing_committed(sql, table)
    archive = tmp_path / ".biconic" / "archive"
    assert not [p for p in archive.rglob("*") if p.is_file()]
    report = engine.load(path, into=table, partition_by="created_at:month", dsn=pg_dsn)
    assert (report.rows_loaded, report.archive_files) == (source.height, 9)
    assert count(sql, table) == source.height
    assert sum(f["rows"] for f in manifest(sql, table)) == source.height


def test_an_archive_failing_part_way_through_a_folder_says_what_committed(
        tmp_path: Path, pg_dsn: str, table: str, sql: Sql, monkeypatch: pytest.MonkeyPatch,
        manual_clock: Any) -> None:
    """Five files, one archive file each; the archive store fails from the third on. The first two committed
    and stay: the message must say so (not "nothing was committed"), name them and the one that stopped the
    load, keep the archive error's exit code, stay transient, and a re-run must finish the rest."""
    from fsspec.implementations.local import LocalFileSystem

    folder = tmp_path / "in"
    folder.mkdir()
    for n, name in enumerate("abcde"):
        rows = "".join(f"{n * 100 + i},2024-0{n + 1}-0{i + 1}\n" for i in range(3))
        (folder / f"{name}.csv").write_text("id,created_at\n" + rows)
    real_put = LocalFileSystem.put_file
    puts: list[str] = []

    def fails_from_the_third(self: Any, lpath: str, rpath: str, **kwargs: Any) -> None:
        puts.append(rpath)
        if len(puts) > 2:
            raise OSError(5, "Input/output error", rpath)  # retried (a full disk would stop at once)
        real_put(self, lpath, rpath, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(LocalFileSystem, "put_file", fails_from_the_third)
        with pytest.raises(engine.StoppedLoadError) as info:
            engine.load(folder, into=table, partition_by="created_at:month", connection_id=7, dsn=pg_dsn)
    said = str(info.value)
    assert "nothing was committed" not in said and "\n" not in said, said
    assert said.startswith("2 of 5 source partitions committed (a.csv, b.csv; 6 rows); this one (c.csv) and the "
                           "2 after it were not: re-run to finish. "), said
    assert "Input/output error" in said
    assert info.value.exit_code == ArchiveError.exit_code == 7
    assert isinstance(info.value, engine.TransientError) and isinstance(info.value.error, ArchiveError)
    assert count(sql, table) == 6
    report = engine.load(folder, into=table, partition_by="created_at:month", connection_id=7, dsn=pg_dsn)
    assert (report.skipped_partitions, report.rows_loaded) == (2, 9)
    assert count(sql, table) == 15


def test_failed_replace_keeps_the_old_rows_and_their_files(tmp_path: Path, pg_dsn: str, table: str, sql: Sql,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    old = make_source(2_000, seed=1)
    new = make_source(2_500, seed=2, first_id=10_000)
    engine.load(write_csv(old, tmp_path / "old.csv"), into=table, partition_by="created_at:month", mode="replace",
                dsn=pg_dsn)
    before = manifest(sql, table)

    def refuse(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise ArchiveError("s3://x/y", "refused")

    with monkeypatch.context() as m:
        m.setattr(engine.archive.store.Store, "put_verified", refuse)
        with pytest.raises(ArchiveError):
            engine.load(write_csv(new, tmp_path / "new.csv"), into=table, partition_by="created_at:month",
                        mode="replace", dsn=pg_dsn)
    assert manifest(sql, table) == before  # still 'hot', not superseded
    assert sql(f'SELECT min(id), max(id), count(*) FROM "{table}"')[0] == (1, 2_000, 2_000)


def test_transient_and_torn_uploads_are_retried(tmp_path: Path, pg_dsn: str, table: str, sql: Sql,
                                                monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture, manual_clock: Any) -> None:
    """The first upload fails outright, the second is torn (half the bytes): both are caught and retried."""
    from fsspec.implementations.local import LocalFileSystem

    real = LocalFileSystem.put_file
    calls: list[str] = []

    def flaky(self: Any, lpath: str, rpath: str, **kwargs: Any) -> None:
        calls.append(rpath)
        if len(calls) == 1:
            raise ConnectionResetError("connection reset by peer")
        if len(calls) == 2:
            data = Path(lpath).read_bytes()
            Path(rpath).parent.mkdir(parents=True, exist_ok=True)
            Path(rpath).write_bytes(data[: len(data) // 2])
            return
        real(self, lpath, rpath, **kwargs)

    monkeypatch.setattr(LocalFileSystem, "put_file", flaky)
    source = make_source(3_000, seed=9)
    path = write_csv(source, tmp_path / "o.csv")
    with caplog.at_level(logging.WARNING, logger="biconic.storage"):
        report = engine.load(path, into=table, partition_by="created_at:month", dsn=pg_dsn)
    assert len(calls) == 9 + 2
    assert "/." in calls[0] and ".tmp-" in calls[0]  # uploads go to a temporary key first
    assert len([r for r in caplog.records if r.name == "biconic.storage" and r.levelno == logging.WARNING]) == 2
    assert report.rows_loaded == source.height
    files = manifest(sql, table)
    assert len(files) == 9
    for f in files:
        data = Path(f["uri"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == f["sha256"]
        assert pq.ParquetFile(f["uri"]).metadata.num_rows == f["rows"]
    dataset = tmp_path / ".biconic" / "archive" / table
    assert sorted(str(p) for p in dataset.rglob("*") if p.is_file()) == sorted(f["uri"] for f in files)


# --- readers list the manifest, never the folder ------------------------------------------------------------
def test_unlisted_and_torn_files_are_never_read(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    source = make_source(2_000, seed=4)
    engine.load(write_csv(source, tmp_path / "o.csv"), into=table, partition_by="created_at:month", dsn=pg_dsn)
    q = f"SELECT count(*) AS n, sum(qty) AS s FROM archive.{table}"
    before = run_query(q, dsn=pg_dsn, cache=False).frame
    assert before["n"][0] == source.height
    folder = tmp_path / ".biconic" / "archive" / table / "connection_id=1" / "period=2024-01-01"
    listed = next(folder.glob("*.parquet"))
    # a stray copy, a part of an orphaned upload and a torn file, in the folder DuckDB would glob
    (folder / "stray.parquet").write_bytes(listed.read_bytes())
    (folder / f".{listed.name}.tmp-1234abcd").write_bytes(listed.read_bytes())
    (folder / "torn.parquet").write_bytes(listed.read_bytes()[:100])
    (folder.parent / "period=2024-04-01").mkdir()
    (folder.parent / "period=2024-04-01" / "new.parquet").write_bytes(listed.read_bytes())
    after = run_query(q, dsn=pg_dsn, cache=False).frame
    assert after.equals(before)
    assert run_query(f"SELECT count(*) FROM {table}", dsn=pg_dsn, cache=False).frame.item() == source.height


# --- modes and settings -------------------------------------------------------------------------------------
def test_replace_supersedes_the_old_files(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    old = make_source(2_000, seed=1)
    new = make_source(1_500, seed=2, first_id=50_000, start=dt.datetime(2024, 2, 1), days=45)
    engine.load(write_csv(old, tmp_path / "old.csv"), into=table, partition_by="created_at:month", mode="replace",
                dsn=pg_dsn)
    old_files = manifest(sql, table)
    assert {f["state"] for f in old_files} == {"hot"} and len(old_files) == 9
    report = engine.load(write_csv(new, tmp_path / "new.csv"), into=table, partition_by="created_at:month",
                         mode="replace", dsn=pg_dsn)
    assert report.rows_loaded == new.height
    files = {f["uri"]: f for f in manifest(sql, table)}
    assert {files[f["uri"]]["state"] for f in old_files} == {"superseded"}
    hot = [f for f in files.values() if f["state"] == "hot"]
    assert {f["uri"] for f in hot}.isdisjoint(f["uri"] for f in old_files)
    assert sum(f["rows"] for f in hot) == new.height
    assert {f["period"] for f in hot} == {dt.date(2024, 2, 1), dt.date(2024, 3, 1)}
    assert all(Path(f["uri"]).exists() for f in old_files)  # kept for audit
    # readers see the new rows only, in the table and in the raw archive
    for view in (table, f"archive.{table}"):
        got = run_query(f"SELECT min(id) AS lo, max(id) AS hi, count(*) AS n FROM {view}", dsn=pg_dsn).frame
        assert got.row(0) == (50_000, 50_000 + new.height - 1, new.height)
    # replacing with the first file again lists its files as hot again
    engine.load(tmp_path / "old.csv", into=table, partition_by="created_at:month", mode="replace", dsn=pg_dsn)
    states = {f["uri"]: f["state"] for f in manifest(sql, table)}
    assert {states[f["uri"]] for f in old_files} == {"hot"}
    assert {s for u, s in states.items() if u not in {f["uri"] for f in old_files}} == {"superseded"}
    got = run_query(f"SELECT count(*) FROM archive.{table}", dsn=pg_dsn).frame.item()
    assert got == old.height


def test_archive_off_writes_nothing(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    source = make_source(1_000)
    report = engine.load(write_csv(source, tmp_path / "o.csv"), into=table, partition_by="created_at:month",
                         dsn=pg_dsn, archive=False)
    assert report.archive is None
    assert (report.archive_files, report.archive_bytes, report.compression_ratio) == (0, 0, None)
    assert report.rows_loaded == count(sql, table) == source.height
    assert manifest(sql, table) == []
    assert not list(tmp_path.rglob("*.parquet"))


@pytest.mark.parametrize("name", ["we/ird na-me %2F x", "../../evil.x/y"])
def test_hostile_table_names_stay_inside_the_archive(tmp_path: Path, pg_dsn: str, sql: Sql, name: str) -> None:
    schema, _, _ = name.rpartition(".")
    if schema:
        sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    source = make_source(600, seed=8)
    report = engine.load(write_csv(source, tmp_path / "o.csv"), into=name, partition_by="created_at:month",
                         dsn=pg_dsn)
    root = (tmp_path / ".biconic" / "archive").resolve()
    files = manifest(sql, name)
    assert len(files) == report.archive_files == 9
    inside = [Path(os.path.realpath(f["uri"])) for f in files]
    assert all(p.is_relative_to(root) and p.is_file() for p in inside)
    # one folder for the dataset, directly under the archive root
    assert {p.relative_to(root).parts[0] for p in inside} == {engine.archive.writer.dataset_dir(name)}
    assert len({p.relative_to(root).parts[0] for p in inside}) == 1
    assert sorted(tmp_path.rglob("*.parquet")) == sorted(inside)
    table = name.rpartition(".")[2].replace('"', '""')
    view = f'"{schema}"."{table}"' if schema else f'"{table}"'
    got = run_query(f"SELECT count(*) FROM archive.{view}", dsn=pg_dsn).frame.item()
    assert got == source.height


def test_compression_ratio_is_null_when_the_source_size_is_unknown(pg_dsn: str, sql: Sql, table: str) -> None:
    """A query has no size in bytes: its ratio is null (as for archiving off), not 0.0."""
    report = engine.load(pg_dsn, into=table, dsn=pg_dsn, options={"query": "SELECT 1 AS id, date '2024-01-01' AS day"})
    assert report.source_bytes == 0 and report.archive_bytes > 0
    assert report.compression_ratio is None and "source/archive" not in report.summary()
