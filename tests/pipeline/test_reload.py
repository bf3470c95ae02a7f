"""The re-load rule for files: a file is known by its bytes (touch, a re-download of the same bytes, a rename add
nothing; one changed byte loads it), and ``full_refresh`` reloads on purpose, per mode, finishing an interrupted
refresh without loading any partition twice."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

import engine
from engine.pipeline.runner import load_key, spec_hash
from engine.sources.base import Partition, file_fingerprint
from engine.spec.models import LoadSpec, SourceSpec
from engine.spec.parse import make_target
from tests.support import Sql, orders_frame, row_count


def _load(path: Path, table: str, dsn: str, **kwargs: Any) -> engine.LoadReport:
    return engine.load(path, into=table, partition_by="created_at", connection_id=1, dsn=dsn, **kwargs)


def test_a_touched_file_adds_nothing(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    path = tmp_path / "o.csv"
    orders_frame(12).write_csv(path)
    assert _load(path, table, pg_dsn).rows_loaded == 12
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    again = _load(path, table, pg_dsn)
    assert (again.rows_loaded, again.skipped_partitions) == (0, 1)
    assert row_count(sql, table) == 12


def test_the_same_bytes_downloaded_again_are_skipped(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    path = tmp_path / "o.csv"
    orders_frame(12).write_csv(path)
    data = path.read_bytes()
    _load(path, table, pg_dsn)
    path.unlink()
    path.write_bytes(data)  # a new inode, new times, the same bytes
    assert _load(path, table, pg_dsn).skipped_partitions == 1
    moved = tmp_path / "done" / "orders (1).csv"  # renamed and moved: the same data
    moved.parent.mkdir()
    shutil.copy(path, moved)
    assert _load(moved, table, pg_dsn).skipped_partitions == 1
    assert row_count(sql, table) == 12


def test_one_changed_byte_loads_the_file(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    path = tmp_path / "o.csv"
    orders_frame(13).write_csv(path)
    _load(path, table, pg_dsn)
    data = bytearray(path.read_bytes())
    assert data.endswith(b"Madrid\n")
    data[-2] = ord("x")  # the last city's last letter
    stat = path.stat()
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same mtime: only the bytes differ
    again = _load(path, table, pg_dsn)
    assert (again.rows_loaded, again.skipped_partitions) == (13, 0)
    assert row_count(sql, table) == 26


def test_identical_files_in_one_folder_both_load(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    orders_frame(5).write_csv(tmp_path / "monday.csv")
    shutil.copy(tmp_path / "monday.csv", tmp_path / "tuesday.csv")
    assert _load(tmp_path, table, pg_dsn).rows_loaded == 10
    assert _load(tmp_path, table, pg_dsn).skipped_partitions == 2
    assert row_count(sql, table) == 10


def test_files_loaded_by_an_older_release_are_still_known(tmp_path: Path, pg_dsn: str, table: str,
                                                          sql: Sql) -> None:
    """The ledger of a release that keyed files by path, size and mtime: its keys still count as loaded."""
    path = tmp_path / "o.csv"
    orders_frame(6).write_csv(path)
    _load(path, table, pg_dsn)
    spec = LoadSpec(source=SourceSpec(path=str(path)),
                    target=make_target({"table": table, "connection_id": 1, "partition_by": "created_at"}))
    old = load_key(spec.target, Partition(key=str(path.resolve()), label=path.name,
                                          fingerprint=file_fingerprint(path)), spec_hash(spec))
    sql("UPDATE biconic.loads SET load_key = $1 WHERE dataset = $2", [old, table])
    assert _load(path, table, pg_dsn).skipped_partitions == 1
    assert row_count(sql, table) == 6


# --- full refresh ---------------------------------------------------------------------------------------------
def test_full_refresh_reloads_per_mode(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    path = tmp_path / "o.csv"
    orders_frame(8).write_csv(path)
    _load(path, table, pg_dsn)
    assert _load(path, table, pg_dsn, full_refresh=True).rows_loaded == 8  # append: added again, on purpose
    assert row_count(sql, table) == 16
    assert _load(path, table, pg_dsn).skipped_partitions == 1  # and a plain re-run still adds nothing
    merged = f"{table}_m"
    _load(path, merged, pg_dsn, mode="merge", key="order_id")
    sql(f"UPDATE \"{merged}\" SET city = 'gone'")
    assert _load(path, merged, pg_dsn, mode="merge", key="order_id").skipped_partitions == 1
    assert _load(path, merged, pg_dsn, mode="merge", key="order_id", full_refresh=True).rows_loaded == 8
    assert sql(f'SELECT count(*), count(*) FILTER (WHERE city = \'gone\') FROM "{merged}"') == [(8, 0)]
    replaced = f"{table}_r"
    _load(path, replaced, pg_dsn, mode="replace")
    sql(f'DELETE FROM "{replaced}" WHERE order_id > 2')
    assert _load(path, replaced, pg_dsn, mode="replace").skipped_partitions == 1
    forced = _load(path, replaced, pg_dsn, mode="replace", full_refresh=True)
    assert (forced.rows_loaded, forced.skipped_partitions) == (8, 0)
    assert row_count(sql, replaced) == 8


def test_a_first_load_as_full_refresh_is_known_to_later_runs(tmp_path: Path, pg_dsn: str, table: str,
                                                             sql: Sql) -> None:
    path = tmp_path / "o.csv"
    orders_frame(4).write_csv(path)
    assert _load(path, table, pg_dsn, full_refresh=True).rows_loaded == 4
    assert _load(path, table, pg_dsn).skipped_partitions == 1
    assert row_count(sql, table) == 4


@dataclasses.dataclass
class _FailOn:
    """Fails the load when it reaches the partition ``label`` (after the ones before it committed)."""

    label: str

    def update(self, *, label: str, rows: int, done: int, total: int) -> None:
        if label == self.label:
            raise KeyboardInterrupt


def test_an_interrupted_full_refresh_resumes_without_duplicates(tmp_path: Path, pg_dsn: str, table: str,
                                                                sql: Sql) -> None:
    for name in ("a.csv", "b.csv"):
        orders_frame(5, start=dt.date(2024, 1 if name == "a.csv" else 6, 1)).write_csv(tmp_path / name)
    _load(tmp_path, table, pg_dsn)
    assert row_count(sql, table) == 10
    with pytest.raises(KeyboardInterrupt):
        _load(tmp_path, table, pg_dsn, full_refresh=True, progress=_FailOn("b.csv"))
    assert row_count(sql, table) == 15  # a.csv committed again, b.csv rolled back
    resumed = _load(tmp_path, table, pg_dsn, full_refresh=True)
    assert (resumed.rows_loaded, resumed.skipped_partitions) == (5, 1)  # only b.csv: a.csv is not loaded twice
    assert row_count(sql, table) == 20
    assert _load(tmp_path, table, pg_dsn, full_refresh=True).rows_loaded == 10  # finished: the next starts anew
    assert sql("SELECT count(*) FROM biconic.refreshes WHERE dataset = $1", [table]) == [(0,)]
