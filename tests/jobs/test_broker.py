"""The jobs' broker (``engine/jobs/broker.py``): the embedded Redis (start, reuse, one server for two racing
processes, recovery from a dead one's leftovers, stop, persistence), the broker/result URLs the settings give,
and queue depth on real Redis and RabbitMQ, bounded against a broker that never answers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from engine.errors import BrokerUnavailableError, SpecError, TransientError
from engine.jobs import broker

AMQP = "amqp://guest:guest@127.0.0.1:5672//"
REDIS = "redis://127.0.0.1:6379/14"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A short data folder of the test's own, its embedded Redis (and any stray one) stopped afterwards."""
    folder = tmp_path / "h"
    monkeypatch.setenv("BICONIC_HOME", str(folder))
    for name in ("BROKER_URL", "REDIS_URL", "RESULT_URL"):
        monkeypatch.delenv(f"BICONIC_{name}", raising=False)
    yield folder
    broker.stop_embedded()
    for stray in _servers(folder):  # a server a failed test left behind (e.g. a second one from a lost race)
        stray.terminate()


def _pid(home: Path) -> int:
    return int((home / "redis" / "redis.pid").read_text())


def _servers(home: Path) -> list[psutil.Process]:
    """The redis-server processes working in this data folder (Redis runs in its ``--dir``)."""
    found = []
    for proc in psutil.process_iter(["name"]):
        try:
            if (proc.info["name"] or "").startswith("redis-server") and proc.cwd() == str(home / "redis"):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def test_embedded_redis_starts_on_a_socket_only_answers_and_is_reused(home: Path) -> None:
    url = broker.embedded_redis()
    assert url == f"redis+socket://{home}/redis/redis.sock"
    client = broker.redis_client(url)
    assert client.ping()
    assert client.config_get("port") == {"port": "0"}  # no TCP port
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert (home / "redis" / "redis.log").exists()
    pid = _pid(home)
    started = time.monotonic()
    assert broker.embedded_redis() == url
    assert time.monotonic() - started < 0.5
    assert _pid(home) == pid and len(_servers(home)) == 1
    client.close()


def test_queued_entries_survive_a_restart_and_stop_stops_it(home: Path) -> None:
    url = broker.embedded_redis()
    client = broker.redis_client(url)
    client.rpush("celery", "a", "b", "c")
    client.close()
    pid = _pid(home)
    assert broker.stop_embedded() is True
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not (home / "redis" / "redis.sock").exists() and _servers(home) == []
    assert broker.stop_embedded() is False
    assert broker.queue_depth("celery", broker.embedded_redis()) == 3  # appendonly: the queue came back


@pytest.mark.slow
def test_two_processes_starting_it_at_once_get_one_server(home: Path) -> None:
    at = time.time() + 2.0  # both wait for the same instant after their imports, then race
    code = ("import sys, time; from engine.jobs.broker import embedded_redis; "
            f"time.sleep(max(0, {at} - time.time())); print(embedded_redis())")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BICONIC_HOME": str(home)}
    racers = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
              for _ in range(2)]
    urls = [racer.communicate(timeout=60)[0].strip() for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0]
    assert urls[0] == urls[1] == f"redis+socket://{home}/redis/redis.sock"
    assert [p.pid for p in _servers(home)] == [_pid(home)]


def test_a_dead_servers_pidfile_and_socket_are_cleared(home: Path) -> None:
    url = broker.embedded_redis()
    old = _pid(home)
    os.kill(old, signal.SIGKILL)  # the server we started dies hard: pidfile and socket stay behind
    deadline = time.monotonic() + 10
    while broker._is_redis(old) and time.monotonic() < deadline:  # a zombie until someone reaps it: dead enough
        time.sleep(0.02)
    assert (home / "redis" / "redis.pid").exists() and (home / "redis" / "redis.sock").exists()
    started = time.monotonic()
    assert broker.embedded_redis() == url
    assert time.monotonic() - started < 3  # a refused socket is not retried for seconds
    assert _pid(home) != old and broker.redis_client(url).ping()
    # a pidfile naming a live process that is not a redis-server (a reused number) is a leftover too
    broker.stop_embedded()
    (home / "redis" / "redis.pid").write_text(str(os.getpid()))
    assert broker.embedded_redis() == url and _pid(home) != os.getpid()


def test_a_data_folder_too_long_for_a_unix_socket_puts_the_socket_in_the_runtime_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    monkeypatch.setenv("BICONIC_HOME", str(deep))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    files = broker._files()
    assert files.folder == deep / "redis" and files.pidfile.parent == deep / "redis"
    assert files.socket.parent == tmp_path and len(str(files.socket)) <= 100


def test_broker_and_result_urls_follow_the_settings(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BICONIC_BROKER_URL", AMQP)
    monkeypatch.setenv("BICONIC_REDIS_URL", REDIS)
    assert (broker.broker_url(), broker.result_url()) == (AMQP, REDIS)  # RabbitMQ cannot keep chord results
    monkeypatch.setenv("BICONIC_RESULT_URL", "redis://127.0.0.1:6379/15")
    assert broker.result_url() == "redis://127.0.0.1:6379/15"
    monkeypatch.delenv("BICONIC_RESULT_URL")
    monkeypatch.setenv("BICONIC_BROKER_URL", "redis://127.0.0.1:6379/13")
    assert (broker.broker_url(), broker.result_url()) == ("redis://127.0.0.1:6379/13",) * 2
    monkeypatch.delenv("BICONIC_BROKER_URL")
    assert (broker.broker_url(), broker.result_url()) == (REDIS,) * 2
    assert not (home / "redis").exists()  # nothing embedded was started for a configured broker
    assert broker.is_redis("redis+socket:///x.sock") and broker.is_redis("rediss://h") and not broker.is_redis(AMQP)


def test_with_nothing_configured_celery_queues_and_keeps_results_in_the_embedded_redis(home: Path) -> None:
    from celery import Celery

    url = broker.broker_url()
    assert broker.result_url() == url and url.startswith("redis+socket://")
    app = Celery("t", broker=url, backend=broker.result_url())
    sent = app.send_task("engine.jobs.nothing", queue="q-embedded")  # kombu's redis+socket transport
    assert broker.queue_depth("q-embedded") == 1
    app.backend.store_result(sent.id, 42, "SUCCESS")  # celery's Redis result backend on the socket
    assert sent.get(timeout=5) == 42
    app.close()


@pytest.mark.redis
def test_queue_depth_on_redis_counts_the_queue_and_its_priority_lists() -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    client = broker.redis_client(REDIS)
    keys = [queue, f"{queue}\x06\x163", f"{queue}\x06\x169"]
    try:
        assert broker.queue_depth(queue, REDIS) == 0
        client.rpush(keys[0], *range(5))
        client.rpush(keys[1], "a", "b")
        client.rpush(keys[2], "c")
        assert broker.queue_depth(queue, REDIS) == 8
    finally:
        client.delete(*keys)
        client.close()


@pytest.mark.rabbitmq
def test_queue_depth_on_rabbitmq_counts_ready_messages_and_a_missing_queue_has_none() -> None:
    from kombu import Connection, Producer

    queue = f"q-{uuid.uuid4().hex[:8]}"
    with Connection(AMQP, connect_timeout=5) as conn:
        channel = conn.channel()
        channel.queue_declare(queue, durable=False, auto_delete=False)
        try:
            producer = Producer(channel)
            for n in range(4):
                producer.publish({"n": n}, routing_key=queue)
            deadline = time.monotonic() + 5
            while broker.queue_depth(queue, AMQP) < 4 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert broker.queue_depth(queue, AMQP) == 4
        finally:
            channel.queue_delete(queue)
    assert broker.queue_depth(queue, AMQP) == 0


@pytest.mark.parametrize("scheme", ["redis", "amqp"])
def test_a_broker_that_never_answers_is_a_clear_error_within_the_timeout(scheme: str,
                                                                         mute_server: Any) -> None:
    url = (f"redis://:s3cretpw@{mute_server.address}/0" if scheme == "redis"
           else f"amqp://guest:s3cretpw@{mute_server.address}//")
    started = time.monotonic()
    with pytest.raises(BrokerUnavailableError) as caught:
        broker.queue_depth("celery", url, timeout=0.5)
    assert time.monotonic() - started < 3
    said = str(caught.value)
    assert said.startswith(f"broker {scheme}://") and "***" in said and "s3cretpw" not in said
    assert "'celery'" in said and "\n" not in said
    assert isinstance(caught.value, TransientError) and caught.value.exit_code == 5


def test_a_broker_nobody_listens_on_is_a_clear_error(mute_server: Any) -> None:
    port = mute_server.port
    mute_server.close()  # nothing listens there any more
    for url in (f"redis://127.0.0.1:{port}/0", f"amqp://guest:guest@127.0.0.1:{port}//"):
        started = time.monotonic()
        with pytest.raises(BrokerUnavailableError, match=f"127.0.0.1:{port}"):
            broker.queue_depth("celery", url, timeout=0.5)
        assert time.monotonic() - started < 3


def test_a_broker_whose_depth_cannot_be_read_is_named() -> None:
    with pytest.raises(SpecError, match=r"sqs://\S*: use redis://"):
        broker.queue_depth("celery", "sqs://key:secret@")
