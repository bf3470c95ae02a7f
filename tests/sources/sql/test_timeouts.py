"""Database sources on a server that accepts connections and never answers: the load fails within the
settings' timeouts with a one-line transient error naming the host and port, and commits nothing."""

from __future__ import annotations

import time
from typing import Any

import pytest

import engine
from engine.errors import SourceError, TransientError
from engine.settings import settings
from tests.support import Sql


def _table_exists(sql: Sql, table: str) -> bool:
    return bool(sql("SELECT to_regclass($1) IS NOT NULL", [f'"{table}"'])[0][0])


@pytest.mark.parametrize("scheme", ["postgresql", "mysql"])
def test_a_mute_database_fails_the_load_within_the_timeouts(scheme: str, mute_server: Any, short_timeouts: None,
                                                            pg_dsn: str, sql: Sql, table: str) -> None:
    started = time.monotonic()
    with pytest.raises(SourceError) as info:
        engine.load(f"{scheme}://app:Pw-123@{mute_server.address}/shop?table=orders", into=table, dsn=pg_dsn)
    limits = settings()
    assert time.monotonic() - started < limits.connect_timeout + limits.read_timeout + 4
    text = str(info.value)
    assert isinstance(info.value, TransientError)
    assert mute_server.address in text and "Pw-123" not in text and "\n" not in text
    assert not _table_exists(sql, table)


def test_a_mute_mongodb_fails_the_load_within_the_timeouts(mute_server: Any, short_timeouts: None, pg_dsn: str,
                                                          sql: Sql, table: str) -> None:
    """pymongo's own defaults wait 30 s to select a server (and its monitor 20 s per hello): the settings'
    connect timeout bounds both."""
    started = time.monotonic()
    with pytest.raises(SourceError) as info:
        engine.load(f"mongodb://app:Pw-123@{mute_server.address}/shop?collection=orders", into=table, dsn=pg_dsn,
                    archive=False)
    limits = settings()
    assert time.monotonic() - started < limits.connect_timeout + limits.read_timeout + 4
    text = str(info.value)
    assert isinstance(info.value, TransientError)
    assert mute_server.address in text and "Pw-123" not in text and "\n" not in text
    assert not _table_exists(sql, table)
