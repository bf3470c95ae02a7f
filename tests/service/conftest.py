"""Fixtures of the service tests: a real ``biconic serve`` (uvicorn) process on the test database, a real
``biconic worker`` behind it, tokens, and httpx clients.

The server and its worker live for a test module (starting them costs seconds); each test makes its own
tokens and connections, so tests never see each other's data through the API.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT
from tests.jobs.conftest import READY_TIMEOUT, Worker, spare_db  # noqa: F401  (spare_db: a fixture)

#: how long the server may take to answer /healthz after it starts (imports FastAPI, opens PostgreSQL)
START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Api:
    """A running ``biconic serve`` process."""
    url: str
    dsn: str
    env: dict[str, str]
    proc: subprocess.Popen[bytes]
    log: Path

    def token(self, connection: Any = None, scope: str = "write") -> str:
        """A new token of ``connection`` (admin when ``scope="admin"``)."""
        from engine.service.tokens import create_token

        return str(create_token(self.dsn, connection_id=connection, scope=scope)["token"])

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {**kwargs.pop("headers", {}), **({"Authorization": f"Bearer {token}"} if token else {})}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **kwargs)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def service_env(pg_dsn: str, broker: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BICONIC_", "CELERY_", "POLARS_"))}
    env.update(PYTHONPATH=str(ROOT), BICONIC_PG_DSN=pg_dsn, BICONIC_BROKER_URL=broker, BICONIC_REDIS_URL=broker,
               BICONIC_HOME=str(home), BICONIC_JOB_BACKOFF="0", BICONIC_API_THREADS="4")
    return env


def start_server(env: dict[str, str], folder: Path, *args: str) -> Api:
    """Start ``biconic serve`` and wait for its /healthz."""
    port = free_port()
    log = folder / f"serve-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "engine", "serve", "--port", str(port), *args],
                                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=folder, start_new_session=True)
    api = Api(f"http://127.0.0.1:{port}", env["BICONIC_PG_DSN"], env, proc, log)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{api.url}/healthz", timeout=2).status_code == 200:
                return api
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            pytest.fail(f"biconic serve did not start:\n{api.tail()}")
        time.sleep(0.2)


def stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def service_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("service")


@pytest.fixture(scope="module")
def api(pg_dsn: str, spare_db: int, service_home: Path) -> Iterator[Api]:  # noqa: F811
    """A real ``biconic serve`` on the test database (broker and cache: the session's spare Redis db)."""
    env = service_env(pg_dsn, f"redis://127.0.0.1:6379/{spare_db}", service_home)
    server = start_server(env, service_home)
    yield server
    stop(server.proc)


@pytest.fixture(scope="module")
def api_worker(api: Api, service_home: Path) -> Iterator[Worker]:
    """A real ``biconic worker`` (one process) taking the imports the server queues."""
    log = service_home / f"worker-{uuid.uuid4().hex[:6]}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "engine", "worker", "--concurrency=1"], env=api.env,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=service_home,
                                start_new_session=True)
    worker = Worker(proc, log)
    worker.wait_for(" ready.", READY_TIMEOUT)
    yield worker
    worker.stop()


@pytest.fixture
def connection() -> str:
    """A connection id (a UUID, as the platform's) unique to the test."""
    return str(uuid.uuid4())
