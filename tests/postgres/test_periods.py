"""Time periods of a range-partitioned table: bounds and child names for each granularity."""

from __future__ import annotations

import datetime as dt

import pytest

from engine.postgres.periods import Period, period_of, truncate_every


@pytest.mark.parametrize(("value", "granularity", "start", "end", "name"), [
    (dt.date(2024, 2, 29), "day", dt.date(2024, 2, 29), dt.date(2024, 3, 1), "t_p2024_02_29"),
    (dt.datetime(2024, 12, 31, 23, 59), "day", dt.date(2024, 12, 31), dt.date(2025, 1, 1), "t_p2024_12_31"),
    (dt.date(2024, 2, 1), "week", dt.date(2024, 1, 29), dt.date(2024, 2, 5), "t_p2024_w05"),
    (dt.date(2025, 12, 31), "week", dt.date(2025, 12, 29), dt.date(2026, 1, 5), "t_p2026_w01"),  # ISO year
    (dt.date(2021, 1, 2), "week", dt.date(2020, 12, 28), dt.date(2021, 1, 4), "t_p2020_w53"),
    (dt.date(2024, 12, 15), "month", dt.date(2024, 12, 1), dt.date(2025, 1, 1), "t_p2024_12"),
    (dt.datetime(2024, 1, 31, 12), "month", dt.date(2024, 1, 1), dt.date(2024, 2, 1), "t_p2024_01"),
    (dt.date(2024, 7, 4), "year", dt.date(2024, 1, 1), dt.date(2025, 1, 1), "t_p2024"),
    (dt.date(1, 1, 1), "year", dt.date(1, 1, 1), dt.date(2, 1, 1), "t_p0001"),
])
def test_period_of(value: dt.date, granularity: str, start: dt.date, end: dt.date, name: str) -> None:
    period = period_of(value, granularity)
    assert period == Period(start, end, granularity)
    assert period.child_name("t") == name
    assert period_of(start, granularity) == period  # already truncated values map to themselves


@pytest.mark.parametrize(("value", "granularity", "start"), [
    (dt.date(9999, 12, 31), "day", dt.date(9999, 12, 31)),
    (dt.date(9999, 12, 30), "week", dt.date(9999, 12, 27)),
    (dt.date(9999, 12, 15), "month", dt.date(9999, 12, 1)),
    (dt.date(9999, 3, 1), "year", dt.date(9999, 1, 1)),
])
def test_the_last_period_before_year_10000_is_open_ended(value: dt.date, granularity: str,
                                                          start: dt.date) -> None:
    assert period_of(value, granularity) == Period(start, None, granularity)


def test_unknown_granularity() -> None:
    with pytest.raises(ValueError, match="hour"):
        period_of(dt.date(2024, 1, 1), "hour")


def test_child_names_fit_postgres_identifiers() -> None:
    name = period_of(dt.date(2024, 1, 1), "day").child_name("x" * 60)
    assert len(name.encode()) <= 63
    other = period_of(dt.date(2024, 1, 2), "day").child_name("x" * 60)
    assert name != other


def test_truncate_every_covers_every_granularity() -> None:
    assert set(truncate_every) == {"day", "week", "month", "year"}
