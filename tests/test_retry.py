"""Retries: one policy type, waiting on the engine's clock (so these tests never sleep)."""

from __future__ import annotations

import pytest

from engine.clock import ManualClock
from engine.retry import ARCHIVE_UPLOAD, RetryPolicy


def test_retries_then_succeeds_waiting_on_the_clock(manual_clock: ManualClock) -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("reset")
        return "ok"

    told: list[tuple[int, float]] = []
    policy = RetryPolicy(attempts=5, first_wait=1.0, max_wait=60.0)
    result = policy.call(flaky, retry_if=lambda exc: isinstance(exc, ConnectionError),
                         on_retry=lambda n, exc, wait: told.append((n, wait)))
    assert result == "ok" and len(calls) == 3
    assert manual_clock.slept == [1.0, 2.0] and told == [(1, 1.0), (2, 2.0)]


def test_gives_up_with_the_last_error(manual_clock: ManualClock) -> None:
    def down() -> None:
        raise TimeoutError("no answer")

    with pytest.raises(TimeoutError, match="no answer"):
        ARCHIVE_UPLOAD.call(down, retry_if=lambda exc: True)
    assert manual_clock.slept == ARCHIVE_UPLOAD.waits() == [0.5, 1.0]


def test_what_is_not_worth_retrying_fails_at_once(manual_clock: ManualClock) -> None:
    calls: list[int] = []

    def refused() -> None:
        calls.append(1)
        raise PermissionError("no")

    with pytest.raises(PermissionError):
        RetryPolicy(attempts=5).call(refused, retry_if=lambda exc: isinstance(exc, ConnectionError))
    assert calls == [1] and manual_clock.slept == []


def test_a_wait_hint_wins_but_never_past_the_cap(manual_clock: ManualClock) -> None:
    calls: list[int] = []
    hints = {1: 7.0, 2: 500.0}  # Retry-After as servers send it; none on the third answer

    def busy() -> None:
        calls.append(1)
        raise RuntimeError("429")

    policy = RetryPolicy(attempts=4, first_wait=1.0, max_wait=60.0)
    with pytest.raises(RuntimeError):
        policy.call(busy, retry_if=lambda exc: True, wait_hint=lambda exc: hints.get(len(calls)))
    assert manual_clock.slept == [7.0, 60.0, 4.0]


def test_jitter_shortens_waits_within_its_share(manual_clock: ManualClock) -> None:
    def down() -> None:
        raise OSError("x")

    policy = RetryPolicy(attempts=4, first_wait=1.0, max_wait=60.0, jitter=0.2)
    with pytest.raises(OSError):
        policy.call(down, retry_if=lambda exc: True)
    assert [0.8 <= got / want <= 1.0 for got, want in zip(manual_clock.slept, policy.waits(), strict=True)] == \
        [True, True, True]


def test_a_deadline_stops_the_retries_before_a_wait_would_cross_it(manual_clock: ManualClock) -> None:
    calls: list[float] = []

    def fail() -> None:
        calls.append(manual_clock.monotonic())
        raise OSError("down")

    policy = RetryPolicy(attempts=20, first_wait=1.0, max_wait=60.0)
    with pytest.raises(OSError, match="down"):
        policy.call(fail, retry_if=lambda exc: True, deadline=5.0)
    assert manual_clock.slept == [1.0, 2.0]  # a third wait (4 s) would end past the 5 s deadline
    assert len(calls) == 3
