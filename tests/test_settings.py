"""Settings: every BICONIC_* variable in one class, read again when the environment changes, bad values a
one-line error naming the variable, secrets never shown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli import cli
from engine.errors import SpecError
from engine.settings import Settings, settings


def test_defaults(tmp_path: Path) -> None:
    current = settings()
    assert (current.batch_rows, current.chunk_rows, current.copy_streams) == (100_000, 500_000, 2)
    assert current.chunk_bytes == 16 << 20
    assert current.data_path == tmp_path / ".biconic"  # the test's own folder (tests/conftest.py)
    assert current.archive() == str(tmp_path / ".biconic" / "archive")
    assert current.uploads_path == tmp_path / ".biconic" / "uploads"
    assert current.dsn() is None and current.redis() is None


def test_the_environment_is_read_again_when_it_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BICONIC_BATCH_ROWS", "50000")
    assert settings().batch_rows == 50_000
    monkeypatch.setenv("BICONIC_BATCH_ROWS", "7")
    assert settings().batch_rows == 7
    monkeypatch.setenv("BICONIC_ARCHIVE_URL", "OFF")
    assert settings().archive() is None
    assert settings().archive("s3://b/p") == "s3://b/p"  # an explicit argument wins
    monkeypatch.setenv("BICONIC_ARCHIVE_LEVEL", "99")
    assert settings().archive_level == 22  # clamped, as ZSTD allows
    monkeypatch.setenv("BICONIC_CHUNK_MB", "")  # empty is unset
    assert settings().chunk_mb == 16


@pytest.mark.parametrize(("name", "value"), [("BICONIC_BATCH_ROWS", "lots"), ("BICONIC_COPY_STREAMS", "-1"),
                                             ("BICONIC_QUERY_TTL", "soon"), ("BICONIC_TIER_ARCHIVE_DAYS", "x")])
def test_a_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SpecError) as info:
        settings()
    assert info.value.path == name
    assert repr(value) in str(info.value) and info.value.exit_code == 2


def test_secrets_never_show(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BICONIC_PG_DSN", "postgresql://app:s3cret@db:5432/shop")
    monkeypatch.setenv("BICONIC_REDIS_URL", "redis://:t0ps3cret@cache:6379/0")
    current = settings()
    assert current.dsn() == "postgresql://app:s3cret@db:5432/shop"
    assert current.redis() == "redis://:t0ps3cret@cache:6379/0"
    shown = repr(current) + str(current.model_dump()) + str(current.model_dump(mode="json"))
    assert "s3cret" not in shown and "t0ps3cret" not in shown
    out = CliRunner().invoke(cli, ["settings"]).output
    assert "BICONIC_PG_DSN" in out and "**********" in out and "s3cret" not in out


def test_every_variable_is_documented() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description, f"BICONIC_{name.upper()} has no description"
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for name in Settings.model_fields:
        assert f"BICONIC_{name.upper()}" in readme, f"BICONIC_{name.upper()} is not in the README"


def test_the_data_folder_is_per_user_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not the working folder: a cron job started elsewhere must find the same embedded database and archive."""
    monkeypatch.delenv("BICONIC_HOME")
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "me"))
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "me" / ".local" / "share" / "biconic"
    assert settings().data_path == home
    assert (settings().archive(), settings().uploads_path) == (str(home / "archive"), home / "uploads")
    from engine.postgres.server import database_label

    assert database_label() == f"embedded PostgreSQL in {home / 'pg'}"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert settings().data_path == tmp_path / "xdg" / "biconic"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")  # the XDG spec says relative paths are invalid
    assert settings().data_path == home


def test_biconic_home_overrides_the_data_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BICONIC_HOME", str(tmp_path / "data"))
    assert settings().data_path == tmp_path / "data"
    assert settings().archive() == str(tmp_path / "data" / "archive")
    monkeypatch.delenv("BICONIC_HOME")
    monkeypatch.setenv("BICONIC_DATA_DIR", str(tmp_path / "old"))  # the old name still works
    assert settings().data_path == tmp_path / "old"
    out = CliRunner().invoke(cli, ["settings", "--json"]).output
    assert json.loads(out)["home"] == str(tmp_path / "old")


def test_network_timeouts_have_sane_defaults_and_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    current = settings()
    assert (current.connect_timeout, current.read_timeout, current.network_retries) == (10, 60, 3)
    assert (current.upload_deadline, current.cache_timeout) == (300, 0.5)
    assert current.idle_in_transaction_seconds == 3600  # longer than any wait the engine allows
    monkeypatch.setenv("BICONIC_UPLOAD_DEADLINE", "7200")
    assert settings().idle_in_transaction_seconds == 7200 + 60 + 300
    monkeypatch.setenv("BICONIC_READ_TIMEOUT", "1.5")
    monkeypatch.setenv("BICONIC_IDLE_IN_TRANSACTION_TIMEOUT", "0")
    assert settings().read_timeout == 1.5 and settings().idle_in_transaction_seconds == 0
    monkeypatch.setenv("BICONIC_CONNECT_TIMEOUT", "0")
    with pytest.raises(SpecError, match="BICONIC_CONNECT_TIMEOUT"):
        settings()
