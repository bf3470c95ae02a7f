"""A full, read-only or vanished disk during a load: one line naming the path and the space free there, the
storage exit code, nothing committed; never a traceback."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import engine
import engine.archive.writer
from engine.cli import cli
from engine.errors import StorageError
from tests.mixed_data import make_source, write_csv

Sql = Callable[..., list[tuple[Any, ...]]]
ROOT = Path(__file__).resolve().parents[2]


def _nothing_committed(sql: Sql, table: str) -> None:
    assert sql("SELECT count(*) FROM biconic.loads WHERE dataset = $1", [table]) == [(0,)]
    assert sql("SELECT count(*) FROM biconic.archive_files WHERE dataset = $1", [table]) == [(0,)]
    assert sql("SELECT to_regclass($1) IS NULL", [f'"{table}"']) == [(True,)]  # a first load: no empty table


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_file_size_limit_in_a_real_process(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    """The archive's work files cross the process's file size limit (EFBIG, as a full disk fails a write)."""
    data = write_csv(make_source(60_000, seed=3), tmp_path / "big.csv")
    limit = 16 * 1024
    script = ("import resource, signal, sys\n"
              "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
              f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
              "from engine.cli import main\n"
              f"sys.argv = ['biconic', 'load', {str(data)!r}, '--into', {table!r}, '--dsn', {pg_dsn!r}]\n"
              "main()\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    line = _one_line(done.stderr)
    assert done.returncode == StorageError.exit_code, done.stderr
    home = tmp_path / ".biconic" / "tmp"
    assert line.startswith(f"error: {home}/archive-"), line
    assert "file too large" in line and " free there)" in line
    _nothing_committed(sql, table)
    assert not list(home.glob("archive-*"))  # its work files went with it


def test_disk_full_at_the_writer(tmp_path: Path, pg_dsn: str, table: str, sql: Sql,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    data = write_csv(make_source(4_000, seed=4), tmp_path / "o.csv")

    def full(self: Any, *args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", full)
    result = CliRunner().invoke(cli, ["load", str(data), "--into", table, "--dsn", pg_dsn])
    assert result.exit_code == StorageError.exit_code, result.output
    line = _one_line(result.stderr)
    assert line.startswith(f"error: {tmp_path / '.biconic' / 'tmp'}/archive-")
    assert "no space left on device (" in line and " free there); free some space and re-run" in line
    _nothing_committed(sql, table)


def test_read_only_archive_folder(tmp_path: Path, pg_dsn: str, table: str, sql: Sql,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    data = write_csv(make_source(2_000, seed=5), tmp_path / "o.csv")
    archive = tmp_path / "archive"
    archive.mkdir()
    if os.geteuid() == 0:  # root writes through any mode: the filesystem refuses instead
        from fsspec.implementations.local import LocalFileSystem

        def read_only(self: Any, lpath: str, rpath: str, **kwargs: Any) -> None:
            raise OSError(errno.EROFS, "Read-only file system", rpath)

        monkeypatch.setattr(LocalFileSystem, "put_file", read_only)
        said = "read-only filesystem"
    else:
        archive.chmod(0o555)
        said = "permission denied"
    try:
        result = CliRunner().invoke(cli, ["load", str(data), "--into", table, "--dsn", pg_dsn,
                                          "--archive", str(archive)])
    finally:
        archive.chmod(0o755)
    assert result.exit_code == StorageError.exit_code, result.output
    line = _one_line(result.stderr)
    assert line.startswith(f"error: {archive}/{table}/connection_id="), line  # the file it was placing
    assert f": {said} (" in line and " free there)" in line
    _nothing_committed(sql, table)
    assert not [p for p in archive.rglob("*") if p.is_file()]


def test_vanished_work_folder(tmp_path: Path, pg_dsn: str, table: str, sql: Sql,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The work folder removed under a running load (a tmp cleaner): a missing folder, one line."""
    data = write_csv(make_source(2_000, seed=6), tmp_path / "o.csv")
    gone = tmp_path / "gone"
    monkeypatch.setattr(engine.archive.writer.tempfile, "mkdtemp", lambda **kwargs: str(gone))
    with pytest.raises(StorageError) as info:
        engine.load(data, into=table, dsn=pg_dsn)
    assert info.value.path == str(gone)
    assert "no such file or folder" in str(info.value)
    _nothing_committed(sql, table)


def test_unwritable_data_folder_from_the_cli(tmp_path: Path, pg_dsn: str, table: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """BICONIC_HOME under a file: the data folder cannot be made (and no traceback says so)."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("BICONIC_HOME", str(blocker / "home"))
    data = write_csv(make_source(500, seed=7), tmp_path / "o.csv")
    result = CliRunner().invoke(cli, ["load", str(data), "--into", table, "--dsn", pg_dsn])
    assert result.exit_code == StorageError.exit_code, result.output
    line = _one_line(result.stderr)
    assert line.startswith(f"error: {blocker / 'home'}") and "not a folder" in line and " free there)" in line


def test_file_size_limit_under_the_utf8_copy_of_a_source(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    """A latin-1 CSV is copied to UTF-8 in the data folder before it is read: a full disk there names that
    folder and the space free in it (the copy is unlinked: its own name would say nothing)."""
    rows = ["id,name"] + [f"{i},caf\xe9 {i}" for i in range(20_000)]
    data = tmp_path / "latin1.csv"
    data.write_text("\n".join(rows) + "\n", encoding="latin-1")
    limit = 16 * 1024
    script = ("import resource, signal, sys\n"
              "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
              f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
              "from engine.cli import main\n"
              f"sys.argv = ['biconic', 'load', {str(data)!r}, '--into', {table!r}, '--dsn', {pg_dsn!r},\n"
              "            '--archive', 'off', '--option', 'encoding=latin-1']\n"
              "main()\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1",
           "BICONIC_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    line = _one_line(done.stderr)
    assert done.returncode == StorageError.exit_code, done.stderr
    assert line.startswith(f"error: {tmp_path / 'home' / 'tmp'}: file too large"), line
    assert " free there)" in line
    _nothing_committed(sql, table)


def test_disk_full_under_a_spool_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An API or MongoDB read spooled to disk: a full disk names the spool and the space free there."""
    from engine.sources.api.spool import Spool

    class Full:
        def write(self, data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self) -> None:
            pass

    monkeypatch.setenv("BICONIC_HOME", str(tmp_path / "home"))
    owner = Full()
    spool = Spool(owner, kind="api")
    real, spool._file = spool._file, Full()  # type: ignore[assignment]
    try:
        with pytest.raises(StorageError) as info:
            spool.write([{"id": 1}])
    finally:
        real.close()
    assert info.value.path == str(spool.path)
    assert "no space left on device (" in str(info.value) and " free there)" in str(info.value)
