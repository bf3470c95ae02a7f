"""A load whose S3 archive endpoint accepts connections and never answers: it fails within the upload deadline
with one transient line naming the endpoint, commits nothing, and leaves no transaction nor lock behind."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import engine
from engine.clock import ManualClock
from engine.errors import ArchiveError, TransientError
from engine.settings import settings
from tests.mixed_data import make_source, write_csv
from tests.support import Sql


def test_a_mute_s3_archive_fails_the_load_within_the_deadline(tmp_path: Path, mute_server: Any, short_timeouts: None,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              manual_clock: ManualClock, pg_dsn: str, sql: Sql,
                                                              table: str) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{mute_server.address}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret-value")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    path = write_csv(make_source(2_000, seed=3), tmp_path / "o.csv")
    started = time.monotonic()
    with pytest.raises(ArchiveError) as info:
        engine.load(path, into=table, partition_by="created_at:month", dsn=pg_dsn, archive="s3://bucket/archive")
    assert time.monotonic() - started < settings().upload_deadline + 10
    text = str(info.value)
    assert isinstance(info.value, TransientError)
    assert mute_server.address in text and "nothing of its partition was committed" in text
    assert "testing-secret-value" not in text and "\n" not in text
    exists = sql("SELECT to_regclass($1) IS NOT NULL", [f'"{table}"'])[0][0]
    assert not exists or sql(f'SELECT count(*) FROM "{table}"')[0][0] == 0
    assert sql("SELECT count(*) FROM biconic.loads WHERE dataset = $1", [table])[0][0] == 0
    assert sql("SELECT count(*) FROM biconic.archive_files WHERE dataset = $1", [table])[0][0] == 0
    # no session of ours is left in a transaction, nor holds a lock (advisory ones included)
    assert sql("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
               "AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%'")[0][0] == 0
    assert sql("SELECT l.locktype, l.mode FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
               "WHERE a.datname = current_database() AND l.pid <> pg_backend_pid() "
               "AND l.locktype <> 'virtualxid'") == []
