"""An S3 endpoint that accepts connections and never answers: uploads end within the settings' bounds (each call
at the read timeout, all attempts at the upload deadline) with a transient error naming host:port."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from engine.archive.store import Store
from engine.clock import ManualClock
from engine.errors import ArchiveError, TransientError


@pytest.fixture
def mute_s3(mute_server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{mute_server.address}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret-value")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    return mute_server


def _file(tmp_path: Path) -> Path:
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 1000)
    return path


def test_each_attempt_ends_at_the_read_timeout(mute_s3: Any, short_timeouts: None, manual_clock: ManualClock,
                                               tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(ArchiveError) as info:
        Store("s3://bucket/archive").put_verified(_file(tmp_path), "bucket/archive/f.bin")
    # 2 attempts of a 1 s read timeout (no botocore nor s3fs retries), and slack for a busy machine: not minutes
    assert time.monotonic() - started < 2 * 1 + 10, str(info.value)
    text = str(info.value)
    assert isinstance(info.value, TransientError) and info.value.attempts == 2
    assert mute_s3.address in text and "testing-secret-value" not in text and "\n" not in text
    assert manual_clock.slept == [0.5]  # the backoff waits on the engine's clock


def test_the_upload_deadline_bounds_all_attempts(mute_s3: Any, monkeypatch: pytest.MonkeyPatch,
                                                 manual_clock: ManualClock, tmp_path: Path) -> None:
    """A read timeout longer than the deadline: each S3 call is cut at what is left of the deadline, and no
    attempt (nor wait) starts past it, whatever the number of attempts allowed."""
    monkeypatch.setenv("BICONIC_READ_TIMEOUT", "30")
    monkeypatch.setenv("BICONIC_NETWORK_RETRIES", "20")
    monkeypatch.setenv("BICONIC_UPLOAD_DEADLINE", "1")
    started = time.monotonic()
    with pytest.raises(ArchiveError) as info:
        Store("s3://bucket/archive").put_verified(_file(tmp_path), "bucket/archive/f.bin")
    assert time.monotonic() - started < 1 + 10
    assert info.value.attempts == 2 and manual_clock.slept == [0.5]
    assert mute_s3.address in str(info.value) and "deadline 1 s" in str(info.value)
