"""Fixtures of the job tests: a spare Redis db for the broker (emptied before and after each test), the
environment of a worker process, real ``biconic worker`` processes, and RabbitMQ in a vhost of its own.

A spare db is claimed with a key (``SET NX``) so two test sessions on one machine never share a queue: a
worker of one session would take the other's tasks and load them into the wrong database.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, _reachable

#: Redis dbs the job tests may use, the ones other tests name last (0 is the developer's)
SPARE_DBS = (10, 11, 12, 15, 13, 14)
CLAIM_KEY = "biconic:test-claim"
#: how long a worker may take to say it is ready (spawned children import Polars; the machine is shared)
READY_TIMEOUT = 60.0


@pytest.fixture(scope="session")
def spare_db() -> Iterator[int]:
    """A Redis db number no other test session is using, claimed for this session."""
    import redis

    owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    for db in SPARE_DBS:
        client = redis.Redis(host="127.0.0.1", port=6379, db=db, socket_timeout=5)
        if client.set(CLAIM_KEY, owner, nx=True, ex=3600) and client.dbsize() == 1:
            break
        if client.get(CLAIM_KEY) == owner.encode():
            client.delete(CLAIM_KEY)
        client.close()
    else:
        pytest.fail(f"no spare Redis db among {SPARE_DBS}: each holds keys or another session's claim")
    yield db
    client.flushdb()
    client.close()


@pytest.fixture
def broker_url(spare_db: int) -> Iterator[str]:
    """``redis://`` URL of the spare db, emptied before and after the test (queues, chord counters, results)."""
    import redis

    url = f"redis://127.0.0.1:6379/{spare_db}"
    client = redis.Redis.from_url(url, socket_timeout=5)
    owner = client.get(CLAIM_KEY)
    client.flushdb()
    client.set(CLAIM_KEY, owner or b"", ex=3600)
    yield url
    client.flushdb()
    client.set(CLAIM_KEY, owner or b"", ex=3600)
    client.close()


@pytest.fixture
def worker_env(pg_dsn: str, broker_url: str, tmp_path: Path) -> dict[str, str]:
    """The environment of worker and CLI processes: the test database, the spare Redis db as broker and
    result store, no archive, a data folder of the test's own, short retry delays. Tests add settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BICONIC_", "CELERY_", "POLARS_"))}
    env.update(PYTHONPATH=str(ROOT), BICONIC_BROKER_URL=broker_url, BICONIC_PG_DSN=pg_dsn,
               BICONIC_HOME=str(tmp_path / ".biconic-worker"), BICONIC_ARCHIVE_URL="off",
               BICONIC_JOB_BACKOFF="0.5")  # a retried deadlock waits half a second, not the default 10 s
    return env


@pytest.fixture
def jobs_client(worker_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """This process submits (``engine.submit``) to the same broker and database as the workers; the DSN."""
    for name in ("BICONIC_BROKER_URL", "BICONIC_PG_DSN", "BICONIC_ARCHIVE_URL"):
        monkeypatch.setenv(name, worker_env[name])
    from engine.jobs.app import configure

    configure()
    yield worker_env["BICONIC_PG_DSN"]


@dataclass
class Worker:
    """A running ``biconic worker`` process (its own process group) with its log in a file."""
    proc: subprocess.Popen[bytes]
    log: Path
    children_seen: list[int] = field(default_factory=list)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, needle: str, timeout: float, *, count: int = 1) -> None:
        """Until ``needle`` is in the log ``count`` times; fails with the log's tail after ``timeout`` s or when
        the process ended."""
        deadline = time.monotonic() + timeout
        while self.text().count(needle) < count:
            if self.proc.poll() is not None:
                pytest.fail(f"the worker exited ({self.proc.returncode}) before {needle!r}:\n{self.tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {needle!r} in the worker's log after {timeout:g} s:\n{self.tail()}")
            time.sleep(0.1)

    def children(self) -> list[int]:
        """The pids of the pool's processes (not billiard's semaphore tracker, also a child)."""
        import psutil

        found = []
        for child in psutil.Process(self.proc.pid).children():
            with contextlib.suppress(psutil.Error):
                if "spawn_main" in " ".join(child.cmdline()):
                    found.append(child.pid)
        return found

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.text().splitlines()[-lines:])

    def stop(self) -> None:
        """SIGKILL to the whole group: the main process and its pool. A warm or cold shutdown takes 1-2 s and
        tests nothing here; what a killed worker leaves (unacknowledged messages, a RabbitMQ vhost) is emptied
        by the fixtures, and PostgreSQL ends the backends of its closed connections."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


@pytest.fixture
def start_worker(worker_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Start a real worker (``python -m engine worker``, spawn pool) and wait until it is ready and its
    ``concurrency`` children have started; every worker started is stopped at teardown, its group killed."""
    started: list[Worker] = []

    def start(concurrency: int = 1, env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> Worker:
        log = tmp_path / f"worker-{len(started)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "engine", "worker", f"--concurrency={concurrency}", *args],
                env={**worker_env, **(env or {})}, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=tmp_path, start_new_session=True)
        worker = Worker(proc, log)
        started.append(worker)
        worker.wait_for(" ready.", READY_TIMEOUT)
        worker.wait_for("calling self.run()", READY_TIMEOUT, count=concurrency)
        return worker

    yield start
    for worker in started:
        worker.stop()


def biconic(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the ``biconic`` CLI in a process of its own with ``env``."""
    return subprocess.run([sys.executable, "-m", "engine", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture(scope="session")
def rabbitmq() -> None:
    """RabbitMQ on 127.0.0.1:5672, started (``rabbitmq-server -detached``) when it is not running; in CI a
    RabbitMQ that cannot be reached fails the test instead of skipping it."""
    if _reachable("127.0.0.1", 5672):
        return
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(["rabbitmq-server", "-detached"], capture_output=True, timeout=60, check=False)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _reachable("127.0.0.1", 5672):
            time.sleep(1)
    if _reachable("127.0.0.1", 5672):
        return
    if os.environ.get("CI"):
        pytest.fail("RabbitMQ is not running on 127.0.0.1:5672 and rabbitmq-server -detached did not start it")
    pytest.skip("RabbitMQ is not running on 127.0.0.1:5672 (and could not be started)")


@pytest.fixture
def amqp_url(rabbitmq: None) -> Iterator[str]:
    """``amqp://`` URL of a vhost of the test's own (guest may use it), deleted at teardown: the queue is
    called ``biconic`` in every vhost, and another session's tasks on the default one must not reach us."""
    vhost = f"biconic-test-{uuid.uuid4().hex[:10]}"

    def ctl(*args: str) -> Any:
        return subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60,
                              check=False)

    made = ctl("add_vhost", vhost)
    if made.returncode != 0:
        pytest.fail(f"rabbitmqctl add_vhost {vhost} failed: {made.stderr.strip() or made.stdout.strip()}")
    ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    ctl("delete_vhost", vhost)  # also closes the connections of a worker that outlived its test
