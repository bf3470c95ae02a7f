"""Shared fixtures: a real PostgreSQL database for the session, unique table names, S3 and HTTP servers on
loopback, and a manual clock.

PostgreSQL: ``BICONIC_TEST_PG_DSN`` if set, else the server on 127.0.0.1:5432 (user postgres). Outside CI,
when nothing listens there, an embedded server (pgserver) is started instead; in CI (``CI`` set) a missing
server fails the tests rather than skipping them.

Tests mirror ``engine/``; a test is marked by the services its fixtures reach (``postgres``, ``s3``,
``mariadb``, ``redis``), wherever it lives, so ``-m "not postgres"`` still selects what runs without servers.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"


#: fixture -> the marker of the service it needs
SERVICE_FIXTURES = {"server_dsn": "postgres", "pg_dsn": "postgres", "sql": "postgres", "s3_endpoint": "s3",
                    "s3_archive": "s3", "mariadb": "mariadb", "redis_url": "redis"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            marker = SERVICE_FIXTURES.get(fixture)
            if marker is not None:
                item.add_marker(getattr(pytest.mark, marker))


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def server_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A DSN for an admin database on a real PostgreSQL server."""
    explicit = os.environ.get("BICONIC_TEST_PG_DSN")
    if explicit:
        yield explicit
        return
    if _reachable("127.0.0.1", 5432):
        yield "postgresql://postgres@127.0.0.1:5432/postgres"
        return
    if os.environ.get("CI"):
        pytest.fail("PostgreSQL is not running on 127.0.0.1:5432 (CI must start it: see .ci/run)")
    import pgserver

    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    yield server.get_uri()


@pytest.fixture(scope="module")
def pg_dsn(server_dsn: str) -> Iterator[str]:
    """A fresh database for each test module, dropped at its end. Not one per session: every table adds a row
    type that ADBC's driver reads at every connect, so a database holding a session's thousands of partitions
    made each connect cost 200+ ms (4x) by the end of the run."""
    import adbc_driver_postgresql.dbapi as pgdbapi

    name = f"biconic_test_{uuid.uuid4().hex[:10]}"
    with pgdbapi.connect(server_dsn, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    base, _, query = server_dsn.partition("?")
    head, _, _db = base.rpartition("/")
    dsn = f"{head}/{name}" + (f"?{query}" if query else "")
    yield dsn
    with pgdbapi.connect(server_dsn, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def table() -> str:
    """A table name unique to the test."""
    return f"t_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def sql(pg_dsn: str):  # type: ignore[no-untyped-def]
    """Run one SQL statement against the test database and return its rows."""
    import adbc_driver_postgresql.dbapi as pgdbapi

    conn = pgdbapi.connect(pg_dsn, autocommit=True)

    def run(statement: str, params: list[object] | None = None) -> list[tuple[object, ...]]:
        with conn.cursor() as cur:
            cur.execute(statement, params) if params is not None else cur.execute(statement)
            return list(cur.fetchall()) if cur.description else []

    yield run
    conn.close()


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Temp files, the archive and any embedded server go under the test's own folder, never the checkout nor
    the user's ~/.local/share/biconic; an embedded Redis started there is stopped with the test (it is meant to
    outlive the processes that use it, so nothing else would)."""
    monkeypatch.delenv("BICONIC_DATA_DIR", raising=False)
    monkeypatch.setenv("BICONIC_HOME", str(tmp_path / ".biconic"))
    yield
    _stop_embedded_redis(tmp_path)


def _stop_embedded_redis(folder: Path) -> None:
    """SIGTERM each embedded Redis whose pidfile lies under ``folder`` (a pid is checked to be a redis-server)."""
    import signal

    import psutil

    for pidfile in folder.glob("**/redis/redis.pid"):
        with contextlib.suppress(OSError, ValueError, psutil.Error):
            process = psutil.Process(int(pidfile.read_text().strip()))
            if "redis-server" in " ".join(process.cmdline()):
                process.send_signal(signal.SIGTERM)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 HTTP endpoint on loopback: moto's server, in a thread of this process."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_archive(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """``s3://bucket/prefix`` in a fresh bucket on the moto endpoint, with the AWS variables pointing at it."""
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/archive"


@pytest.fixture(scope="session")
def _http_server() -> Iterator[Any]:
    from pytest_httpserver import HTTPServer

    server = HTTPServer(host="127.0.0.1", threaded=True)  # threaded: a sleeping request must not block a retry
    server.start()
    yield server
    server.clear()
    server.stop()


@pytest.fixture
def server(_http_server: Any) -> Iterator[Any]:
    """A real HTTP server on loopback (pytest-httpserver) for the API-source tests, cleared after each test."""
    yield _http_server
    _http_server.clear()


@pytest.fixture
def manual_clock() -> Iterator[Any]:
    """The process's clock replaced by one that moves only when slept on or advanced (no real waiting)."""
    from engine.clock import ManualClock, use_clock

    with use_clock(ManualClock(start=1000.0)) as clock:
        yield clock


class MuteServer:
    """A TCP listener on loopback that accepts every connection and never answers (a hung server)."""

    def __init__(self) -> None:
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.host, self.port = self.sock.getsockname()
        self.address = f"{self.host}:{self.port}"
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            self.held.append(conn)  # kept open, never read from nor written to

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def mute_server() -> Iterator[MuteServer]:
    """A server that accepts connections and never answers; see :class:`MuteServer`."""
    server = MuteServer()
    yield server
    server.close()


@pytest.fixture
def short_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Network timeouts of about a second, so a test against a mute server ends quickly."""
    for name, value in {"CONNECT_TIMEOUT": "1", "READ_TIMEOUT": "1", "NETWORK_RETRIES": "2",
                        "UPLOAD_DEADLINE": "5", "CACHE_TIMEOUT": "0.1"}.items():
        monkeypatch.setenv(f"BICONIC_{name}", value)
