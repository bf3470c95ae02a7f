"""Time as the engine sees it: one replaceable clock, so waits and time-outs can be tested without sleeping.

>>> from engine.clock import clock
>>> start = clock().monotonic()
>>> clock().sleep(0)

Code that waits (retries, the cache's reconnect gate, TTLs) asks :func:`clock` at the moment it waits; tests
install a :class:`ManualClock` with :func:`use_clock`, then advance it by hand.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock", "clock", "use_clock"]


class Clock(Protocol):
    """A monotonic reading in seconds and a way to wait."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""
        ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(seconds, 0.0))


class ManualClock:
    """A clock that moves only when told to; ``sleep`` advances it at once and records the wait.

    >>> c = ManualClock()
    >>> c.sleep(2.5); c.monotonic(), c.slept
    (2.5, [2.5])
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._lock = threading.Lock()
        self.slept: list[float] = []

    def monotonic(self) -> float:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.slept.append(seconds)
            self._now += max(seconds, 0.0)

    def advance(self, seconds: float) -> None:
        """Move the clock forward without recording a wait."""
        with self._lock:
            self._now += seconds


_current: Clock = SystemClock()


def clock() -> Clock:
    """The process's clock (the system clock unless a test installed another)."""
    return _current


@contextlib.contextmanager
def use_clock(replacement: Clock) -> Iterator[Clock]:
    """Install ``replacement`` as the process's clock for the length of the block."""
    global _current
    previous, _current = _current, replacement
    try:
        yield replacement
    finally:
        _current = previous
