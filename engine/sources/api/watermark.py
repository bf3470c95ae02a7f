"""Watermarks of REST and GraphQL reads: text in, text out, compared the way the values mean.

An API's cursor field may hold numbers, ISO 8601 times (with any offset or precision) or plain text; the high
mark is the largest by that meaning, kept in the server's own spelling so it can be sent back as is.

>>> highest = Highest(); highest.add("2024-03-05T09:30:00.5Z"); highest.add("2024-03-05T09:30:00Z")
>>> highest.result()
'2024-03-05T09:30:00.5Z'
>>> minus_lag("2024-03-05T10:00:00Z", 90)
'2024-03-05T09:58:30Z'
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from engine.errors import SpecError

__all__ = ["Highest", "later", "minus_lag"]


def _as_time(text: str) -> dt.datetime | None:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _as_number(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text) if text.strip().lower() not in ("nan", "inf", "-inf", "infinity") else text
    except ValueError:
        return text


class Highest:
    """The largest cursor value seen, as text: numbers compare as numbers, ISO 8601 times as times (whatever
    their offset or precision), other text as text."""

    def __init__(self) -> None:
        self.number: float | None = None
        self.number_text: str | None = None
        self.time: tuple[dt.datetime, str] | None = None
        self.text: str | None = None
        self.all_times = True

    def add(self, value: Any) -> None:
        """Take one value into account (nulls, booleans, objects and lists are not marks)."""
        if value is None or isinstance(value, (bool, dict, list)):
            return
        if isinstance(value, (int, float)):
            if self.number is None or value > self.number:
                self.number, self.number_text = value, str(value)
            return
        text = str(value)
        self.text = text if self.text is None or text > self.text else self.text
        when = _as_time(text) if self.all_times else None
        if when is None:
            self.all_times = False
        elif self.time is None or when > self.time[0]:
            self.time = (when, text)

    def result(self) -> str | None:
        """The largest value, as text (None when none was seen)."""
        if self.text is not None:
            return self.time[1] if self.all_times and self.time is not None else self.text
        return self.number_text


def later(a: str | None, b: str | None) -> str | None:
    """The later of two marks (so a run that finds nothing newer never moves the watermark back)."""
    highest = Highest()
    for value in (a, b):
        if value is not None:
            highest.add(_as_number(value))
    return highest.result()


def minus_lag(low: str, lag: float) -> str:
    """The watermark moved back by ``lag`` (seconds for times, units for numbers)."""
    if not lag:
        return low
    number = _as_number(low)
    if isinstance(number, (int, float)):
        return str(number - lag) if not (isinstance(number, int) and float(lag).is_integer()) \
            else str(number - int(lag))
    try:
        when = dt.datetime.fromisoformat(low)
    except ValueError as exc:
        raise SpecError("source.lag", f"cannot move the watermark {low!r} back: it is neither a number nor an "
                                      "ISO 8601 time") from exc
    text = (when - dt.timedelta(seconds=lag)).isoformat()
    return text.removesuffix("+00:00") + "Z" if low.endswith("Z") else text
