"""The cache: the same behaviour in memory and in Redis, and correct (only slower) when Redis goes away.

Redis tests use the server on 127.0.0.1:6379 (``BICONIC_TEST_REDIS_URL`` overrides) under a random key prefix;
outside CI they skip when it is not running, in CI (``CI`` set) they fail. Outage tests start and kill their own
``redis-server`` on a free port and never touch the shared one.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from engine.clock import ManualClock
from engine.reads import cache as cache_module
from engine.reads.cache import Cache, get_cache, reset_caches
from engine.settings import settings

SHARED_URL = os.environ.get("BICONIC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _reachable(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5).ping())
    except redis.RedisError:
        return False


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("BICONIC_REDIS_URL", raising=False)
    reset_caches()
    yield
    reset_caches()


@pytest.fixture
def shared_url() -> str:
    if not _reachable(SHARED_URL):
        if os.environ.get("CI"):
            pytest.fail(f"Redis is not running at {SHARED_URL} (CI must start it)")
        pytest.skip(f"Redis is not running at {SHARED_URL}")
    return SHARED_URL


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def cache(request: pytest.FixtureRequest) -> Iterator[Cache]:
    url = request.getfixturevalue("shared_url") if request.param == "redis" else None
    c = Cache(url, prefix=f"test-{uuid.uuid4().hex}:")
    assert c.backend == request.param
    yield c
    c.delete_prefix("")
    c.close()


class RedisServer:
    """A private redis-server on a free port that a test may kill, freeze and restart."""

    def __init__(self, folder: Path) -> None:
        self.port = _free_port()
        self.folder = folder
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # --dir lets a test SAVE and have the restarted server load the same data
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while not _reachable(self.url):
            assert self.proc.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.02)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def raw(self) -> object:
        import redis

        return redis.Redis.from_url(self.url)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not on PATH")
        pytest.skip("redis-server is not on PATH")
    server = RedisServer(tmp_path)
    server.start()
    yield server
    if server.proc is not None:
        os.kill(server.proc.pid, signal.SIGCONT)  # in case a test froze it
    server.kill()


def _records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "biconic.cache" and r.levelno == level]


# -- the same behaviour on both backends


def test_bytes_round_trip_and_stats(cache: Cache) -> None:
    assert cache.get("a") is None
    cache.set("a", b"\x00one")
    cache.set("b", b"")
    assert cache.get("a") == b"\x00one"
    assert cache.get("b") == b""  # an empty value is a hit, not a miss
    cache.set("a", b"two")
    assert cache.get("a") == b"two"
    assert (cache.stats.hits, cache.stats.misses, cache.stats.errors) == (3, 1, 0)


def test_large_value(cache: Cache) -> None:
    value = os.urandom(4 << 20)
    cache.set("big", value)
    assert cache.get("big") == value


def _expire(cache: Cache, key: str, clock: ManualClock, seconds: float) -> None:
    """Let ``seconds`` pass for ``key``: on the engine's clock in memory, by Redis's own countdown in Redis
    (checked with PTTL, then the key dropped as Redis would)."""
    if cache.backend == "memory":
        clock.advance(seconds)
        return
    raw = cache._redis
    remaining = raw.pttl(cache.prefix + key)
    assert remaining == -2 or 0 <= remaining <= seconds * 1000, remaining
    raw.delete(cache.prefix + key)


def test_ttl_expires(cache: Cache, manual_clock: ManualClock) -> None:
    cache.set("short", b"x", ttl=0.15)
    cache.set("long", b"y", ttl=60)
    cache.set("forever", b"z")
    assert cache.get("short") == b"x"
    _expire(cache, "short", manual_clock, 0.3)
    assert cache.get("short") is None
    assert cache.get("long") == b"y"
    assert cache.get("forever") == b"z"


def test_non_positive_ttl_deletes(cache: Cache, manual_clock: ManualClock) -> None:
    cache.set("k", b"x")
    cache.set("k", b"y", ttl=0)
    assert cache.get("k") is None
    cache.set("k", b"x", ttl=0.0001)  # rounds up to 1 ms in Redis rather than an invalid PX 0
    _expire(cache, "k", manual_clock, 0.01)
    assert cache.get("k") is None


def test_delete(cache: Cache) -> None:
    for key in "abc":
        cache.set(key, key.encode())
    cache.delete("a", "b", "missing")
    cache.delete()
    assert [cache.get(k) for k in "abc"] == [None, None, b"c"]


def test_delete_prefix_is_literal(cache: Cache) -> None:
    keys = ["ds1:a", "ds1:b", "ds10:a", "ds*:a", "ds[1]:a", "dsX:a", "other"]
    for key in keys:
        cache.set(key, b"v")
    cache.delete_prefix("ds1:")
    cache.delete_prefix("ds*")  # glob characters in a prefix match only themselves
    cache.delete_prefix("ds[1]")
    assert {k for k in keys if cache.get(k) is not None} == {"ds10:a", "dsX:a", "other"}


def test_delete_prefix_many_keys(cache: Cache) -> None:
    for i in range(1200):  # more than one SCAN/UNLINK batch
        cache.set(f"ds:{i}", b"v")
    cache.set("keep", b"v")
    cache.delete_prefix("ds:")
    assert all(cache.get(f"ds:{i}") is None for i in range(0, 1200, 97))
    assert cache.get("keep") == b"v"


def test_frame_round_trip(cache: Cache) -> None:
    df = pl.DataFrame({
        "id": [1, 2, None],
        "name": ["a", None, "ñandú"],
        "amount": [1.5, None, -2.0],
        "at": [dt.datetime(2024, 1, 1, 12), None, dt.datetime(1999, 12, 31)],
        "tags": [["x"], [], None],
    })
    cache.set_frame("f", df, ttl=60)
    got = cache.get_frame("f")
    assert got is not None
    assert got.schema == df.schema
    assert got.equals(df)
    empty = df.clear()
    cache.set_frame("empty", empty)
    got_empty = cache.get_frame("empty")
    assert got_empty is not None and got_empty.schema == df.schema and got_empty.height == 0
    assert cache.get_frame("missing") is None


def test_json_round_trip(cache: Cache) -> None:
    value = {"rows": 3, "cols": ["a", "ñ"], "nested": {"ok": True, "x": None}, "f": 1.25}
    cache.set_json("j", value)
    assert cache.get_json("j") == value
    assert cache.get_json("missing") is None


# -- memory backend specifics


def test_memory_lru_bound() -> None:
    c = Cache(max_items=3)
    for key in "abc":
        c.set(key, key.encode())
    assert c.get("a") == b"a"  # now the most recently used
    c.set("d", b"d")
    assert [c.get(k) for k in "abcd"] == [b"a", None, b"c", b"d"]


def test_memory_is_thread_safe() -> None:
    c = Cache(max_items=50)

    def work(n: int) -> None:
        for i in range(2000):
            c.set(f"{n}:{i % 80}", b"v", ttl=None if i % 2 else 10)
            c.get(f"{n}:{(i * 7) % 80}")
            if i % 100 == 0:
                c.delete_prefix(f"{n}:1")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert c._memory is not None and len(c._memory.items) <= 50
    assert c.stats.hits + c.stats.misses == 8 * 2000


def test_get_cache_is_per_url(monkeypatch: pytest.MonkeyPatch) -> None:
    memory = get_cache()
    assert memory.backend == "memory" and get_cache() is memory
    other = "redis://127.0.0.1:1/0"  # made lazily: nothing connects until the first operation
    assert get_cache(other).backend == "redis" and get_cache(other) is not memory
    monkeypatch.setenv("BICONIC_REDIS_URL", other)
    assert get_cache() is get_cache(other)
    assert Cache().backend == "redis"
    before = get_cache(other)
    reset_caches()
    assert get_cache(other) is not before
    monkeypatch.delenv("BICONIC_REDIS_URL")
    assert get_cache() is not memory


def test_get_cache_is_thread_safe() -> None:
    seen: list[Cache] = []
    threads = [threading.Thread(target=lambda: seen.append(get_cache())) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(c) for c in seen}) == 1


# -- Redis specifics


@pytest.mark.redis
def test_redis_sets_real_ttls(shared_url: str) -> None:
    import redis

    prefix = f"test-{uuid.uuid4().hex}:"
    c = Cache(shared_url, prefix=prefix)
    raw = redis.Redis.from_url(shared_url)
    try:
        c.set("t", b"x", ttl=30)
        c.set("n", b"x")
        assert 29_000 < raw.pttl(prefix + "t") <= 30_000
        assert raw.pttl(prefix + "n") == -1  # no expiry
    finally:
        c.delete_prefix("")
        c.close()


# -- outages


@pytest.mark.redis
def test_outage_is_a_miss_logged_once_and_recovers(own_redis: RedisServer, caplog: pytest.LogCaptureFixture,
                                                    manual_clock: ManualClock) -> None:
    caplog.set_level(logging.INFO, logger="biconic.cache")
    c = Cache(own_redis.url, prefix="t:")
    c.set("k", b"v")
    assert c.get("k") == b"v"

    own_redis.kill()
    started = time.monotonic()
    assert c.get("k") is None
    c.set("k", b"w")
    c.set_json("j", {"a": 1})
    c.delete("k")
    c.delete_prefix("")
    assert c.get_frame("f") is None
    assert c.get_json("j") is None
    for _ in range(50):
        assert c.get("k") is None
    assert time.monotonic() - started < 0.5  # refused connections, then no attempts at all until the retry time
    assert c.stats.errors == 57
    assert c.stats.misses == 53 and c.stats.hits == 1  # 53 reads, 4 writes
    warnings = _records(caplog, logging.WARNING)
    assert len(warnings) == 1
    assert f"127.0.0.1:{own_redis.port}" in warnings[0].getMessage()

    own_redis.start()
    manual_clock.advance(cache_module.RETRY_EVERY / 2)
    c.set("early", b"x")  # Redis is back but the retry time has not come: still dropped
    assert c.get("early") is None
    assert own_redis.raw().exists("t:early") == 0  # type: ignore[attr-defined]

    manual_clock.advance(cache_module.RETRY_EVERY)
    errors = c.stats.errors
    c.set("k", b"back")
    assert c.get("k") == b"back"
    assert c.stats.errors == errors
    assert len(_records(caplog, logging.WARNING)) == 1
    infos = _records(caplog, logging.INFO)
    assert len(infos) == 1 and "reconnected" in infos[0].getMessage()

    own_redis.kill()  # a second outage gets its own warning
    assert c.get("k") is None
    assert len(_records(caplog, logging.WARNING)) == 2
    c.close()


@pytest.mark.redis
def test_deletes_lost_in_an_outage_clear_the_prefix(own_redis: RedisServer, caplog: pytest.LogCaptureFixture,
                                                    manual_clock: ManualClock) -> None:
    c = Cache(own_redis.url, prefix="t:")
    c.set("a", b"1")
    c.set("b", b"2")
    raw = own_redis.raw()
    raw.set("other:x", b"3")  # type: ignore[attr-defined]
    raw.save()  # type: ignore[attr-defined]
    own_redis.kill()
    c.delete("a")  # dropped: the restarted server still holds the old "a"
    own_redis.start()
    raw = own_redis.raw()
    assert raw.get("t:a") == b"1"  # type: ignore[attr-defined]
    manual_clock.advance(cache_module.RETRY_EVERY)
    assert c.get("a") is None  # never the stale value
    assert c.get("b") is None  # the whole prefix went, since we cannot know which deletes were lost
    assert raw.get("other:x") == b"3"  # type: ignore[attr-defined]
    c.set("a", b"new")
    assert c.get("a") == b"new"
    c.close()


@pytest.mark.redis
def test_a_frozen_server_times_out(own_redis: RedisServer) -> None:
    c = Cache(own_redis.url, prefix="t:")
    c.set("k", b"v")
    assert own_redis.proc is not None
    os.kill(own_redis.proc.pid, signal.SIGSTOP)  # accepts nothing, answers nothing
    try:
        started = time.monotonic()
        assert c.get("k") is None
        c.set("k", b"w")
        assert time.monotonic() - started < settings().cache_timeout + 0.5
        assert c.stats.errors == 2
    finally:
        os.kill(own_redis.proc.pid, signal.SIGCONT)
    c.close()


def test_a_long_outage_probes_once_per_interval_and_warns_once(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, manual_clock: ManualClock) -> None:
    c = Cache(f"redis://127.0.0.1:{_free_port()}/0")
    attempts: list[float] = []
    connect = c._redis.connection_pool.get_connection

    def counting(*args: object, **kwargs: object) -> object:
        attempts.append(manual_clock.monotonic())
        time.sleep(0.02)  # a slow server's refusal, so threads overlap if each one probed
        return connect(*args, **kwargs)

    monkeypatch.setattr(c._redis.connection_pool, "get_connection", counting)

    def hammer(calls: int) -> None:
        threads = [threading.Thread(target=lambda: [c.get("k") for _ in range(calls)]) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    hammer(1)  # before the first failure each thread may try
    assert 1 <= len(attempts) <= 8
    for _ in range(10):  # after it, one probe per interval across all threads, however many calls
        before = len(attempts)
        hammer(20)
        assert len(attempts) == before
        manual_clock.advance(cache_module.RETRY_EVERY)
        hammer(20)
        assert len(attempts) == before + 1
    assert c.stats.errors == c.stats.misses == 8 + 10 * 2 * 8 * 20
    assert len(_records(caplog, logging.WARNING)) == 1
    c.close()


@pytest.mark.parametrize("url", [
    "redis://:s3cret@127.0.0.1:{port}/0",
    "redis://default:s3cret@127.0.0.1:{port}/0",
    "redis://127.0.0.1:{port}/0?password=s3cret",
    "redis://:s3%40cret@127.0.0.1:{port}/0",
])
def test_password_never_logged(url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="biconic.cache")
    port = _free_port()  # closed: nothing listens on it
    c = Cache(url.format(port=port))
    assert c.get("k") is None
    c.set("k", b"v")
    assert c.stats.errors == 2
    assert len(_records(caplog, logging.WARNING)) == 1
    assert f"127.0.0.1:{port}" in caplog.text
    assert "s3cret" not in caplog.text and "s3%40cret" not in caplog.text and "s3@cret" not in caplog.text
    c.close()


def test_a_mute_redis_costs_the_timeout_once_per_probe_and_queries_still_answer(
        mute_server: Any, short_timeouts: None, monkeypatch: pytest.MonkeyPatch, manual_clock: ManualClock,
        pg_dsn: str, table: str) -> None:
    """Redis accepts connections and never answers: one operation waits BICONIC_CACHE_TIMEOUT, the others miss at
    once until RETRY_EVERY has passed, then one probe waits again; queries answer all along (from DuckDB)."""
    import engine
    from engine.reads.duck import run_query

    url = f"redis://{mute_server.address}/0"
    c = Cache(url, prefix="t:")
    timeout = settings().cache_timeout
    started = time.monotonic()
    assert c.get("k") is None
    first = time.monotonic() - started
    assert timeout * 0.8 <= first < timeout + 0.25
    started = time.monotonic()
    for _ in range(50):
        c.set("k", b"v")
        assert c.get("k") is None
    assert time.monotonic() - started < 0.1  # gated: no network at all
    manual_clock.advance(cache_module.RETRY_EVERY)
    started = time.monotonic()
    assert c.get("k") is None and c.get("k") is None  # one probe, then gated again
    assert time.monotonic() - started < timeout + 0.25
    assert c.stats.errors == 103
    c.close()

    monkeypatch.setenv("BICONIC_REDIS_URL", url)
    engine.load(pl.DataFrame({"id": [1, 2, 3]}), into=table, dsn=pg_dsn)
    for _ in range(2):
        assert run_query(f"SELECT sum(id) AS s FROM {table}", dsn=pg_dsn).frame["s"].to_list() == [6]
    assert get_cache().stats.errors > 0
