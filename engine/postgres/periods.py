"""Time periods of a range-partitioned table: which period a value falls in, its bounds and its child name."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from engine.names import child_base, shorten

__all__ = ["Period", "period_of", "truncate_every"]

#: Polars ``dt.truncate`` interval per granularity.
truncate_every = {"day": "1d", "week": "1w", "month": "1mo", "year": "1y"}


@dataclass(frozen=True)
class Period:
    """One child partition's range ``[start, end)``; ``end`` is None for the period ending after 9999-12-31,
    which Python dates cannot hold (PostgreSQL's ``MAXVALUE``)."""

    start: dt.date
    end: dt.date | None
    granularity: str

    def child_name(self, table: str) -> str:
        """``orders_p2024_01`` (month), ``orders_p2024_01_31`` (day), ``orders_p2024_w05`` (week), ``orders_p2024``;
        a table ``orders-eu`` has ``orders_eu_p2024_01`` (see :func:`engine.names.child_base`)."""
        return shorten(f"{child_base(table)}_p{self._tag()}")

    def legacy_child_name(self, table: str) -> str:
        """The name releases before 0.9 gave the child (a ``-`` became ``m``): their tables keep these children."""
        return shorten(f"{table}_p{self._tag()}".replace("-", "m"))

    def _tag(self) -> str:
        s = self.start
        if self.granularity == "day":
            tag = f"{s.year:04d}_{s.month:02d}_{s.day:02d}"
        elif self.granularity == "week":
            iso = s.isocalendar()
            tag = f"{iso.year:04d}_w{iso.week:02d}"
        elif self.granularity == "month":
            tag = f"{s.year:04d}_{s.month:02d}"
        else:
            tag = f"{s.year:04d}"
        return tag


def _after(start: dt.date, step: Callable[[dt.date], dt.date]) -> dt.date | None:
    try:
        return step(start)
    except (OverflowError, ValueError):  # past 9999-12-31
        return None


def period_of(value: dt.date | dt.datetime, granularity: str) -> Period:
    """The period holding ``value`` (already truncated or not)."""
    d = value.date() if isinstance(value, dt.datetime) else value
    if granularity == "day":
        return Period(d, _after(d, lambda s: s + dt.timedelta(days=1)), granularity)
    if granularity == "week":
        start = d - dt.timedelta(days=d.weekday())
        return Period(start, _after(start, lambda s: s + dt.timedelta(days=7)), granularity)
    if granularity == "month":
        start = d.replace(day=1)
        end = _after(start, lambda s: s.replace(year=s.year + 1, month=1) if s.month == 12
                     else s.replace(month=s.month + 1))
        return Period(start, end, granularity)
    if granularity == "year":
        start = d.replace(month=1, day=1)
        return Period(start, _after(start, lambda s: s.replace(year=s.year + 1)), granularity)
    raise ValueError(f"unknown granularity {granularity!r}")
