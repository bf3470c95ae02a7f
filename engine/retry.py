"""Retrying work that may fail for a while: one policy type, built on tenacity, waiting on :mod:`engine.clock`.

>>> from engine.retry import ARCHIVE_UPLOAD
>>> ARCHIVE_UPLOAD.call(lambda: 42, retry_if=lambda exc: isinstance(exc, OSError))
42

Every retry loop of the engine is a :class:`RetryPolicy` (the named ones are below); the wait before attempt
``n + 1`` is ``first_wait * 2 ** (n - 1)``, shortened by up to ``jitter`` of itself, unless the failure says
how long to wait (``wait_hint``: an HTTP ``Retry-After``), and never more than ``max_wait``. A ``deadline``
(seconds on the clock since the first attempt) stops the retries early: no attempt starts after it, nor a wait
that would end past it. What is worth
retrying is the caller's call; the job layer retries only :class:`engine.errors.TransientError`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from engine.clock import clock

__all__ = ["ARCHIVE_UPLOAD", "SOURCE_CONNECT", "RetryPolicy"]

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How often and how patiently to retry.

    >>> RetryPolicy(attempts=5, first_wait=1.0, max_wait=60.0, jitter=0.2).waits()
    [1.0, 2.0, 4.0, 8.0]
    """

    attempts: int = 3
    first_wait: float = 0.5
    max_wait: float = 60.0
    #: each computed wait is multiplied by a random factor in [1 - jitter, 1], so clients spread out
    jitter: float = 0.0
    #: what is retried, as ``biconic_retries_total`` counts it (``s3``, ``http``, ``source_connect``); "" = uncounted
    what: str = ""

    def wait(self, attempt: int) -> float:
        """The wait after failed attempt ``attempt`` (1-based), before jitter."""
        return float(min(self.first_wait * 2.0 ** (attempt - 1), self.max_wait))

    def waits(self) -> list[float]:
        """Every wait of a run that fails each attempt (without jitter)."""
        return [self.wait(n) for n in range(1, self.attempts)]

    def call(self, fn: Callable[[], T], *, retry_if: Callable[[BaseException], bool],
             wait_hint: Callable[[BaseException], float | None] | None = None,
             on_retry: Callable[[int, BaseException, float], None] | None = None,
             deadline: float | None = None) -> T:
        """``fn()``, run again while it raises an exception for which ``retry_if`` is true, up to ``attempts``
        runs; the last exception (or any other) propagates as it was raised.

        ``wait_hint(exc)`` may name the wait (None: the policy's); ``on_retry(attempt, exc, wait)`` is told
        before each wait (for a log line); ``deadline`` bounds the whole run (see the module docstring).
        """
        import tenacity

        start = clock().monotonic()

        def stop(state: tenacity.RetryCallState) -> bool:
            if state.attempt_number >= max(self.attempts, 1):
                return True
            return deadline is not None and clock().monotonic() - start + self.wait(state.attempt_number) >= deadline

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome is not None else None
            hinted = wait_hint(exc) if wait_hint is not None and exc is not None else None
            seconds = hinted if hinted is not None else self.wait(state.attempt_number)
            if hinted is None and self.jitter:
                seconds *= random.uniform(1.0 - self.jitter, 1.0)
            return min(max(seconds, 0.0), self.max_wait)

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            if self.what:
                from engine.metrics import metrics

                metrics().retries.labels(what=self.what).inc()
            if on_retry is not None and exc is not None and state.next_action is not None:
                on_retry(state.attempt_number, exc, state.next_action.sleep)

        retrying = tenacity.Retrying(
            stop=stop,
            wait=wait,
            retry=tenacity.retry_if_exception(retry_if),
            sleep=lambda seconds: clock().sleep(seconds),
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(fn)


#: uploading one archive file (then :class:`engine.errors.ArchiveError`, which rolls the load back)
ARCHIVE_UPLOAD = RetryPolicy(attempts=3, first_wait=0.5, max_wait=8.0, what="s3")

#: connecting to a database source: a refusal or a dropped connection is tried again, within the connect timeout
#: (a host that never answers is not waited on twice); then :class:`engine.errors.SourceUnavailableError`
SOURCE_CONNECT = RetryPolicy(attempts=3, first_wait=0.5, max_wait=4.0, what="source_connect")
