"""Driver errors wrapped once at the boundary: unreachable servers are transient, refusals are not, and
passwords never reach a message."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import pytest

import engine
from engine.errors import SinkError, SinkUnavailableError, TransientError
from engine.postgres.connection import Session, connect, wrap_error
from engine.postgres.ddl import bound
from engine.settings import settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_server_is_transient_and_redacted(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("a\n1\n")
    with pytest.raises(SinkUnavailableError) as info:
        engine.load(path, into="t", dsn=f"postgresql://bob:s3cret@127.0.0.1:{_free_port()}/db")
    assert isinstance(info.value, TransientError)
    assert "s3cret" not in str(info.value)
    assert "bob:***@" in str(info.value)
    assert info.value.exit_code == 5


@pytest.mark.parametrize("fatal", [
    'FATAL:  database "nope" does not exist',
    'FATAL:  role "nobody" does not exist',
    'FATAL:  password authentication failed for user "bob"',
    'FATAL:  no pg_hba.conf entry for host "10.0.0.1", user "bob", database "db"',
])
def test_refused_connections_are_not_transient(fatal: str) -> None:
    dsn = "postgresql://bob:s3cret@db.example:5432/db"
    exc = Exception('IO: [libpq] Failed to connect: connection to server at "db.example", port 5432 '
                    f"failed: {fatal}\nwhile connecting to {dsn}")
    err = wrap_error(exc, "connect", dsn)
    assert type(err) is SinkError
    assert not isinstance(err, TransientError)
    assert fatal in str(err)
    assert "s3cret" not in str(err)


def test_query_errors_are_plain_sink_errors() -> None:
    err = wrap_error(Exception('NOT_FOUND: ERROR:  relation "x" does not exist\nQuery was: SELECT 1'), "SELECT",
                "d")
    assert type(err) is SinkError
    assert str(err) == 'SELECT: ERROR:  relation "x" does not exist'


def test_password_in_keyword_dsn_is_redacted() -> None:
    err = wrap_error(Exception("could not connect: host=h password=hunter2 dbname=x"), "connect",
                "host=h password=hunter2 dbname=x")
    assert "hunter2" not in str(err)


def test_partition_bounds() -> None:
    import datetime as dt

    assert bound(dt.date(2024, 1, 1), "date") == "'2024-01-01'"
    assert bound(dt.date(2024, 1, 1), "timestamp without time zone") == "'2024-01-01 00:00:00'"
    assert bound(dt.date(2024, 1, 1), "timestamp with time zone") == "'2024-01-01 00:00:00+00'"
    assert bound(None, "date") == "MAXVALUE"


def test_sessions_end_idle_transactions_and_connecting_is_bounded(pg_dsn: str, mute_server: Any,
                                                                  short_timeouts: None,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The backstop: every load session asks PostgreSQL to end a transaction left idle too long; and a server that
    accepts and never answers fails the connect within the connect timeout, transient, naming host and port."""
    monkeypatch.setenv("BICONIC_IDLE_IN_TRANSACTION_TIMEOUT", "42")
    with Session(pg_dsn) as session:
        for conn in (session.data, session.ddl):
            assert session.run("SELECT current_setting('idle_in_transaction_session_timeout')", conn=conn) == [("42s",)]
    started = time.monotonic()
    with pytest.raises(SinkUnavailableError) as info:
        connect(f"postgresql://bob:s3cret@{mute_server.address}/db")
    assert time.monotonic() - started < settings().connect_timeout + 3
    assert mute_server.address.split(":")[1] in str(info.value) and "s3cret" not in str(info.value)
