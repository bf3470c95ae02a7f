"""The engine's cache: Redis when ``BICONIC_REDIS_URL`` is set, else a bounded in-process LRU with TTLs.

A cache may be slow or empty but never wrong, and an outage never fails a run: when Redis is unreachable every
operation behaves as a miss (``get`` returns ``None``, ``set``/``delete`` do nothing), one warning is logged for
the whole outage, and the connection is retried at most once a second until Redis is back. Deletes dropped during
an outage would leave stale entries behind, so on reconnecting the cache first clears its own prefix.

    >>> cache = get_cache()                    # memory, or Redis from BICONIC_REDIS_URL
    >>> cache.set_json("orders:schema", {"id": "int64"}, ttl=60)
    >>> cache.get_json("orders:schema")
    {'id': 'int64'}
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from engine.clock import clock
from engine.redact import safe_url, scrub, url_secrets
from engine.settings import settings

if TYPE_CHECKING:
    import polars as pl

__all__ = ["Cache", "CacheStats", "get_cache", "reset_caches"]

log = logging.getLogger("biconic.cache")

#: seconds between connection attempts while Redis is down (each attempt is bounded by ``BICONIC_CACHE_TIMEOUT``)
RETRY_EVERY = 1.0
_SCAN_BATCH = 500

T = TypeVar("T")


@dataclass
class CacheStats:
    """Counters since the cache was made; ``errors`` counts operations Redis could not serve (each also a miss)."""

    hits: int = 0
    misses: int = 0
    errors: int = 0


class _Memory:
    """A thread-safe LRU of full keys -> (expiry on the monotonic clock or None, value)."""

    def __init__(self, max_items: int) -> None:
        self.max_items = max_items
        self.items: OrderedDict[str, tuple[float | None, bytes]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self.lock:
            entry = self.items.get(key)
            if entry is None:
                return None
            if entry[0] is not None and entry[0] <= clock().monotonic():
                del self.items[key]
                return None
            self.items.move_to_end(key)
            return entry[1]

    def set(self, key: str, value: bytes, ttl: float | None) -> None:
        with self.lock:
            self.items[key] = (None if ttl is None else clock().monotonic() + ttl, value)
            self.items.move_to_end(key)
            while len(self.items) > self.max_items:
                self.items.popitem(last=False)

    def delete(self, keys: list[str]) -> None:
        with self.lock:
            for key in keys:
                self.items.pop(key, None)

    def delete_prefix(self, prefix: str) -> None:
        with self.lock:
            for key in [k for k in self.items if k.startswith(prefix)]:
                del self.items[key]


def _glob_escape(text: str) -> str:
    """``text`` as a literal inside a Redis MATCH pattern (dataset names may hold ``*``, ``?`` or ``[``)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class Cache:
    """Bytes, Arrow frames and JSON under ``prefix``, in Redis (``url``, else ``BICONIC_REDIS_URL``) or in memory.

    >>> Cache("redis://:pw@127.0.0.1:6379/0", prefix="test:").backend
    'redis'
    """

    def __init__(self, url: str | None = None, *, prefix: str = "biconic:", max_items: int = 1024) -> None:
        self.url = url or settings().redis() or None
        self.prefix = prefix
        self.stats = CacheStats()
        self._lock = threading.Lock()
        self._down = False  # an outage is in progress: one warning logged, probing every RETRY_EVERY seconds
        self._retry_at = 0.0
        self._lost_deletes = 0  # deletes dropped during the outage: Redis may hold stale entries
        self._memory: _Memory | None = None
        self._redis: Any = None
        if self.url is None:
            self.backend = "memory"
            self._memory = _Memory(max_items)
            return
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.backend = "redis"
        self._outage_errors = (redis.ConnectionError, redis.TimeoutError)
        # no client-side retries: our own once-a-second probe is the retry, so a dead or mute server costs one
        # attempt of at most the cache timeout, then nothing until the next probe
        timeout = settings().cache_timeout
        self._redis = redis.Redis.from_url(self.url, socket_connect_timeout=timeout, socket_timeout=timeout,
                                           retry=Retry(NoBackoff(), 0))

    def _key(self, key: str) -> str:
        return self.prefix + key

    def _count(self, field: str) -> None:
        with self._lock:
            setattr(self.stats, field, getattr(self.stats, field) + 1)

    def _call(self, op: Callable[[Any], T], default: T, *, deletes: bool = False) -> T:
        """Run ``op(client)``; on a connection error, or while waiting to retry, count it and return ``default``."""
        with self._lock:
            if self._down and clock().monotonic() < self._retry_at:
                self.stats.errors += 1
                self._lost_deletes += deletes
                return default
            probing, lost = self._down, self._lost_deletes
            if probing:  # this call probes; the others keep missing until it is done
                self._retry_at = clock().monotonic() + RETRY_EVERY
        try:
            if probing and lost:
                self._clear_prefix(self._redis, self.prefix)
            result = op(self._redis)
        except self._outage_errors as exc:
            with self._lock:
                self.stats.errors += 1
                self._lost_deletes += deletes
                self._retry_at = clock().monotonic() + RETRY_EVERY
                first, self._down = not self._down, True
            if first:
                log.warning("Redis cache at %s unreachable (%s); serving misses, retrying every %g s",
                            safe_url(self.url or ""), scrub(str(exc), url_secrets(self.url or "")), RETRY_EVERY)
            return default
        if probing:
            with self._lock:
                if self._lost_deletes == lost:
                    self._down, self._lost_deletes = False, 0
                else:  # more deletes were dropped while this probe ran: the next call probes and clears again
                    self._retry_at = 0.0
                    return result
            log.info("Redis cache at %s reconnected%s", safe_url(self.url or ""),
                     f"; cleared {self.prefix}* as deletes were lost in the outage" if lost else "")
        return result

    @staticmethod
    def _clear_prefix(client: Any, full_prefix: str) -> None:
        batch: list[bytes] = []
        for key in client.scan_iter(match=_glob_escape(full_prefix) + "*", count=_SCAN_BATCH):
            batch.append(key)
            if len(batch) >= _SCAN_BATCH:
                client.unlink(*batch)
                batch = []
        if batch:
            client.unlink(*batch)

    def get(self, key: str) -> bytes | None:
        """The value stored at ``key``, or ``None`` if absent, expired or Redis is unreachable."""
        full = self._key(key)
        value = self._memory.get(full) if self._memory is not None else self._call(lambda r: r.get(full), None)
        self._count("misses" if value is None else "hits")
        return value

    def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store ``value`` for ``ttl`` seconds (``None``: until evicted); a ``ttl`` of 0 or less just deletes."""
        if ttl is not None and ttl <= 0:
            self.delete(key)
            return
        full = self._key(key)
        if self._memory is not None:
            self._memory.set(full, value, ttl)
        else:
            # PX in whole milliseconds, rounded up so a tiny ttl never becomes the invalid PX 0
            px = None if ttl is None else max(1, math.ceil(ttl * 1000))
            self._call(lambda r: r.set(full, value, px=px), None)

    def delete(self, *keys: str) -> None:
        """Forget ``keys``; absent ones are fine."""
        if not keys:
            return
        full = [self._key(k) for k in keys]
        if self._memory is not None:
            self._memory.delete(full)
        else:
            self._call(lambda r: r.unlink(*full), None, deletes=True)

    def delete_prefix(self, prefix: str) -> None:
        """Forget every key starting with ``prefix`` (e.g. ``"orders:"`` for one dataset); SCAN + UNLINK on Redis."""
        full = self._key(prefix)
        if self._memory is not None:
            self._memory.delete_prefix(full)
        else:
            self._call(lambda r: self._clear_prefix(r, full), None, deletes=True)

    def get_frame(self, key: str) -> pl.DataFrame | None:
        """A DataFrame stored by :meth:`set_frame`, or ``None``."""
        data = self.get(key)
        if data is None:
            return None
        import polars as pl
        import pyarrow as pa

        table = pa.ipc.open_stream(pa.py_buffer(data)).read_all()
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        return frame

    def set_frame(self, key: str, df: pl.DataFrame, ttl: float | None = None) -> None:
        """Store ``df`` as Arrow IPC stream bytes, readable by any Arrow library."""
        import pyarrow as pa

        table = df.to_arrow()
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        self.set(key, sink.getvalue().to_pybytes(), ttl)

    def get_json(self, key: str) -> Any | None:
        """A value stored by :meth:`set_json`, or ``None`` (so a stored JSON ``null`` reads as a miss)."""
        data = self.get(key)
        return None if data is None else json.loads(data)

    def set_json(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Store ``value`` as UTF-8 JSON."""
        self.set(key, json.dumps(value, separators=(",", ":")).encode(), ttl)

    def close(self) -> None:
        """Release the Redis connections (or drop the in-process entries)."""
        if self._redis is not None:
            self._redis.close()
        if self._memory is not None:
            self._memory.delete_prefix("")


_caches: dict[str | None, Cache] = {}
_caches_lock = threading.Lock()


def get_cache(url: str | None = None) -> Cache:
    """The process-wide cache for ``url`` (else ``BICONIC_REDIS_URL``, else memory), made on first use."""
    effective = url or settings().redis() or None
    with _caches_lock:
        if effective not in _caches:
            _caches[effective] = Cache(effective)
        return _caches[effective]


def reset_caches() -> None:
    """Close and forget the process-wide caches, so tests start clean."""
    with _caches_lock:
        caches = list(_caches.values())
        _caches.clear()
    for cache in caches:
        cache.close()
