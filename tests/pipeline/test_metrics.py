"""A load moves the engine's metrics (``engine.metrics``): rows read, loaded, quarantined by rule and filtered,
bytes, transformation steps per partition, the outcome and duration, a failure's class and exit code, the
retries of a refused source connect, and PostgreSQL connections back where they were. The registry is the
process's, so each test reads deltas."""

from __future__ import annotations

import socket
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import engine
from engine.errors import BiconicError
from engine.metrics import recorded
from engine.postgres.connection import Session
from engine.postgres.pool import close_idle


def value(name: str, **labels: str) -> float:
    return recorded().get_sample_value(name, labels) or 0.0


def deltas(*series: tuple[str, dict[str, str]]) -> Callable[[], list[float]]:
    """The series' values now; call the result for how much each moved since."""
    before = [value(name, **labels) for name, labels in series]
    return lambda: [value(name, **labels) - b for (name, labels), b in zip(series, before, strict=True)]


def _csv(path: Path, rows: int, *, first: int = 0) -> Path:
    path.write_text("id,city\n" + "".join(f"{first + i},c{i % 3}\n" for i in range(rows)), encoding="utf-8")
    return path


def test_a_load_counts_rows_bytes_outcome_and_duration(tmp_path: Path, pg_dsn: str, table: str) -> None:
    path = _csv(tmp_path / "a.csv", 25)
    moved = deltas(("biconic_rows_read_total", {"source_kind": "csv"}),
                   ("biconic_rows_loaded_total", {"mode": "append"}),
                   ("biconic_bytes_read_total", {"source_kind": "csv"}),
                   ("biconic_bytes_archived_total", {}),
                   ("biconic_loads_total", {"outcome": "succeeded"}),
                   ("biconic_load_duration_seconds_count", {"outcome": "succeeded"}))
    report = engine.load(path, into=table, dsn=pg_dsn)
    assert moved() == [25, 25, path.stat().st_size, report.archive_bytes, 1, 1]
    assert report.archive_bytes > 0

    again = deltas(("biconic_loads_total", {"outcome": "nothing_to_do"}), ("biconic_rows_read_total",
                                                                           {"source_kind": "csv"}))
    engine.load(path, into=table, dsn=pg_dsn)  # loaded before: nothing read, nothing to do
    assert again() == [1, 0]


def test_a_failed_load_counts_as_failed_with_its_error_class_and_exit_code(tmp_path: Path, pg_dsn: str,
                                                                           table: str) -> None:
    moved = deltas(("biconic_loads_total", {"outcome": "failed"}),
                   ("biconic_load_duration_seconds_count", {"outcome": "failed"}))
    with pytest.raises(BiconicError) as info:
        engine.load(tmp_path / "missing.csv", into=table, dsn=pg_dsn)
    error = {"type": type(info.value).__name__, "exit_code": str(info.value.exit_code)}
    assert error["exit_code"] != "1"
    assert moved() == [1, 1]
    # counted once, where the load failed: a second failure adds one more
    counted = deltas(("biconic_errors_total", error))
    with pytest.raises(BiconicError):
        engine.load(tmp_path / "missing.csv", into=table, dsn=pg_dsn)
    assert counted() == [1]


def test_quarantined_rows_count_by_rule_and_filtered_rows_too(tmp_path: Path, pg_dsn: str, table: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(textwrap.dedent("""\
        order_id,importe,city
        1,5,Madrid
        2,-5,Lima
        ,8,Quito
        4,9,Bogota
        """), encoding="utf-8")
    spec = {"steps": [{"filter": "city <> 'Bogota'"}],
            "rules": [{"not_null": "order_id"}, {"range": {"column": "importe", "min": 0}}]}
    moved = deltas(("biconic_rows_quarantined_total", {"rule": "not_null"}),
                   ("biconic_rows_quarantined_total", {"rule": "range"}),
                   ("biconic_rows_filtered_total", {}),
                   ("biconic_rows_loaded_total", {"mode": "append"}))
    report = engine.load(path, into=table, spec=spec, dsn=pg_dsn, archive=False)
    assert report.quarantine_by_rule == {"not_null": 1, "range": 1}
    assert moved() == [1, 1, 1, 1]


def test_each_step_counts_once_per_partition(tmp_path: Path, pg_dsn: str, table: str) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    _csv(folder / "a.csv", 5)
    _csv(folder / "b.csv", 5, first=5)
    spec = {"steps": [{"rename": {"city": "town"}}, {"filter": "id >= 0"}, {"cast": {"id": "bigint"}}]}
    moved = deltas(("biconic_transform_steps_total", {"step": "rename"}),
                   ("biconic_transform_steps_total", {"step": "filter"}),
                   ("biconic_transform_steps_total", {"step": "cast"}))
    report = engine.load(folder, into=table, spec=spec, dsn=pg_dsn, archive=False)
    assert report.source_partitions == 2 and report.rows_loaded == 10
    assert moved() == [2, 2, 2]


def test_a_refused_source_connect_counts_its_retries(manual_clock: Any, pg_dsn: str, table: str) -> None:
    with socket.socket() as s:  # a port nothing listens on: every connect is refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    moved = deltas(("biconic_retries_total", {"what": "source_connect"}),
                   ("biconic_errors_total", {"type": "SourceUnavailableError", "exit_code": "3"}),
                   ("biconic_loads_total", {"outcome": "failed"}))
    with pytest.raises(BiconicError):
        engine.load(f"postgresql://app:Pw-123@127.0.0.1:{port}/shop?table=orders", into=table, dsn=pg_dsn)
    assert moved() == [2, 1, 1]  # BICONIC_NETWORK_RETRIES (3) attempts: two retries


def test_postgresql_connections_are_counted_while_open(tmp_path: Path, pg_dsn: str, table: str) -> None:
    close_idle()
    start = value("biconic_pg_connections_in_use")
    with Session(pg_dsn):
        assert value("biconic_pg_connections_in_use") == start + 2  # data and ddl
    assert value("biconic_pg_connections_in_use") == start
    engine.load(_csv(tmp_path / "a.csv", 10), into=table, dsn=pg_dsn, archive=False)
    assert value("biconic_pg_connections_in_use") > start  # the metadata pool keeps idle ones open
    close_idle()
    assert value("biconic_pg_connections_in_use") == start


def test_an_api_retry_counts_as_http(server: Any, manual_clock: Any) -> None:
    from engine.sources.api.rest import open_rest
    from tests.sources.api._helpers import flaky, items, json_response, rows, serve

    serve(server, flaky([json_response({"error": "busy"}, status=503)], json_response(items(1, 2))))
    moved = deltas(("biconic_retries_total", {"what": "http"}))
    assert len(rows(open_rest(server.url_for("/v1/items"), {"backoff": 0.001, "max_wait": 5}))) == 2
    assert moved() == [1]


def test_an_archive_upload_retry_counts_as_s3(tmp_path: Path, manual_clock: Any,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.archive.store import Store
    from engine.errors import ArchiveError

    with socket.socket() as s:  # an S3 endpoint nothing listens on: every attempt is refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for name, setting in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
                          "AWS_SECRET_ACCESS_KEY": "testing-secret", "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, setting)
    local = tmp_path / "f.bin"
    local.write_bytes(b"x" * 100)
    moved = deltas(("biconic_retries_total", {"what": "s3"}))
    with pytest.raises(ArchiveError):
        Store("s3://bucket/archive").put_verified(local, "bucket/archive/f.bin")
    assert moved() == [2] and len(manual_clock.slept) == 2  # BICONIC_NETWORK_RETRIES (3) attempts
