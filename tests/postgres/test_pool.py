"""The metadata pool: a driver's refusal is one scrubbed line (an engine error), never the raw driver text."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import pytest

from engine.errors import SinkError, SinkUnavailableError
from engine.postgres.pool import meta_db


def _with_password(dsn: str, password: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(netloc=f"{parts.username}:{password}@{parts.hostname}:{parts.port or 5432}"))


def test_a_refused_statement_is_one_line_without_the_password(pg_dsn: str) -> None:
    dsn = _with_password(pg_dsn, "Pool%23S3cret")
    with pytest.raises(SinkError) as caught, meta_db(dsn) as db:
        db.rows("SELECT * FROM no_such_relation_here WHERE x = $1", ["Pool#S3cret"])
    text = str(caught.value)
    assert "no_such_relation_here" in text and "does not exist" in text and "\n" not in text, text
    assert "S3cret" not in text
    with pytest.raises(SinkError, match="does not exist"), meta_db(dsn) as db:
        db.frame("SELECT * FROM no_such_relation_here")


def test_a_connection_the_server_ends_is_unavailable_and_scrubbed(pg_dsn: str) -> None:
    dsn = _with_password(pg_dsn, "Pool%23S3cret")
    with pytest.raises(SinkUnavailableError) as caught, meta_db(dsn) as db:
        db.rows("SELECT pg_terminate_backend(pg_backend_pid())")
    assert "S3cret" not in str(caught.value) and "\n" not in str(caught.value)
    with meta_db(dsn) as db:  # the broken connection was closed, not pooled
        assert db.rows("SELECT 1") == [(1,)]
