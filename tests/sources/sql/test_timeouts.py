"""Database sources on a server that accepts connections and never answers: the load fails within the
settings' timeouts with a one-line transient error naming the host and port, and commits nothing."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest

import engine
from engine.errors import SourceError, TransientError
from engine.settings import settings
from tests.sources.sql._helpers import with_params
from tests.support import Sql


def _table_exists(sql: Sql, table: str) -> bool:
    return bool(sql("SELECT to_regclass($1) IS NOT NULL", [f'"{table}"'])[0][0])


@pytest.mark.parametrize("scheme,read", [("postgresql", "table=orders"), ("mysql", "table=orders"),
                                         ("mongodb", "collection=orders")])
def test_a_mute_database_fails_the_load_within_the_timeouts(scheme: str, read: str, mute_server: Any,
                                                            short_timeouts: None, pg_dsn: str, sql: Sql,
                                                            table: str) -> None:
    """Each driver's own defaults wait for ever (libpq, PyMySQL) or 30 s to select a server (pymongo, whose
    monitor also waits 20 s per hello): the settings' timeouts bound them all."""
    started = time.monotonic()
    with pytest.raises(SourceError) as info:
        engine.load(f"{scheme}://app:Pw-123@{mute_server.address}/shop?{read}", into=table, dsn=pg_dsn,
                    archive=False)
    limits = settings()
    assert time.monotonic() - started < limits.connect_timeout + limits.read_timeout + 4
    text = str(info.value)
    assert isinstance(info.value, TransientError)
    assert mute_server.address in text and "Pw-123" not in text and "\n" not in text
    assert not _table_exists(sql, table)


def test_a_source_table_locked_by_another_session_fails_within_the_read_timeout(
        short_timeouts: None, pg_dsn: str, sql: Sql, src: str, table: str) -> None:
    """A read queued behind another session's lock (a migration, a VACUUM FULL) used to wait for ever, its
    load holding what it had; now it waits at most the read timeout, then fails as transient."""
    import adbc_driver_postgresql.dbapi as pgdbapi

    sql(f'CREATE TABLE "{src}" AS SELECT g AS id FROM generate_series(1, 10) g')
    holder = pgdbapi.connect(pg_dsn)
    outcome: list[BaseException | None] = []
    try:
        with holder.cursor() as cur:
            cur.execute(f'LOCK TABLE "{src}" IN ACCESS EXCLUSIVE MODE')

        def load() -> None:
            try:
                engine.load(with_params(pg_dsn, table=src), into=table, dsn=pg_dsn, archive=False)
                outcome.append(None)
            except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
                outcome.append(exc)

        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        loader.join(timeout=settings().read_timeout * 3 + 10)
        assert not loader.is_alive(), "the load still waits on the lock"
    finally:
        holder.rollback()
        holder.close()
    assert isinstance(outcome[0], TransientError) and "lock timeout" in str(outcome[0])
    assert "\n" not in str(outcome[0]) and src in str(outcome[0])
    assert engine.load(with_params(pg_dsn, table=src), into=table, dsn=pg_dsn, archive=False).rows_loaded == 10


@pytest.mark.parametrize("scheme", ["postgresql", "mysql"])
def test_a_refused_connect_is_tried_again_with_backoff_then_fails_as_transient(
        scheme: str, manual_clock: Any, pg_dsn: str, table: str) -> None:
    with socket.socket() as s:  # a port nothing listens on: every connect is refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SourceError) as info:
        engine.load(f"{scheme}://app:Pw-123@127.0.0.1:{port}/shop?table=orders", into=table, dsn=pg_dsn)
    assert isinstance(info.value, TransientError) and f"127.0.0.1:{port}" in str(info.value)
    assert manual_clock.slept == [0.5, 1.0]  # BICONIC_NETWORK_RETRIES (3) attempts, the waits doubling


def test_libpq_bounds_stay_in_the_ranges_the_kernel_and_server_take() -> None:
    """A read timeout of days (an "effectively off" setting) must not make every connect fail: Linux takes at
    most 32767 s of keepalive idle, PostgreSQL an int4 of milliseconds."""
    from engine.sources.sql.postgres import _milliseconds, _network_bounds

    bounds = _network_bounds(10, 10**7)
    assert (bounds["keepalives_idle"], bounds["keepalives_interval"]) == ("300", "60")
    assert int(bounds["tcp_user_timeout"]) == 2**31 - 1 and _milliseconds(0.0001) == 1
    assert _network_bounds(1, 1) == {"connect_timeout": "1", "keepalives": "1", "keepalives_idle": "1",
                                     "keepalives_interval": "1", "keepalives_count": "3", "tcp_user_timeout": "1000"}
